"""The binary API with real processes: registration, calls, reaping, restarts, hostile and
stuck clients, keepalives, the trace and the CLI."""

from __future__ import annotations

import json
import os
import random
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import shmkit
from api_defs import (
    Boom,
    Echo,
    EchoReply,
    Event,
    Fail,
    FailReply,
    Flood,
    Sum,
    SumReply,
    make_server,
)
from procs import finish, kill9, python, start_api_server, wait_line, wait_until
from shmkit._native import ApiPort
from shmkit.api import Handle, memclnt
from shmkit.api.client import (
    Client,
    ServerGoneError,
    ServerRestartedError,
    UnknownMessageError,
)
from shmkit.api.messages import MessageError, define, u64
from shmkit.api.server import Server, ServerRunningError
from shmkit.api.show import describe
from shmkit.api.trace import Trace


@pytest.fixture
def server(root: str) -> Iterator[subprocess.Popen[str]]:
    proc = start_api_server("api", root, scan=0.05)
    yield proc
    if proc.poll() is None:
        kill9(proc)


def ring_busy(root: str) -> list[int]:
    return [r["busy"] for r in describe("api", root).ring_stats]


# ---------------------------------------------------------------- basics


def test_call_table_and_crc_refusal(root: str, server: subprocess.Popen[str]) -> None:
    with Client.connect("api", "basic", root=root, timeout=5) as c:
        r = c.call(Echo(x=7))
        assert type(r) is EchoReply and r.x == 7 and r.context > 0
        assert c.call(Echo(x=41), timeout=2).x == 41
        ping = c.call(memclnt.ControlPing())
        assert ping.retval == 0 and ping.vpe_pid == server.pid
        assert ping.client_index == int(c.handle)
        assert c.call(memclnt.GetFirstMsgId(name="memclnt")).first_msg_id == 1
        assert c.call(memclnt.GetFirstMsgId(name="nope")).retval == -1
        assert c.message_table["echo_" + f"{Echo._crc:08x}"] >= 100
        assert c.message_table[memclnt.ControlPing.name_crc()] == 23
        # Same name, another definition: another CRC, refused before sending.
        other = define("echo", [("x", u64)])
        with pytest.raises(UnknownMessageError):
            c.call(other(x=1))
        # Pipelined, out-of-order matched by context.
        replies = c.call_many([Echo(x=i) for i in range(3000)], timeout=20, window=512)
        assert [r.x for r in replies] == list(range(3000))
        ctxs = [c.submit(Echo(x=i)) for i in range(10)]
        assert [c.result(ctx).x for ctx in reversed(ctxs)] == list(range(9, -1, -1))
        assert Handle.from_int(int(c.handle)).epoch == describe("api", root).epoch & 0xFF


def test_call_many_mixes_native_and_python_codecs(root: str, server: subprocess.Popen[str]) -> None:
    with Client.connect("api", "mixed", root=root, timeout=5) as c:
        msgs = [Sum(n=i % 4, items=list(range(i % 4))) if i % 3 else Echo(x=i) for i in range(600)]
        replies = c.call_many(msgs, timeout=20, window=64)
        for i, (m, r) in enumerate(zip(msgs, replies, strict=True)):
            if i % 3:
                assert type(r) is SumReply and r.total == sum(m.items) and r.items == m.items  # type: ignore[attr-defined]
            else:
                assert type(r) is EchoReply and r.x == i
        # A bad value anywhere raises before anything is sent: no stray reply comes back.
        with pytest.raises(MessageError, match="out of range"):
            c.call_many([Echo(x=1), Sum(n=1, items=[2**32])])
        with pytest.raises(MessageError):
            c.call_many([Echo(x=1), Echo(x=-1)])
        assert c.call(memclnt.ControlPing()).retval == 0  # served in order after anything sent
        with pytest.raises(TimeoutError):
            c.recv(timeout=0)


def test_connect_without_server_times_out(root: str) -> None:
    t = time.monotonic()
    with pytest.raises(TimeoutError, match="no shmkit API server"):
        Client.connect("nobody", "x", root=root, timeout=0.3)
    assert time.monotonic() - t < 2


