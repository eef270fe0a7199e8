#!/usr/bin/env python3
"""Python objects between two processes: shmkit's ``put_obj``/``get_obj`` against what a
Python user would pick instead, measured in one run.

Workloads: a small object (a dict of 10 fields), ``bytes`` of 64 B, 1 KiB, 64 KiB and 1 MiB,
and numpy arrays (``uint8``) of 1 KiB, 1 MiB and 100 MiB. Peers:

* ``mp.Queue`` — ``multiprocessing.Queue`` (pickle through a pipe, a feeder thread);
* ``faster-fifo`` — ``faster_fifo.Queue`` (pickle into a shared byte ring);
* ``pyzmq`` — PUSH/PULL over ``ipc://``, pickle protocol 5 with the out-of-band buffers sent
  as their own frames with ``send_multipart(copy=False)`` and rebuilt from the received frames'
  buffers (``recv_multipart(copy=False)``);
* ``shm by hand`` — ``multiprocessing.shared_memory``: a ring of segments the producer copies
  each payload into (pickle for the dict), slot numbers and lengths sent through a
  ``multiprocessing.Pipe``, the slot handed back on another one; arrays are read in place;
* ``shmkit`` — ``MsgQueue.put_obj``/``get_obj`` (one copy into the message block, arrays
  received as views of it);
* ``shmkit in place`` (arrays) — the array is built in the message block before it is sent
  (``MsgQueue.reserve_obj``), so nothing is copied on either side.

Every message carries its sequence number (the dict a field, bytes and arrays their first 8
bytes) and the consumer checks it (bytes above 4 KiB come from 16 prepared objects and are
checked modulo 16, plus the count). The producer sends for a fixed time, then an end marker;
the consumer's rate after a warm-up is reported, as messages/s and microseconds per message,
with the ratio to ``mp.Queue``, and for arrays the ratio of shmkit's time per message to one
``memcpy`` of the array (``numpy.copyto``, measured in the same run: warm, and "cold" from as
many arrays as the producer cycles through, as its copies are). Producer and consumer
are separate spawned processes pinned to different CPUs (``--no-pin`` to disable), with the
cyclic garbage collector off. Peers that are not installed show ``n/a``.

On a shared machine whose speed drifts from one minute to the next, ``--rounds N`` runs
every peer of a workload N times in turn (peer A, peer B, ..., then again), so each round's
ratios come from measurements a few seconds apart; each peer's rate is then the median of
its rounds, and shmkit's ratio to ``mp.Queue`` in every round is printed too, with the
median of those ratios.

    python benches/bench_objects.py            # about 2 minutes
    python benches/bench_objects.py --quick    # shorter runs
    python benches/bench_objects.py --only shmkit,mp.Queue --workloads dict,np1M
    python benches/bench_objects.py --only shmkit,mp.Queue --workloads dict --rounds 7
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import multiprocessing as mp
import os
import pickle
import statistics
import struct
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SEQ = struct.Struct("<Q")
ctx = mp.get_context("spawn")
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


@dataclass(frozen=True)
class Workload:
    key: str
    kind: str  # "dict", "bytes" or "numpy"
    size: int

    @property
    def label(self) -> str:
        if self.kind == "dict":
            return "dict of 10 fields"
        return f"{self.kind} {human(self.size)}"

    @property
    def depth(self) -> int:
        """Messages in flight at most (queue depth, pool of slots): 1024 small ones, fewer big."""
        if self.size >= 64 * MiB:
            return 2
        return 1024 if self.size <= 64 * KiB else 8


WORKLOADS = [
    Workload("dict", "dict", 0),
    Workload("b64", "bytes", 64),
    Workload("b1K", "bytes", KiB),
    Workload("b64K", "bytes", 64 * KiB),
    Workload("b1M", "bytes", MiB),
    Workload("np1K", "numpy", KiB),
    Workload("np1M", "numpy", MiB),
    Workload("np100M", "numpy", 100 * MiB),
]


def human(n: int) -> str:
    for unit, scale in (("MiB", MiB), ("KiB", KiB)):
        if n >= scale:
            return f"{n // scale} {unit}"
    return f"{n} B"


# --- what is sent and checked --------------------------------------------------------------


class Source:
    """Makes message ``seq`` of a workload (as cheaply as the workload allows) and checks a
    received one."""

    def __init__(self, w: Workload, pool: int) -> None:
        self.w = w
        if w.kind == "bytes" and w.size > 4 * KiB:
            self.variants = [SEQ.pack(i) + os.urandom(w.size - 8) for i in range(16)]
        elif w.kind == "bytes":
            self.pad = os.urandom(w.size - 8)
        elif w.kind == "numpy":
            import numpy as np

            # a pool of arrays stamped in turn: a peer still sending one would be caught by
            # the consumer's check
            self.arrays = [np.full(w.size, i & 0xFF, np.uint8) for i in range(pool)]

    def make(self, seq: int) -> Any:
        kind = self.w.kind
        if kind == "dict":
            return {
                "seq": seq,
                "name": "sensor-7",
                "value": 21.5,
                "unit": "C",
                "ok": True,
                "count": 12345,
                "tags": ("a", "b"),
                "ts": 1700000000.25,
                "source": None,
                "flags": 3,
            }
        if kind == "bytes":
            if self.w.size > 4 * KiB:
                return self.variants[seq % 16]
            return SEQ.pack(seq) + self.pad
        a = self.arrays[seq % len(self.arrays)]
        a[:8].view("<u8")[0] = seq
        return a

    def check(self, obj: Any, seq: int) -> None:
        kind = self.w.kind
        if kind == "dict":
            got = obj["seq"]
        elif kind == "bytes":
            got = SEQ.unpack_from(obj)[0]
            if self.w.size > 4 * KiB:
                seq %= 16  # one of the 16 prepared objects
            if len(obj) != self.w.size:
                raise AssertionError(f"message {seq}: {len(obj)} bytes, not {self.w.size}")
        else:
            got = SEQ.unpack_from(obj)[0]
            if obj.nbytes != self.w.size:
                raise AssertionError(f"message {seq}: {obj.nbytes} bytes, not {self.w.size}")
        if got != seq:
            raise AssertionError(f"message {seq} carries {got}: lost, duplicated or reordered")


END = "end"


# --- peers -----------------------------------------------------------------------------------


class Peer:
    name = ""
    #: a hint for a peer that is not installed
    needs = ""

    def available(self) -> bool:
        return True

    def supports(self, w: Workload) -> bool:
        return True

    def make(self, w: Workload, tag: str) -> Any:
        """Shared state handed (pickled) to both processes."""
        return None

    def destroy(self, spec: Any) -> None:
        pass

    def sender(self, spec: Any, w: Workload) -> Callable[[Any], None]:
        raise NotImplementedError

    def receiver(self, spec: Any, w: Workload) -> Callable[[], Any]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class MpQueue(Peer):
    name = "mp.Queue"

    def make(self, w: Workload, tag: str) -> Any:
        return ctx.Queue(w.depth)

    def sender(self, spec: Any, w: Workload) -> Callable[[Any], None]:
        return spec.put  # type: ignore[no-any-return]

    def receiver(self, spec: Any, w: Workload) -> Callable[[], Any]:
        return spec.get  # type: ignore[no-any-return]


class FasterFifo(Peer):
    name = "faster-fifo"
    needs = "pip install faster-fifo"

    def available(self) -> bool:
        return _importable("faster_fifo")

    def make(self, w: Workload, tag: str) -> Any:
        import faster_fifo

        # room for a few messages of the largest size (its ring holds pickled bytes)
        room = max(8 * MiB, 3 * (w.size + 4 * KiB))
        return faster_fifo.Queue(max_size_bytes=room, maxsize=w.depth)

    def sender(self, spec: Any, w: Workload) -> Callable[[Any], None]:
        def put(obj: Any) -> None:
            spec.put(obj, timeout=60)

        return put

    def receiver(self, spec: Any, w: Workload) -> Callable[[], Any]:
        def get() -> Any:
            return spec.get(timeout=60)

        return get


class Zmq(Peer):
    name = "pyzmq"
    needs = "pip install pyzmq"

    def available(self) -> bool:
        return _importable("zmq")

    def make(self, w: Workload, tag: str) -> Any:
        return f"ipc://{tempfile.gettempdir()}/shmkit-bench-objects-{os.getpid()}-{tag}"

    def destroy(self, spec: Any) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(spec[len("ipc://") :])

    def _socket(self, kind: int, w: Workload) -> Any:
        import zmq

        self.zctx = zmq.Context()
        s = self.zctx.socket(kind)
        hwm = min(w.depth, 1000)
        s.setsockopt(zmq.SNDHWM if kind == zmq.PUSH else zmq.RCVHWM, hwm)
        s.setsockopt(zmq.LINGER, -1)
        self.sock = s
        return s

    def sender(self, spec: Any, w: Workload) -> Callable[[Any], None]:
        import zmq

        s = self._socket(zmq.PUSH, w)
        s.connect(spec)

        def send(obj: Any) -> None:
            bufs: list[pickle.PickleBuffer] = []
            head = pickle.dumps(obj, 5, buffer_callback=bufs.append)
            s.send_multipart([head, *(b.raw() for b in bufs)], copy=False)

        return send

    def receiver(self, spec: Any, w: Workload) -> Callable[[], Any]:
        import zmq

        s = self._socket(zmq.PULL, w)
        s.bind(spec)

        def recv() -> Any:
            head, *frames = s.recv_multipart(copy=False)
            return pickle.loads(head.buffer, buffers=[f.buffer for f in frames])

        return recv

    def close(self) -> None:
        self.sock.close()
        self.zctx.term()


class ShmByHand(Peer):
    """multiprocessing.shared_memory used by hand: a ring of segments, pipes for the rest."""

    name = "shm by hand"

    def make(self, w: Workload, tag: str) -> Any:
        from multiprocessing import shared_memory

        slots = min(w.depth, 64)
        size = max(w.size, 4 * KiB) + 4 * KiB
        segs = [shared_memory.SharedMemory(create=True, size=size) for _ in range(slots)]
        data_r, data_w = ctx.Pipe(duplex=False)
        free_r, free_w = ctx.Pipe(duplex=False)
        self.segs = segs  # the creator keeps them until destroy()
        return ([s.name for s in segs], size, data_r, data_w, free_r, free_w)

    def destroy(self, spec: Any) -> None:
        for s in self.segs:
            s.close()
            s.unlink()

    @staticmethod
    def _attach(names: list[str]) -> list[Any]:
        from multiprocessing import shared_memory

        # Both processes are children of the one that created the segments and share its
        # resource tracker, so attaching registers nothing new (a process with a tracker of
        # its own would unlink the segments at its exit before Python 3.13).
        return [shared_memory.SharedMemory(n) for n in names]

    def sender(self, spec: Any, w: Workload) -> Callable[[Any], None]:
        names, size, _, data_w, free_r, _ = spec
        segs = self._attach(names)
        self.segs_local = segs
        free = list(range(len(segs)))
        head = struct.Struct("<IQB")
        np = _numpy() if w.kind == "numpy" else None
        arrays = [np.ndarray(size, np.uint8, buffer=s.buf) for s in segs] if np else []

        def send(obj: Any) -> None:
            if not free:
                free.append(SEQ.unpack(free_r.recv_bytes())[0])
            while free_r.poll():
                free.append(SEQ.unpack(free_r.recv_bytes())[0])
            slot = free.pop()
            raw = 1
            if w.kind == "numpy" and not isinstance(obj, str):
                n = obj.nbytes
                np.copyto(arrays[slot][:n], obj)
            elif w.kind == "bytes" and not isinstance(obj, str):
                n = len(obj)
                segs[slot].buf[:n] = obj
            else:  # the dict, and the end marker
                data = pickle.dumps(obj, 5)
                n, raw = len(data), 0
                segs[slot].buf[:n] = data
            data_w.send_bytes(head.pack(slot, n, raw))

        return send

    def receiver(self, spec: Any, w: Workload) -> Callable[[], Any]:
        names, _, data_r, _, _, free_w = spec
        segs = self._attach(names)
        self.segs_local = segs
        head = struct.Struct("<IQB")
        np = _numpy() if w.kind == "numpy" else None
        pending: list[int] = []

        def recv() -> Any:
            # the previous message's slot goes back once its object is no longer used
            while pending:
                free_w.send_bytes(SEQ.pack(pending.pop()))
            slot, n, raw = head.unpack(data_r.recv_bytes())
            pending.append(slot)
            buf = segs[slot].buf
            if not raw:
                return pickle.loads(buf[:n])
            if w.kind == "numpy":
                return np.ndarray(n, np.uint8, buffer=buf)
            return bytes(buf[:n])

        return recv

    def close(self) -> None:
        for s in getattr(self, "segs_local", []):
            with contextlib.suppress(BufferError):
                s.close()


class Shmkit(Peer):
    name = "shmkit"
    in_place = False

    def available(self) -> bool:
        import shmkit

        return hasattr(shmkit, "MsgQueue")

    def supports(self, w: Workload) -> bool:
        return w.kind == "numpy" or not self.in_place

    def make(self, w: Workload, tag: str) -> Any:
        import shmkit

        name = f"bench-objects-{os.getpid()}-{tag}"
        # room for every message in flight, plus one being written and one being read
        per = max(w.size, 4 * KiB) + 4 * KiB
        size = max(16 * MiB, (w.depth + 2) * per + (w.depth + 2) * 2 * KiB)
        region = shmkit.Region.create(name, size + size // 8, root="bench")
        q = shmkit.MsgQueue.create(region, "objects", w.depth)
        self.region = region
        return q

    def destroy(self, spec: Any) -> None:
        self.region.unlink()
        self.region.close()

    def sender(self, spec: Any, w: Workload) -> Callable[[Any], None]:
        if self.in_place:
            n = w.size

            def send_in_place(obj: Any) -> None:
                if isinstance(obj, str):  # the end marker
                    spec.put_obj(obj)
                    return
                # ``obj`` is used for its sequence stamp only: the array is made in the block
                with spec.reserve_obj(n, room=4096) as out:
                    a = out.array((n,), "uint8")
                    a[:8] = obj[:8]
                    out.put(a)

            return send_in_place
        return spec.put_obj  # type: ignore[no-any-return]

    def receiver(self, spec: Any, w: Workload) -> Callable[[], Any]:
        return spec.get_obj  # type: ignore[no-any-return]


class ShmkitInPlace(Shmkit):
    name = "shmkit in place"
    in_place = True


PEERS: list[Peer] = [MpQueue(), FasterFifo(), Zmq(), ShmByHand(), Shmkit(), ShmkitInPlace()]


def _importable(mod: str) -> bool:
    try:
        __import__(mod)
    except ImportError:
        return False
    return True


def _numpy() -> Any:
    import numpy

    return numpy


# --- the two processes ---------------------------------------------------------------------


def _pin(cpu: int | None) -> None:
    if cpu is not None:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {cpu})


def _producer(
    kind: type[Peer],
    spec: Any,
    w: Workload,
    seconds: float,
    cpu: int | None,
    out: Any,
    stop: Any,
) -> None:
    peer = kind()
    try:
        _pin(cpu)
        gc.disable()
        src = Source(w, pool=_pool(w))
        send = peer.sender(spec, w)
        seq = 0
        deadline = time.perf_counter() + seconds
        while True:
            send(src.make(seq))
            seq += 1
            if seq % 8 == 0 and time.perf_counter() > deadline:
                break
        send(END)
        out.send(("ok", seq))
        # Close only once the consumer has everything: a pyzmq PUSH socket closed early loses
        # what its peer has not read yet, whatever its linger.
        stop.poll(600)
    except BaseException:
        out.send(("error", traceback.format_exc()))
    finally:
        peer.close()


def _consumer(
    kind: type[Peer], spec: Any, w: Workload, warmup: int, cpu: int | None, out: Any, ready: Any
) -> None:
    peer = kind()
    try:
        _pin(cpu)
        gc.disable()
        src = Source(w, pool=1)
        recv = peer.receiver(spec, w)
        ready.send("ready")
        seq = 0
        t0 = 0.0
        while True:
            obj = recv()
            if isinstance(obj, str) and obj == END:
                break
            src.check(obj, seq)
            del obj
            seq += 1
            if seq == warmup:
                t0 = time.perf_counter()
        t1 = time.perf_counter()
        out.send(("ok", (seq - warmup, t1 - t0) if seq > warmup else (0, 0.0)))
    except BaseException:
        out.send(("error", traceback.format_exc()))
    finally:
        peer.close()


def run_one(peer: Peer, w: Workload, seconds: float, pin: bool) -> tuple[float, str]:
    """Messages/s of ``peer`` for ``w`` (0 with a note on failure)."""
    tag = f"{peer.name.replace(' ', '')}-{w.key}"
    spec = peer.make(w, tag)
    try:
        warmup = 2 if w.size >= 64 * MiB else 200 if w.size <= 64 * KiB else 20
        pr, pw = ctx.Pipe(duplex=False)
        cr, cw = ctx.Pipe(duplex=False)
        rr, rw = ctx.Pipe(duplex=False)
        sr, sw = ctx.Pipe(duplex=False)
        cpus = (0, 1) if pin and len(os.sched_getaffinity(0)) >= 2 else (None, None)
        consumer = ctx.Process(
            target=_consumer, args=(type(peer), spec, w, warmup, cpus[1], cw, rw)
        )
        consumer.start()
        if not rr.poll(120):
            raise TimeoutError("consumer not ready")
        rr.recv()
        producer = ctx.Process(
            target=_producer, args=(type(peer), spec, w, seconds, cpus[0], pw, sr)
        )
        producer.start()
        results = []
        for conn, proc in ((pr, producer), (cr, consumer)):
            status = conn.recv() if conn.poll(seconds * 10 + 60) else ("error", "timed out")
            if status[0] != "ok":
                producer.kill()
                consumer.kill()
                producer.join(10)
                consumer.join(10)
                return 0.0, f"{proc.name}: " + status[1].strip().splitlines()[-1]
            results.append(status)
            if proc is consumer:
                sw.send("stop")
        producer.join(60)
        consumer.join(60)
        count, elapsed = results[1][1]
        if count == 0 or elapsed <= 0:
            return 0.0, "too few messages for the warm-up"
        return count / elapsed, ""
    finally:
        peer.destroy(spec)


def memcpy_seconds(size: int, sources: int = 1) -> float:
    """One ``memcpy`` of ``size`` bytes (numpy.copyto into one buffer), median of a few runs,
    from ``sources`` arrays in turn: 1 is a warm copy; as many as a producer cycles through
    (see ``_producer``) is a copy from memory as cold as the producer's."""
    np = _numpy()
    srcs = [np.full(size, i & 0xFF, np.uint8) for i in range(sources)]
    dst = np.empty_like(srcs[0])
    np.copyto(dst, srcs[0])
    reps = max(3 * sources, min(2000, (256 * MiB) // size))
    times = []
    for _ in range(5):
        t = time.perf_counter()
        for i in range(reps):
            np.copyto(dst, srcs[i % sources])
        times.append((time.perf_counter() - t) / reps)
    return statistics.median(times)


def _pool(w: Workload) -> int:
    """Arrays a producer stamps in turn: more than any peer keeps in flight (queue depth, or
    both high-water marks and the socket's buffer for pyzmq)."""
    return 2 * w.depth + (300 if w.size <= 64 * KiB else 4)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="shorter runs")
    ap.add_argument("--seconds", type=float, help="producer time per measurement")
    ap.add_argument("--only", help="comma-separated peer names")
    ap.add_argument("--workloads", help="comma-separated: " + ",".join(w.key for w in WORKLOADS))
    ap.add_argument("--no-pin", action="store_true", help="do not pin the two processes")
    ap.add_argument(
        "--rounds", type=int, default=1, help="runs of each peer, in turn (median reported)"
    )
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    seconds = args.seconds or (0.4 if args.quick else 1.5)
    peers = PEERS
    if args.only:
        names = {n.strip() for n in args.only.split(",")}
        peers = [p for p in PEERS if p.name in names]
    workloads = WORKLOADS
    if args.workloads:
        keys = {k.strip() for k in args.workloads.split(",")}
        workloads = [w for w in WORKLOADS if w.key in keys]
    print(f"# Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {seconds} s per run")
    rounds: dict[tuple[str, str], list[float]] = {}
    for w in workloads:
        for r in range(args.rounds):
            for p in peers:
                if not p.available():
                    if r > 0:
                        continue
                    rate, note = 0.0, f"n/a ({p.needs or 'not available'})"
                elif not p.supports(w):
                    continue
                else:
                    rate, note = run_one(p, w, seconds, not args.no_pin)
                    rounds.setdefault((p.name, w.key), []).append(rate)
                tag = f" [{r + 1}/{args.rounds}]" if args.rounds > 1 else ""
                print(f"  {w.label:<18} {p.name:<16} {_fmt(rate, note)}{tag}", flush=True)
    rates = {k: statistics.median(v) for k, v in rounds.items()}
    print()
    print(report(workloads, peers, rates))
    if args.rounds > 1:
        print(by_round(workloads, rounds))
    return 0


def by_round(workloads: list[Workload], rounds: dict[tuple[str, str], list[float]]) -> str:
    """shmkit's ratio to mp.Queue in each round, and their median: the fairer figure on a
    machine whose speed drifts (the report above divides each peer's median rate)."""
    lines = ["# shmkit against multiprocessing.Queue, round by round"]
    for w in workloads:
        base = rounds.get(("mp.Queue", w.key), [])
        ours = [
            max(pair)
            for pair in zip(
                rounds.get(("shmkit", w.key), [0.0] * len(base)),
                rounds.get(("shmkit in place", w.key), [0.0] * len(base)),
            )
        ]
        ratios = [a / b for a, b in zip(ours, base) if a and b]
        if ratios:
            each = " ".join(f"{x:.1f}x" for x in ratios)
            lines.append(f"{w.label:<18}  median {statistics.median(ratios):.1f}x  ({each})")
    return "\n".join(lines)


def _fmt(rate: float | None, note: str) -> str:
    if not rate:
        return note or "n/a"
    return f"{rate:>12,.0f} msg/s {1e6 / rate:>10.1f} us/msg"


def report(
    workloads: list[Workload], peers: list[Peer], rates: dict[tuple[str, str], float]
) -> str:
    """The summary: shmkit against mp.Queue, and array times against one memcpy."""
    lines = ["# shmkit (best of put_obj / in place) against multiprocessing.Queue and memcpy"]
    for w in workloads:
        best = max(rates.get(("shmkit", w.key), 0.0), rates.get(("shmkit in place", w.key), 0.0))
        base = rates.get(("mp.Queue", w.key), 0.0)
        parts = [f"{w.label:<18}"]
        if best and base:
            parts.append(f"{best / base:7.1f}x mp.Queue")
        for p in peers:
            r = rates.get((p.name, w.key), 0.0)
            if best and r and p.name not in ("shmkit", "shmkit in place", "mp.Queue"):
                parts.append(f"{best / r:6.1f}x {p.name}")
        if w.kind == "numpy" and best:
            warm = memcpy_seconds(w.size)
            cold = memcpy_seconds(w.size, _pool(w)) if w.size * _pool(w) <= GiB else warm
            for p in ("shmkit", "shmkit in place"):
                r = rates.get((p, w.key), 0.0)
                if r:
                    parts.append(
                        f"{p}: {1 / r / warm:5.2f} memcpy "
                        f"({1 / r / cold:.2f} cold, {1e6 / r:.1f} us)"
                    )
            parts.append(
                f"[memcpy {warm * 1e6:.1f} us, from the producer's arrays {cold * 1e6:.1f}]"
            )
        lines.append("  ".join(parts))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
