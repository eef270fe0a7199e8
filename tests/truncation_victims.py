"""Victims for the truncation tests: ``python truncation_victims.py KIND ROOT FAULTHANDLER``.

Each sets up one kind of object and works on it (checking every result) until a peer
truncates the region's file under it. It must come out with ``RegionTruncatedError`` (or
``CorruptionError``): it prints ``working`` once it is busy, then ``raised <class>: <text>``,
checks what must hold after a truncation, prints ``survived`` and exits 0. It never dies of
SIGBUS, and an AssertionError (wrong data passed as valid) or a timeout exits non-zero.

FAULTHANDLER is ``off``, ``before`` (the test starts us with ``PYTHONFAULTHANDLER=1``, so it
is installed before shmkit's guard) or ``after`` (enabled once the objects exist, in front of
the guard; the next mapping shmkit creates puts the guard back in front).
"""

from __future__ import annotations

import contextlib
import faulthandler
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import shmkit
import shmkit.netmap as nm
from shmkit.api.client import Client
from shmkit.api.messages import define, u32, vla
from shmkit.api.server import Server

Step = Callable[[], None]
After = Callable[[BaseException], None]

Blob = define("trunc_blob", [("n", u32), ("items", vla(u32, "n"))])
BlobReply = define("trunc_blob_reply", [("n", u32), ("items", vla(u32, "n"))])

KEEP: list[Any] = []


def payload(i: int, n: int) -> bytes:
    return bytes((i + j) % 251 + 1 for j in range(n))  # never all zeros


def region(root: str, size: int) -> shmkit.Region:
    r = shmkit.Region.create("victim", size, root=root)
    KEEP.append(r)
    return r


def expect_truncated(*calls: Callable[[], object]) -> None:
    """Every later operation reports the truncation too."""
    for i, call in enumerate(calls):
        try:
            call()
        except shmkit.RegionTruncatedError:
            continue
        raise AssertionError(f"call {i} of {len(calls)} did not raise RegionTruncatedError")


# --------------------------------------------------------------------------- scenarios


def region_heap(root: str) -> tuple[Step, After]:
    r = region(root, 1 << 20)
    view = r.buffer(r.alloc(4096), 4096)  # nothing else writes there
    blocks = [r.alloc(96 << 10) for _ in range(8)]  # across the whole heap
    view[:4] = b"live"
    n = [0]

    def step() -> None:
        i = n[0] = n[0] + 1
        k = i % len(blocks)
        r.free(blocks[k])
        blocks[k] = r.alloc(96 << 10)
        data = payload(i, 4096)
        r.write(blocks[k] + 1000, data)
        assert r.read(blocks[k] + 1000, len(data)) == data
        r.create_object(f"obj{i}", 256)
        assert r.find_object(f"obj{i}")["size"] == 256
        r.remove_object(f"obj{i}")
        assert r.objects() == []

    def after(e: BaseException) -> None:
        assert bytes(view) == bytes(len(view)), "a memoryview into the lost mapping reads zeros"
        view[:4] = b"gone"  # writing does not crash either
        expect_truncated(
            lambda: r.alloc(64),
            lambda: r.free(blocks[0]),
            r.objects,
            lambda: r.read(blocks[0], 16),
            lambda: r.buffer(blocks[0], 16),
            r.stats,
        )
        r.close()

    return step, after


def queue(root: str, spsc: bool) -> tuple[Step, After]:
    r = region(root, 1 << 20)
    r.alloc(600 << 10)  # the queue lies in the second half of the file
    q = shmkit.Queue.create(r, "q", 256, 256, spsc=spsc)
    KEEP.append(q)
    n = [0]

    def step() -> None:
        i = n[0] = n[0] + 1
        items = [payload(i + k, 200) for k in range(1 + i % 200)]
        assert q.put_many(items) == len(items)
        got = q.get_many(len(items))
        assert got == items, "elements come back intact"
        q.put(items[0], timeout=1)
        assert q.get(timeout=1) == items[0]
        assert len(q) == 0

    def after(e: BaseException) -> None:
        expect_truncated(q.get_nowait, lambda: q.put(b"x"), lambda: len(q), q.stats)
        q.close()

    return step, after


def queue_blocking(root: str) -> tuple[Step, After]:
    r = region(root, 1 << 20)
    r.alloc(600 << 10)
    q = shmkit.Queue.create(r, "q", 64, 64)
    KEEP.append(q)

    def announce() -> None:
        # Say "working" once the getter went to sleep on the futex.
        while q.stats()["get_waits"] == 0:
            time.sleep(0.001)
        print("asleep", flush=True)

    threading.Thread(target=announce, daemon=True).start()

    def step() -> None:
        q.get()  # blocks until the truncation (the queue stays empty)
        raise AssertionError("get returned from an empty queue")

    def after(e: BaseException) -> None:
        expect_truncated(lambda: q.get(timeout=0.1))

    return step, after


