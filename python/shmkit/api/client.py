"""The binary-API client: a control plane's connection to a :class:`~shmkit.api.Server`.

``Client.connect(name, client_name)`` creates the client's input queue in the API region,
sends VPP's ``memclnt_create_v2`` and learns the handle and the message table from the reply. Then
``call(msg)`` sends a request with a fresh context and returns the matching reply; replies may
arrive out of order and many calls may be in flight (``call_many``, or ``submit`` +
``result``); messages that answer no pending call are events, read with ``recv()``.

Receiving works leader/follower style: whichever thread waits for a reply reads the queue
for everyone, answering keepalives on the way and handing other threads their replies; a
small background thread does the same when nobody is waiting, so an idle client stays
healthy. The server's liveness is checked through a pidfd and the shared epoch, so a dead or
restarted server surfaces as :class:`ServerGoneError` / :class:`ServerRestartedError` within a
fraction of a second, not after a timeout.

Other processes can write into the API region too, so the client believes a change of server
only if the server's identity carries its seal (garbage there is repaired by the server and
ignored here), retries a send while the server repairs a damaged input queue, and turns
damage to its own queue (or the server dropping it for that) into
:class:`ConnectionDamagedError`: connect again.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

from shmkit import MsgRings, Queue, Region
from shmkit._native import ApiPort
from shmkit._native import process_alive as _alive
from shmkit.api import memclnt as mc
from shmkit.api import msgtable
from shmkit.api.client_base import (
    IDLE_PERIOD,
    SLICE,
    WATCH_PERIOD,
    ClientBase,
    RawMessage,
    _deadline,
)
from shmkit.api.handle import Handle
from shmkit.api.messages import HEADER, REGISTRY, REQUEST, Message, MessageError
from shmkit.api.state import ApiState
from shmkit.api.takeover import CLIENT_QUEUE_PREFIX, INPUT_QUEUE, RINGS
from shmkit.errors import (
    CapacityError,
    ConnectionDamagedError,
    CorruptionError,
    RegionTruncatedError,
    ServerGoneError,
    ServerRestartedError,
    ShmkitError,
    UnknownMessageError,
)

__all__ = [
    "Client",
    "ConnectionDamagedError",
    "ServerGoneError",
    "ServerRestartedError",
    "UnknownMessageError",
]

log = logging.getLogger("shmkit.api")

_unpack_header = HEADER.unpack_from
_KEEPALIVE = mc.VPP_IDS[mc.MemclntKeepalive]
_DELETE_REPLY = mc.VPP_IDS[mc.MemclntDeleteReply]
_counter = itertools.count()
#: Seconds our queue may hold messages none of which can be read (its head slot made to look
#: not yet written by another process, while the server goes on filling the slots after it)
#: before the connection is given up as damaged. A server stopped half-way through a reply
#: for that long is taken for the same (the server gives a client stalling its input queue
#: ``claim_timeout``, 1 s by default).
STALL_TIMEOUT = 2.0
#: The other transports, by the keyword of :meth:`Client.connect` that selects them: ``socket``
#: is :meth:`shmkit.api.sockclient.SockClient.connect_socket`, registered when that module is
#: imported (``shmkit.api`` imports it), so this one needs nothing of it.
TRANSPORTS: dict[str, Callable[..., Client]] = {}


class Client(ClientBase):
    """A connection to an API server. Thread-safe. Use :meth:`connect`. This class is the
    shared-memory transport (:mod:`shmkit.api.sockclient` the socket one); what a client
    does with a connection is :class:`~shmkit.api.client_base.ClientBase`."""

    _owner: dict[str, Any]  # what the API region's owner and mode must be (Region.open)
    #: how it connected (name, client name, root, timeout, queue capacity, keepalive): pickling
    _connect_args: tuple[str, str, str | None, float | None, int, bool]

    def __init__(self) -> None:  # use connect()
        self._closed = True

    @classmethod
    def connect(
        cls,
        name: str,
        client_name: str,
        *,
        root: str | None = None,
        timeout: float | None = 10.0,
        queue_capacity: int = 4096,
        keepalive_thread: bool = True,
        uid: int | None = None,
        mode: int | None = None,
        socket: str | os.PathLike[str] | None = None,
        reconnect: bool = False,
        require: Mapping[str, tuple[int, int]] | None = None,
    ) -> Client:
        """Register with the server of API ``name``; ``TimeoutError`` if none answers,
        :class:`~shmkit.CapacityError` if its client table is full. The API region must be
        owned by this process's user, or by ``uid`` (a server shared across users, VPP's
        ``api-segment { uid gid }``), and its mode be no wider than ``mode``; else
        ``PermissionError`` (checked by :class:`~shmkit.Region` when it opens the region).

        With ``socket=PATH``, connects over VPP's socket transport instead (a server made
        with ``Server(..., socket=PATH)``; :class:`~shmkit.api.sockclient.SockClient`, the
        same API); ``root``, ``queue_capacity``, ``uid``, ``mode`` and ``reconnect`` do not
        apply.

        With ``reconnect=True`` (needs the background thread), a client whose server dies,
        restarts or closes registers again by itself with the next server of ``name``
        (a new handle, the message table learned again): see :meth:`on_restart`.

        With ``require={module: (major, minor)}`` the server's module versions are checked
        once registered (:meth:`require`): a mismatch deregisters and raises
        :class:`~shmkit.VersionMismatchError`."""
        client = cls._connect(
            name,
            client_name,
            root,
            timeout,
            queue_capacity,
            keepalive_thread,
            uid,
            mode,
            socket,
            reconnect,
        )
        if require:
            try:
                client.require(require, timeout)
            except BaseException:
                client.close()
                raise
        return client

    @classmethod
    def _connect(
        cls,
        name: str,
        client_name: str,
        root: str | None,
        timeout: float | None,
        queue_capacity: int,
        keepalive_thread: bool,
        uid: int | None,
        mode: int | None,
        socket: str | os.PathLike[str] | None,
        reconnect: bool,
    ) -> Client:
        if reconnect and not keepalive_thread:
            raise ValueError("reconnect=True needs the background thread (keepalive_thread)")
        if socket is not None:
            if reconnect:
                raise ValueError("reconnect=True is for the shared-memory transport")
            return TRANSPORTS["socket"](
                socket, client_name, name=name, timeout=timeout, keepalive_thread=keepalive_thread
            )
        self = cls.__new__(cls)
        self._owner = {k: v for k, v in (("uid", uid), ("mode", mode)) if v is not None}
        self._connect_args = (name, client_name, root, timeout, queue_capacity, keepalive_thread)
        self._init_local(reconnect)
        self._setup(name, client_name, root, timeout, queue_capacity)
        if keepalive_thread:
            self._bg = threading.Thread(
                target=self._background, daemon=True, name=f"shmkit-api-client-{client_name}"
            )
            self._bg.start()
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickling: a client pickles as how it connected, and unpickles by connecting again
        (a new registration, with its own handle, in the receiving process), so
        ``multiprocessing`` can hand it to a child with any start method."""
        name, client_name, root, timeout, capacity, keepalive = self._connect_args
        return (_reconnect, (name, client_name, root, timeout, capacity, keepalive, self._owner))

    # ---------------------------------------------------------------- connecting

    def _setup(
        self, name: str, client_name: str, root: str | None, timeout: float | None, capacity: int
    ) -> None:
        deadline = _deadline(timeout)
        self.name, self.client_name, self.root = name, client_name, root
        self._closed = True
        self._delete_context = 0
        self._init_calls()
        self._next_liveness = 0.0
        self._stall_since: float | None = None
        self._server_may_hold_queue = False
        self.region, self.state, server = self._wait_for_server(deadline)
        try:
            self.port = ApiPort(self.rings)
            self.queue_name = f"{CLIENT_QUEUE_PREFIX}{os.getpid()}-{next(_counter)}"
            self.queue = Queue.create(self.region, self.queue_name, capacity, 8)
        except BaseException:
            self.region.close()
            raise
        try:
            self._register(client_name, server, deadline)
        except BaseException:
            if self._server_may_hold_queue:
                # The server may have registered us (its reply lost, or late) and hold the
                # queue open: never free it under it. Marked invalid, the server drops the
                # registration, and removes the queue once this process is gone.
                with contextlib.suppress(ShmkitError):
                    self.queue.invalidate()
            self._release(remove_queue=not self._server_may_hold_queue)
            raise
        self._closed = False

    def _wait_for_server(self, deadline: float) -> tuple[Region, ApiState, tuple[int, int, int]]:
        """Open the API region once it has a live server and its shared objects validate
        (a server repairs what a peer damaged within its ``death_poll``); the rings and the
        server's input queue are opened too."""
        last: Exception | None = None
        while True:
            try:
                region = Region.open(
                    self.name,
                    root=self.root,
                    timeout=max(0.0, deadline - time.monotonic()),
                    **self._owner,
                )
                try:
                    state = ApiState.open(region)
                    server = state.sealed()
                    if server is not None and server[1] and _alive(*server[1:]):
                        self.rings = MsgRings.open(region, RINGS)
                        self.server_input = Queue.open(region, INPUT_QUEUE)
                        return region, state, server
                    last = (
                        ServerGoneError(f"API {self.name!r} has no live server")
                        if server is not None
                        else CorruptionError(f"API {self.name!r}: its state is damaged")
                    )
                except (OSError, ValueError, ShmkitError) as exc:
                    last = exc
                region.close()
            except PermissionError:
                raise  # not ours to adopt (owner, mode, symlink): waiting changes nothing
            except (OSError, ShmkitError, TimeoutError) as exc:
                last = exc
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"no shmkit API server {self.name!r} answered within the timeout ({last})"
                )
            time.sleep(0.02)  # waiting for a server process to appear; bounded by the deadline

    def _register(self, client_name: str, server: tuple[int, int, int], deadline: float) -> None:
        epoch, pid, start = server
        self.server_pid, self._server_start = pid, start
        try:
            self._server_fd = os.pidfd_open(pid)
        except OSError as exc:
            raise ServerGoneError(f"API {self.name!r}: server pid {pid} is gone") from exc
        create_id, reply_id = mc.VPP_IDS[mc.MemclntCreateV2], mc.VPP_IDS[mc.MemclntCreateV2Reply]
        self._table: dict[str, int] = {mc.MemclntCreateV2.name_crc(): create_id}
        self._ids: dict[int, type[Message]] = {reply_id: mc.MemclntCreateV2Reply}
        self._epoch = epoch
        # VPP's layout: our queue by its offset in the region (the server finds the queue
        # object there, and us as its creator).
        create = mc.MemclntCreateV2(
            ctx_quota=0,
            input_queue=self.region.find_object(self.queue_name)["offset"],
            name=client_name,
            api_versions=[0] * 8,
            keepalive=True,
            context=next(self._contexts) & 0xFFFFFFFF,
        )
        self._pending.add(create.context)
        self._server_may_hold_queue = True  # from here on, the server may know our queue
        self._send_bytes(create.encode(create_id), deadline)  # no handle yet: raw id
        reply = self._wait(create.context, deadline, registering=True)
        if reply.response != 0:
            self._server_may_hold_queue = False  # refused: the server let go of it
        if reply.response == mc.TABLE_TOO_BIG:
            raise CapacityError(
                f"API {self.name!r} is full: all {self.state.max_clients} client slots are "
                "taken (a slot frees when a client leaves or dies)"
            )
        if reply.response != 0:
            raise ShmkitError(
                f"API {self.name!r} refused the registration (response {reply.response})"
            )
        self.handle = Handle.from_int(reply.handle)
        self._handle_int = int(self.handle)
        self.index = reply.index
        self._table = msgtable.read(self.region, reply.message_table)
        self._ids = {i: REGISTRY[n] for n, i in self._table.items() if n in REGISTRY}
        # Replies decoded and placed natively (ApiPort.recv_replies); keepalives go the
        # general way (answered), and so do types whose header the native path cannot read.
        self._decoders: dict[int, Any] = {
            i: c._codec or c.decode
            for i, c in self._ids.items()
            if i != _KEEPALIVE and c._header == REQUEST
        }
        # What came with the reply (e.g. sent by the server's on_register callbacks) was read
        # before the table was known: decode it now.
        with self._cv:
            self._events = deque(self._known(m) for m in self._events)

    # ---------------------------------------------------------------- sending

    def _send_bytes(self, data: bytes, deadline: float) -> None:
        # The server's input queue is multi-producer: threads need no lock to send.
        try:
            if self.port.send(self.server_input, data, "client", self.server_pid):
                return
        except RegionTruncatedError:
            raise  # the memory is gone: no repair will come
        except CorruptionError:
            pass  # retried below
        while True:
            try:
                if self.port.send_wait(
                    self.server_input,
                    data,
                    min(SLICE, max(0.0, deadline - time.monotonic())),
                    "client",
                    self.server_pid,
                ):
                    return
                what = "stays full"
            except RegionTruncatedError:
                raise  # the memory is gone: no repair will come
            except CorruptionError:
                # Another process damaged the server's input queue; the server repairs it
                # within its death_poll. Nothing was queued: try again shortly.
                what = "is damaged"
                time.sleep(0.005)  # back-off while the server repairs, bounded by the deadline
            self._check_server()
            if time.monotonic() >= deadline:
                raise TimeoutError(f"API {self.name!r}: the server's input queue {what}")

    def _call(self, msg: Message, timeout: float | None) -> Any:
        """One call, read by this thread if no other is reading: its reply is decoded natively
        straight into its place (as :meth:`call_many`'s), with no routing; else (another
        thread reads, a reconnection runs) the general way (:meth:`ClientBase._wait`)."""
        if self._reconnecting or not self._rx_lock.acquire(blocking=False):
            return super()._call(msg, timeout)
        try:
            deadline = _deadline(timeout)
            generation = self._generation
            ctx = self.submit(msg, timeout)
            self._check_server()  # as the general way does before it waits
            out: list[Message | None] = [None]
            sink = (ctx, out, self._decoders)
            while True:
                self._pump(min(SLICE, max(0.0, deadline - time.monotonic())), sink)
                r = out[0]
                if r is None:  # a reply of a type the native path does not decode
                    r = self._replies.pop(ctx, None)
                if r is not None:
                    self._pending.discard(ctx)
                    return r
                self._check_server()
                if generation != self._generation:
                    raise ServerRestartedError(
                        f"API {self.name!r}: the client reconnected; context {ctx} was lost"
                    )
                if time.monotonic() >= deadline:
                    self._pending.discard(ctx)
                    raise TimeoutError(
                        f"API {self.name!r}: no reply to context {ctx} within the timeout"
                    )
        finally:
            self._rx_lock.release()
            if self._followers:
                with self._cv:
                    self._cv.notify_all()

    def _call_many(self, msgs: Iterable[Message], timeout: float | None, window: int) -> list[Any]:
        if window <= 0:
            raise ValueError("window must be positive")
        self._check_open()
        deadline = _deadline(timeout)
        msgs = list(msgs)
        n = len(msgs)
        out: list[Message | None] = [None] * n
        if not n:
            return []
        # One block of consecutive contexts, taken in one step (islice skips in C, with no
        # bytecode boundary for another thread to take one in between): a reply's index is
        # its context's offset in the block.
        base = next(itertools.islice(self._contexts, n - 1, None)) - (n - 1)
        # Encoded natively, in one buffer; a bad value raises here, before anything is sent.
        datas = self.port.encode_calls(msgs, base, self._handle_int, self._resolve)
        if not self._rx_lock.acquire(timeout=min(SLICE, max(0.0, deadline - time.monotonic()))):
            # Another thread is reading: take the general path.
            return [self.call(m, timeout) for m in msgs]
        decoders = self._decoders
        sent = got = 0
        try:
            while got < n:
                k = 0
                if sent < n and sent - got < window:
                    with contextlib.suppress(CorruptionError):  # see _send_bytes
                        k = self.port.send_encoded(
                            self.server_input, datas, sent, got + window, "client", self.server_pid
                        )
                    sent += k
                got += self._pump(0.0 if k else SLICE, (base, out, decoders)) if sent > got else 0
                if sent < n and sent == got and not k:
                    # Nothing in flight and the server's queue is full: wait for room.
                    self._send_bytes(datas[sent], deadline)
                    sent += 1
                if got < n:
                    self._check_server()
                    if time.monotonic() >= deadline:
                        raise TimeoutError(
                            f"API {self.name!r}: {n - got} of {n} pipelined calls unanswered"
                        )
        finally:
            self._rx_lock.release()
            if self._followers:
                with self._cv:
                    self._cv.notify_all()
        return out

    # ---------------------------------------------------------------- receiving

    def _pump(
        self,
        timeout: float,
        sink: tuple[int, list[Message | None], dict[int, Any]] | None = None,
    ) -> int:
        """Read one batch from our queue and route it (caller holds the rx lock). Replies to
        the contexts of ``sink`` (``base``, ``out``, ``decoders``: the contexts ``base + i``
        for the indexes of ``out``) go straight into its list; returns how many did."""
        try:
            if sink is None:
                placed, batch = 0, self.port.recv(self.queue, 256, timeout)
                base, out = 0, cast("list[Message | None]", [])
            else:
                base, out, decoders = sink
                placed, batch = self.port.recv_replies(
                    self.queue, out, base, decoders, 256, timeout
                )
        except RegionTruncatedError:
            raise  # the memory is gone: no repair will come
        except CorruptionError as exc:
            raise self._damaged(exc) from exc
        if placed or batch:
            self._stall_since = None
        else:
            self._note_stall()
        if not batch:
            return placed
        routed: list[tuple[int, Message]] = []
        ids_get = self._ids.get
        n_out = len(out)
        hdr = HEADER.size
        last_id, cls = -1, None
        for data in batch:
            if len(data) < hdr:
                continue
            msg_id = data[0] << 8 | data[1]
            if msg_id != last_id:
                last_id, cls = msg_id, ids_get(msg_id)
            if cls is None or msg_id == _KEEPALIVE:
                context = _unpack_header(data)[2]
                if msg_id == _KEEPALIVE:  # memclnt_keepalive: answer at once
                    self._keepalive_reply(context)
                    continue
                routed.append((context, RawMessage(msg_id, data)))
                continue
            try:
                msg: Message = cls.decode(data)
            except MessageError:
                log.warning("API %s: undecodable message id %d", self.name, msg_id)
                continue
            context = msg.context if msg_id != _DELETE_REPLY else self._delete_context
            i = (context - base) & 0xFFFFFFFF
            if i < n_out and out[i] is None:
                out[i] = msg
                placed += 1
                continue
            routed.append((context, msg))
        if routed:
            self._deliver(routed)
        return placed

    def _keepalive_reply(self, context: int) -> None:
        reply = mc.MemclntKeepaliveReply(retval=0, context=context)
        try:
            data = self._encode(reply)
        except UnknownMessageError:
            return
        # Never block the receive path on a full (or damaged) server queue: a missed reply
        # only makes the server check our pid.
        with contextlib.suppress(ShmkitError):
            self.port.send(self.server_input, data, "client", self.server_pid)

    def _background(self) -> None:
        """Keep an idle client healthy: every :data:`IDLE_PERIOD`, if nobody waits for a reply
        and something is queued, read it (answering keepalives, queueing events). A timer
        rather than the queue's eventfd: the fd needs a helper thread woken on every message,
        which would tax exactly the busy clients that need no help. It also runs the event
        callbacks (woken at once when there are some) and watches the server: a death or
        restart is noticed within :data:`WATCH_PERIOD` (see :meth:`on_restart`)."""
        next_watch = 0.0
        while not self._stop.is_set():
            self._kick.wait(IDLE_PERIOD)
            self._kick.clear()
            if self._stop.is_set():
                break
            self._run_callbacks()
            # Watched only when someone asked: an unwatched idle client learns of a
            # restart at its next call (ServerRestartedError, rather than the death first).
            watched = self._auto_reconnect or self._on_restart
            if watched and (self._error is not None or time.monotonic() >= next_watch):
                next_watch = time.monotonic() + WATCH_PERIOD
                if not self._watch():
                    continue
            if self._pending or not len(self.queue):
                continue
            if self._rx_lock.acquire(blocking=False):
                try:
                    self._pump(0.0)
                except (ShmkitError, OSError):
                    pass
                finally:
                    self._rx_lock.release()
            self._run_callbacks()

    # ---------------------------------------------------------------- restarts

    def _watch(self) -> bool:
        """Check the server (from the background thread); returns whether the connection is
        usable. A loss is reported once to the ``on_restart`` functions; with
        ``reconnect=True`` a new connection is tried."""
        if self._error is None:
            try:
                self._check_server(force=True)
                return True
            except (ConnectionError, ShmkitError):
                pass
        error = self._error
        if error is not None and error is not self._reported:
            self._reported = error  # a caller may have noticed first: reported all the same
            self._notify(self._on_restart, self, error)
        if self._auto_reconnect and isinstance(
            self._error, (ServerGoneError, ServerRestartedError, ConnectionDamagedError)
        ):
            self._reconnect_now()
        return self._error is None

    def _reconnect_now(self) -> None:
        """One attempt to register with the server of this API again (bounded by
        :data:`WATCH_PERIOD`); the old connection is let go first."""
        error = self._error
        name, client_name, root, _, capacity, _ = self._connect_args
        if not self._reconnecting:
            with self._rx_lock:
                # As close() does: a queue the server may still hold (ours was found
                # damaged) is left for its reaper, else it is removed.
                self._closed = True
                self._reconnecting = True
                self._release(remove_queue=not isinstance(error, ConnectionDamagedError))
        # Not under the rx lock: registering reads the new queue as any waiter does. Other
        # waiters leave at once (_wait sees _reconnecting), so only this thread reads.
        try:
            self._setup(name, client_name, root, WATCH_PERIOD, capacity)
        except (TimeoutError, ConnectionError, ShmkitError, OSError):
            self._error = error  # still lost; tried again at the next watch
            return
        self._generation += 1
        self._reconnecting = False
        self._closed = False
        with self._cv:
            self._cv.notify_all()
        log.info("API %s: client %r reconnected (%s)", self.name, client_name, error)
        self._notify(self._on_reconnect, self)

    # ---------------------------------------------------------------- liveness

    def _check_server(self, force: bool = False) -> None:
        """Raise if the server died or was replaced, or dropped us. The epoch word is read
        every time (a few hundred ns; a change is believed only with its seal); the pidfd,
        /proc and our queue's header are looked at once per :data:`SLICE`."""
        if self._error is not None:
            raise self._error
        epoch, pid = self.state.epoch_pid()
        if epoch != self._epoch or pid != self.server_pid:
            if self.region.truncated:  # the state reads zeros: the memory is gone, not the server
                self._error = RegionTruncatedError(
                    f"API {self.name!r}: its region was truncated under this process"
                )
                raise self._error
            sealed = self.state.sealed()
            if sealed is not None and sealed[:2] != (self._epoch, self.server_pid):
                if sealed[1] == 0:
                    self._error = ServerGoneError(f"API {self.name!r}: the server closed")
                else:
                    self._error = ServerRestartedError(
                        f"API {self.name!r}: the server restarted (epoch {self._epoch} -> "
                        f"{sealed[0]}); connect again"
                    )
                raise self._error
            # Else garbage (or a write caught half-way): the server rewrites it.
        now = time.monotonic()
        if not force and now < self._next_liveness:
            return
        self._next_liveness = now + SLICE
        if select.select([self._server_fd], [], [], 0)[0] or not _alive(
            self.server_pid, self._server_start
        ):
            self._error = ServerGoneError(f"API {self.name!r}: server pid {self.server_pid} died")
            raise self._error
        try:
            self.queue.check()
        except RegionTruncatedError:
            raise  # the memory is gone: no repair will come
        except CorruptionError as exc:
            raise self._damaged(exc) from exc

    def _note_stall(self) -> None:
        """A read of our queue found nothing. If the queue holds messages all the same, and
        goes on holding unreadable ones for :data:`STALL_TIMEOUT`, its head slot was damaged
        so as to look not yet written (the server fills the slots after it, which nobody
        will ever reach): the connection is given up as for any other damage to its queue."""
        try:
            held = len(self.queue)
        except CorruptionError as exc:
            raise self._damaged(exc) from exc
        if not held:
            self._stall_since = None
            return
        now = time.monotonic()
        if self._stall_since is None:
            self._stall_since = now
        elif now - self._stall_since >= STALL_TIMEOUT:
            raise self._damaged(
                CorruptionError(
                    f"queue {self.queue.name!r} has held {held} messages for "
                    f"{now - self._stall_since:.1f} s and none can be read: the slot at its "
                    "head stays unwritten"
                )
            )

    def _damaged(self, exc: Exception) -> ConnectionDamagedError:
        """Give up this connection: its queue cannot be trusted. It is marked invalid, so
        the server (if it has not noticed yet) drops the registration at its next check."""
        with contextlib.suppress(ShmkitError):
            self.queue.invalidate()
        self._error = ConnectionDamagedError(
            f"API {self.name!r}: this client's queue was damaged by another process ({exc}); "
            "the server dropped the connection: connect again"
        )
        return self._error

    @property
    def connected(self) -> bool:
        if self._closed:
            return False
        try:
            self._check_server()
        except ConnectionError:
            return False
        return True

    # ---------------------------------------------------------------- closing

    def close(self, timeout: float | None = 2.0) -> bool:
        """Deregister (memclnt_delete, bounded by ``timeout``). Returns whether the server
        acknowledged; if it did not ("peer unresponsive"), the client's queue is left for
        the server's reaper rather than freed under a possibly live server."""
        if self._closed:
            if self._reconnecting and not self._stop.is_set():
                self._stop_background()  # lost and not reconnected: nothing to deregister
                self._reconnecting = False
            return True
        self._closed = True
        acked = False
        try:
            self._check_server()
            req = mc.MemclntDelete(index=self.index, handle=int(self.handle), do_cleanup=True)
            # VPP's delete and its reply carry no context: the reply is routed to this one.
            self._delete_context = req.context = next(self._contexts) & 0xFFFFFFFF
            self._pending.add(req.context)
            deadline = _deadline(timeout)
            self._send_bytes(self._encode(req), deadline)
            self._wait(req.context, deadline)
            acked = True
        except ServerRestartedError:
            acked = True  # the new server never knew us: the queue is ours to remove
        except ServerGoneError:
            acked = True  # nobody can write into the queue any more
        except ConnectionDamagedError:
            # The server drops us (our queue is marked invalid) and removes the queue once
            # this process is gone: it may still hold it open until then.
            pass
        except (TimeoutError, UnknownMessageError, ShmkitError, OSError):
            log.warning("API %s: peer unresponsive, giving up on memclnt_delete", self.name)
        self._teardown(remove_queue=acked)
        return acked

    def _teardown(self, remove_queue: bool) -> None:
        self._stop_background()
        with self._rx_lock:
            self._release(remove_queue)

    def _stop_background(self) -> None:
        self._stop.set()
        self._kick.set()
        with self._cv:
            self._cv.notify_all()
        if self._bg is not None and self._bg is not threading.current_thread():
            self._bg.join(2)

    def _release(self, remove_queue: bool) -> None:
        """Let go of this connection's queue, server pidfd and region (the caller holds the
        rx lock, or nobody else can use the client)."""
        if remove_queue:
            with contextlib.suppress(ShmkitError):  # a damaged queue is removed all the same
                self.port.drain(self.queue)
        self.queue.close()
        if remove_queue:
            with contextlib.suppress(OSError, ShmkitError):
                self.region.remove_object(self.queue_name)
        if getattr(self, "_server_fd", -1) >= 0:
            os.close(self._server_fd)
            self._server_fd = -1
        # The stored error's traceback refers back to this client: without this, a damaged
        # client's handles (and so its region's fd and mapping) lived on until a GC pass.
        self._error = None
        self.region.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"handle={self.handle}"
        return f"<shmkit.api.Client {self.client_name!r} of {self.name!r} {state}>"


def _reconnect(
    name: str,
    client_name: str,
    root: str | None,
    timeout: float | None,
    capacity: int,
    keepalive: bool,
    owner: dict[str, int],
) -> Client:
    """Unpickle a :class:`Client` (see ``Client.__reduce__``)."""
    return Client.connect(
        name,
        client_name,
        root=root,
        timeout=timeout,
        queue_capacity=capacity,
        keepalive_thread=keepalive,
        uid=owner.get("uid"),
        mode=owner.get("mode"),
    )
