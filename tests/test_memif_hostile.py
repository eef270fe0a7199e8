"""Hostile peers: malformed control messages, bad memory descriptions and corrupt rings.

Every violation must end in a DISCONNECT with a code and a reason, the interface must stay
usable, and nothing may crash or read outside the shared memory."""

from __future__ import annotations

import os
import select
import shutil
import socket
import struct
import time
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from memif_peers import close_pipes, echo, refusal_of, sock_dir
from memif_raw import ACK, ADD_REGION, ADD_RING, CONNECT, INIT, RawClient, RawServer, memif_raw_ok
from procs import python, wait_line, wait_until
from shmkit.memif import ErrorCode, Interface, MemifError

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def sock() -> Iterator[str]:
    d = sock_dir()
    yield os.path.join(d, "memif.sock")
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def server(sock: str) -> Iterator[Interface]:
    with Interface(sock, role="server", log2_ring_size=10) as srv:
        yield srv


def still_works(sock: str, srv: Interface) -> None:
    """After a refusal, a well-behaved client connects and passes a packet."""
    c = RawClient(sock)
    c.connect()
    assert c.connected()
    assert srv.wait_connected(10)
    c.write_buf(0, 0, b"ok!")
    c.desc(0, 0, 0, 1, 3, 0)
    c.set_head(0, 1)
    assert srv.wait(0, 5)
    assert srv.rx_burst(0) == [b"ok!"]
    c.close()
    assert srv.wait_disconnected(10)


def refuse(sock: str, steps: object) -> tuple[int, str]:
    c = RawClient(sock)
    try:
        steps(c)  # type: ignore[operator]
        return c.expect_disconnect()
    finally:
        c.close()


def test_malformed_control_messages(sock: str, server: Interface) -> None:
    cases = [
        (lambda c: c.send(0, raw=b"\x03\x00short"), ErrorCode.MFMSG, "control message of 7 bytes"),
        (lambda c: c.send(0, raw=b"\x03" * 200), ErrorCode.MFMSG, "control message of over"),
        (lambda c: c.send(42), ErrorCode.UNKNOWN_MSG, "unknown control message type 42"),
        (lambda c: c.send(0, raw=bytes(128)), ErrorCode.UNKNOWN_MSG, "type 0"),
        (lambda c: c.init(version=0x0100), ErrorCode.PROTO, "incompatible version"),
        (
            lambda c: c.send(ADD_REGION, struct.pack("<HQ", 0, 4096)),
            ErrorCode.MFMSG,
            "unexpected ADD_REGION",
        ),
        (lambda c: c.send(ACK), ErrorCode.MFMSG, "unexpected ACK"),
        (lambda c: c.init(id=99), ErrorCode.ID, "unmatched interface id 99"),
    ]
    for steps, code, reason in cases:
        got = refuse(sock, steps)
        assert got[0] == code and reason in got[1], (got, reason)
    # The server keeps its own record of an unmatched id (no interface of its was asked for).
    refusals = {(e["code"], e["reason"]) for e in server.events()}
    assert (ErrorCode.ID, "unmatched interface id 99") in refusals, refusals
    still_works(sock, server)


def after_init(extra: object) -> object:
    def steps(c: RawClient) -> None:
        c.init()
        assert c.recv()[0] == ACK
        extra(c)  # type: ignore[operator]

    return steps


def test_bad_memory_descriptions(sock: str, server: Interface) -> None:
    fd = os.memfd_create("x")
    os.ftruncate(fd, 4096)
    cases = [
        (
            after_init(lambda c: c.send(ADD_REGION, struct.pack("<HQ", 0, 4096))),
            ErrorCode.NO_SHMFD,
            "file descriptors",
        ),
        (
            after_init(lambda c: c.send(ADD_REGION, struct.pack("<HQ", 3, 4096), [fd])),
            ErrorCode.MFMSG,
            "out of order",
        ),
        (
            after_init(lambda c: c.send(ADD_REGION, struct.pack("<HQ", 0, 0), [fd])),
            ErrorCode.NO_SHMFD,
            "out of range",
        ),
        (
            after_init(lambda c: c.send(ADD_RING, struct.pack("<HHHIBH", 1, 0, 0, 0, 4, 0), [fd])),
            ErrorCode.MAXREG,
            "not added",
        ),
        (after_init(lambda c: c.send(CONNECT)), ErrorCode.NO_SHMFD, "without regions"),
        (lambda c: c.connect(size_delta=1 << 20), ErrorCode.NO_SHMFD, "its file has"),
        (lambda c: c.connect(cookie=0xBAD), ErrorCode.COOKIE, "cookie"),
        (lambda c: c.connect(offset=1 << 30), ErrorCode.MAXRING, "outside"),
        (lambda c: c.connect(offset=2), ErrorCode.MAXRING, "misaligned"),
        (lambda c: c.connect(log2=11), ErrorCode.MAX_RING, "log2 ring size 11"),
    ]
    for steps, code, reason in cases:
        got = refuse(sock, steps)
        assert got[0] == code and reason in got[1], (got, reason)
        assert not server.connected
    os.close(fd)
    still_works(sock, server)


