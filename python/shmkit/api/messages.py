"""Message definitions for the binary API: typed fields, a CRC per definition, fast packing.

A message type is defined from a name and an ordered list of typed fields::

    from shmkit.api.messages import define, u32, string, array, vla, struct_type

    Counter = struct_type("counter", [("id", u32), ("value", u64)])
    GetCounters = define("get_counters", [("first", u32), ("names", string(32))])
    Counters = define("get_counters_reply", [("retval", i32), ("n", u32),
                                               ("items", vla(Counter, "n"))])

Field types (:mod:`shmkit.api.fields`): ``u8 u16 u32 u64 i8 i16 i32 i64 f64 boolean``,
``string(n)`` (fixed, NUL padded) and ``string()`` (variable length), ``array(t, n)``,
``vla(t, "len_field")`` (counted by an earlier integer field), ``tail(t)``, enums, enumflags,
aliases, unions, and nested structs from :func:`struct_type`. Arrays of ``u8`` are ``bytes``.
Definitions can also be loaded from VPP's ``.api.json`` files (:mod:`shmkit.api.apijson`).

Wire format, as VPP's binary API: big-endian, packed (``f64`` in host order, as VPP). A
message starts with a header whose fields VPP's ``.api.json`` lists explicitly: ``u16
_vl_msg_id``, then ``u32 client_index`` and ``u32 context`` where the definition has them
(:data:`REQUEST`: all three, the default of :func:`define`; :data:`REPLY`: no client index;
:data:`BARE`: the id alone). ``Message._header`` names them; ``msg.client_index`` and
``msg.context`` read 0 for a type that lacks them. The CRC of a message is the one its
definition carries (``crc=``, as loaded from VPP) or the CRC-32 of a canonical text of its
definition (name, field names and types, recursively); ``name_crc`` (e.g.
``control_ping_51077d14``) identifies it in the message table: two sides that disagree on a
definition disagree on its CRC and refuse to exchange it.

One codec serves every type: each message type gets a native
:class:`~shmkit._native.Codec` (``cls._codec``) built from the description of its fields
(:func:`shmkit.api.fields.spec`: scalars, strings, arrays, variable-length arrays, enums,
unions, nested structs; any header kind), with no generated source. ``encode``/``decode``
go through it, and so do the API's batch paths (the server's dispatch loop, pipelined
calls), decoding from and encoding into shared memory without a Python frame per message.
Errors are :class:`MessageError` exceptions naming the field (``get_counters_reply.items[2].id: -1
out of range for u32``). Instances are built natively too (a
:class:`~shmkit._native.Constructor` per type).
"""

from __future__ import annotations

