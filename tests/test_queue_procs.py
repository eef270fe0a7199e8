"""shmkit.Queue across real processes: N x M producers/consumers, SIGKILL at random and at
exact points, Ctrl-C during a blocking call, cross-process wake-ups and SPSC roles."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection

import pytest
import shmkit
from procs import finish, kill9, python, spawn, wait_line, wait_until

ITEM = struct.Struct("<II8x")  # producer id, sequence number, padding: 16 bytes


def kill(proc: subprocess.Popen[str]) -> None:
    """SIGKILL a child started by ``procs.python`` and close its pipes."""
    kill9(proc)
    proc.communicate()


@pytest.fixture
def region(root: str) -> Iterator[shmkit.Region]:
    r = shmkit.Region.create("pq", 32 << 20, root=root)
    yield r
    r.close()


# --------------------------------------------------------------------------- N x M


def _producer(root: str, name: str, pid: int, count: int, seed: int) -> None:
    r = shmkit.Region.open("pq", root=root)
    q = shmkit.Queue.open(r, name)
    rng = random.Random(seed)
    seq = 0
    while seq < count:
        if rng.random() < 0.3:
            q.put(ITEM.pack(pid, seq))
            seq += 1
            continue
        batch = [ITEM.pack(pid, s) for s in range(seq, min(count, seq + rng.randrange(1, 64)))]
        while batch:
            n = q.put_many(batch)
            seq += n
            batch = batch[n:]
            if batch:
                q.put(batch.pop(0))  # wait for room, then go on with the rest
                seq += 1


def _consumer(root: str, name: str, producers: int, count: int, conn: Connection) -> None:
    r = shmkit.Region.open("pq", root=root)
    q = shmkit.Queue.open(r, name)
    seen = [bytearray(count) for _ in range(producers)]
    last = [-1] * producers
    errors: list[str] = []
    n = 0
    putbacks = 0
    done = False
    while not done:
        items = q.get_many(64, timeout=60) if n % 2 else [q.get(timeout=60)]
        assert items, "no element for 60 s"
        for m in items:
            if not m:  # an end marker: one per consumer; give back any extra taken
                if done:
                    q.put(m)
                    putbacks += 1
                done = True
                continue
            p, s = ITEM.unpack(m)
            if s <= last[p]:
                errors.append(f"producer {p}: {s} after {last[p]}")
            last[p] = s
            if seen[p][s]:
                errors.append(f"duplicate {p}/{s}")
            seen[p][s] = 1
        n += 1
    conn.send(([bytes(x) for x in seen], errors[:10], putbacks))


@pytest.mark.parametrize(("spsc", "producers", "consumers"), [(False, 4, 3), (True, 1, 1)])
def test_n_producers_m_consumers_move_1m_items(
    region: shmkit.Region, spsc: bool, producers: int, consumers: int
) -> None:
    total = 1_000_000
    per = total // producers
    q = shmkit.Queue.create(region, "nm", 1024, ITEM.size, spsc=spsc)
    pipes = [spawn.Pipe(duplex=False) for _ in range(consumers)]
    cons = [
        spawn.Process(target=_consumer, args=(region.root, "nm", producers, per, w), daemon=True)
        for _, w in pipes
    ]
    prods = [
        spawn.Process(target=_producer, args=(region.root, "nm", p, per, p), daemon=True)
        for p in range(producers)
    ]
    for p in cons + prods:
        p.start()
    for p in prods:
        p.join(120)
        assert p.exitcode == 0
    for _ in range(consumers):
        q.put(b"", timeout=60)
    results = []
    for r, _ in pipes:
        assert r.poll(120), "a consumer did not finish"
        results.append(r.recv())
    for p in cons:
        p.join(60)
        assert p.exitcode == 0
    errors = [e for _, errs, _ in results for e in errs]
    putbacks = sum(pb for _, _, pb in results)
    assert not errors, errors
    for p in range(producers):
        got = sum(sum(seen[p]) for seen, _, _ in results)
        assert got == per, f"producer {p}: {got} of {per} items arrived"
        union = bytearray(per)
        for seen, _, _ in results:
            union = bytearray(a | b for a, b in zip(union, seen[p]))
        assert union.count(0) == 0
    s = q.stats()
    # An end marker taken by a consumer that already had one is put back (counted twice).
    expected = total + consumers + putbacks
    assert s["puts"] == expected and s["gets"] == expected and s["len"] == 0
    assert s["recovered_puts"] == s["recovered_gets"] == s["corrupt_slots"] == 0


# --------------------------------------------------------------------------- exact-point kills

PRODUCER_STALL = """
import sys, shmkit
r = shmkit.Region.open("pq", root=sys.argv[1])
q = shmkit.Queue.open(r, sys.argv[2])
q.put(b"doomed")
print("put returned", file=sys.stderr)
"""

CONSUMER_STALL = """
import sys, shmkit
r = shmkit.Region.open("pq", root=sys.argv[1])
q = shmkit.Queue.open(r, sys.argv[2])
print("got", q.get(timeout=30), file=sys.stderr)
"""


@pytest.mark.parametrize("spsc", [False, True])
def test_kill9_mid_put_and_mid_get_at_exact_points(region: shmkit.Region, spsc: bool) -> None:
    """A producer and a consumer SIGKILLed at the worst instant, many times over: the queue
    keeps working and its counters say what was recovered."""
    q = shmkit.Queue.create(region, "k", 4, 16, spsc=spsc)
    put_point = "queue.spsc_put_written" if spsc else "queue.put_claimed"
    get_point = "queue.spsc_get_copied" if spsc else "queue.get_claimed"
    rounds = 6
    for i in range(rounds):
        # A producer dies holding its slot (MPMC: claimed; SPSC: written, not published).
        q.close()
        child = python(PRODUCER_STALL, region.root or "", "k", failpoints=put_point)
        wait_line(child, f"failpoint {put_point} reached")
        kill(child)
        q = shmkit.Queue.open(region, "k")
        q.put(b"after-%d" % i, timeout=10)
        assert q.get(timeout=10) == b"after-%d" % i  # the dead claim was skipped
        # A consumer dies holding the element it was copying out.
        q.put(b"victim-%d" % i, timeout=10)
        q.close()
        child = python(CONSUMER_STALL, region.root or "", "k", failpoints=get_point)
        wait_line(child, f"failpoint {get_point} reached")
        kill(child)
        q = shmkit.Queue.open(region, "k")
        got = [q.get(timeout=10) for _ in range(1 if spsc else 0)]
        # MPMC: the element left with the dead consumer. SPSC: head never moved, so it is
        # delivered again (at-least-once).
        assert got == ([b"victim-%d" % i] if spsc else [])
        # Fill and drain a whole lap: the slot the dead consumer held must be usable.
        for j in range(q.capacity):
            q.put(b"lap-%d" % j, timeout=10)
        assert [q.get(timeout=10) for _ in range(q.capacity)] == [
            b"lap-%d" % j for j in range(q.capacity)
        ]
    s = q.stats()
    if spsc:
        assert s["role_takeovers"] == 2 * rounds
    else:
        assert s["recovered_puts"] == rounds
        assert s["recovered_gets"] == rounds
    assert s["len"] == 0 and s["corrupt_slots"] == 0


# --------------------------------------------------------------------------- random kills

K = 4000  # items per producer instance
MAXP = 20  # producer instances (2 live + replacements)
MAXC = 20  # consumer instances

KILL_PRODUCER = f"""
import struct, sys, shmkit
root, p, ctl = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = shmkit.Region.open("pq", root=root)
q = shmkit.Queue.open(r, "rk")
prog = r.buffer(ctl + 8 * p, 8).cast("Q")
item = struct.Struct("<II8x")
for s in range({K}):
    q.put(item.pack(p, s), timeout=60)
    prog[0] = s + 1
