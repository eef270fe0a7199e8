"""Exceptions raised by shmkit.

OS failures surface as the stdlib ``OSError`` subclasses (``FileNotFoundError``,
``PermissionError``, ``FileExistsError``...), timeouts as ``TimeoutError`` and bad arguments as
``ValueError``. Everything specific to shmkit derives from :class:`ShmkitError`; where a stdlib
type says the same thing it is a base too, so ``except MemoryError`` or ``except queue.Full``
keep working.
"""

from __future__ import annotations

import queue

__all__ = [
    "CapacityError",
    "ClosedError",
    "CorruptionError",
    "DoubleFreeError",
    "InvalidOffsetError",
    "LockError",
    "NotARegionError",
    "OutOfMemoryError",
    "QueueEmpty",
    "QueueFull",
    "QueueRoleError",
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


class QueueRoleError(ShmkitError):
    """A single-producer/single-consumer queue's producer (or consumer) role is held by
    another live handle."""
