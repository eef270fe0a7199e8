"""The API's shared state object: server identity and epoch, counters, and the client table.

The layout and every read and write of it are native (``rust/src/api/state.rs``: a
``#[repr(C)]`` header and client entries of atomics, a sealed server identity, the server's
private image it is checked against and restored from; ``shmkit.shm_layout()`` lists the
fields as ``StateHeader`` and ``ClientEntry``). This module names what crosses: the
counters, and a client entry as a reader sees it.

* :class:`ApiState` (``ApiState.open(region)``): read access, for clients and ``shmkit api
  show``; ``sealed()`` gives the server identity only when it carries its seal.
* :class:`StateImage` (``create``/``adopt``): the server's writer; it never reads the shared
  state back, and ``damage()``/``restore()`` compare and rewrite it from its image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shmkit._native import API_COUNTERS, ApiState, StateImage

__all__ = [
    "COUNTERS",
    "OBJECT",
    "VIA_SEGMENT",
    "VIA_SOCKET",
    "ApiState",
    "ClientEntry",
    "StateImage",
    "client_entry",
]

#: Name of the state object in the API region.
OBJECT = "api/state"
#: The server's counters, in their order in the shared state.
COUNTERS: tuple[str, ...] = tuple(API_COUNTERS)
STATES = {0: "free", 1: "active", 2: "stale"}
#: What the entry of a socket client names as its queue (no queue object has such a name):
#: plain, and once it has a private segment (``sock_init_shm``).
VIA_SOCKET = "@socket"
VIA_SEGMENT = "@socket+shm"
_VIA = {VIA_SOCKET: "socket", VIA_SEGMENT: "socket+shm"}
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
    #: how it reaches the server: ``shm`` (its queue in the region), ``socket`` or
    #: ``socket+shm`` (VPP's socket transport, with a private segment)
    via: str = "shm"


def client_entry(raw: dict[str, Any]) -> ClientEntry:
    """A :class:`ClientEntry` from the raw fields ``ApiState.entry``/``entries`` give (the
    health word holds the health in its low 16 bits, unanswered keepalives in the high 16)."""
    state, health = raw["state"], raw["health"]
    return ClientEntry(
        **{
            **raw,
            "state": STATES.get(state, f"invalid({state})"),
            "health": HEALTH.get(health & 0xFFFF, f"invalid({health & 0xFFFF})"),
            "unanswered": health >> 16,
            "via": _VIA.get(raw["queue"], "shm"),
        }
    )
