"""Message definitions for the binary API: typed fields, a CRC per definition, fast packing.

A message type is defined from a name and an ordered list of typed fields::

    from shmkit.api.messages import define, u32, string, array, vla, struct_type

    Counter = struct_type("counter", [("id", u32), ("value", u64)])
    GetCounters = define("get_counters", [("first", u32), ("names", string(32))])
    Counters = define("get_counters_reply", [("retval", i32), ("n", u32),
                                               ("items", vla(Counter, "n"))])

Types: ``u8 u16 u32 u64 i8 i16 i32 i64 f64 boolean``, ``string(n)`` (fixed, NUL padded),
``array(t, n)`` (fixed length), ``vla(t, "len_field")`` (variable length, counted by an
earlier integer field), nested structs from :func:`struct_type`.

Wire format, as VPP's binary API: big-endian, packed. Every message starts with a 10-byte
header: ``u16 msg_id, u32 client_index, u32 context`` (requests name their client handle;
replies and events carry the request's context). The CRC of a message is the CRC-32 of a
canonical text of its definition (name, field names and types, recursively), and
``name_crc`` (e.g. ``control_ping_51077d14``) identifies it in the message table: two sides
that disagree on a definition disagree on its CRC and refuse to exchange it.

Messages without variable-length parts pack and unpack with one precompiled
``struct.Struct`` call. Those whose fields are all scalars or fixed strings also get a native
:class:`~shmkit._native.Codec` (``cls._codec``), which the API's batch paths (the server's
dispatch loop, pipelined calls) use to decode from and encode into shared memory without a
Python frame per message; the two codecs produce the same bytes.
"""

from __future__ import annotations

import inspect
import struct
import typing
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from shmkit._native import Codec
from shmkit.errors import MessageError

__all__ = [
    "HEADER",
    "REGISTRY",
    "Message",
    "MessageError",
    "array",
    "boolean",
    "define",
    "f64",
    "i8",
    "i16",
    "i32",
    "i64",
    "string",
    "struct_type",
    "u8",
    "u16",
    "u32",
    "u64",
    "vla",
]

#: msg_id, client_index, context
HEADER = struct.Struct(">HII")

#: Every message type defined in this process, by ``name_crc`` (for decoding what a peer
#: sends and for replaying traces).
REGISTRY: dict[str, type[Message]] = {}


# ---------------------------------------------------------------- field types


@dataclass(frozen=True)
class Scalar:
    name: str
    fmt: str
    lo: float
    hi: float
    is_float: bool = False
    is_bool: bool = False

    @property
    def text(self) -> str:
        return self.name

    def default(self) -> Any:
        return False if self.is_bool else (0.0 if self.is_float else 0)


def _int(name: str, fmt: str, bits: int, signed: bool) -> Scalar:
    lo = -(1 << (bits - 1)) if signed else 0
    hi = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
    return Scalar(name, fmt, lo, hi)


u8 = _int("u8", "B", 8, False)
u16 = _int("u16", "H", 16, False)
u32 = _int("u32", "I", 32, False)
u64 = _int("u64", "Q", 64, False)
i8 = _int("i8", "b", 8, True)
i16 = _int("i16", "h", 16, True)
i32 = _int("i32", "i", 32, True)
i64 = _int("i64", "q", 64, True)
f64 = Scalar("f64", "d", float("-inf"), float("inf"), is_float=True)
boolean = Scalar("bool", "?", 0, 1, is_bool=True)


@dataclass(frozen=True)
class String:
    """Fixed-size string field: UTF-8, NUL padded, at most ``size`` bytes."""

    size: int

    @property
    def text(self) -> str:
        return f"string[{self.size}]"

    def default(self) -> Any:
        return ""


@dataclass(frozen=True)
class Array:
    """Fixed-length array of a scalar, string or struct type."""

    item: FieldType
    length: int

    @property
    def text(self) -> str:
        return f"{self.item.text}[{self.length}]"

    def default(self) -> Any:
        return [_default(self.item) for _ in range(self.length)]


