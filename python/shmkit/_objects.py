"""Python objects in one message block: shmkit's native format for plain data, else pickle
protocol 5 with out-of-band buffers.

A message is one of four things, told apart by its first bytes:

* **a native message** (first byte ``0xB7``, then the format's version, 1): plain data
  (``None``, ``bool``, ``int`` in the i64 range, ``float``, ``str``, ``bytes``/``bytearray``
  up to 16 KiB, ``tuple``, ``list``, ``dict``; exact types) as tagged values, written and read
  by the native ``put_obj``/``get_obj`` without pickle. The layout is documented, validated
  and fuzzed in the Rust core (``rust/src/objects/``); a damaged one raises
  ``CorruptionError``. Objects with anything else inside, a list, dict or bytearray twice
  (shared or cyclic) or more than 64 nested containers go as one of the two below, so the
  receiver gets what pickle gives.

* **a plain pickle stream** (first byte ``0x80``, pickle's PROTO opcode): an object with no
  out-of-band buffer. ``bytes`` and ``bytearray`` sent on their own are written as this too,
  the opcodes framed around their bytes by hand, so they are copied once into the block, not
  first into a pickle and then into the block.
* **a small numpy array on its own** (first bytes ``b"SKA1"``): its dtype, shape and bytes,
  no pickle (layout and checks in ``shmkit._arrays``).
* **a framed message** (first bytes ``b"SKO5"``): pickle's out-of-band buffers
  (``pickle.PickleBuffer``: numpy arrays, ``bytearray``, ``memoryview`` ...) lie in the block
  next to the pickle stream, and the receiver's objects are built on views of the block::

      0   magic  b"SKO5"
      4   u32    flags (0)
      8   u32    nbufs: out-of-band buffers
      12  u32    reserved (0)
      16  u64    pickle_len
      24  nbufs x {u64 offset, u64 length, u64 flags (bit 0: the sender's buffer was
                   read-only)}: each buffer's bytes, from the block's start
      ..  the pickle stream (pickle_len bytes)
      ..  each buffer at a 64-byte aligned offset (as numpy and SIMD code like them)

  All integers little-endian. The receiver checks every offset and length against the block
  before making a view (a peer that writes garbage gets ``CorruptionError``).

Unpickling runs whatever the stream names, as with ``multiprocessing``: only processes you
trust may put objects into a queue you read objects from.
"""

from __future__ import annotations

import ctypes
import pickle
import struct
from collections.abc import Callable
from typing import Any

from shmkit import _arrays
from shmkit._native import CorruptionError

__all__ = [
    "ALIGN",
    "IN_BAND_MAX",
    "Framed",
    "address",
    "frame",
    "in_band_if_small",
    "load",
    "size_of",
    "write",
]

MAGIC = b"SKO5"
HEADER = struct.Struct("<4sIIIQ")
ENTRY = struct.Struct("<QQQ")
READONLY = 1
#: Alignment of each out-of-band buffer in a block.
ALIGN = 64
#: Out-of-band buffers of at most this many bytes that ``put_obj`` meets go inside the pickle
#: stream instead (see :func:`in_band_if_small`).
IN_BAND_MAX = 4096
_PROTO = 0x80
# Opcodes of a pickle stream of one bytes or bytearray object (protocol 5).
_BYTES_HEAD = struct.Struct("<2sBQ")
_BINBYTES8 = 0x8E
_BYTEARRAY8 = 0x96
_STOP = b"."


def _align(n: int) -> int:
    return (n + ALIGN - 1) & ~(ALIGN - 1)


class Framed:
    """An object pickled with its out-of-band buffers, laid out for one block of ``size``
    bytes (see the module for the layout); :func:`write` puts it into a block."""

    __slots__ = ("buffers", "offsets", "readonly", "size", "stream")

    def __init__(self, stream: bytes, buffers: list[memoryview], readonly: list[bool]) -> None:
        self.stream = stream
        self.buffers = buffers
        self.readonly = readonly
        pos = HEADER.size + ENTRY.size * len(buffers) + len(stream)
        self.offsets = []
        for b in buffers:
            pos = _align(pos)
            self.offsets.append(pos)
            pos += b.nbytes
        self.size = pos