def corrupt_and_check(
    sock: str, srv: Interface, corrupt: object, reason: str, tx: bool = False
) -> None:
    c = RawClient(sock)
    c.connect()
    assert c.connected()
    assert srv.wait_connected(10)
    corrupt(c)  # type: ignore[operator]
    with pytest.raises(MemifError) as e:
        if tx:
            srv.tx_burst(0, [b"x" * 10])
        else:
            srv.rx_burst(0)
    assert e.value.code == ErrorCode.DISCONNECTED
    _code, why = c.expect_disconnect()
    assert reason in why, why
    assert srv.wait_disconnected(10)
    assert reason in srv.details()["last_error"]
    c.close()


def test_corrupt_descriptors_and_counters(sock: str, server: Interface) -> None:
    def bad_desc(**kw: int) -> object:
        def f(c: RawClient) -> None:
            d = dict(flags=0, region=1, length=10, offset=0) | kw
            c.desc(0, 0, d["flags"], d["region"], d["length"], d["offset"])
            c.set_head(0, 1)

        return f

    corrupt_and_check(sock, server, bad_desc(region=7), "outside the shared memory")
    corrupt_and_check(sock, server, bad_desc(offset=1 << 31), "outside the shared memory")
    corrupt_and_check(sock, server, bad_desc(length=0xFFFFFFFF), "outside the shared memory")
    corrupt_and_check(
        sock, server, bad_desc(offset=(2 * 16 * 256) - 5), "outside the shared memory"
    )
    corrupt_and_check(sock, server, lambda c: c.set_head(0, 17), "not within 16 slots")

    def endless_chain(c: RawClient) -> None:
        for j in range(16):
            c.desc(0, j, 1, 1, 8, j * 256)
        c.set_head(0, 16)

    corrupt_and_check(sock, server, endless_chain, "never ends")

    def bad_posted(c: RawClient) -> None:
        c.desc(1, 0, 0, 1, 256, 1 << 30)  # the M2S buffer the client posts is out of bounds
        c.set_head(1, 1)

    corrupt_and_check(sock, server, bad_posted, "posted descriptor", tx=True)
    corrupt_and_check(sock, server, lambda c: c.set_head(1, 40), "not within 16 slots", tx=True)
    still_works(sock, server)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    descs=st.lists(
        st.tuples(
            st.integers(0, 3),
            st.integers(0, 3),
            st.integers(0, (1 << 32) - 1),
            st.integers(0, (1 << 32) - 1),
        ),
        min_size=1,
        max_size=16,
    ),
    head=st.integers(0, 0xFFFF),
)
def test_fuzz_descriptors(
    sock: str, server: Interface, descs: list[tuple[int, int, int, int]], head: int
) -> None:
    """Random descriptors and head: the server either returns in-bounds packets or
    disconnects with a reason; never a crash or an out-of-bounds read."""
    c = RawClient(sock)
    try:
        c.connect()
        assert c.connected()
        assert server.wait_connected(10)
        for j, (flags, region, length, offset) in enumerate(descs):
            c.desc(0, j, flags, region, length % (1 << 32), offset % (1 << 32))
        c.set_head(0, head)
        try:
            for p in server.rx_burst(0, 64):
                assert len(p) <= 2 * 16 * 256 * 16
        except MemifError as e:
            assert e.code == ErrorCode.DISCONNECTED
            _code, why = c.expect_disconnect()
            assert why
    finally:
        c.close()
        assert server.wait_disconnected(10)


