"""Region manager tests with real processes: creation races, crashes, hostile peers,
permissions, the registry and the janitor."""

from __future__ import annotations

import errno
import json
import os
import pathlib
import socket
import struct
import subprocess
import sys
import time

import pytest
import shmkit
from procs import finish, kill9, python, spawn, wait_line
from shmkit import cli

MiB = 1 << 20


def shm_path(root: str, name: str) -> pathlib.Path:
    return pathlib.Path(f"/dev/shm/{root}-{name}")


# ---------------------------------------------------------------- creation race


def _race_worker(root: str, barrier: object, out: object) -> None:
    barrier.wait()  # type: ignore[attr-defined]
    r = shmkit.Region.find_or_create("race", 4 * MiB, root=root)
    off = r.alloc(64)
    r.write(off, struct.pack("<Q", os.getpid()))
    out.put((os.getpid(), r.created, off, r.creator_pid))  # type: ignore[attr-defined]
    r.close()


def test_eight_processes_race_find_or_create(root: str) -> None:
    barrier = spawn.Barrier(8)
    out = spawn.Queue()
    procs = [spawn.Process(target=_race_worker, args=(root, barrier, out)) for _ in range(8)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    creators = [pid for pid, created, *_ in results if created]
    assert len(creators) == 1, results
    # Everyone agrees on who created it, and every write is visible to everyone.
    assert {creator for *_, creator in results} == {creators[0]}
    r = shmkit.Region.open("race", root=root)
    offsets = {off for _, _, off, _ in results}
    assert len(offsets) == 8
    for pid, _, off, _ in results:
        assert struct.unpack("<Q", r.read(off, 8))[0] == pid
    assert r.check()["used_blocks"] == 8
    # All workers closed: only this process is registered.
    assert r.clients == [os.getpid()]
    r.unlink()
    r.close()


# ---------------------------------------------------------------- crash safety

LOCK_HOLDER = """
import sys, shmkit
r = shmkit.Region.open(sys.argv[1], root=sys.argv[2])
r.alloc(int(sys.argv[3]))
"""


@pytest.mark.parametrize("failpoint", ["heap.mid_split", "region.alloc_locked"])
def test_process_killed_holding_the_lock(root: str, failpoint: str) -> None:
    r = shmkit.Region.create("lock", 4 * MiB, root=root)
    live = [r.alloc(1000) for _ in range(20)]
    for off in live[::2]:
        r.free(off)
    before = r.check()
    victim = python(LOCK_HOLDER, "lock", root, "300", failpoints=failpoint)
    wait_line(victim, f"failpoint {failpoint} reached")
    # The victim now holds the region lock (mid-split for heap.mid_split).
    kill9(victim)
    # Others go on: the next locker recovers the lock and repairs the heap.
    off = r.alloc(500)
    stats = r.stats()
    assert stats["lock_recoveries"] == 1
    # Mid-split the heap was half-updated and gets rebuilt; after a completed allocation only
    # the lock needs recovering.
    assert stats["heap_repairs"] == (1 if failpoint == "heap.mid_split" else 0)
    r.free(off)
    summary = r.check()
    # The victim's allocation either completed (then it leaked one block) or not at all.
    assert summary["used_blocks"] in (before["used_blocks"], before["used_blocks"] + 1)
    # The heap keeps working for another process too.
    child = python(
        """
import sys, shmkit
r = shmkit.Region.open(sys.argv[1], root=sys.argv[2])
offs = [r.alloc(n) for n in range(1, 5000, 97)]
for o in offs: r.free(o)
print(r.check()["used_blocks"])
""",
        "lock",
        root,
    )
    assert int(finish(child)) == summary["used_blocks"]
    r.unlink()


CREATOR = """
import sys, shmkit
shmkit.Region.create(sys.argv[1], 1 << 20, root=sys.argv[2])
"""

OPENER = """
import sys, time, shmkit
t = time.monotonic()
try:
    shmkit.Region.open(sys.argv[1], root=sys.argv[2], timeout=float(sys.argv[3]))
except Exception as e:
    print(type(e).__name__, round(time.monotonic() - t, 3), e)
"""


def test_creator_killed_before_ready(root: str) -> None:
    creator = python(CREATOR, "stale", root, failpoints="region.before_ready")
    wait_line(creator, "failpoint region.before_ready reached")
    # While the creator is alive, openers wait; with a short deadline they time out.
    waiter = python(OPENER, "stale", root, "0.3")
    name, elapsed, *_ = finish(waiter).split()
    assert name == "TimeoutError" and float(elapsed) >= 0.3
    assert shmkit.regions(root)[0].state == "initialising"
    kill9(creator)
    # Now openers fail at once (well before their 10 s deadline) with a clear error.
    opener = python(OPENER, "stale", root, "10")
    out = finish(opener)
    name, elapsed, *_msg = out.split()
    assert name == "StaleRegionError", out
    assert float(elapsed) < 2.0
    assert f"pid {creator.pid}" in out
    assert shmkit.regions(root)[0].state == "stale"
    # A new create recovers the stale file.
    r = shmkit.Region.create("stale", MiB, root=root)
    assert r.created and r.creator_pid == os.getpid()
    r.alloc(10)
    r.unlink()


def test_find_or_create_recovers_stale(root: str) -> None:
    creator = python(CREATOR, "stale2", root, failpoints="region.before_ready")
    wait_line(creator, "failpoint region.before_ready reached")
    kill9(creator)
    r = shmkit.Region.find_or_create("stale2", MiB, root=root)
    assert r.created
    r.unlink()


# ---------------------------------------------------------------- hostile peers

HOSTILE_OPEN = """
import sys, shmkit
try:
    r = shmkit.Region.open(sys.argv[1], root=sys.argv[2], timeout=1)
    for n in (64, 4096, 100000):
        try:
            r.free(r.alloc(n))
        except shmkit.ShmkitError as e:
            print("op-error", type(e).__name__)
    print("opened")
except Exception as e:
    print("error", type(e).__name__)
"""


@pytest.mark.parametrize(
    ("offset", "data", "expected"),
    [
        (0, b"\xff" * 8, "NotARegionError"),  # magic
        (8, b"\x07\x00\x00\x00", "VersionMismatchError"),  # layout version
        (12, b"\x05\x00\x00\x00", "CorruptionError"),  # ready flag
        (16, b"\x00\x00\x00\x40\x00\x00\x00\x00", "CorruptionError"),  # size
        (80, b"\x11" * 8, "CorruptionError"),  # data offset
        (96, b"\x00" * 8, "CorruptionError"),  # checksum
    ],
)
def test_garbage_in_header_is_detected(root: str, offset: int, data: bytes, expected: str) -> None:
    r = shmkit.Region.create("hostile", MiB, root=root)
    path = shm_path(root, "hostile")
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)
    before = path.read_bytes()
    out = finish(python(HOSTILE_OPEN, "hostile", root))
    assert out.split() == ["error", expected]
    assert path.read_bytes() == before, "refusing a file must not change it"
    r.close()


