"""``MsgQueue.put_obj``/``get_obj``/``reserve_obj``: Python objects through shared memory,
with real processes. Arrays arrive as views of the message (no copy), stay valid past the
sender's exit, free their block when the last one goes, are reclaimed when their holder is
killed; a receiver that hoards cannot hang or crash a sender; hostile bytes give errors."""

from __future__ import annotations

import gc
import multiprocessing as mp
import pickle
import random
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import shmkit
from procs import finish, kill9, python, wait_line

METHODS = [m for m in ("spawn", "forkserver", "fork") if m in mp.get_all_start_methods()]


@pytest.fixture
def region(root: str) -> Iterator[shmkit.Region]:
    r = shmkit.Region.create("obj", 256 << 20, root=root)
    yield r
    r.unlink()
    r.close()


def in_region(region: shmkit.Region, arr: np.ndarray) -> bool:
    """Whether ``arr``'s memory lies in ``region``'s mapping (it was not copied out)."""
    start, end = region.data_range
    whole = np.frombuffer(region.buffer(start, end - start), np.uint8)
    return bool(np.shares_memory(whole, arr))


# ---------------------------------------------------------------------- one process


def test_objects_of_every_kind_round_trip(region: shmkit.Region) -> None:
    q = shmkit.MsgQueue.create(region, "q", 64)
    objs: list[Any] = [
        None,
        {"a": 1, "b": [1.5, "two"], "c": (None, True)},
        b"",
        b"x" * 5000,
        bytearray(b"abc"),
        "text" * 2000,
        np.arange(10),
        {"big": np.arange(300_000, dtype=np.float32), "tag": "t"},
        [memoryview(b"read only"), memoryview(bytearray(100_000))],
    ]
    for o in objs:
        q.put_obj(o)
    got = [q.get_obj() for _ in objs]
    assert got[:6] == objs[:6] and [type(g) for g in got[:6]] == [type(o) for o in objs[:6]]
    np.testing.assert_array_equal(got[6], objs[6])
    np.testing.assert_array_equal(got[7]["big"], objs[7]["big"])
    assert got[7]["tag"] == "t"
    assert got[8][0].readonly and bytes(got[8][0]) == b"read only"
    assert not got[8][1].readonly and got[8][1].nbytes == 100_000


def test_big_arrays_are_views_of_the_message(region: shmkit.Region) -> None:
    q = shmkit.MsgQueue.create(region, "q", 8)
    a = np.random.default_rng(1).random(1 << 17)  # 1 MiB
    q.put_obj({"a": a})
    got = q.get_obj()["a"]
    np.testing.assert_array_equal(got, a)
    assert in_region(region, got), "the received array was copied out of shared memory"
    assert got.ctypes.data % 64 == 0
    assert got.flags.writeable  # the sender's was: the message is the receiver's alone
    got[0] = -1.0
    assert q.stats()["in_use"] == 1
    del got
    gc.collect()
    assert q.stats()["in_use"] == 0, "the block outlived the last view"


def test_readonly_arrays_stay_readonly(region: shmkit.Region) -> None:
    q = shmkit.MsgQueue.create(region, "q", 8)
    a = np.arange(10_000)
    a.flags.writeable = False
    q.put_obj(a)
    assert not q.get_obj().flags.writeable


def test_reserve_obj_sends_without_copying(region: shmkit.Region) -> None:
    q = shmkit.MsgQueue.create(region, "q", 8)
    with q.reserve_obj(64 << 20) as slot:
        sent = slot.array((8 << 20,), np.float64)
        assert sent.ctypes.data % 64 == 0
        sent[:3] = [1.0, 2.0, 3.0]
        sent[-1] = 9.0
        slot.put({"frame": sent, "small": np.arange(4), "meta": "m"})
        assert slot.done == "committed"
    got = q.get_obj()
    assert np.shares_memory(got["frame"], sent), "the in-place array was copied"
    assert got["frame"][:3].tolist() == [1.0, 2.0, 3.0] and got["frame"][-1] == 9.0
    assert got["small"].tolist() == [0, 1, 2, 3] and got["meta"] == "m"
    del got, sent, slot
    gc.collect()
    assert q.stats()["in_use"] == 0


def test_reserve_obj_falls_back_to_a_copy_when_the_room_is_too_small(
    region: shmkit.Region,
) -> None:
    q = shmkit.MsgQueue.create(region, "q", 8)
    with q.reserve_obj(4096, room=64) as slot:
        a = slot.array(512, np.int64)
        a[:] = np.arange(512)
        slot.put({"a": a, "text": "x" * 1000})  # the stream alone needs more than 64 bytes
    got = q.get_obj()
    assert got["a"].tolist() == list(range(512)) and len(got["text"]) == 1000
    assert not np.shares_memory(got["a"], a)
    del slot, a, got
    gc.collect()
    assert q.stats()["in_use"] == 0


