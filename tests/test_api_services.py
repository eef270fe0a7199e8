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
from procs import TESTS_DIR, finish, kill9, python, wait_line, wait_until
from services_defs import (
    Publish,
    Registered,
    ThingDetails,
    ThingDump,
    ThingEvent,
    ThingGet,
    ThingGetReply,
    WantThingEvents,
    WantThingEventsReply,
)
from shmkit.api import memclnt
from shmkit.api.client import Client, RawMessage, ServerGoneError, ServerRestartedError
from shmkit.api.services import STREAM_ABORTED
from shmkit.api.show import describe
from shmkit.errors import ShmkitError

#: Messages are compared by definition (name and CRC): another test module may define the
#: same message again (e.g. from VPP's .api.json), and the last definition decodes.
PING_REPLY = memclnt.ControlPingReply._name_crc


def names(msg: object) -> str:
    return type(msg)._name_crc  # type: ignore[attr-defined, no-any-return]


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


def test_stream_closed_by_a_reply(root: str, server: subprocess.Popen[str]) -> None:
    """VPP's stream_msg services: details, then the reply (the generator's return value)."""
    with connect(root, queue_capacity=64) as c:
        drain_registered(c)
        reply, things = c.dump(ThingGet(count=500, cursor=2), reply=ThingGetReply)
        assert type(reply) is ThingGetReply and reply.retval == 0 and reply.cursor == 500
        assert [t.seq for t in things] == list(range(2, 500))
        assert c.dump(ThingGet(count=3, cursor=3), reply=ThingGetReply)[1] == []
        with pytest.raises(ShmkitError, match="retval -1"):
            c.dump(ThingGet(count=3, cursor=4), reply=ThingGetReply)
        # Its context gets no terminator treatment: a ping with it is answered as always.
        ctx = c.send(ThingGet(count=2, cursor=0))
        ping = memclnt.ControlPing()
        ping.context = ctx
        c._send_bytes(c._encode(ping), time.monotonic() + 5)
        got = [c.recv(timeout=5) for _ in range(4)]
        assert [names(m) for m in got] == [
            ThingDetails._name_crc,
            ThingDetails._name_crc,
            ThingGetReply._name_crc,
            PING_REPLY,
        ]
        with pytest.raises(TimeoutError):
            c.recv(timeout=0.2)


def test_dump_iter_and_abandoned_dumps(root: str, server: subprocess.Popen[str]) -> None:
    with connect(root, queue_capacity=64) as c:
        drain_registered(c)
        it = c.dump_iter(ThingDump(count=3000), timeout=5)
        assert [t.seq for t in it] == list(range(3000))
        with pytest.raises(ShmkitError, match="retval -1"):
            for t in c.dump_iter(ThingDump(count=100, fail_at=50)):
                assert t.seq < 50
        # Stopped early, or timed out: the rest of the stream is dropped, not queued as events.
        for t in c.dump_iter(ThingDump(count=1000)):
            if t.seq == 10:
                break
        with pytest.raises(TimeoutError):
            c.dump(ThingDump(count=1000), timeout=0.01)
        assert c.call(Echo(x=1), timeout=30).x == 1
        assert len(c.dump(ThingDump(count=5))) == 5
        wait_until(lambda: not c._abandoned, 30, "the abandoned streams closed")
        with pytest.raises(TimeoutError):
            c.recv(timeout=0.2)


def test_dump_larger_than_the_client_queue(root: str, server: subprocess.Popen[str]) -> None:
    """The stream pauses while the client's queue is full and resumes as it reads: nothing
    is dropped, and the server never blocks (another client is served meanwhile)."""
    with connect(root, queue_capacity=32) as c, connect(root, "other") as other:
        things = c.dump(ThingDump(count=5000), timeout=30)
        assert [t.seq for t in things] == list(range(5000))
        assert other.call(Echo(x=1)).x == 1
    assert describe("svc", root).counters["dropped_sends"] == 0


