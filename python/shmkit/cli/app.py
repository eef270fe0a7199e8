"""The ``shmkit`` command's entry point: parse, run one subcommand, and turn every failure into
one line on stderr and a documented exit code (:class:`shmkit.cli.exits.Exit`)."""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Sequence
from typing import NoReturn

from shmkit._version import __version__
from shmkit.cli import vale as _vale  # noqa: F401  (registers the "vale" commands)
from shmkit.cli.commands import COMMANDS
from shmkit.cli.exits import CliError, Exit, classify

__all__ = ["build_parser", "main"]

#: subcommand groups ("shmkit api show"): name -> help
GROUPS = {
    "api": "look at a binary API: clients and ring stats, ping its server, its definitions",
    "vale": "VALE switches: list ports, counters and learnt addresses; attach a memif "
    "interface; detach a port",
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit code 2), not the usage text."""

    def error(self, message: str) -> NoReturn:
        raise CliError(Exit.USAGE, f"usage: {message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="shmkit",
        description="Look inside shmkit's shared memory, clean up, and run the demo.",
        epilog="Exit codes: " + ", ".join(f"{int(e)} {e.name.lower()}" for e in Exit) + ".",
    )
    parser.add_argument("--version", action="version", version=f"shmkit {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="print the traceback of an error (also: SHMKIT_DEBUG=1)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction[_Parser]] = {}
    for name, cmd in COMMANDS.items():
        group, _, leaf = name.rpartition(" ")
        if group and group not in groups:
            g = sub.add_parser(group, help=GROUPS[group], description=GROUPS[group])
            groups[group] = g.add_subparsers(dest="action", required=True, metavar="ACTION")
        p = (groups[group] if group else sub).add_parser(leaf, help=cmd.help, description=cmd.help)
        cmd.add_arguments(p)
        p.set_defaults(run=cmd.run)
    return parser


def _debug_from_env() -> bool:
    return os.environ.get("SHMKIT_DEBUG", "") not in ("", "0")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``shmkit`` with ``argv`` (default: the process's); returns the exit code."""
    debug = _debug_from_env() or "--debug" in (sys.argv[1:] if argv is None else argv)
    started = time.monotonic()
    try:
        args = build_parser().parse_args(argv)
        return int(args.run(args))
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        print(f"\nshmkit: interrupted after {time.monotonic() - started:.1f} s", file=sys.stderr)
        return Exit.INTERRUPTED
    except BrokenPipeError:
        # Whoever read our output went away (`shmkit regions | head -1`): say nothing more.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return Exit.FAILED
    except Exception as exc:
        code, line = classify(exc)
        if debug:
            traceback.print_exc()
        line = " ".join(line.split())  # one line, whatever the message holds
        if code == Exit.INTERNAL and not debug:
            line += (
                " -- this is a bug in shmkit: rerun with --debug (or SHMKIT_DEBUG=1) for the "
                "traceback, and please report it"
            )
        print(f"shmkit: {line}", file=sys.stderr)
        return code
