"""shmkit.Queue: semantics, argument checks, error mapping and hostile garbage.

The tests with several processes (SIGKILL, Ctrl-C, N x M producers/consumers) are in
``test_queue_procs.py``; asyncio in ``test_queue_aio.py``.
"""

from __future__ import annotations

import array
import queue as stdqueue
import random
import struct
import time
from collections.abc import Iterator

import pytest
import shmkit
from procs import finish, python, wait_until

HEADER = 1024  # queue header size; slot i starts at offset + HEADER + i * stride


@pytest.fixture
def region(root: str) -> Iterator[shmkit.Region]:
    r = shmkit.Region.create("q", 4 << 20, root=root)
    yield r
    r.close()


@pytest.mark.parametrize("spsc", [False, True])
def test_fifo_lengths_and_shape(region: shmkit.Region, spsc: bool) -> None:
    q = shmkit.Queue.create(region, "jobs", 5, 32, spsc=spsc)
    assert (q.capacity, q.elsize, q.spsc, q.name) == (8, 32, spsc, "jobs")
    assert q.empty() and not q.full() and len(q) == 0 and q.qsize() == 0
    for i in range(8):
        q.put(bytes([i]) * i)
    assert q.full() and len(q) == 8
    assert [q.get() for _ in range(8)] == [bytes([i]) * i for i in range(8)]
    assert q.empty()
    assert "jobs" in repr(q) and ("spsc" if spsc else "mpmc") in repr(q)
    assert q.region.name == region.name
    assert isinstance(q.offset, int)
    s = q.stats()
    assert (s["puts"], s["gets"], s["len"]) == (8, 8, 0)


def test_open_by_name_from_another_handle(region: shmkit.Region) -> None:
    q = shmkit.Queue.create(region, "a", 16, 8)
    other = shmkit.Queue.open(shmkit.Region.open("q", root=region.root), "a")
    q.put(b"hi")
    assert other.get() == b"hi"
    assert [o["name"] for o in region.objects()] == ["a"]


def test_any_buffer_is_accepted(region: shmkit.Region) -> None:
    q = shmkit.Queue.create(region, "b", 16, 16)
    q.put(bytearray(b"ba"))
    q.put(memoryview(b"xmvx")[1:3])
    q.put(array.array("H", [1, 2]))
    q.put_many([b"l1", bytearray(b"l2"), memoryview(b"l3")])
    q.put_pair(memoryview(b"p1"), bytearray(b"p2"))
    got = q.get_many(100)
    assert got == [b"ba", b"mv", struct.pack("=HH", 1, 2), b"l1", b"l2", b"l3", b"p1", b"p2"]
    with pytest.raises(BufferError):
        q.put(memoryview(b"abcdef")[::2])  # not contiguous
    with pytest.raises(TypeError):
        q.put("text")  # type: ignore[arg-type]


def test_oversize_is_value_error_and_nothing_is_put(region: shmkit.Region) -> None:
    q = shmkit.Queue.create(region, "c", 4, 8)
    for call in (
        lambda: q.put(b"x" * 9),
        lambda: q.put_nowait(b"x" * 9),
        lambda: q.try_put(b"x" * 9),
        lambda: q.put_many([b"ok", b"x" * 9]),
        lambda: q.put_pair(b"ok", b"x" * 9),
    ):
        with pytest.raises(ValueError, match="does not fit"):
            call()
    assert len(q) == 0
    q.put(b"x" * 8)
    q.put(b"")
    assert q.get() == b"x" * 8 and q.get() == b""


def test_get_into_fills_the_callers_buffer(region: shmkit.Region) -> None:
    q = shmkit.Queue.create(region, "d", 4, 8)
    q.put(b"abc")
    buf = bytearray(8)
    assert q.get_into(buf) == 3 and buf[:3] == b"abc"
    view = memoryview(bytearray(16))[4:12]
    q.put(b"12345678")
    assert q.get_into(view) == 8 and bytes(view) == b"12345678"
    with pytest.raises(ValueError, match="smaller than the element size"):
        q.get_into(bytearray(4))
    with pytest.raises(BufferError):
        q.get_into(b"readonly")
    with pytest.raises(shmkit.QueueEmpty):
        q.get_into(buf, block=False)


