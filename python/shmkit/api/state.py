"""The API's shared state object: server identity and epoch, counters, and the client table.

Only the server writes it; clients read the server's identity (to notice a restart), and
``shmkit api show`` reads everything without asking the server. Any process mapping the
region can scribble on it, so:

* the server never reads it back: it writes from a private image (:class:`StateImage`) and
  compares the shared bytes with that image every ``death_poll``; a difference is damage,
  repaired by rewriting the image (see :mod:`shmkit.api.guard`);
* the server identity (magic to start time) carries a seal, a hash of those bytes: a reader
  believes an identity only if its seal matches, so garbage never passes for a restart;
* every other value read back is bounds-checked, strings decoded leniently.

Layout (little-endian)::

    0    8s  magic "SHKAPI01"
    8    u32 layout version
    12   u32 epoch (server restarts; the low byte goes into handles)
    16   u32 server pid
    20   u32 max clients
    24   u64 server start time (/proc stat field 22)
    32   u64 heartbeat (CLOCK_MONOTONIC ns, updated by the server loop)
    40   u64 x COUNTERS
    248  u64 seal: BLAKE2b-64 of bytes 0..32
    256  client entries, ENTRY.size bytes each
"""

from __future__ import annotations

import hashlib
import struct
import time
from dataclasses import dataclass
from typing import Any

from shmkit import Region

__all__ = ["COUNTERS", "ApiState", "ClientEntry", "StateImage"]

