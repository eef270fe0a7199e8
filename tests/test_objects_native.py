"""``put_obj``/``get_obj`` of plain data in shmkit's native format (no pickle), with real
processes: values come back type-exact (bools stay bools, floats keep their bits, dicts their
order); everything the format does not carry (subclasses, sets, big ints, shared or cyclic
containers, deep nesting, big buffers) goes by pickle and comes back as pickle gives it;
native, pickled and framed messages share one queue in order; hostile native messages raise
``CorruptionError``, are freed, and the queue goes on."""

from __future__ import annotations

import collections
import enum
import gc
import multiprocessing as mp
import pickle
import random
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import shmkit

NATIVE = 0xB7
END = "--end of the objects--"


@pytest.fixture
def region(root: str) -> Iterator[shmkit.Region]:
    r = shmkit.Region.create("native", 64 << 20, root=root)
    yield r
    r.unlink()
    r.close()


def float_bits(x: float) -> int:
    return int(struct.unpack("<Q", struct.pack("<d", x))[0])


def nan(payload: int) -> float:
    return float(struct.unpack("<d", struct.pack("<Q", 0x7FF0_0000_0000_0000 | payload))[0])


def same(a: Any, b: Any) -> bool:
    """Equal and of exactly the same types all the way down (floats bit for bit, dicts in
    order)."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return float_bits(a) == float_bits(b)
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if type(a) is dict:
        return len(a) == len(b) and all(
            same(k1, k2) and same(v1, v2) for (k1, v1), (k2, v2) in zip(a.items(), b.items())
        )
    return bool(a == b)


def nested(depth: int) -> list[Any]:
    v: list[Any] = []
    for _ in range(depth - 1):
        v = [v]
    return v


PLAIN: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    255,
    -(2**63),
    2**63 - 1,
    1.0,
    0.0,
    -0.0,
    float("inf"),
    float("-inf"),
    float("nan"),
    nan(0xABCDEF),  # a quiet NaN with a payload
    nan(1),  # a signalling NaN
    "",
    "ascii",
    "h\u00e9llo w\u00f6rld",
    "\U0001f600 \u4e2d\u6587",
    "k" * 40,  # longer than the string cache keeps
    "\x00",
    b"",
    b"\x00\xff" * 10,
    bytes(16 << 10),  # the largest bytes the format carries
    bytearray(b"mutable"),
    bytearray(),
    (),
    [],
    {},
    (1,),
    [[]],
    ((), [], {}),
    {"z": 1, "a": 2, "m": 3},  # insertion order, not sorted
    {1: "int", 1.5: "float", None: "none", False: "bool", b"k": "bytes", (1, "t"): "tuple"},
    {"a": {"b": [1, (2, 3.5)], "c": [None, True, {"d": b"x"}]}},
    [1, 1.0, True, "1", b"1"],
    {
        "seq": 7,
        "name": "sensor-7",
        "value": 21.5,
        "unit": "C",
        "ok": True,
        "count": 12345,
        "tags": ("a", "b"),
        "ts": 1700000000.25,
        "source": None,
        "flags": 3,
    },
    nested(64),  # the deepest the format carries
    [list(range(100)), {str(i): i for i in range(300)}],
]


class Sub(dict):  # type: ignore[type-arg]
    pass


class Color(enum.IntEnum):
    RED = 1


class Text(str):
    pass


def _shared() -> Any:
    part = [1, 2]
    return {"x": part, "y": part}


def _cycle() -> Any:
    v: list[Any] = [1]
    v.append(v)
    return v


def _shared_bytearray() -> Any:
    b = bytearray(b"one")
    return (b, b)


def _shared_in_tuple() -> Any:
    part: list[Any] = []
    return (part, (part,))


FALLBACK: list[Any] = [
    Sub(a=1),
    Color.RED,
    [1, Color.RED],
    Text("sub"),
    {1, 2},
    frozenset({3}),
    {"set inside": {1}},
    2**63,
    -(2**63) - 1,
    [2**100],
    "\udc80 lone surrogate",
    {"k": "\ud800"},
    nested(65),
    bytes((16 << 10) + 1),
    [bytearray((16 << 10) + 1)],
    collections.OrderedDict(a=1),
    complex(1, 2),
    _shared(),
    _cycle(),
    _shared_bytearray(),
    _shared_in_tuple(),
]


def _echo(qin: shmkit.MsgQueue, qout: shmkit.MsgQueue) -> None:
    while True:
        o = qin.get_obj(timeout=60)
        qout.put_obj(o, timeout=60)
        if o == END:
            return


def echoed(region: shmkit.Region, objs: list[Any]) -> list[Any]:
    """``objs`` sent to a spawned process and back (``put_obj``/``get_obj`` both ways)."""
    qin = shmkit.MsgQueue.create(region, "to-child", 16)
    qout = shmkit.MsgQueue.create(region, "to-parent", 16)
    child = mp.get_context("spawn").Process(target=_echo, args=(qin, qout))
    child.start()
    try:
        got = []
        for o in [*objs, END]:
            qin.put_obj(o, timeout=60)
            got.append(qout.get_obj(timeout=60))
        assert got.pop() == END
    finally:
        child.join(60)
    assert child.exitcode == 0
    return got


def wire(q: shmkit.MsgQueue, obj: Any) -> bytes:
    """The message ``put_obj(obj)`` writes."""
    q.put_obj(obj)
    return q.get()


def test_plain_data_is_sent_natively(region: shmkit.Region) -> None:
    q = shmkit.MsgQueue.create(region, "q", 8)
    for o in PLAIN:
        assert wire(q, o)[:2] == bytes([NATIVE, 1]), f"{o!r:.60} was not sent natively"
    for o in FALLBACK:
        msg = wire(q, o)
        assert msg[0] == 0x80 or msg[:4] == b"SKO5", f"{o!r:.60} was sent natively"
    msg = wire(q, {"seq": 1, "name": "sensor-7"})
    assert len(msg) < len(pickle.dumps({"seq": 1, "name": "sensor-7"}, 5))


def test_plain_data_round_trips_exactly_between_processes(region: shmkit.Region) -> None:
    got = echoed(region, PLAIN)
    for o, g in zip(PLAIN, got):
        assert same(o, g), f"{o!r:.80} came back as {g!r:.80}"


def test_what_the_format_does_not_carry_comes_back_as_pickle_gives_it(
    region: shmkit.Region,
) -> None:
    got = echoed(region, FALLBACK)
    for o, g in zip(FALLBACK, got):
        assert pickle.dumps(g, 5) == pickle.dumps(o, 5), f"{o!r:.80} came back as {g!r:.80}"
    shared, cycle, shared_ba, in_tuple = got[-4:]
    assert shared["x"] is shared["y"]
    assert cycle[1] is cycle
    assert shared_ba[0] is shared_ba[1]
    assert in_tuple[0] is in_tuple[1][0]
    assert type(got[0]) is Sub and type(got[1]) is Color and type(got[3]) is Text


def random_plain(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["none", "bool", "int", "float", "str", "bytes", "bytearray"]
    if depth < 5:
        kinds += ["tuple", "list", "dict"] * 2
    kind = rng.choice(kinds)
    if kind == "none":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.choice([rng.randrange(-300, 300), rng.randrange(-(2**63), 2**63)])
    if kind == "float":
        return float(struct.unpack("<d", rng.randbytes(8))[0])  # any bits, NaNs too
    if kind == "str":
        return "".join(
            chr(rng.choice([rng.randrange(32, 127), rng.randrange(0xA0, 0xD7FF)]))
            for _ in range(rng.randrange(40))
        )
    if kind == "bytes":
        return rng.randbytes(rng.randrange(50))
    if kind == "bytearray":
        return bytearray(rng.randbytes(rng.randrange(50)))
    n = rng.randrange(6)
    if kind == "tuple":
        return tuple(random_plain(rng, depth + 1) for _ in range(n))
    if kind == "list":
        return [random_plain(rng, depth + 1) for _ in range(n)]
    keys = [
        rng.choice([rng.randrange(100), f"k{rng.randrange(1000)}", rng.random(), None])
        for _ in range(n)
    ]
    return {k: random_plain(rng, depth + 1) for k in keys}


def test_random_plain_data_round_trips_exactly(region: shmkit.Region, seed: int) -> None:
    rng = random.Random(seed)
    objs = [random_plain(rng) for _ in range(300)]
    for o, g in zip(objs, echoed(region, objs)):
        assert same(o, g), f"{o!r:.80} came back as {g!r:.80}"


def test_many_distinct_keys_and_strings(region: shmkit.Region) -> None:
    """More distinct short strings than the receiver's string cache has slots: each
    arrives right (a slot holds the last string that hashed to it)."""
    q = shmkit.MsgQueue.create(region, "q", 64)
    for round_ in range(3):
        for i in range(0, 2000, 40):
            batch = [{f"key{j}": f"v{j}-{round_}", str(j): j} for j in range(i, i + 40)]
            for o in batch:
                q.put_obj(o)
            for o in batch:
                g = q.get_obj()
                assert same(o, g)


def _produce_mixed(q: shmkit.MsgQueue, n: int) -> None:
    for i in range(n):
        kind = i % 4
        if kind == 0:
            q.put_obj({"i": i, "native": True}, timeout=60)
        elif kind == 1:
            q.put_obj({"i": i, "pickled": {i}}, timeout=60)
        elif kind == 2:
            q.put_obj({"i": i, "framed": np.full(5000, i, np.int64)}, timeout=60)
        else:
            q.put_obj([i, Sub(n=i)], timeout=60)


def test_native_pickled_and_framed_messages_in_one_queue_in_order(
    region: shmkit.Region,
) -> None:
    q = shmkit.MsgQueue.create(region, "q", 8)
    p = mp.get_context("spawn").Process(target=_produce_mixed, args=(q, 200))
    p.start()
    for i in range(200):
        o = q.get_obj(timeout=60)
        kind = i % 4
        if kind == 0:
            assert same(o, {"i": i, "native": True})
        elif kind == 1:
            assert o == {"i": i, "pickled": {i}}
        elif kind == 2:
            assert o["i"] == i and (o["framed"] == i).all() and o["framed"].size == 5000
        else:
            assert o[0] == i and type(o[1]) is Sub and o[1] == {"n": i}
        del o
    p.join(60)
    assert p.exitcode == 0
    gc.collect()
    assert q.stats()["in_use"] == 0


def varint(n: int) -> bytes:
    out = b""
    while n >= 0x80:
        out += bytes([n & 0x7F | 0x80])
        n >>= 7
    return out + bytes([n])


def test_hostile_native_messages_raise_corruption_and_are_freed(
    region: shmkit.Region,
) -> None:
    q = shmkit.MsgQueue.create(region, "q", 16)
    head = bytes([NATIVE, 1])
    key = b"\x05\x01k"
    bad = [
        bytes([NATIVE]),  # no version
        bytes([NATIVE, 2, 0]),  # a version this build does not read
        head,  # no value
        head + b"\x05\x05ab",  # a str longer than the message
        head + b"\x05\x02\xc3\x28",  # not UTF-8
        head + b"\x05\x03\xed\xa0\x80",  # an encoded surrogate
        head + b"\x09" + varint(2**62) + b"\x00",  # a count far beyond the message
        head + b"\x0a\x01\x09\x00\x00",  # a list as a dict key
        head + b"\x0a\x01\x08\x01\x09\x00\x00",  # a tuple holding a list as a key
        head + b"\x0a\x02" + key + b"\x00" + key + b"\x01",  # a key twice
        head + b"\x03" + b"\xff" * 10 + b"\x01",  # a varint beyond 64 bits
        head + b"\x04\x00\x00",  # a float cut short
        head + b"\x0b",  # an unknown tag
        head + b"\x00\x00",  # bytes after the value
        head + b"\x09\x01" * 65 + b"\x00",  # nested deeper than 64
        head + b"\x09\x01" * 100_000 + b"\x00",  # much deeper
    ]
    for b in bad:
        q.put(b)
        with pytest.raises(shmkit.CorruptionError):
            q.get_obj()
        assert q.stats()["in_use"] == 0, f"{b[:20]!r}: the message was not freed"
    q.put_obj({"fine": 1})
    assert q.get_obj() == {"fine": 1}
    assert q.stats()["in_use"] == 0


def test_put_obj_and_get_obj_wait_and_time_out_like_put_and_get(
    region: shmkit.Region,
) -> None:
    q = shmkit.MsgQueue.create(region, "q", 2)
    q.put_obj({"a": 1})
    q.put_obj_nowait((1, 2))
    with pytest.raises(shmkit.QueueFull):
        q.put_obj_nowait("no room")
    with pytest.raises(shmkit.QueueFull):
        q.put_obj([1], timeout=0.01)
    with pytest.raises(ValueError):
        q.put_obj(1, timeout=-1)
    assert q.get_obj_nowait() == {"a": 1}
    assert q.get_obj(timeout=1) == (1, 2)
    with pytest.raises(shmkit.QueueEmpty):
        q.get_obj(timeout=0.01)
    with pytest.raises(shmkit.QueueEmpty):
        q.get_obj_nowait()
    assert q.stats()["in_use"] == 0


def test_dicts_sharing_some_keys_with_those_before(region: shmkit.Region) -> None:
    """The receiver reuses the keys of a dict like one it built before: dicts that share
    only a first key, a prefix, the keys in another order, or nest one another all arrive
    exactly."""
    q = shmkit.MsgQueue.create(region, "q", 64)
    objs: list[Any] = [
        {"a": 1, "b": 2},
        {"a": 1, "b": 2},
        {"a": 3, "c": 4},
        {"a": 5, "b": 6, "c": 7},
        {"b": 1, "a": 2},
        {"a": {"a": 1, "b": 2}, "b": {"a": {"a": 0, "b": None}, "b": 1}},
        {"a": 1, 5: 2},
        {"a": 1, (1, 2): 2},
        {"a": 1, "b" * 40: 2},
        {"a": 1, "b": 2},
        {"a": [{"a": 1, "b": 2}] * 3, "b": ({"a": 1, "b": 2},)},
        {f"k{i}": i for i in range(40)},
        {f"k{i}": i for i in range(40)},
    ]
    for _ in range(2):
        for o in objs:
            q.put_obj(o)
        for o in objs:
            g = q.get_obj()
            assert same(o, g), f"{o!r:.80} came back as {g!r:.80}"
    head = bytes([NATIVE, 1])
    # a dict with the keys of one before up to its second key, then a list as a key
    q.put(head + b"\x0a\x02\x05\x01a\x03\x02\x09\x00\x03\x04")
    with pytest.raises(shmkit.CorruptionError):
        q.get_obj()
    assert q.stats()["in_use"] == 0


def test_the_bare_native_class_sends_plain_data_and_names_the_pickle_path(
    region: shmkit.Region,
) -> None:
    from shmkit import _native

    q = _native.MsgQueue.create(region, "q", 4)
    q.put_obj({"plain": [1, 2.5]})
    assert q.get_obj() == {"plain": [1, 2.5]}
    with pytest.raises(TypeError, match=r"shmkit\.MsgQueue"):
        q.put_obj({1, 2})
    q.put(pickle.dumps({1, 2}, 5))
    with pytest.raises(TypeError, match=r"shmkit\.MsgQueue"):
        q.get_obj()
    gc.collect()
    assert q.stats()["in_use"] == 0