def test_hostile_server(sock: str) -> None:
    """Our client refuses a server with a bad version or out-of-order messages."""
    raw = RawServer(sock)
    try:
        with Interface(sock, role="client", reconnect_interval=60) as cli:
            raw.accept(hello=struct.pack("<32sHHHHHB", b"evil", 0x0300, 0x0300, 255, 0, 0, 10))
            code, why = raw.expect_disconnect()
            assert code == ErrorCode.PROTO and "incompatible version" in why
            wait_until(
                lambda: cli.details()["last_error_code"] == ErrorCode.PROTO, 10, "client refusal"
            )
            raw.s.close()
        with Interface(sock, role="client", reconnect_interval=60) as cli:
            raw.accept()
            t, _ = raw.recv()
            assert t == INIT
            raw.send(7)  # CONNECTED before anything was described
            code, why = raw.expect_disconnect()
            assert code == ErrorCode.MFMSG and "unexpected CONNECTED" in why
            raw.s.close()
        with Interface(sock, role="client", reconnect_interval=60) as cli:
            raw.accept(hello=struct.pack("<32sHHHHHB", b"evil", 0x0200, 0x0200, 0, 0, 0, 10))
            code, why = raw.expect_disconnect()
            assert code == ErrorCode.MAXREG
            assert not cli.connected
    finally:
        raw.close()


#: A hostile peer in its own process, attacking the interrupt eventfds it shares with us:
#: ``pipe`` sends a pipe instead of an eventfd; ``near-max-blocking`` clears O_NONBLOCK on the
#: shared description and pushes the counter 3 short of its maximum (our 4th write would
#: block); ``full-nonblocking`` fills the counter; ``empty-blocking`` clears O_NONBLOCK on the
#: eventfd we read (counter 0: our read would block).
HOSTILE_FD_PEER = r"""
import fcntl, os, struct, sys
from memif_raw import RawClient, RawServer
role, attack, sock = sys.argv[1:4]
MAX = 0xFFFFFFFFFFFFFFFE
if role == "client":
    peer = RawClient(sock)
    peer.connect(intfd="pipe" if attack == "pipe" else "eventfd")
    if attack == "pipe":
        print("refused", *peer.expect_disconnect(), flush=True)
        sys.exit(0)
    assert peer.connected()
    peer.set_head(1, peer.size)  # post every M2S buffer: the server may send
    ev = peer.fds[2] if attack == "empty-blocking" else peer.fds[3]
else:
    peer = RawServer(sock)
    peer.accept()
    peer.serve()
    ev = peer.ring_fds[(True, 0)]  # the client's transmit interrupt
print("connected", flush=True)
sys.stdin.readline()
if attack != "full-nonblocking":
    fcntl.fcntl(ev, fcntl.F_SETFL, fcntl.fcntl(ev, fcntl.F_GETFL) & ~os.O_NONBLOCK)
if attack == "near-max-blocking":
    os.write(ev, struct.pack("<Q", MAX - 3))
elif attack == "full-nonblocking":
    os.write(ev, struct.pack("<Q", MAX))
print("armed", flush=True)
code, why = peer.expect_disconnect(timeout=30)
print("disconnect", code, why, flush=True)
"""


def until_refused(call: Callable[[], object]) -> tuple[MemifError, list[float]]:
    """Call until it raises; returns the error and how long each call took."""
    times: list[float] = []
    for _ in range(20):
        t = time.monotonic()
        try:
            call()
        except MemifError as e:
            times.append(time.monotonic() - t)
            return e, times
        times.append(time.monotonic() - t)
    raise AssertionError(f"never refused ({len(times)} calls)")


def test_pipe_as_interrupt_fd_is_refused(sock: str, server: Interface) -> None:
    code, why = refusal_of(python(HOSTILE_FD_PEER, "client", "pipe", sock))
    assert code == ErrorCode.NO_INTFD and "not an eventfd but pipe:[" in why, why
    assert not server.connected
    still_works(sock, server)


