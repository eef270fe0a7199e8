"""The message table a registration reply points at, as a region object.

VPP's ``memclnt_create_reply.message_table`` is the address of the server's serialized
message table in the shared segment; shmkit's is the offset of a region object named
``api/msgtable.<epoch>.<n>`` that the server wrote, holding (big-endian, the entries laid out
as ``message_table_entry``)::

    u32 count
    count x (u16 id, 64-byte NUL-padded name_crc)
    u32 CRC-32 of what precedes

The server writes a new object whenever its table changed since the last registration (and
when a peer damaged the current one), and frees a replaced one once every client that was
told its offset has had time to read it. A client believes an offset only if it is that of
such an object, and the table only if its checksum holds.
"""

from __future__ import annotations

import contextlib
import struct
import time
import zlib

from shmkit import Region
from shmkit.errors import CorruptionError, ShmkitError

__all__ = ["PREFIX", "TableObjects", "decode", "encode", "read"]

PREFIX = "api/msgtable."
_COUNT = struct.Struct(">I")
_ENTRY = struct.Struct(">H64s")
#: a replaced table object lives this long (seconds) for clients still reading it
KEEP = 10.0


def encode(table: dict[int, str]) -> bytes:
    """The object's bytes for ``{id: name_crc}``."""
    body = _COUNT.pack(len(table)) + b"".join(
        _ENTRY.pack(i, name.encode()) for i, name in sorted(table.items())
    )
    return body + _COUNT.pack(zlib.crc32(body))


def decode(data: bytes) -> dict[str, int]:
    """``{name_crc: id}`` from an object's bytes; :class:`CorruptionError` if they are not a
    whole table with its checksum."""
    if len(data) < 8:
        raise CorruptionError(f"message table: {len(data)} bytes")
    (count,) = _COUNT.unpack_from(data)
    end = 4 + count * _ENTRY.size
    if end + 4 > len(data):
        raise CorruptionError(f"message table: {count} entries do not fit {len(data)} bytes")
    if _COUNT.unpack_from(data, end)[0] != zlib.crc32(data[:end]):
        raise CorruptionError("message table: checksum mismatch (damaged by a peer?)")
    table = {}
    for k in range(count):
        i, raw = _ENTRY.unpack_from(data, 4 + k * _ENTRY.size)
        try:
            table[raw.split(b"\0", 1)[0].decode()] = i
        except UnicodeDecodeError:
            raise CorruptionError("message table: a name is not UTF-8") from None
    return table


def read(region: Region, offset: int) -> dict[str, int]:
    """The table in the object at ``offset`` of ``region`` (it must be a table object)."""
    try:
        obj = next(
            (o for o in region.objects() if o["offset"] == offset and o["name"].startswith(PREFIX)),
            None,
        )
    except ShmkitError as exc:
        raise CorruptionError(f"message table: the region's directory is damaged ({exc})") from exc
    if obj is None:
        raise CorruptionError(f"message table: no table object at offset {offset}")
    return decode(region.read(offset, obj["size"]))


class TableObjects:
    """The server's table objects: the current one, and replaced ones until they expire."""

    def __init__(self, region: Region, epoch: int) -> None:
        self.region = region
        self.epoch = epoch
        self._n = 0
        self._current: tuple[str, int, bytes] | None = None  # name, offset, bytes
        self._replaced: list[tuple[str, float]] = []
        # Tables of a previous server (a takeover) are no one's any more.
        with contextlib.suppress(OSError, ShmkitError):
            for o in region.objects():
                if o["name"].startswith(PREFIX):
                    region.remove_object(o["name"])

    def offset(self, table: dict[int, str]) -> int:
        """The offset of an object holding ``table`` (written now if it changed, or if the
        current object no longer holds exactly what was written)."""
        data = encode(table)
        cur = self._current
        if cur is not None and cur[2] == data and self._intact(cur):
            return cur[1]
        name = f"{PREFIX}{self.epoch}.{self._n}"
        self._n += 1
        off = self.region.create_object(name, len(data))
        self.region.write(off, data)
        if cur is not None:
            self._replaced.append((cur[0], time.monotonic()))
        self._current = (name, off, data)
        self._expire()
        return off

    def _intact(self, cur: tuple[str, int, bytes]) -> bool:
        name, off, data = cur
        try:
            o = self.region.find_object(name)
            return o["offset"] == off and self.region.read(off, len(data)) == data
        except (OSError, ShmkitError):
            return False

    def _expire(self) -> None:
        now = time.monotonic()
        keep = []
        for name, when in self._replaced:
            if now - when < KEEP:
                keep.append((name, when))
                continue
            # (a peer removed or damaged its entry: nothing left to free)
            with contextlib.suppress(OSError, ShmkitError):
                self.region.remove_object(name)
        self._replaced = keep

    def close(self) -> None:
        """Remove every table object (the server is closing)."""
        names = [n for n, _ in self._replaced] + ([self._current[0]] if self._current else [])
        for name in names:
            with contextlib.suppress(OSError, ShmkitError):
                self.region.remove_object(name)
        self._current, self._replaced = None, []
