"""VALE switches between real processes: learning, flooding, ageing, attach/detach while
traffic flows, kill -9 of a port and of a destination lock's holder, hostile ports, the CLI.
Each peer is a separate Python interpreter driven one statement at a time."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator

import pytest
import shmkit.netmap as nm
from procs import wait_line, wait_until
from test_netmap_procs import Peer, PeerError, kill_and_reap

BCAST = b"\xff" * 6


def mac(i: int) -> bytes:
    return bytes([0x02, 0, 0, 0, 0, i])


def frame(dst: bytes, src: bytes, payload: bytes = b"") -> bytes:
    return dst + src + b"\x88\xb5" + payload


def recv_exactly(port: nm.Port, count: int, timeout: float = 10.0) -> list[bytes]:
    """Receive ``count`` packets, waiting (bounded) for each batch."""
    got: list[bytes] = []
    wait_until(
        lambda: got.extend(port.recv(count - len(got), timeout=0.05)) or len(got) >= count,
        timeout,
        f"{count} packets",
    )
    return got


def info(root: str, switch: str = "vale0") -> dict:
    return nm.vale_info(switch, root)


def port_info(root: str, name: str, switch: str = "vale0") -> dict:
    return next(p for p in info(root, switch)["ports"] if p["name"] == name)


@pytest.fixture
def peers(root: str) -> Iterator[list[Peer]]:
    made: list[Peer] = []
    yield made
    for p in made:
        if p.proc.returncode is None:
            kill_and_reap(p.proc)


def shm_exists(root: str, name: str) -> bool:
    return os.path.exists(f"/dev/shm/{root}-{name}")


# --------------------------------------------------------------------------- forwarding


def test_learning_flooding_and_unicast_across_processes(root: str, peers: list[Peer]) -> None:
    a = nm.open("vale0:a", root=root)
    b, c = Peer(root), Peer(root)
    peers += [b, c]
    b("p = nm.open('vale0:b', root=root)")
    c("p = nm.open('vale0:c', root=root)")
    assert sorted(p["name"] for p in info(root)["ports"]) == ["a", "b", "c"]
    hello = frame(BCAST, mac(1), b"hello")
    assert a.send([hello]) == 1
    assert b("p.recv(4, timeout=10)") == [hello]
    assert c("p.recv(4, timeout=10)") == [hello]
    # b answers a: a's address was learnt from the broadcast, so only a gets it.
    reply = frame(mac(1), mac(2), b"reply")
    b(f"p.send([{reply!r}])")
    assert recv_exactly(a, 1) == [reply]
    assert c("p.recv(4, timeout=0)") == []
    # Unknown unicast floods; then c is known and reached alone.
    who = frame(mac(9), mac(3), b"who")
    c(f"p.send([{who!r}])")
    assert recv_exactly(a, 1) == [who]
    assert b("p.recv(4, timeout=10)") == [who]
    direct = frame(mac(3), mac(1), b"direct")
    a.send([direct] * 3)
    assert c("p.recv(8, timeout=10)") == [direct] * 3
    assert b("p.recv(8, timeout=0)") == []
    macs = {m["mac"]: m["port"] for m in info(root)["macs"]}
    assert macs == {"02:00:00:00:00:01": "a", "02:00:00:00:00:02": "b", "02:00:00:00:00:03": "c"}
    assert port_info(root, "c")["rx_packets"] == 4
    assert port_info(root, "a")["tx_flooded"] == 1
    a.close()


def test_ageing_forgets_addresses(root: str, peers: list[Peer]) -> None:
    a = nm.open("vale0:a", root=root)
    x = nm.open("vale0:x", root=root)
    b = Peer(root)
    peers.append(b)
    b("p = nm.open('vale0:b', root=root)")
    nm.vale_set_age("vale0", 0.2, root)
    b(f"p.send([{frame(BCAST, mac(2))!r}])")
    recv_exactly(a, 1)
    recv_exactly(x, 1)
    to_b = frame(mac(2), mac(1), b"u")
    a.send([to_b])
    assert b("p.recv(4, timeout=10)") == [to_b]
    assert x.recv(4, timeout=0) == []
    wait_until(lambda: not info(root)["macs"] or all(m["port"] != "b" for m in info(root)["macs"]))
    a.send([to_b])
    assert recv_exactly(x, 1) == [to_b], "an aged address floods again"
    with pytest.raises(ValueError):
        nm.vale_set_age("vale0", 0, root)
    a.close()
    x.close()


def test_a_port_is_driven_by_one_process(root: str, peers: list[Peer]) -> None:
    b = Peer(root)
    peers.append(b)
    b("p = nm.open('vale0:a', root=root)")
    with pytest.raises(OSError) as ei:
        nm.open("vale0:a", root=root)
    assert ei.value.errno == 16  # EBUSY
    # The same process may hold several handles.
    b("q = nm.open('vale0:a', root=root)")
    b("q.close()")
    b("p.close()")
    assert not shm_exists(root, "netmap.vale0"), "the last port removed the switch"
    a = nm.open("vale0:a", root=root)
    a.close()


def test_full_destination_drops_and_the_sender_goes_on(root: str, peers: list[Peer]) -> None:
    a = nm.open("vale0:a", root=root, slots=64)
    b = Peer(root)
    peers.append(b)
    b("p = nm.open('vale0:b@conf:rx-slots=8', root=root)")
    b(f"p.send([{frame(BCAST, mac(2))!r}])")
    recv_exactly(a, 1)
    pkt = frame(mac(2), mac(1), b"x" * 50)
    assert a.send([pkt] * 20) == 20
    assert len(b("p.recv(64, timeout=10)")) == 7
    assert port_info(root, "b")["rx_dropped"] == 13
    a.close()


def test_attach_and_detach_while_traffic_flows(root: str, peers: list[Peer]) -> None:
    rx = nm.open("vale0:rx", root=root, slots=1024)
    sender = Peer(root)
    peers.append(sender)
    sender("p = nm.open('vale0:tx', root=root)")
    sender(f"burst = [{frame(BCAST, mac(7))!r} + bytes([i]) * 20 for i in range(64)]")
    sender.send_nowait("sum(p.send(burst) for _ in range(300))")
    received = 0
    for i in range(30):
        with nm.open(f"vale0:x{i % 3}", root=root) as x:
            x.recv(256, timeout=0)
        received += len(rx.recv(1024, timeout=0))
    assert sender.result(timeout=60) == 300 * 64
    received += len(rx.recv(1024, timeout=0.5))
    while batch := rx.recv(1024, timeout=0.05):
        received += len(batch)
    tx = port_info(root, "tx")
    assert tx["tx_packets"] == 300 * 64
    assert received == port_info(root, "rx")["rx_packets"]
    assert received + port_info(root, "rx")["rx_dropped"] == 300 * 64
    assert sorted(p["name"] for p in info(root)["ports"]) == ["rx", "tx"]
    sender("p.close()")
    rx.close()
    assert not shm_exists(root, "netmap.vale0")


# --------------------------------------------------------------------------- crash safety


def test_kill9_of_a_port_detaches_it_and_reclaims_its_rings(root: str, peers: list[Peer]) -> None:
    a = nm.open("vale0:a", root=root)
    b = Peer(root)
    peers.append(b)
    b("p = nm.open('vale0:b', root=root)")
    b(f"p.send([{frame(BCAST, mac(2))!r}])")
    recv_exactly(a, 1)
    assert shm_exists(root, "netmap.vale0:b")
    kill_and_reap(b.proc)
    # A sender to the dead port's address notices (at most a second later) and reaps it.
    to_b = frame(mac(2), mac(1), b"anyone?")
    wait_until(
        lambda: a.send([to_b]) == 1 and not shm_exists(root, "netmap.vale0:b"),
        10.0,
        "the dead port's rings reclaimed",
    )
    d = info(root)
    assert [p["name"] for p in d["ports"]] == ["a"]
    assert d["reaped"] == 1
    assert all(m["port"] != "b" for m in d["macs"])
    # The name is free again.
    with nm.open("vale0:b", root=root) as again:
        a.send([frame(BCAST, mac(1))])
        assert recv_exactly(again, 1)
    a.close()


def test_a_dead_destination_lock_holder_is_taken_over(root: str, peers: list[Peer]) -> None:
    a = nm.open("vale0:a", root=root)
    c = nm.open("vale0:c", root=root)
    victim = Peer(root, failpoints="vale.deliver")
    peers.append(victim)
    victim("p = nm.open('vale0:b', root=root)")
    # Its broadcast stops inside the first delivery (to a, port 0), holding a's lock.
    victim.send_nowait(f"p.send([{frame(BCAST, mac(2))!r}])")
    wait_line(victim.proc, "shmkit failpoint vale.deliver reached")
    kill_and_reap(victim.proc)
    hello = frame(BCAST, mac(3), b"after")
    assert c.send([hello]) == 1
    assert hello in recv_exactly(a, 1)
    assert info(root)["lock_recoveries"] == 1
    a.close()
    c.close()


def test_kill9_at_random_moments_under_traffic(root: str, peers: list[Peer]) -> None:
    """Senders flooding the switch are killed at random points (mid-txsync, holding the
    receiver's lock, ...): every one is detached and reclaimed, and the switch keeps working."""
    seed = int(os.environ.get("SHMKIT_SEED", random.randrange(1 << 32)))
    print(f"SHMKIT_SEED={seed}")
    rng = random.Random(seed)
    rx = nm.open("vale0:rx", root=root, slots=256)
    for round_ in range(6):
        s = Peer(root)
        peers.append(s)
        s(f"p = nm.open('vale0:s{round_}', root=root)")
        s(f"burst = [{frame(BCAST, mac(20 + round_))!r} + bytes(50)] * 64")
        s.send_nowait("while True: p.send(burst)")
        want = rng.randrange(1, 3000)
        got: list[bytes] = []
        wait_until(
            lambda: got.extend(rx.recv(256, timeout=0.01)) or len(got) >= want,  # noqa: B023
            20.0,
            f"{want} packets from sender {round_}",
        )
        kill_and_reap(s.proc)
    wait_until(
        lambda: [p["name"] for p in info(root)["ports"]] == ["rx"], 10.0, "the dead senders reaped"
    )
    assert not [f for f in os.listdir("/dev/shm") if f.startswith(f"{root}-netmap.vale0:s")]
    with nm.open("vale0:tx", root=root) as tx:
        while rx.recv(256, timeout=0.05):
            pass
        tx.send([frame(BCAST, mac(99), b"still here")])
        assert recv_exactly(rx, 1) == [frame(BCAST, mac(99), b"still here")]
    print("lock recoveries:", info(root)["lock_recoveries"])
    rx.close()


# --------------------------------------------------------------------------- hostile ports


SEED = int(os.environ.get("SHMKIT_SEED", random.randrange(1 << 32)))


def test_hostile_slots_never_leave_validated_buffers(root: str, peers: list[Peer]) -> None:
    print(f"SHMKIT_SEED={SEED}")
    rng = random.Random(SEED)
    a = nm.open("vale0:a", root=root, slots=64, buf_size=256)
    h = Peer(root)
    peers.append(h)
    h("p = nm.open('vale0:h@conf:tx-slots=128,rx-slots=64', root=root)")
    h("r = p.tx_rings[0]")
    good = frame(BCAST, mac(5), b"good")
    # Garbage buffer indexes and lengths, runts, a chain of 70 fragments, then a good one.
    bad_slots = (
        [
            (0, 20, 0),
            (1, 20, 0),
            (2**32 - 1, 20, 0),
            (None, 60000, 0),
            (None, 3, 0),
        ]
        + [(None, 20, 0x20)] * 69
        + [(None, 20, 0)]
    )
    for idx, length, flags in bad_slots:
        set_idx = "" if idx is None else f"r.slots[r.cur].buf_idx = {idx}\n"
        h(
            f"r.buf(r.cur)[:14] = {good[:14]!r}\n{set_idx}r.slots[r.cur].len = {length}\n"
            f"r.slots[r.cur].flags = {flags}\nr.advance()"
        )
        if rng.random() < 0.3:
            h("p.txsync()")
    h("p.txsync()")
    h(f"p.send([{good!r}])")
    # The 64 first fragments of the chain are dropped; its last 6 slots are a packet of
    # their own (as in netmap), then the good one.
    rest, last = recv_exactly(a, 2)
    assert (len(rest), last) == (6 * 20, good)
    assert a.recv(64, timeout=0.05) == []
    assert port_info(root, "h")["tx_bad"] == 6
    # As a receiver: garbage buffer indexes in the slots it hands back are never written
    # through; packets still arrive intact.
    h("q = p.rx_rings[0]\nfor i in range(q.num_slots):\n    q.slots[i].buf_idx = 2**31 + i")
    pkts = [
        frame(mac(5), mac(1), bytes([rng.randrange(256)]) * rng.randrange(1, 200))
        for _ in range(40)
    ]
    for i in range(0, 40, 8):
        a.send(pkts[i : i + 8])
        assert h("p.recv(64, timeout=10)") == pkts[i : i + 8]
    a.close()


# --------------------------------------------------------------------------- CLI


def shmkit_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from shmkit.cli import main; raise SystemExit(main())", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_list_json_and_detach(root: str, peers: list[Peer]) -> None:
    a = nm.open("vale0:a", root=root)
    b = Peer(root)
    peers.append(b)
    b("p = nm.open('vale0:b', root=root)")
    a.send([frame(BCAST, mac(1), b"x")])
    assert b("len(p.recv(4, timeout=10))") == 1
    out = shmkit_cli("vale", "list", "--root", root, "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert [s["name"] for s in data] == ["vale0"]
    ports = {p["name"]: p for p in data[0]["ports"]}
    assert ports["a"]["tx_packets"] == 1 and ports["b"]["rx_packets"] == 1
    assert ports["b"]["pid"] == b.proc.pid
    assert data[0]["macs"] == [
        {"mac": "02:00:00:00:00:01", "port": "a", "age_ms": data[0]["macs"][0]["age_ms"]}
    ]
    text = shmkit_cli("vale", "list", "--root", root)
    assert "vale0:b" in text.stdout and "02:00:00:00:00:01 -> a" in text.stdout
    out = shmkit_cli("vale", "detach", "--root", root, "vale0:b")
    assert out.returncode == 0, out.stderr
    assert [p["name"] for p in info(root)["ports"]] == ["a"]
    with pytest.raises(PeerError) as ei:
        b(f"p.send([{frame(BCAST, mac(2))!r}])")
    assert ei.value.errno == 6  # ENXIO: detached
    assert shmkit_cli("vale", "detach", "--root", root, "vale0:zz").returncode == 3
    assert shmkit_cli("vale", "detach", "--root", root, "nope").returncode == 2
    assert shmkit_cli("vale", "list", "--root", root, "vale9").returncode == 3
    a.close()


def test_bench_script_runs() -> None:
    script = os.path.join(os.path.dirname(__file__), "..", "benches", "bench_vale.py")
    out = subprocess.run(
        [sys.executable, script, "--count", "20000"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    for scenario in ("unicast", "flood", "memif", "pipe"):
        assert f"  {scenario}" in out.stdout
