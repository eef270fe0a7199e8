"""Handles pickle by re-opening by name, so every ``multiprocessing`` start method (and
``Pool``) can hand a Region, a Queue, an API Client or a netmap pipe end to another process.
Real processes, one test per start method."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import struct
import subprocess
from collections.abc import Iterator

import pytest
import shmkit
import shmkit.netmap
from api_defs import Echo
from procs import kill9, start_api_server
from shmkit.api import Client

METHODS = [m for m in ("spawn", "forkserver", "fork") if m in mp.get_all_start_methods()]


@pytest.fixture
def region(root: str) -> Iterator[shmkit.Region]:
    r = shmkit.Region.create("pk", 4 << 20, root=root)
    yield r
    r.close()


def _write_and_put(region: shmkit.Region, q: shmkit.Queue, off: int, tag: bytes) -> None:
    region.write(off, tag)
    q.put(tag)


@pytest.mark.parametrize("method", METHODS)
def test_region_and_queue_reach_a_child(region: shmkit.Region, method: str) -> None:
    ctx = mp.get_context(method)
    q = shmkit.Queue.create(region, "q", 8, 32)
    off = region.alloc(16)
    tag = method.encode()
    p = ctx.Process(target=_write_and_put, args=(region, q, off, tag))
    p.start()
    assert q.get(True, 30) == tag
    p.join(30)
    assert p.exitcode == 0
    assert region.read(off, len(tag)) == tag


def _square_into(q: shmkit.Queue, i: int) -> int:
    q.put(struct.pack("<I", i * i))
    return i


@pytest.mark.parametrize("method", METHODS)
def test_pool_workers_receive_a_queue(region: shmkit.Region, method: str) -> None:
    q = shmkit.Queue.create(region, "pool", 16, 8)
    with mp.get_context(method).Pool(2) as pool:
        assert sorted(pool.starmap(_square_into, [(q, i) for i in range(8)])) == list(range(8))
    got = sorted(struct.unpack("<I", q.get(timeout=10))[0] for _ in range(8))
    assert got == [i * i for i in range(8)]


def test_pickled_handles_open_the_same_objects(region: shmkit.Region, tmp_path: object) -> None:
    q = shmkit.Queue.create(region, "same", 4, 8)
    q.put(b"hello")
    r2 = pickle.loads(pickle.dumps(region))
    assert (r2.name, r2.root, r2.size) == (region.name, region.root, region.size)
    q2 = pickle.loads(pickle.dumps(q))
    assert (q2.name, q2.capacity, q2.elsize) == ("same", 4, 8)
    assert q2.get(False) == b"hello"
    path = os.path.join(str(tmp_path), "file-region")
    import pathlib

    f = shmkit.Region.create(pathlib.Path(path), 1 << 20)
    try:
        assert pickle.loads(pickle.dumps(f)).path == f.path
    finally:
        f.unlink()
        f.close()


def test_anonymous_regions_refuse_to_pickle_clearly() -> None:
    r = shmkit.Region.create_anonymous(1 << 20)
    try:
        with pytest.raises(TypeError, match=r"anonymous region cannot be pickled.*from_fd"):
            pickle.dumps(r)
    finally:
        r.close()


# ---------------------------------------------------------------- API client


@pytest.fixture
def api_server(root: str) -> Iterator[subprocess.Popen[str]]:
    proc = start_api_server("api", root, 0.05)
    yield proc
    kill9(proc)


def _echo(client: Client, x: int) -> tuple[int, int]:
    try:
        return client.call(Echo(x=x), timeout=10).x, os.getpid()
    finally:
        client.close()


@pytest.mark.parametrize("method", METHODS)
def test_an_api_client_reconnects_in_a_pool_worker(
    root: str, api_server: subprocess.Popen[str], method: str
) -> None:
    with Client.connect("api", "parent", root=root, timeout=5) as c:
        with mp.get_context(method).Pool(1) as pool:
            x, pid = pool.apply(_echo, (c, 41))
        assert x == 41 and pid != os.getpid()
        assert c.call(Echo(x=1), timeout=5).x == 1  # the parent's own connection is untouched


# ---------------------------------------------------------------- netmap pipe ends


def _send_on(pickled_port: bytes, data: bytes) -> None:
    port = pickle.loads(pickled_port)
    try:
        assert port.send([data], timeout=10) == 1
    finally:
        port.close()


@pytest.mark.parametrize("method", METHODS)
def test_a_netmap_pipe_end_reaches_a_child(root: str, method: str) -> None:
    """A ring is driven by one process: the parent hands its end over (pickles it, then
    closes it), the child opens it again from the pickle and sends on it."""
    master = shmkit.netmap.open("pipe{pk", root=root)
    slave = shmkit.netmap.open("pipe}pk", root=root)
    try:
        handed = pickle.dumps(slave)
        slave.close()
        p = mp.get_context(method).Process(target=_send_on, args=(handed, method.encode()))
        p.start()
        got = master.recv(timeout=30)
        p.join(30)
        assert p.exitcode == 0
        assert got == [method.encode()]
    finally:
        master.close()
