"""API trace: what crossed the API, per direction, in circular buffers.

``rx`` holds messages the server received (requests), ``tx`` those it sent (replies, events,
keepalives). A trace can be dumped as text, saved to a file and loaded back, and its requests
replayed through a client (memclnt create/delete are not replayed, as in VPP).

File format (little-endian): ``b"SHKTRACE"``, u32 version, u32 rx count, u32 tx count,
u8 rx wrapped, u8 tx wrapped, u32 message-table size; the table as (u16 id, u8 length,
name_crc); then each message as (u8 direction, f64 time, u32 length, bytes).
"""

from __future__ import annotations

import collections
import os
import struct
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shmkit.api.messages import HEADER, REGISTRY, Message, MessageError

if TYPE_CHECKING:
    from shmkit.api.client import Client

__all__ = ["Trace", "TraceRecord"]

MAGIC = b"SHKTRACE"
VERSION = 1
NOT_REPLAYED = (
    "memclnt_create",
    "memclnt_create_v2",
    "memclnt_delete",
    "memclnt_keepalive_reply",
)


@dataclass(frozen=True)
class TraceRecord:
    direction: str  # "rx" or "tx"
    time: float
    data: bytes

    @property
    def msg_id(self) -> int:
        return struct.unpack_from(">H", self.data)[0] if len(self.data) >= 2 else -1


class Trace:
    """Two circular buffers of message copies plus the message table they refer to."""

    def __init__(self, size: int = 1024, table: Mapping[int, str] | None = None) -> None:
        if size <= 0:
            raise ValueError("trace size must be positive")
        self.size = size
        self.enabled = False
        self.table: dict[int, str] = dict(table or {})
        self._lock = threading.Lock()
        self._buf: dict[str, collections.deque[TraceRecord]] = {
            "rx": collections.deque(maxlen=size),
            "tx": collections.deque(maxlen=size),
        }
        self._seen = {"rx": 0, "tx": 0}

    def record(self, direction: str, data: bytes | bytearray | memoryview) -> None:
        if not self.enabled:
            return
        with self._lock:
            self._buf[direction].append(TraceRecord(direction, time.time(), bytes(data)))
            self._seen[direction] += 1

    def records(self, direction: str | None = None) -> list[TraceRecord]:
        with self._lock:
            if direction is not None:
                return list(self._buf[direction])
            return sorted([*self._buf["rx"], *self._buf["tx"]], key=lambda r: r.time)

    def wrapped(self, direction: str) -> bool:
        return self._seen[direction] > self.size

    def clear(self) -> None:
        with self._lock:
            for b in self._buf.values():
                b.clear()
            self._seen = {"rx": 0, "tx": 0}

    def __len__(self) -> int:
        return sum(len(b) for b in self._buf.values())

    # ---------------------------------------------------------------- text

    def decode(self, record: TraceRecord) -> Message | None:
        name_crc = self.table.get(record.msg_id)
        cls = REGISTRY.get(name_crc) if name_crc else None
        if cls is None:
            return None
        try:
            return cls.decode(record.data)
        except MessageError:
            return None

    def dump(self) -> str:
        lines = []
        for r in self.records():
            msg = self.decode(r)
            text = repr(msg) if msg is not None else f"<id {r.msg_id}, {len(r.data)} bytes>"
            stamp = time.strftime("%H:%M:%S", time.localtime(r.time)) + f"{r.time % 1:.6f}"[1:]
            lines.append(f"{stamp} {r.direction} {text}")
        return "\n".join(lines)

    # ---------------------------------------------------------------- files

    def save(self, path: str | os.PathLike[str]) -> None:
        rx, tx = self.records("rx"), self.records("tx")
        with open(path, "wb") as f:
            f.write(MAGIC)
            f.write(
                struct.pack(
                    "<IIIBBI",
                    VERSION,
                    len(rx),
                    len(tx),
                    self.wrapped("rx"),
                    self.wrapped("tx"),
                    len(self.table),
                )
            )
            for msg_id, name in sorted(self.table.items()):
                raw = name.encode()
                f.write(struct.pack("<HB", msg_id, len(raw)) + raw)
            for r in [*rx, *tx]:
                f.write(struct.pack("<BdI", r.direction == "tx", r.time, len(r.data)) + r.data)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Trace:
        with open(path, "rb") as f:
            data = f.read()
        if not data.startswith(MAGIC):
            raise ValueError(f"{os.fspath(path)} is not a shmkit API trace")
        try:
            off = len(MAGIC)
            version, n_rx, n_tx, _, _, n_table = struct.unpack_from("<IIIBBI", data, off)
            if version != VERSION:
                raise ValueError(f"trace version {version} is not supported")
            off += struct.calcsize("<IIIBBI")
            table = {}
            for _ in range(n_table):
                msg_id, n = struct.unpack_from("<HB", data, off)
                off += 3
                table[msg_id] = data[off : off + n].decode()
                off += n
            trace = cls(size=max(n_rx, n_tx, 1), table=table)
            for _ in range(n_rx + n_tx):
                is_tx, stamp, n = struct.unpack_from("<BdI", data, off)
                off += struct.calcsize("<BdI")
                if off + n > len(data):
                    raise ValueError("truncated trace file")
                d = "tx" if is_tx else "rx"
                trace._buf[d].append(TraceRecord(d, stamp, data[off : off + n]))
                off += n
        except (struct.error, UnicodeDecodeError) as exc:
            raise ValueError(f"damaged trace file: {exc}") from None
        return trace

    # ---------------------------------------------------------------- replay

    def replayable(self) -> Iterator[Message]:
        """The recorded requests as messages (known types only, create/delete skipped)."""
        for r in self.records("rx"):
            msg = self.decode(r)
            if msg is not None and msg._name not in NOT_REPLAYED:
                yield msg

    def replay(self, client: Client, timeout: float = 5.0) -> list[Any]:
        """Send every replayable request through ``client``; returns the replies in order."""
        return [client.call(msg, timeout=timeout) for msg in self.replayable()]

    def __repr__(self) -> str:
        return f"<Trace rx={len(self._buf['rx'])} tx={len(self._buf['tx'])} size={self.size}>"


_ = HEADER  # the header layout the msg_id parsing above relies on