@dataclass(frozen=True)
class Vla:
    """Variable-length array whose element count is the value of an earlier integer field."""

    item: FieldType
    length_field: str

    @property
    def text(self) -> str:
        return f"{self.item.text}[{self.length_field}]"

    def default(self) -> Any:
        return []


FieldType = Any  # Scalar | String | Array | Vla | type[Message]


def _default(t: FieldType) -> Any:
    """Zero value of a field type (a fresh struct instance for nested structs)."""
    if isinstance(t, type):
        return t()
    return t.default()


def string(size: int) -> String:
    if size <= 0:
        raise ValueError("string size must be positive")
    return String(size)


def array(item: FieldType, length: int) -> Array:
    if length <= 0:
        raise ValueError("array length must be positive")
    if isinstance(item, Vla):
        raise ValueError("arrays of variable-length arrays are not supported")
    return Array(item, length)


def vla(item: FieldType, length_field: str) -> Vla:
    if isinstance(item, Vla) or (
        isinstance(item, type) and issubclass(item, Message) and item._dynamic
    ):
        raise ValueError("a variable-length array's items must have a fixed size")
    return Vla(item, length_field)


# ---------------------------------------------------------------- codec


def _fmt(t: FieldType) -> str:
    """struct format of a fixed-size type."""
    if isinstance(t, Scalar):
        return t.fmt
    if isinstance(t, String):
        return f"{t.size}s"
    if isinstance(t, Array):
        return (
            _fmt(t.item) * t.length if not isinstance(t.item, Scalar) else f"{t.length}{t.item.fmt}"
        )
    if isinstance(t, type) and issubclass(t, Message):
        return "".join(_fmt(ft) for _, ft in t._fields)
    raise TypeError(f"not a fixed-size field type: {t!r}")


def _flatten(t: FieldType, value: Any, out: list[Any], where: str) -> None:
    """Append the struct-level values of ``value`` (of fixed-size type ``t``) to ``out``."""
    if isinstance(t, Scalar):
        if t.is_bool:
            out.append(bool(value))
            return
        if t.is_float:
            out.append(float(value))
            return
        if not isinstance(value, int):
            raise MessageError(f"{where}: expected an integer, got {type(value).__name__}")
        if not t.lo <= value <= t.hi:
            raise MessageError(f"{where}: {value} out of range for {t.name}")
        out.append(value)
    elif isinstance(t, String):
        out.append(_str_field(value, t.size, where))
    elif isinstance(t, Array):
        items = list(value)
        if len(items) != t.length:
            raise MessageError(f"{where}: expected {t.length} items, got {len(items)}")
        for i, v in enumerate(items):
            _flatten(t.item, v, out, f"{where}[{i}]")
    else:  # nested struct
        if not isinstance(value, t):
            raise MessageError(f"{where}: expected {t._name}, got {type(value).__name__}")
        for fname, ft in t._fields:
            _flatten(ft, getattr(value, fname), out, f"{where}.{fname}")


def _rebuild(t: FieldType, values: Sequence[Any], pos: int) -> tuple[Any, int]:
    """Inverse of :func:`_flatten`: consume values from ``pos``."""
    if isinstance(t, Scalar):
        return values[pos], pos + 1
    if isinstance(t, String):
        raw: bytes = values[pos]
        try:
            return raw.split(b"\0", 1)[0].decode(), pos + 1
        except UnicodeDecodeError as exc:
            raise MessageError(f"string field is not UTF-8: {exc}") from None
    if isinstance(t, Array):
        if isinstance(t.item, Scalar):
            return list(values[pos : pos + t.length]), pos + t.length
        items = []
        for _ in range(t.length):
            v, pos = _rebuild(t.item, values, pos)
            items.append(v)
        return items, pos
    obj = t.__new__(t)
    for fname, ft in t._fields:
        v, pos = _rebuild(ft, values, pos)
        object.__setattr__(obj, fname, v)
    return obj, pos


