"""What a binary-API client does with its connection, whichever transport carries it.

A :class:`ClientBase` holds the calls an application makes — ``call``, ``submit`` +
``result``, ``call_many``, ``dump``/``dump_iter``, ``recv``, events and their callbacks,
``api_json``/``api_versions``/``require``, ``ping`` — and the bookkeeping under them: the
message table it learned, contexts, calls in flight and their replies, open dumps, and the
leader/follower wait in which whichever thread waits reads for everyone (:meth:`_wait`,
:meth:`_deliver`). How bytes move is the transport's: :class:`shmkit.api.client.Client`
(shared memory) and :class:`shmkit.api.sockclient.SockClient` (VPP's socket) provide
:meth:`_send_bytes`, :meth:`_pump`, :meth:`_call_many`, :meth:`_check_server` and
:meth:`close`.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

from shmkit.api import memclnt as mc
from shmkit.api.messages import Message, MessageError
from shmkit.errors import (
    ServerGoneError,
    ServerRestartedError,
    ShmkitError,
    UnknownMessageError,
    VersionMismatchError,
)

if TYPE_CHECKING:
    from shmkit._native import Codec

__all__ = ["IDLE_PERIOD", "SLICE", "WATCH_PERIOD", "ClientBase", "RawMessage"]

log = logging.getLogger("shmkit.api")

#: how often a waiting caller re-checks the server's liveness and epoch
SLICE = 0.05
#: the idle reader looks at the queue at most this often
IDLE_PERIOD = 0.02
#: the background thread checks the server's liveness (and tries to reconnect) this often
WATCH_PERIOD = 0.25


def _is(msg: Message, t: type[Message]) -> bool:
    """Whether ``msg`` is a ``t``: the same definition (name and CRC), whichever class of it
    decoded the message (another module may define the same message again)."""
    cls = type(msg)
    return cls is t or getattr(cls, "_name_crc", None) == t._name_crc


def _deadline(timeout: float | None) -> float:
    """The deadline of a call given ``timeout`` seconds, as everywhere in shmkit: ``None``
    waits forever, ``0`` does not wait, a negative timeout is a ``ValueError``."""
    if timeout is None:
        return time.monotonic() + 1e9
    if not timeout >= 0:
        raise ValueError(f"timeout must be a non-negative number, got {timeout}")
    return time.monotonic() + timeout


#: a reply message class (Client.call(..., reply=...))
R = TypeVar("R", bound=Message)
_C = TypeVar("_C", bound="ClientBase")


class RawMessage(Message):
    """A message whose type this process does not know (id and bytes kept)."""

    __slots__ = ("data", "msg_id")
    _name = "raw"

    def __init__(self, msg_id: int, data: bytes) -> None:
        super().__init__()
        self.msg_id = msg_id
        self.data = data

    def __repr__(self) -> str:
        return f"<raw message id {self.msg_id}, {len(self.data)} bytes>"


class ClientBase:
    """The transport-independent half of a client (see the module docs)."""

    name: str
    _closed: bool
    _table: dict[str, int]
    _ids: dict[int, type[Message]]

    # ---------------------------------------------------------------- the transport's part

    def _send_bytes(self, data: bytes, deadline: float) -> None:
        """Send one encoded message, waiting for room until ``deadline``."""
        raise NotImplementedError

    def _pump(
        self,
        timeout: float,
        sink: tuple[int, list[Message | None], dict[int, Any]] | None = None,
    ) -> int:
        """Read what arrived (waiting up to ``timeout``) and hand it over (:meth:`_deliver`;
        replies of a pipelined batch into ``sink``); returns how many went into ``sink``."""
        raise NotImplementedError

    def _call_many(self, msgs: Iterable[Message], timeout: float | None, window: int) -> list[Any]:
        """Pipelined requests and their replies, in order."""
        raise NotImplementedError

    def _check_server(self, force: bool = False) -> None:
        """Raise if the connection is lost (the server died, restarted or dropped us)."""
        raise NotImplementedError

    def close(self, timeout: float | None = 2.0) -> bool:
        """Deregister and let go of the connection."""
        raise NotImplementedError

    # ---------------------------------------------------------------- state

    def _init_local(self, reconnect: bool) -> None:
        """What outlives a connection: threads' synchronisation, contexts, events not read
        yet, callbacks (a reconnection keeps them)."""
        self._bg: threading.Thread | None = None
        self._stop = threading.Event()
        self._kick = threading.Event()  # wakes the background thread (callbacks to run)
        self._rx_lock = threading.Lock()
        self._cv = threading.Condition()
        self._followers = 0
        self._contexts = itertools.count(1)
        self._events: deque[Message] = deque()
        # By name_crc: whichever class of this definition decodes the event.
        self._callbacks: dict[str, list[Callable[[Any], object]]] = {}
        self._callback_queue: deque[Message] = deque()
        self._on_restart: list[Callable[[ClientBase, Exception], object]] = []
        self._on_reconnect: list[Callable[[ClientBase], object]] = []
        self._auto_reconnect = reconnect
        self._generation = 0  # connections made so far, less one
        self._reconnecting = False
        self._reported: Exception | None = None  # the loss the on_restart functions were told

    def _init_calls(self) -> None:
        """What one connection keeps of its calls (either transport): the message table it
        learned, calls in flight and their replies, open and abandoned dumps, its error."""
        self._by_type: dict[type[Message], int] = {}
        self._handle_int = 0
        self._pending: set[int] = set()
        self._replies: dict[int, Message] = {}
        self._dumps: dict[int, list[Message]] = {}  # details of open dumps, by context
        self._abandoned: dict[int, type[Message]] = {}  # dumps whose rest is dropped: end
        self._dump_ends: dict[int, type[Message]] = {}  # closing type, if not control_ping
        self._error: Exception | None = None

    def _known(self, msg: Message) -> Message:
        """``msg`` decoded as its type, if it is a :class:`RawMessage` of a type now known."""
        if type(msg) is RawMessage:
            cls = self._ids.get(msg.msg_id)
            if cls is not None:
                with contextlib.suppress(MessageError):
                    return cls.decode(msg.data)
        return msg

    @property
    def message_table(self) -> dict[str, int]:
        """``{name_crc: id}`` as learned from the server."""
        return dict(self._table)

    def msg_id(self, t: type[Message]) -> int:
        """The server's id for ``t``; :class:`UnknownMessageError` if it does not know this
        definition (another name or another CRC)."""
        try:
            return self._table[t.name_crc()]
        except KeyError:
            raise UnknownMessageError(
                f"server {self.name!r} does not know {t.name_crc()} (different definition?)"
            ) from None

    def _encode(self, msg: Message) -> bytes:
        msg.client_index = self._handle_int
        cls = type(msg)
        msg_id = self._by_type.get(cls)
        if msg_id is None:
            msg_id = self._by_type[cls] = self.msg_id(cls)
        return msg.encode(msg_id)

    def _resolve(self, cls: type[Message]) -> tuple[int, Codec | None]:
        """A request type's id and native codec, for :meth:`ApiPort.encode_calls`."""
        msg_id = self._by_type.get(cls)
        if msg_id is None:
            msg_id = self._by_type[cls] = self.msg_id(cls)
        return msg_id, cls._codec

    def send(self, msg: Message, timeout: float | None = 5.0) -> int:
        """Send a message without waiting for a reply; returns its context. Its reply (if
        any) is then an event for :meth:`recv`, unless collected with :meth:`result`."""
        self._check_open()
        msg.context = next(self._contexts) & 0xFFFFFFFF
        self._send_bytes(self._encode(msg), _deadline(timeout))
        return msg.context

    def submit(self, msg: Message, timeout: float | None = 5.0) -> int:
        """Send a request whose reply :meth:`result` will collect; returns its context."""
        if self._closed or self._error is not None:
            self._check_open()
        ctx = msg.context = next(self._contexts) & 0xFFFFFFFF
        data = self._encode(msg)
        self._pending.add(ctx)  # set.add is atomic; readers take self._mu
        try:
            self._send_bytes(data, _deadline(timeout))
        except BaseException:
            self._pending.discard(ctx)
            raise
        return ctx

    def _call(self, msg: Message, timeout: float | None) -> Any:
        """One request and its reply (a transport may have a faster way)."""
        return self._wait(self.submit(msg, timeout), _deadline(timeout))

    def result(self, context: int, timeout: float | None = 5.0) -> Any:
        """The reply to a submitted request."""
        return self._wait(context, _deadline(timeout))

    @overload
    def call(self, msg: Message, timeout: float | None = 5.0) -> Any: ...

    @overload
    def call(self, msg: Message, timeout: float | None = 5.0, *, reply: type[R]) -> R: ...

    def call(
        self, msg: Message, timeout: float | None = 5.0, *, reply: type[R] | None = None
    ) -> Any:
        """Send a request and return its reply. With ``reply`` (the reply's message class),
        the reply is checked to be one (else :class:`~shmkit.api.MessageError`) and typed
        as one for type checkers."""
        r = self._call(msg, timeout)
        if reply is not None and not isinstance(r, reply):
            raise MessageError(f"expected a {reply._name} reply, got {r!r}")
        return r

    def call_many(
        self, msgs: Iterable[Message], timeout: float | None = 5.0, window: int = 1024
    ) -> list[Any]:
        """Pipelined calls: up to ``window`` requests in flight, sent and received in
        batches; returns the replies in the order of ``msgs`` (they may arrive in any).
        All requests are encoded first (natively for types with a codec), so a bad value
        raises its :class:`MessageError` before anything is sent; the encoding carries each
        call's context, which is not stored back on the request objects of those types.

        Python's cyclic garbage collector is paused while it runs (and resumed after, if it
        was enabled): the replies it builds hold no reference cycles, and the collections
        that allocating them would trigger cost about a fifth of the throughput."""
        if not gc.isenabled():
            return self._call_many(msgs, timeout, window)
        gc.disable()
        try:
            return self._call_many(msgs, timeout, window)
        finally:
            gc.enable()

    @overload
    def dump(self, msg: Message, timeout: float | None = 5.0) -> list[Any]: ...

    @overload
    def dump(
        self, msg: Message, timeout: float | None = 5.0, *, reply: type[R]
    ) -> tuple[R, list[Any]]: ...

    def dump(
        self, msg: Message, timeout: float | None = 5.0, *, reply: type[R] | None = None
    ) -> list[Any] | tuple[R, list[Any]]:
        """Send a dump request and return its details, in order: everything the server
        sends with the request's context until the ``control_ping_reply`` that closes the
        stream (VPP's convention; :mod:`shmkit.api.services`). ``timeout`` bounds the whole
        dump. If the server's handler failed (or the stream was abandoned), the close carries
        a non-zero ``retval``: :class:`~shmkit.ShmkitError` is raised, with the details
        received so far as its ``details`` attribute and the code as ``retval``.

        With ``reply`` (VPP's ``stream_msg`` services: details closed by a reply message),
        the stream ends with that reply, and ``(reply, details)`` is returned."""
        deadline = _deadline(timeout)
        details: list[Message] = []
        ctx = self._start_dump(msg, details, deadline, reply)
        try:
            close = self._wait(ctx, deadline)
        except BaseException:
            self._abandon(ctx)
            raise
        finally:
            self._dumps.pop(ctx, None)
            self._dump_ends.pop(ctx, None)
            self._pending.discard(ctx)
        if reply is None:
            return self._dump_result(msg, close, details)
        return cast("R", close), self._dump_result(msg, close, details, reply)

    def dump_iter(self, msg: Message, timeout: float | None = 5.0) -> Iterator[Any]:
        """As :meth:`dump`, yielding the details as they arrive (a dump too large to hold
        at once); ``timeout`` bounds the wait for each. A failed stream raises after the
        details that came (the exception's ``details`` is then empty)."""
        details: list[Message] = []
        ctx = self._start_dump(msg, details, _deadline(timeout))
        close = None
        try:
            while True:
                close = self._wait(ctx, _deadline(timeout), until=lambda: bool(details))
                n = len(details)  # routed under the lock, appended at the end only
                batch = details[:n]
                del details[:n]
                yield from batch
                if close is not None:
                    yield from details
                    self._dump_result(msg, close, [])
                    return
        except BaseException:  # GeneratorExit included: the caller stopped early
            if close is None:
                self._abandon(ctx)
            raise
        finally:
            self._dumps.pop(ctx, None)
            self._pending.discard(ctx)

    def _abandon(self, ctx: int) -> None:
        """A dump nobody waits for any more (timed out, or its iteration was stopped): the
        rest of its stream is dropped as it arrives, not queued as events."""
        self._abandoned[ctx] = self._dump_ends.get(ctx, mc.ControlPingReply)

    def _start_dump(
        self,
        msg: Message,
        details: list[Message],
        deadline: float,
        end: type[Message] | None = None,
    ) -> int:
        """Send a dump request whose details go to ``details`` until a message of type
        ``end`` (default: ``control_ping_reply``) closes it; returns its context."""
        if self._closed or self._error is not None:
            self._check_open()
        ctx = msg.context = next(self._contexts) & 0xFFFFFFFF
        data = self._encode(msg)
        self._dumps[ctx] = details  # before sending: the first detail may come at once
        if end is not None:
            self._dump_ends[ctx] = end
        self._pending.add(ctx)
        try:
            self._send_bytes(data, deadline)
        except BaseException:
            self._dumps.pop(ctx, None)
            self._dump_ends.pop(ctx, None)
            self._pending.discard(ctx)
            raise
        return ctx

    def _dump_result(
        self,
        msg: Message,
        close: Message,
        details: list[Message],
        end: type[Message] = mc.ControlPingReply,
    ) -> list[Any]:
        """The details of a dump closed by ``close``, or the error its ``retval`` says."""
        if not _is(close, end):
            raise MessageError(f"a {type(msg)._name} stream ended with {close!r}")
        retval: int = getattr(close, "retval", 0)
        if retval != 0:
            error = ShmkitError(
                f"API {self.name!r}: the {type(msg)._name} dump failed on the server "
                f"(retval {retval}) after {len(details)} details"
            )
            error.details, error.retval = details, retval  # type: ignore[attr-defined]
            raise error
        return details

    def recv(self, timeout: float | None = 5.0) -> Any:
        """The next event (a message answering no pending call); ``TimeoutError`` if none."""
        deadline = _deadline(timeout)
        return self._wait(None, deadline)

    def api_json(self, timeout: float | None = 5.0) -> list[dict[str, Any]]:
        """The server's message definitions (``get_api_json``): a list of VPP ``.api.json``
        modules, for :func:`shmkit.api.apijson.load` or any VPP tool."""
        reply = self.call(mc.GetApiJson(), timeout)
        if reply.retval != 0:
            raise ShmkitError(f"API {self.name!r}: get_api_json failed (retval {reply.retval})")
        modules = json.loads(reply.json)
        if not isinstance(modules, list):
            raise ShmkitError(f"API {self.name!r}: get_api_json did not return a JSON array")
        return modules

    def api_versions(self, timeout: float | None = 5.0) -> dict[str, tuple[int, int, int]]:
        """``{module: (major, minor, patch)}`` of every module the server serves
        (``api_versions``)."""
        reply = self.call(mc.ApiVersions(), timeout)
        if reply.retval != 0:
            raise ShmkitError(f"API {self.name!r}: api_versions failed (retval {reply.retval})")
        return {v.name: (v.major, v.minor, v.patch) for v in reply.api_versions}

    def require(self, modules: Mapping[str, tuple[int, int]], timeout: float | None = 5.0) -> None:
        """Check the server's modules against what this client was written for: each of
        ``modules`` (``{name: (major, minor)}``) must be served with the same major version
        and at least that minor one (VPP's semantic versioning of ``.api`` files); else
        :class:`~shmkit.VersionMismatchError` naming every difference."""
        served = self.api_versions(timeout)
        wrong = []
        for name, (major, minor) in modules.items():
            have = served.get(name)
            if have is None:
                wrong.append(f"{name} is not served")
            elif have[0] != major or have[1] < minor:
                wrong.append(f"{name} is {have[0]}.{have[1]}.{have[2]}, not {major}.{minor}+")
        if wrong:
            raise VersionMismatchError(f"API {self.name!r}: " + "; ".join(wrong))

    def ping(self, timeout: float = 5.0) -> float:
        """One control_ping round trip; returns its duration in seconds."""
        t = time.perf_counter()
        self.call(mc.ControlPing(), timeout)
        return time.perf_counter() - t

    def _take(self, context: int | None) -> Message | None:
        if context is None:
            return self._events.popleft() if self._events else None
        msg = self._replies.pop(context, None)
        if msg is not None:
            self._pending.discard(context)
        return msg

    def _wait(
        self,
        context: int | None,
        deadline: float,
        registering: bool = False,
        until: Callable[[], bool] | None = None,
    ) -> Any:
        """Wait for the reply to ``context`` (or the next event if None); with ``until``,
        return ``None`` as soon as it is true (checked after each read). The first waiter
        to find the queue free reads it for everyone (leader); others sleep on a condition
        until their reply is routed to them or the leader leaves (followers)."""
        generation = self._generation
        while True:
            msg = self._take(context)
            if msg is not None:
                return msg
            if until is not None and until():
                return None
            if not registering:
                if self._reconnecting:
                    raise ServerGoneError(f"API {self.name!r}: connection lost, reconnecting")
                self._check_server()
                if generation != self._generation and context is not None:
                    raise ServerRestartedError(
                        f"API {self.name!r}: the client reconnected; context {context} was lost"
                    )
            left = deadline - time.monotonic()
            if left <= 0:
                self._pending.discard(context)
                what = f"reply to context {context}" if context is not None else "an event"
                raise TimeoutError(f"API {self.name!r}: no {what} within the timeout")
            if self._rx_lock.acquire(blocking=False):
                try:
                    while True:
                        self._pump(min(SLICE, left))
                        msg = self._take(context)
                        if msg is not None:
                            return msg
                        if until is not None and until():
                            return None
                        if self._error is not None or time.monotonic() >= deadline:
                            break
                        if not registering:
                            self._check_server()
                finally:
                    self._rx_lock.release()
                    if self._followers:
                        with self._cv:
                            self._cv.notify_all()
            else:
                with self._cv:
                    self._followers += 1
                    try:
                        if (context is None and not self._events) or (
                            context is not None and context not in self._replies
                        ):
                            self._cv.wait(min(SLICE, left))
                    finally:
                        self._followers -= 1

    def _deliver(self, routed: list[tuple[int, Message]]) -> None:
        """Hand received messages to their waiters: a pending call's reply, a dump's
        details, or an event (also the socket client's way, :mod:`shmkit.api.sockclient`)."""
        with self._cv:
            for context, msg in routed:
                if context in self._pending:
                    details = self._dumps.get(context)
                    if details is not None and not _is(
                        msg, self._dump_ends.get(context, mc.ControlPingReply)
                    ):
                        details.append(msg)  # the stream's close is its reply
                        continue
                    self._replies[context] = msg
                elif context in self._abandoned:
                    if _is(msg, self._abandoned[context]):
                        del self._abandoned[context]
                elif getattr(type(msg), "_name_crc", None) in self._callbacks:
                    self._callback_queue.append(msg)
                    self._kick.set()
                else:
                    self._events.append(msg)
            if self._followers:
                self._cv.notify_all()

    def on_event(self, event: type[Message], callback: Callable[[Any], object]) -> None:
        """Call ``callback(msg)`` for every event of type ``event`` (a message answering no
        pending call), instead of queueing it for :meth:`recv`. Callbacks run in the client's
        background thread, one at a time, in arrival order; they may call the client (a
        callback holds no lock of the client's), and one that raises is logged. A slow
        callback delays the others and the idle reading (keepalive replies included).
        Needs the background thread (``keepalive_thread=True``)."""
        if self._bg is None:
            raise ValueError("event callbacks need the background thread (keepalive_thread)")
        with self._cv:
            self._callbacks.setdefault(event._name_crc, []).append(callback)
            # Events of this type already queued go to the callback too, in order.
            keep: deque[Message] = deque()
            for msg in self._events:
                (self._callback_queue if _is(msg, event) else keep).append(msg)
            self._events = keep
        self._kick.set()

    def events(self, timeout: float | None = 5.0) -> Iterator[Any]:
        """Iterate over events (messages answering no pending call, of known types or as
        :class:`RawMessage`) as they arrive; the iteration ends when none comes within
        ``timeout`` seconds. Events with an :meth:`on_event` callback are not seen here."""
        while True:
            try:
                yield self._wait(None, _deadline(timeout))
            except TimeoutError:
                return

    def _run_callbacks(self) -> None:
        while self._callback_queue:
            msg = self._callback_queue.popleft()
            for fn in self._callbacks.get(type(msg)._name_crc, ()):
                try:
                    fn(msg)
                except Exception:
                    log.exception("API %s: event callback %r failed", self.name, fn)

    def on_restart(self, fn: Callable[[ClientBase, Exception], object]) -> None:
        """Call ``fn(client, error)`` when the background thread notices that the server
        died, closed or restarted (``error`` is the :class:`ServerGoneError` or
        :class:`ServerRestartedError` calls raise), within :data:`WATCH_PERIOD` even for an
        idle client (the thread watches the server once an ``on_restart`` function is set or
        with ``reconnect=True``).
        With ``reconnect=True`` the client then registers again with the next server and
        calls the :meth:`on_reconnect` functions; what the old server held for it (``want_*``
        registrations, calls in flight) is gone."""
        self._on_restart.append(fn)

    def on_reconnect(self, fn: Callable[[ClientBase], object]) -> None:
        """Call ``fn(client)`` after each automatic reconnection (``reconnect=True``), in the
        background thread: the place to register for events again."""
        self._on_reconnect.append(fn)

    def _notify(self, fns: list[Callable[..., object]], *args: object) -> None:
        for fn in fns:
            try:
                fn(*args)
            except Exception:
                log.exception("API %s: callback %r failed", self.name, fn)

    def _check_open(self) -> None:
        if self._closed:
            if self._reconnecting and not self._stop.is_set():
                # Lost; the background thread is reconnecting.
                raise self._error or ServerGoneError(
                    f"API {self.name!r}: connection lost, reconnecting"
                )
            raise ValueError("client is closed")
        if self._error is not None:
            raise self._error

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
