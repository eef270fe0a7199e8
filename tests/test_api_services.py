"""Services as VPP defines them, with real processes: dumps (details closed by a
control_ping_reply, the VPP client's own terminator ping, streams larger than the client's
queue, failing handlers, concurrent dumps), events after a ``want_*`` registration, event
callbacks and iteration, registration callbacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from api_defs import Echo
from procs import TESTS_DIR, kill9, wait_line, wait_until
from services_defs import (
    Registered,
    ThingDetails,
    ThingDump,
)
from shmkit.api import memclnt
from shmkit.api.client import Client
from shmkit.api.services import STREAM_ABORTED
from shmkit.api.show import describe
from shmkit.errors import ShmkitError


def start_services_server(name: str, root: str, **kw: object) -> subprocess.Popen[str]:
    """Start ``tests/services_defs.py`` in its own process and wait until it serves."""
    proc = subprocess.Popen(
        [sys.executable, os.path.join(TESTS_DIR, "services_defs.py"), name, root, json.dumps(kw)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": TESTS_DIR},
    )
    wait_line(proc, "ready", stream="stdout")
    return proc


@pytest.fixture
def server(root: str) -> Iterator[subprocess.Popen[str]]:
    proc = start_services_server("svc", root)
    yield proc
    if proc.poll() is None:
        kill9(proc)


def connect(root: str, name: str = "c", **kw: object) -> Client:
    return Client.connect("svc", name, root=root, timeout=10, **kw)  # type: ignore[arg-type]


def drain_registered(c: Client) -> None:
    """The server's on_register callback greets every client with one event."""
    ev = c.recv(timeout=5)
    assert type(ev) is Registered and ev.handle == int(c.handle)


# ---------------------------------------------------------------- dumps


def test_dump_empty_and_1000(root: str, server: subprocess.Popen[str]) -> None:
    with connect(root) as c:
        drain_registered(c)
        assert c.dump(ThingDump(count=0)) == []
        things = c.dump(ThingDump(count=1000), timeout=20)
        assert [type(t) for t in things] == [ThingDetails] * 1000
        assert [(t.seq, t.name) for t in things] == [(i, f"thing{i}") for i in range(1000)]
        assert len({t.context for t in things}) == 1 and things[0].context != 0
        # Nothing else came: no second control_ping_reply, no stray detail.
        with pytest.raises(TimeoutError):
            c.recv(timeout=0.2)
        assert c.call(Echo(x=5)).x == 5


def test_dump_larger_than_the_client_queue(root: str, server: subprocess.Popen[str]) -> None:
    """The stream pauses while the client's queue is full and resumes as it reads: nothing
    is dropped, and the server never blocks (another client is served meanwhile)."""
    with connect(root, queue_capacity=32) as c, connect(root, "other") as other:
        things = c.dump(ThingDump(count=5000), timeout=30)
        assert [t.seq for t in things] == list(range(5000))
        assert other.call(Echo(x=1)).x == 1
    assert describe("svc", root).counters["dropped_sends"] == 0


def test_vpp_client_terminator_ping(root: str, server: subprocess.Popen[str]) -> None:
    """vpp_papi's flow: the dump, then a control_ping with the dump's context; the stream
    ends with exactly one control_ping_reply, after every detail, also when the ping
    arrives while the stream is paused on a full queue."""
    with connect(root, queue_capacity=16, keepalive_thread=False) as c:
        drain_registered(c)
        for count in (3, 200):
            ctx = c.send(ThingDump(count=count))
            ping = memclnt.ControlPing()
            ping.context = ctx
            c._send_bytes(c._encode(ping), time.monotonic() + 5)
            got = [c.recv(timeout=5) for _ in range(count + 1)]
            assert [type(m) for m in got] == [ThingDetails] * count + [memclnt.ControlPingReply]
            assert {m.context for m in got} == {ctx} and got[-1].retval == 0
            with pytest.raises(TimeoutError):
                c.recv(timeout=0.2)
        # A ping with another context is answered as always.
        assert c.call(memclnt.ControlPing()).retval == 0


def test_dump_handler_raises_mid_stream(root: str, server: subprocess.Popen[str]) -> None:
    with connect(root) as c:
        before = describe("svc", root).counters["handler_errors"]
        with pytest.raises(ShmkitError, match="retval -1") as err:
            c.dump(ThingDump(count=1000, fail_at=500))
        assert [t.seq for t in err.value.details] == list(range(500))  # type: ignore[attr-defined]
        assert err.value.retval == -1  # type: ignore[attr-defined]
        assert describe("svc", root).counters["handler_errors"] == before + 1
        # The server goes on.
        assert len(c.dump(ThingDump(count=10))) == 10


def test_concurrent_dumps_from_threads(root: str, server: subprocess.Popen[str]) -> None:
    errors: list[BaseException] = []
    with connect(root, queue_capacity=256) as c:

        def dumper(k: int) -> None:
            try:
                for n in (k * 37 % 300, 1000, 0, k):
                    assert [t.seq for t in c.dump(ThingDump(count=n), timeout=30)] == list(range(n))
            except BaseException as exc:
                errors.append(exc)

        def caller() -> None:
            try:
                replies = c.call_many([Echo(x=i) for i in range(3000)], timeout=30, window=64)
                assert [r.x for r in replies] == list(range(3000))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=dumper, args=(k,)) for k in range(6)]
        threads.append(threading.Thread(target=caller))
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors


def test_stream_abandoned_when_the_client_stops_reading(root: str) -> None:
    proc = start_services_server("svc", root, stream_stall=0.3)
    try:
        with connect(root, queue_capacity=16, keepalive_thread=False) as c:
            drain_registered(c)
            ctx = c.send(ThingDump(count=1000))
            wait_until(
                lambda: describe("svc", root).counters["dropped_sends"] == 1,
                what="the stalled stream abandoned",
            )
            # A stream fills at most half the queue, one slot of it for the close.
            got = [c.recv(timeout=5) for _ in range(8)]
            assert [m.seq for m in got[:7]] == list(range(7))
            assert type(got[7]) is memclnt.ControlPingReply and got[7].context == ctx
            assert got[7].retval == STREAM_ABORTED
            with pytest.raises(TimeoutError):
                c.recv(timeout=0.2)
            assert [t.seq for t in c.dump(ThingDump(count=100))] == list(range(100))
    finally:
        kill9(proc)
