"""shmkit: fast, crash-safe inter-process communication over shared memory on Linux.

Regions (VPP's SVM), queues (svm_queue), message rings and a VPP-style binary API, netmap
rings and pipes, and memif, all with a Rust core. See the README for a tour.
"""

from __future__ import annotations

from shmkit import memif, netmap
from shmkit._native import (
    LAYOUT_VERSION,
    Borrowed,
    BorrowedBatch,
    MsgRings,
    Queue,
    Region,
    Reserved,
    ReservedBatch,
    ShmView,
)
from shmkit._version import __version__
from shmkit.errors import (
    CapacityError,
    ClosedError,
    CorruptionError,
    DoubleFreeError,
    InternalError,
    InvalidOffsetError,
    LockError,
    MemifError,
    NotARegionError,
    OutOfMemoryError,
    QueueEmpty,
    QueueFull,
    QueueRoleError,
    RegionTruncatedError,
    ShmkitError,
    StaleRegionError,
    VersionMismatchError,
)
from shmkit.msgq import MsgQueue, MsgSlot, MsgView
from shmkit.registry import ClientInfo, RegionInfo, Removal, ScanReport, regions, remove, scan

__all__ = [
    "LAYOUT_VERSION",
    "Borrowed",
    "BorrowedBatch",
    "CapacityError",
    "ClientInfo",
    "ClosedError",
    "CorruptionError",
    "DoubleFreeError",
    "InternalError",
    "InvalidOffsetError",
    "LockError",
    "MemifError",
    "MsgQueue",
    "MsgRings",
    "MsgSlot",
    "MsgView",
    "NotARegionError",
    "OutOfMemoryError",
    "Queue",
    "QueueEmpty",
    "QueueFull",
    "QueueRoleError",
    "Region",
    "RegionInfo",
    "RegionTruncatedError",
    "Removal",
    "Reserved",
    "ReservedBatch",
    "ScanReport",
    "ShmView",
    "ShmkitError",
    "StaleRegionError",
    "VersionMismatchError",
    "__version__",
    "memif",
    "netmap",
    "regions",
    "remove",
    "scan",
]
