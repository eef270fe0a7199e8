"""memif batch forms against a shmkit peer in another process: ``tx_packed``/``rx_into``
(copying) and ``rx_zc``/``tx_alloc_zc``/``tx_commit_zc``/``region`` (zero copy), in both
roles, with 64 B and 1500 B packets, random sizes, chained packets, full rings and every
wrong array a caller can pass."""

from __future__ import annotations

import array
import os
import shutil
import subprocess
from collections.abc import Iterator

import memif_peers
import pytest
from memif_peers import (
    close_pipes,
    echo_packed,
    echo_zc,
    packed,
    random_packets,
    sock_dir,
    stop_peer,
    warm_up,
)
from procs import wait_until
from shmkit.memif import ErrorCode, Interface, MemifError

pytestmark = pytest.mark.timeout(120)


_peers: list[subprocess.Popen[str]] = []


def shmkit_peer(sock: str, **kw: object) -> subprocess.Popen[str]:
    proc = memif_peers.shmkit_peer(sock, **kw)
    _peers.append(proc)
    return proc


@pytest.fixture
def sock() -> Iterator[str]:
    d = sock_dir()
    yield os.path.join(d, "memif.sock")
    while _peers:  # a failed test leaves its peer running: end it
        proc = _peers.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        close_pipes(proc)
    shutil.rmtree(d, ignore_errors=True)


def pair(sock: str, role: str, **peer: object) -> tuple[Interface, subprocess.Popen[str]]:
    """Our interface in ``role`` and an echoing shmkit peer in another process."""
    other = "client" if role == "server" else "server"
    if role == "server":
        me = Interface(sock, role="server")
        proc = shmkit_peer(sock, role=other, **peer)
    else:
        proc = shmkit_peer(sock, role=other, **peer)
        me = Interface(sock, role="client", reconnect_interval=0.05)
    assert me.wait_connected(10)
    return me, proc


