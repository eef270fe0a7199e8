#!/usr/bin/env python3
"""shmkit queues against the IPC a Python user would pick instead, measured in one run.

Every measurement runs between two separate (spawned) processes and checks sequence numbers,
so nothing may be lost, duplicated or reordered. Reported:

* one-way throughput, messages/s, for 64 B, 1 KiB and 64 KiB payloads: per-message calls,
  and batched calls where the library has them (shmkit: a list of ``bytes`` with
  ``put_many``/``get_many``, a packed buffer with ``put_many_from``/``get_many_into``, and
  in-place batches with ``reserve_many``/``borrow_many``, whose messages are numbered in
  their slots and checked there; faster-fifo: ``put_many``/``get_many``);
* the batch forms side by side, copying vs zero-copy: the queues' packed and in-place
  batches, and memif's ``tx_packed``/``rx_into`` and ``tx_alloc_zc``/``rx_zc`` bursts between
  two processes (``benches/bench_memif.py``'s pair; ``--no-memif`` skips them);
* round-trip latency p50/p99/p99.9 for 64 B messages, *spinning* (both sides poll with
  non-blocking calls) and *blocking* (both sides sleep in a blocking receive).

Each peer uses its fastest natural API for raw bytes: shmkit fills a caller's buffer
(``get_into``); pyzmq sends and receives copies; faster-fifo is used without pickling;
iceoryx2 loans a sample, copies the payload in and the subscriber reads the sequence number
in place (zero-copy receive); posix_ipc uses POSIX message queues; multiprocessing pickles.
A throughput producer runs for a fixed time, then sends an end marker; the consumer's rate is
what is reported. The two processes are pinned to different CPUs (``--no-pin`` to disable)
and run with the cyclic garbage collector off, the same for every peer; queue depths are
the same for every peer that has one (4096 small messages, 16 of 64 KiB). In-place reads:
shmkit ``Queue.borrow`` and iceoryx2 samples. Zero-copy sends ("zero-copy" column): the
producer writes into a loaned slot, shmkit ``Queue.reserve`` and iceoryx2 ``loan``. The
blocking rows of shmkit use its default 50 us poll before sleeping; "spin=0" shows pure
futex sleeps. Peers that are not installed, or refuse a size (posix_ipc above the system's
``msgsize_max``), show ``n/a``.

    python benches/compare.py            # about 3-4 minutes
    python benches/compare.py --quick    # a short run (about 1.5 minutes)
    python benches/compare.py --only shmkit-spsc,pyzmq --no-rtt
    python benches/compare.py --only shmkit-spsc,iceoryx2 --sizes 65536 --no-rtt --no-memif
"""

from __future__ import annotations

import abc
import argparse
import array
import contextlib
import ctypes
import functools
import gc
import multiprocessing as mp
import os
import statistics
import struct
import sys
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

SEQ = struct.Struct("<Q")
END = (1 << 64) - 1
SIZES = (64, 1024, 65536)


def depth(size: int) -> int:
    """Queue depth for every peer with a settable one: 4096 small messages, 16 big ones
    (16 x 64 KiB stays within a core's L2 cache)."""
    return 4096 if size <= 1024 else 16