def _canonical(t: FieldType) -> str:
    if isinstance(t, type) and issubclass(t, Message):
        inner = ", ".join(f"{_canonical(ft)} {n}" for n, ft in t._fields)
        return f"{t._name}{{{inner}}}"
    if isinstance(t, (Array, Vla)):
        return f"{_canonical(t.item)}[{t.length if isinstance(t, Array) else t.length_field}]"
    return str(t.text)


# ---------------------------------------------------------------- messages


class Message:
    """Base of message and struct types. Instances are plain value objects.

    Besides :func:`define`, a message type can be written as a class whose fields a type
    checker (``mypy --strict``) sees: each field is annotated ``Annotated[<Python type>,
    <wire type>]``, in wire order, and the class names the message::

        from typing import Annotated
        from shmkit.api.messages import Message, string, u32

        class Echo(Message, name="echo"):
            x: Annotated[int, u32]
            text: Annotated[str, string(16)]

    ``struct=True`` makes a struct type to nest in messages. Such a class is the same as
    ``define("echo", [("x", u32), ("text", string(16))])``: same CRC, same bytes.
    """

    _name: ClassVar[str] = ""
    _fields: ClassVar[tuple[tuple[str, FieldType], ...]] = ()
    _crc: ClassVar[int] = 0
    _name_crc: ClassVar[str] = ""
    _dynamic: ClassVar[bool] = False
    _struct: ClassVar[struct.Struct | None] = None
    _is_struct: ClassVar[bool] = False
    #: Native codec (messages whose fields are all scalars or fixed strings), used by the
    #: API's batch paths; None for other types.
    _codec: ClassVar[Codec | None] = None
    __slots__ = ("client_index", "context")

    client_index: int
    context: int

    def __init_subclass__(cls, *, name: str | None = None, struct: bool = False, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if name is None:
            return  # made by define()/struct_type(), which configure it themselves
        own = (
            inspect.get_annotations(cls)
            if hasattr(inspect, "get_annotations")  # 3.10+ (and lazy annotations, 3.14)
            else cls.__dict__.get("__annotations__", {})  # noqa: RUF063 (3.9, no typing_extensions)
        )
        hints = typing.get_type_hints(cls, include_extras=True)
        fields: list[tuple[str, FieldType]] = []
        for fname in own:
            hint = hints[fname]
            if typing.get_origin(hint) is typing.ClassVar:
                continue
            wire = [m for m in getattr(hint, "__metadata__", ()) if _is_field_type(m)]
            if len(wire) != 1:
                raise TypeError(
                    f"{name}.{fname}: annotate fields as Annotated[<type>, <wire type>], "
                    f"e.g. Annotated[int, u32]; got {hint!r}"
                )
            fields.append((fname, wire[0]))
        _configure(cls, name, _check_fields(name, fields), struct)

    def __init__(self, **values: Any) -> None:
        self.client_index = values.pop("client_index", 0)
        self.context = values.pop("context", 0)
        for fname, ft in self._fields:
            object.__setattr__(self, fname, values.pop(fname) if fname in values else _default(ft))
        if values:
            raise TypeError(f"{self._name} has no field(s) {', '.join(sorted(values))}")

    # -- identity

    @classmethod
    def name_crc(cls) -> str:
        return cls._name_crc

    def fields(self) -> dict[str, Any]:
        return {n: getattr(self, n) for n, _ in self._fields}

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is type(self)
            and isinstance(other, Message)
            and self.fields() == other.fields()
            and (self._is_struct or self.context == other.context)
        )

    def __hash__(self) -> int:
        return hash((self._name, self.context))

    def __repr__(self) -> str:
        body = ", ".join(f"{n}={getattr(self, n)!r}" for n, _ in self._fields)
        head = "" if self._is_struct else f"context={self.context}, "
        return f"{self._name}({head}{body})"

    # -- codec

    def encode(self, msg_id: int) -> bytes:
        """Wire bytes of this message with header ``msg_id``."""
        cls = type(self)
        if cls._is_struct:
            raise TypeError(f"{cls._name} is a struct type, not a message")
        values: list[Any] = [msg_id, self.client_index, self.context]
        if cls._struct is not None:
            for fname, ft in cls._fields:
                _flatten(ft, getattr(self, fname), values, f"{cls._name}.{fname}")
            try:
                return cls._struct.pack(*values)
            except struct.error as exc:
                raise MessageError(f"{cls._name}: {exc}") from None
        return cls._encode_dynamic(self, values)

    @classmethod
    def _encode_dynamic(cls, msg: Message, values: list[Any]) -> bytes:
        fmt = [">HII"]
        for fname, ft in cls._fields:
            value = getattr(msg, fname)
            if isinstance(ft, Vla):
                items = list(value)
                if len(items) != getattr(msg, ft.length_field):
                    raise MessageError(
                        f"{cls._name}.{fname}: {len(items)} items but "
                        f"{ft.length_field} = {getattr(msg, ft.length_field)}"
                    )
                fmt.append(_fmt(ft.item) * len(items))
                for i, v in enumerate(items):
                    _flatten(ft.item, v, values, f"{cls._name}.{fname}[{i}]")
            else:
                fmt.append(_fmt(ft))
                _flatten(ft, value, values, f"{cls._name}.{fname}")
        try:
            return struct.pack("".join(fmt), *values)
        except struct.error as exc:
            raise MessageError(f"{cls._name}: {exc}") from None

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> Message:
        """Build a message from wire bytes (header included). Raises :class:`MessageError`
        on truncated or malformed input; never reads past ``data``."""
        if cls._is_struct:
            raise TypeError(f"{cls._name} is a struct type, not a message")
        if cls._struct is not None:
            if len(data) < cls._struct.size:
                raise MessageError(f"{cls._name}: {len(data)} bytes, need {cls._struct.size}")
            values = cls._struct.unpack_from(data)
            obj = cls.__new__(cls)
            obj.client_index = values[1]
            obj.context = values[2]
            pos = 3
            for fname, ft in cls._fields:
                v, pos = _rebuild(ft, values, pos)
                object.__setattr__(obj, fname, v)
            return obj
        return cls._decode_dynamic(data)

    @classmethod
    def _decode_dynamic(cls, data: bytes | bytearray | memoryview) -> Message:
        if len(data) < HEADER.size:
            raise MessageError(f"{cls._name}: truncated header")
        _, client_index, context = HEADER.unpack_from(data)
        obj = cls.__new__(cls)
        obj.client_index, obj.context = client_index, context
        off = HEADER.size
        for fname, ft in cls._fields:
            if isinstance(ft, Vla):
                count = getattr(obj, ft.length_field)
                fmt = ">" + _fmt(ft.item) * count
            else:
                count = -1
                fmt = ">" + _fmt(ft)
            size = struct.calcsize(fmt)
            if off + size > len(data):
                raise MessageError(f"{cls._name}.{fname}: truncated ({len(data)} bytes)")
            values = struct.unpack_from(fmt, data, off)
            off += size
            if count >= 0:
                items, pos = [], 0
                for _ in range(count):
                    v, pos = _rebuild(ft.item, values, pos)
                    items.append(v)
                object.__setattr__(obj, fname, items)
            else:
                v, _ = _rebuild(ft, values, 0)
                object.__setattr__(obj, fname, v)
        return obj


