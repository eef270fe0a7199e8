"""``shmkit.mp.SharedMemory``: the stdlib's shape, and its lifetime rule with real processes:
an attacher's exit never removes a segment, the last user's close does, a segment whose
users were all killed is swept by the next creation, nothing is left in ``/dev/shm``."""

from __future__ import annotations

import multiprocessing as mp
import os
import pathlib
import pickle
from collections.abc import Iterator

import pytest
from procs import finish, kill9, python, wait_line
from shmkit.mp import SharedMemory
from shmkit.mp.shared_memory import ROOT

METHODS = [m for m in ("spawn", "forkserver", "fork") if m in mp.get_all_start_methods()]


def path_of(name: str) -> pathlib.Path:
    return pathlib.Path("/dev/shm") / f"{ROOT}-{name}"


@pytest.fixture
def prefix() -> Iterator[str]:
    """A name prefix for this test; asserts that no segment with it is left behind."""
    p = f"t{os.getpid()}x{os.urandom(3).hex()}"
    yield p
    left = sorted(pathlib.Path("/dev/shm").glob(f"{ROOT}-{p}*"))
    for f in left:
        f.unlink(missing_ok=True)
    assert not left, f"segments left behind: {left}"


def test_create_attach_write_read(prefix: str) -> None:
    with SharedMemory(f"{prefix}a", create=True, size=1000) as a:
        assert (a.name, a.size, len(a.buf or b"")) == (f"{prefix}a", 1000, 1000)
        assert a.buf is not None
        a.buf[:5] = b"hello"
        b = SharedMemory(f"/{prefix}a")  # the stdlib's POSIX spelling works too
        assert b.size == 1000
        assert b.buf is not None and bytes(b.buf[:5]) == b"hello"
        b.close()
        assert b.buf is None
        assert path_of(a.name).exists(), "an attacher's close removed the segment"
    assert not path_of(f"{prefix}a").exists(), "the last user's close left the segment"


def test_random_names_and_stdlib_close_then_unlink(prefix: str) -> None:
    a = SharedMemory(create=True, size=10)
    b = SharedMemory(create=True, size=10)
    assert a.name != b.name and a.name.startswith("psm_")
    b.close()
    b.unlink()  # the stdlib's order: quiet although close() already removed it
    a.unlink()
    assert not path_of(a.name).exists()
    assert a.buf is not None  # still mapped here after the name went
    a.buf[0] = 1
    a.close()
    with pytest.raises(FileNotFoundError):
        a.unlink()


def test_bad_arguments(prefix: str) -> None:
    with pytest.raises(ValueError, match="size"):
        SharedMemory(create=True, size=0)
    with pytest.raises(ValueError, match="size"):
        SharedMemory(create=True, size=-1)
    with pytest.raises(ValueError, match="name"):
        SharedMemory()
    with pytest.raises(FileNotFoundError):
        SharedMemory(f"{prefix}missing")
    with SharedMemory(f"{prefix}x", create=True, size=8), pytest.raises(FileExistsError):
        SharedMemory(f"{prefix}x", create=True, size=8)


def test_views_outlive_close(prefix: str) -> None:
    a = SharedMemory(f"{prefix}v", create=True, size=4096)
    assert a.buf is not None
    part = a.buf[100:200]
    a.close()  # a view still exported: the stdlib raises BufferError here; we keep it valid
    part[:3] = b"abc"
    assert bytes(part[:3]) == b"abc"
    assert not path_of(f"{prefix}v").exists()


def test_track_false_persists_until_unlink(prefix: str) -> None:
    a = SharedMemory(f"{prefix}p", create=True, size=64, track=False)
    a.close()
    assert path_of(f"{prefix}p").exists()
    b = SharedMemory(f"{prefix}p")
    b.close()
    assert path_of(f"{prefix}p").exists()
    b.unlink()
    assert not path_of(f"{prefix}p").exists()


def _child_attaches(name: str, value: int) -> None:
    s = SharedMemory(name)
    assert s.buf is not None
    s.buf[0] = value
    s.close()