def test_timeouts_raise_stdlib_compatible_errors(region: shmkit.Region) -> None:
    q = shmkit.Queue.create(region, "e", 2, 8)
    t0 = time.monotonic()
    with pytest.raises(stdqueue.Empty):
        q.get(timeout=0.05)
    assert time.monotonic() - t0 >= 0.05
    with pytest.raises(shmkit.QueueEmpty):
        q.get_nowait()
    with pytest.raises(shmkit.QueueEmpty):
        q.get(block=False)
    assert q.try_get() is None
    assert q.get_many(4) == [] and q.get_many(4, timeout=0.01) == []
    q.put(b"1")
    q.put(b"2", timeout=0)
    assert not q.try_put(b"3")
    with pytest.raises(stdqueue.Full):
        q.put(b"3", timeout=0.05)
    with pytest.raises(shmkit.QueueFull):
        q.put_nowait(b"3")
    with pytest.raises(shmkit.QueueFull):
        q.put_pair(b"3", b"4", timeout=0.01)
    with pytest.raises(ValueError, match="non-negative"):
        q.get(timeout=-1)
    with pytest.raises(ValueError, match="non-negative"):
        q.put(b"x", timeout=float("nan"))
    s = q.stats()
    # Only calls that actually waited count as timeouts; non-blocking misses count as
    # full/empty events.
    assert (s["get_timeouts"], s["put_timeouts"]) == (2, 2)
    assert s["timeouts"] == 4
    assert s["empty"] >= 5 and s["full"] >= 4


def test_batches(region: shmkit.Region) -> None:
    q = shmkit.Queue.create(region, "f", 4, 8)
    assert q.put_many([]) == 0
    assert q.put_many(b"%d" % i for i in range(10)) == 4  # any iterable; what fits
    assert q.get_many(0) == []
    assert q.get_many(3) == [b"0", b"1", b"2"]
    assert q.put_many((b"a", b"b", b"c", b"d")) == 3
    assert q.get_many(10) == [b"3", b"a", b"b", b"c"]
    q.put_pair(b"p", b"q")
    assert q.get_many(1, timeout=None) == [b"p"]
    assert q.get() == b"q"


def test_pair_is_both_or_neither(region: shmkit.Region) -> None:
    q = shmkit.Queue.create(region, "g", 2, 8)
    q.put(b"1")
    with pytest.raises(shmkit.QueueFull):
        q.put_pair(b"a", b"b", block=False)
    assert len(q) == 1
    q.get()
    q.put_pair(b"a", b"b")
    assert q.get_many(2) == [b"a", b"b"]


def test_missing_existing_and_wrong_kind(region: shmkit.Region) -> None:
    with pytest.raises(FileNotFoundError):
        shmkit.Queue.open(region, "nope")
    shmkit.Queue.create(region, "h", 4, 8)
    with pytest.raises(FileExistsError):
        shmkit.Queue.create(region, "h", 4, 8)
    region.create_object("raw", 4096)
    with pytest.raises(ValueError, match="not a queue"):
        shmkit.Queue.open(region, "raw")
    for cap, el in ((0, 8), (8, 0), (1 << 31, 8)):
        with pytest.raises(ValueError):
            shmkit.Queue.create(region, "bad", cap, el)
    with pytest.raises(shmkit.OutOfMemoryError):
        shmkit.Queue.create(region, "huge", 1 << 10, 4000)
    with pytest.raises(FileNotFoundError):
        shmkit.Queue.open(region, "huge")  # nothing half-made was registered


def test_find_or_create(region: shmkit.Region) -> None:
    q, created = shmkit.Queue.find_or_create(region, "i", 4, 8)
    assert created
    q2, created = shmkit.Queue.find_or_create(region, "i", 3, 8)  # 3 rounds up to 4
    assert not created and q2.offset == q.offset
    with pytest.raises(ValueError, match="different shape"):
        shmkit.Queue.find_or_create(region, "i", 4, 8, spsc=True)