def batch_len(size: int) -> int:
    """Elements per batched call: 256, fewer for big elements (at most 1 MiB per call)."""
    return max(4, min(256, (1 << 20) // size))


ctx = mp.get_context("spawn")
PIN = os.environ.get("SHMKIT_BENCH_PIN", "1") == "1"


class Batches:
    """Sequence numbers for batched runs, cheap enough not to dominate 30 M msg/s.

    Message `seq` carries `seq % B` in its first word and `seq // B` in its second (B the
    batch length), so a producer stamps a batch with one strided copy of a constant index
    pattern plus one of a repeated batch number, and a consumer checks any run of messages
    with two strided copies and two comparisons: every message is still checked exactly.
    The end marker has END in its first word.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.stride = size // 8
        self.n = batch_len(size)
        self.index = array.array("Q", range(self.n))
        self.index2 = (self.index + self.index).tobytes()

    def stamp(self, pview: memoryview, batch_no: int) -> None:
        """Fill a packed batch (`pview`: the batch buffer cast to "Q") for batch `batch_no`."""
        pview[:: self.stride] = self.index
        pview[1 :: self.stride] = array.array("Q", [batch_no]) * self.n

    def _want(self, count: int, first: int) -> tuple[bytes, bytes]:
        """The two words of messages `first`..`first + count - 1` (`count` <= B)."""
        b0, j0 = divmod(first, self.n)
        k = min(count, self.n - j0)
        want_b = (array.array("Q", [b0]) * k + array.array("Q", [b0 + 1]) * (count - k)).tobytes()
        return self.index2[j0 * 8 : (j0 + count) * 8], want_b

    def stamp_run(self, view: memoryview, step: int, first: int, count: int) -> None:
        """Number `count` messages from `first` in place: message `i` at `view[i * step]`
        (`view` cast to "Q"; `step` in words), `count` <= B."""
        want_j, want_b = self._want(count, first)
        view[0 : count * step : step] = memoryview(want_j).cast("Q")
        view[1 : count * step : step] = memoryview(want_b).cast("Q")

    def check(self, rview: memoryview, count: int, first: int, step: int = 0) -> None:
        """The `count` messages in `rview` (cast to "Q"), `step` words apart (default: packed),
        are `first`, `first + 1`..."""
        if count == 0:
            return
        step = step or self.stride
        got_j = rview[0 : count * step : step].tobytes()
        got_b = rview[1 : count * step : step].tobytes()
        if (got_j, got_b) != self._want(count, first):
            raise AssertionError(f"sequence broken in a run starting at {first}")


# --------------------------------------------------------------------------- peers
#
# A peer creates its channel(s) in the parent (`make`, `destroy`) and implements, for the
# child processes, a producer and a consumer loop (throughput) and both halves of a round
# trip. Loops are written per peer so that each uses its library's calls directly, without
# a harness layer in between.


class Peer(abc.ABC):
    name = ""
    batched = False
    # Can send without copying: the producer writes into a loaned slot (batch "loan").
    zero_copy = False

    def missing(self) -> str | None:
        return None

    def supports(self, size: int) -> str | None:
        return None

    @abc.abstractmethod
    def make(self, tag: str, size: int, rtt: bool) -> Any:
        """Implemented by each peer."""

    def destroy(self, spec: Any) -> None:  # noqa: B027 (optional hook)
        """Release what ``make`` created (nothing by default)."""

    @abc.abstractmethod
    def produce(self, spec: Any, size: int, seconds: float, batch: str | None) -> int:
        """Implemented by each peer."""

    @abc.abstractmethod
    def consume(self, spec: Any, size: int, batch: str | None) -> tuple[int, float]:
        """Implemented by each peer."""

    @abc.abstractmethod
    def ping(self, spec: Any, n: int, warmup: int, blocking: bool) -> array.array[int]:
        """Implemented by each peer."""

    @abc.abstractmethod
    def pong(self, spec: Any, blocking: bool) -> None:
        """Implemented by each peer."""


def samples(n: int) -> array.array[int]:
    """Room for `n` latencies, allocated and touched before the measured loop: storing one
    keeps no object alive (a list of ints grows the interpreter's heap inside the loop: 784
    page faults in 100k samples, measured)."""
    return array.array("q", bytes(8 * n))


def _deadline_loop(seconds: float) -> Callable[[], bool]:
    end = time.perf_counter() + seconds
    return lambda: time.perf_counter() > end


def _send_numbered(send: Callable[[bytearray], object], size: int, seconds: float) -> int:
    """Send `size`-byte messages numbered 0, 1, ... (first word) through `send` for `seconds`,
    then the end marker; returns how many numbered messages were sent."""
    buf = bytearray(size)
    view = memoryview(buf).cast("Q")
    done = _deadline_loop(seconds)
    i = 0
    while True:
        for _ in range(256):
            view[0] = i
            send(buf)
            i += 1
        if done():
            break
    view[0] = END
    send(buf)
    return i


def _consume_numbered(recv: Callable[[], Any]) -> tuple[int, float]:
    """Receive messages numbered 1, 2, ... (first word) through `recv` until the end marker,
    checking the order; the clock starts after message 0. Returns (count, seconds)."""
    unpack = SEQ.unpack_from
    recv()
    t0 = time.perf_counter()
    expect = 1
    while True:
        s = unpack(recv())[0]
        if s != expect:
            if s == END:
                return expect, time.perf_counter() - t0
            raise AssertionError(f"got {s}, expected {expect}")
        expect += 1


def _receiver(
    get: Callable[[], Any], try_get: Callable[[], Any], empty: Any, blocking: bool
) -> Callable[[], Any]:
    """`get` when blocking, else a loop spinning on `try_get` while it raises `empty`."""
    if blocking:
        return get

    def spin() -> Any:
        while True:
            try:
                return try_get()
            except empty:
                pass

    return spin


def _ping_loop(
    send: Callable[[bytearray], object], recv: Callable[[], Any], n: int, warmup: int
) -> array.array[int]:
    """Round trips of 64-byte numbered messages: `send` one, `recv` the echo (checked); the
    latencies of the `n` after `warmup`, in ns. Ends with the end marker."""
    buf = bytearray(64)
    view = memoryview(buf).cast("Q")
    lat = samples(n)
    clock = time.perf_counter_ns
    for i in range(n + warmup):
        view[0] = i
        t0 = clock()
        send(buf)
        m = recv()
        t1 = clock()
        if SEQ.unpack_from(m)[0] != i:
            raise AssertionError("bad reply")
        if i >= warmup:
            lat[i - warmup] = t1 - t0
    view[0] = END
    send(buf)
    return lat


def _pong_loop(send: Callable[[Any], object], recv: Callable[[], Any]) -> None:
    """Echo what `recv` gives through `send` until the end marker."""
    while True:
        m = recv()
        if SEQ.unpack_from(m)[0] == END:
            return
        send(m)


class Shmkit(Peer):
    batched = True
    zero_copy = True

    def __init__(self, spsc: bool) -> None:
        self.spsc = spsc
        self.name = "shmkit-spsc" if spsc else "shmkit-mpmc"

    def make(self, tag: str, size: int, rtt: bool) -> Any:
        import shmkit

        cap = depth(size)
        root = f"cmp{os.getpid()}{tag}"
        region = shmkit.Region.create("bench", 16 << 20 if size <= 1024 else 64 << 20, root=root)
        for name in ("ab", "ba") if rtt else ("ab",):
            shmkit.Queue.create(region, name, cap, size, spsc=self.spsc).close()
        region.close()
        return (root, size)

    def destroy(self, spec: Any) -> None:
        import shmkit

        root, _ = spec
        for info in shmkit.regions(root):
            with contextlib.suppress(OSError):
                shmkit.Region.open(info.name, root=root).unlink()

    @staticmethod
    def _queue(spec: Any, name: str) -> Any:
        import shmkit

        root, _ = spec
        return shmkit.Queue.open(shmkit.Region.open("bench", root=root), name)

    def produce(self, spec: Any, size: int, seconds: float, batch: str | None) -> int:
        q = self._queue(spec, "ab")
        done = _deadline_loop(seconds)
        i = 0
        if batch == "loan":
            # Zero-copy send: the producer writes its sequence number straight into a
            # reserved slot (the payload is produced in place; nothing is copied in).
            reserve, pack_into = q.reserve, SEQ.pack_into
            while True:
                for _ in range(256):
                    with reserve() as v:
                        pack_into(v, 0, i)
                    i += 1
                if done():
                    break
            with reserve() as v:
                pack_into(v, 0, END)
            return i
        if batch in (None, "borrow"):
            return _send_numbered(q.put, size, seconds)
        seqs = Batches(size)
        if batch == "inplace":
            # In-place batches: messages numbered in their reserved slots, committed at once.
            reserve_many, stamp = q.reserve_many, seqs.stamp_run
            while not done():
                rb = reserve_many(seqs.n, timeout=None)
                k = len(rb)
                stamp(rb.view.cast("Q"), rb.stride // 8, i, k)
                rb.commit(size)
                i += k
            q.put(SEQ.pack(END))
            return i
        packed = bytearray(seqs.n * size)
        pmem = memoryview(packed)
        pview = pmem.cast("Q")
        put_many_from, put_many = q.put_many_from, q.put_many
        b = 0
        while not done():
            seqs.stamp(pview, b)
            if batch == "packed":
                off = put_many_from(packed, size)
                while off < seqs.n:
                    off += put_many_from(pmem[off * size :], size)
            else:
                data = bytes(packed)
                items = [data[j : j + size] for j in range(0, len(data), size)]
                while items:
                    items = items[put_many(items) :]
            b += 1
        q.put(SEQ.pack(END))
        return b * seqs.n

    def consume(self, spec: Any, size: int, batch: str | None) -> tuple[int, float]:
        q = self._queue(spec, "ab")
        expect = 0
        if batch is None:
            get_into = q.get_into
            buf = bytearray(size)
            view = memoryview(buf).cast("Q")
            get_into(buf)
            t0 = time.perf_counter()
            if view[0] != 0:
                raise AssertionError("first message is not 0")
            expect = 1
            while True:
                get_into(buf)
                s = view[0]
                if s != expect:
                    if s == END:
                        break
                    raise AssertionError(f"got {s}, expected {expect}")
                expect += 1
            return expect, time.perf_counter() - t0
        t0 = 0.0
        seqs = Batches(size)
        if batch == "packed":
            rbuf = bytearray(seqs.n * size)
            rview = memoryview(rbuf).cast("Q")
            get_many_into = q.get_many_into
            while True:
                n = get_many_into(rbuf, size, timeout=None)
                if expect == 0:
                    t0 = time.perf_counter()
                last = rview[(n - 1) * seqs.stride] == END
                k = n - 1 if last else n
                seqs.check(rview, k, expect)
                expect += k
                if last:
                    return expect, time.perf_counter() - t0
        if batch == "inplace":
            borrow_many = q.borrow_many
            while True:
                c = borrow_many(seqs.n, timeout=None)
                if expect == 0:
                    t0 = time.perf_counter()
                n, step = len(c), c.stride // 8
                rview = c.view.cast("Q")
                last = rview[(n - 1) * step] == END
                k = n - 1 if last else n
                seqs.check(rview, k, expect, step)
                rview.release()
                c.release()
                expect += k
                if last:
                    return expect, time.perf_counter() - t0
        if batch in ("borrow", "loan"):
            borrow = q.borrow
            unpack = SEQ.unpack_from
            with borrow() as v:
                if unpack(v)[0] != 0:
                    raise AssertionError("first message is not 0")
            t0 = time.perf_counter()
            expect = 1
            while True:
                with borrow() as v:
                    s = unpack(v)[0]
                if s != expect:
                    if s == END:
                        return expect, time.perf_counter() - t0
                    raise AssertionError(f"got {s}, expected {expect}")
                expect += 1
        get_many = q.get_many
        while True:
            items = get_many(seqs.n, timeout=None)
            if expect == 0:
                t0 = time.perf_counter()
            last = SEQ.unpack_from(items[-1])[0] == END
            if last:
                items.pop()
            seqs.check(memoryview(b"".join(items)).cast("Q"), len(items), expect)
            expect += len(items)
            if last:
                return expect, time.perf_counter() - t0

    def ping(self, spec: Any, n: int, warmup: int, blocking: bool) -> array.array[int]:
        tx, rx = self._queue(spec, "ab"), self._queue(spec, "ba")
        buf = bytearray(64)
        view = memoryview(buf).cast("Q")
        rbuf = bytearray(64)
        rview = memoryview(rbuf).cast("Q")
        put, get_into, try_get = tx.put, rx.get_into, rx.try_get
        clock = time.perf_counter_ns
        lat = samples(n)
        for i in range(n + warmup):
            view[0] = i
            t0 = clock()
            put(buf)
            if blocking:
                get_into(rbuf)
                t1 = clock()
                s = rview[0]
            else:
                m = try_get()
                while m is None:
                    m = try_get()
                t1 = clock()
                s = SEQ.unpack_from(m)[0]
            if s != i:
                raise AssertionError(f"reply {s} to {i}")
            if i >= warmup:
                lat[i - warmup] = t1 - t0
        view[0] = END
        put(buf)
        return lat

    def pong(self, spec: Any, blocking: bool) -> None:
        rx, tx = self._queue(spec, "ab"), self._queue(spec, "ba")
        put, get, try_get = tx.put, rx.get, rx.try_get
        end = SEQ.pack(END)
        while True:
            if blocking:
                m = get()
            else:
                m = try_get()
                while m is None:
                    m = try_get()
            if m[:8] == end:
                return
            put(m)


class ShmkitNoSpin(Shmkit):
    """Blocking round trips with the pre-sleep poll disabled: every wait is a futex sleep."""

    batched = False

    def __init__(self) -> None:
        super().__init__(True)
        self.name = "shmkit-spsc spin=0"

    def _queue(self, spec: Any, name: str) -> Any:  # type: ignore[override]
        q = Shmkit._queue(spec, name)
        q.spin = 0.0
        return q


class MpQueue(Peer):
    name = "mp.Queue"

    def make(self, tag: str, size: int, rtt: bool) -> Any:
        return (ctx.Queue(), ctx.Queue() if rtt else None)

    def produce(self, spec: Any, size: int, seconds: float, batch: str | None) -> int:
        q = spec[0]
        put = q.put
        buf = bytearray(size)
        view = memoryview(buf).cast("Q")
        done = _deadline_loop(seconds)
        i = 0
        while True:
            for _ in range(256):
                view[0] = i
                put(bytes(buf))  # the feeder thread pickles later: pass an immutable copy
                i += 1
            if done():
                break
        put(SEQ.pack(END))
        q.close()
        q.join_thread()
        return i

    def consume(self, spec: Any, size: int, batch: str | None) -> tuple[int, float]:
        return _consume_numbered(spec[0].get)

    def ping(self, spec: Any, n: int, warmup: int, blocking: bool) -> array.array[int]:
        import queue as stdq

        tx, rx = spec
        # The feeder thread pickles later: send a copy, not the buffer the loop reuses.
        send = lambda b: tx.put(bytes(b))  # noqa: E731
        return _ping_loop(send, _receiver(rx.get, rx.get_nowait, stdq.Empty, blocking), n, warmup)

    def pong(self, spec: Any, blocking: bool) -> None:
        import queue as stdq

        rx, tx = spec
        _pong_loop(tx.put, _receiver(rx.get, rx.get_nowait, stdq.Empty, blocking))


class MpPipe(Peer):
    name = "mp.Pipe"

    def make(self, tag: str, size: int, rtt: bool) -> Any:
        return ctx.Pipe(duplex=True)

    def produce(self, spec: Any, size: int, seconds: float, batch: str | None) -> int:
        return _send_numbered(spec[0].send_bytes, size, seconds)

    def consume(self, spec: Any, size: int, batch: str | None) -> tuple[int, float]:
        return _consume_numbered(spec[1].recv_bytes)

    @staticmethod
    def _recv(conn: Any, blocking: bool) -> Callable[[], Any]:
        if blocking:
            return conn.recv_bytes  # type: ignore[no-any-return]

        def spin() -> Any:
            while not conn.poll(0):
                pass
            return conn.recv_bytes()

        return spin

    def ping(self, spec: Any, n: int, warmup: int, blocking: bool) -> array.array[int]:
        return _ping_loop(spec[0].send_bytes, self._recv(spec[0], blocking), n, warmup)

    def pong(self, spec: Any, blocking: bool) -> None:
        _pong_loop(spec[1].send_bytes, self._recv(spec[1], blocking))


class FasterFifo(Peer):
    name = "faster-fifo"
    batched = True

    def missing(self) -> str | None:
        try:
            import faster_fifo  # noqa: F401
        except ImportError:
            return "not installed"
        return None

    def make(self, tag: str, size: int, rtt: bool) -> Any:
        import faster_fifo

        def q() -> Any:
            # Raw bytes, no pickling; a buffer of about the same bytes as shmkit's queue.
            return faster_fifo.Queue(
                max_size_bytes=max(1 << 20, depth(size) * (size + 64)), loads=bytes, dumps=None
            )

        return (q(), q() if rtt else None)

    @staticmethod
    def _raw(q: Any) -> Any:
        q.dumps = lambda x: x
        return q

    def produce(self, spec: Any, size: int, seconds: float, batch: str | None) -> int:
        q = self._raw(spec[0])
        buf = bytearray(size)
        view = memoryview(buf).cast("Q")
        done = _deadline_loop(seconds)
        i = 0
        if batch is None:
            put = q.put
            while True:
                for _ in range(256):
                    view[0] = i
                    put(bytes(buf), timeout=60)
                    i += 1
                if done():
                    break
        else:
            seqs = Batches(size)
            packed = bytearray(seqs.n * size)
            pview = memoryview(packed).cast("Q")
            b = 0
            while not done():
                seqs.stamp(pview, b)
                data = bytes(packed)
                q.put_many([data[j : j + size] for j in range(0, len(data), size)], timeout=60)
                b += 1
            i = b * seqs.n
        q.put(SEQ.pack(END), timeout=60)
        return i

    def consume(self, spec: Any, size: int, batch: str | None) -> tuple[int, float]:
        q = spec[0]
        expect = 0
        t0 = 0.0
        if batch is None:
            return _consume_numbered(functools.partial(q.get, timeout=60))
        seqs = Batches(size)
        while True:
            items = q.get_many(max_messages_to_get=seqs.n, timeout=60)
            if expect == 0:
                t0 = time.perf_counter()
            last = SEQ.unpack_from(items[-1])[0] == END
            if last:
                items.pop()
            seqs.check(memoryview(b"".join(items)).cast("Q"), len(items), expect)
            expect += len(items)
            if last:
                return expect, time.perf_counter() - t0

    @staticmethod
    def _recv(rx: Any, blocking: bool) -> Callable[[], Any]:
        import queue as stdq

        return _receiver(functools.partial(rx.get, timeout=60), rx.get_nowait, stdq.Empty, blocking)

    def ping(self, spec: Any, n: int, warmup: int, blocking: bool) -> array.array[int]:
        tx = self._raw(spec[0])
        send = lambda b: tx.put(bytes(b))  # noqa: E731
        return _ping_loop(send, self._recv(spec[1], blocking), n, warmup)

    def pong(self, spec: Any, blocking: bool) -> None:
        _pong_loop(self._raw(spec[1]).put, self._recv(spec[0], blocking))


class Zmq(Peer):
    name = "pyzmq"

    def missing(self) -> str | None:
        try:
            import zmq  # noqa: F401
        except ImportError:
            return "not installed"
        return None

    def make(self, tag: str, size: int, rtt: bool) -> Any:
        return f"ipc:///tmp/shmkit-cmp-{os.getpid()}-{tag}"

    def destroy(self, spec: Any) -> None:
        with contextlib.suppress(OSError):
            os.unlink(spec[len("ipc://") :])

    def produce(self, spec: Any, size: int, seconds: float, batch: str | None) -> int:
        import zmq

        s = zmq.Context.instance().socket(zmq.PUSH)
        s.bind(spec)
        # The consumer connects; wait for it (a PUSH socket queues until then anyway).
        send = s.send
        buf = bytearray(size)
        view = memoryview(buf).cast("Q")
        done = _deadline_loop(seconds)
        i = 0
        # copy=True: from 64 KiB pyzmq would otherwise send zero-copy, referencing this
        # buffer while the next iteration overwrites it.
        while True:
            for _ in range(256):
                view[0] = i
                send(buf, copy=True)
                i += 1
            if done():
                break
        view[0] = END
        send(buf, copy=True)
        s.close(linger=-1)
        # Lingering happens in term(): without it the process may exit with messages still
        # queued in zmq's I/O thread (lost at 64 KiB, and the consumer never sees the end).
        zmq.Context.instance().term()
        return i

    def consume(self, spec: Any, size: int, batch: str | None) -> tuple[int, float]:
        import zmq

        s = zmq.Context.instance().socket(zmq.PULL)
        s.connect(spec)
        return _consume_numbered(s.recv)

    def ping(self, spec: Any, n: int, warmup: int, blocking: bool) -> array.array[int]:
        import zmq

        s = zmq.Context.instance().socket(zmq.PAIR)
        s.bind(spec)
        recv = _receiver(s.recv, functools.partial(s.recv, zmq.NOBLOCK), zmq.Again, blocking)
        lat = _ping_loop(s.send, recv, n, warmup)
        s.close(linger=-1)
        return lat

    def pong(self, spec: Any, blocking: bool) -> None:
        import zmq

        s = zmq.Context.instance().socket(zmq.PAIR)
        s.connect(spec)
        _pong_loop(
            s.send, _receiver(s.recv, functools.partial(s.recv, zmq.NOBLOCK), zmq.Again, blocking)
        )
        s.close(linger=-1)


class Iceoryx2(Peer):
    """Publish-subscribe of `Slice[c_uint8]` samples; blocking waits use an event service
    (Notifier/Listener), the library's documented pattern for event-driven receivers."""

    name = "iceoryx2"
    zero_copy = True

    def missing(self) -> str | None:
        try:
            import iceoryx2  # noqa: F401
        except ImportError:
            return "not installed"
        return None

    def make(self, tag: str, size: int, rtt: bool) -> Any:
        return (f"shmkit-cmp-{os.getpid()}-{tag}", size)

    @staticmethod
    def _node() -> Any:
        import iceoryx2 as iox2

        iox2.set_log_level(iox2.LogLevel.Error)
        return iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)

    @staticmethod
    def _service(node: Any, name: str, size: int = 64) -> Any:
        import iceoryx2 as iox2

        return (
            node.service_builder(iox2.ServiceName.new(name))
            .publish_subscribe(iox2.Slice[ctypes.c_uint8])
            .subscriber_max_buffer_size(min(256, depth(size)))
            .enable_safe_overflow(False)
            .max_publishers(1)
            .max_subscribers(1)
            .open_or_create()
        )

    def _publisher(self, node: Any, name: str, size: int) -> tuple[Any, Any]:
        import iceoryx2 as iox2

        svc = self._service(node, name, size)
        pub = (
            svc.publisher_builder()
            .initial_max_slice_len(size)
            .backpressure_strategy(iox2.BackpressureStrategy.RetryUntilDelivered)
            .create()
        )
        return svc, pub

    @staticmethod
    def _wait_subscriber(svc: Any, pub: Any) -> None:
        deadline = time.monotonic() + 30
        while svc.dynamic_config.number_of_subscribers < 1:
            if time.monotonic() > deadline:
                raise TimeoutError("no iceoryx2 subscriber")
            time.sleep(0.001)
        pub.update_connections()

    @staticmethod
    def _events(node: Any, name: str) -> Any:
        import iceoryx2 as iox2

        return node.service_builder(iox2.ServiceName.new(name + "-ev")).event().open_or_create()

    def produce(self, spec: Any, size: int, seconds: float, batch: str | None) -> int:
        import iceoryx2 as iox2

        name, _ = spec
        node = self._node()
        # (the listener exists before the publisher, so the consumer's "ready" finds it)
        ready = self._events(node, name + "-ready").listener_builder().create()
        svc, pub = self._publisher(node, name, size)
        self._wait_subscriber(svc, pub)
        if not ready.timed_wait(iox2.Duration.from_secs(60)):
            raise TimeoutError("the iceoryx2 subscriber never said it was ready")
        buf = bytearray(size)
        view = memoryview(buf).cast("Q")
        src = (ctypes.c_char * size).from_buffer(buf)
        loan = pub.loan_slice_uninit
        memmove = ctypes.memmove
        done = _deadline_loop(seconds)
        i = 0
        if batch == "loan":
            # Zero-copy send: the sequence number is written into the loaned sample.
            head = ctypes.c_uint64
            while True:
                for _ in range(256):
                    s = loan(size)
                    head.from_address(s.payload_ptr).value = i
                    s.assume_init().send()
                    i += 1
                if done():
                    break
            s = loan(size)
            head.from_address(s.payload_ptr).value = END
            s.assume_init().send()
            return i
        while True:
            for _ in range(256):
                view[0] = i
                s = loan(size)
                memmove(s.payload_ptr, src, size)
                s.assume_init().send()
                i += 1
            if done():
                break
        view[0] = END
        s = loan(size)
        memmove(s.payload_ptr, src, size)
        s.assume_init().send()
        return i

    def consume(self, spec: Any, size: int, batch: str | None) -> tuple[int, float]:
        name, _ = spec
        node = self._node()
        svc = self._service(node, name, size)
        sub = svc.subscriber_builder().buffer_size(min(256, depth(size))).create()
        recv = sub.receive
        # Start the producer only once this subscriber has seen the publisher and connected
        # (its first receive does): otherwise the two ends may set up the connection at the
        # same time, and the messages after the first buffer-full were lost (5 runs of 15,
        # e.g. "got 850, expected 16", iceoryx2 0.10).
        deadline = time.monotonic() + 60
        while svc.dynamic_config.number_of_publishers < 1:
            if time.monotonic() > deadline:
                raise TimeoutError("no iceoryx2 publisher")
            time.sleep(0.001)
        if recv() is not None:
            raise AssertionError("a sample before the producer was told to start")
        self._events(node, name + "-ready").notifier_builder().create().notify()
        head = ctypes.c_uint64
        expect = 0
        t0 = 0.0
        while True:
            s = recv()
            if s is None:
                continue
            v = head.from_address(s.payload_ptr).value  # read in place (zero-copy)
            s.delete()
            if expect == 0:
                t0 = time.perf_counter()
            if v != expect:
                if v == END:
                    return expect, time.perf_counter() - t0
                raise AssertionError(f"got {v}, expected {expect}")
            expect += 1

    def _endpoints(self, spec: Any, me: str, peer: str) -> tuple[Any, Any, Any, Any, Any, Any]:
        name, _ = spec
        node = self._node()
        sub = self._service(node, name + peer).subscriber_builder().buffer_size(256).create()
        svc, pub = self._publisher(node, name + me, 64)
        listener = self._events(node, name + peer).listener_builder().create()
        notifier = self._events(node, name + me).notifier_builder().create()
        self._wait_subscriber(svc, pub)
        return node, sub, pub, listener, notifier, svc

    def ping(self, spec: Any, n: int, warmup: int, blocking: bool) -> array.array[int]:
        _node, sub, pub, listener, notifier, _svc = self._endpoints(spec, "ab", "ba")
        head = ctypes.c_uint64
        lat = samples(n)
        clock = time.perf_counter_ns
        for i in range(n + warmup + 1):
            v = END if i == n + warmup else i
            t0 = clock()
            s = pub.loan_slice_uninit(64)
            head.from_address(s.payload_ptr).value = v
            s.assume_init().send()
            if blocking:
                notifier.notify()
            if v == END:
                break
            while True:
                r = sub.receive()
                if r is not None:
                    break
                if blocking:
                    listener.blocking_wait()
            got = head.from_address(r.payload_ptr).value
            r.delete()
            t1 = clock()
            if got != i:
                raise AssertionError("bad reply")
            if i >= warmup:
                lat[i - warmup] = t1 - t0
        return lat

    def pong(self, spec: Any, blocking: bool) -> None:
        _node, sub, pub, listener, notifier, _svc = self._endpoints(spec, "ba", "ab")
        head = ctypes.c_uint64
        while True:
            r = sub.receive()
            if r is None:
                if blocking:
                    listener.blocking_wait()
                continue
            v = head.from_address(r.payload_ptr).value
            r.delete()
            if v == END:
                return
            s = pub.loan_slice_uninit(64)
            head.from_address(s.payload_ptr).value = v
            s.assume_init().send()
            if blocking:
                notifier.notify()


class PosixIpc(Peer):
    name = "posix_ipc"

    def missing(self) -> str | None:
        try:
            import posix_ipc  # noqa: F401
        except ImportError:
            return "not installed"
        return None

    def supports(self, size: int) -> str | None:
        try:
            with open("/proc/sys/fs/mqueue/msgsize_max") as f:
                limit = int(f.read())
        except OSError:
            return None
        return None if size <= limit else f"msgsize_max {limit}"

    def make(self, tag: str, size: int, rtt: bool) -> Any:
        import posix_ipc

        names = [f"/shmkit-cmp-{os.getpid()}-{tag}-{d}" for d in (("ab", "ba") if rtt else ("ab",))]
        for n in names:
            q = posix_ipc.MessageQueue(n, posix_ipc.O_CREX, max_message_size=size)
            q.close()
        return names

    def destroy(self, spec: Any) -> None:
        import posix_ipc

        for n in spec:
            with contextlib.suppress(posix_ipc.ExistentialError):
                posix_ipc.unlink_message_queue(n)

    def produce(self, spec: Any, size: int, seconds: float, batch: str | None) -> int:
        import posix_ipc

        return _send_numbered(posix_ipc.MessageQueue(spec[0]).send, size, seconds)

    def consume(self, spec: Any, size: int, batch: str | None) -> tuple[int, float]:
        import posix_ipc

        receive = posix_ipc.MessageQueue(spec[0]).receive
        return _consume_numbered(lambda: receive()[0])

    def _pair(self, spec: Any, swap: bool) -> tuple[Any, Any]:
        import posix_ipc

        a, b = (posix_ipc.MessageQueue(n) for n in spec)
        return (b, a) if swap else (a, b)

    @staticmethod
    def _recv(rx: Any, blocking: bool) -> Callable[[], Any]:
        import posix_ipc

        return _receiver(
            lambda: rx.receive()[0], lambda: rx.receive(0)[0], posix_ipc.BusyError, blocking
        )

    def ping(self, spec: Any, n: int, warmup: int, blocking: bool) -> array.array[int]:
        tx, rx = self._pair(spec, False)
        return _ping_loop(tx.send, self._recv(rx, blocking), n, warmup)

    def pong(self, spec: Any, blocking: bool) -> None:
        tx, rx = self._pair(spec, True)
        _pong_loop(tx.send, self._recv(rx, blocking))


PEERS: dict[str, Peer] = {
    p.name: p
    for p in (
        Shmkit(True),
        Shmkit(False),
        ShmkitNoSpin(),
        MpQueue(),
        MpPipe(),
        FasterFifo(),
        Zmq(),
        Iceoryx2(),
        PosixIpc(),
    )
}

# --------------------------------------------------------------------------- running


def _child(role: str, peer: str, args: tuple[Any, ...], barrier: Any, conn: Connection) -> None:
    try:
        # Same conditions for every peer: the two ends on different CPUs, no cyclic GC
        # pauses in the measured loops.
        cpus = sorted(os.sched_getaffinity(0))
        if PIN and len(cpus) >= 2:
            os.sched_setaffinity(0, {cpus[0] if role in ("produce", "ping") else cpus[1]})
        gc.disable()
        p = PEERS[peer]
        barrier.wait(60)
        fn = getattr(p, role)
        conn.send(("ok", fn(*args)))
    except BaseException:
        conn.send(("error", traceback.format_exc()))


def run_two(
    peer: Peer, a: tuple[str, tuple[Any, ...]], b: tuple[str, tuple[Any, ...]], limit: float
) -> tuple[Any, Any]:
    """Run role a and role b of `peer` in two spawned processes; return both results."""
    barrier = ctx.Barrier(2)
    pipes = [ctx.Pipe(duplex=False) for _ in range(2)]
    procs = [
        ctx.Process(target=_child, args=(role, peer.name, args, barrier, w), daemon=True)
        for (role, args), (_, w) in zip((a, b), pipes)
    ]
    for p in procs:
        p.start()
    results = []
    try:
        for r, _ in pipes:
            if not r.poll(limit):
                raise TimeoutError(f"{peer.name}: no result within {limit} s")
            status, value = r.recv()
            if status != "ok":
                raise RuntimeError(f"{peer.name} child failed:\n{value}")
            results.append(value)
    finally:
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join()
    return results[0], results[1]


def throughput(peer: Peer, size: int, seconds: float, batch: str | None, tag: str) -> float:
    spec = peer.make(tag, size, False)
    try:
        sent, (got, elapsed) = run_two(
            peer,
            ("produce", (spec, size, seconds, batch)),
            ("consume", (spec, size, batch)),
            limit=seconds * 20 + 60,
        )
    finally:
        peer.destroy(spec)
    if got != sent:
        raise AssertionError(f"{peer.name}: sent {sent}, received {got}")
    return got / elapsed


def round_trip(peer: Peer, n: int, warmup: int, blocking: bool, tag: str) -> list[int]:
    spec = peer.make(tag, 64, True)
    try:
        lat, _ = run_two(
            peer, ("ping", (spec, n, warmup, blocking)), ("pong", (spec, blocking)), limit=120
        )
    finally:
        peer.destroy(spec)
    return sorted(lat)


def pct(sorted_ns: list[int], q: float) -> float:
    return sorted_ns[min(len(sorted_ns) - 1, int(q * len(sorted_ns)))] / 1000.0


def batch_forms(
    rates: dict[tuple[str, int, str], float | None],
    sizes: tuple[int, ...],
    seconds: float,
    memif: bool,
) -> None:
    """The batch forms side by side, copying vs zero-copy, one way between two processes:
    the queues' packed and in-place batches (from the throughput runs above) and memif's
    packed and zero-copy bursts (``benches/bench_memif.py``'s shmkit pair, measured here)."""
    rows = []
    for peer in ("shmkit-spsc", "shmkit-mpmc"):
        for size in sizes:
            copying = rates.get((peer, size, "batch-packed"))
            zc = rates.get((peer, size, "batch-in-place"))
            if copying is None and zc is None:
                continue
            rows.append(
                [
                    f"queue {peer[7:]}",
                    f"{size} B",
                    "put_many_from/get_many_into",
                    fmt_rate(copying),
                    "reserve_many/borrow_many",
                    fmt_rate(zc),
                ]
            )
    if memif:
        try:
            from bench_memif import shmkit_pair
        except ImportError as e:  # run from another directory, or memif unavailable
            print(f"  memif batch forms: n/a ({e})")
        else:
            for size in (64, 1500):
                got: list[float | None] = []
                for form in ("packed", "zcb"):
                    try:
                        # (at least bench_memif's default 2 s: a shorter run mostly
                        # measures the connection coming up)
                        got.append(shmkit_pair(size, form, max(seconds, 2.0)))
                    except Exception as e:  # report and go on
                        print(f"  memif {size} B {form}: FAILED {e}")
                        got.append(None)
                rows.append(
                    [
                        "memif",
                        f"{size} B",
                        "tx_packed/rx_into",
                        fmt_rate(got[0]),
                        "tx_alloc_zc/rx_zc",
                        fmt_rate(got[1]),
                    ]
                )
    if not rows:
        return
    print("\nBatch forms, copying vs zero-copy: messages (packets)/s, one way, two processes\n")
    headers = ["path", "size", "copying form", "copying", "zero-copy form", "zero-copy"]
    print(table(headers, rows))
    print(
        "(memif zero-copy senders commit buffers unwritten and receivers do not read them;"
        " the queues' in-place batches number and check every message in its slot)"
    )


def fmt_rate(r: float | None) -> str:
    if r is None:
        return "n/a"
    return f"{r / 1e6:.2f}M" if r >= 1e6 else f"{r / 1e3:.0f}k"


def table(headers: list[str], rows: list[list[str]]) -> str:
    # (rows may be empty: --only with shmkit peers alone leaves no ratio to print)
    w = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w[i]) if i else c.ljust(w[i]) for i, c in enumerate(cells))

    return "\n".join([line(headers), line(["-" * x for x in w]), *(line(r) for r in rows)])


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="short run (about 1.5 minutes)")
    ap.add_argument("--only", help="comma-separated peers to run (default: all)")
    ap.add_argument("--no-rtt", action="store_true", help="skip round trips")
    ap.add_argument("--no-throughput", action="store_true", help="skip throughput")
    ap.add_argument("--seconds", type=float, help="seconds per throughput run")
    ap.add_argument(
        "--sizes",
        default=",".join(map(str, SIZES)),
        help="comma-separated throughput payload sizes in bytes (default: %(default)s)",
    )
    ap.add_argument(
        "--no-memif", action="store_true", help="skip the memif rows of the batch-forms table"
    )
    ap.add_argument(
        "--no-pin", action="store_true", help="do not pin the two processes to two CPUs"
    )
    args = ap.parse_args()
    seconds = args.seconds or (0.3 if args.quick else 1.5)
    try:
        sizes = tuple(int(x) for x in args.sizes.split(","))
    except ValueError:
        ap.error(f"--sizes takes byte counts separated by commas, got {args.sizes!r}")
    if any(x < 16 or x % 8 for x in sizes):
        ap.error("sizes are multiples of 8 bytes, at least 16 (two sequence words)")
    if args.no_pin:
        os.environ["SHMKIT_BENCH_PIN"] = "0"  # inherited by the spawned children
    # Enough round trips for p99.9 to rest on 30 (100) samples; each takes ~1 us for shmkit.
    n_rtt, warm = (30_000, 2000) if args.quick else (100_000, 5000)
    names = args.only.split(",") if args.only else list(PEERS)
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        ap.error(f"unknown peers {unknown}; choose from {list(PEERS)}")
    peers = [PEERS[n] for n in names]

    print(
        f"shmkit queue comparison: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"{'quick' if args.quick else 'full'} run, {seconds} s per throughput point, "
        f"{'not ' if args.no_pin else ''}pinned to two CPUs"
    )
    missing = {p.name: p.missing() for p in peers}
    for name, why in missing.items():
        if why:
            print(f"  {name}: {why}")
    tag = 0
    rates: dict[tuple[str, int, str], float | None] = {}
    if not args.no_throughput:
        modes = [
            ("msg", None),
            ("in-place", "borrow"),
            ("zero-copy", "loan"),
            ("batch-list", "list"),
            ("batch-packed", "packed"),
            ("batch-in-place", "inplace"),
        ]
        for size in sizes:
            for p in peers:
                for label, batch in modes:
                    if p.name.endswith("spin=0"):
                        continue
                    if batch == "loan":
                        skip = not p.zero_copy
                    elif batch in ("packed", "borrow", "inplace"):
                        skip = not p.name.startswith("shmkit")
                    else:
                        skip = bool(batch) and not p.batched
                    if skip:
                        continue
                    if missing[p.name] or p.supports(size):
                        rates[(p.name, size, label)] = None
                        continue
                    tag += 1
                    try:
                        rates[(p.name, size, label)] = throughput(p, size, seconds, batch, str(tag))
                    except Exception as e:  # report and go on with the other peers
                        print(f"  {p.name} {size} B {label}: FAILED {e}")
                        rates[(p.name, size, label)] = None
                    rate = fmt_rate(rates[(p.name, size, label)])
                    print(f"  {p.name:<20} {size:>6} B {label:<13} {rate} msg/s", flush=True)
        print("\nOne-way throughput, messages/s (two processes, sequence-checked)\n")
        rows = []
        for p in peers:
            if p.name.endswith("spin=0"):
                continue
            row = [p.name]
            for size in sizes:
                for label, _ in modes:
                    row.append(fmt_rate(rates.get((p.name, size, label))))
            rows.append(row)
        headers = ["peer"] + [
            f"{s // 1024 if s >= 1024 else s}{'K' if s >= 1024 else 'B'} {m}"
            for s in sizes
            for m, _ in modes
        ]
        print(table(headers, rows))
        print(
            "(msg: the consumer gets its own copy, except iceoryx2, which reads its samples"
            " in place; in-place: the payload is copied in, read in place (shmkit"
            " Queue.borrow); zero-copy: written into a loaned slot (shmkit Queue.reserve,"
            " iceoryx2 loan) and read in place; batch-in-place: shmkit reserve_many/borrow_many,"
            " each message numbered and checked in its slot)"
        )
        base = "shmkit-spsc"
        print(
            f"\nRatio {base} / peer (msg vs msg, or in-place vs in-place for iceoryx2 (*);"
            " batch: best shmkit batch vs the peer's batch; zero-copy vs zero-copy)\n"
        )
        rows = []
        for p in peers:
            if p.name.startswith("shmkit"):
                continue
            row = [p.name]
            for size in sizes:
                mode = "in-place" if p.name == "iceoryx2" else "msg"
                ours = rates.get((base, size, mode))
                theirs = rates.get((p.name, size, "msg"))
                star = "*" if mode == "in-place" else ""
                row.append(f"{ours / theirs:.1f}x{star}" if ours and theirs else "n/a")
                ours_b = max(
                    filter(
                        None,
                        [
                            rates.get((base, size, "batch-list")),
                            rates.get((base, size, "batch-packed")),
                            rates.get((base, size, "batch-in-place")),
                        ],
                    ),
                    default=None,
                )
                theirs_b = rates.get((p.name, size, "batch-list"))
                row.append(f"{ours_b / theirs_b:.1f}x" if ours_b and theirs_b else "-")
                ours_z = rates.get((base, size, "zero-copy"))
                theirs_z = rates.get((p.name, size, "zero-copy"))
                row.append(f"{ours_z / theirs_z:.1f}x" if ours_z and theirs_z else "-")
            rows.append(row)
        cols = ("msg", "batch", "zero-copy")
        print(table(["peer"] + [f"{s}B {m}" for s in sizes for m in cols], rows))

    if not args.no_throughput:
        batch_forms(rates, sizes, seconds, memif=not args.no_memif)

    rtts: dict[tuple[str, bool], list[int] | None] = {}
    if not args.no_rtt:
        print()
        for blocking in (False, True):
            for p in peers:
                if p.name == "shmkit-mpmc" or (p.name.endswith("spin=0") and not blocking):
                    continue
                if missing[p.name]:
                    rtts[(p.name, blocking)] = None
                    continue
                tag += 1
                try:
                    rtts[(p.name, blocking)] = round_trip(p, n_rtt, warm, blocking, str(tag))
                except Exception as e:
                    print(f"  {p.name} rtt: FAILED {e}")
                    rtts[(p.name, blocking)] = None
                lat = rtts[(p.name, blocking)]
                if lat:
                    mode = "blocking" if blocking else "spinning"
                    print(f"  {p.name:<20} {mode:<9} p50 {pct(lat, 0.5):.2f} us", flush=True)
        print(f"\nRound trip, 64 B, microseconds ({n_rtt} samples after {warm} warm-up)\n")
        rows = []
        for (name, blocking), lat in rtts.items():
            mode = "blocking" if blocking else "spinning"
            if not lat:
                rows.append([name, mode, "n/a", "n/a", "n/a", "n/a", "n/a"])
                continue
            base = rtts.get(("shmkit-spsc", blocking))
            ratio = f"{pct(lat, 0.5) / pct(base, 0.5):.1f}x" if base else "n/a"
            rows.append(
                [
                    name,
                    mode,
                    f"{pct(lat, 0.5):.2f}",
                    f"{pct(lat, 0.99):.2f}",
                    f"{pct(lat, 0.999):.2f}",
                    f"{statistics.mean(lat) / 1000:.2f}",
                    ratio,
                ]
            )
        print(table(["peer", "mode", "p50", "p99", "p99.9", "mean", "p50 vs shmkit"], rows))

    # Targets of issue 3 (2-core machine).
    print("\nTargets")
    checks: list[tuple[str, bool | None]] = []
    r = rates.get(("shmkit-spsc", 64, "msg"))
    checks.append(
        (f"64 B per-message >= 6 M msg/s: {fmt_rate(r)}", None if r is None else r >= 6e6)
    )
    rb = max(
        filter(
            None,
            [
                rates.get(("shmkit-spsc", 64, "batch-list")),
                rates.get(("shmkit-spsc", 64, "batch-packed")),
            ],
        ),
        default=None,
    )
    checks.append(
        (f"64 B batched >= 30 M msg/s: {fmt_rate(rb)}", None if rb is None else rb >= 30e6)
    )
    for what, mode, iox_mode in (
        ("zero-copy both ways", "zero-copy", "zero-copy"),
        ("payload copied in, read in place", "in-place", "msg"),
    ):
        ours = rates.get(("shmkit-spsc", 65536, mode))
        iox = rates.get(("iceoryx2", 65536, iox_mode))
        checks.append(
            (
                f"64 KiB >= 2x iceoryx2 ({what}): {fmt_rate(ours)} vs {fmt_rate(iox)}",
                None if not (ours and iox) else ours >= 2 * iox,
            )
        )
    for blocking, limit in ((False, 1.0), (True, 6.0)):
        lat = rtts.get(("shmkit-spsc", blocking))
        mode = "blocking" if blocking else "spinning"
        if lat:
            p50, p999 = pct(lat, 0.5), pct(lat, 0.999)
            checks.append((f"RTT {mode} p50 <= {limit} us: {p50:.2f}", p50 <= limit))
            checks.append((f"RTT {mode} p99.9 <= 5x p50: {p999:.2f}", p999 <= 5 * p50))
    lat = rtts.get(("shmkit-spsc spin=0", True))
    if lat:
        checks.append(
            (
                f"(futex only, spin=0) RTT blocking p50 <= 6 us: {pct(lat, 0.5):.2f}",
                pct(lat, 0.5) <= 6.0,
            )
        )
    for text, ok in checks:
        print(f"  [{'ok' if ok else 'MISS' if ok is False else ' - '}] {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