def _check_fields(
    name: str, fields: Iterable[tuple[str, FieldType]]
) -> tuple[tuple[str, FieldType], ...]:
    if not name.isidentifier():
        raise ValueError(f"message name {name!r} must be an identifier")
    fields = tuple(fields)
    seen: dict[str, FieldType] = {}
    for fname, ft in fields:
        if not fname.isidentifier() or fname in ("client_index", "context") or fname in seen:
            raise ValueError(f"{name}: bad or duplicate field name {fname!r}")
        if isinstance(ft, Vla):
            lf = seen.get(ft.length_field)
            if not isinstance(lf, Scalar) or lf.is_float or lf.is_bool:
                raise ValueError(
                    f"{name}.{fname}: length field {ft.length_field!r} must be an earlier "
                    "integer field"
                )
        elif not isinstance(ft, (Scalar, String, Array)) and not (
            isinstance(ft, type) and issubclass(ft, Message) and ft._is_struct
        ):
            raise TypeError(f"{name}.{fname}: unsupported field type {ft!r}")
        seen[fname] = ft
    return fields


def _configure(
    cls: type[Message], name: str, fields: tuple[tuple[str, FieldType], ...], is_struct: bool
) -> None:
    """Give ``cls`` its definition: name, fields, CRC, packing and codecs."""
    dynamic = any(isinstance(ft, Vla) for _, ft in fields)
    if is_struct and dynamic:
        raise ValueError("structs may not contain variable-length arrays")
    cls._name, cls._fields, cls._dynamic, cls._is_struct = name, fields, dynamic, is_struct
    cls._crc = zlib.crc32(_canonical(cls).encode())
    cls._name_crc = f"{name}_{cls._crc:08x}"
    if not dynamic:
        cls._struct = struct.Struct(
            ">" + ("" if is_struct else "HII") + "".join(_fmt(ft) for _, ft in fields)
        )
        if not is_struct:
            _compile(cls)
            if all(isinstance(ft, (Scalar, String)) for _, ft in fields):
                cls._codec = Codec(cls, [(f, _fmt(ft)) for f, ft in fields])
    if not is_struct:
        REGISTRY[cls._name_crc] = cls


