"""Regression tests for what the cross-object spray suite (``test_spray.py``) found: each
writes the exact bytes that once broke a victim, aimed through ``shm_layout()``, and checks
the victim now gets a clear answer.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest
import shmkit
from procs import wait_until
from shmkit._native import shm_layout

LAYOUT = shm_layout()


def field(struct_name: str, name: str) -> tuple[int, int]:
    off, size, _ = LAYOUT["structs"][struct_name]["fields"][name]
    return off, size


def poke(region: shmkit.Region, at: int, size: int, value: int) -> None:
    region.write(at, struct.pack({4: "<I", 8: "<Q"}[size], value))


@pytest.fixture
def region(root: str) -> Iterator[shmkit.Region]:
    r = shmkit.Region.create("reg", 1 << 20, root=root)
    yield r
    r.unlink()
    r.close()


def test_layout_facts_match_the_documented_offsets() -> None:
    assert field("QueueHeader", "head") == (192, 8)
    assert field("QueueHeader", "tail") == (128, 8)
    assert field("RegionHeader", "lock") == (128, 24)
    assert LAYOUT["structs"]["RegionHeader"]["fields"]["clients"][2] == "ClientSlot"
    assert field("MsgHeader", "stamp_ms") == (16, 8)
    assert field("NetmapRing", "head") == (20, 4)
    assert field("MemifRingHeader", "tail") == (64, 2)
    assert LAYOUT["constants"]["queue.header_size"] == 1024


def test_queue_stats_with_counters_at_their_maximum(region: shmkit.Region) -> None:
    """Queue.stats() summed wake-up, timeout and recovery counters with overflowing
    arithmetic: a peer's u64::MAX there made stats() panic."""
    q = shmkit.Queue.create(region, "q", 8, 16)
    for name in (
        "get_wakeups",
        "put_wakeups",
        "put_timeouts",
        "get_timeouts",
        "recovered_gets",
        "role_takeovers",
    ):
        poke(region, q.offset + field("QueueHeader", name)[0], 8, (1 << 64) - 1)
    s = q.stats()
    assert s["wakeups"] == (1 << 64) - 2  # wrapped, like the counters themselves
    assert s["timeouts"] == (1 << 64) - 2
    assert s["get_wakeups"] == (1 << 64) - 1
    q.close()


def test_spsc_role_word_with_our_pid_and_a_foreign_serial(region: shmkit.Region) -> None:
    """A role word naming our own pid with a serial none of our handles holds (a peer's
    garbage, e.g. the real token plus one) used to lock this process out of the role for
    good: every call raised QueueRoleError. It is taken over now; a role another handle of
    ours really holds is still refused."""
    import os

    q = shmkit.Queue.create(region, "s", 8, 16, spsc=True)
    with pytest.raises(shmkit.QueueEmpty):
        q.get_nowait()  # takes the consumer role
    other = shmkit.Queue.open(region, "s")
    with pytest.raises(shmkit.QueueRoleError):
        other.get_nowait()  # q really holds it
    poke(region, q.offset + field("QueueHeader", "consumer")[0], 8, os.getpid() << 32 | 0xDEAD)
    with pytest.raises(shmkit.QueueEmpty):
        other.get_nowait()  # no handle of ours holds 0xdead: taken over
    assert q.stats()["role_takeovers"] == 1
    with pytest.raises(shmkit.QueueRoleError):
        q.get_nowait()  # and now `other` really holds it
    other.close()
    q.close()


def test_msgring_gc_mark_from_the_future(region: shmkit.Region) -> None:
    """A busy head slot whose GC mark a peer set in the future was never reclaimed (its age
    stayed 0): the ring was lost for good. The mark is now renewed and the age rule applies."""

    rings = shmkit.MsgRings.create(region, "r", server=[(64, 2)], client=[(64, 2)], gc_age=0.05)
    held = [rings.alloc(8, pool="client") for _ in range(2)]  # the ring is full, both busy
    head = rings.validate(held[0])["offset"] - 32  # the next alloc looks at slot 0 again
    poke(region, head + field("MsgHeader", "stamp_ms")[0], 8, (1 << 64) - 1)
    before = rings.stats()["garbage_collects"]

    def collected() -> bool:
        ref = rings.alloc(8, pool="client")  # the heap while the ring is busy
        if rings.validate(ref)["ring"] is None:
            rings.free(ref)
        return rings.stats()["garbage_collects"] != before

    wait_until(collected, 10, "the slot marked in the future reclaimed")


@pytest.mark.parametrize("garbage", ["state", "state_destroyed", "end_user"])
def test_netmap_pipe_destroyed_despite_garbage(root: str, garbage: str) -> None:
    """Closing both ends of a pipe left its file in /dev/shm for good when a peer had written
    garbage into the state word (anything but READY) or a user entry naming a live pid with
    no start time (pid 1: it matched init). Both ends closed now always remove it."""
    import mmap
    import os
    import pathlib

    import shmkit.netmap as nm

    a = nm.open("g{0", root=root, slots=8)
    b = nm.open("g}0", root=root)
    lay = a.layout()
    path = f"/dev/shm/{root}-{lay['region']}"
    fd = os.open(path, os.O_RDWR)
    try:
        with mmap.mmap(fd, os.fstat(fd).st_size) as m:
            state = lay["object"] + field("PipeHeader", "state")[0]
            if garbage == "state":
                struct.pack_into("<I", m, state, 0xFFFF_FFFF)
            elif garbage == "state_destroyed":
                struct.pack_into("<I", m, state, 2)
            else:
                users = (
                    lay["object"] + field("PipeHeader", "ends")[0] + field("EndShared", "users")[0]
                )
                struct.pack_into("<IIQ", m, users + 5 * 16, 1, 1, 0)  # pid 1, start time 0
    finally:
        os.close(fd)
    a.close()
    b.close()
    assert not pathlib.Path(path).exists()


def test_closed_damaged_api_client_releases_its_region_at_once(root: str) -> None:
    """A client closed after ConnectionDamagedError kept its region's fd and mapping until a
    GC pass (its stored error's traceback referred back to it): a process reconnecting
    through damage piled them up. close() now releases them at once."""
    import gc
    import os
    import subprocess

    from api_defs import Echo
    from procs import kill9, start_api_server
    from shmkit.api.client import Client, ConnectionDamagedError

    server = start_api_server("api", root, 0.2, stderr=subprocess.DEVNULL)
    region = None
    try:
        region = shmkit.Region.open("api", root=root)
        gc.disable()
        try:
            fds = len(os.listdir("/proc/self/fd"))
            c = Client.connect("api", "victim", root=root, timeout=10)
            q = region.find_object(c.queue_name)
            region.write(q["offset"] + 16, b"\xff" * 64)  # the queue's geometry: damaged
            with pytest.raises(ConnectionDamagedError):
                c.call(Echo(x=1), timeout=5)
            c.close()
            del c
            assert len(os.listdir("/proc/self/fd")) == fds
        finally:
            gc.enable()
    finally:
        if region is not None:
            region.unlink()
            region.close()
        kill9(server)
