"""The binary-API server: the data plane's side of VPP's memclnt model, without its weak spots.

One API region (``/dev/shm/<root>-<name>``) holds the message rings, the server's input queue,
the shared state (:mod:`shmkit.api.state`) and one input queue per client. Clients allocate a
request from the client ring pool, enqueue its 8-byte reference on the server's input queue;
the server dispatches it to a handler and sends the reply the same way into the client's
queue.

Where shmkit does better than VPP:

* sends to clients never block: a full client queue drops the message, counted per client
  and in ``dropped_sends`` (VPP's blocking add lets one stuck client hang the data plane);
* a killed client is reaped at once: each registration holds a pidfd, polled every
  ``death_poll`` seconds (VPP notices after 30-50 s of missed keepalives); keepalive pings
  still run, for clients in other pid namespaces and for "lazy" detection;
* a new server takes over a surviving region: it bumps the epoch (so old handles are
  rejected), drains and frees whatever was queued for the dead server, removes the queues of
  dead clients, and tells the living ones, who see the new epoch within a second;
* everything a client sends is validated: references (by the message rings), message ids,
  lengths, handles and epochs; failures are counted, never fatal;
* nothing a client can write is trusted (:mod:`shmkit.api.guard`): the server keeps private
  copies of the ring and queue geometry, the state, the client table, the epoch and the
  counters, checks the shared ones every ``death_poll`` and repairs them; a client whose
  own queue is damaged is dropped, never the server. No error leaves the dispatch loop: a
  failed step is counted (``loop_errors``), logged and the loop goes on;
* a handler that raises is counted (``handler_errors``) and logged; if its reply type has a
  ``retval`` field (VPP's convention), the client gets that reply with ``retval = -1``
  (``VNET_API_ERROR_UNSPECIFIED``) at once, else no reply;
* a full client table refuses a registration with ``TABLE_TOO_BIG`` (the client raises
  :class:`~shmkit.CapacityError`); a producer's claim that stalls the input queue for
  ``claim_timeout`` seconds is skipped.

Cross-user sharing is explicit, as VPP's ``api-segment { uid gid }``: ``uid=``, ``gid=`` and
``mode=`` go to the API region (default 0o600: the server's user only).

With ``socket=PATH`` the server also serves VPP's socket transport (stock ``vpp_papi``
connects there): ``socket_mode`` is the socket file's mode, ``socket_uids`` an optional
allow-list of peer uids (``SO_PEERCRED``), ``max_frame`` the largest message a socket client
may send. Socket clients share the handler registry, ``send``/``broadcast`` and ``on_reap``
with the shared-memory ones (:mod:`shmkit.api.sockserver`).

This module is the dispatch loop, the handlers and sending; registration, liveness and the
clients' queues are :mod:`shmkit.api.clients`, taking a region over
:mod:`shmkit.api.takeover`, the integrity checks :mod:`shmkit.api.guard`.

The dispatch loop runs natively (:meth:`shmkit._native.ApiPort.serve`): requests with a
handler are decoded by their type's native codec, handed to the handler, and the reply is
encoded into a message ring, with no Python of ours in between; memclnt messages, unknown
ids, stale handles and garbage go through :meth:`Server._dispatch`, in order. Replies and
events of a batch wait in a native outbox and go out per client with one queue operation.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from shmkit import Region
from shmkit._native import ApiPort, ClientTable
from shmkit._native import process_alive as _alive
from shmkit._native import process_start_time as _proc_start
from shmkit.api import memclnt as mc
from shmkit.api.catalog import Catalog, Handler
from shmkit.api.clients import ClientInfo, ClientLifecycle
from shmkit.api.guard import Guard
from shmkit.api.handle import Handle
from shmkit.api.messages import HEADER, REQUEST, Message, MessageError
from shmkit.api.msgtable import TableObjects
from shmkit.api.services import Services
from shmkit.api.sockserver import DEFAULT_MAX_FRAME, SockServer
from shmkit.api.state import COUNTERS, ApiState, StateImage
from shmkit.api.takeover import (
    open_input,
    open_rings,
    previous_server,
)
from shmkit.api.throttle import Throttle
from shmkit.api.trace import Trace
from shmkit.errors import CorruptionError, RegionTruncatedError, ServerRunningError

__all__ = ["ClientInfo", "Server", "ServerRunningError"]

log = logging.getLogger("shmkit.api")

C = {name: i for i, name in enumerate(COUNTERS)}
_INVALID, _UNKNOWN, _MISSING = C["invalid_messages"], C["unknown_messages"], C["missing_clients"]
_REQUESTS, _REPLIES, _DROPPED = C["requests"], C["replies"], C["dropped_sends"]
_HANDLER_ERRORS = C["handler_errors"]
_unpack_header = HEADER.unpack_from
_IDS = mc.BUILTIN_IDS
_CREATES = (_IDS[mc.MemclntCreate], _IDS[mc.MemclntCreateV2])
_DELETE = _IDS[mc.MemclntDelete]
_KEEPALIVE_REPLY = _IDS[mc.MemclntKeepaliveReply]
#: Errors that end the dispatch loop; anything else (a Rust panic included) is counted.
# What ends the loop: the user's stop, and a region that shrank under us (every object the
# server serves from lives in it: there is nothing left to repair or to serve).
_FATAL = (KeyboardInterrupt, SystemExit, GeneratorExit, RegionTruncatedError)


class Server(ClientLifecycle, Services, Catalog):
    """A binary-API server.

    ``Server(name, root=...)`` creates the API region (or takes over a surviving one).
    Register handlers with ``@server.handle(RequestType, reply=ReplyType)``; a handler is
    called as ``handler(msg, client)`` and returns the reply (or ``None``). Run the dispatch
    loop with :meth:`start` (background thread) or :meth:`serve_forever`.
    """

    def __init__(
        self,
        name: str,
        *,
        root: str | None = None,
        region_size: int = 64 << 20,
        input_capacity: int = 8192,
        max_clients: int = 256,
        scan_interval: float = 10.0,
        death_poll: float = 0.05,
        server_rings: list[tuple[int, int]] | None = None,
        client_rings: list[tuple[int, int]] | None = None,
        gc_age: float = 10.0,
        trace_size: int = 1024,
        claim_timeout: float = 1.0,
        uid: int | None = None,
        gid: int | None = None,
        mode: int = 0o600,
        socket: str | os.PathLike[str] | None = None,
        socket_mode: int = 0o600,
        socket_uids: Iterable[int] | None = None,
        max_frame: int = DEFAULT_MAX_FRAME,
    ) -> None:
        if scan_interval <= 0 or death_poll <= 0 or claim_timeout <= 0:
            raise ValueError("scan_interval, death_poll and claim_timeout must be positive")
        self.name = name
        self.root = root
        self.scan_interval = scan_interval
        self.death_poll = death_poll
        self.pid = os.getpid()
        # Ownership as VPP's api-segment { uid gid }: checked by the region when it adopts
        # an existing file, applied when it creates one.
        owner: dict[str, Any] = {k: v for k, v in (("uid", uid), ("gid", gid)) if v is not None}
        self.region = Region.find_or_create(name, region_size, root=root, mode=mode, **owner)
        self._lock = threading.RLock()
        self._init_catalog()
        self._batching = False  # the dispatch loop's outbox collects what is sent
        self._loop_ident = 0
        self._clients: dict[int, ClientInfo] = {}  # by table slot
        self._listed: dict[int, ClientInfo] = {}  # socket clients, by table slot
        self._next_index = 0
        self._by_handle = ClientTable()  # handle -> ClientInfo
        self._counts = [0] * len(COUNTERS)  # since the last flush
        self._totals = [0] * len(COUNTERS)  # private: the shared ones are only written
        self._stale: dict[str, tuple[int, int]] = {}  # queues of clients we no longer serve
        self._orphans_of = 0
        self.report = Throttle(log)
        self._guard = Guard(self, claim_timeout)
        self._reapers: list[Callable[[Handle, ClientInfo], None]] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._running = False
        self.trace = Trace(trace_size)
        self._init_services()
        self._sock: SockServer | None = None
        try:
            self._setup(max_clients, input_capacity, server_rings, client_rings, gc_age)
            if socket is not None:
                self._sock = SockServer(
                    self,
                    socket,
                    mode=socket_mode,
                    uids=None if socket_uids is None else list(socket_uids),
                    max_frame=max_frame,
                    max_connections=max_clients,
                )
        except BaseException:
            self.region.close()
            raise
        self.trace.table = self.message_table()
        self._native_ping()
        self.flush_counters()

    def _native_ping(self) -> None:
        """``control_ping`` (what clients send most, and what latency is measured with) is
        served by the native dispatch loop like a user request, not through :meth:`_dispatch`;
        a VPP client's dump terminator gets no reply here either (the stream's close answers
        it)."""
        pid = self.pid

        def ping(msg: Message, client: ClientInfo) -> Message | None:
            if self._stream_ping(client, msg.context):
                return None
            return mc.ControlPingReply(retval=0, client_index=int(client.handle), vpe_pid=pid)

        ping_id, reply_id = _IDS[mc.ControlPing], _IDS[mc.ControlPingReply]
        self._native[ping_id] = (
            mc.ControlPing,
            mc.ControlPing._codec,
            ping,
            mc.ControlPingReply,
            mc.ControlPingReply._codec,
            reply_id,
        )

    # ---------------------------------------------------------------- setup / takeover

    def _setup(
        self,
        max_clients: int,
        input_capacity: int,
        server_rings: list[tuple[int, int]] | None,
        client_rings: list[tuple[int, int]] | None,
        gc_age: float,
    ) -> None:
        try:
            ApiState.open(self.region)
            takeover = True
        except FileNotFoundError:
            takeover = False
        except ValueError:
            takeover = True  # damaged: see _previous_server
        prior = previous_server(self.region, self.name) if takeover else None
        if prior is not None and prior[1] and prior[1] != self.pid and _alive(*prior[1:]):
            raise ServerRunningError(f"API {self.name!r} is served by live pid {prior[1]}")
        self.rings = open_rings(self.region, server_rings, client_rings, gc_age, takeover)
        self.port = ApiPort(self.rings)
        self._outbox = self.port.outbox()
        self.input = open_input(self.region, input_capacity, takeover)
        if takeover:
            self.state = StateImage.adopt(self.region, max_clients)
            self._totals = list(self.state.counters().values())
            # The epoch the state carried; if it was unreadable, the rings' restart count
            # (kept equal to it) stands in.
            old = prior[0] if prior is not None else self.rings.stats()["restarts"]
            self.epoch = (old + 1) & 0xFFFFFFFF
        else:
            self.state = StateImage.create(self.region, max_clients)
            self.epoch = 0
        self.state.set_server(self.epoch, self.pid, _proc_start(self.pid))
        self._tables = TableObjects(self.region, self.epoch)
        if takeover:
            self.rings.note_restart()
            if prior is not None and prior[1] != self.pid:
                self._orphans_of = prior[1]
            self._recover()

    def _recover(self) -> None:
        """Take over after a dead server: drain its input queue, find its clients' queues.
        The old client table is not believed: each queue object names its creator. What the
        dead server held outside queues is reclaimed once no queue it may have replied into is
        left (:meth:`reclaim_orphans`): its replies still waiting in live clients' queues are
        theirs to read, and clients read concurrently with us."""
        self._guard.check_input(thorough=True)
        drained = self.port.drain(self.input)
        self._counts[C["restart_reclaims"]] += drained
        # A live client lives on and will notice the new epoch; its queue is its own to
        # remove, or ours once it dies.
        self.collect_queues(adopt_live=True)
        self.reclaim_orphans()
        self.region.scan_ghosts()
        log.info(
            "API %s: took over as epoch %d (%d queued messages reclaimed)",
            self.name,
            self.epoch,
            drained,
        )

    # ---------------------------------------------------------------- reaping

    def on_reap(
        self, fn: Callable[[Handle, ClientInfo], None]
    ) -> Callable[[Handle, ClientInfo], None]:
        """Decorator: called with the handle and info of every client that is reaped."""
        self._reapers.append(fn)
        return fn

    # ---------------------------------------------------------------- running

    def start(self) -> Server:
        """Run the dispatch loop in a background thread."""
        if self._thread is not None:
            raise RuntimeError("server already started")
        self._stop.clear()
        self._thread = threading.Thread(
            target=self.serve_forever, name=f"shmkit-api-{self.name}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the dispatch loop (the registrations stay; see :meth:`close`)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._thread = None

    def serve_forever(self) -> None:
        """Dispatch until :meth:`stop` (or Ctrl-C when run in the main thread). Nothing else
        ends it but a truncated region (``RegionTruncatedError``: the memory every object of
        the API lives in is gone): an error in any step is counted, logged, and the loop goes
        on."""
        self._running = True
        self._loop_ident = threading.get_ident()
        next_scan = time.monotonic() + self.scan_interval
        next_poll = 0.0
        slice_ = min(self.death_poll, 0.05)
        port, queue, lock = self.port, self.input, self._lock
        if self._sock is not None:
            self._sock.start()
        try:
            while not self._stop.is_set():
                # The hot path, inline (a failed step is handled as _shielded does).
                try:
                    if port.wait(queue, self._stream_wait or slice_):
                        with lock:
                            self._serve_batch()
                    if self._streams:
                        self._pump_streams()
                except _FATAL:
                    raise
                except CorruptionError:
                    # A peer damaged the input queue: repaired (counted, logged) at once.
                    self._shielded(self._guard.check_input, True)
                except BaseException as exc:
                    self._loop_failed("dispatch", exc)
                now = time.monotonic()
                if now >= next_poll:
                    next_poll = now + self.death_poll
                    thorough = now >= next_scan
                    self._shielded(self._poll_deaths)
                    self._shielded(self._guard.check, thorough)
                    self._shielded(self.flush_counters)
                    self._shielded(self.state.heartbeat)
                if now >= next_scan:
                    next_scan = now + self.scan_interval
                    self._shielded(self.keepalive_scan)
        finally:
            if self._sock is not None:
                self._sock.stop()
            self._running = False

    def _shielded(self, step: Callable[..., object], *args: object) -> None:
        """Run one step of the loop; an error (a Rust panic included) is :meth:`_loop_failed`."""
        try:
            step(*args)
        except _FATAL:
            raise
        except BaseException as exc:
            self._loop_failed(getattr(step, "__name__", "a step"), exc)

    def _loop_failed(self, step: str, exc: BaseException) -> None:
        """Count and log a failed step, then check the input queue (what most steps touch;
        unless that check is what failed) and pause briefly, so a failure that comes back at
        once does not spin."""
        self._counts[C["loop_errors"]] += 1
        self.report(
            "loop", logging.ERROR, "API %s: %s failed: %r", self.name, step, exc, exc_info=exc
        )
        if step != "check_input":
            try:
                self._guard.check_input(thorough=True)
            except _FATAL:
                raise
            except BaseException as again:
                self.report("repair", logging.ERROR, "API %s: repair failed: %r", self.name, again)
        self._stop.wait(min(self.death_poll, 0.01))

    def _serve_batch(self) -> None:
        """Dispatch one batch. Known requests from registered clients are served natively
        (:meth:`ApiPort.serve`: decode, handler call, reply encoding, with no Python frame
        of ours per message); everything else, and everything while tracing, goes through
        :meth:`_dispatch`, in order. Replies and events are collected per client and sent
        with one queue operation each when the batch ends."""
        counts = self._counts
        self._batching = True
        try:
            _, served, invalid, errors = self.port.serve(
                self.input,
                {} if self.trace.enabled else self._native,
                self._by_handle,
                self._outbox,
                self._dispatch_guarded,
                self._handler_failed,
                self._encode_reply,
                256,
            )
            counts[_REQUESTS] += served
            counts[_INVALID] += invalid
            counts[_HANDLER_ERRORS] += errors
        finally:
            self._batching = False
            # Rare events are published at once (plain traffic every poll), and before the
            # replies go out: a client reading its reply sees what came before it counted.
            if sum(counts) != counts[_REQUESTS] + counts[_REPLIES]:
                self.flush_counters()
            for c, sent, dropped, damaged in self._outbox.flush():
                self._count_sent(c, sent, dropped)
                if damaged:
                    self.drop_damaged(c, "a send found its queue corrupted")

    def _handler_failed(
        self, exc: BaseException, request: type[Message], client: ClientInfo, context: int
    ) -> None:
        """A handler (or the encoding of its reply) raised: logged (rate-limited), and the
        client answered with an error reply if the reply type has a ``retval``."""
        self.report(
            f"handler:{request._name}",
            logging.ERROR,
            "API %s: handler for %s failed",
            self.name,
            request._name,
            exc_info=exc,
        )
        reply_type = self._error_replies.get(request)
        if reply_type is not None:
            reply = reply_type(retval=mc.UNSPECIFIED)
            reply.context = context
            self.send(client, reply)

    def _encode_reply(self, reply: Message, context: int) -> bytes:
        reply.context = context
        return reply.encode(self._ids[type(reply)])

    def _dispatch_guarded(self, data: bytes) -> None:
        try:
            self._dispatch(data)
        except Exception:  # a bug must not take the data plane down
            self._counts[_HANDLER_ERRORS] += 1
            self.report(
                "dispatch", logging.ERROR, "API %s: dispatch failed", self.name, exc_info=True
            )

    def close(self) -> None:
        """Stop, forget every client and release the region. Clients see the server gone
        (socket clients: their connections close and the socket file is removed)."""
        self.stop()
        if self._sock is not None:
            self._sock.close()
        with self._lock:
            for c in list(self._clients.values()):
                self._shielded(self._forget, c)
            self.flush_counters()
            self.state.set_server(self.epoch, 0, 0)
            self._shielded(self._tables.close)
        self.region.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- dispatch

    def _dispatch(self, data: bytes) -> None:
        if self.trace.enabled:
            self.trace.record("rx", data)
        counts = self._counts
        if len(data) < 2:
            counts[_INVALID] += 1
            return
        msg_id = data[0] << 8 | data[1]
        entry = self._handlers.get(msg_id)
        if entry is None:
            counts[_UNKNOWN] += 1
            return
        cls, handler = entry
        if msg_id in _CREATES:  # the client has no handle yet
            self._create(data, msg_id)
            return
        msg: Message | None = None
        if cls._header == REQUEST:
            if len(data) < HEADER.size:
                counts[_INVALID] += 1
                return
            _, client_index, _ = _unpack_header(data)
        else:  # another header kind: its fields say who sent it
            try:
                msg = cls.decode(data)
            except MessageError:
                counts[_INVALID] += 1
                return
            if msg_id == _KEEPALIVE_REPLY:  # VPP's names the client in its context (as the
                client_index = msg.context  # keepalive did)
            elif msg_id == _DELETE:  # VPP's names it by handle and registration index
                client_index = msg.handle  # type: ignore[attr-defined]
                known = self._by_handle.get(client_index)
                if known is None or known.index != msg.index:  # type: ignore[attr-defined]
                    client_index = -1
            elif "client_index" in cls._header:
                client_index = msg.client_index
            else:
                client_index = -1  # a request that names no client
        # Only handles of this epoch are in the table: a stale one is a missing client.
        client = self._by_handle.get(client_index)
        if client is None:
            counts[_MISSING] += 1
            return
        msg = self._request(cls, data, client, msg)
        if msg is not None:
            self._serve(cls, handler, msg_id, msg, client)

    # The request path both transports share (the socket's: shmkit.api.sockserver): a request
    # of a known client is counted and decoded, then served by a builtin or its handler.

    def _request(
        self, cls: type[Message], data: bytes, client: ClientInfo, msg: Message | None = None
    ) -> Message | None:
        """Count a request of ``client`` and decode it (unless ``msg`` already is); None if
        it does not decode (counted as invalid)."""
        client.reg.count()
        self._counts[_REQUESTS] += 1
        if msg is None:
            try:
                msg = cls.decode(data)
            except MessageError:
                self._counts[_INVALID] += 1
                return None
        return msg

    def _serve(
        self,
        cls: type[Message],
        handler: Handler | None,
        msg_id: int,
        msg: Message,
        client: ClientInfo,
    ) -> None:
        """A builtin (``handler`` None), or the user's handler with its reply sent: a
        handler that raises is counted and answered as :meth:`_handler_failed` says."""
        if handler is None:
            self._builtin(msg_id, msg, client)
            return
        context = msg.context
        try:
            reply = handler(msg, client)
            if reply is not None:
                reply.context = context
                data = reply.encode(self._ids[type(reply)])
        except Exception as exc:
            self._counts[_HANDLER_ERRORS] += 1
            self._handler_failed(exc, cls, client, context)
            return
        if reply is not None:
            self._send_encoded(client, data)

    def _client_for(self, handle: int) -> ClientInfo | None:
        client: ClientInfo | None = self._by_handle.get(handle)
        return client

    def _builtin(self, msg_id: int, msg: Message, client: ClientInfo) -> None:
        ctx = msg.context
        if msg_id == _DELETE:
            self.send(client, mc.MemclntDeleteReply(response=0, handle=int(client.handle)))
            self._forget(client, clean=True)
            self._counts[C["deregistrations"]] += 1
        elif msg_id == _KEEPALIVE_REPLY:  # counted as a request, seen by the next scan
            pass
        elif msg_id == _IDS[mc.ControlPing]:
            if self._stream_ping(client, ctx):
                return  # a VPP client's dump terminator: the stream's close answers it
            self.send(
                client,
                mc.ControlPingReply(
                    retval=0, client_index=int(client.handle), vpe_pid=self.pid, context=ctx
                ),
            )
        elif msg_id == _IDS[mc.GetApiJson]:
            self.send(client, mc.GetApiJsonReply(retval=0, json=self.api_json(), context=ctx))
        elif msg_id == _IDS[mc.ApiVersions]:
            versions = [
                mc.ModuleVersion(major=v[0], minor=v[1], patch=v[2], name=name)
                for name, v in self.api_versions().items()
            ]
            reply = mc.ApiVersionsReply(retval=0, count=len(versions), api_versions=versions)
            reply.context = ctx
            self.send(client, reply)
        elif msg_id == _IDS[mc.GetFirstMsgId]:
            base = self._modules.get(msg.name)  # type: ignore[attr-defined]
            self.send(
                client,
                mc.GetFirstMsgIdReply(
                    retval=0 if base else -1, first_msg_id=base or 0, context=ctx
                ),
            )
        else:
            self._counts[C["unknown_messages"]] += 1

    # ---------------------------------------------------------------- sending

    def send(self, client: ClientInfo | Handle | int, msg: Message) -> bool:
        """Send ``msg`` to a client without ever blocking; a full queue drops it (counted).
        Returns whether it was queued."""
        c = client if type(client) is ClientInfo else self._by_handle.get(int(client))  # type: ignore[arg-type]
        if c is None:
            self._counts[_MISSING] += 1
            return False
        return self._send_encoded(c, msg.encode(self._ids[type(msg)]))

    def _send_encoded(self, c: ClientInfo, data: bytes) -> bool:
        """Send through the outbox (its flush tells a damaged client queue from any other
        failure); at once, unless the dispatch loop is in a batch (then at its end)."""
        if self.trace.enabled:
            self.trace.record("tx", data)
        if c.queue is None:  # a socket client (shmkit.api.sockserver)
            return self._sock is not None and self._sock.send(c, data)
        self._outbox.push(c, data)
        if self._batching and threading.get_ident() == self._loop_ident:
            return True
        sent, dropped, damaged = self._outbox.flush_client(c) or (0, 0, False)
        self._count_sent(c, sent, dropped)
        if damaged:
            self.drop_damaged(c, "a send found its queue corrupted")
        return sent > 0

    def _transport_room(self, c: ClientInfo) -> int:
        """How many more details a stream may send a socket client now."""
        return self._sock.stream_room(c) if self._sock is not None else 0

    def _count_sent(self, c: ClientInfo, sent: int, dropped: int) -> None:
        self._counts[_REPLIES] += sent
        if dropped:
            c.dropped += dropped
            self._counts[_DROPPED] += dropped

    def count(self, counter: str, n: int = 1) -> None:
        """Add ``n`` to one of the counters (:data:`~shmkit.api.state.COUNTERS`)."""
        self._counts[C[counter]] += n

    def flush_counters(self) -> None:
        """Add the counts accumulated since the last flush to the totals and publish them
        in the shared state (the dispatch loop does it every ``death_poll`` seconds). The
        totals are the server's own: the shared copy is written, never read back."""
        counts, totals = self._counts, self._totals
        counts[_INVALID] += self.port.take_invalid()
        if any(counts):
            for i, n in enumerate(counts):
                totals[i] += n
                counts[i] = 0
            self.state.set_counters(totals)

    def broadcast(self, msg: Message) -> int:
        """Send an event to every client; returns how many queued it."""
        with self._lock:
            return sum(self.send(c, msg) for c in self.clients)

    # ---------------------------------------------------------------- introspection

    @property
    def clients(self) -> list[ClientInfo]:
        """Every registered client: shared-memory ones, then socket ones."""
        with self._lock:
            socket = self._sock.clients if self._sock is not None else []
            return list(self._clients.values()) + socket

    @property
    def socket(self) -> SockServer | None:
        """The socket transport (``socket=`` given), with its :meth:`~SockServer.stats`."""
        return self._sock

    def counters(self) -> dict[str, int]:
        """Every counter (:data:`~shmkit.api.state.COUNTERS`), as this server counted."""
        with self._lock:
            self.flush_counters()
            return dict(zip(COUNTERS, self._totals))

    def ring_stats(self) -> list[dict[str, Any]]:
        return self.rings.ring_stats()

    def format_ring_stats(self) -> str:
        return self.rings.format_stats()

    @property
    def running(self) -> bool:
        return self._running

    def __repr__(self) -> str:
        return f"<shmkit.api.Server {self.name!r} epoch={self.epoch} clients={len(self._clients)}>"
