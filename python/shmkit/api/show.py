"""Look at an API from outside, without asking its server: ``shmkit api show``."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from shmkit import MsgRings, Queue, Region
from shmkit._format import table
from shmkit._native import process_alive as _alive
from shmkit.api.state import OBJECT, ApiState, ClientEntry, client_entry
from shmkit.api.takeover import RINGS
from shmkit.errors import CorruptionError, ShmkitError
from shmkit.stats import MsgRingStats

__all__ = ["ApiView", "NotAnApiError", "describe", "format_view"]


class NotAnApiError(ShmkitError):
    """The region exists but holds no shmkit binary API (no ``api/state`` object)."""


@dataclass(frozen=True)
class ApiView:
    name: str
    epoch: int
    server_pid: int
    server_alive: bool
    heartbeat_age: float | None
    counters: dict[str, int]
    clients: list[dict[str, Any]]
    ring_stats: list[dict[str, Any]]
    pool_stats: MsgRingStats
    ring_text: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _queue_length(region: Region, entry: ClientEntry) -> int | None:
    try:
        q = Queue.open(region, entry.queue)
    except (OSError, ShmkitError, ValueError):
        return None
    try:
        return len(q)
    finally:
        q.close()


def _open(
    region: Region, name: str, wait: float
) -> tuple[ApiState, MsgRings, tuple[int, int, int]]:
    """The state (with its sealed server identity) and the rings. Another process may have
    damaged them: a live server repairs that within its ``death_poll``, so it is given
    ``wait`` seconds before a ``CorruptionError``."""
    deadline = time.monotonic() + wait
    while True:
        try:
            state = ApiState.open(region)
            rings = MsgRings.open(region, RINGS)
            sealed = state.sealed()
            if sealed is not None:
                return state, rings, sealed
            why = "the server's identity does not carry its seal"
        except (ValueError, CorruptionError) as exc:
            why = str(exc)
        if time.monotonic() >= deadline:
            raise CorruptionError(f"API {name!r}: its shared objects are damaged ({why})")
        time.sleep(0.02)  # for a live server's repair, bounded by the deadline


def describe(name: str, root: str | None = None, *, wait: float = 1.0) -> ApiView:
    """Read the API region ``name``: server, counters, clients, ring stats."""
    region = Region.open(name, root=root, timeout=1.0)
    try:
        try:
            region.find_object(OBJECT)
        except FileNotFoundError:
            raise NotAnApiError(
                f"region {name!r} holds no shmkit API (no {OBJECT!r} object)"
            ) from None
        state, rings, (epoch, pid, start) = _open(region, name, wait)
        beat = state.head()[3]
        now = time.monotonic_ns()
        clients = []
        for e in map(client_entry, state.entries()):
            d = asdict(e)
            d["queue_length"] = _queue_length(region, e) if e.via == "shm" else None
            d["alive"] = _alive(e.pid, e.start_time)
            d["idle"] = round((now - e.last_heard_ns) / 1e9, 3) if e.last_heard_ns else None
            clients.append(d)
        return ApiView(
            name=name,
            epoch=epoch,
            server_pid=pid,
            server_alive=bool(pid) and _alive(pid, start),
            heartbeat_age=round((now - beat) / 1e9, 3) if beat else None,
            counters=state.counters(),
            clients=clients,
            ring_stats=rings.ring_stats(),
            pool_stats=rings.stats(),
            ring_text=rings.format_stats(),
        )
    finally:
        region.close()


def format_view(v: ApiView) -> str:
    alive = "alive" if v.server_alive else "NOT RUNNING"
    lines = [f"API {v.name}: server pid {v.server_pid} ({alive}), epoch {v.epoch}"]
    rows = []
    for c in v.clients:
        health = c["health"] if c["alive"] else "dead"
        if c["state"] == "stale":
            health = "stale (previous server)"
        qlen = "-" if c["queue_length"] is None else c["queue_length"]
        row = [c["name"], c["pid"], f"{c['handle']:#x}", c["via"], qlen, health]
        rows.append([*row, c["requests"], c["dropped"]])
    lines.append("")
    lines.append(
        table(["CLIENT", "PID", "HANDLE", "VIA", "QUEUE", "HEALTH", "REQUESTS", "DROPPED"], rows)
        if rows
        else "no clients"
    )
    lines.append("")
    lines.append(v.ring_text.rstrip())
    lines.append("")
    lines.append(" ".join(f"{k}={n}" for k, n in v.counters.items()))
    return "\n".join(lines)