OBJECT = "api/state"
MAGIC = b"SHKAPI01"
VERSION = 2
HEAD = struct.Struct("<8sIIII QQ")
IDENTITY = 32  # bytes of the sealed server identity
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
    "refused_registrations",
    "ring_repairs",
    "queue_repairs",
    "state_repairs",
    "damaged_clients",
    "stalled_claims",
    "loop_errors",
)
COUNTERS_OFF = 40
SEAL_OFF = 248
CLIENTS_OFF = 256
ENTRY = struct.Struct("<IIQIIIIQQQ64s96s")
ENTRY_FIELDS = (
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
STATES = {0: "free", 1: "active", 2: "stale"}
HEALTH = {0: "ok", 1: "pinged", 2: "lazy"}
MAX_CLIENTS = 1 << 16
_U64 = struct.Struct("<Q")
_COUNTS = struct.Struct(f"<{len(COUNTERS)}Q")
assert COUNTERS_OFF + _COUNTS.size <= SEAL_OFF


def _seal(identity: bytes | bytearray | memoryview) -> bytes:
    return hashlib.blake2b(identity, digest_size=8).digest()


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


def size_for(max_clients: int) -> int:
    return CLIENTS_OFF + ENTRY.size * max_clients


class ApiState:
    """Read access to the ``api/state`` object of an API region (clients, ``api show``)."""

    def __init__(self, region: Region, offset: int, max_clients: int) -> None:
        self.region = region
        self.offset = offset
        self.max_clients = max_clients
        self.size = size_for(max_clients)
        self.view = region.buffer(offset, self.size)

    @classmethod
    def open(cls, region: Region) -> ApiState:
        """``ValueError`` if the object is not a state of this version (or is damaged)."""
        obj = region.find_object(OBJECT)
        if obj["size"] < CLIENTS_OFF:
            raise ValueError("api/state object is too small")
        head = HEAD.unpack(region.read(obj["offset"], HEAD.size))
        magic, version, _, _, max_clients = head[:5]
        if magic != MAGIC or version != VERSION:
            raise ValueError("api/state is not a shmkit API state of this version")
        if not 0 < max_clients <= MAX_CLIENTS or size_for(max_clients) > obj["size"]:
            raise ValueError(f"api/state claims {max_clients} clients, more than it holds")
        return cls(region, obj["offset"], max_clients)

    # ---------------------------------------------------------------- header

    def head(self) -> tuple[int, int, int, int]:
        """``(epoch, server pid, server start time, heartbeat ns)`` as they are now."""
        _, _, epoch, pid, _, start, beat = HEAD.unpack_from(self.view, 0)
        return epoch, pid, start, beat

    def sealed(self) -> tuple[int, int, int] | None:
        """``(epoch, server pid, server start time)`` if they carry their seal, else None
        (damaged, or caught half-written)."""
        raw = bytes(self.view[:IDENTITY])
        if bytes(self.view[SEAL_OFF : SEAL_OFF + 8]) != _seal(raw):
            return None
        _, _, epoch, pid, _, start = struct.unpack_from("<8sIIIIQ", raw)
        return epoch, pid, start

    @property
    def epoch(self) -> int:
        return int(struct.unpack_from("<I", self.view, 12)[0])

    # ---------------------------------------------------------------- counters, clients

    def counters(self) -> dict[str, int]:
        return dict(zip(COUNTERS, _COUNTS.unpack_from(self.view, COUNTERS_OFF)))

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


class StateImage(ApiState):
    """The server's side: every write goes to a private image first and is then copied to
    shared memory, so the shared bytes can always be checked against, and restored from,
    what the server wrote (:meth:`damage`, :meth:`restore`)."""

    def __init__(self, region: Region, offset: int, max_clients: int) -> None:
        super().__init__(region, offset, max_clients)
        self.image = bytearray(self.size)

    @classmethod
    def create(cls, region: Region, max_clients: int) -> StateImage:
        if not 0 < max_clients <= MAX_CLIENTS:
            raise ValueError(f"max_clients must be between 1 and {MAX_CLIENTS}")
        offset = region.create_object(OBJECT, size_for(max_clients))
        state = cls(region, offset, max_clients)
        state.reset(epoch=0, counters=[0] * len(COUNTERS))
        return state

    @classmethod
    def adopt(cls, region: Region, max_clients: int) -> StateImage:
        """Take over the state of a previous server, with no server and no client yet (its
        client table is not believed: the new server finds the clients' queues itself). Its
        counters are kept if its header is intact; a damaged state is reinitialised in place
        for ``max_clients`` (at most what its object holds)."""
        try:
            old = ApiState.open(region)
            counters = [min(v, 1 << 62) for v in old.counters().values()]
            state = cls(region, old.offset, old.max_clients)
        except ValueError:
            obj = region.find_object(OBJECT)
            fits = (obj["size"] - CLIENTS_OFF) // ENTRY.size
            if fits < 1:
                raise
            state = cls(region, obj["offset"], min(max_clients, fits, MAX_CLIENTS))
            counters = [0] * len(COUNTERS)
        state.reset(epoch=0, counters=counters)
        return state

    def reset(self, *, epoch: int, counters: list[int]) -> None:
        """A fresh image: no server, no clients, these counters; written out whole."""
        self.image[:] = bytes(self.size)
        HEAD.pack_into(self.image, 0, MAGIC, VERSION, epoch & 0xFFFFFFFF, 0, self.max_clients, 0, 0)
        _COUNTS.pack_into(self.image, COUNTERS_OFF, *counters)
        self._seal()
        self.restore()

    def _seal(self) -> None:
        self.image[SEAL_OFF : SEAL_OFF + 8] = _seal(self.image[:IDENTITY])

    def _publish(self, start: int, end: int) -> None:
        self.view[start:end] = self.image[start:end]

    # ---------------------------------------------------------------- writes

    def set_server(self, epoch: int, pid: int, start_time: int) -> None:
        struct.pack_into("<II", self.image, 12, epoch & 0xFFFFFFFF, pid)
        struct.pack_into("<Q", self.image, 24, start_time)
        struct.pack_into("<Q", self.image, 32, time.monotonic_ns())
        self._seal()
        # The seal last: a reader seeing the new identity before it takes it as half-written.
        self._publish(0, SEAL_OFF)
        self._publish(SEAL_OFF, CLIENTS_OFF)

    def heartbeat(self) -> None:
        _U64.pack_into(self.image, 32, time.monotonic_ns())
        self._publish(32, 40)

    def set_counters(self, totals: list[int]) -> None:
        _COUNTS.pack_into(self.image, COUNTERS_OFF, *(v & 0xFFFFFFFFFFFFFFFF for v in totals))
        self._publish(COUNTERS_OFF, COUNTERS_OFF + _COUNTS.size)

    def write_entry(self, slot: int, **fields: Any) -> None:
        if not 0 <= slot < self.max_clients:
            raise IndexError(slot)
        off = CLIENTS_OFF + slot * ENTRY.size
        cur = list(ENTRY.unpack_from(self.image, off))
        for key, value in fields.items():
            i = ENTRY_FIELDS.index(key)
            cur[i] = (
                value.encode()[: 64 if key == "name" else 96] if isinstance(value, str) else value
            )
        # `unanswered` shares the health word: low 16 bits health, high 16 unanswered pings.
        ENTRY.pack_into(self.image, off, *cur)
        self._publish(off, off + ENTRY.size)

    def clear_entry(self, slot: int) -> None:
        off = CLIENTS_OFF + slot * ENTRY.size
        self.image[off : off + ENTRY.size] = bytes(ENTRY.size)
        self._publish(off, off + ENTRY.size)

    # ---------------------------------------------------------------- integrity

    def damage(self) -> list[str]:
        """The parts of the shared state that differ from what the server wrote: any of
        ``"header"``, ``"counters"``, ``"clients"``."""
        if self.view == self.image:
            return []
        parts = {
            "header": ((0, COUNTERS_OFF), (SEAL_OFF, CLIENTS_OFF)),
            "counters": ((COUNTERS_OFF, SEAL_OFF),),
            "clients": ((CLIENTS_OFF, self.size),),
        }
        return [
            name
            for name, spans in parts.items()
            if any(self.view[a:b] != self.image[a:b] for a, b in spans)
        ]

    def restore(self) -> None:
        """Rewrite the shared state from the image."""
        self.view[:] = self.image