@pytest.mark.parametrize(
    ("role", "attack"),
    [
        ("server", "near-max-blocking"),
        ("server", "full-nonblocking"),
        ("server", "empty-blocking"),
        ("client", "near-max-blocking"),
    ],
)
def test_hostile_interrupt_eventfd(sock: str, role: str, attack: str) -> None:
    """The peer makes the eventfd we write (or read) full, blocking or both: our burst returns
    within milliseconds (a hang would block the whole process: the GIL is held), the link
    goes down with the reason, and the violation is counted."""
    if role == "server":
        me = Interface(sock, role="server", log2_ring_size=10)
        peer = python(HOSTILE_FD_PEER, "client", attack, sock)
    else:
        peer = python(HOSTILE_FD_PEER, "server", attack, sock)
        wait_until(lambda: os.path.exists(sock), 30, "raw server listening")
        me = Interface(
            sock, role="client", log2_ring_size=4, buffer_size=256, reconnect_interval=60
        )
    try:
        wait_line(peer, "connected", stream="stdout", timeout=30)
        assert me.wait_connected(30)
        assert peer.stdin is not None
        peer.stdin.write("go\n")
        peer.stdin.flush()
        wait_line(peer, "armed", stream="stdout", timeout=30)
        if attack == "empty-blocking":
            err, times = until_refused(lambda: me.rx_burst(0))
        else:
            err, times = until_refused(lambda: me.tx_burst(0, [b"x" * 60]))
        print(f"{role} {attack}: call durations {[f'{t * 1e3:.1f} ms' for t in times]}")
        assert err.code == ErrorCode.DISCONNECTED
        # A hang bound, not a speed test: the watchdog interrupts a call after 2-4 ms.
        assert max(times) < 1.0, times
        if attack == "near-max-blocking":
            assert len(times) == 4, "three writes fit below the maximum, the fourth blocks"
        line = wait_line(peer, "disconnect", stream="stdout", timeout=30)
        assert me.wait_disconnected(10)
        d = me.details()
    finally:
        me.close()
        peer.kill()
        peer.wait(30)
        close_pipes(peer)
    what = "full" if attack == "full-nonblocking" else "blocked"
    assert "interrupt eventfd" in line and what in line, line
    assert d["violations"] == 1
    assert "protocol violation by the peer: interrupt eventfd" in d["last_error"], d["last_error"]


def test_client_reposts_after_the_server_resets_head(sock: str) -> None:
    """DPDK's memif_connect() stores 0 into every ring's head and tail. A server whose reset
    lands after our client posted its receive buffers sees none of them; the client notices
    at its next receive (or wait) and posts them again, so traffic flows."""
    raw = RawServer(sock)
    try:
        with Interface(
            sock, role="client", log2_ring_size=4, buffer_size=256, reconnect_interval=60
        ) as cli:
            raw.accept()
            raw.serve()
            assert cli.wait_connected(10)
            assert raw.field(False, "head") == 16, "every receive buffer posted at connect"
            raw.field(False, "head", 0)
            raw.field(False, "tail", 0)
            assert not cli.wait(0, 0.01)  # the client looks at its ring: it re-posts
            assert raw.field(False, "head") == 16
            raw.fill(0, b"after the reset")
            raw.field(False, "tail", 1)
            assert cli.wait(0, 5)
            assert cli.rx_burst(0) == [b"after the reset"]
            # A head moved beyond what the client posted is a violation, not a recovery.
            raw.field(False, "head", 40)
            with pytest.raises(MemifError):
                cli.rx_burst(0)
            _code, why = raw.expect_disconnect()
            assert "outside the posted buffers" in why, why
            assert cli.wait_disconnected(10)
            assert cli.details()["violations"] == 1
    finally:
        raw.close()


#: A server process whose descriptor limit is lowered and then used up on command. It
#: serves interfaces 0 and 1 on one socket, echoes what interface 0 receives, and reports the
#: CPU time of its control thread (from /proc, in clock ticks) when asked.
EMFILE_SERVER = r"""
import os, resource, select, sys, time
from shmkit.memif import Interface
sock = sys.argv[1]
ifs = [Interface(sock, role="server", id=i, handshake_timeout=1.5) for i in (0, 1)]
def control_thread_stat():
    deadline = time.monotonic() + 30  # the thread names itself once it runs
    while time.monotonic() < deadline:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/comm") as f:
                if f.read().strip() == "memif-server-0":
                    return os.open(f"/proc/self/task/{tid}/stat", os.O_RDONLY)
        time.sleep(0.01)
    raise AssertionError("no control thread")
stat = control_thread_stat()  # opened now: there will be no descriptor to spare later
def control_thread_cpu():
    fields = os.pread(stat, 4096, 0).decode().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime
print("ready", flush=True)
held = []
while True:
    if select.select([sys.stdin], [], [], 0.005)[0]:
        cmd = sys.stdin.readline().strip()
        if cmd == "exhaust":
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 8, hard))
            try:
                while True:
                    held.append(os.open("/dev/null", os.O_RDONLY))
            except OSError as e:
                print("exhausted", len(held), e.errno, flush=True)
        elif cmd == "cpu":
            print("cpu", control_thread_cpu(), os.sysconf("SC_CLK_TCK"), flush=True)
        elif cmd == "release":
            for fd in held:
                os.close(fd)
            held.clear()
            print("released", flush=True)
        elif cmd == "errors":
            print("errors", ifs[1].details()["last_error"], flush=True)
        else:
            break
    if ifs[0].connected:
        try:
            pkts = ifs[0].rx_burst(0)
            if pkts:
                ifs[0].tx_burst(0, pkts)
        except Exception:
            pass
"""


