"""shmkit.netmap in one process: names, binding rules, the prologue rule, reinit, the ABI, the
helpers and the error mapping. Multi-process scenarios are in test_netmap_procs.py."""

from __future__ import annotations

import array
import errno
import itertools
import os
import selectors
import struct
import threading
import time
from collections.abc import Iterator

import pytest
import shmkit
import shmkit.netmap as nm
from shmkit._native import process_start_time

# --------------------------------------------------------------------------- helpers

_ids = itertools.count()


@pytest.fixture
def pair(root: str) -> Iterator[tuple[nm.Port, nm.Port]]:
    """A master/slave pair of a fresh 8-slot pipe with small buffers."""
    name = f"t{next(_ids)}"
    tx = nm.open(f"{name}{{0", root=root, slots=8, buf_size=256, extra_bufs=2)
    rx = nm.open(f"{name}}}0", root=root)
    yield tx, rx
    tx.close()
    rx.close()


def put(port: nm.Port, count: int, tag: int = 0, ring: int = 0) -> None:
    """Fill ``count`` one-slot packets at the TX ring's cur and move head = cur."""
    r = port.tx_rings[ring]
    for i in range(count):
        c = r.cur
        r.buf(c)[:4] = bytes([(tag + i) & 0xFF]) * 4
        r.slots[c].len = 4
        r.slots[c].flags = 0
        r.advance()


def take(port: nm.Port, release: int, ring: int = 0) -> list[int]:
    """Read the first byte of up to ``release`` visible packets and release them."""
    r = port.rx_rings[ring]
    out = []
    while not r.empty and len(out) < release:
        out.append(r.packet(r.cur)[0])
        r.advance()
    return out


# --------------------------------------------------------------------------- the prologue rule


def closed_form(n: int, lo: int, hi: int, head: int, cur: int) -> bool:
    d = lambda x, y: (y - x) % n  # noqa: E731
    return head < n and cur < n and d(lo, head) <= d(lo, hi) and d(head, cur) <= d(head, hi)


def test_prologue_rule_exhaustive() -> None:
    checked = 0
    for n in range(1, 13):
        for lo, hi in itertools.product(range(n), repeat=2):
            for head, cur in itertools.product(range(n + 4), repeat=2):
                assert nm.prologue_accepts(n, lo, hi, head, cur) == closed_form(
                    n, lo, hi, head, cur
                )
                checked += 1
    assert checked == sum(n * n * (n + 4) ** 2 for n in range(1, 13))
    # The upstream quirk (cur >= n accepted in a wrapped window) is rejected.
    assert not nm.prologue_accepts(8, 6, 2, 7, 9)


NAMED_N8 = [
    ((0, 7, 0, 0), True),
    ((0, 7, 7, 7), True),
    ((0, 7, 3, 6), True),
    ((0, 6, 7, 7), False),
    ((3, 7, 2, 2), False),
    ((0, 7, 5, 4), False),
    ((6, 2, 7, 0), True),
    ((6, 2, 4, 4), False),
    ((4, 4, 4, 4), True),
    ((4, 4, 5, 5), False),
    ((0, 7, 8, 8), False),
]


@pytest.mark.parametrize(("case", "ok"), NAMED_N8)
def test_named_table_n8_pure(case: tuple[int, int, int, int], ok: bool) -> None:
    assert nm.prologue_accepts(8, *case) is ok


def _ring_in_state(root: str, lo: int, hi: int) -> tuple[nm.Port, nm.Port, nm.Ring]:
    """Drive a real 8-slot pipe until a ring's prologue window is (lo, hi); returns the ring
    (a TX ring whose window is (rhead, rtail), else an RX ring with (hwcur, hwtail))."""
    name = f"s{next(_ids)}"
    tx = nm.open(f"{name}{{0", root=root, slots=8, buf_size=64)
    rx = nm.open(f"{name}}}0", root=root)
    if hi == 7 and lo <= 7:
        put(tx, lo)
        tx.txsync()
        return tx, rx, tx.tx_rings[0]
    # RX window: release lo packets, then have (hi - lo) mod 8 more in flight.
    put(tx, lo)
    tx.txsync()
    rx.rxsync()
    take(rx, lo)
    rx.rxsync()
    tx.txsync()
    put(tx, (hi - lo) % 8)
    tx.txsync()
    rx.rxsync()
    return tx, rx, rx.rx_rings[0]


