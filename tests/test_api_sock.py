"""The binary API over VPP's socket transport, with real processes: shmkit's Client over the
socket (calls, pipelining, dumps, events, keepalives, close), both transports on one server,
and hostile or broken peers (garbage and oversized frames, a peer that never reads, kill -9,
the socket file's mode, the peer-uid allow-list, a dying server)."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_defs import Echo, Event, Flood, Sum
from procs import TESTS_DIR, kill9, python, wait_line, wait_until
from shmkit.api import Client, memclnt
from shmkit.api.show import describe, format_view
from shmkit.api.sockclient import SockClient
from shmkit.errors import ServerGoneError, ShmkitError
from sock_defs import ThingDump, Tick, TickEvent, WantTicks, Whoami

FRAME = struct.Struct(">QII")


def start_sock_server(
    root: str, sock: Path, scan: float = 10.0, **kw: object
) -> subprocess.Popen[str]:
    """The socket test server (``tests/sock_defs.py``) in its own process, once it serves."""
    script = os.path.join(TESTS_DIR, "sock_defs.py")
    proc = subprocess.Popen(
        [sys.executable, script, "api", root, str(scan), str(sock), json.dumps(kw)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": TESTS_DIR},
    )
    wait_line(proc, "ready", stream="stdout")
    return proc


@pytest.fixture
def sock(tmp_path: Path) -> Path:
    return tmp_path / "api.sock"


@pytest.fixture
def server(root: str, sock: Path) -> Iterator[subprocess.Popen[str]]:
    proc = start_sock_server(root, sock, scan=0.1)
    yield proc
    if proc.poll() is None:
        kill9(proc)


def counters(root: str) -> dict[str, int]:
    return describe("api", root).counters


def raw_register(path: Path, name: str = "raw") -> tuple[socket.socket, int]:
    """Register by hand-made bytes (as any VPP client would): returns the socket and index."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(path))
    body = memclnt.SockclntCreate(name=name, context=7).encode(15)
    s.sendall(FRAME.pack(0, len(body), 0) + body)
    n = FRAME.unpack(s.recv(16, socket.MSG_WAITALL))[1]
    reply = memclnt.SockclntCreateReply.decode(s.recv(n, socket.MSG_WAITALL))
    assert reply.response == 0 and reply.context == 7  # type: ignore[attr-defined]
    return s, reply.index  # type: ignore[attr-defined]


# ---------------------------------------------------------------- shmkit's client


def test_shmkit_client_over_the_socket(
    root: str, sock: Path, server: subprocess.Popen[str]
) -> None:
    with Client.connect("api", "sc", socket=sock) as c:
        assert isinstance(c, SockClient) and c.connected
        assert c.call(Echo(x=41)).x == 41
        assert c.call(Sum(n=3, items=[1, 2, 3])).total == 6
        assert c.ping() < 1.0
        replies = c.call_many([Echo(x=i) for i in range(5000)], window=700)
        assert [r.x for r in replies] == list(range(5000))
        # submit/result out of order.
        a, b = c.submit(Echo(x=1)), c.submit(Echo(x=2))
        assert (c.result(b).x, c.result(a).x) == (2, 1)
        me = c.call(Whoami(x=0))
        assert (me.pid, me.socket) == (os.getpid(), 1), "the server sees our SO_PEERCRED pid"
        first = c.call(memclnt.GetFirstMsgId(name="memclnt"))
        assert (first.retval, first.first_msg_id) == (0, 1)
        assert c.call(memclnt.GetFirstMsgId(name="nope")).retval != 0
        # A dump, VPP-style: details, then the control_ping_reply that closes it.
        assert [d.name for d in c.dump(ThingDump(count=3))] == ["thing0", "thing1", "thing2"]
        assert len(c.dump(ThingDump(count=2000))) == 2000
        assert c.dump(ThingDump(count=0)) == []
        # Events after a want_* registration (context 0, read with recv).
        assert c.call(WantTicks(enable_disable=1, pid=os.getpid())).retval == 0
        assert c.call(Tick(count=3)).sent == 3
        got = [c.recv(5) for _ in range(3)]
        assert [(type(e), e.seq, e.context) for e in got] == [(TickEvent, i, 0) for i in range(3)]
        # broadcast reaches socket clients too.
        c.call(Flood(count=2))
        assert [c.recv(5).seq for _ in range(2)] == [0, 1]
        with pytest.raises(TimeoutError):
            c.recv(0.05)
    assert not c.connected
    wait_until(lambda: counters(root)["deregistrations"] == 1, what="sockclnt_delete")
    assert counters(root)["reaped"] == 0


