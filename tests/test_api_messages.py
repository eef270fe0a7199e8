"""The message-definition layer: round trips, CRCs, and hostile bytes."""

from __future__ import annotations

import contextlib
import copy
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shmkit.api import Handle, MessageError, define, struct_type
from shmkit.api.memclnt import BUILTIN_IDS, ControlPing, MemclntCreate, MemclntCreateReply
from shmkit.api.messages import (
    BARE,
    REPLY,
    Message,
    alias,
    array,
    boolean,
    enum_type,
    enumflag_type,
    f64,
    i8,
    i16,
    i32,
    i64,
    string,
    tail,
    u8,
    u16,
    u32,
    u64,
    union_type,
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
    # What the codec coerces (truth values, ints for f64, bytes for strings), both paths do.
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


# ---------------------------------------------------------------- every field kind, natively

Color = enum_type("color", [("red", 1), ("green", 2)], u16)
Flags = enumflag_type("flags", [("a", 1), ("b", 4)], u8)
Addr4 = alias("addr4", array(u8, 4))
Pt = struct_type("pt", [("x", i32), ("c", Color)])
Other = struct_type("other", [("v", u8)])
Un = union_type("un", [("ip4", Addr4), ("pt", Pt)])
Dyn = struct_type("dyn", [("n", u8), ("vals", vla(u16, "n")), ("s", string())])
Kinds = define(
    "kinds",
    [
        ("first", Pt),  # a struct type, then another, then the first again (shared layouts)
        ("o", Other),
        ("pts", array(Pt, 2)),
        ("color", Color),
        ("fl", Flags),
        ("addr", Addr4),
        ("u", Un),
        ("d", Dyn),
        ("n", u32),
        ("items", vla(Pt, "n")),
        ("m", u16),
        ("raw", vla(u8, "m")),
        ("text", string()),
        ("rest", tail(Pt)),
    ],
)


def _kinds() -> Any:
    return Kinds(
        first=Pt(x=-1, c=Color.red),
        o=Other(v=9),
        pts=[Pt(x=2, c=2), Pt(x=3, c=7)],  # 7: a value the enum does not name
        color=Color.green,
        fl=5,
        addr=b"\x0a\x00\x01",  # NUL padded
        u=Un(pt=Pt(x=4, c=1)),
        d=Dyn(n=2, vals=[1, 65535], s="é"),
        n=1,
        items=[Pt(x=5, c=1)],
        m=2,
        raw=b"\xff\x00",
        text="hey",
        rest=[Pt(x=6, c=2), Pt(x=7, c=1)],
        context=3,
        client_index=4,
    )


def test_every_kind_byte_for_byte() -> None:
    msg = _kinds()
    pt = struct.Struct(">iH")
    expected = b"".join(
        [
            struct.pack(">HII", 9, 4, 3),
            pt.pack(-1, 1),
            b"\x09",
            pt.pack(2, 2) + pt.pack(3, 7),
            struct.pack(">HB", 2, 5),
            b"\x0a\x00\x01\x00",
            pt.pack(4, 1),  # the union: as long as its longest member
            struct.pack(">BHHI", 2, 1, 65535, 2) + "é".encode(),
            struct.pack(">I", 1) + pt.pack(5, 1),
            struct.pack(">H", 2) + b"\xff\x00",
            struct.pack(">I", 3) + b"hey",
            pt.pack(6, 2) + pt.pack(7, 1),
        ]
    )
    assert msg.encode(9) == expected
    assert Kinds._codec is not None and Kinds._codec.encode(msg, 9) == expected
    back = Kinds.decode(expected)
    assert back.color is Color.green and back.fl == Flags.a | Flags.b
    assert back.pts[1].c == 7 and type(back.pts[1].c) is int and back.first.c is Color.red
    assert back.addr == b"\x0a\x00\x01\x00" and back.u.pt == Pt(x=4, c=1)
    assert back.u.ip4 == pt.pack(4, 1)[:4] and back.d == Dyn(n=2, vals=[1, 65535], s="é")
    assert back.rest == [Pt(x=6, c=2), Pt(x=7, c=1)] and back.raw == b"\xff\x00"
    msg.addr = b"\x0a\x00\x01\x00"
    assert back == msg and (back.context, back.client_index) == (3, 4)


def test_errors_name_the_field() -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"n": 2}, r"kinds\.items: 1 items but n = 2"),
        ({"pts": [Pt(), 1]}, r"kinds\.pts\[1\]: expected pt, got int"),
        ({"pts": [Pt()]}, r"kinds\.pts: expected 2 items, got 1"),
        ({"d": Dyn(n=1)}, r"kinds\.d\.vals: 0 items but n = 1"),
        ({"items": [Pt(x=2**31)]}, r"kinds\.items\[0\]\.x: 2147483648 out of range for i32"),
        ({"color": 70000}, r"kinds\.color: 70000 out of range for u16"),
        ({"u": 3}, r"kinds\.u: expected a un, got int"),
        ({"addr": b"12345"}, r"kinds\.addr: 5 bytes exceed 4"),
        ({"raw": "text"}, r"kinds\.raw: expected bytes, got str"),
        ({"rest": 5}, r"kinds\.rest: expected a sequence, got 5"),
        ({"text": "\ud800"}, r"kinds\.text: not encodable as UTF-8"),
    ]
    for change, message in cases:
        msg = _kinds()
        for k, v in change.items():
            setattr(msg, k, v)
        with pytest.raises(MessageError, match=message):
            msg.encode(1)
    with pytest.raises(MessageError, match=r"un\.ip4: 5 bytes exceed 4"):
        Un(ip4=b"12345")


def test_hostile_counts_and_lengths() -> None:
    """Counts and lengths from a peer are checked against the bytes before anything is
    allocated: a huge count costs nothing."""
    wire = _kinds().encode(1)
    head = 10 + 6 + 1 + 12 + 3 + 4 + 6 + (1 + 4 + 4 + 2)  # up to the field `n`
    huge = wire[:head] + b"\xff\xff\xff\xff" + wire[head + 4 :]
    with pytest.raises(MessageError, match=r"kinds\.items: truncated"):
        Kinds.decode(huge)
    at_d = 10 + 6 + 1 + 12 + 3 + 4 + 6
    with pytest.raises(MessageError, match=r"kinds\.d\.vals: truncated"):
        Kinds.decode(wire[:at_d] + b"\xff" + wire[at_d + 1 :])
    with pytest.raises(MessageError, match="truncated"):  # a string longer than the bytes
        Kinds.decode(wire[: at_d + 5] + b"\xff\xff\xff\xff" + wire[at_d + 9 :])
    with pytest.raises(MessageError, match=r"kinds\.rest: 11 bytes are not a whole number"):
        Kinds.decode(wire[:-1])
    signed = define("signed_count", [("n", i8), ("v", vla(u8, "n"))])
    with pytest.raises(MessageError, match=r"signed_count\.v: count n = -1 is not a count"):
        signed.decode(struct.pack(">HIIb", 1, 0, 0, -1))
    with pytest.raises(MessageError, match="truncated header"):
        Kinds.decode(b"\x00")