@pytest.mark.parametrize("form", ["packed", "zcb"])
@pytest.mark.parametrize("role", ["server", "client"])
@pytest.mark.parametrize("size", [64, 1500])
def test_batch_echo_sequences(sock: str, role: str, form: str, size: int) -> None:
    """Fixed-size packets with sequence numbers through a peer echoing with the same form."""
    me, proc = pair(sock, role, form=form)
    with me:
        warm_up(me, 0)
        pkts = [i.to_bytes(4, "little") * (size // 4) for i in range(20_000)]
        back = echo_packed(me, pkts) if form == "packed" else echo_zc(me, pkts)
        assert back == pkts
        tx, rx = stop_peer(proc)
        assert tx == rx >= len(pkts)


@pytest.mark.parametrize("role", ["server", "client"])
def test_batch_forms_mix_with_burst_forms(sock: str, role: str) -> None:
    """Random sizes: batch forms here, per-packet forms in the peer, and the other way."""
    pkts = random_packets(5000, 4, 2048, seed=int(os.environ.get("SHMKIT_SEED", "11")))
    me, proc = pair(sock, role)
    with me:
        warm_up(me, 0)
        assert echo_packed(me, pkts) == pkts
        assert echo_zc(me, pkts) == pkts
        stop_peer(proc)
    me, proc = pair(sock, role, form="packed")
    with me:
        warm_up(me, 0)
        got: list[bytes] = []
        sent = 0
        while len(got) < len(pkts):
            if sent - len(got) < 128:
                sent += me.tx_burst(0, pkts[sent : sent + 64])
            got.extend(me.rx_burst(0, 256))
            if sent == len(pkts):
                me.wait(0, 0.05)
        assert got == pkts
        stop_peer(proc)


@pytest.mark.parametrize("role", ["server", "client"])
def test_chained_packets(sock: str, role: str) -> None:
    """Packets longer than a buffer: tx_packed chains them and rx_into joins them; rx_zc
    stops before one and refuses it when it comes first, leaving it for rx_into."""
    if role == "server":
        me = Interface(sock, role="server")
        proc = shmkit_peer(sock, role="client", bs=1024)
    else:
        proc = shmkit_peer(sock, role="server")
        me = Interface(sock, role="client", buffer_size=1024, reconnect_interval=0.05)
    with me:
        assert me.wait_connected(10)
        warm_up(me, 0)
        pkts = random_packets(3000, 1, 9000, seed=3)
        assert echo_packed(me, pkts) == pkts
        d = me.details()
        assert d["tx_queues"][0]["buffers"] > d["tx_queues"][0]["packets"]

        small, big = b"s" * 64, bytes(range(256)) * 12  # 3072 B: three buffers
        blob, lens = packed([small, small, big, small])
        assert me.tx_packed(0, blob, lens) == 4
        offs, rlens = array.array("Q", [0] * 8), array.array("I", [0] * 8)
        held = 0

        def zc_until_refused() -> bool:
            nonlocal held
            try:
                held += me.rx_zc(0, offs, rlens)
            except MemifError as e:
                assert e.code == ErrorCode.INVAL_ARG and "chained over 3 buffers" in str(e)
                return True
            me.wait(0, 0.05)
            return False

        wait_until(zc_until_refused, 10)
        assert held == 2
        data, sizes = bytearray(4096), array.array("I", [0] * 1)
        assert me.rx_into(0, data, sizes) == 1 and bytes(data[: sizes[0]]) == big
        assert me.refill(0) == 2

        def one_more() -> bool:
            if me.rx_zc(0, offs, rlens) == 1:
                return True
            me.wait(0, 0.05)
            return False

        wait_until(one_more, 10)
        assert bytes(me.region()[offs[0] : offs[0] + rlens[0]]) == small
        assert me.refill(0) == 1
        # A receive buffer too small for the next packet: an error, the packet stays.
        assert me.tx_packed(0, big, [len(big)]) == 1
        wait_until(lambda: me.wait(0, 0.05), 10)
        with pytest.raises(ValueError, match="3072 bytes, more than the 100 bytes"):
            me.rx_into(0, bytearray(100), sizes)
        assert me.rx_into(0, data, sizes) == 1 and sizes[0] == 3072
        # Zero-copy commits are one buffer each.
        offs1, caps1 = array.array("Q", [0]), array.array("I", [0])
        assert me.tx_alloc_zc(0, 1, offs1, caps1) == 1
        with pytest.raises(MemifError) as ei:
            me.tx_commit_zc(0, array.array("I", [caps1[0] + 1]))
        assert ei.value.code == ErrorCode.NOBUF
        assert me.free(0) == 1
        stop_peer(proc)


def test_full_ring_and_regions(sock: str) -> None:
    """A peer that never reads: the batch sends stop at the ring's size, allocations too."""
    proc = shmkit_peer(sock, role="server", form="sink")
    me = Interface(sock, role="client", log2_ring_size=6, reconnect_interval=0.05)
    with me:
        assert me.wait_connected(10)
        blob, lens = packed([b"x" * 64] * 100)
        assert me.tx_packed(0, blob, lens) == 64
        assert me.tx_packed(0, blob, lens) == 0
        offs, caps = array.array("Q", [0] * 8), array.array("I", [0] * 8)
        assert me.tx_alloc_zc(0, 8, offs, caps) == 0
        # The data region is shmkit's buffer region (1, after the rings); region 0 the rings.
        regions = array.array("H", [7] * 8)
        rlens = array.array("I", [0] * 8)
        assert me.rx_zc(0, offs, rlens, regions) == 0 and list(regions) == [7] * 8
        assert len(me.region()) == len(me.region(1)) == 2 * 64 * 2048
        assert len(me.region(0)) < len(me.region(1))
        with pytest.raises(ValueError, match="region 2 does not exist"):
            me.region(2)
        assert me.details()["tx_queues"][0]["packets"] == 64
        stop_peer(proc)
        assert me.wait_disconnected(10)
        with pytest.raises(MemifError) as e:
            me.tx_packed(0, blob, lens)
        assert e.value.code == ErrorCode.DISCONNECTED
        with pytest.raises(MemifError):
            me.region()


def test_wrong_arrays_are_clear_errors(sock: str) -> None:
    me, proc = pair(sock, "client")
    with me:
        u64, u32 = array.array("Q", [0] * 8), array.array("I", [0] * 8)
        data = bytearray(4096)
        cases: list[tuple[object, type[Exception], str]] = [
            (lambda: me.tx_packed(0, b"x" * 8, array.array("H", [4, 4])), TypeError, 'format "H"'),
            (lambda: me.tx_packed(0, b"x" * 8, b"\x04\0\0\0"), TypeError, "uint32"),
            (lambda: me.tx_packed(0, b"ab", [3]), ValueError, "add up to 3 bytes"),
            (lambda: me.tx_packed(0, b"ab", ["a"]), TypeError, "integer"),
            (lambda: me.tx_packed(0, 5, [1]), TypeError, "bytes-like"),
            (lambda: me.rx_into(0, data, b"\0" * 32), TypeError, "writable buffer of uint32"),
            (lambda: me.rx_into(0, b"\0" * 64, u32), TypeError, "data must be a writable buffer"),
            (lambda: me.rx_into(0, data, array.array("d", [0.0])), TypeError, 'format "d"'),
            (
                lambda: me.rx_zc(0, u32, u32),
                TypeError,
                "offsets must be a writable buffer of uint64",
            ),
            (lambda: me.rx_zc(0, u64, u64), TypeError, "lengths must be"),
            (lambda: me.rx_zc(0, u64, u32, u32), TypeError, "regions must be"),
            (lambda: me.rx_zc(0, u64, array.array("I", [0] * 4)), ValueError, "one length"),
            (lambda: me.rx_zc(0, u64, u32, array.array("H", [0])), ValueError, "regions 1"),
            (lambda: me.tx_alloc_zc(0, 9, u64, u32), ValueError, "9 buffers asked for"),
            (lambda: me.tx_commit_zc(0, u32, 9), ValueError, "more than the 8 entries"),
            (lambda: me.tx_commit_zc(0, [1, 2]), TypeError, "uint32"),
            (
                lambda: me.rx_zc(0, memoryview(bytearray(72))[4:68].cast("Q"), u32),
                ValueError,
                "not aligned",
            ),
            (lambda: me.rx_zc(5, u64, u32), MemifError, "queue 5 does not exist"),
        ]
        for call, exc, text in cases:
            with pytest.raises(exc, match=text):
                call()  # type: ignore[operator]
        # Nothing was sent or taken by the refused calls.
        assert me.details()["tx_queues"][0]["packets"] == 0
        # Typed views of other exporters work: memoryview casts, empty arrays.
        assert (
            me.rx_zc(0, memoryview(bytearray(64)).cast("Q"), memoryview(bytearray(32)).cast("I"))
            == 0
        )
        assert me.tx_packed(0, b"", array.array("I")) == 0
        assert me.rx_into(0, data, array.array("I")) == 0
        stop_peer(proc)