def test_both_transports_on_one_server(
    root: str, sock: Path, server: subprocess.Popen[str]
) -> None:
    with (
        Client.connect("api", "shm", root=root) as shm,
        Client.connect("api", "sock", socket=sock) as sc,
    ):
        assert not isinstance(shm, SockClient)
        # One handler table, one id space: the same ids on both.
        assert shm.message_table == sc.message_table
        # Events to every client of either transport.
        assert shm.call(Flood(count=3)).sent == 6
        for c in (shm, sc):
            assert [(type(e), e.seq) for e in (c.recv(5) for _ in range(3))] == [
                (Event, 0),
                (Event, 1),
                (Event, 2),
            ]
        # Publishing reaches only the registered client, whichever its transport.
        sc.call(WantTicks(enable_disable=1, pid=os.getpid()))
        assert shm.call(Tick(count=1)).sent == 1
        assert sc.recv(5).seq == 0
        with pytest.raises(TimeoutError):
            shm.recv(0.05)
        assert shm.call(Whoami(x=0)).socket == 0 and sc.call(Whoami(x=0)).socket == 1


def test_api_show_lists_socket_clients_and_one_table_bounds_both(root: str, sock: Path) -> None:
    def listed() -> dict[str, tuple[str, int]]:
        return {c["name"]: (c["via"], c["requests"]) for c in describe("api", root).clients}

    proc = start_sock_server(root, sock, scan=0.05, max_clients=3)
    try:
        with (
            Client.connect("api", "shm", root=root),
            Client.connect("api", "sock", socket=sock) as sc,
            Client.connect("api", "seg", socket=sock) as seg,
        ):
            seg.init_shm()
            for _ in range(3):
                sc.call(Echo(x=1))
            wait_until(lambda: listed().get("sock", ("", 0))[1] >= 3, what="requests published")
            via = {name: v for name, (v, _) in listed().items()}
            assert via == {"shm": "shm", "sock": "socket", "seg": "socket+shm"}
            text = format_view(describe("api", root))
            assert "socket+shm" in text and "REQUESTS" in text
            # Three slots, three clients: a fourth is refused on either transport.
            raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            raw.connect(str(sock))
            body = memclnt.SockclntCreate(name="fourth", context=9).encode(15)
            raw.sendall(FRAME.pack(0, len(body), 0) + body)
            n = FRAME.unpack(raw.recv(16, socket.MSG_WAITALL))[1]
            reply = memclnt.SockclntCreateReply.decode(raw.recv(n, socket.MSG_WAITALL))
            assert reply.response == memclnt.TABLE_TOO_BIG  # type: ignore[attr-defined]
            raw.close()
            with pytest.raises(ShmkitError, match="full"):
                Client.connect("api", "shm2", root=root, timeout=2.0)
            wait_until(lambda: counters(root)["refused_registrations"] == 2, what="refusals")
        # Closed: their slots are free again.
        wait_until(lambda: not listed(), what="slots freed")
        with Client.connect("api", "again", socket=sock) as again:
            assert listed() == {"again": ("socket", 0)} and again.call(Echo(x=2)).x == 2
    finally:
        kill9(proc)