def test_spsc_roles_are_exclusive(region: shmkit.Region) -> None:
    a = shmkit.Queue.create(region, "s", 4, 8, spsc=True)
    b = shmkit.Queue.open(region, "s")
    a.put(b"1")
    with pytest.raises(shmkit.QueueRoleError, match="producer"):
        b.put(b"2")
    assert b.get() == b"1"
    with pytest.raises(shmkit.QueueRoleError, match="consumer"):
        a.try_get()
    a.close()
    b.put(b"2")
    assert b.get() == b"2"


def test_closed_handle(region: shmkit.Region) -> None:
    with shmkit.Queue.create(region, "j", 4, 8) as q:
        q.put(b"x")
    assert q.closed
    with pytest.raises(shmkit.ClosedError):
        q.get()
    with pytest.raises(shmkit.ClosedError):
        q.fileno()
    q.close()  # idempotent
    assert shmkit.Queue.open(region, "j").get() == b"x"  # the queue itself lives on


def test_fd_errors_map_to_oserror(root: str) -> None:
    """Out of descriptors: fileno() raises OSError(EMFILE), nothing leaks or crashes."""
    code = f"""
        import errno, os, resource, shmkit
        r = shmkit.Region.create("fd", 1 << 20, root={root!r})
        q = shmkit.Queue.create(r, "q", 4, 8)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
        hog = []
        try:
            while True:
                hog.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            pass
        try:
            q.fileno()
        except OSError as e:
            print("errno", e.errno == errno.EMFILE)
        for fd in hog:
            os.close(fd)
        print("fd", q.fileno() >= 0)
        r.unlink()
    """
    out = finish(python(code))
    assert "errno True" in out and "fd True" in out


def test_header_garbage_is_refused(region: shmkit.Region) -> None:
    q = shmkit.Queue.create(region, "k", 8, 8)
    q.put(b"before")
    rng = random.Random(1)
    region.write(q.offset + 16, rng.randbytes(48))  # geometry and identity
    with pytest.raises(shmkit.CorruptionError):
        shmkit.Queue.open(region, "k")
    with pytest.raises(shmkit.CorruptionError):
        q.check()
    # A blocked operation re-validates on each slice: error, not a hang.
    q.get()  # the element is still readable: data slots were not touched
    with pytest.raises(shmkit.CorruptionError):
        q.get(timeout=5)


def test_slot_garbage_is_detected_never_a_hang(region: shmkit.Region) -> None:
    """Random garbage over the whole queue object: every operation returns, raises a
    CorruptionError, or reports full/empty; nothing crashes or hangs."""
    rng = random.Random(7)
    outcomes: dict[str, int] = {}
    for trial in range(60):
        spsc = trial % 2 == 1
        q = shmkit.Queue.create(region, f"g{trial}", 8, 16, spsc=spsc)
        obj = next(o for o in region.objects() if o["name"] == f"g{trial}")
        for _ in range(4):
            q.try_put(b"seed")
        # Garbage: whole slots, single words, or the counters (never the identity lines,
        # which test_header_garbage covers).
        start = 128 if trial % 3 else HEADER
        off = rng.randrange(start, obj["size"] - 8)
        n = rng.choice([8, 16, 64, obj["size"] - off])
        region.write(q.offset + off, rng.randbytes(min(n, obj["size"] - off)))
        other = shmkit.Queue.open(region, f"g{trial}")
        for op in range(12):
            h = q if op % 2 else other
            try:
                if op % 3 == 0:
                    h.put(b"x" * rng.randrange(17), timeout=0.01)
                elif op % 3 == 1:
                    h.get(timeout=0.01)
                else:
                    h.put_many([b"y"] * 3)
                    h.get_many(3)
                key = "ok"
            except (shmkit.QueueFull, shmkit.QueueEmpty):
                key = "full/empty"
            except shmkit.CorruptionError:
                key = "corruption"
            except shmkit.QueueRoleError:
                key = "role"
            outcomes[key] = outcomes.get(key, 0) + 1
        q.close()
        other.close()
    assert outcomes.get("corruption", 0) > 0, outcomes
    assert outcomes.get("ok", 0) > 0, outcomes


