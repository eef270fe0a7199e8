"""The shapes of the dicts shmkit's ``stats()``, ``check()``, ``repair()`` and ``details()``
return, as ``TypedDict``s, so type checkers know every key and its type::

    from shmkit.stats import QueueStats

    def backlog(s: QueueStats) -> int:
        return s["puts"] - s["gets"]
"""

from __future__ import annotations

from typing import Optional, TypedDict

__all__ = [
    "HeapCheck",
    "MemifDetails",
    "MemifQueueStats",
    "MemifRxQueue",
    "MemifStats",
    "MemifTxQueue",
    "MsgQueueGc",
    "MsgQueueRepair",
    "MsgQueueRingStats",
    "MsgQueueStats",
    "MsgRingStats",
    "NetmapStats",
    "QueueRepair",
    "QueueStats",
    "RegionStats",
]


class QueueStats(TypedDict):
    """``Queue.stats()``: counters kept in the queue's shared header."""

    puts: int
    gets: int
    len: int
    full: int
    empty: int
    put_waits: int
    get_waits: int
    wakeups: int
    get_wakeups: int
    put_wakeups: int
    timeouts: int
    put_timeouts: int
    get_timeouts: int
    recovered: int
    recovered_puts: int
    recovered_gets: int
    role_takeovers: int
    corrupt_slots: int


class MsgQueueRingStats(TypedDict):
    """One size class of a message queue's pool."""

    size: int
    nitems: int
    busy: int
    hits: int
    misses: int


class MsgQueueStats(TypedDict):
    """``MsgQueue.stats()``: shared counters, and the pool's usage counted now."""

    puts: int
    gets: int
    bytes: int
    bytes_put: int
    bytes_got: int
    len: int
    capacity: int
    max_msg: int
    full: int
    empty: int
    put_timeouts: int
    get_timeouts: int
    no_memory: int
    dropped: int
    recovered_slots: int
    reclaimed_dead: int
    reclaimed_orphans: int
    gc_runs: int
    in_use: int
    in_use_bytes: int
    heap_in_use: int
    heap_fallbacks: int
    rings: list[MsgQueueRingStats]


class MsgQueueGc(TypedDict):
    """``MsgQueue.gc()``: messages freed."""

    dead: int
    orphans: int


class MsgQueueRepair(TypedDict):
    """``MsgQueue.repair()``: what was found damaged and fixed."""

    header: int
    pool: int
    queue_header: bool
    head: bool
    tail: bool
    slots: int
    lost: int


class QueueRepair(TypedDict):
    """``Queue.repair()``: what was found damaged and fixed."""

    header: bool
    head: bool
    tail: bool
    slots: int
    lost: int


class RegionStats(TypedDict):
    """``Region.stats()``."""

    size: int
    heap_size: int
    used_bytes: int
    free_bytes: int
    allocs: int
    frees: int
    failed_allocs: int
    lock_recoveries: int
    heap_repairs: int
    ghosts_removed: int
    objects: int


class HeapCheck(TypedDict):
    """``Region.check()``: the heap walked and verified."""

    used_blocks: int
    used_bytes: int
    free_blocks: int
    free_bytes: int
    largest_free: int


class MsgRingStats(TypedDict):
    """``MsgRings.stats()``."""

    ring_misses: int
    restarts: int
    reclaimed: int
    garbage_collects: int


class NetmapStats(TypedDict):
    """``netmap.Port.stats()``."""

    reinits: int
    peer_errors: int
    bad_packets: int
    tx_packets: int
    rx_packets: int
    syncs: int


class MemifQueueStats(TypedDict):
    """Packet, byte and buffer totals of a memif queue (or of all of them)."""

    packets: int
    bytes: int
    buffers: int


class MemifTxQueue(MemifQueueStats):
    """One transmit queue in ``memif.Interface.details()``."""

    qid: int
    ring_size: int


class MemifRxQueue(MemifTxQueue):
    """One receive queue in ``memif.Interface.details()``, with its interrupt eventfd."""

    fd: int


class MemifStats(TypedDict):
    """``memif.Interface.stats()``."""

    tx: MemifQueueStats
    rx: MemifQueueStats


class MemifDetails(TypedDict):
    """``memif.Interface.details()``, like libmemif's ``memif_get_details``."""

    if_name: str
    app_name: str
    remote_app_name: str
    remote_if_name: str
    # Optional[...], not `int | None`: typing.get_type_hints evaluates these, on Python 3.9 too.
    peer_pid: Optional[int]  # noqa: UP045
    id: int
    role: str
    mode: str
    socket: str
    secret: bool
    connected: bool
    link_up_down: bool
    rx_mode: str
    buffer_size: int
    regions: list[int]
    tx_queues: list[MemifTxQueue]
    rx_queues: list[MemifRxQueue]
    connects: int
    disconnects: int
    violations: int
    last_error_code: Optional[int]  # noqa: UP045
    last_error: Optional[str]  # noqa: UP045
    tx_total: MemifQueueStats
    rx_total: MemifQueueStats
