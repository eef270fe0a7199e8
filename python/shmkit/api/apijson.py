"""VPP's ``.api.json`` definitions: load them into message types, export types as them.

VPP's build turns each ``.api`` file into a ``.api.json`` module (``vpp_papi`` ships
``memclnt.api.json``; a VPP install has the rest under ``/usr/share/vpp/api``), and a VPP
server returns all of its modules as one JSON array to ``get_api_json``. A module holds::

    {"types": [[name, [type, field, ...], ...], ...],
     "messages": [[name, ["u16", "_vl_msg_id"], ["u32", "context"], ...,
                   {"crc": "0x...", "options": {...}}], ...],
     "unions": [[name, [type, member], ...], ...],
     "enums": [[name, [member, value], ..., {"enumtype": "u32"}], ...],
     "enumflags": [...as enums...],
     "aliases": {name: {"type": "u8", "length": 4}, ...},
     "services": {request: {"reply": name, "stream": true, "stream_msg": name,
                            "events": [names]}, ...},
     "options": {"version": "x.y.z"}, "vl_api_version": "0x...",
     "imports": [...], "counters": [...], "paths": [...]}

A field is ``[type, name]``, ``[type, name, n]`` (a fixed array; a string of ``n`` bytes;
``n = 0``: a variable-length string, or an array up to the end of the message), or ``[type,
name, 0, count_field]`` (counted by an earlier field), optionally followed by an options
dict (``{"default": ...}``). Types are referenced as ``vl_api_<name>_t``. A message lists
its header fields (``_vl_msg_id``, then ``client_index`` and/or ``context``); they become its
header kind (:data:`~shmkit.api.messages.REQUEST` ...). CRCs are kept as the file carries
them, so a shmkit client and server agree with VPP's message table.

:func:`load` returns an :class:`ApiModule`; :func:`export` writes message types (and the
structs, enums, unions and aliases they use) as one module; :func:`dumps` makes the text.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shmkit.api import fields as F
from shmkit.api.messages import REGISTRY, Message, define, struct_type

__all__ = ["ApiModule", "dumps", "export", "load", "merge"]

_HEADER_TYPES = {"_vl_msg_id": "u16", "client_index": "u32", "context": "u32"}
_SERVICE_KEYS = {"reply", "stream", "stream_msg", "events"}


@dataclass
class ApiModule:
    """Definitions loaded from ``.api.json``: message types by name (in file order), the
    named types they use (structs, enums, unions, aliases), services and options."""

    name: str
    messages: dict[str, type[Message]] = field(default_factory=dict)
    types: dict[str, Any] = field(default_factory=dict)
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    vl_api_version: str = ""

    def __getitem__(self, name: str) -> type[Message]:
        """The message type ``name``; ``KeyError`` if the definitions have none."""
        try:
            return self.messages[name]
        except KeyError:
            raise KeyError(f"no message {name!r} in API module {self.name!r}") from None

    def __contains__(self, name: object) -> bool:
        return name in self.messages

    @property
    def version(self) -> tuple[int, int, int]:
        """``options.version`` as a triple (0.0.0 if absent or malformed)."""
        parts = str(self.options.get("version", "")).split(".")
        try:
            major, minor, patch = (int(p) for p in parts)
        except ValueError:
            return (0, 0, 0)
        return (major, minor, patch)


# ---------------------------------------------------------------- loading


def load(
    src: str | os.PathLike[str] | Mapping[str, Any] | list[Any],
    *,
    name: str | None = None,
    reuse: bool = True,
) -> ApiModule:
    """Load ``.api.json`` definitions: a file path, its text, the parsed dict, or a list of
    modules or paths (``get_api_json``'s array; a VPP file with the files it imports, whose
    types it uses): a list is merged. ``name`` names the module (default: the first file's
    name without ``.api.json``). With ``reuse``, a message whose ``name_crc`` and layout match
    a type already defined in this process is that type (so loading ``memclnt.api.json`` gives
    :mod:`shmkit.api.memclnt`'s classes). ``ValueError`` for a malformed definition (named)."""
    names: list[str] = []
    modules = [_module(s, names) for s in (src if isinstance(src, list) else [src])]
    return _Loader(name or (names[0] if names else ""), modules, reuse).run()


def _module(src: Any, names: list[str]) -> Mapping[str, Any]:
    """One module from a path, JSON text (an array's modules merged) or a dict."""
    data: Any = src
    if isinstance(src, os.PathLike) or (
        isinstance(src, str) and src.lstrip()[:1] not in ("{", "[")
    ):
        path = Path(src)
        names.append(path.name.split(".api.json")[0].split(".json")[0])
        data = json.loads(path.read_text())
    elif isinstance(src, str):
        data = json.loads(src)
    if isinstance(data, list):
        if not all(isinstance(m, Mapping) for m in data):
            raise ValueError("an .api.json module is a JSON object (or an array of them)")
        return merge(data)
    if not isinstance(data, Mapping):
        raise ValueError("an .api.json module is a JSON object (or an array of them)")
    return data


class _Loader:
    def __init__(self, name: str, modules: list[Mapping[str, Any]], reuse: bool) -> None:
        self.out = ApiModule(name)
        self.modules = modules
        self.reuse = reuse
        self.pending: dict[str, tuple[str, Any]] = {}  # vl_api_x_t -> (kind, definition)
        self.done: dict[str, Any] = {}
        self.busy: set[str] = set()

    def run(self) -> ApiModule:
        for m in self.modules:
            for kind in ("types", "unions", "enums", "enumflags"):
                for d in _list(m, kind):
                    if not isinstance(d, list) or not d or not isinstance(d[0], str):
                        raise ValueError(f"{kind}: malformed definition {d!r}")
                    self.pending[_ref(d[0])] = (kind, d)
            aliases = m.get("aliases", {})
            if not isinstance(aliases, Mapping):
                raise ValueError("aliases: expected an object")
            for aname, d in aliases.items():
                self.pending[_ref(aname)] = ("aliases", [aname, d])
        for ref in self.pending:
            self.resolve(ref, "types")
        for m in self.modules:
            for d in _list(m, "messages"):
                cls = self.message(d)
                self.out.messages[cls._name] = cls
            services = m.get("services", {})
            if not isinstance(services, Mapping):
                raise ValueError("services: expected an object")
            for req, spec in services.items():
                if not isinstance(spec, Mapping) or not set(spec) <= _SERVICE_KEYS:
                    raise ValueError(f"services.{req}: malformed {spec!r}")
                self.out.services[req] = dict(spec)
            if isinstance(m.get("options"), Mapping):
                self.out.options.update(m["options"])
            self.out.vl_api_version = str(m.get("vl_api_version", self.out.vl_api_version))
        return self.out

    def resolve(self, ref: str, where: str) -> Any:
        """The field type named ``ref`` (a scalar or ``vl_api_<name>_t``)."""
        if ref in F.SCALARS:
            return F.SCALARS[ref]
        if ref in self.done:
            return self.done[ref]
        if ref not in self.pending:
            raise ValueError(f"{where}: unknown type {ref!r}")
        if ref in self.busy:
            raise ValueError(f"{where}: type {ref!r} contains itself")
        self.busy.add(ref)
        kind, d = self.pending[ref]
        tname = d[0]
        if kind == "types":
            specs = [self.field(f, f"{tname}") for f in d[1:] if not isinstance(f, Mapping)]
            t: Any = struct_type(tname, specs)
        elif kind == "unions":
            members = [
                (f[1], self.resolve(f[0], f"{tname}.{f[1]}"))
                for f in d[1:]
                if isinstance(f, list) and len(f) >= 2
            ]
            crc = next((x["crc"] for x in d[1:] if isinstance(x, Mapping) and "crc" in x), None)
            t = F.union_type(tname, members, crc=int(crc, 16) if crc else None)
        elif kind in ("enums", "enumflags"):
            base = "u32"
            pairs = []
            for f in d[1:]:
                if isinstance(f, Mapping):
                    base = f.get("enumtype", base)
                elif isinstance(f, list) and len(f) == 2:
                    pairs.append((str(f[0]), int(f[1])))
                else:
                    raise ValueError(f"enum {tname}: malformed member {f!r}")
            if base not in F.SCALARS:
                raise ValueError(f"enum {tname}: unknown base type {base!r}")
            t = F.enum_type(tname, pairs, F.SCALARS[base], flags=kind == "enumflags")
        else:  # alias
            spec = d[1]
            if not isinstance(spec, Mapping) or "type" not in spec:
                raise ValueError(f"alias {tname}: malformed {spec!r}")
            target = self.resolve(_ref_of(spec["type"]), f"alias {tname}")
            if "length" in spec:
                target = F.array(target, int(spec["length"]))
            t = F.alias(tname, target)
        self.busy.discard(ref)
        self.done[ref] = t
        self.out.types[tname] = t
        return t

    def field(self, f: Any, where: str) -> tuple[Any, ...]:
        """``(name, type)`` or ``(name, type, options)`` of one ``[type, name, ...]``."""
        if not isinstance(f, list) or len(f) < 2:
            raise ValueError(f"{where}: malformed field {f!r}")
        opts = [x for x in f if isinstance(x, Mapping)]
        parts = [x for x in f if not isinstance(x, Mapping)]
        tref, fname = parts[0], parts[1]
        if not isinstance(tref, str) or not isinstance(fname, str):
            raise ValueError(f"{where}: malformed field {f!r}")
        here = f"{where}.{fname}"
        if tref == "string":
            if len(parts) != 3 or not isinstance(parts[2], int):
                raise ValueError(f"{here}: a string field needs a length (0: variable)")
            ft: Any = F.string(parts[2])
        else:
            item = self.resolve(_ref_of(tref), here)
            if len(parts) == 2:
                ft = item
            elif len(parts) == 3:
                n = parts[2]
                if not isinstance(n, int) or n < 0:
                    raise ValueError(f"{here}: bad array length {n!r}")
                ft = F.array(item, n) if n else F.tail(item)
            elif len(parts) == 4:
                ft = F.vla(item, str(parts[3]))
            else:
                raise ValueError(f"{here}: malformed field {f!r}")
        return (fname, ft, dict(opts[0])) if opts else (fname, ft)

    def message(self, d: Any) -> type[Message]:
        if not isinstance(d, list) or not d or not isinstance(d[0], str):
            raise ValueError(f"messages: malformed definition {d!r}")
        mname = d[0]
        meta: dict[str, Any] = {}
        specs = []
        for f in d[1:]:
            if isinstance(f, Mapping):
                meta.update(f)
            else:
                specs.append(f)
        header: list[str] = []
        for f in specs:
            if (
                isinstance(f, list)
                and len(f) == 2
                and f[1] in _HEADER_TYPES
                and f[1] not in header
                and f[0] == _HEADER_TYPES[f[1]]
                and (header or f[1] == "_vl_msg_id")
            ):
                header.append(f[1])
            else:
                break
        if not header:
            raise ValueError(f"message {mname}: no _vl_msg_id header field")
        fields = [self.field(f, mname) for f in specs[len(header) :]]
        crc = meta.get("crc")
        try:
            crc_value = int(crc, 16) if crc is not None else None
        except (TypeError, ValueError):
            raise ValueError(f"message {mname}: bad crc {crc!r}") from None
        known = REGISTRY.get(f"{mname}_{crc_value:08x}") if crc_value is not None else None
        cls = define(
            mname,
            fields,
            header=tuple(header),
            crc=crc_value,
            options=dict(meta.get("options") or {}),
        )
        if self.reuse and known is not None and _same(known, cls):
            REGISTRY[cls._name_crc] = known
            return known
        return cls


def _same(a: type[Message], b: type[Message]) -> bool:
    return a._header == b._header and F.canonical(a) == F.canonical(b)


def _list(m: Mapping[str, Any], key: str) -> list[Any]:
    v = m.get(key, [])
    if not isinstance(v, list):
        raise ValueError(f"{key}: expected a list")
    return v


def _ref(name: str) -> str:
    return f"vl_api_{name}_t"


def _ref_of(tref: str) -> str:
    """A field's type as written (``u32``, ``vl_api_foo_t``; a bare ``foo`` is accepted)."""
    if tref in F.SCALARS or (tref.startswith("vl_api_") and tref.endswith("_t")):
        return tref
    return _ref(tref)


# ---------------------------------------------------------------- export


def export(
    types: Iterable[type[Message]],
    services: Mapping[str, Mapping[str, Any]] | None = None,
    module: str = "shmkit",
    *,
    version: tuple[int, int, int] = (1, 0, 0),
) -> dict[str, Any]:
    """The ``.api.json`` module (a dict) of message ``types``: their header fields, fields,
    CRCs and options, and the structs, enums, unions and aliases they use. ``services`` maps
    a request name to ``{"reply": name, "stream": bool, "stream_msg": name, "events":
    [names]}`` (requests not among ``types`` are left out). ``module`` is recorded in no
    field (VPP's modules are named by their file) but feeds ``vl_api_version``."""
    ex = _Exporter()
    messages = []
    names = set()
    for t in types:
        if not (isinstance(t, type) and issubclass(t, Message)) or t._is_struct:
            raise TypeError(f"not a message type: {t!r}")
        if t._name in names:
            raise ValueError(f"two message types named {t._name!r}")
        names.add(t._name)
        row: list[Any] = [t._name]
        row += [[_HEADER_TYPES[h], h] for h in t._header]
        row += [ex.field(fname, ft, t._field_options.get(fname)) for fname, ft in t._fields]
        row.append({"crc": f"0x{t._crc:08x}", "options": dict(t._options)})
        messages.append(row)
    svc: dict[str, dict[str, Any]] = {}
    for req, spec in (services or {}).items():
        if req not in names:
            continue
        extra = set(spec) - _SERVICE_KEYS
        if extra:
            raise ValueError(f"services.{req}: unknown keys {sorted(extra)}")
        svc[req] = dict(spec)
    crc = zlib.crc32(module.encode())
    for row in messages:
        crc = zlib.crc32(f"{row[0]}_{row[-1]['crc']}".encode(), crc)
    return {
        "types": ex.types,
        "messages": messages,
        "unions": ex.unions,
        "enums": ex.enums,
        "enumflags": ex.enumflags,
        "services": svc,
        "options": {"version": ".".join(str(v) for v in version)},
        "aliases": ex.aliases,
        "vl_api_version": f"0x{crc:08x}",
        "imports": [],
        "counters": [],
        "paths": [],
    }


def merge(modules: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """One module holding the definitions of several (``get_api_json``'s array as one
    ``.api.json`` file, which ``vpp_papi``'s ``apifiles=`` reads). A type defined by several
    modules (the same definition) is kept once."""
    out: dict[str, Any] = {
        "types": [],
        "messages": [],
        "unions": [],
        "enums": [],
        "enumflags": [],
        "services": {},
        "options": {},
        "aliases": {},
        "vl_api_version": "",
        "imports": [],
        "counters": [],
        "paths": [],
    }
    seen: dict[tuple[str, str], Any] = {}
    crc = 0
    for m in modules:
        for key in ("types", "messages", "unions", "enums", "enumflags"):
            for d in _list(m, key):
                if not isinstance(d, list) or not d:
                    raise ValueError(f"{key}: malformed definition {d!r}")
                known = seen.setdefault((key, str(d[0])), d)
                if known is d:
                    out[key].append(d)
                elif known != d:
                    raise ValueError(f"{key}: two different definitions of {d[0]!r}")
        out["services"].update(m.get("services", {}))
        out["aliases"].update(m.get("aliases", {}))
        out["options"] = dict(m.get("options", out["options"]))
        crc = zlib.crc32(str(m.get("vl_api_version", "")).encode(), crc)
    out["vl_api_version"] = f"0x{crc:08x}"
    return out


def dumps(modules: Mapping[str, Any] | list[Mapping[str, Any]]) -> str:
    """The JSON text of a module (or of an array of modules, as ``get_api_json`` sends)."""
    return json.dumps(modules, indent=None, separators=(",", ":"))


class _Exporter:
    """Collects the named types that messages use, each once, dependencies first."""

    def __init__(self) -> None:
        self.types: list[Any] = []
        self.unions: list[Any] = []
        self.enums: list[Any] = []
        self.enumflags: list[Any] = []
        self.aliases: dict[str, Any] = {}
        self.seen: dict[str, Any] = {}

    def name(self, t: Any) -> str:
        """The type as a field names it, exporting its definition on first sight."""
        if isinstance(t, F.Scalar):
            return t.name
        if F.is_record(t) or F.is_union(t):
            tname = t._name
        elif isinstance(t, (F.Enum, F.Alias)):
            tname = t.name
        else:
            raise ValueError(f"{t!r} has no name in .api.json")
        known = self.seen.get(tname)
        if known is not None:
            if F.canonical(known) != F.canonical(t):
                raise ValueError(f"two different types are named {tname!r}")
            return _ref(tname)
        self.seen[tname] = t
        rows: list[Any]
        if F.is_record(t):
            rows = [self.field(n, ft, t._field_options.get(n)) for n, ft in t._fields]
            self.types.append([tname, *rows])
        elif F.is_union(t):
            rows = [[self.name_of_fixed(ft, f"{tname}.{n}"), n] for n, ft in t._members]
            if t._crc is not None:
                rows.append({"crc": f"0x{t._crc:08x}"})
            self.unions.append([tname, *rows])
        elif isinstance(t, F.Enum):
            row = [tname, *([n, v] for n, v in t.members), {"enumtype": t.base.name}]
            (self.enumflags if t.flags else self.enums).append(row)
        else:
            target = t.target
            if isinstance(target, F.Array):
                spec = {"type": self.name(target.item), "length": target.length}
            else:
                spec = {"type": self.name(target)}
            self.aliases[tname] = spec
        return _ref(tname)

    def name_of_fixed(self, ft: Any, where: str) -> str:
        if isinstance(ft, (F.Array, F.String)):
            raise ValueError(f"{where}: .api.json unions take named types only, got {ft!r}")
        return self.name(ft)

    def field(self, fname: str, ft: Any, options: Mapping[str, Any] | None) -> list[Any]:
        if isinstance(ft, F.String):
            row: list[Any] = ["string", fname, ft.size]
        elif isinstance(ft, F.VarString):
            row = ["string", fname, 0]
        elif isinstance(ft, F.Array):
            row = [self.name(ft.item), fname, ft.length]
        elif isinstance(ft, F.Vla):
            row = [self.name(ft.item), fname, 0, ft.length_field]
        elif isinstance(ft, F.Tail):
            row = [self.name(ft.item), fname, 0]
        else:
            row = [self.name(ft), fname]
        if options:
            row.append(dict(options))
        return row
