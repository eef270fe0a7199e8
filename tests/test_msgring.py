"""Message rings across processes: atomic claims, reaping a killed holder, hostile refs."""

from __future__ import annotations

import os
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


def test_serve_dispatches_natively_and_routes_the_rest(root: str) -> None:
    from shmkit._native import ApiPort, ClientTable, Registration
    from shmkit.api.messages import define, u32

    req, rep, other = (define(n, [("x", u32)]) for n in ("s_req", "s_rep", "s_other"))
    region = shmkit.Region.create("api", 16 << 20, root=root)
    port = ApiPort(shmkit.MsgRings.create(region))
    inq = shmkit.Queue.create(region, "in", 64, 8)

    class Registered:  # what the server keeps per client: its queue and a request count
        def __init__(self, name: str | None) -> None:
            self.queue = shmkit.Queue.create(region, name, 8, 8) if name else None
            # its queue and the process that reads it (none: a client of the socket)
            self.reg = Registration(self.queue, os.getpid())

    a, b, sock = Registered("a"), Registered("b"), Registered(None)
    by_handle = ClientTable()
    by_handle[5], by_handle[6], by_handle[8] = a, b, sock
    assert len(by_handle) == 3 and 5 in by_handle and -1 not in by_handle
    assert by_handle.get(2**40) is None and sorted(by_handle.keys()) == [5, 6, 8]

    def handler(msg: object, client: Registered) -> object:
        x = msg.x  # type: ignore[attr-defined]
        if x == 13:
            raise RuntimeError("unlucky")
        return None if x == 0 else other(x=70) if x == 7 else rep(x=x + 1)

    routed: list[bytes] = []

    def slow(data: bytes) -> None:
        routed.append(data)
        if data[:2] == b"\x00\x03":  # a delete: its client is gone for what follows
            del by_handle[struct.unpack_from(">I", data, 2)[0]]

    failures: list[tuple[type, object]] = []
    encoded: list[int] = []

    def encode_reply(reply: object, context: int) -> bytes:
        encoded.append(context)
        reply.context = context  # type: ignore[attr-defined]
        return reply.encode(102)  # type: ignore[attr-defined, no-any-return]

    def r(x: int, index: int, context: int) -> bytes:
        return req(x=x, client_index=index, context=context).encode(100)  # type: ignore[no-any-return]

    msgs = [
        r(1, 5, 1),  # a: rep(2)
        r(7, 6, 2),  # b: another type, encoded by encode_reply
        r(13, 5, 3),  # the handler raises
        r(0, 5, 4),  # no reply
        r(2, 9, 5),  # unknown client index: slow
        r(2, 8, 5),  # a client without a queue (the socket's): slow
        r(2, 5, 6)[:12],  # truncated: invalid
        struct.pack(">HII", 55, 5, 7),  # unknown id: slow
        b"\x00\x01",  # too short for a header: slow
        struct.pack(">HII", 3, 6, 8),  # deletes b: slow
        r(3, 6, 9),  # b is gone: slow
        r(4, 5, 10),  # a: rep(5)
    ]
    assert port.send_many(inq, msgs, "client") == len(msgs)
    table = {100: (req, req._codec, handler, rep, rep._codec, 101)}
    outbox = port.outbox()
    stats = port.serve(
        inq,
        table,
        by_handle,
        outbox,
        slow,
        lambda e, t, client, ctx: failures.append((type(e), t, client, ctx)),
        encode_reply,
        64,
        1.0,
    )
    assert stats == (12, 6, 1, 1)  # received, served, invalid, handler errors
    assert routed == [msgs[i] for i in (4, 5, 7, 8, 9, 10)]
    assert failures == [(RuntimeError, req, a, 3)]
    assert encoded == [2]
    assert (a.reg.requests, b.reg.requests, sock.reg.requests) == (5, 1, 0)
    assert len(outbox) == 3
    assert sorted(outbox.flush(), key=lambda e: e[1]) == [(b, 1, 0, False), (a, 2, 0, False)]
    assert len(outbox) == 0
    assert a.queue is not None and b.queue is not None
    assert port.recv(a.queue, 8) == [
        rep(x=2, context=1).encode(101),
        rep(x=5, context=10).encode(101),
    ]
    assert port.recv(b.queue, 8) == [other(x=70, context=2).encode(102)]
    # Nothing queued: waits up to the timeout and serves nothing.
    assert port.serve(inq, table, by_handle, outbox, slow, print, encode_reply, 64, 0.01) == (
        0,
        0,
        0,
        0,
    )
    for q in (inq, a.queue, b.queue):
        assert q is not None
        q.close()
    region.unlink()


