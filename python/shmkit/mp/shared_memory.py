"""``shmkit.mp.SharedMemory``: the stdlib's ``multiprocessing.shared_memory.SharedMemory``
shape, with a lifetime rule that neither unlinks a segment early nor leaks one.

Who removes a segment
---------------------
* ``unlink()``, from any process, removes the name at once (processes that have it mapped
  keep their memory, as with POSIX shared memory). A second ``unlink()`` raises
  ``FileNotFoundError``, as the stdlib's does.
* Without ``unlink()``, the segment is removed when its last user is gone: the last
  ``close()`` (or garbage collection of the last handle, or the exit of the last process that
  has it open) removes it — the rule the stdlib follows on Windows. So keep a handle open
  until the process you hand the name to has attached it.
* A process that dies (even by ``SIGKILL``) counts as gone: the next ``close()`` of a survivor
  removes the segment if that survivor was the last, and a segment whose users *all* died is
  removed by the next ``SharedMemory(...)`` made in any process of the same user (it sweeps
  the ``shmkit_mp`` root), or by ``shmkit scan --root shmkit_mp``.
* There is no resource tracker: a process that attaches and exits never takes the segment
  with it (the stdlib's tracker did before Python 3.13), and a creator that exits while
  others use the segment leaves it to them.
* ``track=False`` (as in Python 3.13) turns the automatic removal off: the segment then
  persists until someone calls ``unlink()`` (or ``shmkit rm``).

A segment is a shmkit region (``/dev/shm/shmkit_mp-<name>``) holding one object, ``buf``;
``.buf`` is a memoryview of that object's bytes, so it is not interchangeable by name with
the stdlib's segments. Processes are tracked by pid and start time, so a reused pid is never
taken for a live user. A child made by ``fork`` shares its parent's handle but is not a user
of its own: it should attach by name (or receive the object pickled, which attaches).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from typing import Any

from shmkit._native import OutOfMemoryError, Region
from shmkit.registry import scan

__all__ = ["ROOT", "SharedMemory"]

#: The root namespace of every ``shmkit.mp`` segment (files ``/dev/shm/shmkit_mp-<name>``).
ROOT = "shmkit_mp"
_OBJECT = "buf"


def _region_size(size: int) -> int:
    """Bytes of region that hold an object of ``size`` bytes: the region's header, client
    table and directory (about 40 KiB) and the heap's size-class granularity (under 1/32 of
    the size). The file is sparse: pages never touched cost nothing."""
    return size + size // 16 + (128 << 10)


class SharedMemory:
    """A named block of shared memory, as ``multiprocessing.shared_memory.SharedMemory``.

    ``SharedMemory(create=True, size=n)`` makes a new segment (a random name unless ``name``
    is given; ``FileExistsError`` if it exists); ``SharedMemory(name)`` attaches an existing
    one (``FileNotFoundError`` if there is none; ``size`` is then ignored). See the module
    for who removes a segment and when."""

    _region: Region | None
    _buf: memoryview | None

    def __init__(
        self,
        name: str | None = None,
        create: bool = False,
        size: int = 0,
        *,
        track: bool = True,
    ) -> None:
        self._region = None
        self._buf = None
        if not size >= 0:
            raise ValueError("'size' must be a positive integer")
        if create:
            if size == 0:
                raise ValueError("'size' must be a positive number different from zero")
            _sweep()
        if name is None and not create:
            raise ValueError("'name' can only be None if create=True")
        self._track = track
        if create:
            self._region, offset = _create(name, size, track)
        else:
            assert name is not None
            self._region = Region.open(_strip(name), root=ROOT)
            try:
                obj = self._region.find_object(_OBJECT)
            except BaseException:
                self._region.close()
                raise
            offset, size = int(obj["offset"]), int(obj["size"])
        self._name = self._region.name or ""
        self._path = os.fspath(self._region.path or "")
        st = os.fstat(self._region.fileno())
        self._ident = (st.st_dev, st.st_ino)
        self._unlinked = False
        self._size = size
        self._buf = self._region.buffer(offset, size)

    @property
    def buf(self) -> memoryview | None:
        """A writable memoryview of the segment's bytes (``None`` after ``close()``)."""
        return self._buf

    @property
    def name(self) -> str:
        """The name to attach the segment by, in any process of the same user."""
        return self._name

    @property
    def size(self) -> int:
        """Size of the segment in bytes."""
        return self._size

    def close(self) -> None:
        """Stop using the segment in this handle (idempotent). The last user's ``close()``
        removes it unless it was made with ``track=False``. Objects still built on ``buf``
        (numpy arrays, slices) stay valid: the mapping lives as long as they do."""
        if self._buf is not None:
            # Views exported from buf keep the mapping alive; they stay valid.
            with contextlib.suppress(BufferError):
                self._buf.release()
            self._buf = None
        region, self._region = self._region, None
        if region is not None:
            # Dead users do not count: drop them first, so the last live user's close removes it.
            try:
                region.scan_ghosts()
            finally:
                region.close()

    def unlink(self) -> None:
        """Remove the segment's name now (from any process): no one can attach it any more,
        while everyone who has it mapped keeps using it. ``FileNotFoundError`` if someone
        already unlinked it. After ``close()`` (the stdlib's ``close(); unlink()`` order) it
        is quiet when the close itself removed the segment as its last user."""
        if self._unlinked:
            raise FileNotFoundError(errno.ENOENT, "already unlinked", self._path)
        if self._region is not None:
            self._region.unlink()
        else:
            # Only the very file this handle had: the name may have been reused since.
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(self._path)
                if (st.st_dev, st.st_ino) == self._ident:
                    os.unlink(self._path)
        self._unlinked = True

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self._name, False, self._size))

    def __enter__(self) -> SharedMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # Best effort on garbage collection: a handle dropped without close() is closed.
        with contextlib.suppress(Exception):  # the interpreter may be shutting down
            self.close()

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self._name!r}, size={self._size})"


def _strip(name: str) -> str:
    # The stdlib's POSIX names carry a leading slash ("/psm_..."); ours are region names.
    return name[1:] if name.startswith("/") else name


def _create(name: str | None, size: int, track: bool) -> tuple[Region, int]:
    while True:
        place = _strip(name) if name is not None else f"psm_{secrets.token_hex(8)}"
        try:
            region = Region.create(place, _region_size(size), root=ROOT, auto_unlink=track)
        except FileExistsError:
            if name is not None:
                raise
            continue  # a random name taken: draw another
        try:
            return region, region.create_object(_OBJECT, size)
        except OutOfMemoryError as e:  # pragma: no cover - _region_size leaves room
            region.unlink()
            region.close()
            raise OutOfMemoryError(f"no room for {size} bytes in a region of {region.size}") from e
        except BaseException:
            region.unlink()
            region.close()
            raise


def _sweep() -> None:
    """Remove segments whose users all died (none closed them): they would leak otherwise."""
    scan(ROOT)
