"""shmkit.Queue with asyncio and selectors: fileno() readiness driven by other processes."""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Iterator

import pytest
import shmkit
from procs import finish, python, wait_line


@pytest.fixture
def region(root: str) -> Iterator[shmkit.Region]:
    r = shmkit.Region.create("aq", 4 << 20, root=root)
    yield r
    r.close()


PRODUCER = """
import sys, shmkit
r = shmkit.Region.open("aq", root=sys.argv[1])
q = shmkit.Queue.open(r, sys.argv[2])
n = int(sys.argv[3])
sys.stdin.readline()  # go
i = 0
while i < n:
    # Bursts of various sizes, each waiting for room.
    burst = [b"%d" % j for j in range(i, min(n, i + 1 + i % 17))]
    for item in burst:
        q.put(item, timeout=30)
    i += len(burst)
"""

CONSUMER = """
import sys, shmkit
r = shmkit.Region.open("aq", root=sys.argv[1])
q = shmkit.Queue.open(r, sys.argv[2])
n = int(sys.argv[3])
print("ready", file=sys.stderr, flush=True)
got = [q.get(timeout=30) for _ in range(n)]
assert got == [b"%d" % i for i in range(n)], got[:10]
print("consumed", n, flush=True)
"""


@pytest.mark.parametrize("spsc", [False, True])
def test_asyncio_consumer_of_another_process(region: shmkit.Region, spsc: bool) -> None:
    n = 3000
    q = shmkit.Queue.create(region, "in", 8, 16, spsc=spsc)
    child = python(PRODUCER, region.root or "", "in", str(n))

    async def main() -> tuple[list[bytes], int]:
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0)

        t = asyncio.create_task(ticker())
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
        got = [await q.get_async(timeout=30) for _ in range(n)]
        done.set()
        await t
        return got, ticks

    got, ticks = asyncio.run(main())
    finish(child)
    assert got == [b"%d" % i for i in range(n)]
    assert ticks > 0  # the loop kept running while the consumer waited
    assert q.stats()["get_waits"] > 0  # the fd helper slept on the futex


@pytest.mark.parametrize("spsc", [False, True])
def test_asyncio_producer_into_another_process(region: shmkit.Region, spsc: bool) -> None:
    n = 3000
    q = shmkit.Queue.create(region, "out", 4, 16, spsc=spsc)
    child = python(CONSUMER, region.root or "", "out", str(n))
    wait_line(child, "ready")

    async def main() -> None:
        for i in range(n):
            await q.put_async(b"%d" % i, timeout=30)

    asyncio.run(main())
    assert finish(child).strip() == f"consumed {n}"
    assert q.stats()["full"] > 0  # it did have to wait for room


def test_concurrent_waiters_on_one_handle(region: shmkit.Region) -> None:
    q = shmkit.Queue.create(region, "cw", 8, 8)
    feeder = shmkit.Queue.open(region, "cw")

    async def main() -> list[bytes]:
        tasks = [asyncio.create_task(q.get_async(timeout=10)) for _ in range(3)]
        await asyncio.sleep(0)  # let all three register on the fd
        for item in (b"a", b"b", b"c"):
            feeder.put(item)
        return sorted(await asyncio.gather(*tasks))

    assert asyncio.run(main()) == [b"a", b"b", b"c"]


def test_async_timeouts_and_cancellation(region: shmkit.Region) -> None:
    q = shmkit.Queue.create(region, "to", 2, 8)

    async def main() -> None:
        with pytest.raises(shmkit.QueueEmpty):
            await q.get_async(timeout=0.05)
        with pytest.raises(ValueError):
            await q.get_async(timeout=-1)
        pending = asyncio.create_task(q.get_async())
        await asyncio.sleep(0)
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        # The fd watch was cleaned up: a new wait works.
        q.put(b"x")
        assert await q.get_async(timeout=5) == b"x"
        q.put_many([b"1", b"2"])
        with pytest.raises(shmkit.QueueFull):
            await q.put_async(b"3", timeout=0.05)
        assert await q.get_async() == b"1"
        await q.put_async(b"3", timeout=5)

    asyncio.run(main())


def test_fileno_with_selectors(region: shmkit.Region) -> None:
    q = shmkit.Queue.create(region, "sel", 4, 8)
    child_code = """
import sys, shmkit
q = shmkit.Queue.open(shmkit.Region.open("aq", root=sys.argv[1]), "sel")
sys.stdin.readline()
q.put(b"ping")
"""
    child = python(child_code, region.root or "")
    with selectors.DefaultSelector() as sel:
        sel.register(q.fileno(), selectors.EVENT_READ)
        assert sel.select(0.05) == []
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
        assert sel.select(10), "fileno() did not become readable"
        assert q.get_nowait() == b"ping"
        assert settles(sel, lambda: q.try_get() is None)  # finding it empty resets the fd
    finish(child)
    wfd = q.writable_fileno()
    with selectors.DefaultSelector() as sel:
        sel.register(wfd, selectors.EVENT_READ)
        assert sel.select(10)  # room available
        q.put_many([b"1", b"2", b"3", b"4"])
        assert settles(sel, lambda: not q.try_put(b"5"))  # finding it full resets the fd
        q.get()
        assert sel.select(10)


def settles(sel: selectors.BaseSelector, miss: Callable[[], bool]) -> bool:
    """After a missed non-blocking call the fd stops being readable. The helper thread may
    have judged readiness just before the miss, so one spurious readiness is allowed (the
    next miss clears it), never a lasting one."""
    for _ in range(2):
        assert miss()
        if sel.select(0.05) == []:
            return True
    return False