def test_only_one_live_server(root: str, server: subprocess.Popen[str]) -> None:
    with pytest.raises(ServerRunningError):
        Server("api", root=root)


CLIENT = """
import sys, api_defs
from shmkit.api.client import Client
c = Client.connect(sys.argv[1], "c" + sys.argv[3], root=sys.argv[2], timeout=20)
for i in range(100):
    assert c.call(api_defs.Echo(x=i), timeout=20).x == i
print(int(c.handle), flush=True)
assert c.close()
"""


def test_32_clients_concurrently(root: str, server: subprocess.Popen[str]) -> None:
    kids = [python(CLIENT, "api", root, str(i)) for i in range(32)]
    handles = [int(finish(k, timeout=120)) for k in kids]
    assert len(set(handles)) == 32
    view = describe("api", root)
    assert view.counters["registrations"] == 32
    assert view.counters["deregistrations"] == 32
    assert view.counters["requests"] >= 32 * 101
    assert view.counters["missing_clients"] == 0
    assert view.clients == []
    assert sum(ring_busy(root)) == 0
    region = shmkit.Region.open("api", root=root)
    assert [o for o in region.objects() if o["name"].startswith("api/client/")] == []
    region.close()


# ---------------------------------------------------------------- death and reaping

VICTIM = """
import sys, api_defs, random
from shmkit.api.client import Client
c = Client.connect(sys.argv[1], "victim", root=sys.argv[2], timeout=10)
held = [c.rings.alloc(n) for n in (10, 700, 1500, 3000, 50_000)]  # slots it holds
for i in range(int(sys.argv[3])):
    c.submit(api_defs.Echo(x=i))  # calls in flight, replies unread
print("armed", flush=True)
while True:
    c.call(api_defs.Echo(x=1))
"""


@pytest.mark.parametrize("inflight", [0, 5, 300])
def test_killed_client_is_reaped_quickly(
    root: str, server: subprocess.Popen[str], inflight: int
) -> None:
    with Client.connect("api", "bystander", root=root) as other:
        other.call(Echo(x=1))
        baseline = ring_busy(root)
        victim = python(VICTIM, "api", root, str(inflight))
        wait_line(victim, "armed", stream="stdout")
        # Kill it at a random point of its call loop.
        for _ in range(random.randint(0, 300)):
            other.call(Echo(x=2))
        killed = time.monotonic()
        kill9(victim)
        wait_until(lambda: describe("api", root).counters["reaped"] == 1, 5, "reap")
        assert time.monotonic() - killed < 1.0, "reaped well under a second"
        # Per ring, at most the baseline: the bystander's keepalive exchange (every 50 ms)
        # may have had a message in flight when the baseline was read.
        wait_until(
            lambda: all(n <= b for n, b in zip(ring_busy(root), baseline, strict=True)),
            5,
            "ring slots reclaimed",
        )
        assert [c["name"] for c in describe("api", root).clients] == ["bystander"]
        assert describe("api", root).pool_stats["reclaimed"] >= 5
        assert other.call(Echo(x=3)).x == 3  # unaffected
        region = shmkit.Region.open("api", root=root)
        assert not any(o["name"].endswith(f"/{victim.pid}-0") for o in region.objects())
        assert victim.pid not in region.clients
        region.close()


