"""Exceptions raised by shmkit.

OS failures surface as the stdlib ``OSError`` subclasses (``FileNotFoundError``,
``PermissionError``, ``FileExistsError``...), timeouts as ``TimeoutError`` and bad arguments as
``ValueError``. Everything specific to shmkit derives from :class:`ShmkitError`; where a stdlib
type says the same thing it is a base too, so ``except MemoryError``, ``except queue.Full`` or
``except ConnectionError`` keep working.

The classes are made once by the native extension (``rust/src/py/errors.rs``), which raises
them; this module re-exports them. They pickle by name (``shmkit.errors.<Name>``), fields
included (``MemifError.code``, ``RingReinit.rings``), so an error raised in a
``multiprocessing`` worker reaches the parent intact.
"""

from __future__ import annotations

from shmkit._native import (
    CapacityError,
    ClosedError,
    ConnectionDamagedError,
    CorruptionError,
    DoubleFreeError,
    InternalError,
    InvalidOffsetError,
    LockError,
    MemifError,
    MessageError,
    NotARegionError,
    OutOfMemoryError,
    QueueEmpty,
    QueueFull,
    QueueRoleError,
    RegionTruncatedError,
    RingReinit,
    ServerGoneError,
    ServerRestartedError,
    ServerRunningError,
    ShmkitError,
    StaleRegionError,
    UnknownMessageError,
    VersionMismatchError,
)

__all__ = [
    "CapacityError",
    "ClosedError",
    "ConnectionDamagedError",
    "CorruptionError",
    "DoubleFreeError",
    "InternalError",
    "InvalidOffsetError",
    "LockError",
    "MemifError",
    "MessageError",
    "NotARegionError",
    "OutOfMemoryError",
    "QueueEmpty",
    "QueueFull",
    "QueueRoleError",
    "RegionTruncatedError",
    "RingReinit",
    "ServerGoneError",
    "ServerRestartedError",
    "ServerRunningError",
    "ShmkitError",
    "StaleRegionError",
    "UnknownMessageError",
    "VersionMismatchError",
]
