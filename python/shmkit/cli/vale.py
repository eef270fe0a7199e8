"""``shmkit vale``: look at VALE switches and manage their ports, like netmap's ``vale-ctl``.

``vale list [SWITCH]`` prints each switch's ports with their counters and the MAC table
(``--json`` for all of it); ``vale detach SWITCH:PORT`` detaches a port whoever owns it
(``vale-ctl -d``).
"""

from __future__ import annotations

import argparse
from typing import Any

from shmkit.cli.commands import _print_json, _root, _root_json, command
from shmkit.cli.exits import CliError, Exit
from shmkit.netmap import vale_detach, vale_info, vale_list

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