import inspect
import struct
import typing
import zlib
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from shmkit._native import Codec, Constructor
from shmkit.api import fields as F
from shmkit.api.fields import (
    Alias,
    Array,
    Enum,
    FieldType,
    Scalar,
    String,
    Tail,
    Union,
    VarString,
    Vla,
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
from shmkit.errors import MessageError

__all__ = [
    "BARE",
    "HEADER",
    "REGISTRY",
    "REPLY",
    "REQUEST",
    "Alias",
    "Array",
    "Enum",
    "FieldType",
    "Message",
    "MessageError",
    "Scalar",
    "String",
    "Tail",
    "Union",
    "VarString",
    "Vla",
    "alias",
    "array",
    "boolean",
    "define",
    "enum_type",
    "enumflag_type",
    "f64",
    "i8",
    "i16",
    "i32",
    "i64",
    "string",
    "struct_type",
    "tail",
    "u8",
    "u16",
    "u32",
    "u64",
    "union_type",
    "vla",
]

#: The default header (:data:`REQUEST`): msg_id, client_index, context.
HEADER = struct.Struct(">HII")

#: Header kinds: the leading fields a message has, as VPP's ``.api.json`` lists them.
REQUEST: tuple[str, ...] = ("_vl_msg_id", "client_index", "context")
REPLY: tuple[str, ...] = ("_vl_msg_id", "context")
BARE: tuple[str, ...] = ("_vl_msg_id",)
HEADERS = (REQUEST, REPLY, BARE, ("_vl_msg_id", "client_index"))
_HEADER_ATTRS = ("client_index", "context")

#: Every message type defined in this process, by ``name_crc`` (for decoding what a peer
#: sends and for replaying traces).
REGISTRY: dict[str, type[Message]] = {}

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

    ``struct=True`` makes a struct type to nest in messages; ``header=``, ``crc=`` and
    ``options=`` are those of :func:`define`. Such a class is the same as
    ``define("echo", [("x", u32), ("text", string(16))])``: same CRC, same bytes.
    """

    _name: ClassVar[str] = ""
    _fields: ClassVar[tuple[tuple[str, FieldType], ...]] = ()
    #: VPP's field options (``{"default": ...}``, ``{"limit": ...}``), by field name.
    _field_options: ClassVar[dict[str, dict[str, Any]]] = {}
    #: VPP's message options (``{"deprecated": None}``, ...).
    _options: ClassVar[dict[str, Any]] = {}
    #: The header fields this message type has, in wire order (:data:`REQUEST`, ...).
    _header: ClassVar[tuple[str, ...]] = REQUEST
    _crc: ClassVar[int] = 0
    _name_crc: ClassVar[str] = ""
    _dynamic: ClassVar[bool] = False
    _is_struct: ClassVar[bool] = False
    #: ``(name, default, fresh)`` for every attribute a new instance gets (``fresh``: the
    #: default is a field type whose zero value is made per instance).
    _init: ClassVar[tuple[tuple[str, Any, bool], ...]] = (
        ("client_index", 0, False),
        ("context", 0, False),
    )
    #: The type's codec (native, every field type and header kind): ``encode``/``decode``
    #: go through it, and so do the API's batch paths; None for struct types.
    _codec: ClassVar[Codec | None] = None
    __slots__ = ("client_index", "context")

    client_index: int
    context: int

    def __init_subclass__(
        cls,
        *,
        name: str | None = None,
        struct: bool = False,
        header: tuple[str, ...] = REQUEST,
        crc: int | str | None = None,
        options: dict[str, Any] | None = None,
        **kw: Any,
    ) -> None:
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
            wire = [m for m in getattr(hint, "__metadata__", ()) if F.is_field_type(m)]
            if len(wire) != 1:
                raise TypeError(
                    f"{name}.{fname}: annotate fields as Annotated[<type>, <wire type>], "
                    f"e.g. Annotated[int, u32]; got {hint!r}"
                )
            fields.append((fname, wire[0]))
        hdr = () if struct else header
        checked, opts = _check_fields(name, fields, hdr)
        _configure(cls, name, checked, struct, hdr, crc, options, opts)

    def __init__(self, **values: Any) -> None:
        # (Types made by define()/struct_type()/a class declaration are built by their
        # native Constructor, their __new__; this serves other subclasses.)
        pop = values.pop
        for name, dflt, fresh in self._init:
            if fresh:
                setattr(self, name, pop(name) if name in values else F.default(dflt))
            else:
                setattr(self, name, pop(name, dflt))
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
        head = "context=" + str(self.context) + ", " if "context" in self._header else ""
        return f"{self._name}({head}{body})"

    # -- codec (the native one: cls._codec)

    def encode(self, msg_id: int) -> bytes:
        """Wire bytes of this message with header ``msg_id``. Raises :class:`MessageError`
        (naming the field) for a value its type does not take."""
        codec = type(self)._codec
        if codec is None:
            raise TypeError(f"{type(self)._name} is a struct type, not a message")
        return codec.encode(self, msg_id)

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> Message:
        """Build a message from wire bytes (header included). Raises :class:`MessageError`
        (naming the field) on truncated or malformed input; never reads past ``data``."""
        if cls._codec is None:
            raise TypeError(f"{cls._name} is a struct type, not a message")
        return cls._codec.decode(data)  # type: ignore[no-any-return]


def _check_fields(
    name: str, fields: Iterable[Any], header: tuple[str, ...]
) -> tuple[tuple[tuple[str, FieldType], ...], dict[str, dict[str, Any]]]:
    if not name.isidentifier():
        raise ValueError(f"message name {name!r} must be an identifier")
    if header and header not in HEADERS:
        raise ValueError(f"{name}: header must be one of {HEADERS}, got {header!r}")
    out: list[tuple[str, FieldType]] = []
    options: dict[str, dict[str, Any]] = {}
    seen: dict[str, FieldType] = {}
    specs = list(fields)
    for k, spec in enumerate(specs):
        fname, ft, *rest = spec
        if rest:
            options[fname] = dict(rest[0])
        if (
            not isinstance(fname, str)
            or not fname.isidentifier()
            or fname in header
            or fname == "_vl_msg_id"
            or fname in seen
        ):
            raise ValueError(f"{name}: bad or duplicate field name {fname!r}")
        if isinstance(ft, Vla):
            if not F.is_integer(seen.get(ft.length_field)):
                raise ValueError(
                    f"{name}.{fname}: length field {ft.length_field!r} must be an earlier "
                    "integer field"
                )
        elif isinstance(ft, Tail) and k != len(specs) - 1:
            raise ValueError(f"{name}.{fname}: an array without a count must be the last field")
        elif not F.is_field_type(ft) or (F.is_record(ft) and not ft._is_struct):
            raise TypeError(f"{name}.{fname}: unsupported field type {ft!r}")
        seen[fname] = ft
        out.append((fname, ft))
    return tuple(out), options


def _crc_value(crc: int | str) -> int:
    value = int(crc, 16) if isinstance(crc, str) else crc
    if not isinstance(value, int) or not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"a CRC is a 32-bit value, got {crc!r}")
    return value


def _configure(
    cls: type[Message],
    name: str,
    fields: tuple[tuple[str, FieldType], ...],
    is_struct: bool,
    header: tuple[str, ...],
    crc: int | str | None,
    options: dict[str, Any] | None,
    field_options: dict[str, dict[str, Any]],
) -> None:
    """Give ``cls`` its definition: name, fields, CRC, packing and codecs."""
    dynamic = not all(F.is_fixed(ft) for _, ft in fields)
    cls._name, cls._fields, cls._dynamic, cls._is_struct = name, fields, dynamic, is_struct
    cls._header = header
    cls._options = dict(options or {})
    cls._field_options = field_options
    if crc is not None:
        cls._crc = _crc_value(crc)
    else:
        text = F.canonical(cls)
        if not is_struct and header != REQUEST:  # (REQUEST keeps the CRCs of before headers)
            text = f"{','.join(header)}:{text}"
        cls._crc = zlib.crc32(text.encode())
    cls._name_crc = f"{name}_{cls._crc:08x}"
    names = {f for f, _ in fields}
    init: list[tuple[str, Any, bool]] = [(h, 0, False) for h in _HEADER_ATTRS if h not in names]
    for fname, ft in fields:
        dflt = field_options.get(fname, {}).get("default")
        if dflt is not None:
            init.append((fname, _option_default(ft, dflt, f"{name}.{fname}"), False))
        elif isinstance(ft, type) or isinstance(ft.default(), (list, dict)):
            init.append((fname, ft, True))  # mutable: a fresh one per instance
        else:
            init.append((fname, ft.default(), False))
    cls._init = tuple(init)
    # Construction: natively, as the type's __new__ (Constructor), with no __init__ after it.
    ctor = Constructor(
        name, [(n, (_factory(d) if fresh else d), fresh) for n, d, fresh in cls._init]
    )
    setattr(cls, "__new__", staticmethod(ctor))  # noqa: B010 (per-type constructor)
    setattr(cls, "__init__", object.__init__)  # noqa: B010
    if not is_struct:
        codec = Codec(cls, F.fields_spec(fields), list(header))
        cls._codec = codec
        native_encode = codec.encode

        def encode(self: Message, msg_id: int) -> bytes:
            return native_encode(self, msg_id)

        encode.__doc__ = Message.encode.__doc__
        setattr(cls, "encode", encode)  # noqa: B010 (the native codec, without a lookup)
        setattr(cls, "decode", staticmethod(codec.decode))  # noqa: B010
        REGISTRY[cls._name_crc] = cls


def _factory(ft: FieldType) -> Callable[[], Any]:
    """Makes a fresh zero value of ``ft`` (a list, a struct, a union) per instance."""
    return lambda: F.default(ft)


def _option_default(ft: FieldType, value: Any, where: str) -> Any:
    """A field's ``default`` option as a value (VPP writes booleans as ``"true"``)."""
    t = F.unalias(ft)
    if isinstance(t, Scalar) and t.is_bool and isinstance(value, str):
        if value not in ("true", "false"):
            raise ValueError(f"{where}: default {value!r} is not a boolean")
        return value == "true"
    if isinstance(t, Scalar) and t.is_float:
        return float(value)
    if isinstance(t, Enum) and isinstance(value, str):
        return t.py[value]
    return value


def _build(
    name: str,
    fields: Iterable[Any],
    is_struct: bool,
    header: tuple[str, ...],
    crc: int | str | None,
    options: dict[str, Any] | None,
) -> type[Message]:
    checked, opts = _check_fields(name, fields, header)
    slots = tuple(f for f, _ in checked if f not in _HEADER_ATTRS)
    cls: type[Message] = type(name, (Message,), {"__slots__": slots})
    _configure(cls, name, checked, is_struct, header, crc, options, opts)
    return cls


def define(
    name: str,
    fields: Iterable[Any] = (),
    *,
    header: tuple[str, ...] = REQUEST,
    crc: int | str | None = None,
    options: dict[str, Any] | None = None,
) -> type[Message]:
    """Define a message type: name, ordered typed fields (``(name, type)`` or ``(name,
    type, options)``), its header kind (:data:`REQUEST`, :data:`REPLY`, :data:`BARE`), the
    CRC its definition carries elsewhere (``crc=0x51077d14`` or ``"0x51077d14"``; else
    computed) and VPP's message options. For field types a type checker sees, write a class
    instead (see :class:`Message`)."""
    return _build(name, fields, False, header, crc, options)


def struct_type(name: str, fields: Iterable[Any], *, crc: int | str | None = None) -> type[Message]:
    """Define a struct type to nest in messages."""
    return _build(name, fields, True, (), crc, None)
