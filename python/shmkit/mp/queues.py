"""``shmkit.mp.Queue`` and ``shmkit.mp.SimpleQueue``: ``multiprocessing``'s queues, with
objects through shared memory instead of a pipe.

Each queue owns an anonymous region (a sealed memfd, no name in ``/dev/shm``) holding one
``shmkit.MsgQueue``; objects travel by ``put_obj``/``get_obj`` (pickle protocol 5, numpy
arrays and other buffers received as views of shared memory, no copy). The memory goes when
the last process that uses the queue closes it, exits or dies: nothing can leak.

Differences from ``multiprocessing``:

* there is no feeder thread: ``put`` has written the object into shared memory when it
  returns (so ``join_thread``/``cancel_join_thread`` have nothing to wait for, and a process
  may exit right after a ``put`` without losing it);
* a queue holds at most ``capacity`` objects (``maxsize`` if given, else 8192) and as many
  bytes as its region (``size``, default 256 MiB; its pages cost memory only once touched):
  a ``put`` beyond either waits, where ``multiprocessing.Queue()`` would buffer without
  bound; after its ``timeout`` it raises ``queue.Full`` (too many objects) or
  ``shmkit.OutOfMemoryError``, a ``MemoryError`` (too many bytes, or one object larger than
  the region);
* a received array stays a view of the queue's memory while it lives (the sender's writable
  arrays arrive writable); it counts against ``size`` until it is garbage.

Handles pickle by passing the region's descriptor (``multiprocessing.reduction.DupFd``):
as ``Process``/``Pool`` arguments under every start method, and through pipes or other
queues while the sending process lives.
"""

from __future__ import annotations

import os
from typing import Any

from shmkit._native import Region
from shmkit.msgq import MsgQueue

__all__ = ["Queue", "SimpleQueue"]

#: Objects a queue without ``maxsize`` holds at most.
DEFAULT_CAPACITY = 8192
#: Bytes of shared memory of a queue (sparse: pages cost memory only once touched).
DEFAULT_SIZE = 256 << 20
_NAME = "mp"


def _rebuild(cls: type[_Base], dup: Any, maxsize: int) -> _Base:
    fd = dup.detach()
    try:
        region = Region.from_fd(fd)
    finally:
        os.close(fd)
    self = cls.__new__(cls)
    self._init(MsgQueue.open(region, _NAME), maxsize)
    return self


class _Base:
    _q: MsgQueue

    def __init__(self, maxsize: int, capacity: int | None, size: int | None) -> None:
        maxsize = max(int(maxsize), 0)
        cap = maxsize or (DEFAULT_CAPACITY if capacity is None else int(capacity))
        if cap <= 0:
            raise ValueError(f"capacity must be positive, not {capacity}")
        size = DEFAULT_SIZE if size is None else int(size)
        region = Region.create_anonymous(size, label="shmkit-mp")
        try:
            q = MsgQueue.create(region, _NAME, cap)
        except BaseException:
            region.close()
            raise
        self._init(q, maxsize)

    def _init(self, q: MsgQueue, maxsize: int) -> None:
        self._q = q
        self._maxsize = maxsize
        self._closed = False

    def _check_closed(self) -> None:
        if self._closed:
            raise ValueError(f"Queue {self!r} is closed")

    def __reduce__(self) -> tuple[Any, ...]:
        from multiprocessing import reduction

        return (_rebuild, (type(self), reduction.DupFd(self._q.region.fileno()), self._maxsize))

    def close(self) -> None:
        """This process puts and gets no more through this handle (objects already received
        stay valid)."""
        self._closed = True

    @property
    def capacity(self) -> int:
        """The most objects the queue holds."""
        return self._q.capacity

    def stats(self) -> dict[str, Any]:
        """The underlying ``MsgQueue``'s counters (puts, gets, memory in use ...)."""
        return dict(self._q.stats())

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<{type(self).__module__}.{type(self).__name__} len={len(self._q)}{state}>"


class Queue(_Base):
    """``multiprocessing.Queue(maxsize=0)`` through shared memory (see the module)."""

    def __init__(
        self,
        maxsize: int = 0,
        *,
        ctx: Any = None,
        capacity: int | None = None,
        size: int | None = None,
    ) -> None:
        super().__init__(maxsize, capacity, size)

    def put(self, obj: Any, block: bool = True, timeout: float | None = None) -> None:
        """Put ``obj`` (waits while full, ``queue.Full`` after ``timeout``)."""
        self._check_closed()
        self._q.put_obj(obj, block, timeout)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return an object (waits while empty, ``queue.Empty`` after ``timeout``)."""
        self._check_closed()
        return self._q.get_obj(block, timeout)

    def put_nowait(self, obj: Any) -> None:
        self.put(obj, False)

    def get_nowait(self) -> Any:
        return self.get(False)

    def qsize(self) -> int:
        """Objects in the queue now (approximate while others put or get)."""
        return len(self._q)

    def empty(self) -> bool:
        return len(self._q) == 0

    def full(self) -> bool:
        return len(self._q) >= self._q.capacity

    def join_thread(self) -> None:
        """Nothing to wait for (no feeder thread); only valid after ``close()``, as in
        ``multiprocessing``."""
        if not self._closed:
            raise AssertionError(f"Queue {self!r} not closed")

    def cancel_join_thread(self) -> None:
        """Nothing to cancel: a ``put`` has written its object when it returns."""


class SimpleQueue(_Base):
    """``multiprocessing.SimpleQueue()`` through shared memory (see the module)."""

    def __init__(
        self, *, ctx: Any = None, capacity: int | None = None, size: int | None = None
    ) -> None:
        super().__init__(0, capacity, size)

    def put(self, obj: Any) -> None:
        """Put ``obj`` (waits while the queue is full)."""
        self._check_closed()
        self._q.put_obj(obj)

    def get(self) -> Any:
        """Remove and return an object (waits while empty)."""
        self._check_closed()
        return self._q.get_obj()

    def empty(self) -> bool:
        return len(self._q) == 0