@pytest.mark.parametrize(("case", "ok"), NAMED_N8)
def test_named_table_n8_on_real_rings(root: str, case: tuple[int, int, int, int], ok: bool) -> None:
    lo, hi, head, cur = case
    tx, rx, ring = _ring_in_state(root, lo, hi)
    sync = tx.txsync if ring.kind == "tx" else rx.rxsync
    if ring.kind == "rx":
        assert (ring.hwcur, ring.hwtail) == (lo, hi)
    ring.head, ring.cur = head, cur
    if ok:
        sync()
        assert ring.reinits == 0
    else:
        with pytest.raises(nm.RingReinit) as ei:
            sync()
        assert ei.value.direction == ring.kind and ei.value.rings == [0]
        # Strict reinit: head = cur = hwcur, tail = hwtail.
        assert (ring.head, ring.cur, ring.tail) == (ring.hwcur, ring.hwcur, ring.hwtail)
        assert ring.reinits == 1
    tx.close()
    rx.close()


# --------------------------------------------------------------------------- reinit


def test_strict_reinit_resets_sanitises_and_skips_the_sync(pair: tuple[nm.Port, nm.Port]) -> None:
    tx, rx = pair
    put(tx, 3)
    tx.txsync()
    r = tx.tx_rings[0]
    r.slots[5].buf_idx = 1  # reserved
    r.slots[6].len = 999  # longer than a buffer
    r.slots[7].buf_idx = tx.total_bufs  # past the pool
    good = r.slots[4].buf_idx
    put_before = r.cur
    r.buf(put_before)[:1] = b"z"
    r.slots[put_before].len = 1
    r.head = (put_before + 1) % 8
    r.cur = put_before  # cur behind head: rejected
    with pytest.raises(nm.RingReinit):
        tx.txsync()
    assert (r.head, r.cur, r.tail) == (3, 3, 7)
    assert (r.slots[5].buf_idx, r.slots[5].len) == (0, 0)
    assert (r.slots[6].len, r.slots[6].buf_idx >= 2) == (0, True)
    assert (r.slots[7].buf_idx, r.slots[7].len) == (0, 0)
    assert r.slots[4].buf_idx == good
    rx.rxsync()
    assert rx.rx_rings[0].tail == 3, "the sync was skipped: nothing more was sent"
    assert tx.stats()["reinits"] == 1
    # poll reports the failure as POLLERR rather than raising.
    r.head = 42
    assert tx.poll(0, events=nm.POLLOUT) & nm.POLLERR
    assert r.head == 3


def test_compat_reinit_reproduces_upstream(root: str) -> None:
    tx = nm.open("c{0", root=root, slots=8, buf_size=64, reinit="compat")
    rx = nm.open("c}0", root=root, reinit="compat")
    assert (tx.reinit, rx.reinit) == ("compat", "compat")
    put(tx, 2)
    t = tx.tx_rings[0]
    t.cur = 1  # behind head = 2
    tx.txsync()  # no exception
    assert (t.head, t.cur) == (2, 1), "in-range values are adopted"
    rx.rxsync()
    assert rx.rx_rings[0].tail == 0, "the TX sync was skipped"
    t.cur = 2
    tx.txsync()
    r = rx.rx_rings[0]
    r.head = 5  # beyond hwtail: rejected, adopted, but the RX sync still runs
    r.cur = 5
    rx.rxsync()
    assert r.reinits == 1
    assert r.head == 5
    t.head = 77  # out of range: reset even in compat mode
    tx.txsync()
    assert t.head == t.hwcur
    tx.close()
    rx.close()


def test_overwritten_tail_is_restored(pair: tuple[nm.Port, nm.Port]) -> None:
    tx, _ = pair
    r = tx.tx_rings[0]
    r.tail = 3
    tx.txsync()
    assert r.tail == 7 and r.reinits == 0


# --------------------------------------------------------------------------- ABI


