"""The ``shmkit`` command: look inside shared memory, clean up, and run the demo.

Subcommands register themselves in :data:`COMMANDS` (name -> (help, add_arguments, run)), so
each component adds its own (``shmkit api show``, ...) without touching the others.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from shmkit.registry import RegionInfo, regions, scan

Command = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]
COMMANDS: dict[str, Command] = {}


def command(
    name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None]
) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    """Register a subcommand."""

    def register(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = (help, add_arguments, run)
        return run

    return register


def human(n: int) -> str:
    """Bytes in binary units: 1536 -> '1.5K'."""
    value = float(n)
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned text table."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def regions_table(infos: Sequence[RegionInfo]) -> str:
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
                pids,
                state,
            ]
        )
    return table(["NAME", "SIZE", "USED", "FREE", "OBJECTS", "CLIENTS", "STATE"], rows)


def _root_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", default=None, help="root namespace (default: shmkit)")
    p.add_argument("--json", action="store_true", help="print JSON")


@command("regions", "list the regions of a root", _root_arg)
def _regions(args: argparse.Namespace) -> int:
    infos = regions(args.root)
    if args.json:
        print(json.dumps([i.as_dict() for i in infos], indent=2))
    elif not infos:
        print(f"no regions under root {args.root or 'shmkit'!r}")
    else:
        print(regions_table(infos))
    return 0


@command("scan", "remove ghost pids and orphaned or stale regions", _root_arg)
def _scan(args: argparse.Namespace) -> int:
    report = scan(args.root)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
        return 0
    for name, pid in report.ghosts:
        print(f"ghost  {name}: pid {pid} is gone, removed from its client table")
    for name, why in report.removed:
        print(f"remove {name}: {why}")
    for name, err in report.errors:
        print(f"error  {name}: {err}")
    if not (report.ghosts or report.removed or report.errors):
        print("nothing to clean up")
    return 1 if report.errors else 0


def _demo_args(p: argparse.ArgumentParser) -> None:
    from shmkit.demo import SCENES

    p.add_argument("scenes", nargs="*", help=f"scenes to run: {', '.join(SCENES)} (default: all)")


@command("demo", "run the tour: real processes using each component", _demo_args)
def _demo(args: argparse.Namespace) -> int:
    from shmkit.demo import run

    return run(args.scenes or None)


def _api_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "action",
        choices=["show", "ping"],
        help="show: clients and ring stats; ping: control_ping round trips",
    )
    p.add_argument("name", help="API name (its region)")
    p.add_argument("--root", default=None, help="root namespace (default: shmkit)")
    p.add_argument("--json", action="store_true", help="print JSON (show)")
    p.add_argument("-n", "--count", type=int, default=10, help="round trips (ping)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the server")


@command("api", "look at a binary API: clients and ring stats, or ping its server", _api_args)
def _api(args: argparse.Namespace) -> int:
    if args.action == "show":
        from shmkit.api.show import describe, format_view

        view = describe(args.name, args.root)
        print(json.dumps(view.as_dict(), indent=2) if args.json else format_view(view))
        return 0 if view.server_alive else 1
    from shmkit.api.client import Client

    with Client.connect(
        args.name, f"shmkit-ping-{os.getpid()}", root=args.root, timeout=args.timeout
    ) as client:
        times = sorted(client.ping(args.timeout) for _ in range(max(1, args.count)))
    us = [t * 1e6 for t in times]
    print(
        f"{len(us)} control_ping round trips to {args.name}: "
        f"min {us[0]:.1f} us, median {us[len(us) // 2]:.1f} us, max {us[-1]:.1f} us"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shmkit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_arguments, _) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        return COMMANDS[args.command][2](args)
    except KeyboardInterrupt:
        print(f"\ninterrupted after {time.monotonic() - started:.1f} s", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
