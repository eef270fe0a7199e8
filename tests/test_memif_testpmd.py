"""Interoperability with DPDK's net_memif (dpdk-testpmd, io forwarding) in both roles.

Skipped locally without testpmd; under CI (env CI set) a missing testpmd fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from memif_peers import (
    DpdkPeer,
    echo,
    echo_packed,
    echo_zc,
    random_packets,
    require_testpmd,
    run_testpmd,
    sock_dir,
    warm_up,
)
from procs import wait_until
from shmkit.memif import Interface

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def sock() -> Iterator[str]:
    require_testpmd()
    d = sock_dir()
    yield os.path.join(d, "memif.sock")
    shutil.rmtree(d, ignore_errors=True)


def client(sock: str, **kw: object) -> Interface:
    return Interface(sock, role="client", reconnect_interval=0.1, **kw)  # type: ignore[arg-type]


def counters_once_counted(tp: DpdkPeer, ipackets: int, opackets: int) -> dict[str, Any]:
    """testpmd's counters once they show ``ipackets`` in and ``opackets`` out, or after 10 s:
    it counts a burst once the burst is in the ring, so its last packets can be back here
    before it counted them."""
    last: list[dict[str, Any]] = []

    def counted() -> bool:
        last[:] = [tp.stats()]
        return bool((last[0]["ipackets"], last[0]["opackets"]) == (ipackets, opackets))

    with contextlib.suppress(TimeoutError):
        wait_until(counted, 10, "testpmd's counters")
    return last[0]


def check_counters(iface: Interface, tp: DpdkPeer) -> None:
    """What we sent is what testpmd received, and what it sent is what we received."""
    d = iface.details()
    tx = sum(q["packets"] for q in d["tx_queues"])
    rx = sum(q["packets"] for q in d["rx_queues"])
    st = counters_once_counted(tp, tx, rx)
    assert (tx, rx) == (st["ipackets"], st["opackets"]), st
    assert sum(q["bytes"] for q in d["tx_queues"]) == st["ibytes"]
    assert sum(q["bytes"] for q in d["rx_queues"]) == st["obytes"]
    for q in range(len(d["tx_queues"])):
        assert d["tx_queues"][q]["packets"] == st["q_ipackets"][q]
        assert d["rx_queues"][q]["packets"] == st["q_opackets"][q]


@pytest.mark.parametrize("role", ["server", "client"])
def test_echo_100k_random_sizes_two_queues(sock: str, role: str) -> None:
    pkts = random_packets(100_000, 60, 1500)
    small = random_packets(5_000, 60, 200, seed=2)
    if role == "server":
        with (
            Interface(sock, role="server", rings=2) as me,
            run_testpmd(sock, role="client", queues=2) as tp,
        ):
            assert me.wait_connected(30), tp.log()
            wait_until(tp.link_up, 10, "testpmd link up")
            assert me.queues == (2, 2)
            assert me.details()["remote_app_name"].startswith("DPDK")
            warm_up(me, 0)
            warm_up(me, 1)
            assert echo(me, 0, pkts) == pkts
            assert echo(me, 1, small) == small
            check_counters(me, tp)
    else:
        with run_testpmd(sock, role="server", queues=2) as tp, client(sock, rings=2) as me:
            assert me.wait_connected(30), me.details()["last_error"]
            wait_until(tp.link_up, 10, "testpmd link up")
            assert me.queues == (2, 2)
            warm_up(me, 0)
            warm_up(me, 1)
            assert echo(me, 0, pkts) == pkts
            assert echo(me, 1, small) == small
            check_counters(me, tp)


@pytest.mark.parametrize("role", ["server", "client"])
def test_zero_copy_testpmd(sock: str, role: str) -> None:
    """testpmd with ``zero-copy=yes``: as a client it hands over its EAL memory files (not
    sealed against shrinking: accepted, and guarded against truncation) and puts packets
    straight into them; as a server the option changes nothing on the wire."""
    pkts = random_packets(20_000, 60, 1500, seed=4)
    if role == "server":
        with (
            Interface(sock, role="server") as me,
            run_testpmd(sock, role="client", zero_copy=True) as tp,
        ):
            assert me.wait_connected(30), f"{me.details()['last_error']}\n{tp.log()}"
            regions = me.details()["regions"]
            assert len(regions) >= 2 and max(regions) >= 64 << 20, regions  # EAL memory
            warm_up(me, 0)
            assert echo(me, 0, pkts) == pkts
            check_counters(me, tp)
    else:
        with run_testpmd(sock, role="server", zero_copy=True) as tp, client(sock) as me:
            assert me.wait_connected(30), me.details()["last_error"]
            warm_up(me, 0)
            assert echo(me, 0, pkts) == pkts
            check_counters(me, tp)


@pytest.mark.parametrize("role", ["server", "client"])
def test_chained_packets_towards_testpmd(sock: str, role: str) -> None:
    # Uniform sizes (testpmd 22.11 mangles mixed single/chained packets it sends back).
    pkts = random_packets(2_000, 5000, 5000, seed=3)
    if role == "server":
        with Interface(sock, role="server") as me, run_testpmd(sock, role="client") as tp:
            assert me.wait_connected(30)
            warm_up(me, 0)
            assert echo(me, 0, pkts) == pkts
            d = me.details()
            assert d["tx_queues"][0]["buffers"] - d["tx_queues"][0]["packets"] == 2 * len(pkts), (
                "5000 B in 2048 B buffers"
            )
            check_counters(me, tp)
    else:
        with run_testpmd(sock, role="server") as tp, client(sock) as me:
            assert me.wait_connected(30)
            warm_up(me, 0)
            assert echo(me, 0, pkts) == pkts
            d = me.details()
            assert d["tx_queues"][0]["buffers"] - d["tx_queues"][0]["packets"] == 2 * len(pkts)
            check_counters(me, tp)


def test_secret_and_id_against_testpmd_server(sock: str) -> None:
    with run_testpmd(sock, role="server", id=7, secret="s3cret") as tp:
        with client(sock, id=7, secret="wrong") as bad:
            wait_until(
                lambda: (
                    bad.details()["last_error"] is not None
                    and "ecret" in bad.details()["last_error"]
                ),
                10,
                "secret refusal",
            )
            assert not bad.connected
        with client(sock, id=8, secret="s3cret") as bad:
            wait_until(
                lambda: (
                    bad.details()["last_error"] is not None and "ID" in bad.details()["last_error"]
                ),
                10,
                "id refusal",
            )
            assert not bad.connected
        with client(sock, id=7, secret="s3cret") as good:
            assert good.wait_connected(30), good.details()["last_error"]
            warm_up(good, 0)
            assert echo(good, 0, [b"x" * 100] * 100) == [b"x" * 100] * 100
            check_counters(good, tp)


def test_secret_and_id_with_testpmd_client(sock: str) -> None:
    with Interface(sock, role="server", id=7, secret="s3cret") as me:
        with run_testpmd(sock, role="client", id=7, secret="wrong") as tp:
            wait_until(
                lambda: me.details()["last_error"] == "incorrect secret", 30, "secret refusal"
            )
            # Our DISCONNECT reached testpmd byte-exact: it logs the reason.
            wait_until(lambda: "incorrect secret" in tp.log(), 30, "testpmd saw the reason")
            assert not me.connected
        with run_testpmd(sock, role="client", id=9, secret="s3cret") as tp:
            wait_until(lambda: "unmatched interface id 9" in tp.log(), 30, "id refusal")
            assert not me.connected
        with run_testpmd(sock, role="client", id=7, secret="s3cret") as tp:
            assert me.wait_connected(30)
            warm_up(me, 0)
            assert echo(me, 0, [b"y" * 64] * 100) == [b"y" * 64] * 100
            check_counters(me, tp)


def test_immediate_start_against_testpmd_server(sock: str) -> None:
    """Traffic starts the moment testpmd's port reports started (telemetry ``dev_started``),
    without probing first, over 20 connects (2 testpmd runs, 10 clients each): every echo
    must come back, every time, and nothing may be dropped on either side.

    testpmd itself discards what arrives between the port's start and the start of
    forwarding (``flush_fwd_rx_queues()`` in ``start_packet_forwarding()``, up to 1 s): a
    client that starts at once loses its first packets there, inside testpmd, whatever the
    memif peer does. ``--no-flush-rx`` turns that off, which leaves what this test is about:
    the memif side (DPDK's ``memif_connect()`` stores 0 into the rings' head and tail; the
    client re-posts its receive buffers whenever the ring shows fewer than it posted).
    Forwarding is stopped around each disconnect (DPDK 22.11 may crash when a peer leaves
    while its forwarding core polls the rings) and restarted before the next client.
    """
    for run in range(2):
        tp = DpdkPeer(sock, role="server", interactive=True, testpmd_args=("--no-flush-rx",))
        try:
            tp.wait_started()
            for i in range(10):
                pkts = random_packets(300, 60, 1500, seed=run * 10 + i)
                with client(sock) as me:
                    assert me.wait_connected(30), (run, i, me.details()["last_error"], tp.log())
                    assert echo(me, 0, pkts, timeout=30) == pkts, (run, i)
                    assert me.details()["violations"] == 0
                    want = 300 * (i + 1)
                    st = counters_once_counted(tp, want, want)  # (since it started)
                    assert st["ipackets"] == st["opackets"] == want, st
                    tp.stop_forwarding()
                # close() said goodbye: testpmd logs our reason instead of reading EOF.
                goodbyes = i + 1
                wait_until(
                    lambda tp=tp, n=goodbyes: (
                        tp.log(None).count("Disconnect received: interface closed") == n
                    ),
                    30,
                    "testpmd got DISCONNECT",
                )
                tp.start_forwarding()
            assert "Invalid message size = 0" not in tp.log(None)
        finally:
            tp.stop()


def test_server_close_says_goodbye_to_testpmd_client(sock: str) -> None:
    with run_testpmd(sock, role="client") as tp:
        me = Interface(sock, role="server")
        try:
            assert me.wait_connected(30), tp.log()
        finally:
            me.close()
        wait_until(lambda: "Disconnect received: interface closed" in tp.log(), 30, "DISCONNECT")
        assert "Invalid message size = 0" not in tp.log()


def test_testpmd_server_stops_and_restarts(sock: str) -> None:
    with client(sock) as me:
        tp = DpdkPeer(sock, role="server")
        try:
            tp.wait_started()
            assert me.wait_connected(30)
            warm_up(me, 0)
            assert len(echo(me, 0, random_packets(1000, 64, 512))) == 1000
        finally:
            tp.stop()  # traffic stopped first: testpmd may crash if the peer goes mid-flow
        assert me.wait_disconnected(10)
        kinds = [e["kind"] for e in me.events()]
        first = kinds.index("connected")
        assert kinds[first + 1] == "disconnected"
        tp = DpdkPeer(sock, role="server")
        try:
            tp.wait_started()
            assert me.wait_connected(30), me.details()["last_error"]
            warm_up(me, 0)
            assert len(echo(me, 0, random_packets(1000, 64, 512))) == 1000
            assert me.details()["connects"] == 2
        finally:
            tp.stop()
        assert me.wait_disconnected(10)


def test_testpmd_client_stops_and_comes_back(sock: str) -> None:
    with Interface(sock, role="server") as me:
        for round_ in range(2):
            with run_testpmd(sock, role="client"):
                assert me.wait_connected(30)
                warm_up(me, 0)
                assert len(echo(me, 0, random_packets(1000, 64, 512, seed=round_))) == 1000
            assert me.wait_disconnected(10)
        assert me.details()["connects"] == 2
        assert os.path.exists(sock)
    assert not os.path.exists(sock), "the server removes its socket file on close"


@pytest.mark.parametrize("form", ["packed", "zcb"])
@pytest.mark.parametrize("role", ["server", "client"])
def test_batch_forms_echo(sock: str, role: str, form: str) -> None:
    """The batch forms against testpmd: 64 B and 1500 B sequences, random sizes, counters
    equal on both sides (chained packets: test_chained_packets_towards_testpmd; testpmd
    mangles mixed single/chained traffic)."""
    runs = [[i.to_bytes(4, "little") * (size // 4) for i in range(20_000)] for size in (64, 1500)]
    runs.append(random_packets(20_000, 60, 1500, seed=4))
    through = echo_packed if form == "packed" else echo_zc
    if role == "server":
        me = Interface(sock, role="server")
        ctx = run_testpmd(sock, role="client")
    else:
        ctx = run_testpmd(sock, role="server")
        me = client(sock)
    with ctx as tp, me:
        assert me.wait_connected(30), me.details()["last_error"]
        wait_until(tp.link_up, 10, "testpmd link up")
        warm_up(me, 0)
        for pkts in runs:
            assert through(me, pkts) == pkts
        check_counters(me, tp)
