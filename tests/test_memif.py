"""shmkit memif to shmkit memif in two processes: handshake, data path in every form,
refusals, peer death and reconnection, socket file handling, errors."""

from __future__ import annotations

import os
import selectors
import shutil
import socket
from collections.abc import Iterator

import pytest
import shmkit
from memif_peers import (
    close_pipes,
    echo,
    random_packets,
    shmkit_peer,
    sock_dir,
    stop_peer,
    warm_up,
)
from procs import kill9, wait_until
from shmkit.memif import ErrorCode, Interface, MemifError, error_codes, strerror

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def sock() -> Iterator[str]:
    d = sock_dir()
    yield os.path.join(d, "memif.sock")
    shutil.rmtree(d, ignore_errors=True)


def client(sock: str, **kw: object) -> Interface:
    return Interface(sock, role="client", reconnect_interval=0.05, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("role", ["server", "client"])
@pytest.mark.parametrize("rx_mode", ["interrupt", "polling"])
def test_echo_random_sizes_both_roles_and_modes(sock: str, role: str, rx_mode: str) -> None:
    peer_role = "client" if role == "server" else "server"
    pkts = random_packets(100_000 if rx_mode == "interrupt" else 20_000, 60, 1500)
    if role == "server":
        me = Interface(sock, role="server", rings=2, rx_mode=rx_mode)
        peer = shmkit_peer(sock, role=peer_role, rings=2, rx_mode=rx_mode)
    else:
        peer = shmkit_peer(sock, role=peer_role, rings=2, rx_mode=rx_mode)
        me = client(sock, rings=2, rx_mode=rx_mode)
    with me:
        assert me.wait_connected(10)
        assert me.rx_mode == rx_mode
        assert me.queues == (2, 2)
        assert echo(me, 0, pkts, window=512) == pkts
        small = random_packets(1000, 1, 100, seed=5)
        assert echo(me, 1, small) == small
        d = me.details()
        assert d["remote_app_name"] == "shmkit" and d["peer_pid"] == peer.pid
        tx, rx = stop_peer(peer)
        assert (tx, rx) == (len(pkts) + len(small),) * 2
        assert me.wait_disconnected(10)
        assert me.stats()["tx"]["packets"] == rx


@pytest.mark.parametrize("role", ["server", "client"])
def test_chained_packets(sock: str, role: str) -> None:
    pkts = random_packets(2000, 1, 9000, seed=7)
    if role == "server":
        me = Interface(sock, role="server")
        peer = shmkit_peer(sock, role="client", bs=1024)
    else:
        peer = shmkit_peer(sock, role="server")
        me = client(sock, buffer_size=1024)
    with me:
        assert me.wait_connected(10)
        assert echo(me, 0, pkts) == pkts
        d = me.details()
        assert d["tx_queues"][0]["buffers"] > d["tx_queues"][0]["packets"]
        stop_peer(peer)


@pytest.mark.parametrize("role", ["server", "client"])
def test_zero_copy_forms(sock: str, role: str) -> None:
    if role == "server":
        me = Interface(sock, role="server")
        peer = shmkit_peer(sock, role="client", zc=1)
    else:
        peer = shmkit_peer(sock, role="server", zc=1)
        me = client(sock)
    with me:
        assert me.wait_connected(10)
        warm_up(me, 0)
        sent: list[bytes] = []
        got: list[bytes] = []
        for i in range(200):
            bufs = me.alloc(0, 32)
            assert bufs and all(len(b) == 2048 and not b.readonly for b in bufs)
            lengths = []
            for j, b in enumerate(bufs):
                payload = (i * 1000 + j).to_bytes(4, "little") * (1 + j)
                b[: len(payload)] = payload
                lengths.append(len(payload))
                sent.append(payload)
            assert me.tx_commit(0, lengths) == len(bufs)
            while len(got) < len(sent):
                me.wait(0, 1)
                views = me.rx_views(0, 256)
                got.extend(bytes(v) for v in views)
                assert me.refill(0) == len(views)
        assert got == sent
        # Allocations can be dropped, and must be before a copying burst.
        assert len(me.alloc(0, 4)) == 4
        with pytest.raises(ValueError, match="allocated"):
            me.tx_burst(0, [b"x"])
        assert me.free(0) == 4
        assert me.tx_commit(0, []) == 0
        with pytest.raises(MemifError) as e:
            me.tx_commit(0, [1])
        assert e.value.code == ErrorCode.NOBUF
        stop_peer(peer)


def test_interrupt_fd_with_selectors(sock: str) -> None:
    with Interface(sock, role="server") as srv, client(sock) as cli:
        assert cli.wait_connected(10) and srv.wait_connected(10)
        sel = selectors.DefaultSelector()
        sel.register(cli.fileno(0), selectors.EVENT_READ)
        assert sel.select(0) == []
        assert srv.tx_burst(0, [b"ping"]) == 1
        assert sel.select(5), "the server's transmit wrote the client's eventfd"
        assert cli.rx_burst(0) == [b"ping"]
        cli.rx_burst(0)  # an empty burst drains the eventfd
        assert sel.select(0) == []
        # Polling mode: the peer no longer interrupts.
        cli.rx_mode = "polling"
        assert srv.tx_burst(0, [b"pong"]) == 1
        assert sel.select(0.05) == []
        assert cli.wait(0, 5)
        assert cli.rx_burst(0) == [b"pong"]
        sel.close()


def test_secret_id_mode_and_already_connected(sock: str) -> None:
    with Interface(sock, role="server", id=3, secret=b"open sesame", mode="ip") as srv:
        cases = [
            (dict(id=3, secret="wrong", mode="ip"), ErrorCode.SECRET, "incorrect secret"),
            (dict(id=3, mode="ip"), ErrorCode.NOSECRET, "secret required"),
            (dict(id=4, secret="open sesame", mode="ip"), ErrorCode.ID, "unmatched interface id 4"),
            (dict(id=3, secret="open sesame"), ErrorCode.MODE, "mode mismatch"),
        ]
        for kw, code, reason in cases:
            with client(sock, **kw) as cli:
                wait_until(lambda c=cli, k=code: c.details()["last_error_code"] == k, 10, reason)
                assert reason in cli.details()["last_error"]
                assert not cli.connected and not srv.connected
                ev = cli.events()
                assert ev and ev[-1]["kind"] == "disconnected" and ev[-1]["code"] == code
        good = shmkit_peer(sock, role="client", id=3, secret="open sesame", mode="ip")
        assert srv.wait_connected(10)
        with client(sock, id=3, secret="open sesame", mode="ip") as second:
            wait_until(lambda: second.details()["last_error_code"] == ErrorCode.ALRCONN, 10, "busy")
            assert "already connected" in second.details()["last_error"]
        assert srv.connected
        stop_peer(good)


def test_several_interfaces_on_one_socket(sock: str) -> None:
    with Interface(sock, role="server", id=1) as a, Interface(sock, role="server", id=2) as b:
        with pytest.raises(MemifError) as e:
            Interface(sock, role="server", id=1)
        assert e.value.code == ErrorCode.CONN
        p1 = shmkit_peer(sock, role="client", id=1)
        p2 = shmkit_peer(sock, role="client", id=2)
        assert a.wait_connected(10) and b.wait_connected(10)
        assert echo(a, 0, [b"a" * 10] * 50) == [b"a" * 10] * 50
        assert echo(b, 0, [b"b" * 20] * 50) == [b"b" * 20] * 50
        a.close()
        # b keeps working after a closed; the socket stays while b listens.
        assert echo(b, 0, [b"c"] * 10) == [b"c"] * 10
        assert os.path.exists(sock)
        stop_peer(p1)
        stop_peer(p2)
    assert not os.path.exists(sock)


def test_abstract_socket(sock: str) -> None:
    name = f"@shmkit-test-{os.getpid()}"
    with Interface(name, role="server", abstract=True) as srv:
        peer = shmkit_peer(name, role="client", abstract=1)
        assert srv.wait_connected(10)
        assert srv.details()["socket"] == name
        assert echo(srv, 0, [b"z" * 5] * 20) == [b"z" * 5] * 20
        stop_peer(peer)


def test_stale_socket_file_and_busy_socket(sock: str) -> None:
    # A socket file nobody listens on (a crashed server) is removed and reused.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.bind(sock)
    s.close()
    assert os.path.exists(sock)
    with Interface(sock, role="server") as srv:
        # A live listener in another process is never removed.
        code = (
            "from shmkit.memif import Interface\n"
            f"try:\n    Interface({sock!r}, role='server')\n"
            "except OSError as e:\n    print('busy', e.errno)\n"
        )
        import subprocess
        import sys

        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=30
        )
        assert out.stdout.strip() == "busy 98", out
        assert srv.details()["connected"] is False
    assert not os.path.exists(sock)
    # A regular file in the way is not a socket: refused, left alone.
    with open(sock, "w") as f:
        f.write("keep me")
    with pytest.raises(MemifError) as e:
        Interface(sock, role="server")
    assert e.value.code == ErrorCode.FILE_NOT_SOCK
    with open(sock) as f:
        assert f.read() == "keep me"