class _BytesMessage:
    """A ``bytes``/``bytearray`` sent on its own: a pickle stream written around its bytes."""

    __slots__ = ("data", "opcode", "size")

    def __init__(self, data: bytes | bytearray) -> None:
        self.data = data
        self.opcode = _BINBYTES8 if type(data) is bytes else _BYTEARRAY8
        self.size = _BYTES_HEAD.size + len(data) + 1


def _cast(view: memoryview, fmt: str, shape: tuple[int, ...]) -> memoryview:
    cast: Any = view.cast  # typeshed lists the formats as literals; ours come from a view
    return cast(fmt, shape)  # type: ignore[no-any-return]


def _rebuild_memoryview(buf: Any, fmt: str, shape: tuple[int, ...], readonly: bool) -> memoryview:
    view = memoryview(buf).cast("B")
    if fmt != "B" or len(shape) != 1:
        view = _cast(view, fmt, shape)
    return view.toreadonly() if readonly else view


class _Pickler(pickle.Pickler):
    """Protocol 5 plus ``memoryview``s (which pickle refuses): sent as out-of-band buffers,
    they arrive as memoryviews of the message block (no copy)."""

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is not memoryview:
            return NotImplemented
        fmt, shape = obj.format, tuple(obj.shape or ())
        view = obj if obj.c_contiguous else memoryview(obj.tobytes())
        try:
            _cast(view.cast("B"), fmt, shape)
        except (TypeError, ValueError, NotImplementedError):
            fmt, shape = "B", (obj.nbytes,)  # a format cast() cannot restore: its bytes
        return _rebuild_memoryview, (pickle.PickleBuffer(view), fmt, shape, obj.readonly)


def frame(obj: Any) -> bytes | Framed | _BytesMessage:
    """Pickle ``obj`` for a message: a plain pickle stream (``bytes``) when it has no
    out-of-band buffer, else a :class:`Framed` layout. The buffers are not copied yet."""
    t = type(obj)
    if t is bytes or t is bytearray:
        return _BytesMessage(obj)
    pbs: list[pickle.PickleBuffer] = []
    try:
        stream = pickle.dumps(obj, 5, buffer_callback=pbs.append)
    except TypeError:
        # memoryviews somewhere inside (the only type the pickler below adds)
        import io

        f = io.BytesIO()
        pbs.clear()
        _Pickler(f, 5, buffer_callback=pbs.append).dump(obj)
        stream = f.getvalue()
    if not pbs:
        return stream
    return framed(obj, stream, pbs)


def in_band_if_small(pbs: list[pickle.PickleBuffer]) -> Callable[[pickle.PickleBuffer], bool]:
    """A ``buffer_callback`` for pickle protocol 5 that keeps buffers of at most
    :data:`IN_BAND_MAX` bytes inside the stream (a true answer) and hands larger ones out of
    band into ``pbs``. Copying a few KiB costs less than placing a buffer in the block and
    building the receiver's object on a view of it that keeps the block alive (a numpy array
    of 1 KiB went through a queue in 17 us as a view, 8 us in the stream; pyzmq's
    ``copy_threshold`` is the same trade). The receiver's small arrays are its own copies,
    writable if the sender's were (pickle carries a writable buffer as a ``bytearray``)."""
    keep = pbs.append

    def callback(pb: pickle.PickleBuffer) -> bool:
        if memoryview(pb).nbytes <= IN_BAND_MAX:
            return True
        keep(pb)
        return False

    return callback


def framed(obj: Any, stream: bytes, pbs: list[pickle.PickleBuffer]) -> bytes | Framed:
    """The message of ``obj`` already pickled into ``stream`` with the out-of-band buffers
    ``pbs`` (a non-contiguous buffer makes it a plain pickle stream after all)."""
    raws: list[memoryview] = []
    readonly: list[bool] = []
    for pb in pbs:
        try:
            raws.append(pb.raw())
        except BufferError:
            # A non-contiguous buffer cannot lie in the block as it is: everything in-band.
            return pickle.dumps(obj, 5)
        readonly.append(raws[-1].readonly)
    return Framed(stream, raws, readonly)


