"""The binary-API client over VPP's socket transport: ``Client.connect(name, client_name,
socket=PATH)`` returns a :class:`SockClient`, the same :class:`~shmkit.api.Client` API
(``call``, ``call_many``, ``submit``/``result``, ``send``, ``recv``, ``ping``, ``close``) over
a Unix stream socket instead of shared-memory queues.

The wire is VPP's: every message is preceded by the 16-byte header ``>QII`` (unused,
length, unused); registration is ``sockclnt_create`` (VPP's fixed id 15) answered by
``sockclnt_create_reply`` (16) with the client's index and the message table; requests
carry that index as ``client_index``; ``sockclnt_delete`` deregisters. The server's
keepalives are answered on the way, as on shared memory.

Receiving reuses the shared-memory client's leader/follower scheme (one thread reads the
socket for everyone and routes replies by context; messages answering no pending call are
events for :meth:`recv`); a small background thread reads when nobody waits. The socket is
non-blocking and every wait is a ``select`` bounded by the call's deadline. The server's
end of the connection is its liveness: EOF (the server died or closed) raises
:class:`~shmkit.api.ServerGoneError` in every waiting and later call. A frame from the
server longer than ``max_frame`` or announcing nothing is garbage: the connection is
dropped (:class:`~shmkit.api.ConnectionDamagedError`).

:meth:`SockClient.init_shm` (VPP's ``sock_init_shm``) moves the client's traffic to a
private shared-memory segment the server creates and passes over the socket
(:mod:`shmkit.api.sockshm`); the socket then only carries the connection's life.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket as _socket
import struct
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from shmkit.api import memclnt as mc
from shmkit.api.client import TRANSPORTS, Client
from shmkit.api.client_base import IDLE_PERIOD, SLICE, ClientBase, RawMessage, _deadline
from shmkit.api.handle import Handle
from shmkit.api.messages import REGISTRY, Message, MessageError
from shmkit.api.sockshm import Segment, close_fds
from shmkit.errors import ConnectionDamagedError, CorruptionError, ServerGoneError, ShmkitError

__all__ = ["SockClient"]

log = logging.getLogger("shmkit.api")

#: VPP's frame header: unused u64, message length u32, unused u32 (big-endian).
FRAME = struct.Struct(">QII")
#: VPP's fixed ids for registering on the socket (vpp_papi hard-codes them too).
_CREATE, _CREATE_REPLY = mc.BUILTIN_IDS[mc.SockclntCreate], mc.BUILTIN_IDS[mc.SockclntCreateReply]
#: Largest message accepted from a server by default (a get_api_json reply is the biggest).
DEFAULT_MAX_FRAME = 64 << 20
_PEERCRED = struct.Struct("3i")


class SockClient(Client):
    """A :class:`~shmkit.api.Client` connected over VPP's socket transport. Use
    ``Client.connect(name, client_name, socket=PATH)``."""

    socket_path: str
    #: how it connected (path, client name, name, timeout, keepalive thread): pickling
    _connect_socket_args: tuple[str, str, str, float | None, bool]

    @classmethod
    def connect_socket(
        cls,
        path: str | os.PathLike[str],
        client_name: str,
        *,
        name: str = "",
        timeout: float | None = 10.0,
        keepalive_thread: bool = True,
        max_frame: int = DEFAULT_MAX_FRAME,
    ) -> SockClient:
        """Connect to the server listening at ``path`` and register as ``client_name``.
        Waits up to ``timeout`` for the socket to appear and the server to answer
        (``TimeoutError``); ``PermissionError`` if the socket's mode does not let this user
        in; a server that closes the connection at once (its peer-uid allow-list) raises
        :class:`~shmkit.api.ServerGoneError`."""
        self = cls.__new__(cls)
        self._connect_socket_args = (os.fspath(path), client_name, name, timeout, keepalive_thread)
        self._init_local(False)
        self._setup_socket(os.fspath(path), client_name, name, timeout, max_frame)
        if keepalive_thread:
            self._bg = threading.Thread(
                target=self._background, daemon=True, name=f"shmkit-api-sock-client-{client_name}"
            )
            self._bg.start()
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickles as how it connected; unpickling connects again (a new registration)."""
        path, client_name, name, timeout, keepalive = self._connect_socket_args
        return (_reconnect, (path, client_name, name, timeout, keepalive))

    # ---------------------------------------------------------------- connecting

    def _setup_socket(
        self, path: str, client_name: str, name: str, timeout: float | None, max_frame: int
    ) -> None:
        deadline = _deadline(timeout)
        self.socket_path = path
        self.name, self.client_name, self.root = name or path, client_name, None
        self._closed = True
        self._tx_lock = threading.Lock()
        self._init_calls()
        self._max_frame = max_frame
        self._rbuf = bytearray()
        self._keepalive_id = -1
        self._seg: Segment | None = None
        self._want_fds = False
        self._fds: list[int] = []
        self._sock = self._open(path, deadline)
        try:
            self._register_socket(client_name, deadline)
        except BaseException:
            self._sock.close()
            raise
        self._closed = False

    def _open(self, path: str, deadline: float) -> _socket.socket:
        """Connect, waiting for the socket file to appear (a server starting up)."""
        while True:
            sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
            try:
                sock.connect(path)
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                sock.close()
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"no shmkit API server listens on {path!r} (within the timeout): {exc}"
                    ) from None
                time.sleep(0.02)  # waiting for a server to appear; bounded by the deadline
                continue
            except BaseException:
                sock.close()
                raise
            sock.setblocking(False)
            pid, _, _ = _PEERCRED.unpack(
                sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, _PEERCRED.size)
            )
            self.server_pid = pid
            return sock

    def _register_socket(self, client_name: str, deadline: float) -> None:
        self._table: dict[str, int] = {
            mc.SockclntCreate.name_crc(): _CREATE,
            mc.SockclntCreateReply.name_crc(): _CREATE_REPLY,
        }
        self._ids: dict[int, type[Message]] = {_CREATE_REPLY: mc.SockclntCreateReply}
        create = mc.SockclntCreate(name=client_name, context=next(self._contexts) & 0xFFFFFFFF)
        self._pending.add(create.context)
        self._send_bytes(create.encode(_CREATE), deadline)
        reply = self._wait(create.context, deadline, registering=True)
        if reply.response != 0:
            raise ShmkitError(
                f"API at {self.socket_path!r} refused the registration (response {reply.response})"
            )
        self.index = reply.index
        self.handle = Handle.from_int(reply.index)
        self._handle_int = reply.index
        self._table = {e.name: e.index for e in reply.message_table}
        self._ids = {i: REGISTRY[n] for n, i in self._table.items() if n in REGISTRY}
        # What came with the reply (e.g. sent by the server's on_register callbacks) was read
        # before the table was known: decode it now.
        with self._cv:
            self._events = deque(self._known(m) for m in self._events)
        keepalive = mc.MemclntKeepalive.name_crc()
        self._keepalive_id = self._table.get(keepalive, -1)

    # ---------------------------------------------------------------- sending

    def _send_bytes(self, data: bytes, deadline: float) -> None:
        if self._seg is not None:
            self._seg_send([data], deadline)
            return
        self._write(FRAME.pack(0, len(data), 0) + data, deadline)

    def _seg_send(self, datas: list[bytes], deadline: float) -> None:
        """Send through the private segment's input queue, waiting for room until
        ``deadline`` (the server reads it as fast as its socket)."""
        seg = self._seg
        assert seg is not None
        for data in datas:
            if self._error is not None:
                raise self._error
            try:
                if seg.port.send(seg.input, data, "client", self.server_pid):
                    continue
                while not seg.port.send_wait(
                    seg.input,
                    data,
                    min(SLICE, max(0.0, deadline - time.monotonic())),
                    "client",
                    self.server_pid,
                ):
                    self._check_server()
                    if time.monotonic() >= deadline:
                        raise TimeoutError(f"API {self.name!r}: the segment's queue stays full")
            except CorruptionError as exc:
                raise self._garbage(f"the private segment is damaged ({exc})") from None

    def init_shm(self, size: int = 0, timeout: float | None = 5.0) -> None:
        """Move this client's traffic to a private shared-memory segment (VPP's
        ``sock_init_shm``, :mod:`shmkit.api.sockshm`): the server creates it (``size`` bytes;
        0: its default) and passes its memfd over the socket; from then on messages go
        through its rings, the socket only says whether the server lives.
        :class:`~shmkit.ShmkitError` if the server refuses."""
        self._check_open()
        if self._seg is not None:
            raise ValueError("this client already uses a private segment")
        deadline = _deadline(timeout)
        req = mc.SockInitShm(requested_size=size, nitems=0, configs=[])
        ctx = req.context = next(self._contexts) & 0xFFFFFFFF
        self._pending.add(ctx)
        self._want_fds = True  # (whoever reads the socket now keeps the descriptors)
        try:
            self._send_bytes(self._encode(req), deadline)
            reply = self._wait(ctx, deadline)
            fds, self._fds = self._fds, []
        finally:
            self._want_fds = False
        try:
            if reply.retval != 0 or len(fds) != 1:
                raise ShmkitError(
                    f"API at {self.socket_path!r} refused a private segment "
                    f"(retval {reply.retval}, {len(fds)} descriptors)"
                )
            with self._rx_lock:
                self._seg = Segment.attach(fds[0])
        finally:
            close_fds(fds)

    @property
    def shared_memory(self) -> bool:
        """Whether messages travel through a private segment (:meth:`init_shm`)."""
        return self._seg is not None

    def _write(self, buf: bytes, deadline: float) -> None:
        """Write all of ``buf`` (whole frames), waiting for room until ``deadline``. Threads
        take turns, so frames never interleave."""
        view = memoryview(buf)
        with self._tx_lock:
            while view:
                if self._error is not None:
                    raise self._error
                try:
                    n = self._sock.send(view)
                    view = view[n:]
                    continue
                except BlockingIOError:
                    pass
                except OSError as exc:  # EPIPE, ECONNRESET: the server is gone
                    raise self._gone(f"the connection failed ({exc})") from None
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"API {self.name!r}: the server does not read its socket")
                select.select([], [self._sock], [], min(SLICE, left))

    def _call(self, msg: Message, timeout: float | None) -> Any:
        # The general way: replies are routed by context as they are parsed (no native sink).
        return ClientBase._call(self, msg, timeout)

    def _call_many(self, msgs: Iterable[Message], timeout: float | None, window: int) -> list[Any]:
        """Pipelined calls: up to ``window`` requests written at once (as one write), then
        their replies collected, window after window."""
        if window <= 0:
            raise ValueError("window must be positive")
        self._check_open()
        deadline = _deadline(timeout)
        msgs = list(msgs)
        out: list[Any] = []
        for start in range(0, len(msgs), window):
            chunk = msgs[start : start + window]
            frames, contexts = [], []
            for m in chunk:  # all encoded first: a bad value raises before anything is sent
                m.context = next(self._contexts) & 0xFFFFFFFF
                data = self._encode(m)
                frames.append(FRAME.pack(0, len(data), 0))
                frames.append(data)
                contexts.append(m.context)
            self._pending.update(contexts)
            try:
                if self._seg is not None:
                    self._seg_send(frames[1::2], deadline)
                else:
                    self._write(b"".join(frames), deadline)
            except BaseException:
                self._pending.difference_update(contexts)
                raise
            out.extend(self._wait(c, deadline) for c in contexts)
        return out

    # ---------------------------------------------------------------- receiving

    def _pump(
        self,
        timeout: float,
        sink: tuple[int, list[Message | None], dict[int, Any]] | None = None,
    ) -> int:
        """Read what the socket holds (waiting up to ``timeout`` for something) and route
        every complete message (caller holds the rx lock). Returns 0 (``sink`` is the
        shared-memory client's; the socket client's pipelined calls do not use it)."""
        if self._error is not None:
            raise self._error
        if self._seg is not None:
            return self._pump_segment(timeout)
        try:
            chunk = self._recv()
        except BlockingIOError:
            if timeout <= 0 or not select.select([self._sock], [], [], timeout)[0]:
                return 0
            try:
                chunk = self._recv()
            except BlockingIOError:
                return 0
            except OSError as exc:
                raise self._gone(f"the connection failed ({exc})") from None
        except OSError as exc:
            raise self._gone(f"the connection failed ({exc})") from None
        if not chunk:
            raise self._gone("the server closed the connection")
        self._parse(chunk)
        return 0

    def _recv(self) -> bytes:
        """One read from the socket; descriptors that come along are kept while
        :meth:`init_shm` waits for them, else closed."""
        if not self._want_fds:
            return self._sock.recv(1 << 18)
        data, fds, _, _ = _socket.recv_fds(self._sock, 1 << 18, 4)
        self._fds.extend(fds)
        return data

    def _pump_segment(self, timeout: float) -> int:
        """Read the private segment's output queue (waiting up to ``timeout``), route what
        came; the socket is looked at for its end (the server's death) on the way."""
        seg = self._seg
        assert seg is not None
        try:
            batch = seg.port.recv(seg.output, 256, min(timeout, SLICE))
        except CorruptionError as exc:
            raise self._garbage(f"the private segment is damaged ({exc})") from None
        routed: list[tuple[int, Message]] = []
        for data in batch:
            self._route(data, routed)
        if routed:
            self._deliver(routed)
        if not batch or select.select([self._sock], [], [], 0)[0]:
            try:
                chunk = self._sock.recv(1 << 16)
            except BlockingIOError:
                return 0
            except OSError as exc:
                raise self._gone(f"the connection failed ({exc})") from None
            if not chunk:
                raise self._gone("the server closed the connection")
            self._parse(chunk)
        return 0

    def _parse(self, chunk: bytes) -> None:
        """Add socket bytes to the frame buffer and route every complete message."""
        buf = self._rbuf
        buf += chunk
        routed: list[tuple[int, Message]] = []
        pos, end = 0, len(buf)
        while end - pos >= FRAME.size:
            n = FRAME.unpack_from(buf, pos)[1]
            if n == 0 or n > self._max_frame:
                raise self._garbage(f"the server sent a frame of {n} bytes")
            if end - pos - FRAME.size < n:
                break
            data = bytes(buf[pos + FRAME.size : pos + FRAME.size + n])
            pos += FRAME.size + n
            self._route(data, routed)
        del buf[:pos]
        if routed:
            self._deliver(routed)

    def _route(self, data: bytes, routed: list[tuple[int, Message]]) -> None:
        if len(data) < 2:
            return
        msg_id = data[0] << 8 | data[1]
        cls = self._ids.get(msg_id)
        if cls is None:
            routed.append((0, RawMessage(msg_id, data)))
            return
        try:
            msg: Message = cls.decode(data)
        except MessageError:
            log.warning("API %s: undecodable message id %d", self.name, msg_id)
            return
        if msg_id == self._keepalive_id:
            self._keepalive_reply(msg.context)
            return
        routed.append((msg.context, msg))

    def _keepalive_reply(self, context: int) -> None:
        reply = mc.MemclntKeepaliveReply(retval=0, context=context)
        try:
            data = self._encode(reply)
        except ShmkitError:
            return
        # Never wait on the receive path: a keepalive reply that does not fit now is lost
        # (the server then checks our pid).
        with contextlib.suppress(TimeoutError, ShmkitError, OSError):
            self._send_bytes(data, time.monotonic())

    def _background(self) -> None:
        """Keep an idle client healthy: read (answering keepalives, queueing events) when
        nobody waits for a reply and something arrived; run the event callbacks
        (:meth:`on_event`); report a lost server once to the :meth:`on_restart` functions."""
        while not self._stop.is_set():
            self._kick.wait(IDLE_PERIOD)
            self._kick.clear()
            if self._stop.is_set():
                break
            self._run_callbacks()
            if self._error is not None:
                if self._on_restart:
                    self._watch()  # tells the on_restart functions, once
                continue
            if self._pending:
                continue
            try:
                ready = select.select([self._sock], [], [], 0)[0]
            except (OSError, ValueError):
                return  # closed under us
            if not ready and (self._seg is None or not len(self._seg.output)):
                continue
            if self._rx_lock.acquire(blocking=False):
                try:
                    self._pump(0.0)
                except (ShmkitError, OSError):
                    pass
                finally:
                    self._rx_lock.release()
            self._run_callbacks()

    # ---------------------------------------------------------------- liveness

    def _check_server(self, force: bool = False) -> None:
        """Raise if the connection is gone (found by whoever reads the socket)."""
        if self._error is not None:
            raise self._error

    def _gone(self, why: str) -> Exception:
        """The connection's end: the error every call raises from now on."""
        if self._error is None:
            self._error = ServerGoneError(f"API at {self.socket_path!r}: {why}")
        return self._error

    def _garbage(self, why: str) -> ConnectionDamagedError:
        self._error = ConnectionDamagedError(
            f"API at {self.socket_path!r}: {why}; the connection was dropped: connect again"
        )
        with contextlib.suppress(OSError):
            self._sock.shutdown(_socket.SHUT_RDWR)
        return self._error

    @property
    def connected(self) -> bool:
        if self._closed or self._error is not None:
            return False
        with contextlib.suppress(OSError, ValueError):
            if select.select([self._sock], [], [], 0)[0] and self._rx_lock.acquire(blocking=False):
                try:
                    self._pump(0.0)
                except ConnectionError:
                    return False
                finally:
                    self._rx_lock.release()
        return self._error is None

    # ---------------------------------------------------------------- closing

    def close(self, timeout: float | None = 2.0) -> bool:
        """Deregister (``sockclnt_delete``, bounded by ``timeout``) and close the socket.
        Returns whether the server acknowledged (if not, the server reaps the client when
        the connection closes anyway)."""
        if self._closed:
            return True
        self._closed = True
        acked = False
        try:
            self._check_server()
            req = mc.SockclntDelete(index=self.index)
            req.context = next(self._contexts) & 0xFFFFFFFF
            self._pending.add(req.context)
            deadline = _deadline(timeout)
            self._send_bytes(self._encode(req), deadline)
            self._wait(req.context, deadline)
            acked = True
        except ServerGoneError:
            acked = True  # nobody is left to tell
        except (TimeoutError, ShmkitError, OSError):
            log.warning("API %s: peer unresponsive, giving up on sockclnt_delete", self.name)
        self._teardown(remove_queue=False)
        return acked

    def _release(self, remove_queue: bool) -> None:
        """Let go of the connection (the caller holds the rx lock, or nobody else can use
        the client): the socket closes, which the server takes as this client's end."""
        if self._seg is not None:
            self._seg.close()
            self._seg = None
        close_fds(self._fds)
        self._sock.close()
        self._error = None

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"handle={self.handle}"
        return f"<shmkit.api.Client {self.client_name!r} at socket {self.socket_path!r} {state}>"


def _reconnect(
    path: str, client_name: str, name: str, timeout: float | None, keepalive: bool
) -> SockClient:
    """Unpickle a :class:`SockClient` (see ``SockClient.__reduce__``)."""
    return SockClient.connect_socket(
        path, client_name, name=name, timeout=timeout, keepalive_thread=keepalive
    )


TRANSPORTS["socket"] = SockClient.connect_socket