def test_idle_socket_client_answers_keepalives(
    root: str, sock: Path, server: subprocess.Popen[str]
) -> None:
    c = Client.connect("api", "idle", socket=sock)
    try:
        # scan 0.1 s: an idle client is pinged repeatedly and stays (its background thread
        # answers).
        wait_until(lambda: counters(root)["keepalives_sent"] >= 5, what="keepalives")
        assert counters(root)["reaped"] == 0 and counters(root)["lazy_clients"] == 0
        assert c.call(Echo(x=1)).x == 1
    finally:
        c.close()


def test_a_raw_client_that_never_answers_keepalives_is_lazy_not_reaped(
    root: str, sock: Path, server: subprocess.Popen[str]
) -> None:
    s, _ = raw_register(sock)
    try:
        wait_until(lambda: counters(root)["lazy_clients"] >= 1, what="lazy client")
        assert counters(root)["reaped"] == 0
    finally:
        s.close()
    wait_until(lambda: counters(root)["reaped"] == 1, what="reaped on EOF")


def test_pickled_socket_client_reconnects(
    root: str, sock: Path, server: subprocess.Popen[str]
) -> None:
    with Client.connect("api", "p", socket=sock) as c:
        again = pickle.loads(pickle.dumps(c))
        try:
            assert isinstance(again, SockClient) and again.handle != c.handle
            assert again.call(Echo(x=3)).x == 3
        finally:
            again.close()


def test_client_waits_for_the_socket_and_times_out(tmp_path: Path) -> None:
    t = time.monotonic()
    with pytest.raises(TimeoutError):
        Client.connect("api", "x", socket=tmp_path / "nobody.sock", timeout=0.2)
    assert time.monotonic() - t < 5


# ---------------------------------------------------------------- hostile and broken peers


def test_garbage_and_oversized_frames_close_only_that_connection(root: str, tmp_path: Path) -> None:
    sock = tmp_path / "api.sock"
    proc = start_sock_server(root, sock, max_frame=4096)
    try:
        with Client.connect("api", "good", socket=sock) as good:
            peers = []
            for payload in (
                FRAME.pack(0, 4097, 0) + b"x" * 100,  # longer than max_frame
                FRAME.pack(0, 0xFFFFFFFF, 0),  # 4 GiB announced: refused before allocating
                FRAME.pack(0, 0, 0),  # empty
            ):
                s = socket.socket(socket.AF_UNIX)
                s.connect(str(sock))
                s.sendall(payload)
                peers.append(s)
            for s in peers:
                s.settimeout(10)
                assert s.recv(16) == b"", "the server closed the connection"
                s.close()
            # Well-framed garbage from a registered raw client: counted, never fatal. Its
            # ids are unknown ones, memclnt's and the cheap handlers' (a random count given
            # to flood or tick would be a legitimate, if long, request).
            s, _ = raw_register(sock)
            seed = int(os.environ.get("SHMKIT_SEED", str(time.time_ns())))
            print(f"SHMKIT_SEED={seed}")
            rnd = __import__("random").Random(seed)
            table = good.message_table
            ids = [*range(1, 29), table[Echo.name_crc()], table[Sum.name_crc()], 999, 0xFFFF]
            ids.remove(17)  # sockclnt_delete would only end the raw client's registration
            for _ in range(300):
                body = bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(0, 64)))
                body = rnd.choice(ids).to_bytes(2, "big") + body
                s.sendall(FRAME.pack(0, len(body), 0) + body)
            assert good.call(Echo(x=9)).x == 9
            s.close()
            wait_until(lambda: counters(root)["invalid_messages"] >= 3, what="counted")
            assert good.call(Echo(x=10)).x == 10
        assert proc.poll() is None
    finally:
        kill9(proc)