def test_garbage_in_heap_metadata_never_crashes(root: str) -> None:
    r = shmkit.Region.create("heapjunk", MiB, root=root)
    offs = [r.alloc(300) for _ in range(30)]
    for o in offs[::3]:
        r.free(o)
    path = shm_path(root, "heapjunk")
    # Scribble over the heap metadata and the first blocks, as a hostile peer would.
    with open(path, "r+b") as f:
        f.seek(2608)  # inside HeapMeta (free-list heads)
        f.write(os.urandom(2048))
        start, _ = r.data_range
        f.seek(start - 16)
        f.write(os.urandom(512))
    out = finish(python(HOSTILE_OPEN, "heapjunk", root))
    lines = out.split("\n")
    # Either the heap is rebuilt and works, or every operation refuses with an error.
    assert "opened" in lines
    assert all(line.startswith(("op-error", "opened")) for line in lines if line)
    r.close()


# ---------------------------------------------------------------- heap property test

try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError as exc:  # pragma: no cover - hypothesis is a test dependency
    raise RuntimeError("install the test extras: pip install -e '.[test]'") from exc

_ops = st.lists(
    st.one_of(
        st.tuples(st.just("alloc"), st.integers(1, 50_000)),
        st.tuples(st.just("free"), st.integers(0, 10_000)),
    ),
    max_size=200,
)


