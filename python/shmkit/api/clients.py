"""The binary-API server's clients: registration, liveness, reaping, dropping, and the
queues of clients that are gone.

:class:`ClientLifecycle` is the half of :class:`~shmkit.api.server.Server` that deals with
clients rather than messages:

* **registration** (VPP's ``memclnt_create_v2``, or ``memclnt_create``): ``input_queue`` is
  the offset of a client queue object not registered yet; the registering process is the one
  its validated header names as its creator (nobody registers in someone else's name), it
  must be alive (a pidfd is kept), and the table must have a free slot (else
  ``TABLE_TOO_BIG``); the handle is VPP's ``index << 8 | epoch``, and the reply's
  ``message_table`` the offset of a table object (:mod:`shmkit.api.msgtable`);
* **liveness**: pidfds are polled every ``death_poll``, keepalive scans run every
  ``scan_interval`` (VPP's "lazy client" rule); a dead client is **reaped**: reaper
  callbacks, its queue drained and removed, every message its process held reclaimed;
* **damage**: a client whose queue a peer damaged is **dropped** (reaper callbacks, its
  queue marked invalid so it learns at once) and its queue removed once it dies;
* **leftovers**: client queues that no registration accounts for and whose process is gone
  are removed (:meth:`ClientLifecycle.collect_queues`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shmkit import Queue, Region
from shmkit._native import ApiPort, Registration
from shmkit._native import process_alive as _alive
from shmkit._native import process_start_time as _proc_start
from shmkit.api import memclnt as mc
from shmkit.api.handle import MAX_INDEX, Handle
from shmkit.api.messages import Message, MessageError
from shmkit.api.msgtable import TableObjects
from shmkit.api.state import COUNTERS, StateImage
from shmkit.api.takeover import CLIENT_QUEUE_PREFIX, queue_owner, remove_client_queue
from shmkit.api.throttle import Throttle
from shmkit.errors import ShmkitError

if TYPE_CHECKING:
    from shmkit import MsgRings
    from shmkit._native import ClientTable, Outbox

__all__ = ["ClientInfo", "ClientLifecycle"]

log = logging.getLogger("shmkit.api")

C = {name: i for i, name in enumerate(COUNTERS)}
_HEALTH = {"ok": 0, "pinged": 1, "lazy": 2}


@dataclass(eq=False)
class ClientInfo:
    """A registered client, as the server sees it. A client of the socket transport
    (:mod:`shmkit.api.sockserver`) has a connection (``conn``) instead of a queue and no
    slot in the region's client table (``slot`` -1)."""

    slot: int
    index: int
    handle: Handle
    name: str
    pid: int
    start_time: int
    queue_name: str
    queue: Queue | None = field(repr=False)
    pidfd: int = field(default=-1, repr=False)
    last_heard: float = 0.0
    unanswered: int = 0
    health: str = "ok"
    dropped: int = 0
    last_gets: int = -1
    last_requests: int = 0
    #: the socket connection (0: a shared-memory client)
    conn: int = 0
    #: what dispatch sees of it (queue, reader pid, request count: ``api::dispatch``)
    reg: Registration = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.reg = Registration(self.queue, self.pid)

    @property
    def requests(self) -> int:
        """Requests it sent that were served or counted (either dispatch path)."""
        return self.reg.requests

    @property
    def queue_length(self) -> int:
        return len(self.queue) if self.queue is not None else 0


