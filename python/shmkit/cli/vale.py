"""``shmkit vale``: look at VALE switches and manage their ports, like netmap's ``vale-ctl``.

``vale list [SWITCH]`` prints each switch's ports with their counters and the MAC table
(``--json`` for all of it); ``vale detach SWITCH:PORT`` detaches a port whoever owns it
(``vale-ctl -d``); ``vale attach SWITCH:PORT --memif SOCKET`` attaches a memif interface to a
switch (``vale-ctl -a``) and bridges it in the foreground until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import threading
from typing import Any

from shmkit.cli.commands import _print_json, _root, _root_json, command
from shmkit.cli.exits import CliError, Exit
from shmkit.netmap import vale_attach, vale_detach, vale_info, vale_list

__all__: list[str] = []


def _split(name: str) -> tuple[str, str]:
    switch, sep, port = name.partition(":")
    if not sep or not switch.startswith("vale") or not port:
        raise CliError(Exit.USAGE, f"usage: {name!r} is not a VALE port name (valeX:Y)")
    return switch, port


def _list_args(p: argparse.ArgumentParser) -> None:
    _root_json(p)
    p.add_argument("switch", nargs="?", help="one switch (default: every switch)")


def _show(sw: dict[str, Any]) -> None:
    print(
        f"{sw['name']}: {len(sw['ports'])} port(s), {len(sw['macs'])} address(es) learnt, "
        f"age {sw['age_ms'] / 1000:g} s"
    )
    for p in sw["ports"]:
        print(
            f"  {sw['name']}:{p['name']:<12} pid {p['pid']:<8} "
            f"tx {p['tx_packets']} pkts / {p['tx_bytes']} B  rx {p['rx_packets']} pkts / "
            f"{p['rx_bytes']} B  dropped {p['rx_dropped']}  flooded {p['tx_flooded']}  "
            f"bad {p['tx_bad']}"
        )
    for m in sw["macs"]:
        print(f"  {m['mac']} -> {m['port']} (seen {m['age_ms'] / 1000:.1f} s ago)")


@command("vale list", "VALE switches: ports, counters and learnt addresses", _list_args)
def _vale_list(args: argparse.Namespace) -> int:
    switches = [vale_info(args.switch, args.root)] if args.switch else vale_list(args.root)
    if args.json:
        _print_json(switches)
    elif not switches:
        print(f"no VALE switches under root {args.root or 'shmkit'!r}")
    else:
        for sw in switches:
            _show(sw)
    return Exit.OK


def _detach_args(p: argparse.ArgumentParser) -> None:
    _root(p)
    p.add_argument("name", help="the port, SWITCH:PORT (vale0:a)")


@command("vale detach", "detach a port from its switch, whoever owns it", _detach_args)
def _vale_detach(args: argparse.Namespace) -> int:
    switch, port = _split(args.name)
    if not vale_detach(switch, port, args.root):
        raise CliError(Exit.NOT_FOUND, f"{args.name}: no such port")
    print(f"detached {args.name}")
    return Exit.OK


def _attach_args(p: argparse.ArgumentParser) -> None:
    _root_json(p)
    p.add_argument("name", help="the port to create, SWITCH:PORT (vale0:m)")
    p.add_argument("--memif", required=True, metavar="SOCKET", help="memif control socket")
    p.add_argument("--role", choices=("client", "server"), default="client", help="memif role")
    p.add_argument("--id", type=int, default=0, help="memif interface id")
    p.add_argument("--secret", default=None, help="memif shared secret")
    p.add_argument("--rings", type=int, default=1, help="memif queue pairs")


@command(
    "vale attach",
    "attach a memif interface to a switch and bridge it until SIGINT/SIGTERM",
    _attach_args,
)
def _vale_attach(args: argparse.Namespace) -> int:
    from shmkit.memif import Interface

    _split(args.name)
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with Interface(
            args.memif, role=args.role, id=args.id, secret=args.secret, rings=args.rings
        ) as iface:
            port = vale_attach(args.name, iface, root=args.root)
            try:
                if not args.json:
                    print(
                        f"attached {args.name} to memif {args.memif} ({args.role}); "
                        "SIGINT or SIGTERM detaches it",
                        flush=True,
                    )
                while not stop.wait(0.5) and port.running:
                    pass
                error = port.error
            finally:
                port.close()
            stats = port.stats()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    if args.json:
        _print_json({"name": args.name, "memif": args.memif, "error": error, **stats})
    else:
        print(
            f"detached {args.name}: {stats['from_memif']} packets from memif, "
            f"{stats['to_memif']} to memif ({stats['to_memif_dropped']} dropped)"
        )
    if error is not None:
        raise CliError(Exit.FAILED, f"{args.name}: the bridge stopped: {error}")
    return Exit.OK
