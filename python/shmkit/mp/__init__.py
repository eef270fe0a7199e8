"""A drop-in for ``multiprocessing`` users: shared-memory ``SharedMemory`` (and, built on
``shmkit.MsgQueue``, ``Queue`` and ``SimpleQueue``)."""

from __future__ import annotations

from shmkit.mp.shared_memory import SharedMemory

__all__ = ["SharedMemory"]