def test_killed_server_then_takeover(root: str) -> None:
    first = start_api_server("api", root)
    old = Client.connect("api", "old", root=root)
    idle = Client.connect("api", "idle", root=root)
    assert old.call(Echo(x=1)).x == 1
    stale_handle = int(old.handle)
    kill9(first)
    t = time.monotonic()
    with pytest.raises(ServerGoneError):
        old.call(Echo(x=2), timeout=5)
    assert time.monotonic() - t < 1.0
    second = start_api_server("api", root)
    try:
        view = describe("api", root)
        assert view.epoch == 1 and view.server_pid == second.pid
        # A client that was idle during the restart learns it on its next call.
        t = time.monotonic()
        with pytest.raises(ServerRestartedError):
            idle.call(Echo(x=3))
        assert time.monotonic() - t < 1.0
        # Reconnecting works; the new handle carries the new epoch.
        with Client.connect("api", "new", root=root) as new:
            assert new.call(Echo(x=4)).x == 4
            assert new.handle.epoch == 1
            # A message with the old handle is rejected and counted.
            region = shmkit.Region.open("api", root=root)
            port = ApiPort(shmkit.MsgRings.open(region, "api/rings"))
            q = shmkit.Queue.open(region, "api/input")
            before = describe("api", root).counters["missing_clients"]
            wire = Echo(x=5, client_index=stale_handle).encode(new.msg_id(Echo))
            assert port.send(q, wire, "client")
            new.call(memclnt.ControlPing())  # a barrier: the stale message was handled before
            wait_until(
                lambda: describe("api", root).counters["missing_clients"] == before + 1,
                3,
                "stale handle counted",
            )
            q.close()
            region.close()
        assert old.close() and idle.close()
    finally:
        kill9(second)


def test_server_drains_queued_messages_on_takeover(root: str) -> None:
    first = start_api_server("api", root)
    c = Client.connect("api", "c", root=root)
    first.send_signal(signal.SIGSTOP)  # frozen: requests pile up in its input queue
    for i in range(20):
        c.submit(Echo(x=i))
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=10)
    second = start_api_server("api", root)
    try:
        view = describe("api", root)
        assert view.counters["restart_reclaims"] == 20
        assert view.pool_stats["restarts"] == 1
        assert c.close()  # the queue is ours to remove: the new server never knew us
        assert sum(ring_busy(root)) == 0
    finally:
        kill9(second)


# ---------------------------------------------------------------- stuck, lazy and hostile

STUCK = """
import sys
from shmkit.api.client import Client
c = Client.connect(sys.argv[1], "stuck", root=sys.argv[2], queue_capacity=16,
                   keepalive_thread=False)
print("connected", flush=True)
sys.stdin.readline()            # stop reading until told
c.recv(timeout=0.5)             # read again: its health recovers
print("recovered", flush=True)
sys.stdin.readline()
"""


def test_client_that_stops_reading(root: str, server: subprocess.Popen[str]) -> None:
    stuck = python(STUCK, "api", root)
    wait_line(stuck, "connected", stream="stdout")
    with Client.connect("api", "busy", root=root, queue_capacity=4096) as busy:
        t = time.monotonic()
        busy.call(Flood(count=200), timeout=5)
        for _ in range(50):
            busy.call(Echo(x=1), timeout=1)
        assert time.monotonic() - t < 5, "the server stays responsive"
        assert busy.call(memclnt.ControlPing()).retval == 0
        events = [busy.recv(timeout=2) for _ in range(200)]
        assert {type(e) for e in events} == {Event}
        view = describe("api", root)
        assert view.counters["dropped_sends"] >= 200 - 16
        stuck_entry = next(c for c in view.clients if c["name"] == "stuck")
        assert stuck_entry["dropped"] >= 0
        # Unanswered keepalives + a live pid -> "lazy", never reaped.
        wait_until(lambda: describe("api", root).counters["lazy_clients"] >= 1, 5, "lazy detection")
        assert any(c["name"] == "stuck" for c in describe("api", root).clients)
        stuck.stdin.write("\n")
        stuck.stdin.flush()
        wait_line(stuck, "recovered", stream="stdout")
        wait_until(
            lambda: (
                next(c for c in describe("api", root).clients if c["name"] == "stuck")["health"]
                == "ok"
            ),
            5,
            "recovery",
        )
        kill9(stuck)
        wait_until(lambda: describe("api", root).counters["reaped"] == 1, 5, "reap")