def test_outbox_never_blocks_and_counts_drops(root: str) -> None:
    from shmkit._native import ApiPort, Registration

    region = shmkit.Region.create("api", 16 << 20, root=root)
    rings = shmkit.MsgRings.create(region)
    port = ApiPort(rings)
    full, gone = (
        shmkit.Queue.create(region, "full", 4, 8),
        shmkit.Queue.create(region, "gone", 4, 8),
    )
    assert sum(r["busy"] for r in rings.ring_stats()) == 0

    class Client:
        def __init__(self, name: str, queue: shmkit.Queue | None) -> None:
            self.name, self.reg = name, Registration(queue, os.getpid())

        def __lt__(self, other: Client) -> bool:
            return self.name < other.name

    to_full, to_gone, to_sock = Client("full", full), Client("gone", gone), Client("sock", None)
    outbox = port.outbox()
    for i in range(6):
        outbox.push(to_full, bytes([i]) * 12)
    outbox.push(to_gone, b"x" * 12)
    outbox.push(to_sock, b"z" * 12)  # no queue: nothing to send it through
    assert len(outbox) == 7
    assert outbox.flush_client(to_gone) == (1, 0, False)
    assert outbox.flush_client(to_gone) is None
    outbox.push(to_gone, b"y" * 12)
    gone.close()
    flushed = sorted(outbox.flush())
    assert flushed == [(to_full, 4, 2, False), (to_gone, 0, 0, False)]  # closed
    assert port.recv(full, 8) == [bytes([i]) * 12 for i in range(4)]
    # Every message that was not delivered was freed.
    assert port.drain(shmkit.Queue.open(region, "gone")) == 1
    assert sum(r["busy"] for r in rings.ring_stats()) == 0
    full.close()
    region.unlink()


def test_serve_raises_ctrl_c_after_finishing_the_batch(root: str) -> None:
    from shmkit._native import ApiPort, ClientTable, Registration
    from shmkit.api.messages import define, u32

    req = define("k_req", [("x", u32)])
    region = shmkit.Region.create("api", 16 << 20, root=root)
    port = ApiPort(shmkit.MsgRings.create(region))
    inq = shmkit.Queue.create(region, "in", 64, 8)
    seen: list[int] = []

    class Registered:
        queue = shmkit.Queue.create(region, "c", 8, 8)
        reg = Registration(queue, os.getpid())

    def handler(msg: object, client: object) -> None:
        seen.append(msg.x)  # type: ignore[attr-defined]
        if msg.x == 2:  # type: ignore[attr-defined]
            raise KeyboardInterrupt

    msgs = [req(x=i, client_index=1).encode(100) for i in range(5)]
    assert port.send_many(inq, msgs, "client") == 5
    table = {100: (req, req._codec, handler, None, None, 0)}
    with pytest.raises(KeyboardInterrupt):
        clients = ClientTable()
        clients[1] = Registered
        port.serve(inq, table, clients, port.outbox(), print, print, print, 64, 1.0)
    assert seen == [0, 1, 2, 3, 4] and Registered.reg.requests == 5  # nothing lost
    assert len(inq) == 0
    Registered.queue.close()
    inq.close()
    region.unlink()


PEER_WRITE = """
import struct, sys, shmkit
region = shmkit.Region.open(sys.argv[1], root=sys.argv[2])
for off in sys.argv[4:]:
    region.write(int(off), struct.pack("<Q", int(sys.argv[3])))
region.close()
"""


@pytest.mark.parametrize("field", [24, 32])  # RingDesc: hits, misses (msgring.rs)
def test_boundary_counters_from_another_process(root: str, field: int) -> None:
    """Issue 11, item 4: a peer writing u64::MAX into a ring's hit counter made the next
    allocation raise PanicException. The counters wrap; allocation goes on."""
    region = shmkit.Region.create("api", 16 << 20, root=root)
    rings = shmkit.MsgRings.create(region)
    base = next(o for o in region.objects() if o["name"] == "api-rings")["offset"]
    offsets = [str(base + 128 + 128 * i + field) for i in range(len(rings.ring_stats()))]
    finish(python(PEER_WRITE, "api", root, str(2**64 - 1), *offsets))
    for pool in ("server", "client"):
        for n in (1, 100, 1000):
            m = rings.alloc(n, pool=pool)
            rings.free(m)
    held = [rings.alloc(1, pool="server") for _ in range(2000)]
    for m in held:
        rings.free(m)
    stats = rings.ring_stats()
    assert any(r["hits"] < 2**64 - 1 for r in stats), stats
    region.unlink()