def test_reserve_obj_without_put_frees_and_put_twice_refuses(region: shmkit.Region) -> None:
    q = shmkit.MsgQueue.create(region, "q", 8)
    with q.reserve_obj(1000) as slot:
        slot.buffer[:3] = b"abc"
    assert slot.done == "aborted" and len(q) == 0
    with q.reserve_obj(10) as slot:
        slot.put(1)
        with pytest.raises(ValueError, match="committed"):
            slot.put(2)
    with pytest.raises(ValueError):
        q.reserve_obj(-1)
    assert q.get_obj() == 1


def test_errors_are_clear_and_leak_nothing(region: shmkit.Region) -> None:
    q = shmkit.MsgQueue.create(region, "q", 2)
    with pytest.raises((pickle.PicklingError, TypeError, AttributeError)):
        q.put_obj(lambda: 0)
    with pytest.raises(shmkit.OutOfMemoryError):
        q.put_obj(np.zeros(300 << 20, np.uint8), timeout=0.05)
    assert q.stats()["in_use"] == 0
    with pytest.raises(shmkit.QueueEmpty):
        q.get_obj_nowait()
    with pytest.raises(shmkit.QueueEmpty):
        q.get_obj(timeout=0.01)
    q.put_obj(1)
    q.put_obj(np.arange(2000))
    with pytest.raises(shmkit.QueueFull):
        q.put_obj_nowait(2)
    with pytest.raises(shmkit.QueueFull):
        q.put_obj(np.arange(2000), timeout=0.02)
    # (the 1 travels in its element of the queue, the array in the pool)
    assert q.stats()["in_use"] == 1, "a put_obj that failed left its message allocated"
    assert q.get_obj() == 1 and int(q.get_obj()[-1]) == 1999


def test_hostile_messages_give_errors_and_the_queue_goes_on(region: shmkit.Region) -> None:
    """A peer that puts raw bytes shaped like an object message: every offset, length and
    count is checked before a view is made; the block is freed; the next object arrives."""
    q = shmkit.MsgQueue.create(region, "q", 16)
    head = struct.Struct("<4sIIIQ")
    entry = struct.Struct("<QQQ")
    stream = pickle.dumps([pickle.PickleBuffer(b"x")], 5, buffer_callback=lambda b: False)
    bad = [
        b"SKO5",  # short
        head.pack(b"SKO5", 0, 1 << 30, 0, 0),  # a table larger than the message
        head.pack(b"SKO5", 0, 0, 0, 1 << 62),  # a stream larger than the message
        head.pack(b"SKO5", 0, 1, 0, len(stream)) + entry.pack(1 << 40, 1, 0) + stream,
        head.pack(b"SKO5", 0, 1, 0, len(stream)) + entry.pack(100, 1 << 63, 0) + stream,
        b"XXXX" + bytes(100),
    ]
    for b in bad:
        q.put(b)
        with pytest.raises(shmkit.CorruptionError):
            q.get_obj()
    q.put(b"\x80\x05garbage")
    with pytest.raises(pickle.UnpicklingError):
        q.get_obj()
    q.put(b"")
    with pytest.raises(shmkit.CorruptionError):
        q.get_obj()
    q.put_obj({"fine": np.arange(3)})
    assert q.get_obj()["fine"].tolist() == [0, 1, 2]
    gc.collect()
    assert q.stats()["in_use"] == 0


def test_a_hoarding_receiver_cannot_hang_or_crash_the_sender(root: str) -> None:
    """Region memory and queue capacity bound what a receiver that keeps every object holds:
    the sender then gets OutOfMemoryError / QueueFull within its timeout."""
    region = shmkit.Region.create("small", 16 << 20, root=root)
    try:
        q = shmkit.MsgQueue.create(region, "q", 1000)
        kept = []
        errors: list[BaseException] = []
        for _ in range(100):
            try:
                q.put_obj(np.ones(1 << 20, np.uint8), timeout=0.05)
            except (shmkit.OutOfMemoryError, shmkit.QueueFull) as e:
                errors.append(e)
                break
            kept.append(q.get_obj())
        assert errors and isinstance(errors[0], shmkit.OutOfMemoryError), errors
        assert 1 <= len(kept) < 16
        kept.clear()
        gc.collect()
        q.put_obj(np.ones(1 << 20, np.uint8), timeout=1)  # memory is back
        assert q.get_obj().nbytes == 1 << 20
        # capacity: a receiver that never takes anything
        small = shmkit.MsgQueue.create(region, "q2", 4)
        for i in range(4):
            small.put_obj(i)
        with pytest.raises(shmkit.QueueFull):
            small.put_obj(4, timeout=0.05)
    finally:
        region.unlink()
        region.close()


# ---------------------------------------------------------------------- processes