def test_peer_killed_then_client_reconnects(sock: str) -> None:
    with client(sock) as cli:
        assert not cli.wait_connected(0.2)
        assert cli.details()["last_error_code"] in (ErrorCode.NO_FILE, ErrorCode.CONNREFUSED)
        with pytest.raises(MemifError) as e:
            cli.tx_burst(0, [b"x"])
        assert e.value.code == ErrorCode.DISCONNECTED
        for round_ in range(2):
            server = shmkit_peer(sock, role="server")
            assert cli.wait_connected(10)
            assert echo(cli, 0, [b"r" * 100] * 100) == [b"r" * 100] * 100
            views = cli.alloc(0, 2)
            kill9(server)
            close_pipes(server)
            assert cli.wait_disconnected(10)
            # Views of the old connection stay valid memory (no crash), just unused.
            views[0][:4] = b"late"
            assert bytes(views[0][:4]) == b"late"
            ev = [
                e
                for e in cli.events()
                if e["kind"] == "disconnected" and e["generation"] == round_ + 1
            ]
            assert ev and "closed" in ev[0]["reason"]
            os.unlink(sock)  # SIGKILL left the file behind; a new server would remove it too
        assert cli.details()["connects"] == 2


def test_server_notices_client_death(sock: str) -> None:
    with Interface(sock, role="server") as srv:
        peer = shmkit_peer(sock, role="client")
        assert srv.wait_connected(10)
        kill9(peer)
        close_pipes(peer)
        assert srv.wait_disconnected(10)
        peer = shmkit_peer(sock, role="client")
        assert srv.wait_connected(10)
        assert echo(srv, 0, [b"q"] * 10) == [b"q"] * 10
        stop_peer(peer)


