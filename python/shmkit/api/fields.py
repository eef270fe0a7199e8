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

This module declares the types; their codec is native (:class:`shmkit._native.Codec`, from
the description :func:`spec` gives of them), and checks every length against the bytes
present before it reads or allocates anything.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from shmkit._native import FieldCodec
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
    #: Each member's native codec (:class:`shmkit._native.FieldCodec`).
    _codecs: ClassVar[dict[str, FieldCodec]] = {}
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
        codec = cls._codecs.get(mname)
        if codec is None:
            raise TypeError(f"union {cls._name} has no member {mname!r}")
        b = codec.pack(value)
        return b + bytes(cls._size - len(b))

    @classmethod
    def from_bytes(cls, raw: bytes) -> Union:
        if len(raw) != cls._size:
            raise MessageError(f"union {cls._name}: {len(raw)} bytes, need {cls._size}")
        obj = cls.__new__(cls)
        object.__setattr__(obj, "_raw", bytes(raw))
        return obj

    def __getattr__(self, name: str) -> Any:
        codec = type(self)._codecs.get(name)
        if codec is None:
            raise AttributeError(f"union {self._name} has no member {name!r}")
        return codec.unpack(self._raw)

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
    codecs = {m: FieldCodec(spec(ft), f"{name}.{m}") for m, ft in members}
    width = max((c.size for c in codecs.values()), default=0)
    ns = {"__slots__": (), "_name": name, "_members": members, "_size": width, "_crc": crc}
    return type(name, (Union,), {**ns, "_codecs": codecs})


# ---------------------------------------------------------------- sizes and descriptions


def is_fixed(t: FieldType) -> bool:
    t = unalias(t)
    if isinstance(t, (Scalar, String, Enum)) or is_union(t):
        return True
    if isinstance(t, Array):
        return is_fixed(t.item)
    if is_record(t):
        return not t._dynamic
    return False


def size(t: FieldType) -> int:
    """Wire size of a fixed-size type."""
    t = unalias(t)
    if isinstance(t, Scalar):
        return _SIZES[t.name]
    if isinstance(t, Enum):
        return _SIZES[t.base.name]
    if isinstance(t, String):
        return t.size
    if is_union(t):
        return int(t._size)
    if isinstance(t, Array):
        return size(t.item) * t.length
    if is_record(t) and not t._dynamic:
        return sum(size(ft) for _, ft in t._fields)
    raise TypeError(f"not a fixed-size field type: {t!r}")


_SIZES = {"u8": 1, "i8": 1, "bool": 1, "u16": 2, "i16": 2, "u32": 4, "i32": 4}
_SIZES.update(u64=8, i64=8, f64=8)


def spec(t: FieldType, siblings: tuple[tuple[str, FieldType], ...] = ()) -> Any:
    """The native codec's description of a field type (:class:`shmkit._native.Codec`):
    declarations only, the codec itself is native. ``siblings`` are the fields of the struct
    that holds the field (a variable-length array names the one that counts it)."""
    t = unalias(t)
    if isinstance(t, Scalar):
        return t.name
    if isinstance(t, Enum):
        return ("enum", t.base.name, t.py, t.flags)
    if isinstance(t, String):
        return ("string", t.size)
    if isinstance(t, VarString):
        return ("string", 0)
    if is_union(t):
        return ("union", t._size, t)
    if isinstance(t, Array):
        return ("bytes", t.length) if t.item == u8 else ("array", spec(t.item), t.length)
    if isinstance(t, Vla):
        count = [n for n, _ in siblings].index(t.length_field)
        return ("vlabytes", count) if t.item == u8 else ("vla", spec(t.item), count)
    if isinstance(t, Tail):
        return ("tailbytes",) if t.item == u8 else ("tail", spec(t.item))
    if is_record(t):
        return ("struct", t, t._name, fields_spec(t._fields))
    raise TypeError(f"unsupported field type {t!r}")


def fields_spec(fields: tuple[tuple[str, FieldType], ...]) -> list[tuple[str, Any]]:
    """The native codec's description of a struct's (or message's) fields."""
    return [(n, spec(ft, fields)) for n, ft in fields]


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
