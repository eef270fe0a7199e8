"""Exceptions raised by shmkit.

OS failures surface as the stdlib ``OSError`` subclasses (``FileNotFoundError``,
``PermissionError``, ``FileExistsError``...), timeouts as ``TimeoutError`` and bad arguments as
``ValueError``. Everything specific to shmkit derives from :class:`ShmkitError`; where a stdlib
type says the same thing it is a base too, so ``except MemoryError`` or ``except queue.Full``
keep working.
"""

from __future__ import annotations

import queue
from collections.abc import Iterable

__all__ = [
    "CapacityError",
    "ClosedError",
    "CorruptionError",
    "DoubleFreeError",
    "InternalError",
    "InvalidOffsetError",
    "LockError",
    "MemifError",
    "NotARegionError",
    "OutOfMemoryError",
    "QueueEmpty",
    "QueueFull",
    "QueueRoleError",
    "RegionTruncatedError",
    "RingReinit",
    "ShmkitError",
    "StaleRegionError",
    "VersionMismatchError",
]


class ShmkitError(Exception):
    """Base class of shmkit's own errors."""


class NotARegionError(ShmkitError):
    """The file is not a shmkit region (it was left untouched)."""


class VersionMismatchError(ShmkitError):
    """The region was created by a shmkit with another layout version (left untouched)."""


class CorruptionError(ShmkitError):
    """Shared state was damaged by a buggy or hostile peer; the operation was refused."""


class RegionTruncatedError(CorruptionError):
    """The file behind a mapping shrank under this process (a peer truncated it, or its
    filesystem ran out of space). Instead of dying of SIGBUS, the process now sees that
    mapping as zeros: every operation on an object in it raises this, memoryviews into it read
    zeros, and writes to it are lost. Close the objects and the region; a memif interface
    disconnects (and reconnects when the peer offers sound memory again)."""


class StaleRegionError(ShmkitError):
    """The region's creator died before it was ready; creating it again recovers the name."""


class OutOfMemoryError(ShmkitError, MemoryError):
    """The region heap has no block large enough."""


class InvalidOffsetError(ShmkitError, ValueError):
    """An offset is not the start of a live allocation (nothing was changed)."""


class DoubleFreeError(InvalidOffsetError):
    """The offset was already freed (nothing was changed)."""


class CapacityError(ShmkitError):
    """A fixed-size table (clients, objects) is full."""


class ClosedError(ShmkitError, ValueError):
    """The handle was closed."""


class LockError(ShmkitError):
    """A shared lock is unusable (corrupted by a peer)."""


class QueueFull(ShmkitError, queue.Full):
    """The queue has no free slot (``put_nowait`` or a ``put`` that timed out)."""


class QueueEmpty(ShmkitError, queue.Empty):
    """The queue has no element (``get_nowait`` or a ``get`` that timed out)."""


class MemifError(ShmkitError):
    """A memif failure, with libmemif's error code (``memif_err_t``) in :attr:`code`.

    ``strerror`` is libmemif's ``memif_strerror`` text for the code; ``str(err)`` adds what
    happened. ``shmkit.memif.ErrorCode`` names the codes.
    """

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    @property
    def strerror(self) -> str:
        from shmkit._native import memif_strerror

        return memif_strerror(self.code)

    def __str__(self) -> str:
        return f"[{self.code}] {self.message or self.strerror}"


class RingReinit(ShmkitError):
    """netmap rings were reinitialised: the ``head``/``cur`` the user wrote were invalid, so
    the ring was reset to ``head = cur = hwcur``, ``tail = hwtail``, its slots sanitised and
    its sync skipped (strict mode; the other rings were synced). ``direction`` is ``"tx"`` or
    ``"rx"``, ``rings`` the ids of the rings that were reset."""

    def __init__(self, message: str = "", direction: str = "", rings: Iterable[int] = ()) -> None:
        super().__init__(message)
        self.direction = direction
        self.rings = list(rings)


class InternalError(ShmkitError):
    """A bug in shmkit: a Rust panic reached the bindings. The message carries the panic's
    text; please report it. (Peer bytes never cause this: they raise ``CorruptionError``.)"""


class QueueRoleError(ShmkitError):
    """A single-producer/single-consumer queue's producer (or consumer) role is held by
    another live handle."""
