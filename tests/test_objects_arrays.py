"""Small numpy arrays through ``put_obj``/``get_obj``: an array of at most 4 KiB on its own
goes as its bytes (``shmkit._arrays``), small buffers inside other objects go inside the pickle
stream, and either way the receiver gets a private copy equal to what was sent (dtype, shape,
order, writability). Arrays that cannot go as bytes go by pickle as before; hostile array
messages give ``CorruptionError`` and the queue goes on; a real process sends them."""

from __future__ import annotations

import gc
import os
import pickle
import random
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import shmkit
from procs import finish, python
from shmkit import _arrays, _objects
from test_objects import in_region

SMALL = _objects.IN_BAND_MAX


@pytest.fixture
def region(root: str) -> Iterator[shmkit.Region]:
    r = shmkit.Region.create("arr", 64 << 20, root=root)
    yield r
    r.unlink()
    r.close()


def small_arrays() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    ro = np.arange(6, dtype=np.int16)
    ro.flags.writeable = False
    return [
        np.full(1024, 7, np.uint8),
        rng.random((16, 8)),  # float64, C order
        np.asfortranarray(rng.random((8, 16)).astype(np.float32)),
        np.array(3.5),  # 0-d
        np.zeros((0, 5), np.int64),
        np.array([True, False, True]),
        np.arange(4, dtype=">i4"),  # big-endian
        np.array([1 + 2j, 3 - 4j], np.complex128),
        np.array(["2024-01-01T00:00", "NaT"], "datetime64[ns]"),
        np.array([1, 2], "timedelta64[s]"),
        np.array(["ab", "cde"], "U3"),
        np.array([b"x", b"yz"], "S2"),
        np.arange(SMALL, dtype=np.uint8),  # exactly the limit
        np.ones((2, 3, 4, 5), np.float16),
        ro,
    ]


def same(got: Any, sent: np.ndarray) -> None:
    assert type(got) is np.ndarray
    assert got.dtype == sent.dtype and got.shape == sent.shape
    np.testing.assert_array_equal(got, sent)
    assert got.flags.writeable == sent.flags.writeable
    if sent.ndim > 1 and sent.flags.f_contiguous and not sent.flags.c_contiguous:
        assert got.flags.f_contiguous


def test_small_arrays_travel_as_their_bytes(region: shmkit.Region) -> None:
    q = shmkit.MsgQueue.create(region, "q", 64)
    sent = small_arrays()
    for a in sent:
        msg = _arrays.message(a, SMALL)
        assert msg is not None and msg[:4] == _arrays.MAGIC, a.dtype
        q.put_obj(a)
    for a in sent:
        got = q.get_obj()
        same(got, a)
        assert not in_region(region, got), "a small array is the receiver's own copy"
        if got.flags.writeable:
            got[...] = 0  # its own: the sender's is untouched
    assert sent[0][0] == 7
    gc.collect()
    assert q.stats()["in_use"] == 0


class Sub(np.ndarray):
    pass


def test_other_arrays_go_by_pickle_and_arrive_the_same(region: shmkit.Region) -> None:
    q = shmkit.MsgQueue.create(region, "q", 64)
    others: list[Any] = [
        np.array([{"a": 1}, None], dtype=object),
        np.zeros(3, dtype=[("x", "<i4"), ("y", "<f8")]),
        np.arange(20)[::2],  # not contiguous
        np.arange(5).view(Sub),
        np.zeros(2, np.dtype("<i8", metadata={"unit": "m"})),
        np.arange(SMALL + 1, dtype=np.uint8),  # one byte too many: zero copy instead
    ]
    for a in others:
        assert _arrays.message(a, SMALL) is None
        q.put_obj(a)
    got = [q.get_obj() for _ in others]
    assert got[0].tolist() == [{"a": 1}, None]
    assert got[1].dtype.names == ("x", "y")
    assert got[2].tolist() == list(range(0, 20, 2))
    assert type(got[3]) is Sub and got[3].tolist() == [0, 1, 2, 3, 4]
    assert got[4].dtype.metadata == {"unit": "m"}
    assert in_region(region, got[5]), "an array above the limit keeps the zero-copy path"
    del got
    gc.collect()
    assert q.stats()["in_use"] == 0


def test_small_buffers_inside_objects_go_in_the_stream(region: shmkit.Region) -> None:
    q = shmkit.MsgQueue.create(region, "q", 16)
    small, big = np.arange(100.0), np.arange(1 << 16, dtype=np.float64)
    q.put_obj({"small": small, "big": big, "tag": "t"})
    got = q.get_obj()
    same(got["small"], small)
    same(got["big"], big)
    assert not in_region(region, got["small"]) and in_region(region, got["big"])
    pbs: list[Any] = []
    stream = pickle.dumps(small, 5, buffer_callback=_objects.in_band_if_small(pbs))
    assert not pbs and len(stream) > small.nbytes
    del got
    gc.collect()
    assert q.stats()["in_use"] == 0