def size_of(msg: bytes | Framed | _BytesMessage) -> int:
    """Bytes of block that ``msg`` (from :func:`frame`) needs."""
    return len(msg) if isinstance(msg, bytes) else msg.size


def write(msg: bytes | Framed | _BytesMessage, dest: memoryview) -> int:
    """Write ``msg`` (from :func:`frame`) into ``dest`` (a writable format-``B`` block of at
    least :func:`size_of` bytes): the one copy of each buffer on the sending side. Returns
    the length of the message written. Buffers are placed at 64-byte aligned *addresses*:
    given ``ALIGN - 1`` spare bytes, they shift by up to that much from where the layout
    put them."""
    if isinstance(msg, bytes):
        dest[: len(msg)] = msg
        return len(msg)
    if isinstance(msg, _BytesMessage):
        n = len(msg.data)
        _BYTES_HEAD.pack_into(dest, 0, b"\x80\x05", msg.opcode, n)
        start = _BYTES_HEAD.size
        dest[start : start + n] = msg.data
        dest[start + n : start + n + 1] = _STOP
        return msg.size
    shift = 0
    if len(dest) >= msg.size + ALIGN - 1:
        shift = -address(dest) % ALIGN
    HEADER.pack_into(dest, 0, MAGIC, 0, len(msg.buffers), 0, len(msg.stream))
    pos = HEADER.size
    for off, b, ro in zip(msg.offsets, msg.buffers, msg.readonly):
        ENTRY.pack_into(dest, pos, off + shift, b.nbytes, READONLY if ro else 0)
        pos += ENTRY.size
    dest[pos : pos + len(msg.stream)] = msg.stream
    for off, b in zip(msg.offsets, msg.buffers):
        dest[off + shift : off + shift + b.nbytes] = b
    return msg.size + shift


def address(view: memoryview) -> int:
    """Address of the first byte of a writable buffer (0 for a read-only or empty one)."""
    if view.readonly or not view.nbytes:
        return 0
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


def load(block: memoryview, *, writable: bool = False) -> Any:
    """Unpickle the object of a message block (a format-``B`` memoryview of the whole block).
    Out-of-band buffers become views of ``block`` (no copy), writable where the sender's were
    and ``writable`` allows it; they keep the block alive as long as the objects built on them
    live. A block that is not a message raises ``CorruptionError``; a damaged pickle stream
    raises what ``pickle.loads`` raises (``pickle.UnpicklingError`` ...)."""
    total = len(block)
    if total == 0:
        raise CorruptionError("object message: empty block")
    if block[0] == _PROTO:
        return pickle.loads(block)
    if block[:4] == _arrays.MAGIC:
        return _arrays.load(block)
    if total < HEADER.size:
        raise CorruptionError(f"object message: {total} bytes, shorter than a header")
    magic, _flags, nbufs, _res, plen = HEADER.unpack_from(block, 0)
    if magic != MAGIC:
        raise CorruptionError(f"object message: bad magic {bytes(magic)!r}")
    table_end = HEADER.size + ENTRY.size * nbufs
    if table_end > total or plen > total - table_end:
        raise CorruptionError(
            f"object message: {nbufs} buffers and a {plen}-byte pickle do not fit in {total} bytes"
        )
    buffers = []
    pos = HEADER.size
    for _ in range(nbufs):
        off, n, flags = ENTRY.unpack_from(block, pos)
        pos += ENTRY.size
        if off < table_end or off > total or n > total - off:
            raise CorruptionError(
                f"object message: buffer [{off}, +{n}) outside the block of {total} bytes"
            )
        view = block[off : off + n]
        buffers.append(view if writable and not flags & READONLY else view.toreadonly())
    return pickle.loads(block[table_end : table_end + plen], buffers=buffers)
