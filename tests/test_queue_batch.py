"""shmkit.Queue in-place batches (reserve_many / borrow_many): the Python face, and processes
SIGKILLed holding a batch, whose slots are recovered as the single forms' are."""

from __future__ import annotations

import array
import os
import random
import struct
import subprocess
from collections.abc import Iterator

import pytest
import shmkit
from procs import kill9, python, wait_line


def kill(proc: subprocess.Popen[str]) -> None:
    kill9(proc)
    proc.communicate()


@pytest.fixture
def region(root: str) -> Iterator[shmkit.Region]:
    r = shmkit.Region.create("bq", 8 << 20, root=root)
    yield r
    r.close()


@pytest.mark.parametrize("spsc", [False, True])
def test_reserve_many_writes_in_place_and_borrow_many_reads_in_place(
    region: shmkit.Region, spsc: bool
) -> None:
    q = shmkit.Queue.create(region, "b", 16, 64, spsc=spsc)
    b = q.reserve_many(6)
    assert (len(b), b.elsize, b.done) == (6, 64, False)
    assert b.stride >= 64 and len(b.view) == 5 * b.stride + 64
    for i in range(6):
        struct.pack_into("<QQ", b.view, i * b.stride, i, i * i)
    b[5][16:20] = b"tail"
    assert q.try_get() is None  # nothing published before the commit
    assert b.commit(array.array("I", [16, 16, 16, 16, 16, 20])) == 6
    assert b.done
    with pytest.raises(shmkit.ShmkitError):
        b.view  # noqa: B018
    with q.borrow_many(64) as c:
        assert len(c) == 6
        assert list(c.lengths) == [16] * 5 + [20]
        assert [struct.unpack_from("<QQ", c.view, i * c.stride) for i in range(6)] == [
            (i, i * i) for i in range(6)
        ]
        assert bytes(c[-1][16:]) == b"tail"
        with pytest.raises(TypeError):
            c.view[0] = 1  # read-only
        with pytest.raises(IndexError):
            c[6]
    assert c.released
    assert len(q.borrow_many(4)) == 0  # empty: an empty batch, no exception
    s = q.stats()
    assert (s["puts"], s["gets"], s["recovered"]) == (6, 6, 0)


@pytest.mark.parametrize("spsc", [False, True])
def test_commit_forms_and_errors(region: shmkit.Region, spsc: bool) -> None:
    q = shmkit.Queue.create(region, "c", 16, 32, spsc=spsc)
    with q.reserve_many(3) as b:  # leaving the block publishes every slot whole
        b.view[:3] = b"abc"
    assert [len(x) for x in q.get_many(8)] == [32, 32, 32]
    b = q.reserve_many(4)
    assert len(b) == 4
    with pytest.raises(ValueError):
        b.commit([1, 2, 3, 4, 5])  # more lengths than slots
    with pytest.raises(ValueError):
        b.commit(33)  # above elsize
    with pytest.raises(TypeError):
        b.commit(array.array("H", [1]))  # not uint32
    assert not b.done
    assert b.commit([5, 6]) == 2  # the other two are given up
    assert [len(x) for x in q.get_many(8)] == [5, 6]
    assert q.reserve_many(2).commit(7) == 2
    assert [len(x) for x in q.get_many(8)] == [7, 7]
    with pytest.raises(RuntimeError), q.reserve_many(2) as b:  # an exception aborts
        raise RuntimeError("boom")
    assert b.done and q.try_get() is None
    with pytest.raises(ValueError):
        q.reserve_many(0)
    with pytest.raises(ValueError):
        q.borrow_many(0)


@pytest.mark.parametrize("spsc", [False, True])
def test_batches_stop_at_the_ring_end_and_wait_for_room(region: shmkit.Region, spsc: bool) -> None:
    q = shmkit.Queue.create(region, "w", 4, 8, spsc=spsc)
    assert q.put_many([b"1", b"2", b"3"]) == 3
    assert q.get_many(3) == [b"1", b"2", b"3"]
    b = q.reserve_many(4)
    assert len(b) == 1  # position 3: the last slot of the ring; batches never wrap
    b.commit(1)
    b = q.reserve_many(4)
    assert len(b) == 3
    b.commit(1)
    assert len(q.reserve_many(1, timeout=0.01)) == 0  # full: an empty batch after the wait
    assert q.stats()["put_timeouts"] == 1
    assert len(q.borrow_many(8)) == 1


# --------------------------------------------------------------------------- SIGKILL


