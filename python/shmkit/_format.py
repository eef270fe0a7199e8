"""Plain-text rendering shared by the ``shmkit`` command and the demo (no other imports, so
neither depends on the other)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shmkit.registry import RegionInfo

__all__ = ["human", "octal", "regions_table", "table"]


def human(n: int) -> str:
    """Bytes in binary units: 1536 -> '1.5K'."""
    value = float(n)
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def octal(mode: int) -> str:
    """Permission bits as Python writes them: 384 -> '0o600'."""
    return f"{mode:#o}"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned text table."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def regions_table(infos: Sequence[RegionInfo]) -> str:
    """The ``shmkit regions`` table."""
    rows = []
    for r in infos:
        pids = ",".join(f"{c.pid}{'' if c.alive else '(dead)'}" for c in r.clients) or "-"
        state = r.state if not r.detail else f"{r.state}: {r.detail}"
        rows.append(
            [
                r.name,
                human(r.size),
                human(r.used_bytes),
                human(r.free_bytes),
                r.objects,
                r.uid,
                octal(r.mode),
                pids,
                state,
            ]
        )
    headers = ["NAME", "SIZE", "USED", "FREE", "OBJECTS", "UID", "MODE", "CLIENTS", "STATE"]
    return table(headers, rows)