def test_dump_into_a_queue_already_past_half_full(root: str, server: subprocess.Popen[str]) -> None:
    """Events fill the queue past its half before the dump: the stream waits for room and
    completes (it once ended silently, with no close)."""
    with connect(root, queue_capacity=16, keepalive_thread=False) as c:
        drain_registered(c)
        want(c)
        with connect(root, "pub") as pub:
            assert pub.call(Publish(count=12)).sent == 12
        ctx = c.send(ThingDump(count=20))
        got = [c.recv(timeout=5) for _ in range(12 + 20 + 1)]
        assert [m.seq for m in got[:12]] == list(range(12))
        assert [(m.seq, m.context) for m in got[12:32]] == [(i, ctx) for i in range(20)]
        assert names(got[32]) == PING_REPLY and got[32].retval == 0


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
            assert [names(m) for m in got] == [ThingDetails._name_crc] * count + [PING_REPLY]
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
        # A detail that cannot be encoded fails the same way.
        with pytest.raises(ShmkitError, match="retval -1") as err:
            c.dump(ThingDump(count=100, bad_at=30))
        assert len(err.value.details) == 30  # type: ignore[attr-defined]
        assert describe("svc", root).counters["handler_errors"] == before + 2
        # The server goes on.
        assert len(c.dump(ThingDump(count=10))) == 10


def test_paused_streams_per_client_are_bounded(root: str, server: subprocess.Popen[str]) -> None:
    """Dump after dump without reading: 16 streams wait (paused), more are refused at once
    with STREAM_ABORTED; the waiting ones complete, in full, once the client reads."""
    with connect(root, queue_capacity=64, keepalive_thread=False) as c:
        drain_registered(c)
        ctxs = [c.send(ThingDump(count=100)) for _ in range(20)]
        closes: dict[int, int] = {}
        details: dict[int, list[int]] = {ctx: [] for ctx in ctxs}
        while len(closes) < 20:
            m = c.recv(timeout=10)
            if names(m) == PING_REPLY:
                closes[m.context] = m.retval
            else:
                details[m.context].append(m.seq)
        assert [closes[ctx] for ctx in ctxs] == [0] * 16 + [STREAM_ABORTED] * 4
        assert [details[ctx] for ctx in ctxs] == [list(range(100))] * 16 + [[]] * 4


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
            assert names(got[7]) == PING_REPLY and got[7].context == ctx
            assert got[7].retval == STREAM_ABORTED
            with pytest.raises(TimeoutError):
                c.recv(timeout=0.2)
            assert [t.seq for t in c.dump(ThingDump(count=100))] == list(range(100))
    finally:
        kill9(proc)


# ---------------------------------------------------------------- events


def want(c: Client, on: bool = True) -> None:
    r = c.call(WantThingEvents(enable_disable=int(on), pid=os.getpid()))
    assert type(r) is WantThingEventsReply and r.retval == 0


def test_events_go_to_registered_clients_only(root: str, server: subprocess.Popen[str]) -> None:
    with connect(root, "a") as a, connect(root, "b") as b:
        drain_registered(a)
        drain_registered(b)
        assert b.call(Publish(count=5)).sent == 0  # nobody registered
        want(a)
        assert b.call(Publish(count=5)).sent == 5
        got = list(a.events(timeout=0.5))
        assert [(type(e), e.seq, e.context) for e in got] == [(ThingEvent, i, 0) for i in range(5)]
        with pytest.raises(TimeoutError):
            b.recv(timeout=0.2)
        want(a, False)
        assert b.call(Publish(count=5)).sent == 0
        assert list(a.events(timeout=0.2)) == []


