"""The one wait helper (rust/src/py/wait.rs) behind every blocking call: one timeout convention
(``None`` forever, ``0`` no wait, seconds otherwise, negative a ``ValueError``) and Ctrl-C
that interrupts any wait. Queue waits are covered in test_queue*.py and netmap's poll in
test_netmap_procs.py; here the other families (memif, the API client)."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time

import pytest
import shmkit
from procs import finish, python, wait_line
from shmkit.memif import Interface


def test_negative_timeouts_are_value_errors(root: str) -> None:
    d = tempfile.mkdtemp(prefix="shmkit-wait-")
    try:
        with Interface(os.path.join(d, "s.sock"), role="server") as m:
            for call in (m.wait_connected, m.wait_disconnected):
                with pytest.raises(ValueError, match="non-negative"):
                    call(-1)
            assert m.wait_connected(0) is False  # 0: look, do not wait
            t0 = time.monotonic()
            assert m.wait_connected(0.05) is False
            assert time.monotonic() - t0 >= 0.05
    finally:
        shutil.rmtree(d, ignore_errors=True)
    port = shmkit.netmap.open("pipe{wt0", root=root)
    try:
        with pytest.raises(ValueError, match="non-negative"):
            port.poll(-0.5)
        assert port.poll(0) == 0
        with pytest.raises(ValueError, match="non-negative"):
            port.recv(timeout=-1)
    finally:
        port.close()


MEMIF_WAITER = """
import sys, shmkit.memif
m = shmkit.memif.Interface(sys.argv[1], role="server")
try:
    print("ready", file=sys.stderr, flush=True)
    m.wait_connected()  # None: forever
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


def test_ctrl_c_interrupts_a_memif_wait() -> None:
    d = tempfile.mkdtemp(prefix="shmkit-wait-")
    try:
        child = python(MEMIF_WAITER, os.path.join(d, "s.sock"))
        wait_line(child, "ready")
        child.send_signal(signal.SIGINT)
        assert "interrupted" in finish(child, 20)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_api_client_timeouts_follow_the_convention(root: str) -> None:
    """The Python faces take timeouts the same way: a negative one is a ValueError."""
    from shmkit.api import Client

    with pytest.raises(ValueError, match="non-negative"):
        Client.connect("nothing-here", "c", root=root, timeout=-1)
    with pytest.raises(TimeoutError):
        Client.connect("nothing-here", "c", root=root, timeout=0)


API_WAITER = """
import sys
from shmkit.api import Client
from shmkit.api.messages import define, u32
Slow = define("wait_slow", [("x", u32)])
with Client.connect(sys.argv[1], "waiter", root=sys.argv[2]) as c:
    try:
        print("ready", file=sys.stderr, flush=True)
        c.call(Slow(x=1), timeout=None)  # None: forever; the handler never answers
    except KeyboardInterrupt:
        print("interrupted", flush=True)
"""


def test_ctrl_c_interrupts_an_api_call_waiting_for_its_reply(root: str) -> None:
    import threading

    from shmkit.api import Server
    from shmkit.api.messages import define, u32

    slow = define("wait_slow", [("x", u32)])
    arrived, release = threading.Event(), threading.Event()
    server = Server("wait-api", root=root, region_size=8 << 20)
    try:

        @server.handle(slow)
        def hold(msg, client):  # type: ignore[no-untyped-def]
            arrived.set()  # the child is now waiting for the reply
            release.wait(30)  # holds the call until the test ends

        server.start()
        child = python(API_WAITER, "wait-api", root)
        wait_line(child, "ready")
        assert arrived.wait(10)
        child.send_signal(signal.SIGINT)
        assert "interrupted" in finish(child, 20)
    finally:
        release.set()
        server.close()
        server.region.unlink()
