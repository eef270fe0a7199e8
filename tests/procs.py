"""Helpers for tests with real processes: start them, wait on conditions, kill them.

Synchronisation is always on a condition with a deadline (a line on a pipe, a process exit, a
predicate), never a bare sleep.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from typing import IO, Any

#: Spawned (not forked) children: a clean interpreter, as a real peer would be.
spawn = mp.get_context("spawn")

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def python(
    code: str,
    *args: str,
    failpoints: str | None = None,
    env: dict[str, str] | None = None,
    **kwargs: Any,
) -> subprocess.Popen[str]:
    """Start ``python -c code args...`` with pipes for stdout/stderr (text mode)."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [TESTS_DIR, full_env.get("PYTHONPATH")]))
    if failpoints:
        from shmkit import _native

        assert "failpoints" in _native.build_features(), (
            "this test needs the test build of shmkit (failpoints compiled in): "
            "pip install -e '.[test]'"
        )
        full_env["SHMKIT_FAILPOINTS"] = failpoints
    full_env.update(env or {})
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.PIPE,
        text=True,
        env=full_env,
        **kwargs,
    )


def wait_line(
    proc: subprocess.Popen[str], needle: str, timeout: float = 20.0, stream: str = "stderr"
) -> str:
    """Read ``proc``'s stream until a line containing ``needle`` appears; return that line."""
    pipe = getattr(proc, stream)
    assert pipe is not None
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while True:
        line = _readline(pipe, deadline - time.monotonic())
        if line is None:
            raise TimeoutError(f"no line with {needle!r} within {timeout} s; got {seen!r}")
        if not line:
            rest = proc.stderr.read() if proc.stderr and stream != "stderr" else ""
            raise AssertionError(f"process ended before {needle!r}; got {seen!r} {rest}")
        seen.append(line)
        if needle in line:
            return line


# A reader still blocked in readline() when its caller gave up, per pipe (kept alive here,
# so its id stays its own): the next read of that pipe takes its line instead of starting a
# second reader.
_pending: dict[int, tuple[IO[str], threading.Thread, list[str]]] = {}


def _readline(pipe: IO[str], timeout: float) -> str | None:
    """One line of ``pipe`` through its own buffer, waiting at most ``timeout`` s (None: none
    came). Not ``select`` on the descriptor: two lines that arrived together are read into
    the pipe's buffer by the first ``readline``, and the descriptor never signals the second."""
    pending = _pending.pop(id(pipe), None)
    if pending is None:
        got: list[str] = []
        reader = threading.Thread(target=lambda: got.append(pipe.readline()), daemon=True)
        reader.start()
        pending = (pipe, reader, got)
    _, reader, got = pending
    reader.join(max(0.0, timeout))
    if reader.is_alive():
        _pending[id(pipe)] = pending
        return None
    return got[0] if got else ""


def wait_until(pred: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``pred`` until it is true or ``timeout`` passes (then fail)."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout} s")
        time.sleep(delay)  # polling interval of a deadline-bounded wait, not synchronisation
        delay = min(delay * 2, 0.05)


def start_api_server(
    name: str, root: str, scan: float = 10.0, *, stderr: Any = subprocess.PIPE, **kw: object
) -> subprocess.Popen[str]:
    """Start the test API server (``tests/api_defs.py``) in its own process and wait until it
    serves: ``scan`` is its reaper interval, ``kw`` the extra ``Server`` arguments. Pass a
    file as ``stderr`` when nobody will read the server's log."""
    script = os.path.join(TESTS_DIR, "api_defs.py")
    proc = subprocess.Popen(
        [sys.executable, script, name, root, str(scan), json.dumps(kw)],
        stdout=subprocess.PIPE,
        stderr=stderr,
        stdin=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": TESTS_DIR},
    )
    wait_line(proc, "ready", stream="stdout")
    return proc


def kill9(proc: subprocess.Popen[str] | mp.process.BaseProcess) -> None:
    """SIGKILL a process and reap it."""
    pid = proc.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    if isinstance(proc, subprocess.Popen):
        proc.communicate(timeout=10)  # reaps it and closes its pipes
    else:
        proc.join(10)


def finish(proc: subprocess.Popen[str], timeout: float = 60.0) -> str:
    """Wait for a child started by :func:`python`, assert it succeeded, return its stdout."""
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{err}"
    return out
