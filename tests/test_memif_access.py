"""memif socket files and credentials: the mode and owner a server gives its socket file, a
client's checks of the file it connects to, and both ends' checks of the peer process's
credentials (SO_PEERCRED). Peers of another user are real processes (running as ``nobody``).

Tests that need root (files owned by another user, processes of another user) skip locally
without it and fail under CI (which runs them as root)."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from memif_peers import close_pipes, refusal_of, sock_dir
from memif_raw import RawClient
from procs import TESTS_DIR, wait_line, wait_until
from shmkit.memif import ErrorCode, Interface

pytestmark = pytest.mark.timeout(120)

NOBODY = 65534


def require_root() -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("these tests run as root in CI (sudo .ci/run)")
        pytest.skip("needs root: files and processes of another user")


@pytest.fixture
def sock() -> Iterator[str]:
    d = sock_dir()
    os.chmod(d, 0o755)  # reachable by a peer of another user (the socket file decides)
    yield os.path.join(d, "memif.sock")
    shutil.rmtree(d, ignore_errors=True)


def mode_of(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def as_user(uid: int) -> dict[str, Any]:
    """Popen arguments that run a child as ``uid`` (and group ``uid``), or as ourselves."""
    if uid == os.geteuid():
        return {"cwd": "/"}
    return {"user": uid, "group": uid, "extra_groups": [], "cwd": "/"}


def interpreter_for(uid: int) -> str:
    """A Python that ``uid`` may run (ours may sit in a private home directory)."""
    for exe in (sys.executable, "/usr/bin/python3"):
        try:
            r = subprocess.run([exe, "-c", "pass"], check=False, **as_user(uid))
        except OSError:  # not even executable for uid
            continue
        if r.returncode == 0:
            return exe
    pytest.fail(f"no Python interpreter that uid {uid} can run")


#: A raw memif peer (stdlib only) for another user: ``client`` says INIT and reports the
#: DISCONNECT it gets; ``server`` listens, reports the DISCONNECT of its first client and
#: serves the second one.
RAW_PEER = r"""
import sys
sys.path.insert(0, sys.argv[1])
from memif_raw import RawClient, RawServer
role, sock = sys.argv[2], sys.argv[3]
if role == "client":
    c = RawClient(sock)
    c.init()
    print("refused", *c.expect_disconnect(), flush=True)
else:
    s = RawServer(sock)
    print("listening", flush=True)
    s.accept()
    print("refused", *s.expect_disconnect(), flush=True)
    s.s.close()
    s.accept()
    s.serve()
    print("served", flush=True)
    sys.stdin.readline()
    s.close()
