"""Python objects through a ``MsgQueue``: ``put_obj``, ``get_obj`` and ``reserve_obj``.

``put_obj(obj)`` and ``get_obj()`` are native (``py/msgq.rs``). Plain data (``None``,
``bool``, ``int`` in the i64 range, ``float``, ``str``, ``bytes``/``bytearray`` up to 16 KiB,
``tuple``, ``list``, ``dict``; exact types, no shared or cyclic containers, at most 64 deep)
is written in shmkit's native format (``shmkit._objects``) and built again by the receiver
with no pickle and no Python frame on the way. Anything else goes by pickle, through the two
methods of this mixin that the native ones call:

``_put_obj_pickled(obj)`` pickles ``obj`` (protocol 5) and writes it into one message block:
the pickle stream, and each out-of-band buffer (numpy arrays, ``bytearray``, ``memoryview``
...) copied once, straight from the object into the block (the layout is in
``shmkit._objects``). ``_get_obj_from(view)`` unpickles a block taken in place: arrays and
memoryviews in the object are views of the block, nothing is copied; the block is freed when
the last of them is gone (and reclaimed if the receiving process dies). Buffers of at most
4 KiB go inside the pickle stream instead, a numpy array of at most 4 KiB on its own goes as
its bytes with no pickle (``shmkit._arrays``), and a message of at most 4 KiB is copied out
and freed at once, to ``_get_obj_small(data)``: for so few bytes a copy costs less than a view.

``reserve_obj(nbytes)`` removes the sender's copy too: it reserves a message with ``nbytes``
of buffer space, the sender builds its array there (``slot.array(shape, dtype)`` or any
object on ``slot.buffer``), and ``slot.put(obj)`` sends an object that contains it: the
buffer is referenced where it lies, only the pickle stream is written. The time to send a
100 MiB array that way does not depend on its size.

Bounds: a receiver that keeps objects (or never calls ``get_obj``) holds their blocks; at most
``capacity`` messages queue up, and blocks live in the queue's region, so a sender then gets
``QueueFull`` or ``OutOfMemoryError`` (after waiting up to its ``timeout``), never a crash.
"""

from __future__ import annotations

import io
import pickle
import time
from typing import Any, Literal, Protocol

from shmkit import _arrays, _objects
from shmkit._native import MsgSlot, MsgView
from shmkit._objects import ENTRY, HEADER, MAGIC, READONLY, _Pickler

__all__ = ["ObjectSlot", "ObjectsMixin"]

_PROTO = 0x80
_dumps = pickle.dumps
_loads = pickle.loads


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


class _Queue(Protocol):
    """What the object methods use of a ``MsgQueue`` (the mixin's self type)."""

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None: ...
    def reserve(self, n: int, block: bool = True, timeout: float | None = None) -> MsgSlot: ...
    def borrow(
        self, block: bool = True, timeout: float | None = None, *, writable: bool = False
    ) -> MsgView: ...
    def put_obj(self, obj: Any, block: bool = True, timeout: float | None = None) -> None: ...
    def get_obj(self, block: bool = True, timeout: float | None = None) -> Any: ...