@pytest.mark.parametrize("method", METHODS)
def test_attacher_exit_never_unlinks(prefix: str, method: str) -> None:
    """The stdlib's resource tracker unlinked a segment when an attaching process exited."""
    with SharedMemory(f"{prefix}{method}", create=True, size=16) as a:
        p = mp.get_context(method).Process(target=_child_attaches, args=(a.name, 7))
        p.start()
        p.join(60)
        assert p.exitcode == 0
        assert path_of(a.name).exists()
        assert a.buf is not None and a.buf[0] == 7
        again = SharedMemory(a.name)  # still attachable by name
        again.close()


def _child_uses_pickled(s: SharedMemory, value: int) -> None:
    assert s.buf is not None
    s.buf[1] = value
    s.close()


@pytest.mark.parametrize("method", METHODS)
def test_pickled_handle_attaches(prefix: str, method: str) -> None:
    with SharedMemory(f"{prefix}k", create=True, size=16) as a:
        p = mp.get_context(method).Process(target=_child_uses_pickled, args=(a, 9))
        p.start()
        p.join(60)
        assert p.exitcode == 0
        assert a.buf is not None and a.buf[1] == 9
        assert pickle.loads(pickle.dumps(a)).size == 16


_worker_shm: SharedMemory | None = None


def _init_worker(s: SharedMemory) -> None:
    global _worker_shm
    _worker_shm = s


def _poke(i: int) -> int:
    assert _worker_shm is not None and _worker_shm.buf is not None
    _worker_shm.buf[i] = i + 1
    return i


@pytest.mark.parametrize("method", METHODS)
def test_pool_initializer(prefix: str, method: str) -> None:
    with SharedMemory(f"{prefix}pool", create=True, size=8) as a:
        with mp.get_context(method).Pool(2, initializer=_init_worker, initargs=(a,)) as pool:
            assert sorted(pool.map(_poke, range(8))) == list(range(8))
        assert a.buf is not None and bytes(a.buf) == bytes(range(1, 9))
        assert path_of(a.name).exists()


HOLDER = """
import sys
from shmkit.mp import SharedMemory
s = SharedMemory(sys.argv[1], create=sys.argv[2] == "create", size=64)
s.buf[0] = 42
print("holding", flush=True)
sys.stdin.read()
"""


def test_creator_killed_survivor_keeps_it_and_its_close_removes_it(prefix: str) -> None:
    name = f"{prefix}c"
    creator = python(HOLDER, name, "create")
    try:
        wait_line(creator, "holding", stream="stdout")
        b = SharedMemory(name)
    finally:
        kill9(creator)
    assert path_of(name).exists(), "the creator's death removed a segment still in use"
    assert b.buf is not None and b.buf[0] == 42
    again = SharedMemory(name)  # still attachable while a user lives
    again.close()
    b.close()
    assert not path_of(name).exists(), "the last survivor's close left it"


def test_segment_of_killed_users_is_swept_by_next_creation(prefix: str) -> None:
    name = f"{prefix}dead"
    creator = python(HOLDER, name, "create")
    wait_line(creator, "holding", stream="stdout")
    user = python(HOLDER, name, "attach")
    wait_line(user, "holding", stream="stdout")
    kill9(creator)
    kill9(user)
    assert path_of(name).exists()
    with SharedMemory(f"{prefix}new", create=True, size=8):
        assert not path_of(name).exists(), "a segment of dead users survived the sweep"


def test_creator_exit_before_close_with_user_left(prefix: str) -> None:
    """A creator that exits normally while another process uses the segment leaves it."""
    name = f"{prefix}exit"
    user = python(HOLDER, name, "create")
    try:
        wait_line(user, "holding", stream="stdout")
        child = python(
            "import sys\nfrom shmkit.mp import SharedMemory\n"
            "s = SharedMemory(sys.argv[1]); s.buf[1] = 5\n",
            name,
        )
        finish(child)
        assert path_of(name).exists()
        with SharedMemory(name) as s:
            assert s.buf is not None and s.buf[1] == 5
    finally:
        kill9(user)
    # the killed creator was its last user: the next creation sweeps it
    SharedMemory(f"{prefix}z", create=True, size=1).close()
    assert not path_of(name).exists()
