"""memif interfaces attached to a VALE switch: a shmkit memif peer in another process and
DPDK's testpmd (macswap forwarding) exchange packets with netmap ports through the switch.

The testpmd tests skip locally without dpdk-testpmd; under CI (env CI set) they fail."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator

import pytest
import shmkit.netmap as nm
from memif_peers import require_testpmd, run_testpmd, sock_dir
from procs import finish, python, wait_line, wait_until
from shmkit.memif import Interface
from test_netmap_procs import Peer, kill_and_reap
from test_vale import BCAST, frame, mac, recv_exactly

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def sock() -> Iterator[str]:
    d = sock_dir()
    yield os.path.join(d, "memif.sock")
    shutil.rmtree(d, ignore_errors=True)


def memif_recv(iface: Interface, count: int, timeout: float = 10.0) -> list[bytes]:
    got: list[bytes] = []
    wait_until(
        lambda: got.extend(iface.rx_burst(0, 256)) or len(got) >= count, timeout, f"{count} packets"
    )
    return got


def test_memif_peer_reaches_a_netmap_port_through_the_switch(root: str, sock: str) -> None:
    a = nm.open("vale0:a", root=root)
    bridge = Peer(root)
    try:
        bridge("import shmkit.memif as memif")
        bridge(f"i = memif.Interface({sock!r}, role='client', reconnect_interval=0.1)")
        bridge("m = nm.vale_attach('vale0:m', i, root=root)")
        with Interface(sock, role="server") as peer:
            assert peer.wait_connected(10)
            # memif -> switch: a broadcast reaches a, and the peer's address is learnt on m.
            hello = frame(BCAST, mac(9), b"from memif")
            # A server sends into buffers its client has handed over: wait for the first ones.
            wait_until(lambda: peer.tx_burst(0, [hello]) == 1, 10.0, "room in the M2S ring")
            assert recv_exactly(a, 1) == [hello]
            # switch -> memif: unicast to the learnt address.
            replies = [frame(mac(9), mac(1), bytes([i]) * 40) for i in range(100)]
            assert a.send(replies) == 100
            assert memif_recv(peer, 100) == replies
            macs = {m["mac"]: m["port"] for m in nm.vale_info("vale0", root)["macs"]}
            assert macs == {"02:00:00:00:00:09": "m", "02:00:00:00:00:01": "a"}
            want = {
                "from_memif": 1,
                "to_memif": 100,
                "to_memif_dropped": 0,
                "from_memif_dropped": 0,
            }
            wait_until(lambda: bridge("m.stats()") == want, 10.0, "the bridge's counters")
            # kill -9 of the attaching process: the port is detached, its rings reclaimed.
            kill_and_reap(bridge.proc)
            wait_until(
                lambda: (
                    a.send([frame(mac(9), mac(1))]) == 1
                    and [p["name"] for p in nm.vale_info("vale0", root)["ports"]] == ["a"]
                ),
                10.0,
                "the dead bridge's port detached",
            )
            assert not os.path.exists(f"/dev/shm/{root}-netmap.vale0:m")
    finally:
        if bridge.proc.returncode is None:
            kill_and_reap(bridge.proc)
        a.close()


def test_attach_refuses_non_ethernet_and_non_vale_names(root: str, sock: str) -> None:
    with Interface(sock, role="server", mode="ip") as ip, pytest.raises(ValueError):
        nm.vale_attach("vale0:m", ip, root=root)
    with Interface(sock + "2", role="server") as eth:
        with pytest.raises(ValueError):
            nm.vale_attach("pipe{0", eth, root=root)
        with nm.vale_attach("vale0:m", eth, root=root) as m:
            assert m.running and m.error is None and m.name == "vale0:m"
        assert not m.running


@pytest.mark.parametrize("role", ["client", "server"])
def test_testpmd_exchanges_packets_with_a_netmap_port(root: str, sock: str, role: str) -> None:
    """The memif interface attached to the switch in either role, testpmd in the other."""
    require_testpmd()
    a = nm.open("vale0:a", root=root)
    other = "server" if role == "client" else "client"
    with (
        run_testpmd(sock, role=other, testpmd_args=("--forward-mode=macswap",)) as tp,
        Interface(sock, role=role, reconnect_interval=0.1) as me,
    ):
        m = nm.vale_attach("vale0:m", me, root=root)
        assert me.wait_connected(30), f"{me.details()['last_error']}\n{tp.log()}"
        wait_until(tp.link_up, 10, "testpmd link up")
        # Probe until testpmd answers (DPDK drops the first packets after a connect).
        probe = frame(mac(9), mac(1), b"probe")
        deadline = time.monotonic() + 30
        while not a.recv(16, timeout=0.05):
            assert time.monotonic() < deadline, tp.log()
            a.send([probe])
        while a.recv(64, timeout=0.2):
            pass
        # macswap: what a sends to 02..09 comes back from 02..09; the switch learns it on m.
        pkts = [frame(mac(9), mac(1), i.to_bytes(4, "little") * 16) for i in range(2000)]
        got: list[bytes] = []
        for i in range(0, len(pkts), 64):
            batch = pkts[i : i + 64]
            assert a.send(batch) == len(batch)
            got.extend(recv_exactly(a, len(batch), timeout=20))
        assert got == [frame(mac(1), mac(9), p[14:]) for p in pkts]
        macs = {x["mac"]: x["port"] for x in nm.vale_info("vale0", root)["macs"]}
        assert macs["02:00:00:00:00:09"] == "m"
        # The bridge counts a batch right after handing it on: wait for the last count.
        wait_until(lambda: m.stats()["from_memif"] >= 2000, 10.0, "the bridge's counters")
        assert m.stats()["to_memif"] >= 2000
        m.close()
    a.close()


def test_cli_attach_bridges_until_sigterm(root: str, sock: str) -> None:
    a = nm.open("vale0:a", root=root)
    with Interface(sock, role="server") as peer:
        cli = python(
            "from shmkit.cli import main; raise SystemExit(main())",
            "vale",
            "attach",
            "--root",
            root,
            "vale0:m",
            "--memif",
            sock,
        )
        try:
            wait_line(cli, "attached vale0:m", stream="stdout")
            assert peer.wait_connected(10)
            hello = frame(BCAST, mac(9), b"via the cli")
            wait_until(lambda: peer.tx_burst(0, [hello]) == 1, 10.0, "room in the M2S ring")
            assert recv_exactly(a, 1) == [hello]
            a.send([frame(mac(9), mac(1), b"back")])
            assert memif_recv(peer, 1) == [frame(mac(9), mac(1), b"back")]
            cli.send_signal(signal.SIGTERM)
            out = finish(cli)  # the counters are final once the bridge thread has stopped
            assert "detached vale0:m: 1 packets from memif, 1 to memif" in out
            assert [p["name"] for p in nm.vale_info("vale0", root)["ports"]] == ["a"]
        finally:
            if cli.returncode is None:
                kill_and_reap(cli)
    a.close()