class ClientLifecycle:
    """Registration, liveness and cleanup of a server's clients (mixed into ``Server``,
    whose state it shares: the attributes below)."""

    name: str
    pid: int
    epoch: int
    scan_interval: float
    region: Region
    rings: MsgRings
    port: ApiPort
    state: StateImage
    report: Throttle
    _lock: threading.RLock
    _outbox: Outbox
    _counts: list[int]
    _clients: dict[int, ClientInfo]  # by table slot
    _listed: dict[int, ClientInfo]  # clients of the socket transport, by table slot
    _by_handle: ClientTable  # handle -> ClientInfo
    _next_index: int
    _stale: dict[str, tuple[int, int]]  # queues of clients we no longer serve
    _orphans_of: int  # the dead previous server whose messages wait for _stale to empty
    _reapers: list[Callable[[Handle, ClientInfo], None]]

    # The server's own, used here.
    send: Callable[[ClientInfo | Handle | int, Message], bool]
    message_table: Callable[[], dict[int, str]]
    _count_sent: Callable[[ClientInfo, int, int], None]
    _registered: Callable[[ClientInfo], None]
    _send_encoded: Callable[[ClientInfo, bytes], bool]
    _tables: TableObjects

    # ---------------------------------------------------------------- registration

    def _create(self, data: bytes, msg_id: int) -> None:
        """``memclnt_create`` / ``memclnt_create_v2`` (VPP's layouts): ``input_queue`` is the
        offset of the client's queue object in the API region; the registering process is
        the one its header names as its creator."""
        v2 = msg_id == mc.VPP_IDS[mc.MemclntCreateV2]
        request, reply_type = (
            (mc.MemclntCreateV2, mc.MemclntCreateV2Reply)
            if v2
            else (mc.MemclntCreate, mc.MemclntCreateReply)
        )
        reply_id = mc.VPP_IDS[reply_type]
        try:
            msg = request.decode(data)
        except MessageError:
            self._counts[C["invalid_messages"]] += 1
            return
        # Only a client queue may be named: a hostile client cannot make us send into our
        # own input queue or any other object, nor into a queue that is registered already.
        qname = self._client_queue_at(msg.input_queue)  # type: ignore[attr-defined]
        if qname is None or any(c.queue_name == qname for c in self._clients.values()):
            self._counts[C["invalid_messages"]] += 1
            return
        try:
            queue = Queue.open(self.region, qname)
        except (OSError, ShmkitError):
            self._counts[C["invalid_messages"]] += 1
            return
        # The registering process is the queue's creator (its validated header names it):
        # nobody registers in someone else's name.
        pid = queue.creator[0]
        if queue.elsize != 8 or not pid:
            self._counts[C["invalid_messages"]] += 1
            queue.close()
            return
        start = _proc_start(pid)
        pidfd = -1
        with contextlib.suppress(OSError):
            pidfd = os.pidfd_open(pid)
        if pidfd < 0 or not _alive(pid, start):
            if pidfd >= 0:
                os.close(pidfd)
            queue.close()
            self._counts[C["invalid_messages"]] += 1
            return
        # The table slot is reused; the registration index is not (until 2^24 registrations),
        # so a message from a dead client can never reach the next client in its slot.
        slot = self._free_slot()
        if slot is None:
            self._counts[C["refused_registrations"]] += 1
            self.report(
                "table_full",
                logging.WARNING,
                "API %s: refused client %r (pid %d): all %d client slots are taken",
                self.name,
                msg.name,  # type: ignore[attr-defined]
                pid,
                self.state.max_clients,
            )
            self._refuse(queue, pid, pidfd, reply_type(response=mc.TABLE_TOO_BIG), msg, reply_id)
            return
        try:
            table = self._tables.offset(self.message_table())
        except (OSError, ShmkitError) as exc:  # no room for it: refused, and said why
            self.report("table", logging.ERROR, "API %s: message table: %r", self.name, exc)
            self._refuse(queue, pid, pidfd, reply_type(response=mc.UNSPECIFIED), msg, reply_id)
            return
        index = self._next_index
        self._next_index = (index + 1) % (MAX_INDEX + 1)
        handle = Handle(index, self.epoch)
        client = ClientInfo(
            slot=slot,
            index=index,
            handle=handle,
            name=msg.name,  # type: ignore[attr-defined]
            pid=pid,
            start_time=start,
            queue_name=qname,
            queue=queue,
            pidfd=pidfd,
            last_heard=time.monotonic(),
        )
        self._clients[slot] = client
        self._by_handle[int(handle)] = client
        self._stale.pop(qname, None)
        self.state.write_entry(
            slot,
            state=1,
            pid=pid,
            start_time=start,
            handle=int(handle),
            index=index,
            epoch=self.epoch,
            health=0,
            last_heard_ns=time.monotonic_ns(),
            requests=0,
            dropped=0,
            name=client.name,
            queue=qname,
        )
        self._counts[C["registrations"]] += 1
        reply = reply_type(response=0, handle=int(handle), index=index, message_table=table)
        reply.context = msg.context
        self._send_encoded(client, reply.encode(reply_id))
        self._registered(client)

    def _free_slot(self) -> int | None:
        """The first slot of the client table no client (of either transport) holds."""
        taken = self._clients.keys() | self._listed.keys()
        return next((i for i in range(self.state.max_clients) if i not in taken), None)

    def list_client(self, client: ClientInfo, via: str) -> bool:
        """Give a client of another transport (the socket's) a slot of the client table, so
        ``shmkit api show`` lists it with the shared-memory ones; ``via`` is what its entry
        names as its queue (``@socket``, ``@socket+shm``). False: the table is full."""
        with self._lock:
            slot = client.slot if client.slot >= 0 else self._free_slot()
            if slot is None:
                return False
            client.slot = slot
            self._listed[slot] = client
            self.state.write_entry(
                slot,
                state=1,
                pid=client.pid,
                start_time=client.start_time,
                handle=int(client.handle),
                index=client.index,
                epoch=self.epoch,
                health=0,
                last_heard_ns=int(client.last_heard * 1e9),
                requests=client.requests,
                dropped=client.dropped,
                name=client.name,
                queue=via,
            )
            return True

    def unlist_client(self, client: ClientInfo) -> None:
        """Free the table slot of a client :meth:`list_client` listed."""
        with self._lock:
            if self._listed.get(client.slot) is client:
                del self._listed[client.slot]
                self.state.clear_entry(client.slot)
            client.slot = -1

    def _refuse(
        self, queue: Queue, pid: int, pidfd: int, reply: Message, request: Message, reply_id: int
    ) -> None:
        reply.context = request.context
        with contextlib.suppress(ShmkitError):
            self.port.send(queue, reply.encode(reply_id), to=pid)
        os.close(pidfd)
        queue.close()

    def _client_queue_at(self, offset: int) -> str | None:
        """The name of the client queue object at ``offset`` of the API region, if any."""
        try:
            for o in self.region.objects():
                if o["offset"] == offset and o["name"].startswith(CLIENT_QUEUE_PREFIX):
                    return str(o["name"])
        except (OSError, ShmkitError):
            pass  # a damaged directory: the guard repairs what it can; no registration now
        return None

    # ---------------------------------------------------------------- liveness

    def _poll_deaths(self) -> None:
        with self._lock:
            clients = [c for c in self._clients.values() if c.pidfd >= 0]
            if clients:
                poller = select.poll()
                for c in clients:
                    poller.register(c.pidfd, select.POLLIN)
                dead = {fd for fd, _ in poller.poll(0)}
                for c in clients:
                    if c.pidfd in dead:
                        self.reap(c, "process exited")
            for qname, (pid, start) in list(self._stale.items()):
                if not _alive(pid, start):
                    del self._stale[qname]
                    self._remove_queue(qname, pid, start)
            self.reclaim_orphans()

    def reclaim_orphans(self) -> None:
        """Free what a dead previous server held outside any queue (a request it was serving,
        replies it had not sent) once nothing can still refer to it: its input queue was
        drained at takeover, and the last queue it may have replied into (those of its
        clients still alive then) is gone. Until then the rings' GC age covers it."""
        with self._lock:
            pid = self._orphans_of
            if not pid or self._stale:
                return
            self._orphans_of = 0
            if any(c.pid == pid for c in self._clients.values()):
                return  # the pid now names a client of ours: its messages are its own
            self._counts[C["restart_reclaims"]] += self.rings.reclaim_pid(pid)

    def keepalive_scan(self) -> None:
        """VPP's periodic scan: quiet clients get a keepalive; two unanswered pings lead to a
        liveness check: alive -> "lazy", dead -> reaped."""
        now = time.monotonic()
        with self._lock:
            for c in list(self._clients.values()):
                assert c.queue is not None  # the table holds shared-memory clients only
                # Heard from: it sent something, or consumed from its queue (its head moved).
                gets = c.queue.stats()["gets"]
                heard = gets != c.last_gets or c.requests != c.last_requests
                c.last_gets, c.last_requests = gets, c.requests
                if heard:
                    c.last_heard = now
                    c.unanswered = 0
                    c.health = "ok"
                if heard or now - c.last_heard < self.scan_interval:
                    self.state.write_entry(c.slot, health=_HEALTH[c.health])
                    continue
                if c.unanswered >= 2:
                    if _alive(c.pid, c.start_time):
                        c.health = "lazy"
                        c.unanswered = 0
                        self._counts[C["lazy_clients"]] += 1
                    else:
                        self.reap(c, "no keepalive reply and the process is gone")
                        continue
                else:
                    # As VPP: the context names the client (its reply has no client index).
                    handle = int(c.handle)
                    self.send(c, mc.MemclntKeepalive(client_index=handle, context=handle))
                    self._counts[C["keepalives_sent"]] += 1
                    c.unanswered += 1
                    c.health = "pinged"
                    if self._clients.get(c.slot) is not c:
                        continue  # dropped: its queue was found damaged
                self.state.write_entry(c.slot, health=(c.unanswered << 16) | _HEALTH[c.health])
            for c in self._clients.values():
                self.state.write_entry(
                    c.slot, requests=c.requests, last_heard_ns=int(c.last_heard * 1e9)
                )
            for c in self._listed.values():  # their health is the socket's scan's
                self.state.write_entry(
                    c.slot,
                    health=(c.unanswered << 16) | _HEALTH[c.health],
                    requests=c.requests,
                    dropped=c.dropped,
                    last_heard_ns=int(c.last_heard * 1e9),
                )

    def reap(self, client: ClientInfo, reason: str = "reaped") -> None:
        """Reap a dead client: run reaper callbacks, reclaim its queue and every message it
        held, free its registration."""
        with self._lock:
            if self._clients.get(client.slot) is not client:
                return
            log.info(
                "API %s: reaping client %r pid %d (%s)", self.name, client.name, client.pid, reason
            )
            self._end(client)
            self.rings.reclaim_pid(client.pid)
            self.region.scan_ghosts()
            self._counts[C["reaped"]] += 1

    def drop_damaged(self, client: ClientInfo, why: str) -> None:
        """Drop a client whose queue a peer damaged (the server cannot trust what it would
        send through it): run reaper callbacks, free its registration, and mark its queue
        invalid so the client learns at its next call (``ConnectionDamagedError``) and can
        connect again. Its queue object is removed once its process is gone."""
        with self._lock:
            if self._clients.get(client.slot) is not client:
                return
            self._counts[C["damaged_clients"]] += 1
            self.report(
                "damaged_client",
                logging.WARNING,
                "API %s: dropped client %r (pid %d): its queue is damaged (%s)",
                self.name,
                client.name,
                client.pid,
                why,
            )
            if client.queue is not None:
                with contextlib.suppress(ShmkitError):
                    client.queue.invalidate()
            self._end(client)

    def _end(self, client: ClientInfo) -> None:
        """End a registration the client did not end itself: reaper callbacks, then forget."""
        for fn in self._reapers:
            try:
                fn(client.handle, client)
            except Exception:
                self.report(
                    "reaper",
                    logging.ERROR,
                    "API %s: reaper callback failed",
                    self.name,
                    exc_info=True,
                )
        self._forget(client)

    def _forget(self, client: ClientInfo, clean: bool = False) -> None:
        """Drop a registration. A dead client's queue is drained and removed; a live one
        removes its own (if it does not, it is removed when the client dies)."""
        flushed = self._outbox.flush_client(client)
        if flushed is not None:
            self._count_sent(client, *flushed[:2])
        self._clients.pop(client.slot, None)
        self._by_handle.pop(int(client.handle), None)
        self.state.clear_entry(client.slot)
        if client.pidfd >= 0:
            os.close(client.pidfd)
            client.pidfd = -1
        if client.queue is not None:
            client.queue.close()
        if clean:
            return
        if _alive(client.pid, client.start_time):
            self._stale[client.queue_name] = (client.pid, client.start_time)
        else:
            self._remove_queue(client.queue_name, client.pid, client.start_time)

    def _remove_queue(self, qname: str, pid: int, start: int = 0) -> None:
        remove_client_queue(self.region, self.port, self.rings, qname, pid, start)

    def collect_queues(self, adopt_live: bool = False) -> None:
        """Remove the client queues in the region that no registration of this server
        accounts for and whose process is gone (a client that gave up registering, or one
        of a previous server); with ``adopt_live``, track the live ones to remove when they
        die. (The guard calls it every ``scan_interval``.)"""
        with self._lock:
            known = {c.queue_name for c in self._clients.values()} | set(self._stale)
            for obj in self.region.objects():
                qname = obj["name"]
                if not qname.startswith(CLIENT_QUEUE_PREFIX) or qname in known:
                    continue
                pid, start = queue_owner(self.region, qname)
                if not (pid and _alive(pid, start)):
                    self._remove_queue(qname, pid, start)
                elif adopt_live:
                    self._stale[qname] = (pid, start)