"""


def raw_peer_as(uid: int, role: str, sock: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [interpreter_for(uid), "-c", RAW_PEER, TESTS_DIR, role, sock],
        **as_user(uid),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_socket_file_mode_is_explicit(sock: str) -> None:
    """The file gets the mode asked for (0o600 by default), whatever the umask, and nothing
    else is left in its directory."""
    for umask in (0o000, 0o077):
        old = os.umask(umask)
        try:
            with Interface(sock, role="server"):
                assert mode_of(sock) == 0o600
                assert os.listdir(os.path.dirname(sock)) == ["memif.sock"]
            with Interface(sock, role="server", socket_mode=0o660):
                assert mode_of(sock) == 0o660
        finally:
            os.umask(old)
    assert os.listdir(os.path.dirname(sock)) == []
    with pytest.raises(ValueError, match="abstract socket has no file"):
        Interface(f"shmkit-{os.getpid()}", role="server", abstract=True, socket_mode=0o600)


def test_client_checks_the_socket_file_mode(sock: str) -> None:
    with Interface(sock, role="server", socket_mode=0o666) as srv:
        with pytest.raises(PermissionError, match=r"mode 0o666, wider than 0o600"):
            Interface(sock, role="client", socket_mode=0o600)
        for allowed in (None, 0o666):
            with Interface(sock, role="client", socket_mode=allowed) as cli:
                assert cli.wait_connected(10)
                assert srv.wait_connected(10)
            assert srv.wait_disconnected(10)
    with open(sock, "w"):
        pass
    with pytest.raises(Exception, match="is not a socket"):
        Interface(sock, role="client")


def test_peer_pid(sock: str) -> None:
    """A server that only accepts this very process refuses a client of another process, and
    a client refuses a server that is not the process it names."""
    with Interface(sock, role="server", peer_pid=os.getpid()) as srv:
        other = raw_peer_as(os.geteuid(), "client", sock)
        code, why = refusal_of(other)
        assert code == ErrorCode.ACCES
        assert why == f"peer pid {other.pid} is not the required {os.getpid()}"
        ev = srv.events()
        assert ev and ev[-1]["code"] == ErrorCode.ACCES and "peer pid" in ev[-1]["reason"]
        with Interface(sock, role="client", peer_pid=os.getpid()) as me:
            assert me.wait_connected(10)
        with Interface(sock, role="client", peer_pid=1, reconnect_interval=60) as picky:
            wait_until(lambda: picky.details()["last_error"] is not None, 10, "refusal")
            err = picky.details()
            assert err["last_error_code"] == ErrorCode.ACCES
            assert f"peer pid {os.getpid()} is not the required 1" in err["last_error"]
            assert not picky.connected


def test_socket_file_owner_and_group(sock: str) -> None:
    require_root()
    with Interface(sock, role="server", uid=NOBODY, gid=NOBODY, socket_mode=0o660) as srv:
        st = os.stat(sock)
        assert (st.st_uid, st.st_gid, mode_of(sock)) == (NOBODY, NOBODY, 0o660)
        # A client refuses a file of another owner than itself (or the one it names).
        with pytest.raises(PermissionError, match=r"owned by uid 65534, not 0 \(our effective"):
            Interface(sock, role="client")
        with pytest.raises(PermissionError, match="has group 65534, not 0"):
            Interface(sock, role="client", uid=NOBODY, gid=0)
        with Interface(sock, role="client", uid=NOBODY, gid=NOBODY) as cli:
            assert cli.wait_connected(10)
            assert srv.wait_connected(10)


def test_client_refuses_a_file_of_another_user_that_appears_later(sock: str) -> None:
    require_root()
    with (
        Interface(sock, role="client", reconnect_interval=0.05) as cli,
        Interface(sock, role="server", uid=NOBODY),
    ):
        wait_until(lambda: cli.details()["last_error_code"] == ErrorCode.ACCES, 10, "refusal")
        assert "owned by uid 65534" in cli.details()["last_error"]
        assert not cli.connected


def test_stale_socket_of_another_user_is_not_removed(sock: str) -> None:
    require_root()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    stale.bind(sock)
    stale.close()
    os.chown(sock, NOBODY, NOBODY)
    with pytest.raises(PermissionError, match=r"stale socket file .* owned by uid 65534"):
        Interface(sock, role="server")
    assert os.path.exists(sock)
    # Ours (or the owner we give files): removed and replaced.
    with Interface(sock, role="server", uid=NOBODY):
        assert os.stat(sock).st_uid == NOBODY
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    stale.bind(sock)
    stale.close()
    with Interface(sock, role="server"):
        assert mode_of(sock) == 0o600


def test_server_requires_the_peer_uid(sock: str) -> None:
    """A client process of another user reaches the socket (mode 0o666) but not the
    interface: its uid is not the one required; a client of ours is."""
    require_root()
    with Interface(sock, role="server", socket_mode=0o666, peer_uid=0) as srv:
        code, why = refusal_of(raw_peer_as(NOBODY, "client", sock))
        assert code == ErrorCode.ACCES and why == "peer uid 65534 is not the required 0"
        assert "peer uid 65534" in srv.details()["last_error"]
        ours = RawClient(sock)
        try:
            ours.connect()
            assert ours.connected()
            assert srv.wait_connected(10)
        finally:
            ours.close()


def test_client_requires_the_peer_uid(sock: str) -> None:
    """A server process of another user: the client accepts its socket file only when told
    the owner, and the server itself only when its uid is the one required."""
    require_root()
    peer = raw_peer_as(NOBODY, "server", sock)
    os.chmod(os.path.dirname(sock), 0o777)  # the server (nobody) creates its file there
    try:
        wait_line(peer, "listening", stream="stdout", timeout=30)
        with Interface(sock, role="client", uid=NOBODY, peer_uid=0, reconnect_interval=60) as me:
            _, code, why = wait_line(peer, "refused", stream="stdout", timeout=30).split(" ", 2)
            assert int(code) == ErrorCode.ACCES and "peer uid 65534 is not the required 0" in why
            # (the client records its refusal after telling the server)
            wait_until(lambda: me.details()["last_error"] is not None, 10, "refusal")
            assert "refusing the server" in me.details()["last_error"]
            assert not me.connected
        with Interface(sock, role="client", uid=NOBODY, peer_uid=NOBODY) as me:
            wait_line(peer, "served", stream="stdout", timeout=30)
            assert me.wait_connected(10)
    finally:
        if peer.stdin is not None:
            peer.stdin.close()
        peer.wait(30)
        close_pipes(peer)