def msgrings(root: str) -> tuple[Step, After]:
    r = region(root, 2 << 20)
    r.alloc(1 << 20)
    rings = shmkit.MsgRings.create(r, "rings", server=[(64, 64)], client=[(1024, 256)])
    KEEP.append(rings)
    n = [0]

    def step() -> None:
        i = n[0] = n[0] + 1
        for size in (1000, 4000):  # a ring slot, and a heap fallback
            m = rings.alloc(size)
            data = payload(i, size)
            rings.write(m, data)
            assert rings.read(m) == data
            rings.free(m)

    def after(e: BaseException) -> None:
        expect_truncated(lambda: rings.alloc(100), rings.stats, lambda: rings.read(1 << 40))

    return step, after


def netmap(root: str) -> tuple[Step, After]:
    tx = nm.open("victim{0", root=root, slots=256)
    rx = nm.open("victim}0", root=root)
    KEEP.extend([tx, rx])
    n = [0]

    def step() -> None:
        i = n[0] = n[0] + 1
        pkts = [payload(i + k, 60 + (i * 7 + k) % 1400) for k in range(64)]
        for a, b in ((tx, rx), (rx, tx)):  # both directions: every ring and buffer is used
            assert a.send(pkts) == len(pkts)
            assert b.poll(timeout=1.0)
            got = b.recv(len(pkts))
            assert got == pkts, "packets come through intact"

    def after(e: BaseException) -> None:
        expect_truncated(
            tx.txsync, rx.rxsync, lambda: rx.poll(timeout=0.1), lambda: tx.send([b"x"])
        )
        tx.close()
        rx.close()

    return step, after


def api_server(root: str) -> tuple[Step, After]:
    """Serve until the truncation: ``serve_forever`` must end with the error, not a signal."""
    server = Server("victim", root=root, region_size=3 << 20)

    @server.handle(Blob, reply=BlobReply)
    def blob(msg: Any, client: Any) -> Any:
        return BlobReply(n=msg.n, items=msg.items)

    KEEP.append(server)
    print("serving", flush=True)

    def step() -> None:
        server.serve_forever()

    def after(e: BaseException) -> None:
        # Stay (not closed, not gone) until the test says so: the clients must find the
        # truncation themselves, not a server that left.
        sys.stdin.read()
        with contextlib.suppress(shmkit.RegionTruncatedError):
            server.close()

    return step, after


def api_client(root: str) -> tuple[Step, After]:
    c = Client.connect("victim", "victim", root=root, timeout=10)
    KEEP.append(c)
    n = [0]

    def step() -> None:
        i = n[0] = n[0] + 1
        items = [(i * 31 + k) % 1000 + 1 for k in range(1 + i % 200)]
        reply = c.call(Blob(n=len(items), items=items), timeout=5)
        assert list(reply.items) == items

    def after(e: BaseException) -> None:
        with contextlib.suppress(shmkit.RegionTruncatedError, TimeoutError):
            c.close()

    return step, after


def memif_server(root: str) -> tuple[Step, After]:
    """A memif server whose client (the test, a raw peer) hands over unsealed memfds."""
    from shmkit.memif import Interface

    iface = Interface(root, role="server")  # ROOT is the socket path here
    KEEP.append(iface)
    print("listening", flush=True)
    assert iface.wait_connected(20), iface.details()["last_error"]
    n = [0]

    def step() -> None:
        i = n[0] = n[0] + 1
        assert iface.rx_burst(0, 64) == []  # the raw client sends nothing
        iface.tx_burst(0, [payload(i + k, 200) for k in range(4)])  # once it posts buffers

    def after(e: BaseException) -> None:
        deadline = time.monotonic() + 10
        while iface.connected and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not iface.connected, "a truncation disconnects"
        assert "truncated" in str(iface.details()["last_error"]), iface.details()
        iface.close()

    return step, after


SCENARIOS: dict[str, Callable[[str], tuple[Step, After]]] = {
    "region": region_heap,
    "queue-mpmc": lambda root: queue(root, spsc=False),
    "queue-spsc": lambda root: queue(root, spsc=True),
    "queue-blocking": queue_blocking,
    "msgrings": msgrings,
    "netmap": netmap,
    "api-server": api_server,
    "api-client": api_client,
    "memif-server": memif_server,
}


def main() -> None:
    kind, root, fh = sys.argv[1:4]
    assert faulthandler.is_enabled() == (fh == "before")
    step, after = SCENARIOS[kind](root)
    if fh == "after":
        faulthandler.enable()  # in front of the guard now ...
        KEEP.append(shmkit.Region.create_anonymous(1 << 16))  # ... and behind it again
    deadline = time.monotonic() + 60
    done = 0
    try:
        while time.monotonic() < deadline:
            step()
            done += 1
            if done == 20:
                print("working", flush=True)
    except shmkit.CorruptionError as e:  # RegionTruncatedError is one
        print(f"raised {type(e).__name__}: {e}", flush=True)
        after(e)
        print("survived", flush=True)
        return
    print("no error within 60 s", flush=True)
    sys.exit(1)


if __name__ == "__main__":
    main()
