"""The API's shared state object: server identity and epoch, counters, and the client table.

Only the server writes it; clients read the epoch and the server's identity (to notice a
restart), and ``shmkit api show`` reads everything without asking the server. Every value
read back is treated as untrusted (a peer may scribble on it): fields are bounds-checked and
strings decoded leniently.

Layout (little-endian)::

    0    8s  magic "SHKAPI01"
    8    u32 layout version
    12   u32 epoch (server restarts; the low byte goes into handles)
    16   u32 server pid
    20   u32 max clients
    24   u64 server start time (/proc stat field 22)
    32   u64 heartbeat (CLOCK_MONOTONIC ns, updated by the server loop)
    40   u64 x COUNTERS
    256  client entries, ENTRY.size bytes each
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from typing import Any

from shmkit import Region

__all__ = ["COUNTERS", "ApiState", "ClientEntry"]

OBJECT = "api/state"
MAGIC = b"SHKAPI01"
VERSION = 1
HEAD = struct.Struct("<8sIIII QQ")
COUNTERS = (
    "requests",
    "replies",
    "missing_clients",
    "dropped_sends",
    "invalid_messages",
    "unknown_messages",
    "handler_errors",
    "reaped",
    "keepalives_sent",
    "lazy_clients",
    "restart_reclaims",
    "registrations",
    "deregistrations",
)
COUNTERS_OFF = 40
CLIENTS_OFF = 256
ENTRY = struct.Struct("<IIQIIIIQQQ64s96s")
STATES = {0: "free", 1: "active", 2: "stale"}
HEALTH = {0: "ok", 1: "pinged", 2: "lazy"}


@dataclass(frozen=True)
class ClientEntry:
    """A registered client as recorded in shared memory."""

    slot: int
    index: int
    state: str
    pid: int
    start_time: int
    handle: int
    epoch: int
    health: str
    unanswered: int
    last_heard_ns: int
    requests: int
    dropped: int
    name: str
    queue: str


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")


class ApiState:
    """Typed access to the ``api/state`` object of an API region."""

    def __init__(self, region: Region, offset: int, max_clients: int) -> None:
        self.region = region
        self.max_clients = max_clients
        self.size = CLIENTS_OFF + ENTRY.size * max_clients
        self.view = region.buffer(offset, self.size)

    @classmethod
    def size_for(cls, max_clients: int) -> int:
        return CLIENTS_OFF + ENTRY.size * max_clients

    @classmethod
    def create(cls, region: Region, max_clients: int) -> ApiState:
        offset = region.create_object(OBJECT, cls.size_for(max_clients))
        state = cls(region, offset, max_clients)
        state.view[:] = bytes(state.size)
        HEAD.pack_into(state.view, 0, b"", VERSION, 0, 0, max_clients, 0, 0)
        state.view[0:8] = MAGIC  # last: an opener only trusts a complete header
        return state

    @classmethod
    def open(cls, region: Region) -> ApiState:
        obj = region.find_object(OBJECT)
        if obj["size"] < CLIENTS_OFF:
            raise ValueError("api/state object is too small")
        head = HEAD.unpack(region.read(obj["offset"], HEAD.size))
        magic, version, _, _, max_clients = head[:5]
        if magic != MAGIC or version != VERSION:
            raise ValueError("api/state is not a shmkit API state of this version")
        if not 0 < max_clients <= 1 << 16 or cls.size_for(max_clients) > obj["size"]:
            raise ValueError(f"api/state claims {max_clients} clients, more than it holds")
        return cls(region, obj["offset"], max_clients)

    # ---------------------------------------------------------------- header

    def head(self) -> tuple[int, int, int, int]:
        """``(epoch, server pid, server start time, heartbeat ns)``."""
        _, _, epoch, pid, _, start, beat = HEAD.unpack_from(self.view, 0)
        return epoch, pid, start, beat

    @property
    def epoch(self) -> int:
        return int(struct.unpack_from("<I", self.view, 12)[0])

    def set_server(self, epoch: int, pid: int, start_time: int) -> None:
        struct.pack_into("<II", self.view, 12, epoch & 0xFFFFFFFF, pid)
        struct.pack_into("<Q", self.view, 24, start_time)
        self.heartbeat()

    def heartbeat(self) -> None:
        struct.pack_into("<Q", self.view, 32, time.monotonic_ns())

    # ---------------------------------------------------------------- counters

    def bump(self, counter: int, n: int = 1) -> None:
        off = COUNTERS_OFF + 8 * counter
        (v,) = struct.unpack_from("<Q", self.view, off)
        struct.pack_into("<Q", self.view, off, (v + n) & 0xFFFFFFFFFFFFFFFF)

    def counters(self) -> dict[str, int]:
        values = struct.unpack_from(f"<{len(COUNTERS)}Q", self.view, COUNTERS_OFF)
        return dict(zip(COUNTERS, values))

    # ---------------------------------------------------------------- clients

    def write_entry(self, slot: int, **fields: Any) -> None:
        if not 0 <= slot < self.max_clients:
            raise IndexError(slot)
        off = CLIENTS_OFF + slot * ENTRY.size
        cur = list(ENTRY.unpack_from(self.view, off))
        names = (
            "state",
            "pid",
            "start_time",
            "handle",
            "index",
            "epoch",
            "health",
            "last_heard_ns",
            "requests",
            "dropped",
            "name",
            "queue",
        )
        for key, value in fields.items():
            i = names.index(key)
            cur[i] = (
                value.encode()[: 64 if key == "name" else 96] if isinstance(value, str) else value
            )
        # `unanswered` shares the health word: low 16 bits health, high 16 unanswered pings.
        ENTRY.pack_into(self.view, off, *cur)

    def clear_entry(self, index: int) -> None:
        off = CLIENTS_OFF + index * ENTRY.size
        self.view[off : off + ENTRY.size] = bytes(ENTRY.size)

    def entry(self, index: int) -> ClientEntry | None:
        off = CLIENTS_OFF + index * ENTRY.size
        (state, pid, start, handle, idx, epoch, health, heard, requests, dropped, name, queue) = (
            ENTRY.unpack_from(self.view, off)
        )
        if state == 0:
            return None
        return ClientEntry(
            slot=index,
            index=idx,
            state=STATES.get(state, f"invalid({state})"),
            pid=pid,
            start_time=start,
            handle=handle,
            epoch=epoch,
            health=HEALTH.get(health & 0xFFFF, f"invalid({health & 0xFFFF})"),
            unanswered=health >> 16,
            last_heard_ns=heard,
            requests=requests,
            dropped=dropped,
            name=_text(name),
            queue=_text(queue),
        )

    def entries(self) -> list[ClientEntry]:
        return [e for i in range(self.max_clients) if (e := self.entry(i)) is not None]
