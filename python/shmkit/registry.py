"""The registry: which regions exist, and the janitor that cleans up after dead processes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shmkit import _native

__all__ = ["ClientInfo", "RegionInfo", "Removal", "ScanReport", "regions", "remove", "scan"]


@dataclass(frozen=True)
class ClientInfo:
    """A process that has a region mapped."""

    pid: int
    refs: int
    start_time: int
    alive: bool


@dataclass(frozen=True)
class RegionInfo:
    """One file of a root in ``/dev/shm``, as seen without any server."""

    root: str
    name: str
    path: str
    #: ``ready``, ``initialising``, ``stale``, ``invalid``, ``other-version`` or ``inaccessible``
    state: str
    detail: str
    size: int
    used_bytes: int
    free_bytes: int
    clients: tuple[ClientInfo, ...]
    objects: int
    creator_pid: int
    created_ns: int
    uid: int
    mode: int

    @property
    def client_pids(self) -> list[int]:
        return [c.pid for c in self.clients]

    @classmethod
    def _from_native(cls, d: dict[str, Any]) -> RegionInfo:
        clients = tuple(ClientInfo(**c) for c in d.pop("clients"))
        return cls(clients=clients, **d)

    def as_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["clients"] = [c.__dict__ for c in self.clients]
        return d


@dataclass(frozen=True)
class ScanReport:
    """What :func:`scan` removed (or, in a dry run, would remove)."""

    #: ``(region name, pid)`` of dead client processes dropped from client tables
    ghosts: tuple[tuple[str, int], ...]
    #: ``(region name, reason)`` of regions removed (all clients dead, or never initialised)
    removed: tuple[tuple[str, str], ...]
    #: ``(region name, error)`` of regions that could not be scanned
    errors: tuple[tuple[str, str], ...]
    #: whether nothing was changed: ``ghosts`` and ``removed`` say what a real scan would do
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "ghosts": [list(g) for g in self.ghosts],
            "removed": [list(r) for r in self.removed],
            "errors": [list(e) for e in self.errors],
            "dry_run": self.dry_run,
        }


@dataclass(frozen=True)
class Removal:
    """What :func:`remove` removed."""

    name: str
    #: the file that was unlinked
    path: str
    #: the state it was in (as :attr:`RegionInfo.state`) and why, for a damaged one
    state: str
    detail: str
    #: live processes that still map it (only with ``force``): they keep their memory
    live_clients: tuple[int, ...]

    def as_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["live_clients"] = list(self.live_clients)
        return d


def regions(root: str | None = None) -> list[RegionInfo]:
    """List the regions of ``root`` (default root if ``None``), read-only, without a server."""
    return [RegionInfo._from_native(d) for d in _native.list_regions(root)]


def scan(root: str | None = None, *, dry_run: bool = False) -> ScanReport:
    """Remove ghost client pids, regions whose clients all died, and regions whose creator
    died before they were ready. Files that are not shmkit regions are never touched, nor are
    other users' files (each is noted in ``errors``). With ``dry_run=True`` nothing changes:
    the report says what would be removed."""
    d = _native.scan_root(root, dry_run)
    return ScanReport(
        ghosts=tuple((n, p) for n, p in d["ghosts"]),
        removed=tuple((n, r) for n, r in d["removed"]),
        errors=tuple((n, e) for n, e in d["errors"]),
        dry_run=bool(d["dry_run"]),
    )


def remove(name: str, root: str | None = None, *, force: bool = False) -> Removal:
    """Unlink the region ``name`` of ``root`` (a region persists until someone does: an API
    server's region survives its ``close()``). Only your own files are removed
    (``PermissionError`` otherwise); ``FileNotFoundError`` if there is none. Without
    ``force``, a region that live processes map or are still creating raises ``OSError``
    with ``errno.EBUSY`` (naming them), and a file that is not a region of this version raises
    ``NotARegionError`` / ``VersionMismatchError``. With ``force`` it goes all the same:
    processes that map it keep their memory until they close it; the name is free at once."""
    d = _native.remove_region(name, root, force)
    return Removal(
        name=d["name"],
        path=d["path"],
        state=d["state"],
        detail=d["detail"],
        live_clients=tuple(d["live_clients"]),
    )
