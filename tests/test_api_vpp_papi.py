"""Acceptance with a client nobody here wrote: stock ``vpp_papi`` (PyPI) talks to a shmkit
server over VPP's socket transport, each side in its own process. Definitions learned from
the server (``bootstrapapi=True``: ``get_api_json``) or from ``.api.json`` files the server
exported; requests, a variable-length message, a dump, events after a ``want_*``
registration, disconnect and reconnect, the asyncio client (``vpp_papi_async``), and a
killed client reaped.

vpp_papi is an optional peer: the tests skip without it (locally), and fail when ``CI`` is
set (it is in the ``test`` extra)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from procs import kill9, python, wait_line, wait_until
from shmkit.api import Client, memclnt
from shmkit.api.show import describe
from test_api_sock import start_sock_server

try:
    import vpp_papi  # noqa: F401

    HAVE_PAPI = True
except ImportError:  # pragma: no cover - the test extra installs it
    HAVE_PAPI = False
    if os.environ.get("CI"):
        raise

pytestmark = pytest.mark.skipif(not HAVE_PAPI, reason="vpp_papi is not installed")


@pytest.fixture
def sock(tmp_path: Path) -> Path:
    return tmp_path / "api.sock"


@pytest.fixture
def server(root: str, sock: Path) -> Iterator[subprocess.Popen[str]]:
    proc = start_sock_server(root, sock)
    yield proc
    if proc.poll() is None:
        kill9(proc)


def counters(root: str) -> dict[str, int]:
    return describe("api", root).counters


def run(code: str, *args: str) -> str:
    """Run a vpp_papi client in its own process; its stderr on failure."""
    child = python(code, *args)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, f"vpp_papi client failed:\n{err}"
    return out


SYNC_SESSION = """
import os, sys, threading, time
from vpp_papi import VPPApiClient
kw = eval(sys.argv[2])
v = VPPApiClient(server_address=sys.argv[1], **kw)
for round in range(2):  # connect, use, disconnect; then reconnect with the same object
    assert v.connect(f"papi{round}") == 0
    assert v.api.echo(x=41 + round).x == 41 + round
    r = v.api.sum(n=3, items=[1, 2, 3])
    assert (r.total, list(r.items)) == (6, [1, 2, 3])
    assert v.api.control_ping().retval == 0
    details = v.api.thing_dump(count=5)
    assert [d.name for d in details] == [f"thing{i}" for i in range(5)], details
    assert len(v.api.thing_dump(count=3000)) == 3000
    assert v.api.thing_dump(count=0) == []
    events = []
    got = threading.Event()
    def on_event(name, msg):
        events.append((name, msg.seq))
        if len(events) == 3:
            got.set()
    v.register_event_callback(on_event)
    assert v.api.want_ticks(enable_disable=1, pid=os.getpid()).retval == 0
    assert v.api.tick(count=3).sent == 3
    assert got.wait(10), events
    assert events == [("tick_event", i) for i in range(3)], events
    v.register_event_callback(None)
    assert v.api.want_ticks(enable_disable=0, pid=os.getpid()).retval == 0
    assert v.disconnect().response == 0
print("ok")
"""


def test_vpp_papi_bootstraps_from_the_server(
    root: str, sock: Path, server: subprocess.Popen[str]
) -> None:
    assert run(SYNC_SESSION, str(sock), "{'bootstrapapi': True}").strip() == "ok"
    wait_until(lambda: counters(root)["deregistrations"] == 2, what="published counters")
    assert (counters(root)["registrations"], counters(root)["reaped"]) == (2, 0)


#: What any VPP install's ip_types.api.json defines and vpp_papi insists on finding when it
#: loads definition files (VppEnum.vl_api_address_family_t, checked at construction).
IP_TYPES = {
    "types": [],
    "messages": [],
    "unions": [],
    "enums": [["address_family", ["ADDRESS_IP4", 0], ["ADDRESS_IP6", 1], {"enumtype": "u8"}]],
    "enumflags": [],
    "services": {},
    "options": {"version": "3.0.0"},
    "aliases": {},
    "vl_api_version": "0x1",
    "imports": [],
}


def test_vpp_papi_with_exported_api_files(
    root: str, sock: Path, server: subprocess.Popen[str], tmp_path: Path
) -> None:
    # The server's definitions, exported as VPP's .api.json modules (one file each).
    with Client.connect("api", "exporter", socket=sock) as c:
        modules = json.loads(c.call(memclnt.GetApiJson()).json)
    files = []
    for i, module in enumerate([*modules, IP_TYPES]):
        path = tmp_path / f"m{i}.api.json"
        path.write_text(json.dumps(module))
        files.append(str(path))
    assert len(modules) >= 2  # memclnt and the server's own
    assert run(SYNC_SESSION, str(sock), repr({"apifiles": files})).strip() == "ok"


def test_vpp_papi_async(root: str, sock: Path, server: subprocess.Popen[str]) -> None:
    out = run(
        """
        import asyncio, os, sys
        from vpp_papi.vpp_papi_async import VPPApiClient

        async def main():
            v = VPPApiClient(server_address=sys.argv[1])
            events = asyncio.Queue()
            assert await v.connect("async", events) == 0
            r = await v.api.echo(x=7)
            assert r.x == 7
            replies = await asyncio.gather(*[v.api.echo(x=i) for i in range(200)])
            assert [r.x for r in replies] == list(range(200))
            close, details = await v.api.thing_dump(count=4)
            assert type(close).__name__ == "control_ping_reply" and close.retval == 0
            assert [d.id for d in details] == [0, 1, 2, 3]
            assert (await v.api.want_ticks(enable_disable=1, pid=os.getpid())).retval == 0
            assert (await v.api.tick(count=2)).sent == 2
            got = [await asyncio.wait_for(events.get(), 10) for _ in range(2)]
            assert [(type(e).__name__, e.seq) for e in got] == [("tick_event", i) for i in (0, 1)]
            assert (await v.disconnect()).response == 0
            print("ok")

        asyncio.run(main())
        """,
        str(sock),
    )
    assert out.strip() == "ok"
    wait_until(lambda: counters(root)["deregistrations"] == 1, what="deregistered")


def test_killed_vpp_papi_client_is_reaped(
    root: str, sock: Path, server: subprocess.Popen[str]
) -> None:
    child = python(
        """
        import sys
        from vpp_papi import VPPApiClient
        v = VPPApiClient(server_address=sys.argv[1], bootstrapapi=True)
        v.connect("doomed")
        assert v.api.echo(x=1).x == 1
        print("connected", file=sys.stderr, flush=True)
        sys.stdin.readline()
        """,
        str(sock),
    )
    try:
        wait_line(child, "connected")
        wait_until(lambda: counters(root)["registrations"] == 1, what="registered")
    finally:
        kill9(child)
    wait_until(lambda: counters(root)["reaped"] == 1, what="reaped at EOF")
    # The server goes on serving.
    assert run(SYNC_SESSION, str(sock), "{'bootstrapapi': True}").strip() == "ok"
