"""``shmkit.mp.Queue`` / ``SimpleQueue``: ``multiprocessing``'s signatures and semantics,
with real processes under every start method and ``Pool``; their memory is an anonymous
region that goes with its last user (nothing in ``/dev/shm``, no mapping left behind)."""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import pathlib
import queue

import numpy as np
import pytest
from procs import kill9, python, wait_line
from shmkit.mp import Queue, SimpleQueue

METHODS = [m for m in ("spawn", "forkserver", "fork") if m in mp.get_all_start_methods()]


def shm_names() -> set[str]:
    """shmkit's files in ``/dev/shm`` outside the tests' own roots (other tests, run at the
    same time, make theirs under roots of their own)."""
    return {n for n in os.listdir("/dev/shm") if n.startswith("shmkit")}


def memfd_mappings(pid: int | str = "self") -> list[str]:
    """This process's mappings and descriptors of shmkit.mp regions."""
    maps = pathlib.Path(f"/proc/{pid}/maps").read_text().splitlines()
    found = [m for m in maps if "memfd:shmkit-mp" in m]
    for fd in pathlib.Path(f"/proc/{pid}/fd").iterdir():
        try:
            if "memfd:shmkit-mp" in os.readlink(fd):
                found.append(str(fd))
        except OSError:
            pass
    return found


def test_queue_semantics() -> None:
    q = Queue(2)
    assert q.empty() and not q.full() and q.qsize() == 0 and q.capacity == 2
    q.put({"a": 1})
    q.put_nowait([1, 2])
    assert q.full() and q.qsize() == 2
    with pytest.raises(queue.Full):
        q.put_nowait(3)
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.02)
    assert q.get() == {"a": 1} and q.get_nowait() == [1, 2]
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get(True, 0.02)
    with pytest.raises(AssertionError):
        q.join_thread()
    q.cancel_join_thread()
    q.close()
    q.join_thread()
    with pytest.raises(ValueError, match="closed"):
        q.put(1)
    with pytest.raises(ValueError, match="closed"):
        q.get()
    s = SimpleQueue()
    assert s.empty()
    s.put(np.arange(5))
    assert not s.empty() and s.get().tolist() == [0, 1, 2, 3, 4]
    s.close()
    with pytest.raises(ValueError):
        s.put(1)
    with pytest.raises(ValueError):
        Queue(capacity=0)


def test_unbounded_queue_holds_its_capacity_then_waits() -> None:
    q = Queue(capacity=16, size=1 << 20)
    for i in range(16):
        q.put_nowait(i)
    assert q.full() and q.qsize() == 16
    with pytest.raises(queue.Full):
        q.put(16, timeout=0.02)
    small = Queue(capacity=16, size=16 << 20)
    small.put(np.zeros(10 << 20, np.uint8), timeout=10)
    with pytest.raises(MemoryError):  # shmkit.OutOfMemoryError: the region is full
        small.put(np.zeros(10 << 20, np.uint8), timeout=0.02)
    with pytest.raises(MemoryError):  # larger than the region
        small.put(np.zeros(32 << 20, np.uint8), timeout=0.02)
    assert [q.get() for _ in range(16)] == list(range(16))


def _echo(inq: Queue, outq: SimpleQueue, n: int) -> None:
    for _ in range(n):
        o = inq.get(timeout=60)
        outq.put({"i": o["i"], "sum": int(o["a"].sum()), "writable": o["a"].flags.writeable})


@pytest.mark.parametrize("method", METHODS)
def test_every_start_method(method: str) -> None:
    inq, outq = Queue(), SimpleQueue()
    p = mp.get_context(method).Process(target=_echo, args=(inq, outq, 20))
    p.start()
    for i in range(20):
        inq.put({"i": i, "a": np.full(1000 * (i + 1), i, np.int64)})
    got = [outq.get() for _ in range(20)]
    p.join(60)
    assert p.exitcode == 0
    assert [g["i"] for g in got] == list(range(20))
    assert all(g["sum"] == g["i"] * 1000 * (g["i"] + 1) and g["writable"] for g in got)


_worker_queue: Queue | None = None


def _init(q: Queue) -> None:
    global _worker_queue
    _worker_queue = q


def _task(i: int) -> int:
    assert _worker_queue is not None
    _worker_queue.put((i, np.arange(i)))
    return i


@pytest.mark.parametrize("method", METHODS)
def test_pool_initializer_arguments(method: str) -> None:
    q = Queue()
    with mp.get_context(method).Pool(2, initializer=_init, initargs=(q,)) as pool:
        assert sorted(pool.map(_task, range(10))) == list(range(10))
    got = sorted((q.get(timeout=10) for _ in range(10)), key=lambda t: t[0])
    assert [int(a.sum()) for _, a in got] == [sum(range(i)) for i in range(10)]


def _receive_a_queue(carrier: SimpleQueue) -> None:
    inner = carrier.get()  # a Queue sent through another queue (descriptor passing)
    inner.put("through the passed queue")


def test_a_queue_sent_through_a_queue() -> None:
    carrier, inner = SimpleQueue(), Queue()
    p = mp.get_context("spawn").Process(target=_receive_a_queue, args=(carrier,))
    p.start()
    carrier.put(inner)
    assert inner.get(timeout=60) == "through the passed queue"
    p.join(60)
    assert p.exitcode == 0


def test_memory_goes_with_the_last_user() -> None:
    before = shm_names()
    q = Queue()
    q.put(np.ones(1 << 20))
    kept = q.get()
    assert memfd_mappings(), "the queue's region is not a memfd of this process"
    assert shm_names() == before, "an mp queue made a /dev/shm file"
    del q
    gc.collect()
    assert memfd_mappings(), "a received array lost its memory"
    assert kept.sum() == 1 << 20
    del kept
    gc.collect()
    assert memfd_mappings() == [], "the region outlived its last user"


USER = """
import sys, numpy as np
from shmkit.mp import Queue
import multiprocessing as mp

def hold(q):
    q.put(np.ones(1000))
    print("child holding", flush=True)
    sys.stdin.read()

if __name__ == "__main__":
    q = Queue()
    p = mp.get_context("spawn").Process(target=hold, args=(q,))
    p.start()
    a = q.get(timeout=60)
    print("parent", p.pid, flush=True)
    sys.stdin.read()
"""


def test_killed_users_leave_nothing(tmp_path: pathlib.Path) -> None:
    before = shm_names()
    script = tmp_path / "user.py"
    script.write_text(USER)
    parent = python(f"import runpy; runpy.run_path({str(script)!r}, run_name='__main__')")
    line = wait_line(parent, "parent", stream="stdout")
    child_pid = int(line.split()[1])
    assert memfd_mappings(child_pid)
    os.kill(child_pid, 9)
    kill9(parent)
    assert shm_names() == before