class ObjectsMixin:
    """The object methods of ``shmkit.MsgQueue``."""

    __slots__ = ()

    def _put_obj_pickled(
        self: _Queue, obj: Any, block: bool = True, timeout: float | None = None
    ) -> None:
        """``put_obj`` of an object that is not plain data (called by the native
        ``put_obj``): pickle protocol 5, one message, every out-of-band buffer copied once into
        it. Waits like ``put`` (``QueueFull`` when the queue stays full, and
        ``OutOfMemoryError`` when the region has no room for the message, after ``timeout``).
        Pickling errors come before anything is allocated."""
        t = type(obj)
        msg: bytes | _objects.Framed | _objects._BytesMessage | None = None
        # a small numpy array on its own: its bytes, no pickle (``shmkit._arrays``)
        small_array = _arrays.message(obj, _objects.IN_BAND_MAX)
        if small_array is not None:
            self.put(small_array, block, timeout)
            return
        if t is not bytes and t is not bytearray:
            # the common case inline (a small object: pickle, put): one call less
            pbs: list[pickle.PickleBuffer] = []
            try:
                stream = _dumps(obj, 5, buffer_callback=_objects.in_band_if_small(pbs))
            except TypeError:
                pass  # memoryviews inside: frame() has the pickler for them
            else:
                if not pbs:
                    self.put(stream, block, timeout)
                    return
                msg = _objects.framed(obj, stream, pbs)
        if msg is None:
            msg = _objects.frame(obj)
        if type(msg) is bytes:
            self.put(msg, block, timeout)
            return
        deadline = None if timeout is None or not block else time.monotonic() + timeout
        # ALIGN - 1 spare bytes: the buffers land on aligned addresses (see write())
        slot = self.reserve(_objects.size_of(msg) + _objects.ALIGN - 1, block, timeout)
        try:
            with slot.view as view:
                length = _objects.write(msg, view)
            slot.commit(length, block, _remaining(deadline))
        except BaseException:
            slot.abort()
            raise

    def put_obj_nowait(self: _Queue, obj: Any) -> None:
        """``put_obj(obj, False)``."""
        self.put_obj(obj, False)

    def _get_obj_from(self, view: MsgView) -> Any:
        """The object of a message of more than 4 KiB that is not in the native format
        (called by the native ``get_obj`` with the message taken in place, writable; a
        smaller one it copies out for ``_get_obj_small``). Its arrays, ``bytearray``-backed
        buffers and memoryviews are views of the message in shared memory, writable where the
        sender's were: no copy. The message is freed when the last of them is gone."""
        block_view = memoryview(view)
        try:
            return _objects.load(block_view, writable=True)
        finally:
            block_view.release()
            view.release()

    def _get_obj_small(self, data: bytes) -> Any:
        """The object of a message of at most 4 KiB that is not in the native format,
        copied out of the queue and freed (called by the native ``get_obj``): buffers in it
        are views of a private copy."""
        if data and data[0] == _PROTO:
            return _loads(data)
        if data[:4] == _arrays.MAGIC:
            return _arrays.load(memoryview(data))
        return _objects.load(memoryview(bytearray(data)), writable=True)

    def get_obj_nowait(self: _Queue) -> Any:
        """``get_obj(False)``."""
        return self.get_obj(False)

    def reserve_obj(
        self: _Queue,
        nbytes: int,
        *,
        room: int = 64 << 10,
        block: bool = True,
        timeout: float | None = None,
    ) -> ObjectSlot:
        """Reserve a message with ``nbytes`` of buffer space to build an object's data in place
        (see :class:`ObjectSlot`); ``room`` bytes in front of it hold the pickle stream and
        any other buffer of the object. Waits for memory like ``reserve``."""
        return ObjectSlot(self, nbytes, room, block, timeout)


