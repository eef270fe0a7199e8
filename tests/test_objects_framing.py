"""The pickle-5 message layout of ``put_obj``/``get_obj`` (``shmkit._objects``), in a private
block: round trips of every kind of object, out-of-band buffers as views of the block, and
hostile headers (every offset and length checked, never a view out of the block)."""

from __future__ import annotations

import os
import pickle
import random
import struct
from typing import Any

import numpy as np
import pytest
from shmkit import CorruptionError, _objects


def roundtrip(obj: Any, *, writable: bool = True) -> tuple[Any, memoryview]:
    msg = _objects.frame(obj)
    block = memoryview(bytearray(_objects.size_of(msg)))
    _objects.write(msg, block)
    return _objects.load(block, writable=writable), block


@pytest.mark.parametrize(
    "obj",
    [
        None,
        0,
        "text",
        b"",
        b"x" * 100_000,
        bytearray(b"abc"),
        {"a": 1, "b": [1.5, "two", (3,)], "c": {"d": None}},
        list(range(1000)),
    ],
)
def test_roundtrip_plain(obj: Any) -> None:
    got, block = roundtrip(obj)
    assert got == obj and type(got) is type(obj)
    assert block[0] == 0x80, "an object without out-of-band buffers is a plain pickle stream"


def test_bytes_alone_are_a_valid_pickle_stream() -> None:
    for data in (b"", b"abc", bytes(range(256)) * 300, bytearray(b"zz")):
        msg = _objects.frame(data)
        block = bytearray(_objects.size_of(msg))
        _objects.write(msg, memoryview(block))
        assert pickle.loads(block) == data and type(pickle.loads(block)) is type(data)


def test_arrays_are_views_of_the_block() -> None:
    a = np.arange(1000, dtype=np.float64)
    f = np.asfortranarray(np.arange(12, dtype=np.int32).reshape(3, 4))
    got, block = roundtrip({"a": a, "f": f, "n": 7})
    assert got["n"] == 7
    np.testing.assert_array_equal(got["a"], a)
    np.testing.assert_array_equal(got["f"], f)
    assert got["f"].flags.f_contiguous
    base = np.frombuffer(block, dtype=np.uint8).ctypes.data
    for arr in (got["a"], got["f"]):
        start = arr.ctypes.data - base
        assert 0 < start < len(block), "the array does not lie in the block (a copy)"
        assert start % _objects.ALIGN == 0
    got["a"][0] = 42.0  # writable where the sender's was
    assert struct.unpack_from("<d", block, got["a"].ctypes.data - base)[0] == 42.0


def test_readonly_stays_readonly() -> None:
    a = np.arange(10)
    a.flags.writeable = False
    got, _ = roundtrip(a)
    assert not got.flags.writeable
    got, _ = roundtrip(np.arange(10), writable=False)
    assert not got.flags.writeable


def test_memoryviews_travel_as_views() -> None:
    src = memoryview(bytearray(range(48))).cast("d")
    got, _ = roundtrip({"m": src, "r": memoryview(b"read only")})
    assert got["m"].format == "d" and got["m"].tolist() == src.tolist()
    assert got["r"].readonly and bytes(got["r"]) == b"read only"
    assert got["m"].obj is not None


def test_non_contiguous_goes_in_band() -> None:
    a = np.arange(20)[::2]
    got, block = roundtrip(a)
    np.testing.assert_array_equal(got, a)
    assert block[0] == 0x80


def framed_block(nbufs: int = 2) -> bytearray:
    msg = _objects.frame([np.arange(8, dtype=np.uint8) for _ in range(nbufs)])
    assert isinstance(msg, _objects.Framed)
    block = bytearray(msg.size)
    _objects.write(msg, memoryview(block))
    return block


H = _objects.HEADER
E = _objects.ENTRY


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b.__setitem__(slice(0, 4), b"XXXX"),
        lambda b: struct.pack_into("<I", b, 8, 0xFFFFFFFF),  # nbufs
        lambda b: struct.pack_into("<Q", b, 16, 1 << 63),  # pickle_len
        lambda b: struct.pack_into("<Q", b, H.size, len(b)),  # offset at the end, length 8
        lambda b: struct.pack_into("<Q", b, H.size + 8, 1 << 64 - 1),  # length
        lambda b: struct.pack_into("<Q", b, H.size, 0),  # offset inside the header
    ],
)
def test_hostile_headers_raise_corruption(damage: Any) -> None:
    block = framed_block()
    damage(block)
    with pytest.raises(CorruptionError):
        _objects.load(memoryview(block))


def test_short_and_empty_blocks() -> None:
    with pytest.raises(CorruptionError):
        _objects.load(memoryview(b""))
    with pytest.raises(CorruptionError):
        _objects.load(memoryview(b"SKO5"))


def test_random_header_damage_never_escapes() -> None:
    """Random bytes in the header and buffer table (what the layout decides): a clear error or
    an object built on bytes of the block, never a view outside it. (The pickle stream itself
    is not fuzzed: unpickling hostile bytes runs what they name, for every pickle user; the
    module says who may send objects.)"""
    seed = int(os.environ.get("SHMKIT_SEED", random.randrange(1 << 32)))
    print(f"SHMKIT_SEED={seed}")
    rng = random.Random(seed)
    good = framed_block(3)
    table_end = H.size + 3 * E.size
    for _ in range(3000):
        block = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(table_end)
            block[i] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        try:
            got = _objects.load(memoryview(block))
        except CorruptionError:
            continue
        except (pickle.UnpicklingError, EOFError, ValueError):
            continue  # the stream cut short by a smaller pickle_len; too few buffers
        assert isinstance(got, list) and len(got) == 3
        for arr in got:
            assert arr.nbytes <= len(block)