def _build(name: str, fields: Iterable[tuple[str, FieldType]], is_struct: bool) -> type[Message]:
    fields = _check_fields(name, fields)
    ns: dict[str, Any] = {"__slots__": tuple(f for f, _ in fields)}
    cls: type[Message] = type(name, (Message,), ns)
    _configure(cls, name, fields, is_struct)
    return cls


def _is_field_type(t: object) -> bool:
    return isinstance(t, (Scalar, String, Array, Vla)) or (
        isinstance(t, type) and issubclass(t, Message)
    )


def _str_field(value: Any, size: int, where: str = "string") -> bytes:
    try:
        b = value.encode() if isinstance(value, str) else bytes(value)
    except UnicodeEncodeError as exc:
        raise MessageError(f"{where}: not encodable as UTF-8: {exc}") from None
    if len(b) > size:
        raise MessageError(f"{where}: string of {len(b)} bytes exceeds {size}")
    return b


def _seq_field(value: Any, n: int) -> list[Any]:
    items = list(value)
    if len(items) != n:
        raise MessageError(f"expected {n} items, got {len(items)}")
    return items


def _flat_field(t: FieldType, value: Any) -> list[Any]:
    out: list[Any] = []
    _flatten(t, value, out, getattr(t, "_name", "field"))
    return out