def test_fd_exhaustion_backs_off(sock: str) -> None:
    """With the descriptor limit reached, a client waiting in the backlog keeps the listener
    readable while accept() fails with EMFILE: the control thread must back off (not spin),
    keep serving the established connection and keep handshake deadlines, and accept the
    waiting client once descriptors are free again."""
    srv = python(EMFILE_SERVER, sock)

    def ask(cmd: str, answer: str) -> list[str]:
        assert srv.stdin is not None
        srv.stdin.write(cmd + "\n")
        srv.stdin.flush()
        return wait_line(srv, answer, stream="stdout", timeout=30).split()

    try:
        wait_line(srv, "ready", stream="stdout", timeout=30)
        with Interface(sock, role="client", id=0, reconnect_interval=0.05) as a:
            assert a.wait_connected(30)
            # A client that connects and never speaks: it must still be timed out.
            silent = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            silent.connect(sock)
            silent.settimeout(30)
            assert silent.recv(256)[0] == 2, "HELLO"
            _, n, errno_ = ask("exhaust", "exhausted")
            assert int(errno_) == 24 and int(n) > 0  # EMFILE
            _, cpu0, hz = ask("cpu", "cpu")
            t0 = time.monotonic()
            with Interface(sock, role="client", id=1, reconnect_interval=0.05) as b:
                # The established link still works, and the silent client's deadline fires.
                pkts = [bytes([i]) * 100 for i in range(100)]
                assert echo(a, 0, pkts, timeout=30) == pkts
                disconnect = silent.recv(256)
                assert struct.unpack_from("<H", disconnect)[0] == 8, "DISCONNECT"
                assert b"handshake timed out" in disconnect
                assert not b.connected
                _, cpu1, _ = ask("cpu", "cpu")
                elapsed = time.monotonic() - t0
                spent = (int(cpu1) - int(cpu0)) / int(hz)
                print(f"control thread: {spent:.2f} s of CPU in {elapsed:.2f} s under EMFILE")
                assert elapsed > 1.0
                # Spinning costs a whole core (spent ~ elapsed); backing off almost nothing.
                assert spent < 0.25 * elapsed, (spent, elapsed)
                why = " ".join(ask("errors", "errors"))
                assert "Too many open files" in why, why
                ask("release", "released")
                assert b.wait_connected(30), b.details()["last_error"]
            silent.close()
    finally:
        if srv.poll() is None and srv.stdin is not None:
            srv.stdin.write("quit\n")
            srv.stdin.flush()
        srv.wait(30)
        close_pipes(srv)


def test_pending_connections_are_capped(sock: str, server: Interface) -> None:
    """At most 16 connections of a socket are in their handshake; the others wait in the
    backlog until one finishes (here: closes) and are then served."""
    clients = []
    try:
        for _ in range(20):
            c = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            c.connect(sock)
            clients.append(c)

        def greeted() -> list[socket.socket]:
            ready, _, _ = select.select(clients, [], [], 0)
            return ready

        wait_until(lambda: len(greeted()) >= 16, 30, "16 HELLOs")
        first = greeted()
        assert len(first) == 16, len(first)
        for c in first[:4]:
            clients.remove(c)
            c.close()
        wait_until(lambda: len(greeted()) == 16, 30, "the 4 waiting clients greeted")
    finally:
        for c in clients:
            c.close()
    still_works(sock, server)


def test_raw_helpers_are_consistent() -> None:
    assert memif_raw_ok()
