"""Epoch handles, VPP's layout: ``handle = index << 8 | (restarts & 0xff)``.

The low byte is the server's restart count when the client registered; a handle whose epoch
differs from the server's current one belongs to a previous server incarnation and is
rejected ("messages with missing clients").
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MAX_INDEX", "Handle"]

#: Largest registration index that fits the 32-bit handle.
MAX_INDEX = (1 << 24) - 1


@dataclass(frozen=True)
class Handle:
    """A client's registration: its index in the server's table and the server epoch."""

    index: int
    epoch: int

    def __int__(self) -> int:
        if not 0 <= self.index <= MAX_INDEX:
            raise ValueError(f"handle index {self.index} out of range")
        return self.index << 8 | (self.epoch & 0xFF)

    def __index__(self) -> int:
        return int(self)

    @classmethod
    def from_int(cls, handle: int) -> Handle:
        if not 0 <= handle < 1 << 32:
            raise ValueError(f"handle {handle} is not a 32-bit value")
        return cls(handle >> 8, handle & 0xFF)

    def matches_epoch(self, restarts: int) -> bool:
        return self.epoch & 0xFF == restarts & 0xFF

    def __repr__(self) -> str:
        return f"Handle(index={self.index}, epoch={self.epoch}) = {int(self):#x}"