def test_error_mapping_for_each_variant(region: shmkit.Region) -> None:
    q = shmkit.Queue.create(region, "m", 2, 8)
    cases: list[tuple[type[BaseException], object]] = [
        (FileNotFoundError, lambda: shmkit.Queue.open(region, "missing")),  # Region(...)
        (ValueError, lambda: shmkit.Queue.create(region, "z", 0, 8)),  # InvalidArgument
        (ValueError, lambda: q.put(b"123456789")),  # TooLarge
        (ValueError, lambda: shmkit.Queue.find_or_create(region, "m", 2, 4)),  # Mismatch
    ]
    for exc, call in cases:
        with pytest.raises(exc):
            call()  # type: ignore[operator]
    region.create_object("notq", 128)
    with pytest.raises(ValueError):  # NotAQueue
        shmkit.Queue.open(region, "notq")
    assert issubclass(shmkit.QueueFull, shmkit.ShmkitError)
    assert issubclass(shmkit.QueueEmpty, stdqueue.Empty)
    assert issubclass(shmkit.QueueRoleError, shmkit.ShmkitError)


@pytest.mark.parametrize("spsc", [False, True])
def test_borrow_reads_in_place(region: shmkit.Region, spsc: bool) -> None:
    q = shmkit.Queue.create(region, "bw", 4, 16, spsc=spsc)
    q.put_many([b"first", b"second", b"third"])
    with q.borrow() as view:
        assert isinstance(view, memoryview) and view.readonly
        assert bytes(view) == b"first"
    b = q.borrow(timeout=1)
    assert len(b) == 6 and bytes(b) == b"second" and not b.released
    if spsc:
        with pytest.raises(ValueError, match="release"):
            q.try_get()  # one element at a time per SPSC handle
    else:
        other = q.borrow()  # MPMC: several may be held at once
        assert bytes(other) == b"third"
        other.release()
    b.release()
    b.release()  # idempotent
    assert b.released and "released" in repr(b)
    with pytest.raises(shmkit.ClosedError):
        b.view  # noqa: B018
    with pytest.raises(shmkit.ClosedError):
        bytes(b)
    if spsc:
        assert q.get() == b"third"
    with pytest.raises(shmkit.QueueEmpty):
        q.borrow(timeout=0.01)
    with pytest.raises(shmkit.QueueEmpty):
        q.borrow(block=False)
    assert q.stats()["gets"] == 3


def test_borrowed_slot_is_not_reused_until_released(region: shmkit.Region) -> None:
    q = shmkit.Queue.create(region, "hold", 2, 8)
    q.put_many([b"a", b"b"])
    held = q.borrow()
    assert q.get() == b"b"
    # The next position maps to the held slot: no room until it is released.
    assert not q.try_put(b"c")
    with pytest.raises(shmkit.QueueFull):
        q.put(b"c", timeout=0.01)
    held.release()
    q.put(b"c", timeout=1)
    q.put(b"d", timeout=1)
    assert q.get_many(4) == [b"c", b"d"]


@pytest.mark.parametrize("spsc", [False, True])
def test_reserve_writes_in_place(region: shmkit.Region, spsc: bool) -> None:
    q = shmkit.Queue.create(region, "rs", 4, 16, spsc=spsc)
    with q.reserve() as view:
        assert isinstance(view, memoryview) and not view.readonly and len(view) == 16
        view[:] = b"0123456789abcdef"  # the whole slot is published on leaving the block
    r = q.reserve(timeout=1)
    assert len(r) == 16 and not r.done
    r.view[:5] = b"hello"
    with pytest.raises(ValueError, match="16"):
        r.commit(17)  # too long: an error, and the slot stays reserved
    assert not r.done and q.get() == b"0123456789abcdef"
    assert q.try_get() is None  # nothing published at the reserved position yet
    r.commit(5)
    assert r.done and "done" in repr(r)
    with pytest.raises(shmkit.ClosedError):
        r.view  # noqa: B018
    with pytest.raises(ValueError, match="done"):
        r.commit()
    r.abort()  # idempotent once done
    assert q.get() == b"hello"
    s = q.stats()
    assert (s["puts"], s["gets"], s["recovered_puts"]) == (2, 2, 0)