@settings(max_examples=60, deadline=None)
@given(ops=_ops)
def test_heap_property(ops: list[tuple[str, int]]) -> None:
    root = f"hp{os.getpid()}"
    r = shmkit.Region.create("prop", 2 * MiB, root=root)
    try:
        empty = r.check()
        live: dict[int, int] = {}
        for op, arg in ops:
            if op == "alloc":
                try:
                    off = r.alloc(arg)
                except shmkit.OutOfMemoryError:
                    continue
                assert r.usable_size(off) >= arg
                for o, n in live.items():
                    assert off + arg <= o or o + n <= off, "allocations overlap"
                live[off] = arg
            elif live:
                off = sorted(live)[arg % len(live)]
                del live[off]
                r.free(off)
                with pytest.raises(shmkit.DoubleFreeError):
                    r.free(off)
            summary = r.check()
            assert summary["used_blocks"] == len(live)
        for off in live:
            r.free(off)
        assert r.check() == empty  # no leak, coalesced back to one block
        assert empty["free_blocks"] == 1
    finally:
        r.unlink()
        r.close()


# ---------------------------------------------------------------- errors


def test_error_mapping(root: str) -> None:
    with pytest.raises(FileNotFoundError) as e1:
        shmkit.Region.open("missing", root=root)
    assert e1.value.errno == errno.ENOENT and e1.value.filename.endswith(f"{root}-missing")
    r = shmkit.Region.create("errs", MiB, root=root)
    with pytest.raises(FileExistsError):
        shmkit.Region.create("errs", MiB, root=root)
    for bad in ["", "a/b", "..", "a..b", "x" * 201, "nl\n"]:
        with pytest.raises(ValueError, match="invalid name"):
            shmkit.Region.create(bad, MiB, root=root)
    with pytest.raises(ValueError):
        shmkit.Region.create("ok", MiB, root="bad-root")
    with pytest.raises(ValueError, match="size"):
        shmkit.Region.create("tiny", 10, root=root)
    with pytest.raises(ValueError):
        shmkit.Region.create("m", MiB, root=root, mode=0o7777)
    with pytest.raises(ValueError):
        r.alloc(0)
    # Larger than the whole heap: out of memory, as documented (a ValueError before).
    for huge in (MiB, 1 << 62, (1 << 64) - 1):
        with pytest.raises(shmkit.OutOfMemoryError, match=f"cannot allocate {huge} bytes"):
            r.alloc(huge)
    big = r.alloc(600_000)
    with pytest.raises(shmkit.OutOfMemoryError) as oom:
        r.alloc(600_000)
    assert isinstance(oom.value, MemoryError)
    r.free(big)
    off = r.alloc(64)
    with pytest.raises(shmkit.InvalidOffsetError):
        r.free(off + 64)
    r.free(off)
    with pytest.raises(shmkit.DoubleFreeError):
        r.free(off)
    with pytest.raises(ValueError):
        r.buffer(0, 10)  # the header is not handed out
    with pytest.raises(ValueError):
        r.buffer(r.data_range[1] - 8, 16)
    for i in range(256):
        r.create_object(f"o{i}", 64)
    with pytest.raises(shmkit.CapacityError):
        r.create_object("one-too-many", 64)
    with pytest.raises(FileExistsError):
        r.create_object("o1", 64)
    with pytest.raises(FileNotFoundError):
        r.find_object("nope")
    r.unlink()
    with pytest.raises(FileNotFoundError):
        r.unlink()
    r.close()
    with pytest.raises(shmkit.ClosedError):
        r.alloc(1)
    # Timeouts: opening a region whose creator is alive but not done yet.
    creator = python(CREATOR, "slow", root, failpoints="region.before_ready")
    wait_line(creator, "failpoint region.before_ready reached")
    with pytest.raises(TimeoutError):
        shmkit.Region.open("slow", root=root, timeout=0.05)
    kill9(creator)
    with pytest.raises(shmkit.StaleRegionError):
        shmkit.Region.open("slow", root=root)


