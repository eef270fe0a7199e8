"""``shmkit.MsgQueue``: a queue of variable-size messages in a shared-memory region.

Messages of any length the region can hold (0 bytes to many MiB in one queue) are copied
once into shared memory (``put``), or written there in place (``reserve``), and read out
(``get``) or in place (``borrow``). The queue carries 8-byte references to them (VPP's
``svm_msg_q``); the messages live in size-class rings of 256 B, 1 KiB, 4 KiB and 64 KiB
payloads, with the region heap as fallback for larger ones.

Crash safety: a message whose producer or consumer dies is reclaimed, never leaked (at open,
when the region runs out of memory, and by ``gc()``). A consumer that dies loses the
message(s) it had taken out (at-most-once on consumer death); every other message stays
queued. A reference a hostile peer scribbled over is dropped and counted (``stats()
["dropped"]``), never followed.

Bounds: at most ``capacity`` messages are queued, and messages live in the region, so a
consumer that never takes or releases them costs at most the queue's capacity and the
region's memory: producers then get ``QueueFull`` or ``OutOfMemoryError`` (blocking calls
wait up to their timeout first), never a hang past it or a crash.
"""

from __future__ import annotations

from shmkit import _native
from shmkit._objq import ObjectSlot, ObjectsMixin

__all__ = ["MsgQueue", "MsgSlot", "MsgView", "ObjectSlot"]

MsgSlot = _native.MsgSlot
MsgView = _native.MsgView


class MsgQueue(ObjectsMixin, _native.MsgQueue):
    """A queue of variable-size messages in a region, shared by name between processes.

    ``MsgQueue.create(region, name, capacity, *, max_msg=None)`` makes one,
    ``MsgQueue.open(region, name)`` (or ``MsgQueue(region, name)``) opens it; handles pickle
    (re-opened by region and queue name), so every multiprocessing start method can pass
    them. Calls follow ``queue.Queue``: ``put``/``get`` with ``block`` and ``timeout``,
    ``put_nowait``/``get_nowait``, ``QueueFull``/``QueueEmpty``; ``try_put``/``try_get``
    never raise those. ``borrow()`` reads a message in place (a ``MsgView``: buffer protocol,
    freed when it and every memoryview of it are released), ``reserve(n)`` writes one in
    place (a ``MsgSlot``: ``commit()`` or ``abort()``). ``put_obj``/``get_obj`` carry Python
    objects (pickle protocol 5, buffers as views of the message: ``shmkit._objq``) and
    ``reserve_obj(n)`` builds an object's data in place (an ``ObjectSlot``).
    """
