"""The server's catalog: its message types and their ids, modules, versions and handlers.

``register`` gives types ids (VPP's builtin memclnt ids 1-28, then user types from
:data:`FIRST_USER_ID`, a module's types in one contiguous block that ``get_first_msg_id``
names); ``handle`` attaches a handler (and, for requests with VPP's request header, an entry
of the native dispatch table); ``message_table``, ``api_versions`` and ``api_json`` describe
it all, as the memclnt builtins answer clients (``get_api_json`` in VPP's ``.api.json``
shape, which ``vpp_papi`` bootstraps from).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, overload

from shmkit.api import apijson
from shmkit.api import memclnt as mc
from shmkit.api.messages import REQUEST, Message

if TYPE_CHECKING:
    from shmkit.api.clients import ClientInfo
    from shmkit.api.services import StreamHandler
    from shmkit.api.trace import Trace

__all__ = ["FIRST_USER_ID", "Catalog", "Handler"]

#: The first id of a user type (VPP's memclnt module holds 1-28).
FIRST_USER_ID = 100

#: A request handler: returns the reply, or None.
Handler = Callable[[Message, "ClientInfo"], "Message | None"]


class Catalog:
    """Message types, modules and handlers of a server (mixed into ``Server``)."""

    name: str
    trace: Trace
    _lock: threading.RLock

    def _handle_stream(
        self, request: type[Message], reply: type[Message] | None, stream: bool | type[Message]
    ) -> Callable[[StreamHandler], StreamHandler]:
        """A dump's or stream's handler (the server's :class:`~shmkit.api.services.Services`)."""
        raise NotImplementedError

    def _init_catalog(self) -> None:
        self._handlers: dict[int, tuple[type[Message], Handler | None]] = {}
        # Requests with a user handler, for the native dispatch loop (ApiPort.serve):
        # id -> (type, decoder, handler, reply type, reply codec, reply id).
        self._native: dict[int, tuple[Any, ...]] = {}
        self._ids: dict[type[Message], int] = {}
        self._modules: dict[str, int] = {"memclnt": 1}
        # Module versions (api_versions) and services (get_api_json), by name.
        self._versions: dict[str, tuple[int, int, int]] = {"memclnt": mc.MEMCLNT_VERSION}
        self._services: dict[str, dict[str, Any]] = dict(mc.SERVICES)
        self._module_end: dict[str, int] = {}  # the id after each module's block
        self._next_id = FIRST_USER_ID
        # Reply types with a retval: a failed handler's client gets one with retval -1.
        self._error_replies: dict[type[Message], type[Message]] = {}
        for t, i in mc.BUILTIN_IDS.items():
            self._ids[t] = i
            self._handlers[i] = (t, None)

    def register(
        self,
        *types: type[Message],
        module: str | None = None,
        version: tuple[int, int, int] | None = None,
    ) -> None:
        """Add message types to the table (ids are assigned in order). With ``module``, the
        types get a contiguous block whose first id ``get_first_msg_id(module)`` returns, so
        a client finds each type at ``first + k`` (VPP's rule). A module may be registered in
        several calls only while its block is the last one: once another type got an id
        after it, adding a new type to it raises ``ValueError`` (register a module's types
        in one call, or in calls with nothing in between). ``version`` (major, minor, patch)
        is the module's, as ``api_versions`` reports it and clients check it
        (``Client.connect(..., require=...)``); 1.0.0 if never given, and once given it
        cannot change (``ValueError``)."""
        if version is not None:
            if module is None:
                raise ValueError("a version belongs to a module: give module= too")
            if len(version) != 3 or not all(type(v) is int and 0 <= v < 1 << 32 for v in version):
                raise ValueError(f"version must be (major, minor, patch) of u32s, not {version!r}")
        with self._lock:
            if version is not None:
                known = self._versions.get(module)  # type: ignore[arg-type]
                if known is not None and known != tuple(version):
                    raise ValueError(f"module {module!r} is version {known}, not {version}")
                self._versions[module] = tuple(version)  # type: ignore[index, assignment]
            if module is not None:
                new = [t for t in dict.fromkeys(types) if t not in self._ids]
                if module not in self._modules:
                    self._modules[module] = self._next_id
                elif new and self._module_end.get(module) != self._next_id:
                    raise ValueError(
                        f"module {module!r} already has ids {self._modules[module]}.."
                        f"{self._module_end.get(module, self._modules[module]) - 1} and other "
                        f"types were registered after them: its ids must stay one block, so "
                        f"{', '.join(t._name for t in new)} cannot join it"
                    )
            for t in types:
                if t._is_struct:
                    raise TypeError(f"{t._name} is a struct type, not a message")
                if t in self._ids:
                    continue
                if any(o.name_crc() == t.name_crc() for o in self._ids):
                    raise ValueError(f"another type is registered as {t.name_crc()}")
                self._ids[t] = self._next_id
                self._handlers[self._next_id] = (t, None)
                self._next_id += 1
            if module is not None:
                self._module_end[module] = self._next_id
            self.trace.table = self.message_table()

    @overload
    def handle(
        self,
        request: type[Message],
        *,
        reply: type[Message] | None = None,
        stream: Literal[False] = False,
    ) -> Callable[[Handler], Handler]: ...

    @overload
    def handle(
        self, request: type[Message], *, reply: type[Message], stream: Literal[True] | type[Message]
    ) -> Callable[[StreamHandler], StreamHandler]: ...

    def handle(
        self,
        request: type[Message],
        *,
        reply: type[Message] | None = None,
        stream: bool | type[Message] = False,
    ) -> Callable[[Handler], Handler] | Callable[[StreamHandler], StreamHandler]:
        """Decorator: ``handler(msg, client) -> reply | None`` for ``request``. If the
        handler raises and ``reply`` has a ``retval`` field, the client gets a ``reply`` with
        ``retval = -1`` (else no reply); either way the failure is counted and logged.

        With ``stream=True`` (a dump), the handler returns or yields the details (of type
        ``reply``); they are sent with the request's context and a ``control_ping_reply``
        closes the stream. With ``stream=DetailsType`` (VPP's ``stream_msg`` services), the
        handler yields details and a ``reply`` closes the stream: the generator's return
        value, or ``reply(retval=0)`` (:mod:`shmkit.api.services`)."""
        if stream is not False:
            return self._handle_stream(request, reply, stream)

        def decorate(fn: Handler) -> Handler:
            types = [request] + ([reply] if reply is not None else [])
            self.register(*types)
            self._handlers[self._ids[request]] = (request, fn)
            self._services[request._name] = {"reply": reply._name if reply else "null"}
            if request._header == REQUEST:  # (the native loop reads that header)
                self._native[self._ids[request]] = (
                    request,
                    request._codec or request.decode,
                    fn,
                    reply,
                    reply._codec if reply is not None else None,
                    self._ids[reply] if reply is not None else 0,
                )
            if reply is not None and any(n == "retval" for n, _ in reply._fields):
                self._error_replies[request] = reply
            return fn

        return decorate

    def message_table(self) -> dict[int, str]:
        """``{id: name_crc}`` of every known message."""
        return {i: t.name_crc() for t, i in self._ids.items()}

    def msg_id(self, t: type[Message]) -> int:
        return self._ids[t]

    def api_versions(self) -> dict[str, tuple[int, int, int]]:
        """Every module's version, as ``api_versions`` reports them: memclnt's is VPP's, a
        module registered without one is 1.0.0."""
        with self._lock:
            return {m: self._versions.get(m, (1, 0, 0)) for m in self._modules}

    def api_json(self) -> str:
        """Every registered message type as VPP's ``.api.json`` modules in one JSON array,
        as ``get_api_json`` returns it (``vpp_papi`` bootstraps from it): memclnt, then each
        module registered by name; types registered without a module go in one named after
        this API."""
        with self._lock:
            firsts = sorted((base, m) for m, base in self._modules.items() if m != "memclnt")
            groups: dict[str, list[type[Message]]] = {"memclnt": []}
            for t, i in sorted(self._ids.items(), key=lambda ti: ti[1]):
                if t in mc.BUILTIN_IDS:
                    module = "memclnt"
                else:
                    module = next((m for base, m in reversed(firsts) if base <= i), self.name)
                groups.setdefault(module, []).append(t)
            return apijson.dumps(
                [
                    apijson.export(
                        types,
                        self._services,
                        module,
                        version=self._versions.get(module, (1, 0, 0)),
                    )
                    for module, types in groups.items()
                ]
            )