def test_hostile_client(root: str, server: subprocess.Popen[str]) -> None:
    region = shmkit.Region.open("api", root=root)
    rings = shmkit.MsgRings.open(region, "api/rings")
    port = ApiPort(rings)
    q = shmkit.Queue.open(region, "api/input")
    with Client.connect("api", "good", root=root) as good:
        echo_id = good.msg_id(Echo)
        handle = int(good.handle)
        before = describe("api", root).counters
        # Garbage references.
        for _ in range(50):
            q.put(os.urandom(8))
        q.put(struct.pack("<Q", rings.alloc(10) + 64))
        # Unknown message ids, a reply id, and truncated messages.
        port.send(q, struct.pack(">HII", 999, handle, 1), "client")
        port.send(q, struct.pack(">HII", 24, handle, 1), "client")
        port.send(q, struct.pack(">HII", echo_id, handle, 1), "client")
        port.send(q, b"\x00", "client")
        # A registration naming the server's own input queue (or garbage) as its queue.
        own = region.find_object("api/input")["offset"]
        evil = memclnt.MemclntCreateV2(input_queue=own, name="evil")
        port.send(q, evil.encode(25), "client")
        port.send(q, struct.pack(">H", 25) + os.urandom(300), "client")
        # ...or a client queue that is registered already.
        taken = region.find_object(good.queue_name)["offset"]
        port.send(q, memclnt.MemclntCreateV2(input_queue=taken, name="evil").encode(25), "client")
        # Random bytes with a valid header.
        for _ in range(100):
            port.send(
                q,
                struct.pack(">HII", echo_id, handle, 9) + os.urandom(random.randint(0, 3)),
                "client",
            )
        assert good.call(Echo(x=5)).x == 5
        after = describe("api", root).counters
        assert after["invalid_messages"] - before["invalid_messages"] >= 51 + 1 + 3 + 100
        assert after["unknown_messages"] - before["unknown_messages"] >= 1
        assert after["registrations"] == before["registrations"]
        assert server.poll() is None
    q.close()
    region.close()


# ---------------------------------------------------------------- closing


def test_close_with_unresponsive_server(root: str, server: subprocess.Popen[str]) -> None:
    c = Client.connect("api", "c", root=root)
    server.send_signal(signal.SIGSTOP)
    try:
        t = time.monotonic()
        assert c.close(timeout=2.0) is False  # "peer unresponsive"
        assert 1.9 < time.monotonic() - t < 4
    finally:
        server.send_signal(signal.SIGCONT)
    # The queue was left for the server (it might still have written into it).
    region = shmkit.Region.open("api", root=root)
    assert any(o["name"].startswith("api/client/") for o in region.objects())
    region.close()


def test_server_close_is_seen_by_clients(root: str) -> None:
    s = make_server("api", root)
    s.start()
    c = Client.connect("api", "c", root=root)
    assert c.call(Echo(x=1)).x == 1
    s.close()
    with pytest.raises(ServerGoneError):
        c.call(Echo(x=2), timeout=2)
    assert c.close()
    shmkit.Region.open("api", root=root).unlink()


def test_batch_with_a_delete_in_the_middle(root: str) -> None:
    """One dispatch batch: requests, the client's memclnt_delete, more requests from it, a
    stale handle and a truncated message. Only what came before the delete is served."""
    s = make_server("api", root)
    s.start()
    c = Client.connect("api", "c", root=root)
    handle, echo_id = int(c.handle), c.msg_id(Echo)
    s.stop()  # queue the whole batch while the loop is stopped
    region = shmkit.Region.open("api", root=root)
    port = ApiPort(shmkit.MsgRings.open(region, "api/rings"))
    q = shmkit.Queue.open(region, "api/input")
    s.flush_counters()
    before = describe("api", root).counters
    batch = [
        Echo(x=1, client_index=handle, context=11).encode(echo_id),
        memclnt.MemclntDelete(index=c.index, handle=handle).encode(3),
        Echo(x=2, client_index=handle, context=13).encode(echo_id),
        Echo(x=3, client_index=handle, context=14).encode(echo_id),
        Echo(x=4, client_index=handle ^ 0x100, context=15).encode(echo_id),  # stale
        b"\x00",
    ]
    assert port.send_many(q, batch, "client") == len(batch)
    s.start()
    first, second = c.recv(timeout=10), c.recv(timeout=10)
    assert (type(first), first.context, first.x) == (EchoReply, 11, 1)
    assert (type(second), second.handle) == (memclnt.MemclntDeleteReply, handle)
    with pytest.raises(TimeoutError):
        c.recv(timeout=0.2)  # nothing for the requests after the delete
    want = {"requests": 2, "missing_clients": 3, "invalid_messages": 1, "deregistrations": 1}

    def counted() -> dict[str, int]:
        after = describe("api", root).counters
        return {k: after[k] - before[k] for k in want}

    wait_until(lambda: counted() == want, 10, f"the counters to show {want}")
    assert not s.clients
    assert not c.close()  # the server forgot us already: no reply to our delete
    q.close()
    s.close()
    region.unlink()