class ObjectSlot:
    """A message being built in place, from ``MsgQueue.reserve_obj(nbytes)``::

        with q.reserve_obj(frame_bytes) as slot:
            frame = slot.array((1080, 1920, 4), "uint8")  # a numpy array in the message
            render_into(frame)
            slot.put({"frame": frame, "t": t})            # sent by reference, not copied

    ``put(obj)`` sends ``obj``; every buffer of it that lies in ``buffer`` is referenced
    where it is, anything else is copied into the ``room`` in front (if the pickle stream and
    those buffers do not fit there, the whole object is sent by ``put_obj`` instead, copied).
    After ``put`` the memory belongs to the receiver: do not touch arrays built on it any
    more. Leaving the ``with`` block without ``put`` (or ``abort()``) frees the message.
    """

    def __init__(
        self, q: _Queue, nbytes: int, room: int, block: bool, timeout: float | None
    ) -> None:
        if nbytes < 0 or room < 0:
            raise ValueError("nbytes and room must not be negative")
        self._q = q
        self._nbytes = nbytes
        self._block, self._timeout = block, timeout
        align = _objects.ALIGN
        self._slot = q.reserve(room + align - 1 + nbytes, block, timeout)
        self._view = self._slot.view
        # the buffer starts at the first 64-byte aligned address after the room
        base = _objects.address(self._view)
        self._start = room + (-(base + room) % align if base else 0)
        #: The writable space for the object's data (``nbytes``, 64-byte aligned).
        self.buffer = self._view[self._start : self._start + nbytes]

    def array(
        self, shape: int | tuple[int, ...], dtype: Any = "uint8", order: Literal["C", "F"] = "C"
    ) -> Any:
        """A numpy array of ``shape`` and ``dtype`` on ``buffer`` (from its start)."""
        import numpy

        return numpy.ndarray(shape, dtype, buffer=self.buffer, order=order)

    def put(self, obj: Any, block: bool | None = None, timeout: float | None = None) -> None:
        """Send ``obj`` (waits for room in the queue as ``block``/``timeout`` say, by default
        those of ``reserve_obj``)."""
        if self._slot.done is not None:
            raise ValueError(f"this message was already {self._slot.done}")
        if block is None:
            block, timeout = self._block, self._timeout if timeout is None else timeout
        pbs: list[pickle.PickleBuffer] = []
        try:
            stream = pickle.dumps(obj, 5, buffer_callback=pbs.append)
        except TypeError:
            f = io.BytesIO()
            pbs.clear()
            _Pickler(f, 5, buffer_callback=pbs.append).dump(obj)
            stream = f.getvalue()
        placed = self._place(stream, pbs)
        if placed is None:
            # does not fit the room in front: the object goes as a message of its own
            self._q.put_obj(obj, block, timeout)
            self.abort()
            return
        entries, copies, length = placed
        view = self._view
        HEADER.pack_into(view, 0, MAGIC, 0, len(entries), 0, len(stream))
        pos = HEADER.size
        for entry in entries:
            ENTRY.pack_into(view, pos, *entry)
            pos += ENTRY.size
        view[pos : pos + len(stream)] = stream
        for off, raw in copies:
            view[off : off + raw.nbytes] = raw
        self._slot.commit(length, block, timeout)

    def _place(
        self, stream: bytes, pbs: list[pickle.PickleBuffer]
    ) -> tuple[list[tuple[int, int, int]], list[tuple[int, memoryview]], int] | None:
        """Where each buffer goes: ``(entries, copies, message length)``, or None if the
        pickle stream and the buffers that need copying do not fit in the room."""
        base = _objects.address(self.buffer) or None
        pos = HEADER.size + ENTRY.size * len(pbs) + len(stream)
        entries: list[tuple[int, int, int]] = []
        copies: list[tuple[int, memoryview]] = []
        end = self._start
        for pb in pbs:
            try:
                raw = pb.raw()
            except BufferError:
                return None
            flags = READONLY if raw.readonly else 0
            addr = _objects.address(raw)
            if base is not None and addr and base <= addr <= base + self._nbytes - raw.nbytes:
                off = self._start + (addr - base)
                end = max(end, off + raw.nbytes)
            else:
                pos = (pos + _objects.ALIGN - 1) & ~(_objects.ALIGN - 1)
                off = pos
                pos += raw.nbytes
                copies.append((off, raw))
            entries.append((off, raw.nbytes, flags))
        if pos > self._start:
            return None
        return entries, copies, end

    def abort(self) -> None:
        """Give the message up (idempotent; freed once no view of it is left)."""
        if self._slot.done is None:
            self._slot.abort()

    @property
    def done(self) -> str | None:
        """``None`` while open, else ``"committed"`` or ``"aborted"``."""
        return self._slot.done

    def __enter__(self) -> ObjectSlot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()
