"""Who a region may be adopted from: squatted names (another user's file, a wide mode, a
symbolic link, a FIFO), cross-user sharing with uid=/gid=/mode=, and a janitor that never
touches another user's files. Runs as root (as CI does) to own files as other uids."""

from __future__ import annotations

import json
import os
import pathlib
import stat

import pytest
import shmkit
from procs import finish, kill9, python, wait_line

MiB = 1 << 20
NOBODY = 65534
GROUP = 4242  # a group nobody else uses


@pytest.fixture(autouse=True)
def _needs_root() -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI must run as root to own files as other users")
        pytest.skip("needs root to own files as other users")


def shm_path(root: str, name: str) -> pathlib.Path:
    return pathlib.Path(f"/dev/shm/{root}-{name}")


def adopters(name: str, root: str) -> dict[str, object]:
    """Every way of adopting an existing named region."""
    return {
        "open": lambda: shmkit.Region.open(name, root=root, timeout=1),
        "find_or_create": lambda: shmkit.Region.find_or_create(name, MiB, root=root, timeout=1),
        "create": lambda: shmkit.Region.create(name, MiB, root=root),
        "open_file": lambda: shmkit.Region.open(shm_path(root, name), timeout=1),
        "find_or_create_file": lambda: shmkit.Region.find_or_create(
            shm_path(root, name), MiB, timeout=1
        ),
    }


def assert_refused(name: str, root: str, message: str, *, ours: bool = False) -> None:
    """Every adopter refuses ``name`` with ``message``. ``create`` never adopts anything: for a
    file of ours it says the name exists, for another user's (or a link) why it is refused."""
    path = shm_path(root, name)

    def snapshot() -> tuple[object, ...]:
        st = path.lstat()
        data = path.read_bytes() if stat.S_ISREG(st.st_mode) else None
        return (st.st_ino, st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, data)

    before = snapshot()
    for how, adopt in adopters(name, root).items():
        expected: tuple[type[OSError], str] = (PermissionError, message)
        if how == "create" and ours:
            expected = (FileExistsError, "File exists")
        with pytest.raises(expected[0], match=expected[1]) as e:
            adopt()  # type: ignore[operator]
        assert e.value.filename == str(path), how
    assert snapshot() == before, "a refused file must not change"


def test_a_region_squatted_by_another_user_is_refused(root: str) -> None:
    # User B (nobody) pre-created the name with mode 0666: a real region, ready to be used.
    shmkit.Region.create("squat", MiB, root=root, mode=0o666).close()
    os.chown(shm_path(root, "squat"), NOBODY, NOBODY)
    assert_refused("squat", root, f"owned by uid {NOBODY}, expected uid 0")
    # Named explicitly, that owner (and the mode) is accepted.
    with shmkit.Region.open("squat", root=root, uid=NOBODY, mode=0o666) as r:
        assert r.alloc(64)
    with pytest.raises(PermissionError, match="mode 0o666 is wider than 0o600"):
        shmkit.Region.open("squat", root=root, uid=NOBODY)
    with pytest.raises(PermissionError, match=f"group is gid {NOBODY}, expected gid {GROUP}"):
        shmkit.Region.open("squat", root=root, uid=NOBODY, gid=GROUP, mode=0o666)


def test_a_mode_wider_than_asked_is_refused(root: str) -> None:
    shmkit.Region.create("wide", MiB, root=root).close()
    for mode in (0o644, 0o666, 0o700, 0o4600):
        os.chmod(shm_path(root, "wide"), mode)
        assert_refused("wide", root, f"mode {mode:#o} is wider than 0o600", ours=True)
    os.chmod(shm_path(root, "wide"), 0o640)
    shmkit.Region.open("wide", root=root, mode=0o640).close()
    os.chmod(shm_path(root, "wide"), 0o400)  # narrower than asked is fine
    shmkit.Region.open("wide", root=root).close()