def test_abi_offsets_match_the_reference() -> None:
    a = nm.abi()
    assert [a[f"slot.{f}"] for f in ("buf_idx", "len", "flags", "ptr")] == [
        (0, 4),
        (4, 2),
        (6, 2),
        (8, 8),
    ]
    assert a["slot"] == (0, 16)
    ring = {f: a[f"ring.{f}"][0] for f in ("buf_ofs", "num_slots", "nr_buf_size", "ringid", "dir")}
    assert ring == {"buf_ofs": 0, "num_slots": 8, "nr_buf_size": 12, "ringid": 16, "dir": 18}
    assert [a[f"ring.{f}"][0] for f in ("head", "cur", "tail", "flags", "ts")] == [
        20,
        24,
        28,
        32,
        40,
    ]
    assert [a[f"ring.{f}"][0] for f in ("offset_mask", "buf_align", "sem", "slot")] == [
        56,
        64,
        128,
        256,
    ]
    assert a["ring"] == (0, 256)
    nif = ["ni_name", "ni_version", "ni_flags", "ni_tx_rings", "ni_rx_rings", "ni_bufs_head"]
    assert [a[f"if.{f}"][0] for f in nif] == [0, 16, 20, 24, 28, 32]
    assert [a["if.ni_host_tx_rings"][0], a["if.ni_host_rx_rings"][0], a["if.ring_ofs"][0]] == [
        36,
        40,
        56,
    ]
    assert a["if"] == (0, 56)


def test_memory_is_byte_compatible(root: str) -> None:
    tx = nm.open("abi{1@conf:tx-rings=2,rx-rings=1,tx-slots=16,rx-slots=8", root=root, buf_size=512)
    lay = tx.layout()
    region = shmkit.Region.open(lay["region"], root=root)
    nifp = lay["nifp"]
    name, version, flags, ntx, nrx, _bufs, htx, hrx = struct.unpack_from(
        "<16s7I", region.read(nifp, 44)
    )
    assert name.rstrip(b"\0") == b"abi{1"
    assert (version, flags, ntx, nrx, htx, hrx) == (14, 0, 2, 1, 0, 0)
    ofs = struct.unpack_from("<3q", region.read(nifp + 56, 24))
    assert [nifp + o for o in ofs] == lay["tx_rings"] + lay["rx_rings"]
    for ring, off, nslots, d in [
        (tx.tx_rings[1], lay["tx_rings"][1], 16, 1),
        (tx.rx_rings[0], lay["rx_rings"][0], 8, 0),
    ]:
        buf_ofs, num_slots, buf_size, ringid, dirv, head, cur, tail = struct.unpack_from(
            "<qIIHHIII", region.read(off, 32)
        )
        assert (num_slots, buf_size, ringid, dirv) == (nslots, 512, ring.index, d)
        assert (head, cur, tail) == (ring.head, ring.cur, ring.tail)
        assert off + buf_ofs == lay["pool"]
        ring.slots[3].ptr = 0x1122334455667788
        ring.slots[3].flags = nm.NS_MOREFRAG
        idx, ln, fl, ptr = struct.unpack_from("<IHHQ", region.read(off + 256 + 3 * 16, 16))
        assert (idx, ln, fl, ptr) == (
            ring.slots[3].buf_idx,
            ring.slots[3].len,
            nm.NS_MOREFRAG,
            0x1122334455667788,
        )
        ring.buf(3)[:6] = b"marker"
        assert region.read(off + buf_ofs + idx * buf_size, 6) == b"marker"
    region.close()
    tx.close()


# --------------------------------------------------------------------------- binding


def test_port_names_and_counts(root: str) -> None:
    s = nm.open("netmap:sw}3@conf:rings=2,tx-rings=3,slots=16", root=root)
    # The request configures the master (tx 3, rx 2); the slave sees them swapped.
    assert (s.role, s.name, s.pipe, s.spec) == (
        "slave",
        "sw}3",
        "sw{3",
        "netmap:sw}3@conf:rings=2,tx-rings=3,slots=16",
    )
    assert (s.num_tx_rings, s.num_rx_rings, len(s.tx_rings), len(s.rx_rings)) == (2, 3, 2, 3)
    m = nm.open("sw{3", root=root, rings=9)  # an existing pipe keeps its geometry
    assert (m.role, m.num_tx_rings, m.num_rx_rings, m.num_tx_slots) == ("master", 3, 2, 16)
    assert m.peer_open and s.peer_open
    assert m.region_name == "netmap.sw{3" and m.root == root
    s.close()
    assert not m.peer_open
    m.close()


