"""The message-definition layer: round trips, CRCs, and hostile bytes."""

from __future__ import annotations

import contextlib
import copy
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shmkit.api import Handle, MessageError, define, struct_type
from shmkit.api.memclnt import BUILTIN_IDS, ControlPing, MemclntCreate, MemclntCreateReply
from shmkit.api.messages import (
    BARE,
    REPLY,
    Message,
    array,
    boolean,
    f64,
    i8,
    i16,
    i32,
    i64,
    string,
    u8,
    u16,
    u32,
    u64,
    vla,
)

Point = struct_type("point", [("x", i32), ("y", i32)])
Everything = define(
    "everything",
    [
        ("a", u8),
        ("b", u16),
        ("c", u32),
        ("d", u64),
        ("e", i8),
        ("f", i16),
        ("g", i32),
        ("h", i64),
        ("r", f64),
        ("flag", boolean),
        ("label", string(16)),
        ("fixed", array(u16, 3)),
        ("where", Point),
        ("corners", array(Point, 2)),
        ("n", u32),
        ("points", vla(Point, "n")),
        ("m", u8),
        ("bytes_", vla(u8, "m")),
    ],
)

ints = {
    "a": st.integers(0, 2**8 - 1),
    "b": st.integers(0, 2**16 - 1),
    "c": st.integers(0, 2**32 - 1),
    "d": st.integers(0, 2**64 - 1),
    "e": st.integers(-(2**7), 2**7 - 1),
    "f": st.integers(-(2**15), 2**15 - 1),
    "g": st.integers(-(2**31), 2**31 - 1),
    "h": st.integers(-(2**63), 2**63 - 1),
}
points = st.builds(Point, x=st.integers(-(2**31), 2**31 - 1), y=st.integers(-(2**31), 2**31 - 1))


@st.composite
def everything(draw: st.DrawFn) -> object:
    pts = draw(st.lists(points, max_size=5))
    raw = draw(st.binary(max_size=20))  # u8 arrays are bytes, as vpp_papi's
    return Everything(
        **{k: draw(v) for k, v in ints.items()},
        r=draw(st.floats(allow_nan=False)),
        flag=draw(st.booleans()),
        label=draw(st.text(st.characters(min_codepoint=1, max_codepoint=0x7F), max_size=16)),
        fixed=draw(st.lists(st.integers(0, 65535), min_size=3, max_size=3)),
        where=draw(points),
        corners=draw(st.lists(points, min_size=2, max_size=2)),
        n=len(pts),
        points=pts,
        m=len(raw),
        bytes_=raw,
        context=draw(st.integers(0, 2**32 - 1)),
        client_index=draw(st.integers(0, 2**32 - 1)),
    )


@settings(max_examples=200)
@given(everything())
def test_round_trip(msg: object) -> None:
    data = msg.encode(77)  # type: ignore[attr-defined]
    assert struct.unpack_from(">H", data)[0] == 77
    back = Everything.decode(data)
    assert back == msg
    assert back.client_index == msg.client_index  # type: ignore[attr-defined]


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_garbage_never_crashes(data: bytes) -> None:
    for t in (Everything, MemclntCreate, MemclntCreateReply, ControlPing):
        with contextlib.suppress(MessageError):
            t.decode(data)


@given(everything(), st.data())
def test_truncation_is_detected(msg: object, data: st.DataObject) -> None:
    wire = msg.encode(1)  # type: ignore[attr-defined]
    cut = data.draw(st.integers(0, len(wire) - 1))
    with pytest.raises(MessageError):
        Everything.decode(wire[:cut])


def test_crc_tracks_the_definition() -> None:
    a = define("thing", [("x", u32)])
    b = define("thing", [("x", u32)])
    c = define("thing", [("x", u64)])
    d = define("thing", [("y", u32)])
    assert a.name_crc() == b.name_crc()
    assert len({a.name_crc(), c.name_crc(), d.name_crc()}) == 3
    assert a.name_crc().startswith("thing_")
    # Nested struct changes change the CRC too.
    p2 = struct_type("point", [("x", i32), ("y", i64)])
    assert define("w", [("p", Point)]).name_crc() != define("w", [("p", p2)]).name_crc()


def test_bad_values_and_definitions() -> None:
    with pytest.raises(MessageError, match="out of range"):
        Everything(a=256).encode(1)
    with pytest.raises(MessageError, match="exceeds"):
        Everything(label="x" * 17).encode(1)
    with pytest.raises(MessageError, match="items"):
        Everything(n=2, points=[Point()]).encode(1)
    with pytest.raises(TypeError):
        Everything(nope=1)
    with pytest.raises(ValueError):
        define("bad", [("v", vla(u8, "missing"))])
    with pytest.raises(ValueError):
        define("bad", [("context", u32)])
    with pytest.raises(ValueError):
        define("bad name", [])
    with pytest.raises(TypeError):
        Point().encode(1)


def test_memclnt_ids_are_vpps() -> None:
    ids = {t._name: i for t, i in BUILTIN_IDS.items()}
    assert {n: ids[n] for n in ("memclnt_create", "memclnt_delete_reply", "get_first_msg_id")} == {
        "memclnt_create": 1,
        "memclnt_delete_reply": 4,
        "get_first_msg_id": 10,
    }
    assert ids["memclnt_keepalive"] == 21 and ids["control_ping_reply"] == 24
    assert ids["get_api_json_reply"] == 28 and ids["memclnt_create_v2"] == 25
    assert sorted(ids.values()) == list(range(1, 29))  # one contiguous block


def test_handles() -> None:
    h = Handle(5, 258)
    assert int(h) == 5 << 8 | 2
    assert Handle.from_int(int(h)) == Handle(5, 2)
    assert h.matches_epoch(2) and not h.matches_epoch(3)
    with pytest.raises(ValueError):
        Handle.from_int(-1)
    with pytest.raises(ValueError):
        int(Handle(1 << 24, 0))