def test_event_drops_are_counted_and_never_block(root: str, server: subprocess.Popen[str]) -> None:
    with connect(root, "slow", queue_capacity=16, keepalive_thread=False) as slow:
        drain_registered(slow)
        want(slow)
        before = describe("svc", root).counters["dropped_sends"]
        with connect(root, "pub") as pub:
            assert pub.call(Publish(count=100)).sent == 16
        assert describe("svc", root).counters["dropped_sends"] == before + 84
        assert [e.seq for e in slow.events(timeout=0.2)] == list(range(16))


CHILD = """
import os, sys, services_defs
from shmkit.api.client import Client
c = Client.connect("svc", "child", root=sys.argv[1], timeout=10)
assert type(c.recv(timeout=5)) is services_defs.Registered
c.call(services_defs.WantThingEvents(enable_disable=1, pid=os.getpid()))
print("registered", flush=True)
sys.stdin.readline()
"""


def test_registrations_end_when_the_client_is_reaped(
    root: str, server: subprocess.Popen[str]
) -> None:
    child = python(CHILD, root)
    try:
        wait_line(child, "registered", stream="stdout")
        with connect(root, "pub") as pub:
            assert pub.call(Publish(count=1)).sent == 1
            kill9(child)
            wait_until(lambda: pub.call(Publish(count=1)).sent == 0, what="registration ended")
    finally:
        if child.poll() is None:
            kill9(child)


def test_event_callbacks_and_unknown_types(root: str, server: subprocess.Popen[str]) -> None:
    seen: list[tuple[int, str]] = []
    done = threading.Event()

    def on_thing(ev: ThingEvent) -> None:  # type: ignore[valid-type]
        seen.append((ev.seq, threading.current_thread().name))  # type: ignore[attr-defined]
        if ev.seq == 9:  # type: ignore[attr-defined]
            done.set()
            assert c.call(Echo(x=3)).x == 3  # a callback may call the client

    with connect(root, "cb") as c:
        c.on_event(ThingEvent, on_thing)
        want(c)
        assert c.call(Publish(count=10)).sent == 10
        assert done.wait(5)
        assert [s for s, _ in seen] == list(range(10))
        assert {t for _, t in seen} == {"shmkit-api-client-cb"}
        # Events without a callback still queue for recv() (the greeting came first).
        assert type(c.recv(timeout=5)) is Registered
        with pytest.raises(TimeoutError):
            c.recv(timeout=0.2)
    with connect(root, "nothread", keepalive_thread=False) as c, pytest.raises(ValueError):
        c.on_event(ThingEvent, on_thing)
    # A process that does not know a type gets its events as RawMessage from recv().
    out = finish(
        python(
            """
import sys
from shmkit.api.client import Client
c = Client.connect("svc", "raw", root=sys.argv[1], timeout=10)
m = c.recv(timeout=5)
print(type(m).__name__, len(m.data))
""",
            root,
        )
    )
    assert out.split() == [RawMessage.__name__, "14"]


# ---------------------------------------------------------------- restarts


def test_idle_client_notices_a_dead_server_within_a_second(root: str) -> None:
    proc = start_services_server("svc", root)
    noticed: list[tuple[float, Exception]] = []
    try:
        with connect(root, "idle") as c:
            c.on_restart(lambda client, exc: noticed.append((time.monotonic(), exc)))
            t = time.monotonic()
            kill9(proc)
            wait_until(lambda: bool(noticed), timeout=5, what="the death noticed")
            assert noticed[0][0] - t < 1.0
            assert isinstance(noticed[0][1], ServerGoneError)
            with pytest.raises(ServerGoneError):
                c.call(Echo(x=1))
    finally:
        if proc.poll() is None:
            kill9(proc)