"""

KILL_CONSUMER = """
import os, struct, sys, shmkit
parent = os.getppid()
root, c, ctl, marks = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
r = shmkit.Region.open("pq", root=root)
q = shmkit.Queue.open(r, "rk")
prog = r.buffer(ctl + 512 + 8 * c, 8).cast("Q")
bad = r.buffer(ctl + 1024 + c, 1)
stop = r.buffer(ctl + 2048, 1)
seen = r.buffer(marks + c * {ITEMS}, {ITEMS})
last = {{}}
n = 0
while True:
    try:
        m = q.get(timeout=0.05)
    except shmkit.QueueEmpty:
        if stop[0] or os.getppid() != parent:  # done, or the test is gone
            break
        continue
    p, s = struct.unpack_from("<II", m)
    if last.get(p, -1) >= s:
        bad[0] = 1
    last[p] = s
    seen[p * {K} + s] = min(255, seen[p * {K} + s] + 1)
    n += 1
    prog[0] = n
""".format(K=K, ITEMS=K * MAXP)


def test_random_kill9_of_producers_and_consumers(region: shmkit.Region) -> None:
    """Two producers and two consumers run; over and over one of them is SIGKILLed at a
    random point and replaced. Nothing is duplicated or reordered, at most one element is
    lost per killed consumer (the one it held), and the queue never wedges."""
    rng = random.Random(int.from_bytes(os.urandom(4), "little"))
    q = shmkit.Queue.create(region, "rk", 8, ITEM.size)
    ctl = region.alloc(4096)
    region.write(ctl, bytes(4096))
    items = K * MAXP
    marks = region.alloc(items * MAXC)
    region.write(marks, bytes(items * MAXC))
    prog = region.buffer(ctl, 1024).cast("Q")
    root = region.root or ""

    def start_producer(p: int) -> subprocess.Popen[str]:
        return python(KILL_PRODUCER, root, str(p), str(ctl))

    def start_consumer(c: int) -> subprocess.Popen[str]:
        return python(KILL_CONSUMER, root, str(c), str(ctl), str(marks))

    producers = {p: start_producer(p) for p in range(2)}
    consumers = {c: start_consumer(c) for c in range(2)}
    try:
        _kill_at_random(
            rng, q, region, ctl, marks, prog, producers, consumers, start_producer, start_consumer
        )
    finally:
        for proc in [*producers.values(), *consumers.values()]:
            if proc.poll() is None:
                kill(proc)


def _kill_at_random(
    rng: random.Random,
    q: shmkit.Queue,
    region: shmkit.Region,
    ctl: int,
    marks: int,
    prog: memoryview,
    producers: dict[int, subprocess.Popen[str]],
    consumers: dict[int, subprocess.Popen[str]],
    start_producer: Callable[[int], subprocess.Popen[str]],
    start_consumer: Callable[[int], subprocess.Popen[str]],
) -> None:
    items = K * MAXP
    next_p, next_c = 2, 2
    killed_p: list[int] = []
    killed_c: list[int] = []

    def producing() -> bool:
        return any(proc.poll() is None for proc in producers.values())

    while next_p < MAXP or next_c < MAXC:
        # Producers that finished their items are replaced too (not counted as kills).
        for p in [p for p, proc in producers.items() if proc.poll() is not None]:
            finish(producers.pop(p))
            if next_p < MAXP:
                producers[next_p] = start_producer(next_p)
                next_p += 1
        kill_producer = next_c >= MAXC or (next_p < MAXP and bool(producers) and rng.random() < 0.5)
        if kill_producer:
            p = rng.choice(sorted(producers))
            target = min(K - 1, prog[p] + rng.randrange(1, 400))
            wait_until(lambda p=p, t=target: prog[p] >= t or producers[p].poll() is not None, 60)
            if producers[p].poll() is None:
                kill(producers[p])
                killed_p.append(p)
            else:
                finish(producers[p])
            del producers[p]
            producers[next_p] = start_producer(next_p)
            next_p += 1
        else:
            c = rng.choice(sorted(consumers))
            target = prog[64 + c] + rng.randrange(1, 400)
            wait_until(lambda c=c, t=target: prog[64 + c] >= t or not producing(), 60)
            kill(consumers[c])
            killed_c.append(c)
            del consumers[c]
            consumers[next_c] = start_consumer(next_c)
            next_c += 1
    for proc in producers.values():
        finish(proc, 120)
    wait_until(lambda: len(q) == 0, 60, "queue drained")
    region.write(ctl + 2048, b"\x01")
    for proc in consumers.values():
        finish(proc, 60)

    assert bytes(region.read(ctl + 1024, MAXC)) == bytes(MAXC), "order violated"
    seen = [region.read(marks + c * items, items) for c in range(MAXC)]
    total = bytearray(items)
    for arr in seen:
        for i, v in enumerate(arr):
            if v:
                total[i] += v
    assert max(total) <= 1, "an element was delivered twice"
    lost = extra = 0
    for p in range(MAXP):
        recorded = prog[p]
        got = total[p * K : (p + 1) * K]
        lost += got[:recorded].count(0)
        extra += sum(got[recorded:])
    # A killed producer may have put its last element without recording it; a killed
    # consumer loses the element it held.
    assert extra <= len(killed_p), (extra, killed_p)
    assert lost <= len(killed_c), (lost, killed_c)
    s = q.stats()
    print(
        f"\nkilled {len(killed_p)} producers, {len(killed_c)} consumers; lost {lost}, "
        f"recovered_puts {s['recovered_puts']}, recovered_gets {s['recovered_gets']}"
    )
    assert s["corrupt_slots"] == 0
    q.put(b"still works", timeout=5)
    assert q.get(timeout=5) == b"still works"


# --------------------------------------------------------------------------- signals, wake-ups

BLOCKED = """
import sys, time, shmkit
r = shmkit.Region.open("pq", root=sys.argv[1])
q = shmkit.Queue.open(r, sys.argv[2])
print("ready", file=sys.stderr, flush=True)
try:
    if sys.argv[3] == "get":
        q.get()
    else:
        q.put(b"no room")
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


