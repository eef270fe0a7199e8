"""shmkit.MsgQueue: variable-size messages through shared memory, with real processes."""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import pickle
import random
import selectors
import signal
import struct
from collections.abc import Iterator

import pytest
import shmkit
from procs import finish, kill9, python, wait_line

METHODS = [m for m in ("spawn", "forkserver", "fork") if m in mp.get_all_start_methods()]


@pytest.fixture
def region(root: str) -> Iterator[shmkit.Region]:
    r = shmkit.Region.create("mq", 64 << 20, root=root)
    yield r
    r.unlink()
    r.close()


def message(tag: int, n: int) -> bytes:
    """``n`` bytes (at least 12) that carry ``tag`` and their own length, and a pattern."""
    n = max(n, 12)
    head = struct.pack("<QI", tag, n)
    body = bytes((tag * 31 + i) & 0xFF for i in range(min(n - 12, 256)))
    return head + (body * ((n - 12) // 256 + 1))[: n - 12]


def check(m: bytes) -> tuple[int, int]:
    tag, n = struct.unpack_from("<QI", m)
    assert len(m) == n and m == message(tag, n), f"message {tag:#x} damaged"
    return tag >> 32, tag & 0xFFFFFFFF


# ---------------------------------------------------------------------- one process


def test_put_get_sizes_from_zero_to_a_mebibyte(region: shmkit.Region) -> None:
    q = shmkit.MsgQueue.create(region, "q", 64)
    sizes = [0, 1, 255, 256, 257, 4096, 4097, 65536, 65537, 300_000, 1 << 20]
    for i, n in enumerate(sizes):
        q.put(bytes([i]) * n)
    assert len(q) == q.qsize() == len(sizes)
    for i, n in enumerate(sizes):
        assert q.get() == bytes([i]) * n
    assert q.try_get() is None
    s = q.stats()
    assert (s["puts"], s["gets"], s["in_use"], s["len"]) == (len(sizes), len(sizes), 0, 0)
    assert s["bytes_put"] == s["bytes_got"] == sum(sizes)
    assert s["heap_fallbacks"] >= 2  # 300 000 B and 1 MiB have no ring


def test_any_buffer_goes_in(region: shmkit.Region) -> None:
    q = shmkit.MsgQueue.create(region, "q", 8)
    q.put(bytearray(b"ba"))
    q.put(memoryview(b"xmv")[1:])
    import array

    q.put(array.array("I", [1, 2]))
    assert [q.get(), q.get(), q.get()] == [b"ba", b"mv", struct.pack("=II", 1, 2)]


def test_queue_semantics_full_empty_timeouts(region: shmkit.Region) -> None:
    q = shmkit.MsgQueue.create(region, "q", 3)
    assert q.capacity == 4
    for i in range(4):
        q.put_nowait(bytes([i]))
    assert q.full() and not q.empty()
    with pytest.raises(shmkit.QueueFull):
        q.put_nowait(b"x")
    with pytest.raises(shmkit.QueueFull):
        q.put(b"x", timeout=0.05)
    assert q.try_put(b"x") is False
    assert [q.get_nowait() for _ in range(4)] == [b"\0", b"\1", b"\2", b"\3"]
    with pytest.raises(shmkit.QueueEmpty):
        q.get(timeout=0.05)
    with pytest.raises(shmkit.QueueEmpty):
        q.get_nowait()
    with pytest.raises(shmkit.QueueEmpty):
        q.borrow(block=False)
    s = q.stats()
    assert s["in_use"] == 0 and s["put_timeouts"] == 1 and s["get_timeouts"] == 1


def test_bad_arguments(region: shmkit.Region) -> None:
    with pytest.raises(ValueError):
        shmkit.MsgQueue.create(region, "q", 0)
    with pytest.raises(ValueError):
        shmkit.MsgQueue.create(region, "q", 4, max_msg=0)
    with pytest.raises(ValueError):
        shmkit.MsgQueue.create(region, "q", 4, max_msg=1 << 40)
    with pytest.raises(OverflowError):
        shmkit.MsgQueue.create(region, "q", -1)
    q = shmkit.MsgQueue.create(region, "q", 4, max_msg=100)
    assert q.max_msg == 100
    with pytest.raises(FileExistsError):
        shmkit.MsgQueue.create(region, "q", 4)
    with pytest.raises(FileNotFoundError):
        shmkit.MsgQueue.open(region, "nope")
    with pytest.raises(ValueError):
        shmkit.MsgQueue.open(region, "q/refs")  # a part, not a message queue
    with pytest.raises(ValueError):
        shmkit.MsgQueue.find_or_create(region, "q", 4, max_msg=200)
    q2, created = shmkit.MsgQueue.find_or_create(region, "q", 3, max_msg=100)
    assert not created and q2.capacity == 4
    with pytest.raises(ValueError, match="max_msg"):
        q.put(b"x" * 101)
    with pytest.raises(ValueError):
        q.reserve(101)
    with pytest.raises(ValueError):
        q.put(b"x", timeout=-1)
    with pytest.raises(TypeError):
        q.put("text")  # type: ignore[arg-type]
    assert q.stats()["in_use"] == 0


def test_out_of_memory(region: shmkit.Region) -> None:
    q = shmkit.MsgQueue.create(region, "q", 16)
    with pytest.raises(shmkit.OutOfMemoryError):
        q.put(b"x" * (65 << 20))  # larger than the region: never waits
    with pytest.raises(shmkit.OutOfMemoryError):
        q.put(b"x" * (65 << 20), timeout=None)
    big = b"x" * (25 << 20)
    q.put(big)
    q.put(big)
    with pytest.raises(shmkit.OutOfMemoryError):
        q.put_nowait(big)
    with pytest.raises(shmkit.OutOfMemoryError):
        q.put(big, timeout=0.05)
    with pytest.raises(shmkit.OutOfMemoryError):
        q.reserve(len(big), timeout=0.05)
    assert q.stats()["no_memory"] >= 3
    assert q.get() == big
    q.put(b"y" * (20 << 20), timeout=10)  # room again
    assert q.stats()["in_use"] == 2


def test_no_wait_for_memory_when_nothing_is_in_flight(region: shmkit.Region) -> None:
    """A message that fits the heap but not what is free, with no message of the queue in
    flight (whose release could make room): a blocking put or reserve, even without a
    timeout, raises at once instead of waiting for ever."""
    q = shmkit.MsgQueue.create(region, "q", 16)
    hog = region.alloc(40 << 20)  # another user of the region holds most of it
    big = b"x" * (30 << 20)
    with pytest.raises(shmkit.OutOfMemoryError):
        q.put(big, timeout=None)
    with pytest.raises(shmkit.OutOfMemoryError):
        q.reserve(len(big), timeout=None)
    region.free(hog)
    q.put(big, timeout=None)
    assert q.get() == big


BIG_PRODUCER = """
import sys, shmkit
r = shmkit.Region.open("mq", root=sys.argv[1])
q = shmkit.MsgQueue.open(r, "q")
for i in range(int(sys.argv[2])):
    with q.reserve(20 << 20, timeout=30) as view:
        view[:8] = i.to_bytes(8, "little")
print("sent", flush=True)
"""


def test_blocking_reserve_never_fails_for_memory_a_consumer_is_freeing(
    region: shmkit.Region, root: str
) -> None:
    """Messages that fill most of the region, a producer blocked for memory and a consumer
    releasing them: the last message in flight can be freed between the producer's failed
    allocation and its look at what is in flight. That must not turn into OutOfMemoryError
    (it did, in bench_objects' 100 MiB run): the allocation is tried again then."""
    q = shmkit.MsgQueue.create(region, "q", 2)
    n = 200
    producer = python(BIG_PRODUCER, root, str(n))
    for i in range(n):
        with q.borrow(timeout=10) as m:  # held while the producer allocates the next ones
            assert int.from_bytes(memoryview(m)[:8], "little") == i
    assert "sent" in finish(producer)
    assert q.stats()["no_memory"] == 0


def test_borrow_reads_in_place_and_the_last_view_frees(region: shmkit.Region) -> None:
    q = shmkit.MsgQueue.create(region, "q", 8)
    q.put(b"hello world" * 1000)
    v = q.borrow()
    assert isinstance(v, shmkit.MsgView)
    assert len(v) == 11000 and v.readonly and not v.released
    m = memoryview(v)
    assert m.readonly and m.nbytes == 11000
    part = m[6:11]
    with pytest.raises(TypeError):
        m[0] = 1  # type: ignore[index]
    v.release()
    assert v.released
    with pytest.raises(BufferError):
        memoryview(v)
    assert q.stats()["in_use"] == 1  # exported views keep it
    del m
    assert bytes(part) == b"world"
    assert q.stats()["in_use"] == 1  # a slice still exports it
    part.release()
    assert q.stats()["in_use"] == 0  # the last one out freed it
    v.release()  # idempotent


def test_a_forked_child_frees_nothing_its_parent_holds(region: shmkit.Region) -> None:
    q = shmkit.MsgQueue.create(region, "q", 8)
    q.put(b"parent's".ljust(POOLED))
    v = q.borrow()
    s = q.reserve(10)
    pid = os.fork()
    if pid == 0:  # the child drops its copies of both, and cannot commit the slot
        code = 0
        try:
            s.commit()
            code = 1
        except ValueError:
            pass
        del v, s
        gc.collect()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert status == 0
    assert q.stats()["in_use"] == 2
    assert bytes(v) == b"parent's".ljust(POOLED)
    s.commit(0)
    v.release()
    assert q.get() == b""
    assert q.stats()["in_use"] == 0


def test_a_borrowed_message_may_be_writable(region: shmkit.Region) -> None:
    q = shmkit.MsgQueue.create(region, "q", 8)
    q.put(b"abcdef")
    with q.borrow(writable=True) as v:
        assert not v.readonly
        m = memoryview(v)
        m[:3] = b"xyz"
        assert bytes(v) == b"xyzdef"
        m.release()
    assert q.stats()["in_use"] == 0


def test_borrow_context_manager_and_garbage_collection(region: shmkit.Region) -> None:
    q = shmkit.MsgQueue.create(region, "q", 8)
    q.put(b"abc".ljust(POOLED))
    q.put(b"def".ljust(POOLED))
    with q.borrow() as v:
        assert bytes(v) == b"abc".ljust(POOLED)
    assert v.released and q.stats()["in_use"] == 1
    v = q.borrow()
    del v
    gc.collect()
    assert q.stats()["in_use"] == 0
    # A small message is borrowed as a private copy: the same view, nothing in the pool.
    q.put(b"small")
    with q.borrow(writable=True) as v:
        m = memoryview(v)
        assert bytes(m) == b"small" and not m.readonly and q.stats()["in_use"] == 0
        m[0:1] = b"S"
        assert bytes(v) == b"Small"
    assert v.released and not m.readonly
    m.release()
    with pytest.raises(BufferError):
        memoryview(v)
    assert len(q) == 0
    with pytest.raises(TypeError):
        shmkit.MsgView()


def test_reserve_writes_in_place(region: shmkit.Region) -> None:
    q = shmkit.MsgQueue.create(region, "q", 8)
    with q.reserve(100) as buf:
        assert isinstance(buf, memoryview) and not buf.readonly and len(buf) == 100
        buf[:5] = b"hello"
    assert q.get() == b"hello" + bytes(95)
    s = q.reserve(1 << 20)
    s.view[:3] = b"big"
    s.commit(3)
    assert s.done == "committed"
    with pytest.raises(ValueError):
        s.commit()
    with pytest.raises(shmkit.ClosedError):
        _ = s.view
    assert q.get() == b"big"
    # Abort (or an exception in the with block) frees, once no view is left.
    s = q.reserve(10)
    view = s.view
    s.abort()
    assert s.done == "aborted" and q.stats()["in_use"] == 1
    del view
    assert q.stats()["in_use"] == 1  # the slot object itself still holds it
    del s
    gc.collect()
    assert q.stats()["in_use"] == 0
    with pytest.raises(RuntimeError), q.reserve(10) as buf:
        buf[:1] = b"x"
        raise RuntimeError("boom")
    assert len(q) == 0 and q.stats()["in_use"] == 1  # `buf` still views it
    del buf
    assert q.stats()["in_use"] == 0
    with pytest.raises(ValueError):
        q.reserve(10).commit(11)


def test_commit_waits_for_room(region: shmkit.Region) -> None:
    q = shmkit.MsgQueue.create(region, "q", 2)
    q.put(b"1")
    q.put(b"2")
    s = q.reserve(4)
    s.view[:] = b"abcd"
    with pytest.raises(shmkit.QueueFull):
        s.commit(block=False)
    with pytest.raises(shmkit.QueueFull):
        s.commit(timeout=0.02)
    assert s.done is None
    assert q.get() == b"1"
    s.commit()
    assert [q.get(), q.get()] == [b"2", b"abcd"]


def test_fileno_is_readable_while_messages_wait(region: shmkit.Region) -> None:
    q = shmkit.MsgQueue.create(region, "q", 4)
    with selectors.DefaultSelector() as sel:
        sel.register(q.fileno(), selectors.EVENT_READ)
        assert sel.select(0) == []
        q.put(b"x" * 5000)
        assert sel.select(5)
        assert q.get() == b"x" * 5000
        assert q.try_get() is None
        assert sel.select(0.01) == []
    q.close()
    assert q.closed
    with pytest.raises(shmkit.ClosedError):
        q.put(b"x")


def test_asyncio_get_and_put(region: shmkit.Region) -> None:
    import asyncio

    q = shmkit.MsgQueue.create(region, "q", 2)

    async def main() -> list[bytes]:
        async def later() -> None:
            await asyncio.sleep(0)
            for i in range(4):
                await q.put_async(bytes([i]) * 70_000, timeout=10)

        task = asyncio.ensure_future(later())
        got = [await q.get_async(timeout=10) for _ in range(4)]
        await task
        with pytest.raises(shmkit.QueueEmpty):
            await q.get_async(timeout=0.01)
        return got

    assert asyncio.run(main()) == [bytes([i]) * 70_000 for i in range(4)]


def test_two_queues_share_a_region_without_taking_each_others_messages(
    region: shmkit.Region,
) -> None:
    a = shmkit.MsgQueue.create(region, "a", 4)
    b = shmkit.MsgQueue.create(region, "b", 4)
    a.put(b"A" * 100_000)
    b.put(b"B" * 100_000)
    assert a.gc() == {"dead": 0, "orphans": 0} and b.gc() == {"dead": 0, "orphans": 0}
    assert a.get() == b"A" * 100_000 and b.get() == b"B" * 100_000
    shmkit.MsgQueue.remove(region, "a")
    with pytest.raises(FileNotFoundError):
        shmkit.MsgQueue.open(region, "a")
    assert {o["name"] for o in region.objects()} == {"b/msgs", "b/refs", "b"}


def test_half_created_queue_is_a_clear_error_until_removed(region: shmkit.Region) -> None:
    # What a creator killed between its parts and its header leaves.
    shmkit.MsgQueue.create(region, "q", 4)
    region.remove_object("q", free=True)
    with pytest.raises(FileExistsError, match="half-created"):
        shmkit.MsgQueue.create(region, "q", 4)
    with pytest.raises(FileNotFoundError):
        shmkit.MsgQueue.open(region, "q")
    shmkit.MsgQueue.remove(region, "q")
    assert region.objects() == []
    with pytest.raises(FileNotFoundError):
        shmkit.MsgQueue.remove(region, "q")
    q, created = shmkit.MsgQueue.find_or_create(region, "q", 4)
    assert created and q.try_put(b"x")


CREATOR = """
import sys, shmkit
r = shmkit.Region.open("mq", root=sys.argv[1])
shmkit.MsgQueue.create(r, "q", 4)
"""


@pytest.mark.parametrize("point", ["msgq.create_refs", "msgq.create_parts"])
def test_creator_killed_half_way_is_cleared_by_the_next_create(
    region: shmkit.Region, root: str, point: str
) -> None:
    free = region.stats()["free_bytes"]
    victim = python(CREATOR, root, failpoints=point)
    wait_line(victim, f"failpoint {point} reached")
    left = {o["name"] for o in region.objects()}
    assert left == ({"q/refs"} if point == "msgq.create_refs" else {"q/refs", "q/msgs"})
    # While the creator lives it may still finish: a second creator is told, nothing taken.
    with pytest.raises(FileExistsError, match=r"half-created .* still running"):
        shmkit.MsgQueue.create(region, "q", 4)
    assert {o["name"] for o in region.objects()} == left
    kill9(victim)
    # Dead: its parts are removed (their memory freed) and the queue is created anew.
    q, created = shmkit.MsgQueue.find_or_create(region, "q", 8)
    assert created and q.capacity == 8
    q.put(b"x" * 5000)
    assert q.get() == b"x" * 5000
    assert {o["name"] for o in region.objects()} == {"q", "q/refs", "q/msgs"}
    shmkit.MsgQueue.remove(region, "q")
    assert region.stats()["free_bytes"] == free


# ---------------------------------------------------------------------- hostile bytes

LAYOUT = shmkit._native.shm_layout()


def ref_slot(region: shmkit.Region, name: str, i: int) -> tuple[int, int]:
    """``(slot header offset, data offset)`` of slot ``i`` of queue ``name``'s elements."""
    base = region.find_object(f"{name}/refs")["offset"]
    off, size = LAYOUT["structs"]["QueueHeader"]["fields"]["stride"][:2]
    stride = int.from_bytes(region.read(base + off, size), "little")
    slot = base + LAYOUT["constants"]["queue.header_size"] + i * stride
    return slot, slot + LAYOUT["constants"]["queue.slot_header"]


#: Bytes that do not fit an element of a queue (at most 239 travel in one): a message of
#: the pool, whose reference travels.
POOLED = 300


def test_hostile_references_and_lengths_are_dropped_never_followed(
    region: shmkit.Region, seed: int
) -> None:
    rng = random.Random(seed)
    msg = LAYOUT["structs"]["MsgHeader"]["fields"]
    slot_len = LAYOUT["structs"]["QueueSlot"]["fields"]["len"]
    q = shmkit.MsgQueue.create(region, "q", 8)
    objects = [o["offset"] for o in region.objects()]
    for rnd in range(40):
        for i in range(8):
            q.put(message(rnd << 32 | i, rng.choice((POOLED, 1000, 5000, 100_000))))
        good = []
        for i in range(8):
            slot, data = ref_slot(region, "q", (rnd * 8 + i) % 8)
            ref = int.from_bytes(region.read(data, 8), "little")
            payload = ref & ((1 << 40) - 1)
            kind = rng.randrange(8)
            if kind == 0:  # random reference
                region.write(data, rng.randbytes(8))
            elif kind == 1:  # stale sequence
                region.write(data, (ref ^ (1 << 41)).to_bytes(8, "little"))
            elif kind == 2:  # an object, or off a slot boundary
                fake = rng.choice(objects) + 32 if rng.random() < 0.5 else payload + 64
                region.write(data, ((ref >> 40) << 40 | fake).to_bytes(8, "little"))
            elif kind == 3:  # a length larger than the message's room
                off = payload - 32 + msg["len"][0]
                region.write(off, rng.choice((1 << 20, 2**32 - 1, 10**9)).to_bytes(4, "little"))
            elif kind == 4:  # the reference slot's own length
                region.write(
                    slot + slot_len[0], rng.choice((0, 8, 10, 2**32 - 1)).to_bytes(4, "little")
                )
            elif kind == 5:  # a message header's identity
                region.write(
                    payload - 32 + rng.choice((msg["slot_id"][0], msg["magic"][0])),
                    rng.randbytes(4),
                )
            else:
                good.append(rnd << 32 | i)
        got = []
        while (m := q.try_get()) is not None:
            got.append(struct.unpack_from("<Q", m)[0])
            check(m)
        assert got == good, f"round {rnd}"
        q.gc()
        s = q.stats()
        # Every message whose reference was dropped is collected, also those whose header
        # was damaged (ring slots are restored first). A heap message whose magic was
        # overwritten is no longer recognisable as a message at all: it is not counted in
        # `in_use` (and stays allocated: a peer that can write the region can waste it).
        assert s["len"] == 0 and s["in_use"] == 0, s
    assert q.stats()["dropped"] == 8 * 40 - q.stats()["gets"]
    q.put(b"still works")
    assert q.get() == b"still works"


def test_small_messages_travel_in_the_queue_and_hostile_elements_are_dropped(
    region: shmkit.Region, seed: int
) -> None:
    """A message up to an element's size less its kind byte travels in the element: nothing
    in the pool. A peer that rewrites an element's kind byte or length gets it dropped and
    counted, never read as something else; rewriting its bytes only changes the message."""
    rng = random.Random(seed)
    slot_len = LAYOUT["structs"]["QueueSlot"]["fields"]["len"][0]
    q = shmkit.MsgQueue.create(region, "q", 8)
    kinds = {0x49, 0x52}  # "I"nline, "R"eference (rust/src/queue/msgq/layout.rs)
    dropped = 0
    for rnd in range(64):
        n = rng.choice((0, 1, 12, 100, 239))
        q.put(message(rnd, n) if n >= 12 else bytes([rnd]) * n)
        assert q.stats()["in_use"] == 0
        slot, data = ref_slot(region, "q", rnd % 8)
        assert region.read(data + n, 1)[0] == 0x49
        what = rng.randrange(4)
        if what == 0:  # another kind byte
            region.write(data + n, bytes([rng.choice([b for b in range(256) if b not in kinds])]))
        elif what == 1:  # no byte at all
            region.write(slot + slot_len, (0).to_bytes(4, "little"))
        elif what == 2 and n > 12:  # the message's own bytes: delivered as they are
            region.write(data + 12, b"\xff")
        got = q.try_get()
        if what in (0, 1):
            dropped += 1
            assert got is None, f"round {rnd}: a damaged element was read"
        elif what == 2 and n > 12:
            assert got is not None and got[12:13] == b"\xff" and len(got) == n
        else:
            assert got == (message(rnd, n) if n >= 12 else bytes([rnd]) * n)
    s = q.stats()
    assert (s["dropped"], s["len"], s["in_use"]) == (dropped, 0, 0), s
    q.put_obj({"still": "works"})
    assert q.get_obj() == {"still": "works"}


def test_a_damaged_header_is_refused_and_repaired(region: shmkit.Region) -> None:
    q = shmkit.MsgQueue.create(region, "q", 8, max_msg=1000)
    fields = LAYOUT["structs"]["MsgqHeader"]["fields"]
    base = region.find_object("q")["offset"]
    region.write(base + fields["magic"][0], b"garbage!")
    with pytest.raises(shmkit.CorruptionError):
        shmkit.MsgQueue.open(region, "q")
    region.write(base + fields["max_msg"][0], (2**63).to_bytes(8, "little"))
    q.put(b"the handle keeps its own copy")
    with pytest.raises(ValueError):
        q.put(b"x" * 1001)
    fixed = q.repair(full=True)
    assert fixed["header"] == 2, fixed
    # A queue of an older layout (version 1: references only) says what to do.
    region.write(base + fields["version"][0], (1).to_bytes(4, "little"))
    with pytest.raises(shmkit.CorruptionError, match=r"older shmkit .* create it again"):
        shmkit.MsgQueue.open(region, "q")
    assert q.repair()["header"] == 1
    again = shmkit.MsgQueue.open(region, "q")
    assert again.max_msg == 1000
    assert again.get() == b"the handle keeps its own copy"


# ---------------------------------------------------------------------- processes


def _producer(q: shmkit.MsgQueue, who: int, count: int, seed: int) -> None:
    rng = random.Random(seed * 1000 + who)
    for i in range(count):
        r = rng.random()
        n = (
            rng.randrange(1 << 20)
            if r < 0.05
            else rng.randrange(70_000)
            if r < 0.3
            else rng.randrange(300)
        )
        q.put(message(who << 32 | i, n), timeout=60)


def _consumer(q: shmkit.MsgQueue, total: int, out: mp.Queue[object]) -> None:
    seen: dict[int, list[int]] = {}
    for _ in range(total):
        if random.random() < 0.3:
            with q.borrow(timeout=60) as v:
                who, i = check(bytes(v))
        else:
            who, i = check(q.get(timeout=60))
        seen.setdefault(who, []).append(i)
    out.put(seen)


@pytest.mark.parametrize("method", METHODS)
def test_processes_mixed_sizes_in_order(region: shmkit.Region, method: str, seed: int) -> None:
    s = seed
    ctx = mp.get_context(method)
    q = shmkit.MsgQueue.create(region, "q", 32)
    producers, count = 3, 150
    results: mp.Queue[object] = ctx.Queue()
    consumers = [
        ctx.Process(target=_consumer, args=(q, producers * count // 2, results)) for _ in range(2)
    ]
    procs = [ctx.Process(target=_producer, args=(q, w, count, s)) for w in range(producers)]
    for p in consumers + procs:
        p.start()
    merged: dict[int, list[int]] = {}
    for _ in consumers:
        seen = results.get(timeout=120)
        assert isinstance(seen, dict)
        for who, items in seen.items():
            merged.setdefault(who, []).extend(items)
            assert items == sorted(items), "a consumer saw a producer's messages out of order"
    for p in consumers + procs:
        p.join(60)
        assert p.exitcode == 0
    assert {w: sorted(v) for w, v in merged.items()} == {
        w: list(range(count)) for w in range(producers)
    }
    assert q.stats()["in_use"] == 0


def _echo(q: shmkit.MsgQueue, back: shmkit.MsgQueue) -> None:
    back.put(q.get(timeout=30)[::-1])


@pytest.mark.parametrize("method", METHODS)
def test_handles_pickle_across_start_methods(region: shmkit.Region, method: str) -> None:
    q = shmkit.MsgQueue.create(region, "q", 4)
    back = shmkit.MsgQueue.create(region, "back", 4)
    clone = pickle.loads(pickle.dumps(q))
    assert type(clone) is shmkit.MsgQueue and clone.name == "q"
    p = mp.get_context(method).Process(target=_echo, args=(q, back))
    p.start()
    q.put(b"x" * 70_000 + b"end")
    assert back.get(timeout=30) == b"dne" + b"x" * 70_000
    p.join(30)
    assert p.exitcode == 0


STREAM = """
import struct, sys, shmkit
r = shmkit.Region.open("mq", root=sys.argv[1])
q = shmkit.MsgQueue.open(r, "q")
out = shmkit.MsgQueue.open(r, "out")
if sys.argv[2] == "produce":
    who = int(sys.argv[3])
    sizes = (40, 3000, 70_000, 300_000)
    for i in range(1 << 30):
        q.put(struct.pack("<Q", who << 32 | i) + bytes(sizes[i % 4]))
        print(i, flush=True)
else:
    while True:
        if int(sys.argv[3]) % 2:
            m = q.get()
        else:
            with q.borrow() as v:
                m = bytes(memoryview(v)[:8])
        if m[:4] == b"stop":
            break
        out.put(m[:8])
"""


def test_random_kill9_of_producers_and_consumers_loses_only_their_messages(
    region: shmkit.Region, root: str, seed: int
) -> None:
    """Producers and consumers are SIGKILLed at random moments, again and again. Every
    message a producer finished putting is received once, except at most one per killed
    consumer (the one it had taken out); nothing is left allocated."""
    rng = random.Random(seed)
    q = shmkit.MsgQueue.create(region, "q", 16)
    out = shmkit.MsgQueue.create(region, "out", 1 << 12, max_msg=8)
    last: dict[int, int] = {}  # producer -> index of its last put known to be finished
    kills = 0
    consumers = [python(STREAM, root, "consume", str(k)) for k in range(2)]
    received: list[int] = []
    for who in range(6):
        p = python(STREAM, root, "produce", str(who))
        last[who] = int(wait_line(p, str(rng.randrange(5, 40)), stream="stdout"))
        os.kill(p.pid, signal.SIGKILL)
        assert p.stdout is not None
        rest = p.stdout.read()  # through the buffer wait_line read into, up to EOF
        p.communicate(timeout=30)
        last[who] = max([last[who], *(int(x) for x in rest.split())])
        if rng.random() < 0.6:
            k = rng.randrange(2)
            kill9(consumers[k])
            kills += 1
            consumers[k] = python(STREAM, root, "consume", str(k))
        while (m := out.try_get()) is not None:
            received.append(struct.unpack("<Q", m)[0])
    for _ in consumers:
        q.put(b"stop")
    for c in consumers:
        finish(c)
    while (m := out.try_get()) is not None:
        received.append(struct.unpack("<Q", m)[0])
    assert len(received) == len(set(received)), "a message was delivered twice"
    lost = 0
    for who, n in last.items():
        mine = [t & 0xFFFFFFFF for t in received if t >> 32 == who]
        assert set(mine) <= set(range(n + 2)), f"producer {who}: unknown messages"
        lost += len(set(range(n + 1)) - set(mine))
    assert lost <= kills, f"{lost} messages lost with {kills} consumer kills"
    q.gc()
    out.gc()
    assert q.stats()["in_use"] == 0 and out.stats()["in_use"] == 0
    assert len(q) == 0


VICTIM = """
import sys, shmkit
r = shmkit.Region.open("mq", root=sys.argv[1])
q = shmkit.MsgQueue.open(r, "q")
if sys.argv[2] == "put":
    q.put(b"v" * int(sys.argv[3]))
elif sys.argv[2] == "get":
    q.get()
elif sys.argv[2] == "hold":
    views = [q.borrow(), q.reserve(100), q.reserve(200_000)]
    q.put(b"queued by the victim".ljust(300))
    q.put(b"small, queued by the victim")
    print("holding", flush=True)
    sys.stdin.read()
"""


PUT_POINTS = [
    (100, "msgq.put_inline_written"),  # travels in its element
    *(
        (size, point)
        for size in (POOLED, 200_000)
        for point in ("msgq.put_written", "msgq.put_claimed", "msgq.put_handed")
    ),
]


@pytest.mark.parametrize(("size", "point"), PUT_POINTS)
def test_producer_killed_mid_put_leaks_nothing(
    region: shmkit.Region, root: str, point: str, size: int
) -> None:
    q = shmkit.MsgQueue.create(region, "q", 8)
    before, after = b"before".ljust(POOLED), b"after".ljust(POOLED)
    q.put(before)
    victim = python(VICTIM, root, "put", str(size), failpoints=point)
    wait_line(victim, f"failpoint {point} reached")
    kill9(victim)
    q.put(after)
    pooled = size >= POOLED
    assert q.stats()["in_use"] == 2 + pooled
    assert q.get() == before
    r = q.gc()
    assert r["dead"] + r["orphans"] == pooled, r
    assert q.get() == after  # the victim's message is lost with it, nothing else
    assert q.try_get() is None
    s = q.stats()
    assert s["in_use"] == 0 and s["len"] == 0, s


GET_POINTS = [
    (100, "msgq.get_inline_copied"),
    *(
        (size, point)
        for size in (POOLED, 200_000)
        for point in ("msgq.get_claimed", "msgq.get_taken")
    ),
]


@pytest.mark.parametrize(("size", "point"), GET_POINTS)
def test_consumer_killed_mid_get_loses_one_message(
    region: shmkit.Region, root: str, point: str, size: int
) -> None:
    q = shmkit.MsgQueue.create(region, "q", 8)
    for i in range(3):
        q.put(bytes([i]) * size)
    victim = python(VICTIM, root, "get", failpoints=point)
    wait_line(victim, f"failpoint {point} reached")
    kill9(victim)
    r = q.gc()
    assert r["dead"] + r["orphans"] == (size >= POOLED), r
    assert [q.get(), q.get()] == [bytes([1]) * size, bytes([2]) * size]  # survivors lose nothing
    s = q.stats()
    assert s["in_use"] == 0 and s["len"] == 0, s


def test_holder_killed_with_borrowed_and_reserved_messages(
    region: shmkit.Region, root: str
) -> None:
    q = shmkit.MsgQueue.create(region, "q", 8)
    q.put(b"taken by the victim".ljust(POOLED))
    victim = python(VICTIM, root, "hold")
    wait_line(victim, "holding", stream="stdout")
    assert q.stats()["in_use"] == 4
    kill9(victim)
    # A new opener collects what the dead left (here: at open).
    again = shmkit.MsgQueue.open(region, "q")
    assert again.stats()["in_use"] == 1
    assert again.get() == b"queued by the victim".ljust(POOLED)
    assert again.get() == b"small, queued by the victim"
    assert q.stats()["in_use"] == 0 and q.stats()["reclaimed_dead"] == 3


def test_a_put_that_finds_no_memory_collects_the_dead_first(
    region: shmkit.Region, root: str
) -> None:
    q = shmkit.MsgQueue.create(region, "q", 8)
    victim = python(
        "import sys, shmkit\n"
        "q = shmkit.MsgQueue.open(shmkit.Region.open('mq', root=sys.argv[1]), 'q')\n"
        "s = q.reserve(40 << 20)\n"
        "print('holding', flush=True)\n"
        "sys.stdin.read()\n",
        root,
    )
    wait_line(victim, "holding", stream="stdout")
    with pytest.raises(shmkit.OutOfMemoryError):
        q.put_nowait(b"x" * (30 << 20))
    kill9(victim)
    q.put_nowait(b"x" * (30 << 20))
    assert q.stats()["reclaimed_dead"] == 1
    assert finish is not None