# ---------------------------------------------------------------- trace, reaper callbacks, CLI


def test_trace_save_load_replay(root: str, tmp_path: object) -> None:
    s = make_server("api", root)
    reaped: list[Handle] = []
    s.on_reap(lambda h, info: reaped.append(h))
    s.trace.enabled = True
    s.start()
    try:
        with Client.connect("api", "tracer", root=root) as c:
            for i in range(5):
                c.call(Echo(x=i))
            c.call(memclnt.ControlPing())
        text = s.trace.dump()
        assert "memclnt_create" in text and "echo(" in text and "echo_reply(" in text
        path = os.path.join(str(tmp_path), "api.trace")
        s.trace.save(path)
        loaded = Trace.load(path)
        assert [r.data for r in loaded.records("rx")] == [r.data for r in s.trace.records("rx")]
        replayable = list(loaded.replayable())
        assert [m._name for m in replayable] == ["echo"] * 5 + ["control_ping"]
        with Client.connect("api", "replayer", root=root) as c:
            replies = loaded.replay(c)
        assert [r.x for r in replies[:5]] == list(range(5))
        with pytest.raises(ValueError):
            Trace.load(__file__)
        victim = python(
            """
import sys
from shmkit.api.client import Client
c = Client.connect(sys.argv[1], "doomed", root=sys.argv[2])
print(int(c.handle), flush=True)
sys.stdin.readline()
""",
            "api",
            root,
        )
        h = int(wait_line(victim, "", stream="stdout"))
        kill9(victim)
        wait_until(lambda: len(reaped) == 1, 5, "reaper callback")
        assert int(reaped[0]) == h
    finally:
        s.close()
        s.region.unlink()