def test_reconnect_after_a_server_restart(root: str) -> None:
    proc = start_services_server("svc", root)
    lost: list[Exception] = []
    reconnected = threading.Event()
    events: list[int] = []
    try:
        c = connect(root, "phoenix", reconnect=True)
        c.on_restart(lambda client, exc: lost.append(exc))
        c.on_reconnect(lambda client: (want(client), reconnected.set()))
        c.on_event(ThingEvent, lambda ev: events.append(ev.seq))
        want(c)
        handle = c.handle
        table = c.message_table
        for _ in range(2):
            reconnected.clear()
            kill9(proc)
            proc = start_services_server("svc", root)  # takes the region over
            assert reconnected.wait(10)
            assert isinstance(lost[-1], (ServerGoneError, ServerRestartedError))
            assert c.handle != handle and c.message_table == table
            handle = c.handle
            assert c.call(Echo(x=9)).x == 9
            assert c.dump(ThingDump(count=50))[-1].seq == 49
            events.clear()
            assert c.call(Publish(count=3)).sent == 3  # registered again by on_reconnect
            wait_until(lambda: events == [0, 1, 2], what="events after the reconnection")
        assert len(lost) == 2
        c.close()
        # The server acknowledges before it clears the entry (its reply leaves first).
        wait_until(lambda: describe("svc", root).clients == [], what="the entry cleared")
    finally:
        if proc.poll() is None:
            kill9(proc)


def test_reconnect_needs_the_background_thread(root: str) -> None:
    with pytest.raises(ValueError, match="background thread"):
        Client.connect("svc", "x", root=root, timeout=0.1, keepalive_thread=False, reconnect=True)


# ---------------------------------------------------------------- message table


def test_a_module_is_one_contiguous_block(root: str) -> None:
    from shmkit.api.messages import define, u32
    from shmkit.api.server import Server

    a, b, c, d, e = (define(f"blk_{n}", [("x", u32)]) for n in "abcde")
    with Server("blocks", root=root) as server:
        server.register(a, module="m")
        server.register(b, module="m")  # still the last block: it grows
        server.register(a, b, module="m")  # nothing new: fine anywhere
        server.register(c)  # no module: after m's block
        with pytest.raises(ValueError, match="one block"):
            server.register(d, module="m")
        with pytest.raises(ValueError, match="one block"):
            server.register(d, module="memclnt")
        server.register(d, e, module="n")
        first_m, first_n = server._modules["m"], server._modules["n"]
        assert [server.msg_id(t) for t in (a, b)] == [first_m, first_m + 1]
        assert [server.msg_id(t) for t in (d, e)] == [first_n, first_n + 1]
        server.start()
        with Client.connect("blocks", "q", root=root, timeout=5) as cl:
            got = cl.call(memclnt.GetFirstMsgId(name="n"))
            assert got.retval == 0 and got.first_msg_id == first_n
            assert cl.msg_id(e) == got.first_msg_id + 1


# ---------------------------------------------------------------- over the socket transport


def test_services_over_the_socket(root: str, tmp_path: object) -> None:
    """The same services for a client of VPP's socket transport: dumps of both forms, the
    iteration, events with a callback and the iterator, the registration callback."""
    path = os.path.join(str(tmp_path), "svc.sock")
    proc = start_services_server("svc", root, socket=path)
    try:
        with Client.connect("svc", "sock", socket=path, timeout=10) as c:
            drain_registered(c)
            assert [t.seq for t in c.dump(ThingDump(count=3000), timeout=20)] == list(range(3000))
            assert c.dump(ThingDump(count=0)) == []
            reply, things = c.dump(ThingGet(count=40, cursor=30), reply=ThingGetReply)
            assert reply.cursor == 40 and [t.seq for t in things] == list(range(30, 40))
            assert sum(1 for _ in c.dump_iter(ThingDump(count=500))) == 500
            with pytest.raises(ShmkitError, match="retval -1"):
                c.dump(ThingDump(count=10, fail_at=5))
            seen: list[int] = []
            c.on_event(ThingEvent, lambda ev: seen.append(ev.seq))
            want(c)
            assert c.call(Publish(count=5)).sent == 5
            wait_until(lambda: seen == list(range(5)), what="events through the callback")
            assert c.call(Echo(x=2)).x == 2
    finally:
        kill9(proc)