def test_binding_modes(root: str) -> None:
    kw = {"root": root, "tx_rings": 2, "rx_rings": 3, "slots": 4, "buf_size": 64}
    one = nm.open("b{0-2", **kw)
    # ONE_NIC 2: TX has only 2 rings -> TX ring 0; RX ring 2.
    assert [r.index for r in one.tx_rings] == [0] and [r.index for r in one.rx_rings] == [2]
    assert (one.mode, one.ringid) == (nm.NR_REG_ONE_NIC, 2)
    with pytest.raises(OSError) as ei:
        nm.open("b{0-3", **kw)
    assert ei.value.errno == errno.EINVAL
    by_kw = nm.open("b{0", ring=1, flags=nm.NR_RX_RINGS_ONLY, **kw)
    assert ([r.index for r in by_kw.tx_rings], [r.index for r in by_kw.rx_rings]) == ([], [1])
    txo = nm.open("b}0/T", **kw)
    assert (len(txo.tx_rings), len(txo.rx_rings)) == (3, 0)
    rxo = nm.open("b}0/R", **kw)
    assert (len(rxo.tx_rings), len(rxo.rx_rings)) == (0, 2)
    null = nm.open("b}0", mode=nm.NR_REG_NULL, **kw)
    assert (null.tx_rings, null.rx_rings) == ([], [])
    assert null.poll(0, events=nm.POLLIN | nm.POLLOUT) == 0
    null.txsync()
    null.rxsync()
    for p in (one, by_kw, txo, rxo, null):
        p.close()


def test_exclusive_two_pass(root: str) -> None:
    kw = {"root": root, "tx_rings": 2, "rx_rings": 1, "slots": 4, "buf_size": 64}
    a = nm.open("x{0-0/T", **kw)
    with pytest.raises(OSError) as ei:
        nm.open("x{0/xT", **kw)  # ring 0 is in use
    assert ei.value.errno == errno.EBUSY
    b = nm.open("x{0-1/xT", **kw)  # ring 1 was not marked by the failed attempt
    with pytest.raises(OSError) as ei:
        nm.open("x{0-1/T", **kw)  # owned exclusively
    assert ei.value.errno == errno.EBUSY
    shared = nm.open("x{0-0/T", **kw)  # non-exclusive sharing within a process
    assert shared.tx_rings[0].index == 0
    b.close()
    c = nm.open("x{0/xR", **kw)
    c.close()
    for p in (a, shared):
        p.close()


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("h{0^", errno.EINVAL),
        ("h{0*", errno.EINVAL),
        ("h{0^2", errno.EINVAL),
        ("h{0@conf:host-rings=1", errno.EINVAL),
        ("eth0", errno.EOPNOTSUPP),
        ("vale0:p{1", errno.EOPNOTSUPP),
        ("h{0/t", errno.EOPNOTSUPP),
        ("h{0@3", errno.EOPNOTSUPP),
        ("h{0@extmem:file=/tmp/x", errno.EOPNOTSUPP),
    ],
)
def test_unsupported_modes_are_clear_errors(root: str, name: str, code: int) -> None:
    with pytest.raises(OSError) as ei:
        nm.open(name, root=root)
    assert ei.value.errno == code
    assert not isinstance(ei.value, ValueError)


@pytest.mark.parametrize(
    "name",
    ["", "p{", "{1", "p{1-", "p{1/", "p{1/q", "p{1@conf:nope=1", "p{1@conf:rings=x", "p q{1"],
)
def test_bad_names_are_value_errors(root: str, name: str) -> None:
    with pytest.raises(ValueError):
        nm.open(name, root=root)


