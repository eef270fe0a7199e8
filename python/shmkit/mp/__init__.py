"""A drop-in for ``multiprocessing`` users: ``Queue`` and ``SimpleQueue`` that carry objects
through shared memory (``shmkit.MsgQueue.put_obj``/``get_obj``: arrays arrive without a
copy), and a ``SharedMemory`` that is never unlinked early nor leaked.

    from shmkit.mp import Queue, SimpleQueue, SharedMemory
"""

from __future__ import annotations

from shmkit.mp.queues import Queue, SimpleQueue
from shmkit.mp.shared_memory import SharedMemory

__all__ = ["Queue", "SharedMemory", "SimpleQueue"]