@pytest.mark.parametrize("spsc", [False, True])
def test_aborted_reservation_publishes_nothing(region: shmkit.Region, spsc: bool) -> None:
    q = shmkit.Queue.create(region, "ra", 4, 8, spsc=spsc)
    with pytest.raises(RuntimeError), q.reserve() as view:
        view[:4] = b"lost"
        raise RuntimeError("the writer failed half-way")
    r = q.reserve()
    r.view[:4] = b"gone"
    r.abort()
    del r
    q.reserve().abort()
    q.put(b"kept")
    assert q.get_many(8) == [b"kept"] and q.empty()
    # SPSC: the slot stayed free. MPMC: other producers may have claimed later positions,
    # so an aborted position is skipped (and counted with those of dead producers).
    s = q.stats()
    assert (s["puts"], s["gets"], s["recovered_puts"]) == (1, 1, 0 if spsc else 3)
    for i in range(10):  # laps over the skipped slots
        q.put(bytes([i]))
        assert q.get() == bytes([i])


@pytest.mark.parametrize("spsc", [False, True])
def test_reserve_waits_for_room(region: shmkit.Region, spsc: bool) -> None:
    q = shmkit.Queue.create(region, "rf", 2, 8, spsc=spsc)
    q.put_many([b"a", b"b"])
    with pytest.raises(shmkit.QueueFull):
        q.reserve(block=False)
    with pytest.raises(shmkit.QueueFull):
        q.reserve(timeout=0.01)
    with pytest.raises(ValueError, match="non-negative"):
        q.reserve(timeout=-1)
    assert q.get() == b"a"
    r = q.reserve(timeout=1)
    if spsc:
        with pytest.raises(ValueError, match="reserved"):
            q.try_put(b"x")  # one reservation at a time per SPSC handle, in order
        with pytest.raises(ValueError, match="reserved"):
            q.reserve(block=False)
    else:
        assert not q.try_put(b"x")  # full again: the reservation holds the last slot
    r.commit(0)
    assert q.get_many(4) == [b"b", b""]


def test_packed_batches(region: shmkit.Region) -> None:
    q = shmkit.Queue.create(region, "pk", 8, 16)
    items = b"".join(struct.pack("<Q8x", i) for i in range(10))
    assert q.put_many_from(items, 16) == 8  # what fits
    assert q.put_many_from(b"", 16) == 0
    with pytest.raises(ValueError, match="whole number"):
        q.put_many_from(b"x" * 17, 16)
    with pytest.raises(ValueError, match="does not fit"):
        q.put_many_from(b"x" * 34, 17)
    out = bytearray(5 * 16)
    lengths = array.array("I", [0] * 8)
    assert q.get_many_into(out, 16, lengths) == 5
    assert [struct.unpack_from("<Q", out, 16 * i)[0] for i in range(5)] == [0, 1, 2, 3, 4]
    assert list(lengths[:5]) == [16] * 5
    q.put(b"short")
    big = bytearray(32 * 8)  # itemsize may exceed elsize
    assert q.get_many_into(big, 32, lengths) == 4
    assert big[3 * 32 : 3 * 32 + 5] == b"short" and lengths[3] == 5
    with pytest.raises(ValueError, match="smaller than the element size"):
        q.get_many_into(out, 8)
    assert q.get_many_into(out, 16) == 0
    assert q.get_many_into(out, 16, timeout=0.01) == 0
    q.put(b"late")
    assert q.get_many_into(out, 16, timeout=None) == 1


def test_spin_is_per_handle(region: shmkit.Region) -> None:
    q = shmkit.Queue.create(region, "sp", 4, 8)
    other = shmkit.Queue.open(region, "sp")
    assert q.spin == pytest.approx(50e-6)
    q.spin = 0.0
    assert q.spin == 0.0 and other.spin == pytest.approx(50e-6)
    with pytest.raises(ValueError):
        q.spin = -1
    with pytest.raises(ValueError):
        q.spin = 5
    with pytest.raises(shmkit.QueueEmpty):
        q.get(timeout=0.01)  # with spin 0 a blocking call sleeps at once


