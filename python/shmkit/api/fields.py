"""Field types of binary-API messages and their wire forms (VPP's: big-endian, packed).

The types are those of VPP's ``.api`` language, as ``vpp_papi`` encodes them:

* scalars ``u8 u16 u32 u64 i8 i16 i32 i64 bool`` (big-endian) and ``f64`` (host byte order:
  VPP does not swap doubles, ``vpp_papi`` packs them with ``=d``);
* ``string(n)``: fixed size, UTF-8, NUL padded; ``string()`` (VPP's ``string x[0]``): a
  ``u32`` byte count, then the bytes;
* ``array(t, n)``: fixed length; ``vla(t, "count")``: as many items as an earlier integer
  field says; ``tail(t)`` (VPP's legacy ``t x[0]`` with no count): items up to the end of the
  message. Arrays of ``u8`` are ``bytes`` (a shorter value is NUL padded in a fixed array);
* :class:`Enum` (``enum_type``; ``enumflag_type`` for flags): an integer of its base type,
  decoded to an ``IntEnum`` / ``IntFlag`` member (an unknown value stays an ``int``);
* :class:`Alias` (``alias``): another name for a type (VPP's ``typedef u8 ip4_address[4]``);
* unions (``union_type``): as long as their longest member; a value holds its bytes and
  reads any member from them, as VPP's C unions;
* structs (``messages.struct_type``), which may end in variable-length parts as VPP's do.

A fixed-size type packs with one ``struct`` format (:func:`fmt`) through
:func:`flatten` / :func:`rebuild`; any type packs with :func:`collect` and unpacks with
:func:`take`, which checks every length against the bytes present before it reads or
allocates anything.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from shmkit.errors import MessageError

__all__ = [
    "Alias",
    "Array",
    "Enum",
    "FieldType",
    "Scalar",
    "String",
    "Tail",
    "Union",
    "VarString",
    "Vla",
    "alias",
    "array",
    "boolean",
    "enum_type",
    "enumflag_type",
    "f64",
    "i8",
    "i16",
    "i32",
    "i64",
    "string",
    "tail",
    "u8",
    "u16",
    "u32",
    "u64",
    "union_type",
    "vla",
]

#: VPP's doubles travel in host byte order.
_F64 = struct.Struct("=d")
_U32 = struct.Struct(">I")


# ---------------------------------------------------------------- the types


@dataclass(frozen=True)
class Scalar:
    name: str
    fmt: str
    lo: float
    hi: float
    is_float: bool = False
    is_bool: bool = False

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
SCALARS = {t.name: t for t in (u8, u16, u32, u64, i8, i16, i32, i64, f64, boolean)}


@dataclass(frozen=True)
class String:
    """Fixed-size string field: UTF-8, NUL padded, at most ``size`` bytes."""

    size: int

    def default(self) -> Any:
        return ""


@dataclass(frozen=True)
class VarString:
    """Variable-length string (VPP's ``string x[0]``): u32 byte count, then UTF-8 bytes."""

    def default(self) -> Any:
        return ""


@dataclass(frozen=True)
class Array:
    """Fixed-length array; of ``u8``, a ``bytes`` value."""

    item: Any
    length: int

    def default(self) -> Any:
        if self.item == u8:
            return bytes(self.length)
        return [default(self.item) for _ in range(self.length)]


@dataclass(frozen=True)
class Vla:
    """Variable-length array whose item count is the value of an earlier integer field; of
    ``u8``, a ``bytes`` value."""

    item: Any
    length_field: str

    def default(self) -> Any:
        return b"" if self.item == u8 else []


@dataclass(frozen=True)
class Tail:
    """VPP's legacy variable-length array: items up to the end of the message (last field
    only); of ``u8``, a ``bytes`` value."""

    item: Any

    def default(self) -> Any:
        return b"" if self.item == u8 else []


@dataclass(frozen=True)
class Enum:
    """An enum (or, with ``flags``, an enumflag) over an integer base type. ``.py`` is its
    ``IntEnum`` / ``IntFlag``, whose members are also attributes of the field type."""

    name: str
    base: Scalar
    members: tuple[tuple[str, int], ...]
    flags: bool = False
    py: Any = field(default=None, compare=False, hash=False, repr=False)

    def default(self) -> Any:
        return 0

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or self.py is None:
            raise AttributeError(name)
        try:
            return self.py[name]
        except KeyError:
            raise AttributeError(f"enum {self.name} has no member {name!r}") from None


@dataclass(frozen=True)
class Alias:
    """Another name for a type (VPP's aliases: ``interface_index`` = u32, ``ip4_address`` =
    u8[4]); the same wire form and value as its target."""

    name: str
    target: Any

    def default(self) -> Any:
        return default(self.target)


class Union:
    """Base of union types (:func:`union_type`). A value is its bytes (as long as the longest
    member); give one member to build it (``U(ip4=b"...")``, none for all zeros) and read
    any member, decoded from those bytes."""

    _name: ClassVar[str] = ""
    _members: ClassVar[tuple[tuple[str, Any], ...]] = ()
    _size: ClassVar[int] = 0
    _crc: ClassVar[int | None] = None
    __slots__ = ("_raw",)
    _raw: bytes

    def __init__(self, **member: Any) -> None:
        if len(member) > 1:
            raise TypeError(f"union {self._name}: give one member, got {sorted(member)}")
        raw = bytes(self._size)
        for mname, value in member.items():
            raw = self._packed(mname, value)
        object.__setattr__(self, "_raw", raw)

    @classmethod
    def _packed(cls, mname: str, value: Any) -> bytes:
        for n, ft in cls._members:
            if n == mname:
                b = pack_fixed(ft, value, f"{cls._name}.{n}")
                return b + bytes(cls._size - len(b))
        raise TypeError(f"union {cls._name} has no member {mname!r}")

    @classmethod
    def from_bytes(cls, raw: bytes) -> Union:
        if len(raw) != cls._size:
            raise MessageError(f"union {cls._name}: {len(raw)} bytes, need {cls._size}")
        obj = cls.__new__(cls)
        object.__setattr__(obj, "_raw", bytes(raw))
        return obj

    def __getattr__(self, name: str) -> Any:
        for n, ft in type(self)._members:
            if n == name:
                return unpack_fixed(ft, self._raw)
        raise AttributeError(f"union {self._name} has no member {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, "_raw", self._packed(name, value))

    def __bytes__(self) -> bytes:
        return self._raw

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and isinstance(other, Union) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash((self._name, self._raw))

    def __repr__(self) -> str:
        return f"{self._name}({self._raw.hex()})"


FieldType = Any  # Scalar | String | VarString | Array | Vla | Tail | Enum | Alias | type


def is_record(t: Any) -> bool:
    """A struct or message type (:class:`shmkit.api.messages.Message` subclass)."""
    return isinstance(t, type) and hasattr(t, "_fields") and hasattr(t, "_is_struct")


def is_union(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, Union)


def is_field_type(t: object) -> bool:
    return (
        isinstance(t, (Scalar, String, VarString, Array, Vla, Tail, Enum, Alias))
        or is_record(t)
        or is_union(t)
    )


def unalias(t: Any) -> Any:
    while isinstance(t, Alias):
        t = t.target
    return t


def is_integer(t: Any) -> bool:
    """Whether ``t`` can count a variable-length array (an integer scalar, or an alias of one)."""
    t = unalias(t)
    return isinstance(t, Scalar) and not t.is_float and not t.is_bool


def default(t: FieldType) -> Any:
    """Zero value of a field type (a fresh instance for structs and unions)."""
    if isinstance(t, type):
        return t()
    return t.default()


# ---------------------------------------------------------------- constructors


def string(size: int = 0) -> String | VarString:
    """A fixed-size string field of ``size`` bytes; ``string()`` (or size 0, as VPP writes
    ``string x[0]``) is variable-length."""
    if size < 0:
        raise ValueError("string size must not be negative")
    return String(size) if size else VarString()


def array(item: FieldType, length: int) -> Array:
    if length <= 0:
        raise ValueError("array length must be positive")
    if not is_fixed(item):
        raise ValueError("an array's items must have a fixed size")
    return Array(item, length)


def vla(item: FieldType, length_field: str) -> Vla:
    if not is_fixed(item):
        raise ValueError("a variable-length array's items must have a fixed size")
    return Vla(item, length_field)


def tail(item: FieldType) -> Tail:
    if not is_fixed(item):
        raise ValueError("a variable-length array's items must have a fixed size")
    return Tail(item)


def enum_type(
    name: str,
    members: Iterable[tuple[str, int]] | dict[str, int],
    base: Scalar = u32,
    *,
    flags: bool = False,
) -> Enum:
    """An enum field type (VPP's ``enum name : base``); members as ``(name, value)`` pairs."""
    pairs = tuple(members.items() if isinstance(members, dict) else members)
    if not is_integer(base):
        raise ValueError(f"enum {name}: base type must be an integer type, got {base!r}")
    for mname, value in pairs:
        if not isinstance(value, int) or not base.lo <= value <= base.hi:
            raise ValueError(f"enum {name}: {mname} = {value!r} does not fit {base.name}")
    kind: Any = enum.IntFlag if flags else enum.IntEnum
    py = kind(name, dict(pairs))
    return Enum(name, base, pairs, flags, py)


def enumflag_type(
    name: str, members: Iterable[tuple[str, int]] | dict[str, int], base: Scalar = u32
) -> Enum:
    """A flags enum (VPP's ``enumflag``): any combination of the members' bits."""
    return enum_type(name, members, base, flags=True)


def alias(name: str, target: FieldType) -> Alias:
    if not is_fixed(target):
        raise ValueError(f"alias {name}: the target must have a fixed size")
    return Alias(name, target)


def union_type(
    name: str, members: Iterable[tuple[str, FieldType]], *, crc: int | None = None
) -> type[Union]:
    """A union type: its members share the bytes (as many as the longest needs)."""
    if not name.isidentifier():
        raise ValueError(f"union name {name!r} must be an identifier")
    members = tuple(members)
    seen = set()
    for mname, ft in members:
        if not mname.isidentifier() or mname in seen or mname.startswith("_"):
            raise ValueError(f"union {name}: bad or duplicate member name {mname!r}")
        if not is_field_type(ft) or not is_fixed(ft):
            raise TypeError(f"union {name}.{mname}: members must have a fixed size, got {ft!r}")
        seen.add(mname)
    size = max((struct.calcsize(">" + fmt(ft)) for _, ft in members), default=0)
    ns = {"__slots__": (), "_name": name, "_members": members, "_size": size, "_crc": crc}
    return type(name, (Union,), ns)


# ---------------------------------------------------------------- fixed-size codec


def is_fixed(t: FieldType) -> bool:
    t = unalias(t)
    if isinstance(t, (Scalar, String, Enum)) or is_union(t):
        return True
    if isinstance(t, Array):
        return is_fixed(t.item)
    if is_record(t):
        return not t._dynamic
    return False


def fmt(t: FieldType) -> str:
    """``struct`` format of a fixed-size type (no byte-order prefix)."""
    t = unalias(t)
    if isinstance(t, Scalar):
        return "8s" if t.is_float else t.fmt
    if isinstance(t, Enum):
        return t.base.fmt
    if isinstance(t, String):
        return f"{t.size}s"
    if is_union(t):
        return f"{t._size}s"
    if isinstance(t, Array):
        if t.item == u8:
            return f"{t.length}s"
        inner = fmt(t.item)
        return f"{t.length}{inner}" if len(inner) == 1 else inner * t.length
    if is_record(t) and not t._dynamic:
        return "".join(fmt(ft) for _, ft in t._fields)
    raise TypeError(f"not a fixed-size field type: {t!r}")


def str_field(value: Any, size: int | None, where: str = "string") -> bytes:
    try:
        b = value.encode() if isinstance(value, str) else bytes(value)
    except UnicodeEncodeError as exc:
        raise MessageError(f"{where}: not encodable as UTF-8: {exc}") from None
    except TypeError:
        raise MessageError(f"{where}: expected a string, got {type(value).__name__}") from None
    if size is not None and len(b) > size:
        raise MessageError(f"{where}: string of {len(b)} bytes exceeds {size}")
    return b


def text_field(raw: bytes) -> str:
    try:
        return raw.split(b"\0", 1)[0].decode()
    except UnicodeDecodeError as exc:
        raise MessageError(f"string field is not UTF-8: {exc}") from None


def bytes_field(value: Any, size: int | None, where: str) -> bytes:
    """A ``u8`` array's value: bytes-like, or an iterable of integers 0..255."""
    try:
        b = bytes(value)
    except (TypeError, ValueError):
        raise MessageError(f"{where}: expected bytes, got {type(value).__name__}") from None
    if size is not None and len(b) > size:
        raise MessageError(f"{where}: {len(b)} bytes exceed {size}")
    return b


def f64_field(value: Any) -> bytes:
    return _F64.pack(float(value))


def enum_value(t: Enum, v: int) -> Any:
    if t.flags:
        return t.py(v)
    try:
        return t.py(v)
    except ValueError:
        return v  # a value this definition does not name: kept as is


def _check_int(t: Scalar, value: Any, where: str) -> int:
    if not isinstance(value, int):
        raise MessageError(f"{where}: expected an integer, got {type(value).__name__}")
    if not t.lo <= value <= t.hi:
        raise MessageError(f"{where}: {value} out of range for {t.name}")
    return value


def flatten(t: FieldType, value: Any, out: list[Any], where: str) -> None:
    """Append the ``struct``-level values of ``value`` (of fixed-size type ``t``) to ``out``."""
    t = unalias(t)
    if isinstance(t, Scalar):
        if t.is_bool:
            out.append(bool(value))
        elif t.is_float:
            try:
                out.append(f64_field(value))
            except (TypeError, ValueError):
                raise MessageError(f"{where}: expected a number, got {value!r}") from None
        else:
            out.append(_check_int(t, value, where))
    elif isinstance(t, Enum):
        out.append(_check_int(t.base, value, where))
    elif isinstance(t, String):
        out.append(str_field(value, t.size, where))
    elif is_union(t):
        if isinstance(value, dict) and len(value) <= 1:
            value = t(**value)
        if not isinstance(value, t):
            raise MessageError(f"{where}: expected a {t._name}, got {type(value).__name__}")
        out.append(value._raw)
    elif isinstance(t, Array):
        if t.item == u8:
            out.append(bytes_field(value, t.length, where))
            return
        try:
            items = list(value)
        except TypeError:
            raise MessageError(f"{where}: expected a sequence, got {value!r}") from None
        if len(items) != t.length:
            raise MessageError(f"{where}: expected {t.length} items, got {len(items)}")
        for i, v in enumerate(items):
            flatten(t.item, v, out, f"{where}[{i}]")
    else:  # nested struct
        if not isinstance(value, t):
            raise MessageError(f"{where}: expected {t._name}, got {type(value).__name__}")
        for fname, ft in t._fields:
            flatten(ft, getattr(value, fname), out, f"{where}.{fname}")


def rebuild(t: FieldType, values: Any, pos: int) -> tuple[Any, int]:
    """Inverse of :func:`flatten`: the value of type ``t`` from ``values[pos:]``, and the
    position after it."""
    t = unalias(t)
    if isinstance(t, Scalar):
        v = values[pos]
        return (_F64.unpack(v)[0] if t.is_float else v), pos + 1
    if isinstance(t, Enum):
        return enum_value(t, values[pos]), pos + 1
    if isinstance(t, String):
        return text_field(values[pos]), pos + 1
    if is_union(t):
        return t.from_bytes(values[pos]), pos + 1
    if isinstance(t, Array):
        if t.item == u8:
            return values[pos], pos + 1
        item = t.item
        if isinstance(item, Scalar) and not item.is_float:
            return list(values[pos : pos + t.length]), pos + t.length
        items = []
        for _ in range(t.length):
            v, pos = rebuild(item, values, pos)
            items.append(v)
        return items, pos
    obj = object.__new__(t)
    for fname, ft in t._fields:
        v, pos = rebuild(ft, values, pos)
        object.__setattr__(obj, fname, v)
    return obj, pos


_STRUCTS: dict[Any, struct.Struct] = {}


def struct_of(t: FieldType) -> struct.Struct:
    """The (cached) ``struct.Struct`` of a fixed-size type."""
    s = _STRUCTS.get(t)
    if s is None:
        s = _STRUCTS[t] = struct.Struct(">" + fmt(t))
    return s


def pack_fixed(t: FieldType, value: Any, where: str) -> bytes:
    vals: list[Any] = []
    flatten(t, value, vals, where)
    try:
        return struct_of(t).pack(*vals)
    except struct.error as exc:
        raise MessageError(f"{where}: {exc}") from None


def unpack_fixed(t: FieldType, raw: bytes) -> Any:
    return rebuild(t, struct_of(t).unpack_from(raw), 0)[0]


# ---------------------------------------------------------------- any type


def _count(owner: Any, t: Vla, where: str) -> int:
    n = getattr(owner, t.length_field)
    if not isinstance(n, int) or n < 0:
        raise MessageError(f"{where}: count {t.length_field} = {n!r} is not a count")
    return int(n)


def collect(
    t: FieldType, value: Any, fmts: list[str], vals: list[Any], where: str, owner: Any
) -> None:
    """Append the ``struct`` format and values of ``value`` (of any type ``t``; ``owner``
    holds the fields that count variable-length arrays)."""
    if is_fixed(t):
        fmts.append(fmt(t))
        flatten(t, value, vals, where)
        return
    t = unalias(t)
    if isinstance(t, VarString):
        b = str_field(value, None, where)
        fmts.append(f"I{len(b)}s")
        vals += (len(b), b)
    elif isinstance(t, (Vla, Tail)):
        if t.item == u8:
            items: Any = bytes_field(value, None, where)
        else:
            try:
                items = list(value)
            except TypeError:
                raise MessageError(f"{where}: expected a sequence, got {value!r}") from None
        if isinstance(t, Vla) and len(items) != _count(owner, t, where):
            raise MessageError(
                f"{where}: {len(items)} items but {t.length_field} = "
                f"{getattr(owner, t.length_field)}"
            )
        if t.item == u8:
            fmts.append(f"{len(items)}s")
            vals.append(items)
            return
        fmts.append(fmt(t.item) * len(items))
        for i, v in enumerate(items):
            flatten(t.item, v, vals, f"{where}[{i}]")
    elif is_record(t):  # a struct with variable-length parts
        if not isinstance(value, t):
            raise MessageError(f"{where}: expected {t._name}, got {type(value).__name__}")
        for fname, ft in t._fields:
            collect(ft, getattr(value, fname), fmts, vals, f"{where}.{fname}", value)
    else:
        raise TypeError(f"{where}: unsupported field type {t!r}")


def _need(data: Any, off: int, n: int, where: str) -> None:
    if off + n > len(data):
        raise MessageError(f"{where}: truncated ({len(data)} bytes, need {off + n})")


def take(t: FieldType, data: Any, off: int, owner: Any, where: str) -> tuple[Any, int]:
    """Decode a value of any type ``t`` from ``data[off:]``; returns it and the offset after
    it. Lengths are checked against ``data`` before anything is read or allocated."""
    if is_fixed(t):
        s = struct_of(t)
        _need(data, off, s.size, where)
        return rebuild(t, s.unpack_from(data, off), 0)[0], off + s.size
    t = unalias(t)
    if isinstance(t, VarString):
        _need(data, off, 4, where)
        (n,) = _U32.unpack_from(data, off)
        _need(data, off + 4, n, where)
        raw = bytes(data[off + 4 : off + 4 + n])
        try:
            return raw.decode(), off + 4 + n
        except UnicodeDecodeError as exc:
            raise MessageError(f"{where}: string is not UTF-8: {exc}") from None
    if isinstance(t, (Vla, Tail)):
        size = struct_of(t.item).size
        if isinstance(t, Vla):
            count = _count(owner, t, where)
        else:
            left = len(data) - off
            if size == 0 or left % size:
                raise MessageError(f"{where}: {left} bytes are not a whole number of items")
            count = left // size
        _need(data, off, count * size, where)
        end = off + count * size
        if t.item == u8:
            return bytes(data[off:end]), end
        values = struct.unpack_from(">" + fmt(t.item) * count, data, off)
        items, pos = [], 0
        for _ in range(count):
            v, pos = rebuild(t.item, values, pos)
            items.append(v)
        return items, end
    if is_record(t):
        obj = object.__new__(t)
        for fname, ft in t._fields:
            v, off = take(ft, data, off, obj, f"{where}.{fname}")
            object.__setattr__(obj, fname, v)
        return obj, off
    raise TypeError(f"{where}: unsupported field type {t!r}")


# ---------------------------------------------------------------- definitions' text


def canonical(t: FieldType) -> str:
    """A canonical text of a type (for the CRC of the definitions that use it)."""
    if is_record(t):
        inner = ", ".join(f"{canonical(ft)} {n}" for n, ft in t._fields)
        return f"{t._name}{{{inner}}}"
    if is_union(t):
        inner = ", ".join(f"{canonical(ft)} {n}" for n, ft in t._members)
        return f"union {t._name}{{{inner}}}"
    if isinstance(t, Array):
        return f"{canonical(t.item)}[{t.length}]"
    if isinstance(t, Vla):
        return f"{canonical(t.item)}[{t.length_field}]"
    if isinstance(t, Tail):
        return f"{canonical(t.item)}[]"
    if isinstance(t, String):
        return f"string[{t.size}]"
    if isinstance(t, VarString):
        return "string[]"
    if isinstance(t, Enum):
        inner = ", ".join(f"{n}={v}" for n, v in t.members)
        return f"{'enumflag' if t.flags else 'enum'} {t.name}:{t.base.name}{{{inner}}}"
    if isinstance(t, Alias):
        return canonical(t.target)
    return str(t.name)
