"""The ``shmkit`` command, run as a real process: every user error is one line on stderr with
its documented exit code (never a traceback), a bug is 70 with a hint, and the read commands
speak JSON."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import struct
import subprocess
import sys
from collections.abc import Iterator

import pytest
import shmkit
from procs import finish, kill9, python, start_api_server, wait_line, wait_until
from shmkit.api import Client
from shmkit.cli import Exit

MiB = 1 << 20


def shmkit_cmd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shmkit.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def fails(code: Exit, *args: str, says: str = "") -> str:
    """Run ``shmkit args``; it must exit with ``code`` and one clean line on stderr (which
    contains ``says``); returns that line."""
    r = shmkit_cmd(*args)
    lines = r.stderr.splitlines()
    assert r.returncode == code, f"shmkit {' '.join(args)}: exit {r.returncode}\n{r.stderr}"
    assert len(lines) == 1 and lines[0].startswith("shmkit: "), r.stderr
    assert "Traceback" not in r.stderr
    assert says in lines[0], lines[0]
    return lines[0]


def shm_path(root: str, name: str) -> pathlib.Path:
    return pathlib.Path(f"/dev/shm/{root}-{name}")


@pytest.fixture
def holder(root: str) -> Iterator[subprocess.Popen[str]]:
    """A live process that maps the region ``held`` of ``root``."""
    proc = python(
        """