def test_lock_timeout_is_timeout_error(root: str) -> None:
    r = shmkit.Region.create("held", MiB, root=root, lock_timeout=0.2)
    holder = python(LOCK_HOLDER, "held", root, "64", failpoints="region.alloc_locked")
    wait_line(holder, "failpoint region.alloc_locked reached")
    t = time.monotonic()
    with pytest.raises(TimeoutError, match="tid"):
        r.alloc(64)
    assert time.monotonic() - t >= 0.2
    kill9(holder)
    r.free(r.alloc(64))
    r.unlink()


# ---------------------------------------------------------------- permissions


def _open_as_other_user(name: str, root: str, kwargs: dict[str, int], conn: object) -> None:
    os.setgid(65534)
    os.setuid(65534)
    try:
        shmkit.Region.open(name, root=root, **kwargs)
        conn.send("opened")  # type: ignore[attr-defined]
    except PermissionError as e:
        conn.send(f"PermissionError: {e}")  # type: ignore[attr-defined]
    except Exception as e:
        conn.send(repr(e))  # type: ignore[attr-defined]


def test_permissions_second_uid(root: str) -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI must run as root to test a second uid")
        pytest.skip("needs root to switch to a second uid")
    private = shmkit.Region.create("private", MiB, root=root)
    shared = shmkit.Region.create("shared", MiB, root=root, mode=0o666)
    assert shm_path(root, "private").stat().st_mode & 0o777 == 0o600
    assert shm_path(root, "shared").stat().st_mode & 0o777 == 0o666
    fork = __import__("multiprocessing").get_context("fork")
    results = {}
    cases = {
        "private": ("private", {}),
        # Readable by all, but another user's: adopted only when that owner is named.
        "shared, owner not named": ("shared", {}),
        "shared, owner named": ("shared", {"uid": 0, "mode": 0o666}),
        "shared, mode not accepted": ("shared", {"uid": 0}),
    }
    for case, (name, kwargs) in cases.items():
        parent, child = fork.Pipe()
        p = fork.Process(target=_open_as_other_user, args=(name, root, kwargs, child))
        p.start()
        results[case] = parent.recv()
        p.join(10)
    assert results["private"].startswith("PermissionError: [Errno 13] open: Permission denied")
    assert "owned by uid 0, expected uid 65534" in results["shared, owner not named"]
    assert results["shared, owner named"] == "opened"
    assert "mode 0o666 is wider than 0o600" in results["shared, mode not accepted"]
    private.unlink()
    shared.unlink()


# ---------------------------------------------------------------- registry and scan


def _hold_open(name: str, root: str, conn: object) -> None:
    r = shmkit.Region.open(name, root=root)
    conn.send(os.getpid())  # type: ignore[attr-defined]
    conn.recv()  # type: ignore[attr-defined]
    r.close()


