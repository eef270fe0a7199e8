"""Services as VPP defines them, on the server side: dumps (streams of details) and events.

**Dumps.** ``@server.handle(FooDump, reply=FooDetails, stream=True)`` registers a handler that
returns (or yields) ``FooDetails`` messages. The server sends each one with the request's
context, then closes the stream with a ``control_ping_reply`` carrying the same context,
VPP's barrier. ``vpp_papi`` (and VPP's own clients) send a ``control_ping`` with the dump's
context right after the dump and take *its* reply as the end of the stream: a ``control_ping``
whose context is that of the last dump of the same client is that terminator, and is not
answered a second time (the server's close already is its answer). Either way a client sees
exactly one ``control_ping_reply`` per dump, after every detail.

A stream never blocks the server and never loses a detail to a full client queue: details go
out while the client's queue is less than half full (the other half stays free for replies
and events meanwhile; one slot is always kept for the close); past that, the stream pauses
and the dispatch loop resumes it as the client reads (polling with a back-off from 0.5 ms
to ``death_poll``). A stream that makes no progress for
:attr:`Services.stream_stall` seconds (a client that stopped reading) is abandoned: the
handler's iterator is closed, ``dropped_sends`` counts one, and the close carries
``retval = STREAM_ABORTED``. A handler that raises before or during the stream is counted in
``handler_errors`` and logged; the details sent so far stay sent and the close carries
``retval = -1`` (``VNET_API_ERROR_UNSPECIFIED``), which :meth:`shmkit.api.Client.dump` raises.
The handler's iterator runs in the dispatch loop's thread, lazily: a generator holds no
lock between details. While a client's stream is paused, its later requests are served
meanwhile (their replies may come before the stream's last details, matched by context as
always: a ``control_ping`` with another context is no barrier for a paused stream), and a
client may have at most :attr:`Services.max_client_streams` paused streams: a dump beyond
them is closed at once with ``STREAM_ABORTED`` (a client asking dump after dump without
reading cannot pile up generators in the server). For a socket client (no shared-memory
queue) the room of its connection's output buffer stands in for the half queue.

VPP's ``stream_msg`` services (``"stream": true, "stream_msg": "foo_details"`` in an
``.api.json``: details closed by a reply rather than a ``control_ping_reply``) are
``@server.handle(FooGet, reply=FooGetReply, stream=FooDetails)``: the handler yields details
and the generator's return value (``return FooGetReply(retval=0, cursor=...)``) closes the
stream, ``FooGetReply(retval=0)`` if it returns nothing; a failure closes it with
``FooGetReply(retval=-1)`` (or another code, as above; ``FooGetReply()`` if it has no
``retval``). Such a stream gets no terminator-ping treatment.

**Events.** ``server.events(EventType, want=WantType, reply=WantReply)`` serves VPP's
``want_*`` registration: ``WantType`` has ``enable_disable`` and ``pid`` fields (as
``want_interface_events``); the client is registered for ``EventType`` while
``enable_disable`` is non-zero and answered with ``WantReply(retval=0)``.
``server.publish(event)`` sends the event with context 0 to the registered clients only,
never blocking (a full queue drops it, counted in ``dropped_sends`` and the client's
``dropped``); registrations end when their client deregisters, is reaped or dropped.

**Registration callbacks.** ``@server.on_register`` functions are called with the handle and
info of every client that registers, after its ``memclnt_create_reply`` was sent (so an event
sent from the callback reaches a client that already knows the message table).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shmkit.api import memclnt as mc
from shmkit.api.handle import Handle
from shmkit.api.messages import Message
from shmkit.api.state import COUNTERS

if TYPE_CHECKING:
    from shmkit._native import ClientTable, Outbox
    from shmkit.api.clients import ClientInfo
    from shmkit.api.throttle import Throttle
    from shmkit.api.trace import Trace

__all__ = ["STREAM_ABORTED", "Services", "StreamHandler"]

log = logging.getLogger("shmkit.api")

C = {name: i for i, name in enumerate(COUNTERS)}

#: ``retval`` of the close of a stream abandoned because its client stopped reading
#: (VPP's ``VNET_API_ERROR_QUEUE_FULL``).
STREAM_ABORTED = -107

#: A dump handler: returns (or is a generator of) the details.
StreamHandler = Callable[[Message, "ClientInfo"], "Iterable[Message] | None"]

_FIRST_WAIT = 0.0005  # the dispatch loop's wait while a stream is paused, doubled up to its slice


@dataclass(eq=False)
class _Stream:
    """One dump being sent: the rest of its details are ``items``."""

    client: ClientInfo
    context: int
    request: type[Message]
    items: Iterator[Message]
    end: type[Message] | None  # the closing reply type; None: control_ping_reply
    sent: int = 0
    progress: float = field(default_factory=time.monotonic)


class Services:
    """Dumps, events and registration callbacks of a server (mixed into ``Server``, whose
    state it shares: the attributes below)."""

    name: str
    pid: int
    death_poll: float
    report: Throttle
    _lock: threading.RLock
    _outbox: Outbox
    _counts: list[int]
    _clients: dict[int, ClientInfo]
    _by_handle: ClientTable  # handle -> ClientInfo
    _ids: dict[type[Message], int]
    _handlers: dict[int, tuple[type[Message], Any]]
    _services: dict[str, dict[str, Any]]  # get_api_json's services, by request name
    trace: Trace

    # The server's own, used here.
    register: Callable[..., None]
    send: Callable[[ClientInfo | Handle | int, Message], bool]
    _send_encoded: Callable[[ClientInfo, bytes], bool]
    _count_sent: Callable[[ClientInfo, int, int], None]
    drop_damaged: Callable[[ClientInfo, str], None]
    _transport_room: Callable[[ClientInfo], int]  # a socket client's room (the server's)

    #: seconds a paused stream may make no progress before it is abandoned
    stream_stall: float = 30.0
    #: paused streams a client may have; a dump beyond them is refused (STREAM_ABORTED)
    max_client_streams: int = 16

    def _init_services(self) -> None:
        self._streams: list[_Stream] = []
        self._stream_wait = 0.0  # 0: no stream is paused
        self._dump_contexts: dict[int, int] = {}  # client handle -> context of its last dump
        self._subscribers: dict[type[Message], dict[int, int]] = {}  # event -> {handle: pid}
        self._registrars: list[Callable[[Handle, ClientInfo], None]] = []

    # ---------------------------------------------------------------- dumps

    def _handle_stream(
        self, request: type[Message], reply: type[Message] | None, stream: bool | type[Message]
    ) -> Callable[[StreamHandler], StreamHandler]:
        # stream=True: reply is the details type, a control_ping_reply closes the stream.
        # stream=Details: the details type; a reply message closes it (VPP's stream_msg).
        details, end = (reply, None) if stream is True else (stream, reply)
        if not isinstance(details, type) or (stream is not True and end is None):
            raise TypeError(
                "a stream handler needs reply=<details type> with stream=True, or "
                "stream=<details type> with reply=<the closing reply type>"
            )

        def decorate(fn: StreamHandler) -> StreamHandler:
            self.register(request, details, end or mc.ControlPingReply)
            self._services[request._name] = (
                {"reply": details._name, "stream": True}
                if end is None
                else {"reply": end._name, "stream": True, "stream_msg": details._name}
            )

            def serve(msg: Message, client: ClientInfo) -> None:
                self._start_stream(fn, msg, client, request, end)

            # Not a native handler: the stream is sent from Python, in order with the rest.
            self._handlers[self._ids[request]] = (request, serve)
            return fn

        return decorate

    def _start_stream(
        self,
        fn: StreamHandler,
        msg: Message,
        client: ClientInfo,
        request: type[Message],
        end: type[Message] | None,
    ) -> None:
        context = msg.context
        handle = int(client.handle)
        if len(self._dump_contexts) > 2 * len(self._by_handle) + 64:
            self._dump_contexts = {
                h: c for h, c in self._dump_contexts.items() if h in self._by_handle
            }
        if end is None:  # only a dump is followed by a VPP client's terminator ping
            self._dump_contexts[handle] = context
        if sum(s.client is client for s in self._streams) >= self.max_client_streams:
            # A client that asks for dump after dump without reading would pile up
            # generators in the server: refused until its streams drain.
            self.report(
                "stream_limit",
                logging.WARNING,
                "API %s: refused a %s dump to client %r: %d of its streams are paused",
                self.name,
                request._name,
                client.name,
                self.max_client_streams,
            )
            self._close_stream(client, context, STREAM_ABORTED, end)
            return
        try:
            items = iter(fn(msg, client) or ())
        except Exception as exc:
            self._stream_failed(request, exc)
            self._close_stream(client, context, mc.UNSPECIFIED, end)
            return
        stream = _Stream(client, context, request, items, end)
        if not self._run_stream(stream):
            self._streams.append(stream)
            self._stream_wait = _FIRST_WAIT

    def _stream_ping(self, client: ClientInfo, context: int) -> bool:
        """Whether a ``control_ping`` is the terminator a VPP client sends after its dump
        (same client, same context): the stream's own close answers it."""
        handle = int(client.handle)
        if self._dump_contexts.get(handle) != context:
            return False
        del self._dump_contexts[handle]
        return True

    def _run_stream(self, stream: _Stream) -> bool:
        """Send what fits of a stream; returns whether it is finished."""
        c = stream.client
        if self._by_handle.get(int(c.handle)) is not c:  # it left, was reaped or dropped
            _close_quietly(stream.items)
            return True
        room = self._stream_room(c)
        if room is None:  # its queue was found damaged: the client was dropped
            _close_quietly(stream.items)
            return True
        final = None
        while room > 0:
            try:
                item = next(stream.items)
                item.context = stream.context
                self.send(c, item)  # a detail that cannot be encoded fails as a handler does
            except StopIteration as stop:
                final = stop.value  # a generator's return value: the closing reply
                break
            except Exception as exc:
                self._stream_failed(stream.request, exc)
                _close_quietly(stream.items)
                self._close_stream(c, stream.context, mc.UNSPECIFIED, stream.end)
                return True
            stream.sent += 1
            stream.progress = time.monotonic()
            room -= 1
        else:
            if time.monotonic() - stream.progress < self.stream_stall:
                return False  # paused: resumed when the client has read
            _close_quietly(stream.items)
            self._counts[C["dropped_sends"]] += 1
            c.dropped += 1
            self.report(
                "stream_stall",
                logging.WARNING,
                "API %s: abandoned a %s stream to client %r after %d details: it stopped reading",
                self.name,
                stream.request._name,
                c.name,
                stream.sent,
            )
            self._close_stream(c, stream.context, STREAM_ABORTED, stream.end)
            return True
        if (
            stream.end is not None
            and final is not None
            and type(final)._name_crc != stream.end._name_crc
        ):
            self._stream_failed(
                stream.request, TypeError(f"returned {final!r}, not a {stream.end._name}")
            )
            self._close_stream(c, stream.context, mc.UNSPECIFIED, stream.end)
            return True
        self._close_stream(c, stream.context, 0, stream.end, final)
        return True

    def _stream_room(self, c: ClientInfo) -> int | None:
        """How many details may go to ``c`` now; ``None`` if it was dropped meanwhile. A stream
        fills at most half of a client's queue, one slot of it kept for the close: the other
        half stays free for the replies and events the client gets meanwhile. For a client
        without a shared-memory queue (a socket client) its connection's output buffer
        decides."""
        queue = getattr(c, "queue", None)
        if queue is None:
            return self._transport_room(c)
        # What this client has in the outbox goes out first, so the queue's length is exact.
        flushed = self._outbox.flush_client(c)
        if flushed is not None:
            self._count_sent(c, flushed[0], flushed[1])
            if flushed[2]:
                self.drop_damaged(c, "a send found its queue corrupted")
                return None
        # Replies and events may fill the queue past its half: then nothing, for now.
        return max(0, int(queue.capacity) // 2 - len(queue) - 1)

    def _pump_streams(self) -> None:
        """Resume paused streams (the dispatch loop calls it while there are any)."""
        with self._lock:
            progressed, paused = False, []
            for stream in self._streams:
                sent = stream.sent
                if self._run_stream(stream):
                    progressed = True
                else:
                    progressed |= stream.sent > sent
                    paused.append(stream)
            self._streams = paused
            if not paused:
                self._stream_wait = 0.0
            elif progressed:
                self._stream_wait = _FIRST_WAIT
            else:
                self._stream_wait = min(self._stream_wait * 2, self.death_poll, 0.05)

    def _close_stream(
        self,
        client: ClientInfo,
        context: int,
        retval: int,
        end: type[Message] | None = None,
        final: Message | None = None,
    ) -> None:
        """Close a stream: a ``control_ping_reply`` (``end`` None), else the handler's
        returned reply (``final``) or an ``end`` carrying ``retval`` (if it has the field)."""
        if end is None:
            self.send(
                client,
                mc.ControlPingReply(
                    retval=retval,
                    client_index=int(client.handle),
                    vpe_pid=self.pid,
                    context=context,
                ),
            )
            return
        if final is None or retval != 0:
            has_retval = any(n == "retval" for n, _ in end._fields)
            final = end(retval=retval) if has_retval else end()
        final.context = context
        self.send(client, final)

    def _stream_failed(self, request: type[Message], exc: BaseException) -> None:
        self._counts[C["handler_errors"]] += 1
        self.report(
            f"handler:{request._name}",
            logging.ERROR,
            "API %s: stream handler for %s failed",
            self.name,
            request._name,
            exc_info=exc,
        )

    # ---------------------------------------------------------------- events

    def events(
        self,
        event: type[Message],
        *,
        want: type[Message],
        reply: type[Message],
    ) -> None:
        """Serve VPP's ``want_*`` registration for ``event``: a ``want`` request (with
        ``enable_disable`` and ``pid`` fields, as ``want_interface_events``) registers its
        client for the events :meth:`publish` sends (``enable_disable`` non-zero) or ends
        the registration (zero); it is answered with ``reply(retval=0)``."""
        fields = {n for n, _ in want._fields}
        if not {"enable_disable", "pid"} <= fields:
            raise TypeError(
                f"{want._name} needs enable_disable and pid fields (as VPP's want_* requests)"
            )
        if not any(n == "retval" for n, _ in reply._fields):
            raise TypeError(f"{reply._name} needs a retval field")
        subscribers = self._subscribers.setdefault(event, {})
        self.register(event, want, reply)
        self._services[want._name] = {"reply": reply._name, "events": [event._name]}

        def serve(msg: Message, client: ClientInfo) -> Message:
            handle = int(client.handle)
            if msg.enable_disable:  # type: ignore[attr-defined]
                subscribers[handle] = msg.pid  # type: ignore[attr-defined]
            else:
                subscribers.pop(handle, None)
            return reply(retval=0)

        self._handlers[self._ids[want]] = (want, serve)

    def publish(self, event: Message) -> int:
        """Send ``event`` with context 0 to every client registered for its type (see
        :meth:`events`), never blocking: a full queue drops it (counted). Returns how many
        queued it. Callable from any thread."""
        subscribers = self._subscribers.get(type(event))
        if subscribers is None:
            raise ValueError(f"{type(event)._name} is not an event type of this server")
        event.context = 0
        data = event.encode(self._ids[type(event)])
        sent = 0
        with self._lock:
            for handle in list(subscribers):
                c = self._by_handle.get(handle)
                if c is None:  # deregistered, reaped or dropped: registration ended
                    del subscribers[handle]
                    continue
                if c.queue is None:  # a socket client: its connection takes it or drops it
                    sent += self._send_encoded(c, data)
                    continue
                if self.trace.enabled:
                    self.trace.record("tx", data)
                # Flushed at once (with what the client had in the outbox before it, in
                # order), so the count is exact even inside a handler's batch.
                self._outbox.push(c, data)
                n, dropped, damaged = self._outbox.flush_client(c) or (0, 0, False)
                self._count_sent(c, n, dropped)
                if damaged:
                    self.drop_damaged(c, "a send found its queue corrupted")
                elif n and not dropped:
                    sent += 1
        return sent

    def subscribers(self, event: type[Message]) -> list[ClientInfo]:
        """The clients registered for ``event``."""
        with self._lock:
            subscribers = self._subscribers.get(event, {})
            return [self._by_handle[h] for h in list(subscribers) if h in self._by_handle]

    # ---------------------------------------------------------------- registration

    def on_register(
        self, fn: Callable[[Handle, ClientInfo], None]
    ) -> Callable[[Handle, ClientInfo], None]:
        """Decorator: called with the handle and info of every client that registers, after
        its registration reply was sent (in the dispatch loop's thread; an exception is
        logged and changes nothing)."""
        self._registrars.append(fn)
        return fn

    def _registered(self, client: ClientInfo) -> None:
        for fn in self._registrars:
            try:
                fn(client.handle, client)
            except Exception:
                self.report(
                    "registrar",
                    logging.ERROR,
                    "API %s: registration callback failed",
                    self.name,
                    exc_info=True,
                )

    @property
    def open_streams(self) -> int:
        """How many dumps are paused, waiting for their client to read."""
        return len(self._streams)


def _close_quietly(items: Iterator[Message]) -> None:
    """Close a handler's generator (its ``finally`` runs); a failure there is only logged."""
    close = getattr(items, "close", None)
    if close is not None:
        try:
            close()
        except Exception:
            log.exception("API: closing a stream handler failed")