import sys, shmkit
r = shmkit.Region.find_or_create("held", 1 << 20, root=sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
""",
        root,
    )
    wait_line(proc, "ready", stream="stdout")
    yield proc
    if proc.poll() is None:
        kill9(proc)


# ---------------------------------------------------------------- usage, version


def test_version_comes_from_the_package_metadata() -> None:
    from importlib.metadata import version

    r = shmkit_cmd("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"shmkit {version('shmkit')}"
    assert shmkit.__version__ == version("shmkit") == shmkit._native.__version__


def test_usage_errors_exit_2(root: str) -> None:
    fails(Exit.USAGE, says="usage: ")
    fails(Exit.USAGE, "bogus", says="invalid choice: 'bogus'")
    fails(Exit.USAGE, "regions", "--nope", says="unrecognized arguments: --nope")
    fails(Exit.USAGE, "api", says="required")
    fails(Exit.USAGE, "api", "ping", "x", "-n", "0", says="at least 1")
    fails(Exit.USAGE, "api", "ping", "x", "--timeout", "soon", says="--timeout")
    fails(Exit.USAGE, "demo", "nosuchscene", says="unknown scene(s) nosuchscene")
    # A bad root or name is a bad argument too.
    fails(Exit.USAGE, "regions", "--root", "a/b", says="invalid name")
    fails(Exit.USAGE, "scan", "--root", "x" * 40, says="invalid name")
    fails(Exit.USAGE, "rm", "../etc", "--root", root, says="invalid name")
    fails(Exit.USAGE, "api", "show", "a/b", "--root", root, says="invalid name")


# ---------------------------------------------------------------- not found, permission


def test_missing_region_exits_3(root: str) -> None:
    for args in (
        ["api", "show", "nothere"],
        ["api", "ping", "nothere"],
        ["rm", "nothere"],
    ):
        fails(Exit.NOT_FOUND, *args, "--root", root, says=f"{root}-nothere")


def test_permission_denied_exits_4(root: str) -> None:
    # A file with a mode wider than shmkit accepts (a squatter's 0o666) is not adopted.
    path = shm_path(root, "wide")
    shmkit.Region.create("wide", MiB, root=root, mode=0o666).close()
    assert path.stat().st_mode & 0o777 == 0o666
    fails(Exit.PERMISSION, "api", "show", "wide", "--root", root, says="mode 0o666 is wider")
    fails(Exit.PERMISSION, "api", "ping", "wide", "--root", root, says="permission denied")
    if os.geteuid() == 0:
        # Another user's region: listed, never removed (as root we can make one).
        shmkit.Region.create("theirs", MiB, root=root).close()
        os.chown(shm_path(root, "theirs"), 65534, 65534)
        fails(Exit.PERMISSION, "rm", "theirs", "--root", root, says="owned by uid 65534")
        fails(Exit.PERMISSION, "rm", "theirs", "--force", "--root", root, says="uid 65534")
        assert shm_path(root, "theirs").exists()


# ---------------------------------------------------------------- wrong kind, damaged


def test_not_an_api_region_or_not_a_region_exits_5(root: str) -> None:
    shmkit.Region.create("plain", MiB, root=root).close()
    for action in ("show", "ping"):
        fails(Exit.WRONG_KIND, "api", action, "plain", "--root", root, says="holds no shmkit API")
    junk = shm_path(root, "junk")
    junk.write_bytes(b"j" * 100_000)
    junk.chmod(0o600)
    fails(Exit.WRONG_KIND, "api", "show", "junk", "--root", root, says="is not a shmkit region")
    fails(Exit.WRONG_KIND, "rm", "junk", "--root", root, says="bad magic number")
    assert junk.exists()
    r = shmkit_cmd("rm", "junk", "--root", root, "--force")
    assert r.returncode == 0 and not junk.exists(), r.stderr


def test_damaged_region_exits_9(root: str) -> None:
    shmkit.Region.create("old", MiB, root=root).close()
    path = shm_path(root, "old")
    with open(path, "r+b") as f:  # the layout version field (after the 8-byte magic)
        f.seek(8)
        (version,) = struct.unpack("<I", f.read(4))
        f.seek(8)
        f.write(struct.pack("<I", version + 1))
    fails(Exit.DAMAGED, "api", "show", "old", "--root", root, says="layout version")
    fails(Exit.DAMAGED, "rm", "old", "--root", root, says="layout version")
    assert shmkit_cmd("rm", "old", "--root", root, "--force").returncode == 0
    assert not path.exists()


# ---------------------------------------------------------------- API server states


def test_server_not_running_exits_6(root: str) -> None:
    server = start_api_server("api", root, 0.05)
    pid = server.pid
    kill9(server)
    line = fails(Exit.SERVER_DOWN, "api", "ping", "api", "--root", root, says="not running")
    assert str(pid) in line
    # show still shows what is there (stdout), then says the server is down.
    r = shmkit_cmd("api", "show", "api", "--root", root, "--json")
    assert r.returncode == Exit.SERVER_DOWN, r.stderr
    view = json.loads(r.stdout)
    assert view["server_pid"] == pid and view["server_alive"] is False
    assert r.stderr.count("\n") == 1 and "not running" in r.stderr


def test_unanswered_ping_times_out_exits_7(root: str) -> None:
    server = start_api_server("api", root, 0.05)
    try:
        os.kill(server.pid, signal.SIGSTOP)  # alive, but deaf
        line = fails(
            Exit.TIMEOUT, "api", "ping", "api", "--root", root, "--timeout", "0.3", says="timed out"
        )
        assert "api" in line
    finally:
        os.kill(server.pid, signal.SIGCONT)
        kill9(server)


def test_other_failures_exit_1(root: str) -> None:
    # A shmkit refusal that is no mistake of the caller: the API's client table is full.
    server = start_api_server("api", root, 0.05, max_clients=1)
    try:
        with Client.connect("api", "the-only-one", root=root, timeout=10):
            fails(Exit.FAILED, "api", "ping", "api", "--root", root, says="client slots")
    finally:
        kill9(server)


def test_api_show_and_ping_json(root: str) -> None:
    server = start_api_server("api", root, 0.05)
    try:
        r = shmkit_cmd("api", "ping", "api", "--root", root, "-n", "3", "--json")
        assert r.returncode == 0, r.stderr
        data = json.loads(r.stdout)
        assert data["count"] == 3 and len(data["round_trips_us"]) == 3
        assert data["server_pid"] == server.pid
        assert 0 < data["min_us"] <= data["median_us"] <= data["max_us"]
        r = shmkit_cmd("api", "show", "api", "--root", root, "--json")
        assert r.returncode == 0 and json.loads(r.stdout)["server_alive"] is True
    finally:
        kill9(server)


# ---------------------------------------------------------------- rm


def test_rm_refuses_a_region_in_use_unless_forced(root: str, holder: subprocess.Popen[str]) -> None:
    path = shm_path(root, "held")
    line = fails(Exit.BUSY, "rm", "held", "--root", root, says=str(holder.pid))
    assert "--force" in line and path.exists()
    r = shmkit_cmd("rm", "held", "--root", root, "--force", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["live_clients"] == [holder.pid] and not path.exists()
    # The holder keeps its memory; the name is free for a new region at once.
    holder.stdin.write("\n")  # type: ignore[union-attr]
    holder.stdin.flush()  # type: ignore[union-attr]
    finish(holder)
    shmkit.Region.create("held", MiB, root=root).close()
    r = shmkit_cmd("rm", "held", "--root", root)
    assert r.returncode == 0 and r.stdout.strip() == f"removed {path}" and not path.exists()


def test_rm_removes_a_closed_api_servers_region(root: str) -> None:
    from shmkit.api import Server

    Server("big", root=root).close()  # the region survives: a restart may take it over
    assert shm_path(root, "big").exists()
    assert shmkit_cmd("rm", "big", "--root", root).returncode == 0
    assert not shm_path(root, "big").exists()


# ---------------------------------------------------------------- scan, regions


def test_scan_dry_run_changes_nothing(root: str, holder: subprocess.Popen[str]) -> None:
    kill9(holder)  # its region is now an orphan with a ghost client
    before = shmkit.regions(root)
    assert [c.alive for c in before[0].clients] == [False]
    r = shmkit_cmd("scan", "--root", root, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert f"ghost  held: pid {holder.pid} is gone, would drop it" in r.stdout
    assert "would remove held: orphaned" in r.stdout
    r = shmkit_cmd("scan", "--root", root, "-n", "--json")
    report = json.loads(r.stdout)
    assert report["dry_run"] is True and report["ghosts"] == [["held", holder.pid]]
    assert shmkit.regions(root) == before, "a dry run changes nothing"
    r = shmkit_cmd("scan", "--root", root, "--json")
    report = json.loads(r.stdout)
    assert report["dry_run"] is False and [n for n, _ in report["removed"]] == ["held"]
    assert shmkit.regions(root) == []


def test_regions_prints_modes_in_octal(root: str) -> None:
    shmkit.Region.create("shared", MiB, root=root, mode=0o640).close()
    r = shmkit_cmd("regions", "--root", root)
    assert r.returncode == 0 and "0o640" in r.stdout and "MODE" in r.stdout
    (entry,) = json.loads(shmkit_cmd("regions", "--root", root, "--json").stdout)
    assert entry["mode"] == "0o640"


# ---------------------------------------------------------------- bugs


BUGGY = """
import sys
import shmkit.cli.commands as commands
from shmkit.cli import main

def broken(root=None):
    raise KeyError("a bug")

commands.regions = broken
sys.exit(main(sys.argv[1:]))
"""


def test_a_bug_exits_70_with_a_hint_and_debug_shows_the_traceback() -> None:
    r = subprocess.run(
        [sys.executable, "-c", BUGGY, "regions"], capture_output=True, text=True, check=False
    )
    assert r.returncode == Exit.INTERNAL
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "internal error: KeyError" in r.stderr and "--debug" in r.stderr
    for extra, env in ((["--debug"], {}), ([], {"SHMKIT_DEBUG": "1"})):
        r = subprocess.run(
            [sys.executable, "-c", BUGGY, *extra, "regions"],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            check=False,
        )
        assert r.returncode == Exit.INTERNAL
        assert "Traceback" in r.stderr and "KeyError: 'a bug'" in r.stderr


def test_ctrl_c_exits_130(root: str) -> None:
    server = start_api_server("api", root, 0.05)
    try:
        os.kill(server.pid, signal.SIGSTOP)
        ping = subprocess.Popen(
            [sys.executable, "-m", "shmkit.cli", "api", "ping", "api", "--root", root],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # The ping client is waiting once its queue exists in the API region.
        wait_until(
            lambda: any(o["name"].startswith("api/client") for o in _objects(root)),
            20,
            "the ping client's queue",
        )
        ping.send_signal(signal.SIGINT)
        _, err = ping.communicate(timeout=20)
        assert ping.returncode == Exit.INTERRUPTED and "interrupted" in err, err
        assert "Traceback" not in err
    finally:
        os.kill(server.pid, signal.SIGCONT)
        kill9(server)


def _objects(root: str) -> list[dict[str, object]]:
    with shmkit.Region.open("api", root=root) as region:
        return list(region.objects())
