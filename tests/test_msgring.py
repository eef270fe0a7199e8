"""Message rings across processes: atomic claims, reaping a killed holder, hostile refs."""

from __future__ import annotations

import struct

import pytest
import shmkit
from procs import finish, kill9, python, wait_line

CLAIMER = """
import os, struct, sys, shmkit
region = shmkit.Region.open(sys.argv[1], root=sys.argv[2])
rings = shmkit.MsgRings.open(region)
me = os.getpid()
for i in range(int(sys.argv[3])):
    m = rings.alloc(16 + i % 900)
    rings.write(m, struct.pack("<QQ", me, i))
    if struct.unpack("<QQ", rings.read(m)[:16]) != (me, i):
        print("shared", flush=True)
        sys.exit(1)
    rings.free(m)
print("ok", flush=True)
"""


def test_processes_never_share_a_slot(root: str) -> None:
    region = shmkit.Region.create("api", 16 << 20, root=root)
    rings = shmkit.MsgRings.create(region)
    kids = [python(CLAIMER, "api", root, "20000") for _ in range(3)]
    assert [finish(k).strip() for k in kids] == ["ok"] * 3
    assert all(r["busy"] == 0 for r in rings.ring_stats())
    assert sum(r["hits"] for r in rings.ring_stats()) + rings.stats()["ring_misses"] == 60000
    region.unlink()


HOLDER = """
import sys, shmkit
region = shmkit.Region.open(sys.argv[1], root=sys.argv[2])
rings = shmkit.MsgRings.open(region)
held = [rings.alloc(n) for n in (10, 500, 1500, 3000, 100_000)]
print(",".join(map(str, held)), flush=True)
sys.stdin.readline()
"""


def test_killed_holder_is_reclaimed(root: str) -> None:
    region = shmkit.Region.create("api", 16 << 20, root=root)
    rings = shmkit.MsgRings.create(region)
    baseline = rings.ring_stats()
    heap_before = region.check()["used_blocks"]
    holder = python(HOLDER, "api", root)
    held = [int(x) for x in wait_line(holder, ",", stream="stdout").split(",")]
    assert sum(r["busy"] for r in rings.ring_stats()) == 4
    assert rings.stats()["ring_misses"] == 1  # 100 kB does not fit any ring
    kill9(holder)
    assert rings.reclaim_pid(holder.pid) == 5
    assert [r["busy"] for r in rings.ring_stats()] == [r["busy"] for r in baseline]
    assert region.check()["used_blocks"] == heap_before
    for m in held:
        with pytest.raises(shmkit.InvalidOffsetError):
            rings.free(m)
    assert rings.stats()["reclaimed"] == 5
    region.unlink()


def test_references_are_validated(root: str) -> None:
    region = shmkit.Region.create("api", 16 << 20, root=root)
    rings = shmkit.MsgRings.create(region, server=[(64, 4)], client=[(128, 4)], gc_age=5)
    m = rings.alloc(40, pool="server")
    rings.write(m, b"x" * 40)
    assert rings.validate(m)["ring"] == 0 and rings.take(m) == 40
    assert bytes(rings.buffer(m)) == b"x" * 40
    for bad in (0, m + 1, m + 64, m ^ (1 << 40), 2**64 - 1, region.alloc(100) + 32):
        with pytest.raises(shmkit.InvalidOffsetError):
            rings.validate(bad)
    with pytest.raises(ValueError):
        rings.write(m, b"y" * 65)
    with pytest.raises(ValueError):
        shmkit.MsgRings.create(region, "bad", server=[(0, 1)])
    with pytest.raises(ValueError):
        rings.alloc(1, pool="nope")
    with pytest.raises(FileExistsError):
        shmkit.MsgRings.create(region)
    with pytest.raises(FileNotFoundError):
        shmkit.MsgRings.open(region, "missing")
    rings.gc_age = 0.5
    assert shmkit.MsgRings.open(region).gc_age == 0.5
    text = rings.format_stats()
    assert "vlib" in text and "clnt" in text and "ring miss fallback allocations" in text
    rings.free(m)
    # Garbage in the pool header is refused at open.
    obj = region.find_object("api-rings")
    region.write(obj["offset"] + 128 + 8, struct.pack("<I", 3))  # nitems of ring 0
    with pytest.raises(shmkit.CorruptionError):
        shmkit.MsgRings.open(region)
    region.unlink()


def test_recv_runs_groups_by_client_index(root: str) -> None:
    from shmkit._native import ApiPort

    region = shmkit.Region.create("api", 16 << 20, root=root)
    port = ApiPort(shmkit.MsgRings.create(region))
    q = shmkit.Queue.create(region, "in", 64, 8)
    msgs = [struct.pack(">HII", 7, ci, n) for n, ci in enumerate([5, 5, 9, 5, 2**32 - 1])]
    msgs += [b"\x00\x07\x00", b"", struct.pack(">HII", 7, 5, 99)]
    assert port.send_many(q, msgs, "client") == len(msgs)
    runs = port.recv_runs(q, 64, 1.0)
    assert runs == [
        (5, msgs[0:2]),
        (9, [msgs[2]]),
        (5, [msgs[3]]),
        (2**32 - 1, [msgs[4]]),
        (-1, msgs[5:7]),  # too short to name a client
        (5, [msgs[7]]),
    ]
    assert port.recv_runs(q, 64, 0.0) == []
    q.close()
    region.unlink()


def test_recv_replies_places_decoded_replies(root: str) -> None:
    from shmkit._native import ApiPort

    region = shmkit.Region.create("api", 16 << 20, root=root)
    port = ApiPort(shmkit.MsgRings.create(region))
    q = shmkit.Queue.create(region, "in", 64, 8)

    def decode(data: bytes) -> tuple[int, int]:
        if data[10:] == b"bad":
            raise ValueError("refused")
        return struct.unpack_from(">HII", data)[::2]  # (msg_id, context)

    base = 2**32 - 2  # the block of contexts wraps at 2^32: base, 2^32 - 1, 0, 1
    msgs = [
        struct.pack(">HII", 7, 0, 0),  # index 2
        struct.pack(">HII", 7, 0, 2**32 - 2),  # index 0
        struct.pack(">HII", 21, 0, 2**32 - 1),  # no decoder (a keepalive): other
        struct.pack(">HII", 7, 0, 5),  # outside the block: other
        struct.pack(">HII", 7, 0, 0),  # index 2 again: a duplicate, other
        struct.pack(">HII", 7, 0, 1) + b"bad",  # refused by its decoder: other
        b"\x00\x07\x00\x00",  # too short: other
        struct.pack(">HII", 7, 0, 1),  # index 3
    ]
    assert port.send_many(q, msgs, "client") == len(msgs)
    out: list[object] = [None] * 4
    placed, others = port.recv_replies(q, out, base, {7: decode}, 64, 1.0)
    assert placed == 3
    assert out == [(7, 2**32 - 2), None, (7, 0), (7, 1)]
    assert others == msgs[2:7]
    assert port.recv_replies(q, out, base, {7: decode}, 64, 0.0) == (0, [])
    q.close()
    region.unlink()