@pytest.mark.parametrize(
    "kw",
    [
        {"slots": 1},
        {"slots": 5000},
        {"rings": 0x1000},
        {"buf_size": 100},
        {"buf_size": 1 << 16},
        {"reinit": "lenient"},
        {"flags": 0x1},
        {"perm": 0o1777},
        {"rings": 2, "tx_rings": 3},
    ],
)
def test_bad_arguments_are_value_errors(root: str, kw: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        nm.open("a{0", root=root, **kw)  # type: ignore[arg-type]


def test_name_and_options_must_agree(root: str) -> None:
    with pytest.raises(ValueError):
        nm.open("a{0@conf:slots=8", root=root, slots=16)
    with pytest.raises(ValueError):
        nm.open("a{0-1", root=root, ring=0)
    p = nm.open("a{0@conf:slots=8", root=root, slots=8)
    assert p.num_tx_slots == 8
    p.close()


# --------------------------------------------------------------------------- helpers


def test_batch_helpers_and_fragments(pair: tuple[nm.Port, nm.Port]) -> None:
    tx, rx = pair
    big = bytes(range(256)) * 2 + b"tail"
    assert tx.send([b"one", big, bytearray(b"three"), memoryview(b"four")]) == 4
    assert rx.recv() == [b"one", big, b"three", b"four"]
    assert tx.send_packed(b"abcdefghij", [3, 0, 7]) == 3
    data = bytearray(64)
    sizes = array.array("I", [0] * 8)
    assert rx.recv_into(data, sizes) == (3, 10)
    assert (bytes(data[:10]), list(sizes[:3])) == (b"abcdefghij", [3, 0, 7])
    assert tx.send_packed(bytes(6), array.array("I", [2, 2, 2])) == 3
    with pytest.raises(ValueError):
        tx.send_packed(b"ab", [3])
    assert rx.recv_into(bytearray(3), array.array("I", [0] * 8)) == (1, 2), (
        "stops when data is full"
    )
    assert [bytes(p) for p in rx.recv()] == [bytes(2)] * 2
    with pytest.raises(ValueError):
        tx.send([bytes(256 * 65)])  # more than 64 fragments
    assert tx.stats()["tx_packets"] == 10
    assert rx.stats()["rx_packets"] == 10


def test_inject_dispatch_and_iteration(pair: tuple[nm.Port, nm.Port]) -> None:
    tx, rx = pair
    assert tx.inject(b"x" * 10) and tx.inject(b"y" * 300)  # 1 + 2 slots
    rx.rxsync()
    assert rx.rx_rings[0].empty, "inject does not sync"
    tx.txsync()
    rx.rxsync()
    seen: list[tuple[str, bytes]] = []
    assert rx.dispatch(lambda v: seen.append((type(v).__name__, bytes(v)))) == 2
    assert seen == [("memoryview", b"x" * 10), ("bytes", b"y" * 300)]
    rx.rxsync()
    tx.txsync()
    assert tx.send([bytes([i]) for i in range(5)]) == 5
    assert list(rx) == [bytes([i]) for i in range(5)]
    assert list(rx) == []
    with pytest.raises(ZeroDivisionError):
        tx.inject(b"boom")
        tx.txsync()
        rx.rxsync()
        rx.dispatch(lambda v: 1 / 0)
    assert rx.rx_rings[0].empty, "the packet the callback saw is released"


def test_send_fills_up_and_waits_for_room(pair: tuple[nm.Port, nm.Port]) -> None:
    tx, rx = pair
    assert tx.send([b"p"] * 20) == 7, "one slot always stays empty"
    assert tx.send([b"q"], timeout=0.05) == 0
    drained: list[bytes] = []

    def drain() -> None:
        deadline = time.monotonic() + 10
        while len(drained) < 9 and time.monotonic() < deadline:
            drained.extend(rx.recv(timeout=1.0))

    t = threading.Thread(target=drain)
    t.start()
    assert tx.send([b"q"] * 2, timeout=10.0) == 2
    t.join(15)
    assert drained == [b"p"] * 7 + [b"q"] * 2


def test_buffer_swap_with_extra_buffers(pair: tuple[nm.Port, nm.Port]) -> None:
    tx, rx = pair
    spare = rx.extra_bufs()
    assert len(spare) == 2 and not set(spare) & set(tx.extra_bufs())
    tx.send([b"swap me"])
    rx.rxsync()
    r = rx.rx_rings[0]
    slot = r.slots[r.cur]
    old = slot.buf_idx
    rx.buffer(spare[0])[:4] = b"mine"
    slot.buf_idx = spare[0]
    slot.flags |= nm.NS_BUF_CHANGED
    assert bytes(rx.buffer(old)[:7]) == b"swap me", "the old buffer is ours now"
    r.advance()
    rx.rxsync()
    assert tx.tx_rings[0].slots[0].buf_idx == spare[0]
    with pytest.raises(IndexError):
        rx.buffer(1)
    with pytest.raises(IndexError):
        rx.buffer(tx.total_bufs)


def test_ring_and_slot_views(pair: tuple[nm.Port, nm.Port]) -> None:
    tx, _ = pair
    r = tx.tx_rings[0]
    assert (r.kind, r.index, r.num_slots, len(r), r.buf_size, r.space) == ("tx", 0, 8, 8, 256, 7)
    assert len(r.slots) == 8 and r.slots[-1].index == 7 and r.slot(-8).index == 0
    with pytest.raises(IndexError):
        r.slots[8]
    with pytest.raises(IndexError):
        r.buf(9)
    view = r.buf(0)
    assert len(view) == 256 and not view.readonly
    r.slots[0].len = 3
    view[:3] = b"abc"
    assert bytes(r.packet(0)) == b"abc" and bytes(r.slots[0].buf()[:3]) == b"abc"
    r.slots[1].len = 257
    with pytest.raises(shmkit.CorruptionError):
        r.packet(1)
    r.slots[2].buf_idx = 0
    with pytest.raises(shmkit.CorruptionError):
        r.buf(2)
    with pytest.raises(ValueError):
        r.advance(8)
    assert "head=0" in repr(r) and "buf_idx" in repr(r.slots[0]) and "p" in repr(tx)
    r.flags = nm.NR_TIMESTAMP
    assert r.flags == nm.NR_TIMESTAMP


def test_rx_timestamps(pair: tuple[nm.Port, nm.Port]) -> None:
    tx, rx = pair
    r = rx.rx_rings[0]
    r.flags = nm.NR_TIMESTAMP
    before = time.time()
    tx.send([b"t"])
    rx.rxsync()
    assert before - 1 <= r.timestamp <= time.time() + 1


def test_fileno_is_readable_while_packets_wait(pair: tuple[nm.Port, nm.Port]) -> None:
    tx, rx = pair
    fd = rx.fileno()
    assert rx.fileno() == fd
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        assert sel.select(0.05) == []
        tx.send([b"ping"])
        assert sel.select(5.0), "readable after the peer published"
        assert rx.poll(0) == nm.POLLIN
        assert sel.select(0), "still a packet to read"
        assert rx.recv() == [b"ping"]
        assert sel.select(0) == []


def test_poll_releases_the_gil_and_wakes(pair: tuple[nm.Port, nm.Port]) -> None:
    tx, rx = pair
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(rx.poll(30.0)))
    start = time.monotonic()
    t.start()
    counted = sum(range(200_000))  # runs while the other thread waits
    tx.send([b"wake"])
    t.join(20)
    assert result == [nm.POLLIN] and counted > 0
    assert time.monotonic() - start < 20
    assert rx.poll(0.02, events=nm.POLLOUT) == nm.POLLOUT
    assert tx.poll(0.0, events=nm.POLLIN) == 0