def array_message(
    dtype: bytes = b"<i4", shape: tuple[int, ...] = (3,), flags: int = 0, data: bytes | None = None
) -> bytes:
    head = _arrays.HEAD.pack(_arrays.MAGIC, flags, len(shape), len(dtype))
    body = struct.pack(f"<{len(shape)}Q", *shape) + dtype
    return head + body + (bytes(12) if data is None else data)


def test_hostile_array_messages_give_errors_and_the_queue_goes_on(region: shmkit.Region) -> None:
    q = shmkit.MsgQueue.create(region, "q", 16)
    bad = [
        _arrays.MAGIC,  # no header
        array_message()[:9],  # cut in the shape
        array_message(flags=4),  # unknown flag
        _arrays.HEAD.pack(_arrays.MAGIC, 0, 65, 3) + bytes(600),  # too many dimensions
        array_message(dtype=b"O"),  # objects
        array_message(dtype=b"|V4"),  # records
        array_message(dtype=b"i4,f8", data=bytes(12)),  # structured
        array_message(dtype=b"(2,)i4", data=bytes(24)),  # sub-array
        array_message(dtype=b"S0", data=b""),  # no itemsize
        array_message(dtype=b"nonsense"),
        array_message(dtype=b"\xff\xfe"),  # not ASCII
        array_message(data=bytes(11)),  # one byte short
        array_message(data=bytes(13)),  # one byte over
        array_message(shape=(1 << 62, 4), data=b""),  # elements the bytes do not hold
        array_message(shape=(0, 1 << 63), data=b""),  # a dimension numpy cannot index
    ]
    for b in bad:
        q.put(b)
        with pytest.raises(shmkit.CorruptionError):
            q.get_obj()
    q.put(array_message(flags=_arrays.READONLY, data=struct.pack("<3i", 1, 2, 3)))
    got = q.get_obj()
    assert got.tolist() == [1, 2, 3] and not got.flags.writeable
    q.put_obj(np.arange(3))
    assert q.get_obj().tolist() == [0, 1, 2]
    gc.collect()
    assert q.stats()["in_use"] == 0


def test_random_array_header_damage_never_escapes() -> None:
    """Random bytes in an array message's header, shape and dtype name: a clear error or an
    array made of the bytes sent, never more."""
    seed = int(os.environ.get("SHMKIT_SEED", random.randrange(1 << 32)))
    print(f"SHMKIT_SEED={seed}")
    rng = random.Random(seed)
    good = _arrays.message(np.arange(24, dtype=np.int32).reshape(2, 3, 4), SMALL)
    assert good is not None
    header = _arrays.HEAD.size + 3 * 8 + 3
    built = 0
    for _ in range(3000):
        block = bytearray(good)
        for _ in range(rng.randint(1, 3)):
            block[rng.randrange(header)] = rng.choice((0, 1, 2, 0x7F, 0xFF, rng.randrange(256)))
        try:
            got = _arrays.load(memoryview(block))
        except shmkit.CorruptionError:
            continue
        built += 1
        assert got.nbytes <= len(block) - _arrays.HEAD.size
    assert built > 0  # some damage leaves a valid array (a changed shape of as many bytes)


SENDER = """
import sys, numpy as np, shmkit
q = shmkit.MsgQueue.open(shmkit.Region.open("arr", root=sys.argv[1]), "q")
for i in range(200):
    a = np.full((i % 7 + 1, 64), i, np.int64 if i % 2 else np.float32)
    q.put_obj(a if i % 3 else np.asfortranarray(a), timeout=60)
print("sent", flush=True)
"""


def test_a_process_sends_small_arrays(region: shmkit.Region, root: str) -> None:
    q = shmkit.MsgQueue.create(region, "q", 16)
    p = python(SENDER, root)
    for i in range(200):
        a = q.get_obj(timeout=60)
        assert a.shape == (i % 7 + 1, 64) and a.dtype == (np.int64 if i % 2 else np.float32)
        assert (a == i).all() and a.flags.writeable
        if i % 3 == 0 and a.shape[0] > 1:
            assert a.flags.f_contiguous and not a.flags.c_contiguous
        else:
            assert a.flags.c_contiguous
    assert "sent" in finish(p)
    gc.collect()
    assert q.stats()["in_use"] == 0