@pytest.mark.parametrize(("spsc", "op"), [(False, "get"), (True, "get"), (False, "put")])
def test_ctrl_c_interrupts_a_blocking_call(region: shmkit.Region, spsc: bool, op: str) -> None:
    q = shmkit.Queue.create(region, "sig", 2, 8, spsc=spsc)
    if op == "put":
        q.put_many([b"1", b"2"])
    child = python(BLOCKED, region.root or "", "sig", op)
    wait_line(child, "ready")
    key = "get_waits" if op == "get" else "put_waits"
    wait_until(lambda: q.stats()[key] >= 1, 20, "the child to block")
    child.send_signal(signal.SIGINT)
    assert "interrupted" in finish(child, 20)


WAITER = """
import sys, time, shmkit
r = shmkit.Region.open("pq", root=sys.argv[1])
q = shmkit.Queue.open(r, sys.argv[2])
print("ready", file=sys.stderr, flush=True)
print(q.get(timeout=60).decode(), flush=True)
"""


@pytest.mark.parametrize("spsc", [False, True])
def test_put_wakes_a_sleeper_in_another_process(region: shmkit.Region, spsc: bool) -> None:
    q = shmkit.Queue.create(region, "wk", 4, 16, spsc=spsc)
    child = python(WAITER, region.root or "", "wk")
    wait_line(child, "ready")
    wait_until(lambda: q.stats()["get_waits"] >= 1, 20, "the child to sleep")
    q.put(b"wake up")
    assert finish(child, 20).strip() == "wake up"
    s = q.stats()
    assert s["get_wakeups"] >= 1 and s["get_waits"] >= 1 and s["get_timeouts"] == 0