def test_cli_show_and_ping(root: str, server: subprocess.Popen[str]) -> None:
    with Client.connect("api", "shown", root=root):
        out = subprocess.run(
            [sys.executable, "-m", "shmkit.cli", "api", "show", "api", "--root", root],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "shown" in out and "vlib" in out and "ring miss fallback" in out
        data = json.loads(
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "shmkit.cli",
                    "api",
                    "show",
                    "api",
                    "--root",
                    root,
                    "--json",
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        assert data["server_pid"] == server.pid and data["clients"][0]["name"] == "shown"
    out = subprocess.run(
        [sys.executable, "-m", "shmkit.cli", "api", "ping", "api", "--root", root, "-n", "5"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "5 control_ping round trips" in out


def test_client_is_thread_safe(root: str, server: subprocess.Popen[str]) -> None:
    import threading

    errors: list[BaseException] = []
    with Client.connect("api", "threads", root=root) as c:

        def worker(base: int) -> None:
            try:
                for i in range(300):
                    assert c.call(Echo(x=base + i), timeout=10).x == base + i
                replies = c.call_many([Echo(x=base + i) for i in range(200)], timeout=10)
                assert [r.x for r in replies] == [base + i for i in range(200)]
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(k * 10_000,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        assert c.call(Echo(x=1)).x == 1


def test_idle_client_answers_keepalives(root: str, server: subprocess.Popen[str]) -> None:
    with Client.connect("api", "idle", root=root) as c:
        # Scans run every 50 ms: an idle client is pinged and must answer by itself.
        wait_until(lambda: describe("api", root).counters["keepalives_sent"] >= 5, 5, "pings")
        view = describe("api", root)
        assert view.counters["lazy_clients"] == 0 and view.counters["reaped"] == 0
        assert view.clients[0]["health"] in ("ok", "pinged")
        assert c.call(Echo(x=9)).x == 9


# ---------------------------------------------------------------- isolation paths


def test_handlers_that_raise_are_counted_and_the_server_goes_on(
    root: str, server: subprocess.Popen[str]
) -> None:
    with Client.connect("api", "failing", root=root) as c:
        before = describe("api", root).counters["handler_errors"]
        # A reply with a retval: the client learns at once (VPP's VNET_API_ERROR_UNSPECIFIED).
        t = time.monotonic()
        r = c.call(Fail(x=7), timeout=30)
        assert type(r) is FailReply and r.retval == memclnt.UNSPECIFIED
        assert time.monotonic() - t < 10, "answered, not timed out"
        # A reply without one (or a reply that cannot be encoded): no reply.
        for x in (0, 1):
            with pytest.raises(TimeoutError):
                c.call(Boom(x=x), timeout=0.3)
        # Pipelined, mixed with good calls: the good ones are answered, in order.
        replies = c.call_many([Echo(x=1), Fail(x=2), Echo(x=3)], timeout=5)
        assert [type(r) for r in replies] == [EchoReply, FailReply, EchoReply]
        assert c.call(Echo(x=9)).x == 9
        wait_until(
            lambda: describe("api", root).counters["handler_errors"] == before + 4,
            5,
            "handler errors counted",
        )
        assert server.poll() is None


def test_handlers_that_raise_on_the_slow_path(root: str) -> None:
    """The same through Server._dispatch (taken for every message while tracing)."""
    s = make_server("api", root)
    s.trace.enabled = True
    s.start()
    try:
        with Client.connect("api", "traced", root=root) as c:
            assert c.call(Fail(x=1), timeout=5).retval == memclnt.UNSPECIFIED
            with pytest.raises(TimeoutError):
                c.call(Boom(x=0), timeout=0.3)
            assert c.call(Echo(x=2)).x == 2
        assert s.counters()["handler_errors"] == 2
        assert s.running
    finally:
        s.close()
        s.region.unlink()


TABLE_CLIENT = """
import sys
from shmkit.api.client import Client
c = Client.connect(sys.argv[1], sys.argv[3], root=sys.argv[2], timeout=10)
print("connected", flush=True)
sys.stdin.readline()
"""


def test_full_client_table(root: str) -> None:
    server = start_api_server("api", root, scan=0.05, max_clients=2)
    try:
        first = Client.connect("api", "first", root=root)
        second = python(TABLE_CLIENT, "api", root, "second")
        wait_line(second, "connected", stream="stdout")
        t = time.monotonic()
        with pytest.raises(shmkit.CapacityError, match="all 2 client slots"):
            Client.connect("api", "third", root=root, timeout=30)
        assert time.monotonic() - t < 10, "refused, not timed out"
        wait_until(
            lambda: describe("api", root).counters["refused_registrations"] == 1, 5, "counted"
        )
        assert first.call(Echo(x=1)).x == 1  # service goes on
        # A slot frees when a client leaves...
        assert first.close()
        with Client.connect("api", "third", root=root) as third:
            assert third.call(Echo(x=3)).x == 3
            with pytest.raises(shmkit.CapacityError):
                Client.connect("api", "fourth", root=root, timeout=5)
            # ... or dies.
            kill9(second)
            wait_until(lambda: describe("api", root).counters["reaped"] == 1, 5, "reap")
            with Client.connect("api", "fourth", root=root) as fourth:
                assert fourth.call(Echo(x=4)).x == 4
        region = shmkit.Region.open("api", root=root)
        assert [o["name"] for o in region.objects() if o["name"].startswith("api/client/")] == []
        region.close()
        assert server.poll() is None
    finally:
        kill9(server)


HOLDER = """
import sys, api_defs
from shmkit.api.client import Client
c = Client.connect(sys.argv[1], "holder", root=sys.argv[2], timeout=10)
held = [c.rings.alloc(n) for n in (10, 700, 1500, 3000, 50_000)]  # slots it holds
for i in range(20):
    c.submit(api_defs.Echo(x=i))  # calls in flight, replies unread
print(c.queue_name, flush=True)
sys.stdin.readline()
"""

TAKEOVER = """
import sys, api_defs
import shmkit.api.clients as clients
import shmkit.api.server as srv
name, root, when = sys.argv[1], sys.argv[2], sys.argv[3]
real_owner, real_recover = clients.queue_owner, srv.Server._recover

def recover(self):
    if when == "before":  # the new server holds the region, has not looked at clients yet
        print("paused", flush=True)
        sys.stdin.readline()
    real_recover(self)

def owner(region, qname):
    found = real_owner(region, qname)
    if when == "after":  # the client was found alive, its queue kept for it
        print("paused", flush=True)
        sys.stdin.readline()
    return found

srv.Server._recover, clients.queue_owner = recover, owner
server = api_defs.make_server(name, root, scan_interval=0.05)
print("ready", flush=True)
server.serve_forever()
"""


def client_leftovers(root: str, pid: int) -> tuple[list[str], list[int], bool]:
    """The victim's queues, the region's client pids, and whether the victim holds slots."""
    region = shmkit.Region.open("api", root=root)
    try:
        queues = [o["name"] for o in region.objects() if o["name"].startswith(f"api/client/{pid}-")]
        return queues, region.clients, sum(ring_busy(root)) > 0
    finally:
        region.close()


@pytest.mark.parametrize("when", ["down", "before", "after"])
def test_client_dies_while_the_server_is_down_or_taken_over(root: str, when: str) -> None:
    """A client dies while no server runs ("down"), or while a new server is taking the
    region over: before it looked at the clients, or just after it found this one alive. The
    new server removes its queue, reclaims everything it held (and what the dead server held
    outside any queue, once no queue it replied into is left), and serves new clients."""
    first = start_api_server("api", root)
    victim = python(HOLDER, "api", root)
    queue = wait_line(victim, "api/client/", stream="stdout").strip()
    assert sum(ring_busy(root)) >= 4
    kill9(first)
    second = None
    try:
        if when == "down":
            kill9(victim)
            second = start_api_server("api", root)
        else:
            second = python(TAKEOVER, "api", root, when)
            wait_line(second, "paused", stream="stdout")
            kill9(victim)
            second.stdin.write("\n")
            second.stdin.flush()
            wait_line(second, "ready", stream="stdout")

        def cleaned() -> bool:
            queues, pids, busy = client_leftovers(root, victim.pid)
            return not queues and victim.pid not in pids and not busy

        wait_until(cleaned, 10, f"the dead client's queue {queue} removed and slots reclaimed")
        view = describe("api", root)
        assert view.epoch == 1 and view.clients == []
        with Client.connect("api", "after", root=root) as c:
            assert c.call(Echo(x=5)).x == 5
        assert second.poll() is None
    finally:
        if second is not None:
            kill9(second)


def test_server_mode_and_ownership(root: str) -> None:
    s = make_server("api", root, mode=0o640)
    try:
        path = f"/dev/shm/{root}-api"
        assert os.stat(path).st_mode & 0o777 == 0o640
        assert os.stat(path).st_uid == os.getuid()
        s.start()
        # A client adopts a region no wider than it expects (0o600 unless it names a mode).
        with pytest.raises(PermissionError, match="wider"):
            Client.connect("api", "strict", root=root, timeout=5.0)
        with Client.connect("api", "owner", root=root, mode=0o640) as c:
            assert c.call(Echo(x=1)).x == 1
    finally:
        s.close()
        s.region.unlink()
