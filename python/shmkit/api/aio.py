"""The binary-API client for asyncio: :class:`AsyncClient`.

It wraps a :class:`~shmkit.api.Client` (connected without its background thread) and reads
the client's queue from the event loop (over VPP's socket transport, ``socket=PATH``, the
connection's socket instead): the queue's ``fileno()`` (an eventfd that is
readable while the queue holds something) is watched with ``loop.add_reader``; each wake-up
reads what is queued, answers keepalives, resolves the futures of the calls and dumps whose
replies came, and wakes those awaiting events. The server's pidfd is watched the same way,
so a dead server fails every pending call at once; a timer runs every
:data:`~shmkit.api.client.SLICE` only while something is awaited (a server that closed
cleanly, or was replaced, is seen there). No thread per call and no polling loop: an idle
client costs nothing but the queue fd's helper thread (one per client, in the native
extension). Connecting and closing are one-off blocking steps run in the loop's default
executor.

Use it from one event loop; the wrapped :attr:`AsyncClient.client` must not be called
meanwhile (its reads would race the loop's).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, TypeVar, cast, overload

from shmkit.api.client import Client
from shmkit.api.client_base import SLICE, _deadline
from shmkit.api.messages import Message
from shmkit.errors import CorruptionError, ShmkitError

__all__ = ["AsyncClient"]

R = TypeVar("R", bound=Message)


class AsyncClient:
    """An asyncio connection to an API server. Use ``await AsyncClient.connect(...)``."""

    def __init__(self, client: Client, loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self._loop = loop
        self._futures: dict[int, asyncio.Future[Message]] = {}
        self._event_waiters: deque[asyncio.Future[None]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        # Shared memory: the queue's eventfd and the server's pidfd. The socket transport:
        # the connection itself (the server's death is its EOF).
        self._sock = getattr(client, "_sock", None)
        if self._sock is not None:
            self._fd, self._server_fd = self._sock.fileno(), -1
        else:
            self._fd, self._server_fd = client.queue.fileno(), client._server_fd
            loop.add_reader(self._server_fd, self._check)
        loop.add_reader(self._fd, self._readable)
        self._readable()  # what came with the registration reply

    @classmethod
    async def connect(
        cls,
        name: str,
        client_name: str,
        *,
        root: str | None = None,
        timeout: float | None = 10.0,
        queue_capacity: int = 4096,
        uid: int | None = None,
        mode: int | None = None,
        socket: str | os.PathLike[str] | None = None,
    ) -> AsyncClient:
        """Register with the server of API ``name`` (as :meth:`Client.connect`, run in the
        loop's default executor); with ``socket=PATH``, over VPP's socket transport."""
        loop = asyncio.get_running_loop()
        client = await loop.run_in_executor(
            None,
            functools.partial(
                Client.connect,
                name,
                client_name,
                root=root,
                timeout=timeout,
                queue_capacity=queue_capacity,
                keepalive_thread=False,
                uid=uid,
                mode=mode,
                socket=socket,
            ),
        )
        try:
            return cls(client, loop)
        except BaseException:
            client.close()
            raise

    # ---------------------------------------------------------------- calls

    async def call(self, msg: Message, timeout: float | None = 5.0) -> Any:
        """Send a request and return its reply."""
        return await self._request(msg, timeout, None)

    @overload
    async def dump(self, msg: Message, timeout: float | None = 5.0) -> list[Any]: ...
    @overload
    async def dump(
        self, msg: Message, timeout: float | None = 5.0, *, reply: type[R]
    ) -> tuple[R, list[Any]]: ...
    async def dump(
        self, msg: Message, timeout: float | None = 5.0, *, reply: type[R] | None = None
    ) -> list[Any] | tuple[R, list[Any]]:
        """Send a dump request and return its details (as :meth:`Client.dump`; with
        ``reply``, ``(reply, details)`` of a stream a reply closes)."""
        details: list[Message] = []
        close = await self._request(msg, timeout, details, reply)
        if reply is None:
            return self.client._dump_result(msg, close, details)
        return cast("R", close), self.client._dump_result(msg, close, details, reply)

    async def _request(
        self,
        msg: Message,
        timeout: float | None,
        details: list[Message] | None,
        end: type[Message] | None = None,
    ) -> Message:
        c = self.client
        self._check_open()
        deadline = _deadline(timeout)
        ctx = msg.context = next(c._contexts) & 0xFFFFFFFF
        data = c._encode(msg)
        fut: asyncio.Future[Message] = self._loop.create_future()
        self._futures[ctx] = fut
        if details is not None:
            c._dumps[ctx] = details
            if end is not None:
                c._dump_ends[ctx] = end
        c._pending.add(ctx)
        self._arm()
        try:
            await self._send(data, deadline)
            return await asyncio.wait_for(fut, max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise TimeoutError(
                f"API {c.name!r}: no reply to context {ctx} within the timeout"
            ) from None
        finally:
            self._futures.pop(ctx, None)
            c._dumps.pop(ctx, None)
            c._dump_ends.pop(ctx, None)
            c._pending.discard(ctx)
            c._replies.pop(ctx, None)

    async def _send(self, data: bytes, deadline: float) -> None:
        """Send without blocking the loop; while the server's input queue is full (or being
        repaired), retry with a back-off from 0.5 ms to :data:`SLICE`."""
        c = self.client
        if self._sock is not None:
            # Whole frames into the kernel's buffer: this waits only while that buffer is
            # full (a server that stopped reading), up to the deadline.
            c._send_bytes(data, deadline)
            return
        delay = 0.0005
        while True:
            with contextlib.suppress(CorruptionError):
                if c.port.send(c.server_input, data, "client", c.server_pid):
                    return
            c._check_server()
            if time.monotonic() >= deadline:
                raise TimeoutError(f"API {c.name!r}: the server's input queue stays full")
            await asyncio.sleep(delay)
            delay = min(delay * 2, SLICE)

    # ---------------------------------------------------------------- events

    async def recv(self, timeout: float | None = 5.0) -> Any:
        """The next event (a message answering no pending call); ``TimeoutError`` if none."""
        c = self.client
        deadline = _deadline(timeout)
        while not c._events:
            self._check_open()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"API {c.name!r}: no event within the timeout")
            fut: asyncio.Future[None] = self._loop.create_future()
            self._event_waiters.append(fut)
            self._arm()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(fut, left)
        return c._events.popleft()

    async def events(self, timeout: float | None = None) -> AsyncIterator[Any]:
        """``async for ev in client.events(timeout)``: events as they arrive; the iteration
        ends when none comes within ``timeout`` seconds (``None``: never)."""
        while True:
            try:
                ev = await self.recv(timeout)
            except TimeoutError:
                return
            yield ev

    # ---------------------------------------------------------------- the loop's side

    def _readable(self) -> None:
        """The queue has something: read it all (the eventfd is re-armed by the read that
        finds it empty), then hand out what came."""
        c = self.client
        if self._closed or not c._rx_lock.acquire(blocking=False):
            return
        try:
            if self._sock is not None:
                c._pump(0.0)  # what the socket holds (level-triggered: more wakes us again)
            else:
                for _ in range(64):  # at most 64 batches per wake-up: the loop has other work
                    c._pump(0.0)
                    if not len(c.queue):
                        c._pump(0.0)  # finds it empty: re-arms the fd
                        break
        except (ShmkitError, OSError) as exc:
            self._fail(exc)
            return
        finally:
            c._rx_lock.release()
        self._dispatch()

    def _dispatch(self) -> None:
        c = self.client
        for ctx in [x for x in c._replies if x in self._futures]:
            fut = self._futures.pop(ctx)
            msg = c._replies.pop(ctx)
            c._pending.discard(ctx)
            if not fut.done():
                fut.set_result(msg)
        while c._events and self._event_waiters:
            waiter = self._event_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def _arm(self) -> None:
        if self._timer is None and not self._closed:
            self._timer = self._loop.call_later(SLICE, self._tick)

    def _tick(self) -> None:
        """While something is awaited: check the server, and read in case a wake-up was
        missed (never, by the fd's contract; cheap insurance)."""
        self._timer = None
        self._check()
        if not self._closed and (self._futures or self._event_waiters):
            self._readable()
            self._arm()

    def _check(self) -> None:
        try:
            self.client._check_server(force=True)
        except (ConnectionError, ShmkitError) as exc:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        """The connection is lost: every pending call and event waiter gets ``exc``."""
        self._unwatch()
        for fut in list(self._futures.values()):
            if not fut.done():
                fut.set_exception(exc)
        self._futures.clear()
        while self._event_waiters:
            waiter = self._event_waiters.popleft()
            if not waiter.done():
                waiter.set_exception(exc)

    def _unwatch(self) -> None:
        for fd in (self._fd, self._server_fd):
            if fd >= 0:
                with contextlib.suppress(ValueError, OSError):
                    self._loop.remove_reader(fd)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("client is closed")
        self.client._check_open()

    # ---------------------------------------------------------------- closing

    async def close(self, timeout: float | None = 2.0) -> bool:
        """Deregister (as :meth:`Client.close`, run in the loop's default executor)."""
        if self._closed:
            return True
        self._closed = True
        self._unwatch()
        self._fail(ConnectionError(f"API {self.client.name!r}: the client was closed"))
        return await self._loop.run_in_executor(None, self.client.close, timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<shmkit.api.AsyncClient of {self.client!r}>"