# --------------------------------------------------------------------------- lifecycle


def test_close_reopen_and_destroy(root: str) -> None:
    tx = nm.open("life{0", root=root, slots=8, buf_size=64)
    rx = nm.open("life}0", root=root)
    tx.send([b"a", b"b", b"c"])
    assert rx.recv(1) == [b"a"]
    rx.close()
    assert rx.closed and not tx.peer_open
    with pytest.raises(shmkit.ClosedError):
        rx.rxsync()
    with pytest.raises(shmkit.ClosedError):
        rx.rx_rings[0].head  # noqa: B018
    tx.send([b"d"])
    rx = nm.open("life}0", root=root)
    assert rx.recv() == [b"b", b"c", b"d"]
    path = f"/dev/shm/{root}-netmap.life{{0"
    tx.close()
    assert os.path.exists(path)
    with rx:
        pass
    assert not os.path.exists(path), "both ends closed: the pipe is gone"
    fresh = nm.open("life}0", root=root, slots=16)
    assert fresh.num_rx_slots == 16 and fresh.recv() == []
    fresh.close()
    assert not os.path.exists(path)


def test_views_outlive_the_port(pair: tuple[nm.Port, nm.Port]) -> None:
    tx, _ = pair
    view = tx.tx_rings[0].buf(0)
    view[:2] = b"ok"
    tx.close()
    assert bytes(view[:2]) == b"ok"