PEER_WRITE = """
import struct, sys, shmkit
region = shmkit.Region.open(sys.argv[1], root=sys.argv[2])
region.write(int(sys.argv[3]), struct.pack("<Q", int(sys.argv[4])))
region.close()
"""

QUEUE_TAIL, QUEUE_HEAD = 128, 192  # header fields (queue/layout.rs)


@pytest.mark.parametrize("spsc", [False, True])
@pytest.mark.parametrize("field", [QUEUE_HEAD, QUEUE_TAIL])
@pytest.mark.parametrize("value", [2**64 - 1, 2**64 - 2, 2**63])
def test_boundary_positions_from_another_process(
    root: str, spsc: bool, field: int, value: int
) -> None:
    """Issue 11, item 4: a peer writing u64::MAX into head or tail made the next call raise
    PanicException. Now every call returns, or raises CorruptionError (an Exception)."""
    region = shmkit.Region.create("q", 1 << 20, root=root)
    q = shmkit.Queue.create(region, "b", 8, 16, spsc=spsc)
    q.put(b"before")
    finish(python(PEER_WRITE, "q", root, str(q.offset + field), str(value)))
    assert struct.unpack("<Q", region.read(q.offset + field, 8))[0] == value
    outcomes = set()
    for op in range(12):
        try:
            if op % 3 == 0:
                q.put(b"after", timeout=0)
            elif op % 3 == 1:
                q.get(timeout=0)
            else:
                q.put_many([b"x", b"y"])
                q.get_many(4)
                len(q)
            outcomes.add("ok")
        except (shmkit.QueueFull, shmkit.QueueEmpty):
            outcomes.add("full/empty")
        except shmkit.CorruptionError:
            outcomes.add("corruption")
    assert outcomes, outcomes
    q.close()
    region.close()


def test_put_and_get_are_shaped_like_queue_queue(region: shmkit.Region) -> None:
    """Same parameters, positional or by keyword, and the same meaning, as ``queue.Queue``."""
    import inspect

    for name in ("put", "get"):
        ours = list(inspect.signature(getattr(shmkit.Queue, name)).parameters)[1:]
        theirs = list(inspect.signature(getattr(stdqueue.Queue, name)).parameters)[1:]
        assert ours == theirs, (name, ours, theirs)
    q = shmkit.Queue.create(region, "shape", 2, 8)
    q.put(b"1", True, 0.1)
    q.put(b"2", False)
    with pytest.raises(stdqueue.Full):
        q.put(b"3", True, 0.01)
    with pytest.raises(stdqueue.Full):
        q.put(b"3", False, -1)  # block=False ignores the timeout, as queue.Queue does
    with pytest.raises(ValueError, match="non-negative"):
        q.put(b"3", True, -1)
    assert q.get(True, 0.1) == b"1"
    assert q.get(False) == b"2"
    with pytest.raises(stdqueue.Empty):
        q.get(True, 0.01)
    with pytest.raises(stdqueue.Empty):
        q.get(False, -1)
    with pytest.raises(ValueError, match="non-negative"):
        q.get(True, -1)
    assert (q.qsize(), q.empty(), q.full()) == (0, True, False)


def test_get_true_blocks_until_an_item_comes(region: shmkit.Region) -> None:
    """``get(True)`` waits forever (it once gave up after one second): still waiting well
    after that, it returns the item put later."""
    import threading

    q = shmkit.Queue.create(region, "forever", 2, 8)
    got: list[bytes] = []
    t = threading.Thread(target=lambda: got.append(q.get(True)))
    t.start()
    wait_until(lambda: q.stats()["get_waits"] >= 1, 20, "the getter blocking")
    t.join(1.5)
    assert t.is_alive(), "get(True) gave up"
    q.put(b"late")
    t.join(20)
    assert got == [b"late"]
    assert q.stats()["get_timeouts"] == 0