def test_a_symbolic_link_is_refused_never_followed(root: str, tmp_path: pathlib.Path) -> None:
    target = shmkit.Region.create("target", MiB, root=root)
    off = target.alloc(8)
    target.write(off, b"private!")
    shm_path(root, "link").symlink_to(shm_path(root, "target"))
    assert_refused("link", root, "symbolic link")
    # A dangling link squats the name just the same, and create does not remove it.
    shm_path(root, "dangling").symlink_to(tmp_path / "nowhere")
    assert_refused("dangling", root, "symbolic link")
    assert not (tmp_path / "nowhere").exists()
    # The registry reports links without following them; scan leaves them alone.
    infos = {i.name: i for i in shmkit.regions(root)}
    assert infos["link"].state == "invalid" and "symbolic link" in infos["link"].detail
    assert infos["target"].state == "ready"
    shmkit.scan(root)
    assert shm_path(root, "link").is_symlink() and shm_path(root, "dangling").is_symlink()
    assert target.read(off, 8) == b"private!"
    target.close()


def test_a_fifo_squatting_a_name_neither_hangs_nor_is_adopted(root: str) -> None:
    os.mkfifo(shm_path(root, "fifo"), 0o600)
    assert_refused("fifo", root, "not a regular file", ours=True)
    [info] = shmkit.regions(root)
    assert info.state == "invalid" and info.detail == "not a regular file"
    assert stat.S_ISFIFO(shm_path(root, "fifo").lstat().st_mode)


def test_a_descriptor_is_checked_too(root: str) -> None:
    # A memfd has no name, so only its owner matters.
    anon = shmkit.Region.create_anonymous(MiB)
    shmkit.Region.from_fd(anon.fileno()).close()
    foreign = shmkit.Region.create_anonymous(MiB, uid=NOBODY)
    assert os.fstat(foreign.fileno()).st_uid == NOBODY
    with pytest.raises(PermissionError, match=f"owned by uid {NOBODY}"):
        shmkit.Region.from_fd(foreign.fileno())
    shmkit.Region.from_fd(foreign.fileno(), uid=NOBODY).close()
    # A named file passed by descriptor: its mode counts.
    shmkit.Region.create("byfd", MiB, root=root, mode=0o644).close()
    fd = os.open(shm_path(root, "byfd"), os.O_RDWR)
    try:
        with pytest.raises(PermissionError, match="mode 0o644 is wider than 0o600"):
            shmkit.Region.from_fd(fd)
        shmkit.Region.from_fd(fd, mode=0o644).close()
    finally:
        os.close(fd)
    anon.close()
    foreign.close()


@pytest.mark.parametrize("bad", [-1, 2**32 - 1, 2**32])
def test_invalid_ids_are_value_errors(root: str, bad: int) -> None:
    with pytest.raises((ValueError, OverflowError)):
        shmkit.Region.create("ids", MiB, root=root, uid=bad)
    with pytest.raises((ValueError, OverflowError)):
        shmkit.Region.open("ids", root=root, gid=bad)


# ---------------------------------------------------------------- sharing across users

AS_USER = """
import os, sys, json, shmkit
uid, gids = int(sys.argv[3]), [int(g) for g in sys.argv[4].split(",")]
os.setgroups(gids[1:])
os.setgid(gids[0])
os.setuid(uid)
kwargs = json.loads(sys.argv[5])
try:
    r = shmkit.Region.open(sys.argv[1], root=sys.argv[2], **kwargs)
    off = r.alloc(16)
    r.write(off, b"from uid %d" % uid)
    print("opened", off)
except PermissionError as e:
    print("PermissionError", e)
"""


def as_user(name: str, root: str, who: int, gids: list[int], **kwargs: int) -> str:
    """Open ``name`` in a process running as uid ``who`` with groups ``gids``."""
    args = (str(who), ",".join(map(str, gids)), json.dumps(kwargs))
    return finish(python(AS_USER, name, root, *args)).strip()


