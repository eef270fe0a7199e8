"""The subcommands of ``shmkit``: each registers itself in :data:`COMMANDS` with its
arguments, so a component adds its own without touching the others.

Read commands print a table (or ``--json``); user errors are raised (``CliError`` or the
library's own exceptions) and become one line and an exit code in :mod:`shmkit.cli.app`.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shmkit._format import octal, regions_table
from shmkit.cli.exits import CliError, Exit
from shmkit.registry import regions, remove, scan

if TYPE_CHECKING:
    from shmkit.api.client import Client
    from shmkit.api.show import ApiView

__all__ = ["COMMANDS", "Command", "command"]

Run = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Command:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Run


#: name -> command; a name with a space ("api show") is a subcommand of its first word
COMMANDS: dict[str, Command] = {}


def command(
    name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None]
) -> Callable[[Run], Run]:
    """Register a subcommand."""

    def register(run: Run) -> Run:
        COMMANDS[name] = Command(help, add_arguments, run)
        return run

    return register


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def _root(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", default=None, help="root namespace (default: shmkit)")


def _json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON")


def _root_json(p: argparse.ArgumentParser) -> None:
    _root(p)
    _json(p)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, not {text}")
    return value


# ---------------------------------------------------------------------------- regions


@command("regions", "list the regions of a root", _root_json)
def _regions(args: argparse.Namespace) -> int:
    infos = regions(args.root)
    if args.json:
        rows = []
        for info in infos:
            d = info.as_dict()
            d["mode"] = octal(info.mode)
            rows.append(d)
        _print_json(rows)
    elif not infos:
        print(f"no regions under root {args.root or 'shmkit'!r}")
    else:
        print(regions_table(infos))
    return Exit.OK


def _scan_args(p: argparse.ArgumentParser) -> None:
    _root_json(p)
    p.add_argument("-n", "--dry-run", action="store_true", help="only say what would be removed")


@command("scan", "remove ghost pids and orphaned or stale regions", _scan_args)
def _scan(args: argparse.Namespace) -> int:
    report = scan(args.root, dry_run=args.dry_run)
    code = Exit.FAILED if report.errors else Exit.OK
    if args.json:
        _print_json(report.as_dict())
        return code
    dropped, remove = ("would drop", "would remove") if report.dry_run else ("dropped", "remove")
    for name, pid in report.ghosts:
        print(f"ghost  {name}: pid {pid} is gone, {dropped} it from its client table")
    for name, why in report.removed:
        print(f"{remove} {name}: {why}")
    for name, err in report.errors:
        print(f"error  {name}: {err}")
    if not (report.ghosts or report.removed or report.errors):
        print("nothing to clean up")
    return code


def _rm_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="region name")
    _root_json(p)
    p.add_argument(
        "-f",
        "--force",
        action="store_true",
        help="remove it even if live processes map it (they keep their memory), or if it is "
        "not a region of this version",
    )


@command("rm", "remove a region of your own (refused while live processes map it)", _rm_args)
def _rm(args: argparse.Namespace) -> int:
    try:
        removal = remove(args.name, args.root, force=args.force)
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            raise
        raise CliError(Exit.BUSY, f"{exc.strerror}; --force removes it") from exc
    if args.json:
        _print_json(removal.as_dict())
    else:
        still = (
            f" (still mapped by pid {', '.join(map(str, removal.live_clients))})"
            if removal.live_clients
            else ""
        )
        print(f"removed {removal.path}{still}")
    return Exit.OK


# ---------------------------------------------------------------------------- demo


def _demo_args(p: argparse.ArgumentParser) -> None:
    from shmkit.demo import SCENES

    p.add_argument("scenes", nargs="*", help=f"scenes to run: {', '.join(SCENES)} (default: all)")


@command("demo", "run the tour: real processes using each component", _demo_args)
def _demo(args: argparse.Namespace) -> int:
    from shmkit.demo import SCENES, run

    unknown = [n for n in args.scenes if n not in SCENES]
    if unknown:
        raise CliError(
            Exit.USAGE, f"unknown scene(s) {', '.join(unknown)}; choose from {', '.join(SCENES)}"
        )
    return run(args.scenes or None)


# ---------------------------------------------------------------------------- api


def _api_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="API name (its region)")
    _root_json(p)


def _api_show_args(p: argparse.ArgumentParser) -> None:
    _api_common(p)


@command("api show", "clients, health, queue lengths and ring stats of an API", _api_show_args)
def _api_show(args: argparse.Namespace) -> int:
    from shmkit.api.show import describe, format_view

    view = describe(args.name, args.root)
    if args.json:
        _print_json(view.as_dict())
    else:
        print(format_view(view))
    if not view.server_alive:
        raise CliError(
            Exit.SERVER_DOWN, f"API {args.name!r}: server pid {view.server_pid} is not running"
        )
    return Exit.OK


def _api_ping_args(p: argparse.ArgumentParser) -> None:
    _api_common(p)
    p.add_argument("-n", "--count", type=_positive_int, default=10, help="round trips (10)")
    p.add_argument(
        "--timeout", type=_seconds, default=5.0, help="seconds to connect and per round trip (5)"
    )


def _api_json_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="API name (its region)")
    _root(p)
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE (default: stdout)")
    p.add_argument(
        "--array",
        action="store_true",
        help="one module per entry, as get_api_json returns them (default: one module, "
        "as an .api.json file)",
    )
    p.add_argument(
        "--timeout", type=_seconds, default=5.0, help="seconds to connect and to answer (5)"
    )


def _connect_live(args: argparse.Namespace, what: str) -> tuple[ApiView, Client]:
    """The API's view and a client of its server: a server that is not running is said at
    once (from the shared state), not after a connect timeout."""
    from shmkit.api.client import Client
    from shmkit.api.show import describe

    view = describe(args.name, args.root)
    if not view.server_alive:
        raise CliError(
            Exit.SERVER_DOWN, f"API {args.name!r}: server pid {view.server_pid} is not running"
        )
    client = Client.connect(
        args.name, f"shmkit-{what}-{os.getpid()}", root=args.root, timeout=args.timeout
    )
    return view, client


@command("api json", "the message definitions of an API server, as VPP's .api.json", _api_json_args)
def _api_json(args: argparse.Namespace) -> int:
    from shmkit.api import apijson

    _, client = _connect_live(args, "json")
    with client:
        modules = client.api_json(args.timeout)
    text = json.dumps(modules if args.array else apijson.merge(modules), indent=2) + "\n"
    if args.output is None:
        print(text, end="")
    else:
        with open(args.output, "w") as f:
            f.write(text)
    return Exit.OK


@command("api ping", "control_ping round trips to an API server", _api_ping_args)
def _api_ping(args: argparse.Namespace) -> int:
    view, client = _connect_live(args, "ping")
    with client:
        times = [client.ping(args.timeout) for _ in range(args.count)]
    us = sorted(t * 1e6 for t in times)
    summary = {"min_us": us[0], "median_us": us[len(us) // 2], "max_us": us[-1]}
    if args.json:
        _print_json(
            {
                "name": args.name,
                "server_pid": view.server_pid,
                "count": len(us),
                **{k: round(v, 3) for k, v in summary.items()},
                "round_trips_us": [round(t * 1e6, 3) for t in times],
            }
        )
    else:
        print(
            f"{len(us)} control_ping round trips to {args.name}: "
            f"min {summary['min_us']:.1f} us, median {summary['median_us']:.1f} us, "
            f"max {summary['max_us']:.1f} us"
        )
    return Exit.OK