def test_capacity_of_an_end(root: str) -> None:
    m = nm.open("cap{0", root=root, slots=4, buf_size=64)
    lay = m.layout()
    region = shmkit.Region.open(lay["region"], root=root)
    # Fill the slave's table of user processes with a live process (1 never dies), named
    # with its real start time (a start time of 0 is garbage, not a live user).
    slave_users = lay["object"] + 256 + 576 + 64
    for i in range(32):
        region.write(slave_users + 16 * i, struct.pack("<IIQ", 1, 1, process_start_time(1)))
    with pytest.raises(shmkit.CapacityError):
        nm.open("cap}0", root=root)
    region.close()
    m.close()


def test_resume_drops_unsynced_slots_and_unfinished_fragments(root: str) -> None:
    rx = nm.open("rs}0", root=root, slots=8, buf_size=64)
    tx = nm.open("rs{0", root=root)
    assert tx.send([b"kept"]) == 1
    r = tx.tx_rings[0]
    r.buf(r.cur)[:1] = b"F"
    r.slots[r.cur].len = 1
    r.slots[r.cur].flags = nm.NS_MOREFRAG  # the first fragment of a packet never finished
    r.advance()
    tx.txsync()
    assert r.hwcur == 2, "the fragment went out..."
    put(tx, 2, tag=7)  # ...and these are filled but never synced
    assert rx.recv() == [b"kept"], "...but an unfinished packet is never published"
    tx.close()
    tx = nm.open("rs{0", root=root)
    r = tx.tx_rings[0]
    assert (r.head, r.cur, r.hwcur) == (1, 1, 1), "resumed at the end of the published packets"
    assert tx.send([b"after"]) == 1
    assert rx.recv() == [b"after"]
    tx.close()
    rx.close()


def test_no_tx_poll(root: str) -> None:
    tx = nm.open("ntp{0", root=root, slots=8, buf_size=64, flags=nm.NR_NO_TX_POLL)
    rx = nm.open("ntp}0", root=root)
    assert tx.flags & nm.NR_NO_TX_POLL
    assert tx.inject(b"a")
    assert tx.poll(0) == 0
    assert rx.recv() == [], "a POLLIN poll leaves the TX rings alone"
    # Asking for POLLOUT pushes them, even though the ring already shows room (netmap #103).
    assert tx.poll(0, events=nm.POLLOUT) == nm.POLLOUT
    assert rx.recv() == [b"a"]
    tx.close()
    rx.close()
    # Without the flag, a POLLIN poll sends (implicit TX).
    tx = nm.open("ntq{0", root=root, slots=8, buf_size=64)
    rx = nm.open("ntq}0", root=root)
    assert tx.inject(b"b")
    assert tx.poll(0) == 0
    assert rx.recv() == [b"b"]
    tx.close()
    rx.close()


def test_error_mapping_of_region_failures(root: str) -> None:
    with pytest.raises(ValueError):
        nm.open("a{0", root="bad-root")
    with pytest.raises(ValueError):
        nm.open("a{0", root=root, timeout=-1)
    exc = nm.RingReinit("msg", "rx", [1, 2])
    assert isinstance(exc, shmkit.ShmkitError) and (exc.direction, exc.rings) == ("rx", [1, 2])
