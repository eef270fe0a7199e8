"""VPP's socket transport, server side: a :class:`~shmkit.api.Server` serves clients on a
Unix stream socket beside its shared-memory clients.

``Server(name, socket=PATH, socket_mode=0o600, socket_uids=None, max_frame=1 << 20)``
creates the socket file (with that mode, never replacing a live server's socket; a stale
one is removed) and serves it with :class:`SockServer`. The mechanics are native
(:class:`shmkit._native.SockListener`: framing with VPP's 16-byte header, a frame's length
validated before anything is allocated, bounded non-blocking output per connection, one
epoll for every connection); the policy is here:

* **registration**: ``sockclnt_create`` → ``sockclnt_create_reply`` with VPP's layout: the
  client's ``index`` (its handle, which it then sends as ``client_index``) and the message
  table (``index``, ``name_crc`` per message). Requests are taken from the connection the
  client registered on: a peer can only ever act as the client of its own connection, so
  ``client_index`` is not trusted to say who sent a message. ``sockclnt_delete`` ends the
  registration (with its reply); the peer then closes the connection;
* **messages**: the same handler registry as shared memory (``server.handle``), and the
  memclnt builtins (``control_ping``, ``get_first_msg_id``, ``get_api_json``,
  ``api_versions``, ...) answered by the server's own code: everything a socket client is
  sent goes through ``server.send`` (see :meth:`Server._send_encoded`), so replies, dumps,
  events and ``broadcast`` reach both transports;
* **liveness**: EOF means the client is gone at once — reaped (``on_reap`` callbacks run).
  A garbage frame (an empty or oversized length) closes that connection: counted
  (``invalid_messages``), logged, reaped; never the server's failure. Idle clients get a
  ``memclnt_keepalive`` every ``scan_interval``; after two unanswered pings the peer's pid
  (from ``SO_PEERCRED``) is checked: gone → reaped and disconnected, alive → "lazy" (as
  VPP's rule; stock ``vpp_papi`` answers no keepalive, and its socket's EOF says when it
  dies);
* **never blocked by a client**: a client that stops reading has its messages buffered up
  to a cap, then dropped and counted (``dropped_sends`` and the client's ``dropped``);
* **private segments** (``sock_init_shm``, :mod:`shmkit.api.sockshm`): a socket client may
  move its traffic to a shared-memory segment of its own, whose memfd the reply carries
  (``SCM_RIGHTS``); a thread of the segment's own then reads its input queue (under the
  server's lock, as the others), and sends to that client go into the segment's output
  queue (full: dropped, counted). A damaged segment gets its client reaped, never the
  server.

The socket runs in its own thread (``shmkit-api-sock-<name>``), which waits on the epoll
without any lock and handles what arrived under the server's lock — the lock the
shared-memory dispatch loop holds for each batch. So handlers never run concurrently,
whichever transport their request came by, and neither transport's wait delays the other.
The thread runs while the server's dispatch loop does (:meth:`Server.serve_forever`).

A socket client holds a slot of the region's client table, as a shared-memory one does (so
the table's size bounds both, and ``shmkit api show`` lists both): its entry names
``@socket`` as its queue (``@socket+shm`` once it has a private segment), never a queue
object of the region.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from shmkit._native import SockListener
from shmkit._native import process_alive as _alive
from shmkit._native import process_start_time as _proc_start
from shmkit.api import memclnt as mc
from shmkit.api.clients import ClientInfo
from shmkit.api.handle import MAX_INDEX, Handle
from shmkit.api.messages import Message, MessageError
from shmkit.api.sockshm import Segment
from shmkit.api.state import COUNTERS, VIA_SEGMENT, VIA_SOCKET
from shmkit.errors import ShmkitError

if TYPE_CHECKING:
    from shmkit._native import ClientTable
    from shmkit.api.throttle import Throttle
    from shmkit.api.trace import Trace

__all__ = ["DEFAULT_MAX_FRAME", "Host", "SockServer"]


class Host(Protocol):
    """What the socket side uses of the :class:`~shmkit.api.Server` that made it: the handler
    registry and request path, the client table and counters, sending, the lock (stated here
    so this module needs no server: the server imports it, not the other way round)."""

    name: str
    epoch: int
    death_poll: float
    scan_interval: float
    report: Throttle
    trace: Trace
    _lock: threading.RLock
    _counts: list[int]
    _next_index: int
    _by_handle: ClientTable  # handle -> ClientInfo
    _ids: dict[type[Message], int]
    _handlers: dict[int, tuple[type[Message], Any]]
    _reapers: list[Callable[[Handle, ClientInfo], None]]

    def message_table(self) -> dict[int, str]: ...

    def send(self, client: ClientInfo | Handle | int, msg: Message) -> bool: ...

    def _count_sent(self, c: ClientInfo, sent: int, dropped: int) -> None: ...

    def _loop_failed(self, step: str, exc: BaseException) -> None: ...

    def _request(
        self, cls: type[Message], data: bytes, client: ClientInfo, msg: Message | None = None
    ) -> Message | None: ...

    def _serve(
        self, cls: type[Message], handler: Any, msg_id: int, msg: Message, client: ClientInfo
    ) -> None: ...

    def _registered(self, client: ClientInfo) -> None: ...

    def list_client(self, client: ClientInfo, via: str) -> bool: ...

    def unlist_client(self, client: ClientInfo) -> None: ...


log = logging.getLogger("shmkit.api")

#: Largest message a socket client may send, by default (1 MiB).
DEFAULT_MAX_FRAME = 1 << 20
#: Bytes buffered for a socket client that does not read, by default, before messages to it
#: are dropped.
DEFAULT_OUT_CAP = 4 << 20

C = {name: i for i, name in enumerate(COUNTERS)}
_IDS = mc.BUILTIN_IDS
_SOCK_CREATE, _SOCK_DELETE = _IDS[mc.SockclntCreate], _IDS[mc.SockclntDelete]
_SOCK_INIT_SHM = _IDS[mc.SockInitShm]
#: The shared-memory registration messages: meaningless on a socket.
_SHM_ONLY = frozenset(_IDS[t] for t in (mc.MemclntCreate, mc.MemclntCreateV2, mc.MemclntDelete))


class SockServer:
    """The socket side of a :class:`~shmkit.api.Server` (made by it; see the module docs)."""

    def __init__(
        self,
        server: Host,
        path: str | os.PathLike[str],
        *,
        mode: int = 0o600,
        uids: list[int] | None = None,
        max_frame: int = DEFAULT_MAX_FRAME,
        out_cap: int = DEFAULT_OUT_CAP,
        max_connections: int = 1024,
    ) -> None:
        self.server = server
        self.listener = SockListener(
            path,
            mode=mode,
            uids=uids,
            max_frame=max_frame,
            out_cap=out_cap,
            max_connections=max_connections,
        )
        self.path = self.listener.path
        self._out_cap = out_cap
        self._by_conn: dict[int, ClientInfo] = {}
        # Every open connection's peer: conn -> (pid, uid, gid) (SO_PEERCRED).
        self._peers: dict[int, tuple[int, int, int]] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._batching = False  # the socket thread is handling a batch (under the lock)
        self._segments: dict[int, Segment] = {}  # private segments (sock_init_shm), by conn
        self._seg_lock = threading.Lock()  # who closes a segment: _close_segment or its thread

    # ---------------------------------------------------------------- running

    def start(self) -> None:
        """Serve the socket in a thread of its own (until :meth:`stop`)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"shmkit-api-sock-{self.server.name}", daemon=True
        )
        self._thread.start()
        for conn, seg in list(self._segments.items()):
            self._start_segment(conn, seg)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving (connections stay open; what they send waits in the socket)."""
        self._stop.set()
        me = threading.current_thread()
        threads = [self._thread, *(s.thread for s in list(self._segments.values()))]
        for t in threads:
            if t is not None and t is not me:
                t.join(timeout)
        self._thread = None

    def close(self) -> None:
        """Stop, forget every socket client (no reaper callbacks: the server is leaving, as
        for its shared-memory clients), close every connection and remove the socket file."""
        self.stop()
        with self.server._lock:
            for c in list(self._by_conn.values()):
                self._forget(c)
            for conn in list(self._segments):
                self._close_segment(conn)
            self._peers.clear()
            self.listener.close()

    def _run(self) -> None:
        server = self.server
        slice_ = min(server.death_poll, 0.05)
        next_scan = time.monotonic() + server.scan_interval
        while not self._stop.is_set():
            try:
                events = self.listener.poll(slice_)
                if events:
                    with server._lock:
                        # What the batch sends is written when it ends: one system call per
                        # connection, not one per reply.
                        self._batching = True
                        try:
                            self._handle(events)
                        finally:
                            self._batching = False
                            self.listener.flush()
                now = time.monotonic()
                if now >= next_scan:
                    next_scan = now + server.scan_interval
                    self.keepalive_scan()
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # counted and logged; the socket stays served
                server._loop_failed("socket", exc)

    def _serve_segment(self, conn: int, seg: Segment) -> None:
        """A private segment's own thread: reads its input queue (spinning briefly, then
        sleeping on the queue's futex with the GIL released, as the shared-memory dispatch
        loop does) and handles what came under the server's lock. A damaged segment reaps
        its client. It closes the segment when it leaves after :meth:`_close_segment`."""
        server = self.server
        slice_ = min(server.death_poll, 0.05)
        try:
            while not self._stop.is_set() and not seg.closing:
                try:
                    batch = seg.port.recv(seg.input, 256, slice_)
                except ShmkitError as exc:
                    if seg.closing:
                        break
                    with server._lock:
                        client = self._by_conn.get(conn)
                        if client is not None:
                            self.reap(client, f"its segment is damaged ({exc})")
                    break
                if not batch:
                    continue
                with server._lock:
                    if seg.closing:
                        break
                    for data in batch:
                        self._frame(conn, data)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # counted and logged; its client is let go
            server._loop_failed("segment", exc)
            with server._lock:
                client = self._by_conn.get(conn)
                if client is not None:
                    self.reap(client, f"serving its segment failed ({exc!r})")
        finally:
            with self._seg_lock:
                if seg.closing:
                    seg.close()

    def _start_segment(self, conn: int, seg: Segment) -> None:
        if self._stop.is_set() or (seg.thread is not None and seg.thread.is_alive()):
            return
        seg.thread = threading.Thread(
            target=self._serve_segment,
            args=(conn, seg),
            name=f"shmkit-api-segment-{self.server.name}-{conn}",
            daemon=True,
        )
        seg.thread.start()

    def _init_shm(self, client: ClientInfo, msg: Message) -> None:
        """``sock_init_shm``: give ``client`` a private segment (see
        :mod:`shmkit.api.sockshm`); the reply carries its memfd. Refused (``retval = -1``,
        no descriptor) for a second segment or a size out of bounds."""
        server = self.server
        reply_id = server._ids[mc.SockInitShmReply]
        refuse = mc.SockInitShmReply(retval=mc.UNSPECIFIED, context=msg.context)
        if client.conn in self._segments:
            server.send(client, refuse)
            return
        try:
            seg = Segment.create(msg.requested_size)  # type: ignore[attr-defined]
        except (ValueError, OSError, ShmkitError) as exc:
            server.report(
                "segment",
                logging.WARNING,
                "API %s: no segment for %r: %s",
                server.name,
                client.name,
                exc,
            )
            server.send(client, refuse)
            return
        data = mc.SockInitShmReply(retval=0, context=msg.context).encode(reply_id)
        if server.trace.enabled:
            server.trace.record("tx", data)
        outcome = self.listener.send_fd(client.conn, data, seg.fileno())
        if outcome != "queued":
            seg.close()
            server._count_sent(client, 0, int(outcome == "dropped"))
            return
        server._count_sent(client, 1, 0)
        self._segments[client.conn] = seg
        server.list_client(client, VIA_SEGMENT)
        if self._thread is not None:
            self._start_segment(client.conn, seg)

    def _close_segment(self, conn: int) -> None:
        """Let go of a client's segment: at once if no thread serves it, else by that
        thread as it leaves (within its wait slice), so nothing is closed under a read."""
        seg = self._segments.pop(conn, None)
        if seg is None:
            return
        with self._seg_lock:
            seg.closing = True
            if seg.thread is None or not seg.thread.is_alive():
                seg.close()

    # ---------------------------------------------------------------- events

    def _handle(self, events: list[Any]) -> None:
        for ev in events:
            kind, conn = ev[0], ev[1]
            if kind == "frame":
                self._frame(conn, ev[2])
            elif kind == "connected":
                self._peers[conn] = (ev[2], ev[3], ev[4])
            else:
                self._gone(conn, ev[2])

    def _frame(self, conn: int, data: bytes) -> None:
        server = self.server
        counts = server._counts
        if server.trace.enabled:
            server.trace.record("rx", data)
        if len(data) < 2:
            counts[C["invalid_messages"]] += 1
            return
        msg_id = data[0] << 8 | data[1]
        entry = server._handlers.get(msg_id)
        if entry is None:
            counts[C["unknown_messages"]] += 1
            return
        cls, handler = entry
        client = self._by_conn.get(conn)
        if msg_id == _SOCK_CREATE:
            self._create(conn, cls, data, client)
            return
        if client is None:
            counts[C["missing_clients"]] += 1
            return
        if msg_id in _SHM_ONLY:
            counts[C["invalid_messages"]] += 1
            return
        msg = server._request(cls, data, client)
        if msg is None:
            return
        if msg_id == _SOCK_DELETE:
            self._delete(client, msg)
        elif msg_id == _SOCK_INIT_SHM:
            self._init_shm(client, msg)
        else:
            server._serve(cls, handler, msg_id, msg, client)

    def _create(
        self, conn: int, cls: type[Message], data: bytes, existing: ClientInfo | None
    ) -> None:
        server = self.server
        try:
            msg = cls.decode(data)
        except MessageError:
            server._counts[C["invalid_messages"]] += 1
            return
        if existing is not None:
            # A second registration on one connection: the connection has its client.
            server._counts[C["invalid_messages"]] += 1
            return
        peer = self._peers.get(conn)
        if peer is None:
            return  # the connection closed meanwhile
        pid = peer[0]
        index = server._next_index
        server._next_index = (index + 1) % (MAX_INDEX + 1)
        handle = Handle(index, server.epoch)
        client = ClientInfo(
            slot=-1,
            index=index,
            handle=handle,
            name=msg.name,  # type: ignore[attr-defined]
            pid=pid,
            start_time=_proc_start(pid) if pid else 0,
            queue_name="",
            queue=None,
            last_heard=time.monotonic(),
            conn=conn,
        )
        if not server.list_client(client, VIA_SOCKET):
            server._counts[C["refused_registrations"]] += 1
            server.report(
                "table_full",
                logging.WARNING,
                "API %s: refused socket client %r (pid %d): all client slots are taken",
                server.name,
                client.name,
                pid,
            )
            refused = mc.SockclntCreateReply(
                response=mc.TABLE_TOO_BIG, index=0, count=0, message_table=[], context=msg.context
            )
            self.send(client, refused.encode(server._ids[mc.SockclntCreateReply]))
            return
        self._by_conn[conn] = client
        server._by_handle[int(handle)] = client
        server._counts[C["registrations"]] += 1
        table = [mc.MessageTableEntry(index=i, name=n) for i, n in server.message_table().items()]
        reply = mc.SockclntCreateReply(
            response=0,
            index=int(handle),
            count=len(table),
            message_table=table,
            context=msg.context,
        )
        server.send(client, reply)
        log.debug("API %s: socket client %r registered (pid %d)", server.name, client.name, pid)
        server._registered(client)

    def _delete(self, client: ClientInfo, msg: Message) -> None:
        server = self.server
        server.send(client, mc.SockclntDeleteReply(response=0, context=msg.context))
        self._forget(client)  # the connection stays: it may register again
        server._counts[C["deregistrations"]] += 1

    def _gone(self, conn: int, reason: str) -> None:
        """A connection closed: its client (if it registered) is reaped."""
        server = self.server
        self._peers.pop(conn, None)
        self._close_segment(conn)
        if reason != "eof":
            server._counts[C["invalid_messages"]] += reason.startswith("bad frame")
            server.report(
                "socket_closed",
                logging.WARNING,
                "API %s: socket connection %d closed: %s",
                server.name,
                conn,
                reason,
            )
        client = self._by_conn.get(conn)
        if client is not None:
            self.reap(client, "socket closed" if reason == "eof" else reason)

    # ---------------------------------------------------------------- clients

    def reap(self, client: ClientInfo, reason: str) -> None:
        """End a socket client that did not deregister: reaper callbacks, then forget it
        and close its connection."""
        server = self.server
        with server._lock:
            if self._by_conn.get(client.conn) is not client:
                return
            log.info(
                "API %s: reaping socket client %r pid %d (%s)",
                server.name,
                client.name,
                client.pid,
                reason,
            )
            for fn in server._reapers:
                try:
                    fn(client.handle, client)
                except Exception:
                    server.report(
                        "reaper",
                        logging.ERROR,
                        "API %s: reaper callback failed",
                        server.name,
                        exc_info=True,
                    )
            self._forget(client)
            self.listener.close_conn(client.conn)
            server._counts[C["reaped"]] += 1

    def _forget(self, client: ClientInfo) -> None:
        self.server.unlist_client(client)
        self._by_conn.pop(client.conn, None)
        self.server._by_handle.pop(int(client.handle), None)
        self._close_segment(client.conn)

    def _thread_is_current(self) -> bool:
        return self._thread is threading.current_thread()

    @property
    def clients(self) -> list[ClientInfo]:
        return list(self._by_conn.values())

    def send(self, client: ClientInfo, data: bytes) -> bool:
        """Send encoded ``data`` to a socket client, never blocking (counted as the
        shared-memory sends are)."""
        seg = self._segments.get(client.conn)
        if seg is not None:  # a private segment: its rings and output queue
            try:
                ok = seg.port.send(seg.output, data, "server", client.pid)
            except ShmkitError:
                ok = False  # damaged: found (and the client dropped) by the next read
            self.server._count_sent(client, int(ok), int(not ok))
            return ok
        # In the socket thread's batch, buffered until the batch ends; from any other thread
        # (the batch flag is only set under the server's lock, which the caller holds or is
        # the socket thread), written at once.
        outcome = self.listener.send(
            client.conn, data, not (self._batching and self._thread_is_current())
        )
        if outcome == "queued":
            self.server._count_sent(client, 1, 0)
            return True
        if outcome == "dropped":
            self.server._count_sent(client, 0, 1)
        return False

    def stream_room(self, client: ClientInfo) -> int:
        """How many more details a dump may send ``client`` now: a stream fills at most half
        the connection's output buffer (the rest stays for replies and events meanwhile),
        then pauses until the client has read (:mod:`shmkit.api.services`)."""
        seg = self._segments.get(client.conn)
        if seg is not None:  # as on shared memory: half the output queue, one slot kept
            return max(0, seg.output.capacity // 2 - len(seg.output) - 1)
        info = self.listener.conn_info(client.conn)
        if info is None:
            return 0
        return 256 if info["pending"] < self._out_cap // 2 else 0

    def keepalive_scan(self) -> None:
        """Ping quiet socket clients; after two unanswered pings, check the peer: gone →
        reaped, alive → lazy (see the module docs)."""
        server = self.server
        now = time.monotonic()
        with server._lock:
            for c in list(self._by_conn.values()):
                heard = c.requests != c.last_requests
                c.last_requests = c.requests
                if heard:
                    c.last_heard, c.unanswered, c.health = now, 0, "ok"
                if heard or now - c.last_heard < server.scan_interval:
                    continue
                if c.unanswered >= 2:
                    if c.pid and _alive(c.pid, c.start_time):
                        c.health, c.unanswered = "lazy", 0
                        server._counts[C["lazy_clients"]] += 1
                    else:
                        self.reap(c, "no keepalive reply and the process is gone")
                    continue
                handle = int(c.handle)
                server.send(c, mc.MemclntKeepalive(client_index=handle, context=handle))
                server._counts[C["keepalives_sent"]] += 1
                c.unanswered += 1
                c.health = "pinged"

    def stats(self) -> dict[str, int]:
        """The listener's counters (connections, refusals, closes, frames, drops)."""
        return self.listener.stats()
