"""``sock_init_shm``: a socket client's private shared-memory segment (VPP's "private
segments").

A client connected by socket asks for one with ``sock_init_shm`` (``requested_size`` bytes;
0: :data:`DEFAULT_SIZE`). The server creates an anonymous region (a sealed memfd), with
message rings and two queues in it — ``input`` (client → server) and ``output`` (server →
client) — and answers ``sock_init_shm_reply`` with the memfd attached (``SCM_RIGHTS``). From
then on both sides move every message through the segment's rings, as the shared-memory
transport does, and the socket stays open only as the connection's life: its EOF still reaps
the client at once, and the server's death still reaches the client.

The segment is private to the two processes (nobody else can open a memfd it was not given),
but the client maps it read-write: the server validates every reference it reads from it
(the message rings' checks), and a client whose segment is damaged is dropped, never the
server.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass

from shmkit import MsgRings, Queue, Region
from shmkit._native import ApiPort
from shmkit.errors import ShmkitError

__all__ = ["DEFAULT_SIZE", "MAX_SIZE", "MIN_SIZE", "Segment"]

#: Size of a segment when the client asks for none (``requested_size = 0``).
DEFAULT_SIZE = 4 << 20
#: Smallest and largest segment a client may ask for.
MIN_SIZE = 1 << 20
MAX_SIZE = 256 << 20
#: Message rings of a segment (payload size, count): fewer than the shared API region's.
SERVER_RINGS = [(64, 512), (256, 128), (1024, 64)]
CLIENT_RINGS = [(1024, 512), (2048, 64), (4096, 8)]
#: Elements of each of its queues.
QUEUE_CAPACITY = 1024
RINGS, INPUT, OUTPUT = "api-rings", "input", "output"


@dataclass(eq=False)
class Segment:
    """A private segment: its region, message rings, port and two queues."""

    region: Region
    rings: MsgRings
    port: ApiPort
    input: Queue  # client -> server
    output: Queue  # server -> client
    #: the server's thread reading ``input`` (None on the client's side)
    thread: threading.Thread | None = None
    #: the segment is being let go (its server thread closes it when it leaves)
    closing: bool = False
    closed: bool = False

    @classmethod
    def create(cls, size: int) -> Segment:
        """The server's side: a fresh segment of ``size`` bytes (see :data:`MIN_SIZE`,
        :data:`MAX_SIZE`; ``ValueError`` outside)."""
        size = size or DEFAULT_SIZE
        if not MIN_SIZE <= size <= MAX_SIZE:
            raise ValueError(f"a segment of {size} bytes: it must be {MIN_SIZE}..{MAX_SIZE}")
        region = Region.create_anonymous(size, label="shmkit-api-segment")
        try:
            rings = MsgRings.create(region, RINGS, server=SERVER_RINGS, client=CLIENT_RINGS)
            inp = Queue.create(region, INPUT, QUEUE_CAPACITY, 8)
            out = Queue.create(region, OUTPUT, QUEUE_CAPACITY, 8)
            return cls(region, rings, ApiPort(rings), inp, out)
        except BaseException:
            region.close()
            raise

    @classmethod
    def attach(cls, fd: int) -> Segment:
        """The client's side: the segment behind the descriptor the server sent (checked as
        a region, its objects opened as any peer's are)."""
        region = Region.from_fd(fd)
        try:
            rings = MsgRings.open(region, RINGS)
            return cls(
                region, rings, ApiPort(rings), Queue.open(region, INPUT), Queue.open(region, OUTPUT)
            )
        except BaseException:
            region.close()
            raise

    def fileno(self) -> int:
        return self.region.fileno()

    def close(self) -> None:
        """Let go of the segment (its memory is freed once both sides have). Idempotent."""
        if self.closed:
            return
        self.closed = True
        for q in (self.input, self.output):
            with contextlib.suppress(ShmkitError, OSError):
                q.close()
        self.region.close()


def close_fds(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
