"""The API server's integrity guard: what the server does about clients' garbage.

Every process that talks to an API maps its region read-write, so any client (buggy or
hostile) can scribble over the message rings, the server's input queue, the shared state or
another client's queue. The server trusts none of them; it keeps private copies of what it
needs (the ring geometry and GC age in its :class:`~shmkit.MsgRings` handle, the queue
geometry in its :class:`~shmkit.Queue` handles, the state in a :class:`StateImage`, the
client table, epoch and counters in Python) and, every ``death_poll`` seconds:

* **message rings**: restores the pool header and ring descriptors from its copy (so new
  clients can open the pool again), and counts the slot headers its allocator found
  damaged and restored (``MsgRings.repair``, ``take_restamped``);
* **input queue**: restores its header and, when ``head``/``tail`` look wrong, rebuilds them
  from the slot stamps (``Queue.repair``); a producer's claim that stalls the queue for
  ``claim_timeout`` seconds (a client stopped or hostile half-way through a put) is skipped;
* **state**: compares the shared bytes with the image and rewrites them where they differ;
* **client queues**: re-validates each header; a client whose queue is damaged (found here,
  or by a send that fails) is dropped, not the server (see ``Server.drop_damaged``).

Every ``scan_interval`` the check is thorough: all slot headers, all input-queue stamps,
and the client queues no registration accounts for whose process is gone (a client that
gave up registering while the server may have held its queue leaves it for this).
Each finding is counted (``ring_repairs``, ``queue_repairs``, ``state_repairs``,
``damaged_clients``, ``stalled_claims``: ``shmkit api show``) and logged on the
``shmkit.api`` logger, at most once per :data:`LOG_INTERVAL` seconds per kind (with the
number of findings in between). Payloads are not protected: a peer that can write the region
can alter a message in flight; what it can't do is crash, hang or mislead the server about
anything but that message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from shmkit.api.throttle import Throttle
from shmkit.errors import ShmkitError

if TYPE_CHECKING:
    from shmkit import MsgRings, Queue
    from shmkit.api.clients import ClientInfo
    from shmkit.api.state import StateImage

__all__ = ["Guard", "Guarded"]

log = logging.getLogger("shmkit.api")


class Guarded(Protocol):
    """What the guard checks and repairs: the server's side of it (the guard needs no more
    of a server than this, so it does not import one)."""

    name: str
    rings: MsgRings
    input: Queue
    state: StateImage

    @property
    def clients(self) -> Iterable[ClientInfo]: ...

    def count(self, counter: str, n: int = 1) -> None: ...

    def drop_damaged(self, client: ClientInfo, why: str) -> None: ...

    def collect_queues(self, adopt_live: bool = False) -> None: ...


class Guard:
    """The periodic integrity check of one server (run by its dispatch loop)."""

    def __init__(self, server: Guarded, claim_timeout: float) -> None:
        self.server = server
        self.claim_timeout = claim_timeout
        self.report = Throttle(log)
        self._claim: tuple[int, int] | None = None
        self._claim_since = 0.0

    def check(self, thorough: bool = False) -> None:
        """One pass over everything the server shares (see the module docs)."""
        s = self.server
        name = s.name
        fixed = s.rings.repair(thorough) + s.rings.take_restamped()
        if fixed:
            s.count("ring_repairs", fixed)
            self.report(
                "rings",
                logging.WARNING,
                "API %s: restored %d damaged message-ring fields",
                name,
                fixed,
            )
        self.check_input(thorough)
        damaged = s.state.damage()
        if damaged:
            s.state.restore()
            s.count("state_repairs")
            self.report(
                "state",
                logging.WARNING,
                "API %s: shared state damaged (%s), rewritten",
                name,
                ", ".join(damaged),
            )
        for c in s.clients:
            if c.queue is None:
                continue  # a socket client: nothing of it is in shared memory
            try:
                c.queue.check()
            except ShmkitError as exc:
                s.drop_damaged(c, str(exc))
        if thorough:
            s.collect_queues()

    def check_input(self, thorough: bool = False) -> None:
        """Repair the input queue if needed; skip a producer's claim that stalls it."""
        s = self.server
        rep = s.input.repair(thorough)
        if any(rep.values()):
            s.count("queue_repairs")
            self.report(
                "queue",
                logging.WARNING,
                "API %s: input queue damaged, repaired (header %s, head %s, tail %s, "
                "%d slots rewritten, %d requests lost)",
                s.name,
                rep["header"],
                rep["head"],
                rep["tail"],
                rep["slots"],
                rep["lost"],
            )
        claim = s.input.head_claim()
        now = time.monotonic()
        if claim is None or claim != self._claim:
            self._claim, self._claim_since = claim, now
        elif now - self._claim_since >= self.claim_timeout:
            pos, word = claim
            if s.input.skip_claim(pos, word):
                s.count("stalled_claims")
                self.report(
                    "claim",
                    logging.WARNING,
                    "API %s: a client (pid %d) stalled the input queue for %.1f s "
                    "half-way through a request; skipped it",
                    s.name,
                    (word >> 40) & 0x3FFFFF,
                    now - self._claim_since,
                )
            self._claim = None