def test_a_group_shares_a_region_created_with_uid_gid_mode(root: str) -> None:
    # VPP's api-segment { uid gid }: the creator names owner, group and a group-wide mode.
    r = shmkit.Region.create("team", MiB, root=root, uid=0, gid=GROUP, mode=0o660)
    st = shm_path(root, "team").stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, GROUP, 0o660)
    # A member of the group, naming that owner, group and mode, shares it.
    out = as_user("team", root, NOBODY, [GROUP], uid=0, gid=GROUP, mode=0o660)
    assert out.startswith("opened"), out
    off = int(out.split()[1])
    assert r.read(off, 16).rstrip(b"\0") == f"from uid {NOBODY}".encode()
    # The same member with the defaults refuses it: not its own region.
    out = as_user("team", root, NOBODY, [GROUP])
    assert f"owned by uid 0, expected uid {NOBODY}" in out
    # A user outside the group cannot open it at all (the kernel says no).
    out = as_user("team", root, NOBODY, [NOBODY], uid=0, gid=GROUP, mode=0o660)
    assert out.startswith("PermissionError") and "Permission denied" in out
    r.unlink()
    r.close()


def test_a_region_created_for_another_user_is_theirs(root: str) -> None:
    r = shmkit.Region.find_or_create("gift", MiB, root=root, uid=NOBODY, gid=NOBODY)
    assert r.created
    st = shm_path(root, "gift").stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (NOBODY, NOBODY, 0o600)
    out = as_user("gift", root, NOBODY, [NOBODY])
    assert out.startswith("opened"), out
    # Its creator now adopts it only by naming the new owner.
    with pytest.raises(PermissionError, match=f"owned by uid {NOBODY}"):
        shmkit.Region.find_or_create("gift", MiB, root=root)
    again = shmkit.Region.find_or_create("gift", MiB, root=root, uid=NOBODY)
    assert not again.created
    again.close()
    r.unlink()
    r.close()


# ---------------------------------------------------------------- the janitor

CREATOR = """
import sys, shmkit
shmkit.Region.create(sys.argv[1], 1 << 20, root=sys.argv[2])
"""

ORPHAN = """
import sys, shmkit
r = shmkit.Region.create(sys.argv[1], 1 << 20, root=sys.argv[2])
print("ready", flush=True)
sys.stdin.readline()
"""


def test_scan_and_recovery_never_touch_another_users_files(root: str) -> None:
    # A stale region (creator killed before ready) and an orphaned one (its only client
    # killed), both handed to another user: scan must report them, not remove them.
    stale = python(CREATOR, "stale", root, failpoints="region.before_ready")
    wait_line(stale, "failpoint region.before_ready reached")
    orphan = python(ORPHAN, "orphan", root)
    wait_line(orphan, "ready", stream="stdout")
    kill9(stale)
    kill9(orphan)
    for name in ("stale", "orphan"):
        os.chown(shm_path(root, name), NOBODY, NOBODY)
    before = {n: shm_path(root, n).read_bytes() for n in ("stale", "orphan")}
    report = shmkit.scan(root)
    assert report.removed == () and report.ghosts == ()
    assert sorted(report.errors) == [
        (n, f"owned by uid {NOBODY}, not by uid 0: left alone") for n in ("orphan", "stale")
    ]
    infos = {i.name: i for i in shmkit.regions(root)}
    assert (infos["stale"].state, infos["stale"].uid) == ("stale", NOBODY)
    assert (infos["orphan"].state, infos["orphan"].uid) == ("ready", NOBODY)
    # create would recover a stale file of ours; another user's is refused, never unlinked.
    with pytest.raises(PermissionError, match=f"owned by uid {NOBODY}"):
        shmkit.Region.create("stale", MiB, root=root)
    assert {n: shm_path(root, n).read_bytes() for n in ("stale", "orphan")} == before
    # Given back to us, the janitor does its work.
    for name in ("stale", "orphan"):
        os.chown(shm_path(root, name), 0, 0)
    report = shmkit.scan(root)
    assert sorted(n for n, _ in report.removed) == ["orphan", "stale"]
