"""A new server taking over an API region, and the queues of clients that are gone.

The region outlives its server: a new one takes over what it finds. None of it is believed:

* the previous server is known from the state's sealed identity (epoch, pid, start time); a
  damaged state gets :data:`STATE_WAIT` seconds to be repaired by a live server (which
  does so within its ``death_poll``), else it is taken over and rewritten;
* the message rings and the input queue are opened, and rebuilt in place if a peer damaged
  them beyond opening (the previous server, which would have repaired them, is gone);
* the clients are not taken from the old client table but from the queue objects in the
  region's directory: each names its creator (pid and start time) in its validated header,
  or, if damaged, its pid in its name (``api/client/<pid>-<n>``). A live client's queue is
  its own to remove (or the server's once it dies); a dead one's is drained, removed, and
  every message its process held is reclaimed.
"""

from __future__ import annotations

import contextlib
import logging
import time

from shmkit import MsgRings, Queue, Region
from shmkit._native import ApiPort
from shmkit.api.state import ApiState
from shmkit.errors import CorruptionError, ShmkitError

__all__ = [
    "CLIENT_QUEUE_PREFIX",
    "INPUT_QUEUE",
    "RINGS",
    "STATE_WAIT",
    "open_input",
    "open_rings",
    "previous_server",
    "queue_owner",
    "remove_client_queue",
]

log = logging.getLogger("shmkit.api")

INPUT_QUEUE = "api/input"
RINGS = "api/rings"
CLIENT_QUEUE_PREFIX = "api/client/"
#: How long a new server waits for a damaged state to be repaired by a live server.
STATE_WAIT = 1.0


def previous_server(region: Region, name: str) -> tuple[int, int, int] | None:
    """``(epoch, pid, start time)`` of the region's previous server, as its sealed state
    says; None if the state stays unreadable for :data:`STATE_WAIT` seconds."""
    deadline = time.monotonic() + STATE_WAIT
    while True:
        try:
            sealed = ApiState.open(region).sealed()
            if sealed is not None:
                return sealed
        except ValueError:
            pass
        if time.monotonic() >= deadline:
            log.warning("API %s: the previous server's state is damaged; taking over", name)
            return None
        time.sleep(0.02)  # waiting for a live server's repair, bounded by the deadline


def open_rings(
    region: Region,
    server: list[tuple[int, int]] | None,
    client: list[tuple[int, int]] | None,
    gc_age: float,
    takeover: bool,
) -> MsgRings:
    """The API's message rings: opened, created, or (taking over) rebuilt if damaged."""
    try:
        return MsgRings.open(region, RINGS)
    except FileNotFoundError:
        return MsgRings.create(region, RINGS, server=server, client=client, gc_age=gc_age)
    except CorruptionError:
        if not takeover:
            raise
        log.warning("API: the message rings are damaged; rebuilding them in place")
        return MsgRings.rebuild(region, RINGS, server=server, client=client, gc_age=gc_age)


def open_input(region: Region, capacity: int, takeover: bool) -> Queue:
    """The server's input queue: opened, created, or (taking over) rebuilt if damaged."""
    try:
        return Queue.find_or_create(region, INPUT_QUEUE, capacity, 8)[0]
    except CorruptionError:
        if not takeover:
            raise
        log.warning("API: the input queue is damaged; rebuilding it in place")
        return Queue.rebuild(region, INPUT_QUEUE, capacity, 8)


def queue_owner(region: Region, qname: str) -> tuple[int, int]:
    """``(pid, start time)`` of a client queue's creator: from its header, or (damaged) the
    pid in its name with start time 0 (unknown)."""
    try:
        q = Queue.open(region, qname)
    except (OSError, ShmkitError):
        head = qname[len(CLIENT_QUEUE_PREFIX) :].split("-", 1)[0]
        return (int(head), 0) if head.isdigit() and len(head) < 8 else (0, 0)
    try:
        return q.creator
    finally:
        q.close()


def remove_client_queue(
    region: Region, port: ApiPort, rings: MsgRings, qname: str, pid: int, start: int = 0
) -> None:
    """Remove the queue of a client that is gone: drained (its messages freed), removed,
    and every message its process held reclaimed; unless the object now belongs to another
    process (a reused pid). A queue too damaged to open is removed unchecked."""
    try:
        q = Queue.open(region, qname)
    except (OSError, ShmkitError):
        q = None
    if q is not None:
        creator_pid, creator_start = q.creator
        if creator_pid != pid or (start and creator_start != start):
            q.close()
            return
        with contextlib.suppress(ShmkitError):
            port.drain(q)
        q.close()
    with contextlib.suppress(OSError, ShmkitError):
        region.remove_object(qname)
    if pid:
        rings.reclaim_pid(pid)
