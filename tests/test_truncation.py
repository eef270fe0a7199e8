"""A peer truncates a region file under processes that have it mapped (to zero, and to half
its size): every kind of object raises ``RegionTruncatedError`` (or ``CorruptionError``) in
the victim, which never dies of SIGBUS, with Python's faulthandler off, installed before
shmkit's guard, or installed after it. The victims are in ``truncation_victims.py``; this
process only truncates (it never maps the victims' memory)."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest
import shmkit
from memif_raw import RawClient, memif_raw_ok
from procs import TESTS_DIR, wait_line

pytestmark = pytest.mark.timeout(120)

VICTIMS = os.path.join(TESTS_DIR, "truncation_victims.py")
FAULTHANDLER = ["off", "before", "after"]
CUTS = ["zero", "half"]


def start(kind: str, root: str, fh: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": TESTS_DIR}
    env.pop("PYTHONFAULTHANDLER", None)
    if fh == "before":
        env["PYTHONFAULTHANDLER"] = "1"
    return subprocess.Popen(
        [sys.executable, VICTIMS, kind, root, fh],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.PIPE,  # closed by `survived` (the API server waits for that)
        text=True,
        env=env,
    )


def cut(path: str | pathlib.Path, how: str) -> None:
    """Truncate the file as a hostile peer would: to nothing, or to half its size."""
    size = os.stat(path).st_size
    os.truncate(path, 0 if how == "zero" else size // 2)


def region_file(root: str) -> pathlib.Path:
    files = sorted(pathlib.Path("/dev/shm").glob(f"{root}-*"))
    assert len(files) == 1, files
    return files[0]


def survived(proc: subprocess.Popen[str], timeout: float = 60, seen: str = "") -> str:
    """The victim's output (after ``seen``, what was already read of it), after checking it
    raised, survived and exited 0."""
    out, err = proc.communicate(timeout=timeout)
    out = seen + out
    assert proc.returncode == 0, f"victim ended with {proc.returncode}:\n{out}\n{err}"
    assert "Fatal Python error" not in err, err
    assert "raised RegionTruncatedError" in out or "raised CorruptionError" in out, out
    assert "survived" in out, out
    return out


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.communicate(timeout=10)


@pytest.mark.parametrize("fh", FAULTHANDLER)
@pytest.mark.parametrize("how", CUTS)
@pytest.mark.parametrize(
    "kind", ["region", "queue-mpmc", "queue-spsc", "queue-blocking", "msgrings", "netmap"]
)
def test_victim_survives_truncation(root: str, kind: str, how: str, fh: str) -> None:
    proc = start(kind, root, fh)
    try:
        wait_line(proc, "asleep" if kind == "queue-blocking" else "working", 30, stream="stdout")
        cut(region_file(root), how)
        out = survived(proc)
    finally:
        stop(proc)
    if how == "zero" or kind != "region":
        # The objects live in the lost half (or everything was lost): the truncation itself
        # is what the victim reports.
        assert "raised RegionTruncatedError" in out, out


@pytest.mark.parametrize("fh", FAULTHANDLER)
@pytest.mark.parametrize("how", CUTS)
def test_api_server_and_client_survive_truncation(root: str, how: str, fh: str) -> None:
    server = start("api-server", root, fh)
    client = None
    try:
        wait_line(server, "serving", 30, stream="stdout")
        client = start("api-client", root, fh)
        wait_line(client, "working", 30, stream="stdout")
        cut(region_file(root), how)
        survived(client)
        # The server fails cleanly: serve_forever raises (its input queue is in the lost
        # half, and it cannot serve anyone from lost memory) and the process goes on.
        raised = wait_line(server, "raised RegionTruncatedError", 30, stream="stdout")
        survived(server, seen=raised)
    finally:
        stop(server)
        if client is not None:
            stop(client)


@pytest.fixture
def sock() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="shmkit-trunc-")
    yield os.path.join(d, "memif.sock")
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("fh", FAULTHANDLER)
@pytest.mark.parametrize("region_index,how", [(0, "zero"), (1, "zero"), (1, "half")])
def test_memif_server_survives_a_client_truncating_an_unsealed_region(
    sock: str, region_index: int, how: str, fh: str
) -> None:
    assert memif_raw_ok()
    server = start("memif-server", sock, fh)
    raw = None
    try:
        wait_line(server, "listening", 30, stream="stdout")
        raw = RawClient(sock)
        raw.connect(seal=False)  # unsealed memfds, as DPDK's zero-copy client sends
        assert raw.connected()
        wait_line(server, "working", 30, stream="stdout")  # polling both rings
        cut(f"/proc/self/fd/{raw.fds[region_index]}", how)
        if region_index == 1:
            # The rings are intact: post every M2S buffer (in the lost half of the buffer
            # region), so the server's next send writes into lost pages.
            raw.set_head(1, raw.size)
        code, reason = raw.expect_disconnect()
        assert "truncated" in reason, (code, reason)
        survived(server)
    finally:
        stop(server)
        if raw is not None:
            raw.s.close()
            for fd in raw.fds:
                os.close(fd)


def test_region_truncated_error_is_a_corruption_error() -> None:
    assert issubclass(shmkit.RegionTruncatedError, shmkit.CorruptionError)
    assert shmkit.RegionTruncatedError is shmkit.errors.RegionTruncatedError
    assert (
        "RegionTruncatedError" in shmkit.__all__ and "RegionTruncatedError" in shmkit.errors.__all__
    )