RESERVER = """
import sys, shmkit
r = shmkit.Region.open("bq", root=sys.argv[1])
q = shmkit.Queue.open(r, sys.argv[2])
q.put(b"before")
b = q.reserve_many(int(sys.argv[3]), timeout=30)
for i in range(len(b)):
    b[i][:4] = b"half"
print("reserved", len(b), file=sys.stderr, flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize("spsc", [False, True])
def test_killed_batch_reserver_does_not_wedge_the_queue(region: shmkit.Region, spsc: bool) -> None:
    """A producer SIGKILLed holding a reserved batch, half written: nothing of it is
    delivered and the queue goes on (MPMC: each position is skipped; SPSC: the role is taken
    over and the slots, never published, are filled by the next producer)."""
    q = shmkit.Queue.create(region, "rk", 16, 8, spsc=spsc)
    q.close()  # SPSC: leave the roles free for the child and then for the new handle
    child = python(RESERVER, region.root or "", "rk", "5")
    assert wait_line(child, "reserved").split() == ["reserved", "5"]
    kill(child)
    q = shmkit.Queue.open(region, "rk")
    assert q.get(timeout=10) == b"before"
    got: list[bytes] = []
    for lap in range(4):  # more than a lap over the abandoned slots
        items = [b"%d" % (lap * 10 + i) for i in range(7)]
        with q.reserve_many(7, timeout=10) as b:
            for i in range(len(b)):
                b[i][: len(items[i])] = items[i]
            b.commit([len(x) for x in items[: len(b)]])
            sent = items[: len(b)]
        with q.borrow_many(16, timeout=10) as c:
            got += [bytes(c[i]) for i in range(len(c))]
        assert got[-len(sent) :] == sent
    assert b"half" not in b"".join(got)
    s = q.stats()
    assert s["recovered_puts"] >= (5 if not spsc else 0)
    assert s["role_takeovers"] == (1 if spsc else 0)


BORROWER = """
import sys, shmkit
r = shmkit.Region.open("bq", root=sys.argv[1])
q = shmkit.Queue.open(r, sys.argv[2])
b = q.borrow_many(64, timeout=30)
print("holding", len(b), file=sys.stderr, flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize("spsc", [False, True])
def test_killed_batch_borrower_does_not_wedge_the_queue(region: shmkit.Region, spsc: bool) -> None:
    q = shmkit.Queue.create(region, "bk", 8, 8, spsc=spsc)
    assert q.put_many([b"h%d" % i for i in range(5)]) == 5
    q.close()
    child = python(BORROWER, region.root or "", "bk")
    assert wait_line(child, "holding").split() == ["holding", "5"]
    kill(child)
    q = shmkit.Queue.open(region, "bk")
    # MPMC: the held elements left with their holder, their slots are recovered. SPSC: they
    # were never consumed and are delivered again.
    again = q.get_many(8, timeout=10) if spsc else []
    assert again == ([b"h%d" % i for i in range(5)] if spsc else [])
    for _ in range(4):  # more than a lap over the held slots
        assert q.put_many([b"x", b"y", b"z"]) == 3
        with q.borrow_many(8, timeout=10) as c:
            assert [bytes(c[i]) for i in range(len(c))] == [b"x", b"y", b"z"][: len(c)]
            n = len(c)
        rest = q.get_many(8)
        assert len(rest) == 3 - n
    s = q.stats()
    assert s["recovered_gets"] == (0 if spsc else 5)
    assert s["role_takeovers"] == (1 if spsc else 0)


STREAMER = """
import sys, struct, shmkit
r = shmkit.Region.open("bq", root=sys.argv[1])
q = shmkit.Queue.open(r, sys.argv[2])
me, n = int(sys.argv[3]), int(sys.argv[4])
i = 0
while i < n:
    b = q.reserve_many(min(13, n - i), timeout=30)
    for k in range(len(b)):
        struct.pack_into("<II", b.view, k * b.stride, me, i + k)
    b.commit(8)
    i += len(b)
print("done", file=sys.stderr, flush=True)
"""


def test_batches_across_processes_with_a_producer_killed_at_random(region: shmkit.Region) -> None:
    """Three producer processes stream in batches to this consumer, which reads in batches;
    one more producer is SIGKILLed at a random point of its stream. Every element of the
    survivors arrives once and in each producer's order."""
    seed = int(os.environ.get("SHMKIT_SEED", random.randrange(1 << 30)))
    print(f"SHMKIT_SEED={seed}")
    rng = random.Random(seed)
    q = shmkit.Queue.create(region, "s", 64, 16)
    n = 3000
    procs = [python(STREAMER, region.root or "", "s", str(p), str(n)) for p in range(3)]
    victim = python(STREAMER, region.root or "", "s", "9", str(10**9))
    kill_after = rng.randrange(50, 2000)
    nxt = {p: 0 for p in range(3)}
    seen_victim = 0
    while sum(nxt.values()) < 3 * n:
        with q.borrow_many(32, timeout=30) as c:
            assert len(c) > 0, "stalled"
            for k in range(len(c)):
                who, i = struct.unpack_from("<II", c.view, k * c.stride)
                if who == 9:
                    seen_victim += 1
                    continue
                assert i == nxt[who], f"producer {who}: got {i}, expected {nxt[who]}"
                nxt[who] += 1
        if seen_victim >= kill_after and victim.poll() is None:
            kill(victim)
    if victim.poll() is None:
        kill(victim)
    for p in procs:
        wait_line(p, "done", timeout=60)
        p.communicate(timeout=30)
        assert p.returncode == 0
    assert q.put_many([b"end"]) == 1  # the queue still works after the kill
    while True:
        rest = q.get_many(64, timeout=10)
        assert rest, "the end marker never came"
        if rest and rest[-1] == b"end":
            break