def test_registry_lists_regions(root: str) -> None:
    a = shmkit.Region.create("alpha", 2 * MiB, root=root)
    b = shmkit.Region.create("beta", MiB, root=root)
    off = a.alloc(10_000)
    a.create_object("thing", 100)
    parent, child = spawn.Pipe()
    p = spawn.Process(target=_hold_open, args=("alpha", root, child))
    p.start()
    other = parent.recv()
    infos = {i.name: i for i in shmkit.regions(root)}
    assert set(infos) == {"alpha", "beta"}
    alpha = infos["alpha"]
    assert alpha.size == 2 * MiB and alpha.state == "ready"
    assert alpha.used_bytes == a.used_bytes and alpha.free_bytes == a.free_bytes
    assert alpha.used_bytes >= 10_000 + 100
    assert sorted(alpha.client_pids) == sorted([os.getpid(), other])
    assert alpha.objects == 1 and alpha.creator_pid == os.getpid()
    # The listing never registers itself.
    assert sorted(a.clients) == sorted([os.getpid(), other])
    # CLI: table and JSON.
    out = subprocess.run(
        [sys.executable, "-m", "shmkit.cli", "regions", "--root", root],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "alpha" in out and "beta" in out and str(other) in out
    data = json.loads(
        subprocess.run(
            [sys.executable, "-m", "shmkit.cli", "regions", "--root", root, "--json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert {d["name"] for d in data} == {"alpha", "beta"}
    parent.send("quit")
    p.join(10)
    a.free(off)
    a.unlink()
    b.unlink()


def test_scan_removes_ghosts_orphans_and_stale(
    root: str, capsys: pytest.CaptureFixture[str]
) -> None:
    keep = shmkit.Region.create("keep", MiB, root=root)
    orphan_creator = python(
        """
import sys, shmkit
r = shmkit.Region.create(sys.argv[1], 1 << 20, root=sys.argv[2])
print("ready", flush=True)
sys.stdin.readline()
""",
        "orphan",
        root,
    )
    wait_line(orphan_creator, "ready", stream="stdout")
    ghost = python(
        """
import sys, shmkit
r = shmkit.Region.open(sys.argv[1], root=sys.argv[2])
print("ready", flush=True)
sys.stdin.readline()
""",
        "keep",
        root,
    )
    wait_line(ghost, "ready", stream="stdout")
    stale = python(CREATOR, "stale", root, failpoints="region.before_ready")
    wait_line(stale, "failpoint region.before_ready reached")
    # A persistent region whose last client closed normally must survive a scan.
    shmkit.Region.create("idle", MiB, root=root).close()
    junk = shm_path(root, "notmine")
    junk.write_bytes(b"x" * 100_000)
    for p in (orphan_creator, ghost, stale):
        kill9(p)
    assert cli.main(["scan", "--root", root]) == 0
    out = capsys.readouterr().out
    assert f"pid {ghost.pid}" in out
    report_names = {i.name for i in shmkit.regions(root)}
    assert report_names == {"keep", "idle", "notmine"}
    assert keep.clients == [os.getpid()]
    assert junk.read_bytes() == b"x" * 100_000, "foreign files are never touched"
    assert shmkit.scan(root) == shmkit.ScanReport((), (), ())
    keep.unlink()


def test_ghost_scan_does_not_confuse_reused_pid_identity(root: str) -> None:
    r = shmkit.Region.create("ids", MiB, root=root)
    info = r.client_info()[0]
    assert info["pid"] == os.getpid() and info["alive"] and info["start_time"] > 0
    assert r.scan_ghosts() == []
    r.unlink()


# ---------------------------------------------------------------- other backings and policy


def test_anonymous_region_handed_over_by_fd(root: str) -> None:
    r = shmkit.Region.create_anonymous(MiB, label="handover")
    off = r.alloc(32)
    r.write(off, b"passed by SCM_RIGHTS")
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    child = python(
        """
import socket, sys, shmkit
s = socket.socket(fileno=int(sys.argv[1]))
msg, fds, _, _ = socket.recv_fds(s, 16, 1)
r = shmkit.Region.from_fd(fds[0])
off = int(msg)
print(r.read(off, 20).decode())
r.write(off, b"answered through memfd")
""",
        str(b.fileno()),
        pass_fds=[b.fileno()],
    )
    socket.send_fds(a, [str(off).encode()], [r.fileno()])
    assert finish(child).strip() == "passed by SCM_RIGHTS"
    assert r.read(off, 22) == b"answered through memfd"
    assert r.path is None and r.name is None
    a.close()
    b.close()
    r.close()


def test_file_backed_region(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "region.bin"
    r = shmkit.Region.create(path, MiB)
    off = r.alloc(8)
    r.write(off, b"on disk!")
    child = python(
        """
import pathlib, sys, shmkit
r = shmkit.Region.open(pathlib.Path(sys.argv[1]))
print(r.read(int(sys.argv[2]), 8).decode())
""",
        str(path),
        str(off),
    )
    assert finish(child).strip() == "on disk!"
    assert path.stat().st_size == MiB and path.stat().st_mode & 0o777 == 0o600
    r.unlink()
    assert not path.exists()


def test_region_place_is_a_name_or_a_path(root: str, tmp_path: pathlib.Path) -> None:
    """A ``str`` is a name, an ``os.PathLike`` a file; anything else is a TypeError, and a
    root makes no sense for a file."""
    with pytest.raises(TypeError, match=r"a name \(str\) or a file"):
        shmkit.Region.create(42, MiB)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="root applies to named regions"):
        shmkit.Region.create(tmp_path / "f", MiB, root=root)
    with pytest.raises(ValueError, match="timeout must be a non-negative number"):
        shmkit.Region.open("x", root=root, timeout=-1)


def test_unlink_policy(root: str) -> None:
    # Default: persistent until unlink(), like POSIX shm.
    r = shmkit.Region.create("persist", MiB, root=root)
    r.close()
    assert shm_path(root, "persist").exists()
    shmkit.Region.open("persist", root=root).unlink()
    # auto_unlink: the last client out unlinks (VPP's policy).
    a = shmkit.Region.create("auto", MiB, root=root, auto_unlink=True)
    with shmkit.Region.open("auto", root=root) as b:
        assert not b.created
    assert shm_path(root, "auto").exists()
    a.close()
    assert not shm_path(root, "auto").exists()


def test_memoryview_is_zero_copy_and_outlives_close(root: str) -> None:
    r = shmkit.Region.create("views", MiB, root=root)
    off = r.alloc(4096)
    view = r.buffer(off, 4096)
    view[:4] = b"abcd"
    assert r.read(off, 4) == b"abcd"
    ro = r.buffer(off, 4, readonly=True)
    assert ro.readonly
    with pytest.raises(TypeError):
        ro[0] = 1
    dest = bytearray(4)
    assert r.read_into(off, dest) == 4 and dest == b"abcd"
    r.write(off, memoryview(b"wxyz"))
    r.close()
    assert bytes(view[:4]) == b"wxyz"  # the mapping lives as long as the view
    view.release()
    shmkit.Region.open("views", root=root).unlink()


def test_close_is_idempotent_and_forked_child_does_not_deregister(root: str) -> None:
    r = shmkit.Region.create("fork", MiB, root=root)
    pid = os.fork()
    if pid == 0:
        r.close()  # never registered in the child: must leave the table alone
        os._exit(0)
    os.waitpid(pid, 0)
    assert r.clients == [os.getpid()]
    r.close()
    r.close()
    assert shmkit.regions(root)[0].clients == ()
    shmkit.Region.open("fork", root=root).unlink()


def test_forked_child_registers_with_its_own_identity(root: str) -> None:
    r = shmkit.Region.create("forked", MiB, root=root)
    assert r.clients == [os.getpid()]  # caches this process's start time
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        child = shmkit.Region.open("forked", root=root)
        os.write(ready_w, b"x")
        os.read(go_r, 1)  # the parent's go-ahead, after its checks
        child.close()
        os._exit(0)
    os.read(ready_r, 1)
    try:
        info = {c["pid"]: c for c in r.client_info()}
        assert info[pid]["alive"], "a forked child must not look like a dead pid"
        assert r.scan_ghosts() == []
    finally:
        os.write(go_w, b"x")
        os.waitpid(pid, 0)
        for fd in (ready_r, ready_w, go_r, go_w):
            os.close(fd)
    assert r.clients == [os.getpid()]
    r.unlink()


def test_sigkill_of_registered_clients_is_scanned(root: str) -> None:
    r = shmkit.Region.create("many", MiB, root=root)
    kids = []
    for _ in range(4):
        c = python(
            """
import sys, shmkit
r = shmkit.Region.open(sys.argv[1], root=sys.argv[2])
print("ready", flush=True)
sys.stdin.readline()
""",
            "many",
            root,
        )
        wait_line(c, "ready", stream="stdout")
        kids.append(c)
    assert len(r.clients) == 5
    for c in kids:
        kill9(c)
    assert [c["alive"] for c in r.client_info()].count(True) == 1
    assert sorted(r.scan_ghosts()) == sorted(c.pid for c in kids)
    assert r.clients == [os.getpid()]
    assert r.stats()["ghosts_removed"] == 4
    r.unlink()