def test_errors_and_arguments(sock: str) -> None:
    assert len(error_codes()) == 40
    assert strerror(ErrorCode.ID) == "Unmatched interface id."
    assert strerror(1000) == "undefined error"
    e = MemifError(25, "x")
    assert (
        e.code == 25
        and e.strerror == "Unmatched interface id."
        and isinstance(e, shmkit.ShmkitError)
    )
    for kw in [
        dict(role="peer"),
        dict(mode="token-ring"),
        dict(rings=0),
        dict(log2_ring_size=15),
        dict(secret="x" * 25),
        dict(rx_mode="sometimes"),
        dict(buffer_size=0),
        dict(rings=256, log2_ring_size=14, buffer_size=65536),
    ]:
        with pytest.raises(ValueError):
            Interface(sock, **kw)  # type: ignore[arg-type]
    with Interface(sock, role="server") as srv, client(sock) as cli:
        assert cli.wait_connected(10)
        with pytest.raises(MemifError) as ei:
            cli.tx_burst(5, [b"x"])
        assert ei.value.code == ErrorCode.QID and ei.value.strerror == "Invalid queue id"
        with pytest.raises(MemifError):
            cli.rx_burst(1)
        with pytest.raises(MemifError):
            cli.fileno(3)
        assert "client" in repr(cli) and "up" in repr(cli)
        assert srv.wait_connected(10)
    assert cli.closed
    with pytest.raises(shmkit.ClosedError):
        cli.tx_burst(0, [b"x"])
    assert not cli.wait_connected(0.01)


def test_control_thread_does_not_hold_the_gil(sock: str) -> None:
    # A Python thread keeps running while another waits in wait_connected (GIL released).
    import threading

    with client(sock) as cli:
        ticks = 0
        stop = threading.Event()

        def spin() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1

        t = threading.Thread(target=spin)
        t.start()
        assert not cli.wait_connected(0.3)
        stop.set()
        t.join()
        assert ticks > 1000