Flat = define(
    "flat",
    [
        *((k, t) for k, t in zip("abcdefgh", (u8, u16, u32, u64, i8, i16, i32, i64), strict=True)),
        ("r", f64),
        ("flag", boolean),
        ("label", string(16)),
    ],
)
labels = st.text(st.characters(min_codepoint=1, exclude_categories=["Cs"]), max_size=16).filter(
    lambda s: len(s.encode()) <= 16
)


@st.composite
def flat(draw: st.DrawFn) -> object:
    return Flat(
        **{k: draw(v) for k, v in ints.items()},
        r=draw(st.floats(allow_nan=False)),
        flag=draw(st.booleans()),
        label=draw(labels),
        context=draw(st.integers(0, 2**32 - 1)),
        client_index=draw(st.integers(0, 2**32 - 1)),
    )


def test_every_message_type_has_the_native_codec() -> None:
    assert Flat._codec is not None and Flat._codec.size == len(Flat().encode(1))
    assert Flat._codec.fixed and ControlPing._codec is not None
    # Arrays, nested structs, variable-length arrays: the same codec (size: the least).
    assert Everything._codec is not None and not Everything._codec.fixed
    assert Everything._codec.size == len(Everything().encode(1))
    assert Point._codec is None  # a struct type is not a message


@settings(max_examples=300)
@given(flat(), st.integers(0, 2**16 - 1))
def test_native_codec_matches_the_python_codec(msg: object, msg_id: int) -> None:
    codec = Flat._codec
    assert codec is not None
    wire = msg.encode(msg_id)  # type: ignore[attr-defined]
    assert codec.encode(msg, msg_id) == wire
    back = codec.decode(wire)
    assert type(back) is Flat and back == msg and back.client_index == msg.client_index  # type: ignore[attr-defined]
    assert codec.decode(wire + b"extra") == msg  # as struct.unpack_from: extra bytes ignored


@settings(max_examples=300)
@given(st.binary(max_size=120))
def test_native_decode_of_garbage_agrees_with_python(data: bytes) -> None:
    codec = Flat._codec
    assert codec is not None
    try:
        expected = Flat.decode(data)
    except MessageError:
        with pytest.raises(ValueError):
            codec.decode(data)
    else:
        assert codec.decode(data) == expected


def test_native_codec_refuses_what_python_refuses() -> None:
    codec = Flat._codec
    assert codec is not None
    for bad in ({"a": 256}, {"e": -129}, {"d": -1}, {"label": "x" * 17}, {"c": 1.5}, {"a": "1"}):
        msg = Flat(**bad)
        with pytest.raises(MessageError):
            msg.encode(1)
        with pytest.raises((ValueError, TypeError, OverflowError)):
            codec.encode(msg, 1)
    with pytest.raises(ValueError, match="UTF-8"):
        codec.decode(Flat(label=b"\xff\xfe").encode(1))
    with pytest.raises(MessageError, match="UTF-8"):
        Flat.decode(Flat(label=b"\xff\xfe").encode(1))
    with pytest.raises(TypeError):
        codec.encode(ControlPing(), 1)
    with pytest.raises(MessageError, match="UTF-8"):
        Flat(label="\ud800").encode(1)  # a lone surrogate cannot be encoded
    # What the Python codec coerces, the native one does too.
    coerced = Flat(flag=3, r=2, label=b"raw")
    assert codec.encode(coerced, 9) == coerced.encode(9)


def test_construction() -> None:
    """Types are built natively (their __new__): defaults, fresh mutable ones, errors."""
    a, b = Everything(), Everything()
    a.points.append(Point(x=1, y=2))
    assert b.points == [] and a.where is not b.where and a.where == Point()
    assert (a.client_index, a.context, a.label, a.bytes_) == (0, 0, "", b"")
    with pytest.raises(TypeError, match=r"has no field.*nope"):
        Everything(a=1, nope=2)
    with pytest.raises(TypeError):
        Everything(1)  # type: ignore[call-arg]
    msg = Everything(a=3, label="x", points=[Point(x=1)], n=1, context=4)
    assert copy.copy(msg) == msg and copy.deepcopy(msg) == msg
    assert copy.deepcopy(msg).context == 4


FlatReply = define(
    "flat_reply", [("retval", i32), ("client_index", u32), ("s", string(8))], header=REPLY
)
FlatBare = define("flat_bare", [("v", u16), ("r", f64)], header=BARE)


@settings(max_examples=200)
@given(st.integers(-(2**31), 2**31 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_other_header_kinds(retval: int, ci: int, ctx: int) -> None:
    """Types with VPP's other headers have the same native codec, with their own header."""
    assert FlatReply._codec is not None and FlatBare._codec is not None
    msg = FlatReply(retval=retval, client_index=ci, s="ab", context=ctx)
    wire = msg.encode(9)
    assert wire == struct.pack(">HIiI8s", 9, ctx, retval, ci, b"ab")
    assert wire == FlatReply._codec.encode(msg, 9)
    for back in (FlatReply.decode(wire), Message.decode.__func__(FlatReply, wire)):  # type: ignore[attr-defined]
        assert back == msg and back.client_index == ci and back.context == ctx
    bare = FlatBare(v=ci & 0xFFFF, r=retval / 3)
    assert bare.encode(1) == struct.pack(">HH", 1, ci & 0xFFFF) + struct.pack("=d", retval / 3)
    back = FlatBare.decode(bare.encode(1))
    assert back == bare and (back.context, back.client_index) == (0, 0)
    with pytest.raises(MessageError):
        FlatReply.decode(wire[:-1])