def _compile(cls: type[Message]) -> None:
    """Generate straight-line encode/decode for a fixed-size message (as namedtuple does):
    one ``struct`` call and one attribute store per field. Any error falls back to the
    generic, fully checking path, which produces the precise :class:`MessageError`."""
    assert cls._struct is not None
    enc: list[str] = []
    dec: list[str] = []
    pos = 3
    for i, (fname, ft) in enumerate(cls._fields):
        width = len(_flat_field_count(ft))
        if isinstance(ft, Scalar):
            enc.append(f"self.{fname}")
            dec.append(f"    o.{fname} = v[{pos}]")
        elif isinstance(ft, String):
            enc.append(f"_str(self.{fname}, {ft.size})")
            dec.append(f"    o.{fname} = _text(v[{pos}])")
        elif isinstance(ft, Array) and isinstance(ft.item, Scalar):
            enc.append(f"*_seq(self.{fname}, {ft.length})")
            dec.append(f"    o.{fname} = list(v[{pos}:{pos + ft.length}])")
        else:
            enc.append(f"*_flat(_t{i}, self.{fname})")
            dec.append(f"    o.{fname} = _rebuild(_t{i}, v, {pos})[0]")
        pos += width
    ns: dict[str, Any] = {
        "_pack": cls._struct.pack,
        "_unpack": cls._struct.unpack_from,
        "_size": cls._struct.size,
        "_str": _str_field,
        "_seq": _seq_field,
        "_flat": _flat_field,
        "_text": _text_field,
        "_rebuild": _rebuild,
        "_new": object.__new__,
        "_cls": cls,
        "_slow_encode": Message.encode,
        "_slow_decode": Message.decode.__func__,  # type: ignore[attr-defined]
        "MessageError": MessageError,
        "_StructError": struct.error,
    }
    for i, (_, ft) in enumerate(cls._fields):
        ns[f"_t{i}"] = ft
    args = ", ".join(["msg_id", "self.client_index", "self.context", *enc])
    if all(isinstance(ft, Scalar) for _, ft in cls._fields):
        # One value per field: unpack straight into the attributes (a short buffer makes
        # the unpack fail and takes the checking path).
        targets = ", ".join(
            ["_", "o.client_index", "o.context", *(f"o.{f}" for f, _ in cls._fields)]
        )
        decode_src = f"""
def decode(data):
    o = _new(_cls)
    try:
        {targets} = _unpack(data)
    except _StructError:
        return _slow_decode(_cls, data)
    return o"""
    else:
        dec_body = chr(10).join(dec) if dec else "    pass"
        decode_src = f"""
def decode(data):
    if len(data) < _size:
        return _slow_decode(_cls, data)
    v = _unpack(data)
    o = _new(_cls)
    o.client_index = v[1]
    o.context = v[2]
{dec_body}
    return o"""
    src = f"""
def encode(self, msg_id):
    try:
        return _pack({args})
    except Exception:
        pass
    return _slow_encode(self, msg_id)

{decode_src}
"""
    params, body = [], []
    for i, (fname, ft) in enumerate(cls._fields):
        if isinstance(ft, (Scalar, String)):
            ns[f"_d{i}"] = _default(ft)
            params.append(f"{fname}=_d{i}")
            body.append(f"    self.{fname} = {fname}")
        else:  # mutable default: a fresh one per instance
            ns[f"_mk{i}"] = ft
            params.append(f"{fname}=_MISSING")
            body.append(f"    self.{fname} = _default(_mk{i}) if {fname} is _MISSING else {fname}")
    ns["_MISSING"] = _MISSING
    ns["_default"] = _default
    src += f"""
def __init__(self, *, {", ".join([*params, "client_index=0", "context=0"])}):
    self.client_index = client_index
    self.context = context
{chr(10).join(body) if body else "    pass"}
"""
    exec(src, ns)  # generated from the validated field list only
    setattr(cls, "__init__", ns["__init__"])  # noqa: B010 (generated methods)
    setattr(cls, "encode", ns["encode"])  # noqa: B010
    setattr(cls, "decode", staticmethod(ns["decode"]))  # noqa: B010


_MISSING = object()


def _flat_field_count(t: FieldType) -> list[None]:
    """One entry per struct-level value of a fixed-size type."""
    if isinstance(t, (Scalar, String)):
        return [None]
    if isinstance(t, Array):
        return _flat_field_count(t.item) * t.length
    return [None for _, ft in t._fields for _ in _flat_field_count(ft)]


def _text_field(raw: bytes) -> str:
    try:
        return raw.split(b"\0", 1)[0].decode()
    except UnicodeDecodeError as exc:
        raise MessageError(f"string field is not UTF-8: {exc}") from None


def define(name: str, fields: Iterable[tuple[str, FieldType]] = ()) -> type[Message]:
    """Define a message type (name, ordered typed fields). For field types a type checker
    sees, write a class instead (see :class:`Message`)."""
    return _build(name, fields, is_struct=False)


def struct_type(name: str, fields: Iterable[tuple[str, FieldType]]) -> type[Message]:
    """Define a struct type to nest in messages (fixed size only)."""
    return _build(name, fields, is_struct=True)