def test_a_socket_client_that_never_reads_never_blocks_the_server(
    root: str, sock: Path, server: subprocess.Popen[str]
) -> None:
    # Registered, subscribed to every event, and never reads again.
    stuck, _ = raw_register(sock, "stuck")
    with (
        Client.connect("api", "busy", socket=sock) as busy,
        Client.connect("api", "shm", root=root) as shm,
    ):
        t = time.monotonic()
        for _ in range(30):
            # 30 x 4000 events (7 MB) to every client: the stuck one's buffer fills (4 MiB),
            # then its events are dropped (counted); the readers get every one of theirs.
            assert busy.call(Flood(count=4000), timeout=30).sent >= 8000
            for c in (busy, shm):
                assert [c.recv(5).seq for _ in range(4000)] == list(range(4000))
            assert shm.call(Echo(x=1)).x == 1
        assert time.monotonic() - t < 90
        wait_until(lambda: counters(root)["dropped_sends"] > 0, what="drops counted")
        assert busy.ping() < 1.0
    stuck.close()


def test_killed_socket_client_is_reaped(
    root: str, sock: Path, server: subprocess.Popen[str]
) -> None:
    child = python(
        """
        import sys
        from shmkit.api import Client
        from sock_defs import WantTicks
        c = Client.connect("api", "victim", socket=sys.argv[1])
        c.call(WantTicks(enable_disable=1, pid=0))
        print("registered", file=sys.stderr, flush=True)
        sys.stdin.readline()
        """,
        str(sock),
    )
    wait_line(child, "registered")
    with Client.connect("api", "watcher", socket=sock) as w:
        assert w.call(Tick(count=1)).sent == 1
        kill9(child)
        wait_until(lambda: counters(root)["reaped"] == 1, what="reaped at EOF")
        assert w.call(Whoami(x=0)).reaped == 1, "on_reap callbacks ran"
        # Its event registration ended with it.
        assert w.call(Tick(count=1)).sent == 0


def test_server_death_is_server_gone(root: str, sock: Path) -> None:
    proc = start_sock_server(root, sock)
    c = Client.connect("api", "c", socket=sock)
    try:
        assert c.call(Echo(x=1)).x == 1
        kill9(proc)
        t = time.monotonic()
        with pytest.raises(ServerGoneError):
            c.call(Echo(x=2), timeout=10)
        assert time.monotonic() - t < 2
        assert not c.connected
    finally:
        c.close()
        if proc.poll() is None:
            kill9(proc)


def test_socket_mode_and_peer_uid_refusal(root: str, tmp_path: Path) -> None:
    sock = tmp_path / "api.sock"
    proc = start_sock_server(root, sock, socket_mode=0o660, socket_uids=[os.geteuid() + 1])
    try:
        assert sock.stat().st_mode & 0o7777 == 0o660
        t = time.monotonic()
        with pytest.raises(ServerGoneError):
            Client.connect("api", "refused", socket=sock, timeout=10)
        assert time.monotonic() - t < 5, "refused at once, not by a timeout"
    finally:
        kill9(proc)
    # The server's socket file is left by a kill -9; a new server replaces the stale file.
    proc = start_sock_server(root, sock, socket_uids=[os.geteuid()])
    try:
        assert sock.stat().st_mode & 0o7777 == 0o600
        with Client.connect("api", "ok", socket=sock) as c:
            assert c.call(Echo(x=2)).x == 2
        # And a second server refuses to take a live server's socket.
        other = python(
            """
            import sys
            from shmkit.api import Server
            try:
                Server("other", root=sys.argv[1], socket=sys.argv[2])
            except OSError as e:
                print("refused", e.errno, file=sys.stderr)
            """,
            root,
            str(sock),
        )
        _, err = other.communicate(timeout=60)
        assert other.returncode == 0 and "refused 98" in err, err
    finally:
        kill9(proc)


def test_a_server_sending_garbage_damages_the_client_connection(tmp_path: Path) -> None:
    """The client validates frames too: a bad length from the 'server' drops the connection."""
    path = tmp_path / "fake.sock"
    lst = socket.socket(socket.AF_UNIX)
    lst.bind(str(path))
    lst.listen(1)
    peer = python(
        """
        import sys
        from shmkit.api import Client
        from shmkit.errors import ConnectionDamagedError
        try:
            Client.connect("fake", "c", socket=sys.argv[1], timeout=10)
        except ConnectionDamagedError as e:
            print("damaged", e, file=sys.stderr)
        """,
        str(path),
    )
    conn, _ = lst.accept()
    conn.recv(1024)
    conn.sendall(FRAME.pack(0, 0x7FFFFFFF, 0))
    _, err = peer.communicate(timeout=60)
    conn.close()
    lst.close()
    assert peer.returncode == 0 and "damaged" in err, err


