"""A small numpy array on its own as one message, without pickle.

``put_obj`` of a ``numpy.ndarray`` (exactly that type) of at most
:data:`shmkit._objects.IN_BAND_MAX` bytes, contiguous, whose dtype its ``str`` names whole
(numbers, bools, datetimes and timedeltas, fixed-width byte and unicode strings: no objects,
records, sub-arrays or metadata) is sent as these bytes, and the receiver gets a copy of its
own. Pickling such an array costs numpy 5-6 us and unpickling it 3-4 us; this takes about
0.5 us each way (``tobytes`` and ``frombuffer``). A larger array keeps the zero-copy path
(out-of-band in a framed message, the receiver's array a view of shared memory); anything
else goes by pickle::

    0   magic  b"SKA1"
    4   u8     flags: bit 0 the sender's array was read-only, bit 1 Fortran order
    5   u8     ndim (at most 64)
    6   u8     length of the dtype's name
    7   u8     reserved (0)
    8   ndim x u64 shape
    ..  the dtype's name (``dtype.str``, ASCII: ``"<f8"``, ``"|b1"``, ``"<M8[ns]"``, ``"<U5"``)
    ..  the elements, in the order the flags say, nothing after them

Integers little-endian. The receiver checks every field before it builds anything: the flags
and ndim, the name (parsed by numpy, refused unless it is one of the dtypes above), and that
the shape's elements are exactly the bytes that follow; anything else raises
``CorruptionError``. As with pickle, the array is writable if the sender's was.
"""

from __future__ import annotations

import math
import struct
from typing import Any

from shmkit._native import CorruptionError

__all__ = ["MAGIC", "MAX_DIMS", "load", "message"]

MAGIC = b"SKA1"
HEAD = struct.Struct("<4sBBBx")
_DIM = struct.Struct("<Q")
READONLY = 1
FORTRAN = 2
#: Most dimensions a message may give (numpy 2's own limit; numpy 1 refuses more than 32).
MAX_DIMS = 64
#: dtype kinds whose ``str`` names them whole.
_KINDS = frozenset("biufcmMSU")


def _plain(dt: Any) -> bool:
    return dt.kind in _KINDS and dt.itemsize > 0 and dt.fields is None and dt.metadata is None


#: The names of the dtypes met (a sender's: ``None`` for one that cannot travel as bytes), and
#: the dtypes of the names met (a receiver's), at most :data:`_KNOWN_MOST` of each: parsing a
#: name and checking a dtype cost more than the rest of a small array's trip.
_names: dict[int, tuple[Any, bytes | None]] = {}
_dtypes: dict[bytes, Any] = {}
_KNOWN_MOST = 256
#: ``numpy.ndarray``, once a receiver has met a dtype (numpy is imported only then).
_ndarray: Any = None


def _name(dt: Any) -> bytes | None:
    # by identity, the dtype kept with its name: equal dtypes may differ in what equality
    # ignores (metadata)
    known = _names.get(id(dt))
    if known is not None and known[0] is dt:
        return known[1]
    name = dt.str.encode("ascii") if _plain(dt) else None
    if len(_names) < _KNOWN_MOST:
        _names[id(dt)] = (dt, name)
    return name


def _dtype(name: bytes) -> Any:
    global _ndarray
    dt = _dtypes.get(name)
    if dt is None:
        import numpy as np

        _ndarray = np.ndarray
        try:
            dt = np.dtype(name.decode("ascii"))
        except Exception as e:  # whatever numpy makes of a name it cannot parse
            raise CorruptionError(f"array message: dtype {name!r}") from e
        if not _plain(dt):
            raise CorruptionError(f"array message: dtype {dt} cannot travel as bytes")
        if len(_dtypes) < _KNOWN_MOST:
            _dtypes[name] = dt
    return dt


def message(a: Any, most: int) -> bytes | None:
    """The message of ``a`` if it is a numpy array that can go as one (exactly
    ``numpy.ndarray``, ``most`` bytes of elements at most, contiguous, a plain dtype; see the
    module), else ``None``. Told by its type's name, so numpy is not imported for it."""
    t = type(a)
    if t.__name__ != "ndarray" or t.__module__ != "numpy" or a.nbytes > most:
        return None
    name = _name(a.dtype)
    if name is None:
        return None
    flags = a.flags
    if flags.c_contiguous:
        order = 0
    elif flags.f_contiguous:
        order = FORTRAN
    else:
        return None
    ndim = a.ndim
    head = HEAD.pack(MAGIC, order | (0 if flags.writeable else READONLY), ndim, len(name))
    shape = struct.pack(f"<{ndim}Q", *a.shape) if ndim != 1 else _DIM.pack(a.shape[0])
    return b"".join((head, shape, name, a.tobytes("F" if order else "C")))


def load(block: memoryview) -> Any:
    """The array of message ``block`` (a format-``B`` view that starts with :data:`MAGIC`): a
    copy, so the block may be freed at once."""
    total = len(block)
    if total < HEAD.size:
        raise CorruptionError(f"array message: {total} bytes, shorter than a header")
    _magic, flags, ndim, name_len = HEAD.unpack_from(block, 0)
    if flags & ~(READONLY | FORTRAN) or ndim > MAX_DIMS:
        raise CorruptionError(f"array message: flags {flags:#x}, {ndim} dimensions")
    name_at = HEAD.size + 8 * ndim
    data_at = name_at + name_len
    if data_at > total:
        raise CorruptionError(f"array message: a header of {data_at} bytes in {total}")
    if ndim == 1:
        shape: tuple[int, ...] = _DIM.unpack_from(block, HEAD.size)
    else:
        shape = struct.unpack_from(f"<{ndim}Q", block, HEAD.size)
    dt = _dtype(bytes(block[name_at:data_at]))
    if math.prod(shape) * dt.itemsize != total - data_at:
        raise CorruptionError(
            f"array message: shape {shape} of {dt} is not the {total - data_at} bytes sent"
        )
    data = block[data_at:]
    elements = bytes(data) if flags & READONLY else bytearray(data)
    try:
        return _ndarray(shape, dt, elements, 0, None, "F" if flags & FORTRAN else "C")
    except (ValueError, OverflowError, TypeError) as e:  # a shape past numpy's index range
        raise CorruptionError(f"array message: shape {shape}: {e}") from e