HOLDER = """
import sys, shmkit
r = shmkit.Region.open("pq", root=sys.argv[1])
q = shmkit.Queue.open(r, sys.argv[2])
q.put(b"mine")
print("holding", file=sys.stderr, flush=True)
sys.stdin.read()
"""


def test_spsc_producer_role_across_processes(region: shmkit.Region) -> None:
    q = shmkit.Queue.create(region, "role", 4, 8, spsc=True)
    child = python(HOLDER, region.root or "", "role")
    wait_line(child, "holding")
    with pytest.raises(shmkit.QueueRoleError, match=f"pid {child.pid}"):
        q.put(b"second")
    assert q.get() == b"mine"  # the consumer role is free
    kill(child)
    q.put(b"took")
    assert q.get() == b"took"
    assert q.stats()["role_takeovers"] == 1


BORROWER = """
import sys, shmkit
r = shmkit.Region.open("pq", root=sys.argv[1])
q = shmkit.Queue.open(r, sys.argv[2])
b = q.borrow(timeout=30)
print("holding", bytes(b).decode(), file=sys.stderr, flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize("spsc", [False, True])
def test_killed_borrower_does_not_wedge_the_queue(region: shmkit.Region, spsc: bool) -> None:
    q = shmkit.Queue.create(region, "bk", 2, 8, spsc=spsc)
    q.put(b"held")
    q.close()  # SPSC: leave the roles free for the child and then for the new handle
    child = python(BORROWER, region.root or "", "bk")
    wait_line(child, "holding held")
    kill(child)
    q = shmkit.Queue.open(region, "bk")
    # MPMC: the held element left with its holder, its slot is recovered. SPSC: the element
    # was never consumed and is delivered again.
    assert [q.get(timeout=10) for _ in range(1 if spsc else 0)] == ([b"held"] if spsc else [])
    for _ in range(3):  # more than a lap: the held slot is reused
        q.put_many([b"x", b"y"])
        assert q.get_many(2) == [b"x", b"y"]
    s = q.stats()
    assert s["recovered_gets"] == (0 if spsc else 1)
    assert s["role_takeovers"] == (1 if spsc else 0)


RESERVER = """
import sys, shmkit
r = shmkit.Region.open("pq", root=sys.argv[1])
q = shmkit.Queue.open(r, sys.argv[2])
q.put(b"before")
res = q.reserve(timeout=30)
res.view[:4] = b"half"
print("reserved", file=sys.stderr, flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize("spsc", [False, True])
def test_killed_reserver_does_not_wedge_the_queue(region: shmkit.Region, spsc: bool) -> None:
    """A producer SIGKILLed while writing a reserved slot in place: the half-written element
    is never delivered and the queue goes on (MPMC: its position is skipped; SPSC: the role
    is taken over and the slot, never published, is filled by the next producer)."""
    q = shmkit.Queue.create(region, "rk", 4, 8, spsc=spsc)
    q.close()  # SPSC: leave the roles free for the child and then for the new handle
    child = python(RESERVER, region.root or "", "rk")
    wait_line(child, "reserved")
    kill(child)
    q = shmkit.Queue.open(region, "rk")
    q.put(b"after")
    assert q.get(timeout=10) == b"before"
    assert q.get(timeout=10) == b"after"
    for _ in range(3):  # more than a lap over the abandoned slot
        q.put_many([b"x", b"y", b"z"])
        assert q.get_many(3) == [b"x", b"y", b"z"]
    s = q.stats()
    assert (s["puts"], s["gets"]) == (11, 11)
    assert s["recovered_puts"] == (0 if spsc else 1)
    assert s["role_takeovers"] == (1 if spsc else 0)


def test_demo_scene_runs() -> None:
    """`shmkit demo queues`: real processes stream, a process killed mid-stream leaves a
    working queue (the demo runs on release builds too, so it uses no failpoint)."""
    proc = subprocess.run(
        [sys.executable, "-m", "shmkit.cli", "demo", "queues"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "M msg/s" in proc.stdout
    assert "a consumer gets: b'after the crash'" in proc.stdout
    assert "recovered_puts " in proc.stdout


def _forked_child(q: shmkit.Queue, n: int) -> None:
    # The handle was inherited through fork: pid-based state must be renewed here.
    for i in range(n):
        q.put(b"%d" % i, timeout=30)
    assert q.fileno() >= 0  # a new fd helper, in this process


@pytest.mark.parametrize("spsc", [False, True])
def test_handle_inherited_through_fork(region: shmkit.Region, spsc: bool) -> None:
    q = shmkit.Queue.create(region, "fk", 4, 8, spsc=spsc)
    child = mp.get_context("fork").Process(target=_forked_child, args=(q, 20))
    child.start()
    got = [q.get(timeout=30) for _ in range(20)]
    child.join(30)
    assert child.exitcode == 0
    assert got == [b"%d" % i for i in range(20)]
    if spsc:
        # The child held the producer role; it is gone, so the parent takes the role over.
        q.put(b"parent")
        assert q.get() == b"parent"
