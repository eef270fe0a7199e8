"""The native socket listener (``shmkit._native.SockListener``) from Python: VPP framing with
peers in other processes, the socket file's life, readiness through ``fileno()``, errors."""

from __future__ import annotations

import os
import selectors
import socket
import struct
import time
from pathlib import Path

import pytest
from procs import finish, python, wait_line, wait_until
from shmkit._native import SockListener
from shmkit.errors import ClosedError

HDR = struct.Struct(">QII")


def frame(body: bytes) -> bytes:
    return HDR.pack(0, len(body), 0) + body


def collect(lst: SockListener, pred, timeout: float = 10.0) -> list:  # type: ignore[no-untyped-def]
    seen: list = []
    deadline = time.monotonic() + timeout
    while not pred(seen):
        assert time.monotonic() < deadline, f"timed out; seen {seen}"
        seen.extend(lst.poll(0.05))
    return seen


def test_round_trip_with_a_peer_process(tmp_path: Path) -> None:
    path = tmp_path / "api.sock"
    lst = SockListener(path, mode=0o660)
    assert oct(path.stat().st_mode & 0o7777) == oct(0o660)
    peer = python(
        """
        import socket, struct, sys
        s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
        body = b"x" * 70000
        data = struct.pack(">QII", 0, len(body), 0) + body
        for i in range(0, len(data), 997):
            s.sendall(data[i:i + 997])
        h = s.recv(16, socket.MSG_WAITALL)
        n = struct.unpack(">QII", h)[1]
        print("reply", s.recv(n, socket.MSG_WAITALL).decode(), file=sys.stderr, flush=True)
        """,
        str(path),
    )
    try:
        seen = collect(lst, lambda s: any(e[0] == "frame" for e in s))
        kind, conn, pid, uid, gid = seen[0]
        assert (kind, pid, uid, gid) == ("connected", peer.pid, os.geteuid(), os.getegid())
        assert seen[1] == ("frame", conn, b"x" * 70000)
        assert lst.send(conn, b"thanks") == "queued"
        assert "reply thanks" in wait_line(peer, "reply")
        finish(peer)
        seen = collect(lst, lambda s: bool(s))
        assert seen == [("closed", conn, "eof")]
        assert lst.send(conn, b"late") == "closed"
        info = lst.stats()
        assert (info["accepted"], info["frames_in"], info["closed_eof"]) == (1, 1, 1)
    finally:
        if peer.poll() is None:
            peer.kill()
            peer.communicate()
        lst.close()
    assert not path.exists()


def test_socket_file_is_never_clobbered(tmp_path: Path) -> None:
    path = tmp_path / "api.sock"
    lst = SockListener(path)
    with pytest.raises(OSError) as e:
        SockListener(path)
    assert e.value.errno == 98 and e.value.filename == str(path)  # EADDRINUSE
    lst.close()
    # A stale socket file (its server is gone) is replaced.
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()
    SockListener(path).close()
    path.write_text("mine")
    with pytest.raises(FileExistsError):
        SockListener(path)
    assert path.read_text() == "mine"
    with pytest.raises(ValueError):
        SockListener(tmp_path / "x", max_frame=0)
    with pytest.raises(FileNotFoundError):
        SockListener(tmp_path / "no" / "such" / "dir.sock")


def test_poll_timeouts_and_readiness(tmp_path: Path) -> None:
    lst = SockListener(tmp_path / "s")
    assert lst.poll(0) == []
    t = time.monotonic()
    assert lst.poll(0.1) == []
    assert time.monotonic() - t >= 0.09
    with pytest.raises(ValueError):
        lst.poll(-1)
    sel = selectors.DefaultSelector()
    sel.register(lst.fileno(), selectors.EVENT_READ)
    assert sel.select(0) == []
    c = socket.socket(socket.AF_UNIX)
    c.connect(lst.path)
    assert sel.select(5), "readable once a peer connects"
    (ev,) = lst.poll(0)
    assert ev[0] == "connected"
    assert sel.select(0) == []
    c.sendall(frame(b"\x00\x01"))
    assert sel.select(5)
    assert lst.poll(0) == [("frame", ev[1], b"\x00\x01")]
    sel.close()
    c.close()
    lst.close()
    lst.close()  # idempotent
    assert lst.closed
    with pytest.raises(ClosedError):
        lst.poll(0)
    with pytest.raises(ClosedError):
        lst.fileno()


def test_hostile_peers_close_only_their_connection(tmp_path: Path) -> None:
    lst = SockListener(tmp_path / "s", max_frame=1024, out_cap=64 << 10)
    good, big, stuck = (socket.socket(socket.AF_UNIX) for _ in range(3))
    for s in (good, big, stuck):
        s.connect(lst.path)
    seen = collect(lst, lambda s: len(s) == 3)
    g, b, st = (e[1] for e in seen)
    big.sendall(HDR.pack(0, 1025, 0) + b"x" * 10)
    seen = collect(lst, lambda s: bool(s))
    assert seen == [
        ("closed", b, "bad frame: a frame announced 1025 bytes, more than the maximum of 1024")
    ]
    # A peer that never reads: sends return at once, drops are counted.
    t = time.monotonic()
    outcomes = [lst.send(st, b"y" * 4096) for _ in range(1000)]
    assert time.monotonic() - t < 2.0
    assert outcomes.count("dropped") > 500
    info = lst.conn_info(st)
    assert info is not None and info["dropped"] == outcomes.count("dropped")
    assert lst.stats()["dropped"] == info["dropped"]
    good.sendall(frame(b"ping"))
    assert collect(lst, lambda s: bool(s)) == [("frame", g, b"ping")]
    assert lst.send(g, b"pong") == "queued"
    assert good.recv(100) == frame(b"pong")
    for s in (good, big, stuck):
        s.close()
    lst.close()


def test_peer_uid_allow_list(tmp_path: Path) -> None:
    lst = SockListener(tmp_path / "s", uids=[os.geteuid() + 1])
    c = socket.socket(socket.AF_UNIX)
    c.connect(lst.path)
    wait_until(lambda: lst.poll(0) == [] and lst.stats()["refused_peers"] == 1, what="refusal")
    assert c.recv(16) == b""
    c.close()
    lst.close()
