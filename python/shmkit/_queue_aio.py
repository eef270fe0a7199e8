"""asyncio integration of :class:`shmkit.Queue`: ``get_async`` and ``put_async``.

A queue handle exposes two eventfds: ``fileno()`` is readable while the queue has something to
get, ``writable_fileno()`` while it has room (a helper thread in this process keeps each in
step with the shared futex, see ``rust/src/queue/notify.rs``). The coroutines here try the
non-blocking operation first and otherwise wait for the fd on the running loop.

Several tasks may wait on the same handle at once: ``loop.add_reader`` allows one callback per
fd, so waiters of one (loop, fd) share a single reader registration that wakes them all; each
then retries (one wins, the others wait again).
"""

from __future__ import annotations

import asyncio
import weakref
from typing import TYPE_CHECKING

from shmkit.errors import QueueEmpty, QueueFull

if TYPE_CHECKING:
    from typing_extensions import Buffer

    from shmkit._native import Queue

__all__ = ["get", "put"]

_Waiters = dict[int, "set[asyncio.Future[None]]"]
_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Waiters] = (
    weakref.WeakKeyDictionary()
)


def _wake(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    """Reader callback: stop watching ``fd`` and release every task waiting on it."""
    waiters = _by_loop.get(loop, {}).pop(fd, set())
    loop.remove_reader(fd)
    for fut in waiters:
        if not fut.done():
            fut.set_result(None)


async def _wait_readable(fd: int, timeout: float | None) -> None:
    """Wait until ``fd`` is readable or ``timeout`` seconds pass (no error either way)."""
    loop = asyncio.get_running_loop()
    per_loop = _by_loop.setdefault(loop, {})
    waiters = per_loop.get(fd)
    if waiters is None:
        waiters = per_loop[fd] = set()
        loop.add_reader(fd, _wake, loop, fd)
    fut: asyncio.Future[None] = loop.create_future()
    waiters.add(fut)
    try:
        await asyncio.wait_for(fut, timeout)
    except asyncio.TimeoutError:
        pass
    finally:
        waiters.discard(fut)
        if not waiters and per_loop.get(fd) is waiters:
            del per_loop[fd]
            loop.remove_reader(fd)


def _remaining(loop: asyncio.AbstractEventLoop, deadline: float | None) -> float | None:
    return None if deadline is None else deadline - loop.time()


async def get(queue: Queue, timeout: float | None = None) -> bytes:
    """Take the next element, waiting up to ``timeout`` seconds (``None``: forever)."""
    if timeout is not None and not timeout >= 0:
        raise ValueError(f"timeout must be a non-negative number, got {timeout}")
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    fd = queue.fileno()
    while True:
        item = queue.try_get()
        if item is not None:
            return item
        left = _remaining(loop, deadline)
        if left is not None and left <= 0:
            raise QueueEmpty(f"queue {queue.name!r} is empty")
        await _wait_readable(fd, left)


async def put(queue: Queue, data: Buffer, timeout: float | None = None) -> None:
    """Put ``data``, waiting up to ``timeout`` seconds (``None``: forever) for room."""
    if timeout is not None and not timeout >= 0:
        raise ValueError(f"timeout must be a non-negative number, got {timeout}")
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    fd = queue.writable_fileno()
    while True:
        if queue.try_put(data):
            return
        left = _remaining(loop, deadline)
        if left is not None and left <= 0:
            raise QueueFull(f"queue {queue.name!r} is full")
        await _wait_readable(fd, left)