def make_obj(rng: random.Random, who: int, i: int) -> Any:
    r = rng.random()
    tag = (who, i)
    if r < 0.3:
        return {"tag": tag, "v": rng.random(), "s": "x" * rng.randrange(100)}
    if r < 0.5:
        n = rng.choice((0, 1, 100, 5000, 70_000, 1 << 20))
        return (tag, rng.randbytes(n))
    dtype = rng.choice((np.uint8, np.int32, np.float64))
    n = rng.choice((1, 100, 10_000, 300_000))
    arr = np.frombuffer(rng.randbytes(n * np.dtype(dtype).itemsize), dtype)
    return {"tag": tag, "arr": arr, "crc": zlib.crc32(arr.tobytes())}


def check_obj(o: Any) -> tuple[int, int]:
    if isinstance(o, tuple):
        return tuple(o[0])  # type: ignore[return-value]
    if "arr" in o:
        assert zlib.crc32(o["arr"].tobytes()) == o["crc"], f"array of {o['tag']} damaged"
    return tuple(o["tag"])  # type: ignore[return-value]


def _produce(q: shmkit.MsgQueue, who: int, count: int, s: int) -> None:
    rng = random.Random(s * 1000 + who)
    for i in range(count):
        q.put_obj(make_obj(rng, who, i), timeout=60)


@pytest.mark.parametrize("method", METHODS)
def test_processes_mixed_objects_in_order(region: shmkit.Region, method: str, seed: int) -> None:
    s = seed
    q = shmkit.MsgQueue.create(region, "q", 32)
    ctx = mp.get_context(method)
    producers = [ctx.Process(target=_produce, args=(q, w, 60, s)) for w in range(2)]
    for p in producers:
        p.start()
    last = {0: -1, 1: -1}
    held = []
    for _ in range(120):
        o = q.get_obj(timeout=60)
        who, i = check_obj(o)
        assert i == last[who] + 1, f"producer {who}: {i} after {last[who]}"
        last[who] = i
        if len(held) < 8:
            held.append(o)  # some kept past the senders' exit
    for p in producers:
        p.join(60)
        assert p.exitcode == 0
    for o in held:
        check_obj(o)
    del held, o
    gc.collect()
    assert q.stats()["in_use"] == 0


SENDER = """
import sys, numpy as np, shmkit
q = shmkit.MsgQueue.open(shmkit.Region.open("obj", root=sys.argv[1]), "q")
mode = sys.argv[2]
if mode == "send":
    for i in range(4):
        q.put_obj({"i": i, "a": np.full(1 << 18, i, np.int32)})
    print("sent", flush=True)
elif mode == "reserve":
    slot = q.reserve_obj(8 << 20)
    slot.array(8 << 20)[:] = 1
    print("holding", flush=True)
    sys.stdin.read()
elif mode == "hold":
    kept = [q.get_obj() for _ in range(3)]
    assert all(o["a"][0] == o["i"] for o in kept)
    print("holding", flush=True)
    sys.stdin.read()
"""


def test_receiver_keeps_views_past_the_senders_exit(region: shmkit.Region, root: str) -> None:
    q = shmkit.MsgQueue.create(region, "q", 8)
    finish(python(SENDER, root, "send"))
    got = [q.get_obj(timeout=10) for _ in range(4)]
    for i, o in enumerate(got):
        assert o["i"] == i and int(o["a"].sum()) == i * (1 << 18)
        assert in_region(region, o["a"])
    assert q.stats()["in_use"] == 4
    del got, o
    gc.collect()
    assert q.stats()["in_use"] == 0


def test_sender_killed_while_building_in_place_leaks_nothing(
    region: shmkit.Region, root: str
) -> None:
    q = shmkit.MsgQueue.create(region, "q", 8)
    q.put_obj("before")  # (small: in its element of the queue, not in the pool)
    victim = python(SENDER, root, "reserve")
    wait_line(victim, "holding", stream="stdout")
    assert q.stats()["in_use"] == 1
    kill9(victim)
    r = q.gc()
    assert r["dead"] == 1, r
    assert q.get_obj() == "before"
    assert q.stats()["in_use"] == 0


def test_receiver_killed_holding_arrays_leaks_nothing(region: shmkit.Region, root: str) -> None:
    q = shmkit.MsgQueue.create(region, "q", 8)
    for i in range(4):
        q.put_obj({"i": i, "a": np.full(1 << 18, i, np.int32)})
    victim = python(SENDER, root, "hold")
    wait_line(victim, "holding", stream="stdout")
    assert q.stats()["in_use"] == 4
    kill9(victim)
    r = q.gc()
    assert r["dead"] == 3, r
    last = q.get_obj()  # survivors lose nothing
    assert last["i"] == 3 and int(last["a"][0]) == 3
    del last
    gc.collect()
    assert q.stats()["in_use"] == 0