#: A stdlib-only socket peer for another user: connects, registers with hand-made bytes and
#: reports what happened.
OTHER_USER_PEER = r"""
import socket, struct, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except PermissionError:
    print("EACCES", flush=True)
    sys.exit(0)
name = b"intruder".ljust(64, b"\0")
body = struct.pack(">HI", 15, 7) + name
try:
    s.sendall(struct.pack(">QII", 0, len(body), 0) + body)
    s.settimeout(10)
    print("closed" if s.recv(16) == b"" else "served", flush=True)
except (ConnectionResetError, BrokenPipeError):  # closed with our bytes unread
    print("closed", flush=True)
"""


def test_other_users_by_mode_and_by_peer_uid(root: str) -> None:
    from test_memif_access import NOBODY, as_user, interpreter_for, require_root

    require_root()
    d = tempfile.mkdtemp(prefix="shmkit-apisock-")
    os.chmod(d, 0o755)  # reachable by the other user: the socket file's mode decides
    sock = Path(d) / "api.sock"
    exe = interpreter_for(NOBODY)

    def peer() -> str:
        r = subprocess.run(
            [exe, "-c", OTHER_USER_PEER, str(sock)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            **as_user(NOBODY),
        )
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    try:
        # Default mode 0o600: another user cannot even connect.
        proc = start_sock_server(root, sock)
        try:
            assert peer() == "EACCES"
        finally:
            kill9(proc)
        # 0o666 lets anyone connect; the uid allow-list (SO_PEERCRED) refuses nobody.
        proc = start_sock_server(root, sock, socket_mode=0o666, socket_uids=[os.geteuid()])
        try:
            assert peer() == "closed"
            with Client.connect("api", "me", socket=sock) as c:
                assert c.call(Echo(x=5)).x == 5
        finally:
            kill9(proc)
        # Without the list, nobody is served as anyone else.
        proc = start_sock_server(root, sock, socket_mode=0o666)
        try:
            assert peer() == "served"
        finally:
            kill9(proc)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_socket_client_event_callbacks_and_restart_notice(root: str, sock: Path) -> None:
    proc = start_sock_server(root, sock)
    c = Client.connect("api", "cb", socket=sock)
    try:
        seen: list[int] = []
        lost: list[Exception] = []
        c.on_event(TickEvent, lambda m: seen.append(m.seq))
        c.on_restart(lambda client, err: lost.append(err))
        c.call(WantTicks(enable_disable=1, pid=os.getpid()))
        assert c.call(Tick(count=3)).sent == 3
        wait_until(lambda: seen == [0, 1, 2], what="callbacks")
        # An idle client hears of its server's death from its background thread.
        kill9(proc)
        wait_until(lambda: len(lost) == 1, what="on_restart")
        assert isinstance(lost[0], ServerGoneError)
    finally:
        c.close()
        if proc.poll() is None:
            kill9(proc)


# ---------------------------------------------------------------- sock_init_shm


def test_sock_init_shm_moves_traffic_to_a_private_segment(
    root: str, sock: Path, server: subprocess.Popen[str]
) -> None:
    with (
        Client.connect("api", "seg", socket=sock) as c,
        Client.connect("api", "plain", socket=sock) as plain,
    ):
        assert isinstance(c, SockClient) and not c.shared_memory
        c.init_shm()
        assert c.shared_memory
        with pytest.raises(ValueError):
            c.init_shm()
        # Everything works as before, through the segment's rings.
        assert c.call(Echo(x=7)).x == 7
        assert c.call(Sum(n=3, items=[1, 2, 3])).total == 6
        assert [r.x for r in c.call_many([Echo(x=i) for i in range(3000)])] == list(range(3000))
        assert len(c.dump(ThingDump(count=2500))) == 2500  # more than its queue holds
        c.call(WantTicks(enable_disable=1, pid=os.getpid()))
        assert c.call(Tick(count=2)).sent == 2
        assert [c.recv(5).seq for _ in range(2)] == [0, 1]
        assert plain.call(Flood(count=2)).sent == 4  # broadcast reaches both kinds
        assert [c.recv(5).seq for _ in range(2)] == [0, 1]
        assert [plain.recv(5).seq for _ in range(2)] == [0, 1]
        # A size out of bounds is refused, the client stays on its socket.
        with pytest.raises(ShmkitError, match="refused a private segment"):
            plain.init_shm(size=1 << 31)
        assert not plain.shared_memory and plain.call(Echo(x=1)).x == 1
    wait_until(lambda: counters(root)["deregistrations"] == 2, what="deregistrations")


def test_killed_segment_client_is_reaped(
    root: str, sock: Path, server: subprocess.Popen[str]
) -> None:
    child = python(
        """
        import sys
        from shmkit.api import Client
        from api_defs import Echo
        c = Client.connect("api", "victim", socket=sys.argv[1])
        c.init_shm()
        assert c.call(Echo(x=1)).x == 1
        print("on its segment", file=sys.stderr, flush=True)
        sys.stdin.readline()
        """,
        str(sock),
    )
    wait_line(child, "on its segment")
    kill9(child)
    wait_until(lambda: counters(root)["reaped"] == 1, what="reaped at EOF")
    with Client.connect("api", "next", socket=sock) as c:
        c.init_shm()
        assert c.call(Whoami(x=0)).reaped == 1


def test_a_client_that_wrecks_its_segment_is_dropped_not_the_server(
    root: str, sock: Path, server: subprocess.Popen[str]
) -> None:
    seed = int(os.environ.get("SHMKIT_SEED", str(time.time_ns())))
    print(f"SHMKIT_SEED={seed}")
    child = python(
        """
        import mmap, os, random, sys
        from shmkit.api import Client
        from api_defs import Echo
        c = Client.connect("api", "wrecker", socket=sys.argv[1])
        c.init_shm()
        assert c.call(Echo(x=1)).x == 1
        fd = c._seg.fileno()
        size = os.fstat(fd).st_size
        m = mmap.mmap(fd, size)
        rnd = random.Random(int(sys.argv[2]))
        for _ in range(20000):  # everything but the region header
            at = rnd.randrange(4096, size - 8)
            m[at:at + 8] = rnd.getrandbits(64).to_bytes(8, "little")
        print("wrecked", file=sys.stderr, flush=True)
        for i in range(20):  # the server reads garbage from here on
            try:
                c.send(Echo(x=i), timeout=0.5)
            except Exception:
                break
        sys.stdin.readline()
        """,
        str(sock),
        str(seed),
    )
    try:
        with Client.connect("api", "bystander", socket=sock) as other:
            wait_line(child, "wrecked", timeout=60)
            for i in range(200):  # while the wrecker sends through its wrecked segment
                assert other.call(Echo(x=i)).x == i
            other.init_shm()
            assert other.call(Echo(x=99)).x == 99
        assert server.poll() is None, "the server lives"
    finally:
        kill9(child)


def test_segments_survive_a_server_stop_and_start(root: str, sock: Path) -> None:
    from sock_defs import make_sock_server

    server = make_sock_server("api", root, socket=str(sock)).start()
    try:
        with Client.connect("api", "seg", socket=sock) as c:
            c.init_shm()
            assert c.call(Echo(x=1)).x == 1
            server.stop()
            assert not any(t.name.startswith("shmkit-api-segment") for t in threading.enumerate())
            server.start()
            assert c.call(Echo(x=2)).x == 2
        wait_until(lambda: not server.clients, what="deregistered")
    finally:
        server.close()
        server.region.unlink()
    assert not sock.exists()
