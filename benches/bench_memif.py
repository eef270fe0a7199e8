"""memif from Python: packets per second, shmkit <-> shmkit and shmkit <-> DPDK testpmd.

* shmkit -> shmkit: a sender process and a receiver process (one interface each), one way,
  polling mode, in four forms:

  - ``copy``: ``tx_burst``/``rx_burst`` (a list of packets, one ``bytes`` each);
  - ``zc``: ``alloc``/``tx_commit`` and ``rx_views``/``refill`` (one memoryview a buffer);
  - ``packed``: ``tx_packed``/``rx_into`` (one buffer and a uint32 array a burst);
  - ``zcb``: ``tx_alloc_zc``/``tx_commit_zc`` and ``rx_zc``/``refill`` (offset and length
    arrays over one region view: no object a packet).

  The zero-copy senders commit buffers without writing them and the receivers do not read
  them, as in a forwarder that only looks at descriptors.
* shmkit <-> testpmd (io forwarding echoes every packet): one process sends and receives,
  with shmkit as the memif client (testpmd the server) and as the server (``--roles``).

Usage: ``python benches/bench_memif.py [--seconds 2] [--runs 1] [--forms copy,zc,packed,zcb]
[--sizes 64,1500] [--roles client,server] [--no-testpmd] [--no-pair]``. Numbers on a shared
2-core machine are noisy: several runs print the best and the median, and the report states
the load average.
"""

from __future__ import annotations

import argparse
import array
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

from shmkit.memif import Interface

BURST = 256


class Batch:
    """One process's side of a form: ``send(qid, size)`` and ``recv(qid)`` -> packets."""

    def __init__(self, iface: Interface, form: str, size: int, burst: int = BURST) -> None:
        self.iface, self.form, self.size, self.burst = iface, form, size, burst
        self.pkts = [b"\x5a" * size] * burst
        self.data = bytearray(BURST * max(size, 2048))
        self.packed = b"\x5a" * (size * burst)
        self.sizes = array.array("I", [size] * burst)
        self.rsizes = array.array("I", [0] * BURST)
        self.offs, self.lens = array.array("Q", [0] * BURST), array.array("I", [0] * BURST)
        self.toffs, self.caps = array.array("Q", [0] * burst), array.array("I", [0] * burst)
        self.tlens = array.array("I", [size] * burst)

    def send(self, qid: int) -> int:
        i = self.iface
        if self.form == "copy":
            return i.tx_burst(qid, self.pkts)
        if self.form == "zc":
            return i.tx_commit(qid, self.size) if i.alloc(qid, self.burst) else 0
        if self.form == "packed":
            return i.tx_packed(qid, self.packed, self.sizes)
        n = i.tx_alloc_zc(qid, self.burst, self.toffs, self.caps)
        return i.tx_commit_zc(qid, self.tlens, n) if n else 0

    def recv(self, qid: int) -> int:
        i = self.iface
        if self.form == "copy":
            return len(i.rx_burst(qid, BURST))
        if self.form == "zc":
            n = len(i.rx_views(qid, BURST))
        elif self.form == "packed":
            return i.rx_into(qid, self.data, self.rsizes)
        else:
            n = i.rx_zc(qid, self.offs, self.lens)
        if n:
            i.refill(qid, n)
        return n


def _receiver(sock: str, form: str, seconds: float, q: Any) -> None:
    iface = Interface(sock, role="server", rx_mode="polling")
    q.put("ready")
    iface.wait_connected(30)
    side = Batch(iface, form, 0)
    got = 0
    start = None
    deadline = None
    while True:
        n = side.recv(0)
        if n and start is None:
            start = time.perf_counter()
            deadline = start + seconds
        got += n
        if deadline is not None and time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - (start or 0)
    q.put(got / elapsed)
    iface.close()


def _sender(sock: str, size: int, form: str, stop: Any) -> None:
    iface = Interface(sock, role="client", rx_mode="polling", reconnect_interval=0.01)
    iface.wait_connected(30)
    side = Batch(iface, form, size)
    while not stop.is_set():
        try:
            side.send(0)
        except Exception:
            break
    iface.close()


def shmkit_pair(size: int, form: str, seconds: float) -> float:
    ctx = mp.get_context("spawn")
    d = tempfile.mkdtemp(prefix="shmkit-bench-")
    sock = os.path.join(d, "m.sock")
    q = ctx.Queue()
    stop = ctx.Event()
    rx = ctx.Process(target=_receiver, args=(sock, form, seconds, q))
    rx.start()
    assert q.get(timeout=30) == "ready"
    tx = ctx.Process(target=_sender, args=(sock, size, form, stop))
    tx.start()
    rate = float(q.get(timeout=seconds + 60))
    stop.set()
    rx.join(30)
    tx.join(30)
    shutil.rmtree(d, ignore_errors=True)
    return rate


def testpmd_echo(size: int, form: str, seconds: float, role: str = "client") -> float:
    """Packets/s echoed by testpmd (io forwarding) to a shmkit interface of ``role``."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    from memif_peers import DpdkPeer, warm_up

    d = tempfile.mkdtemp(prefix="shmkit-bench-")
    sock = os.path.join(d, "m.sock")
    peer_role = "server" if role == "client" else "client"
    me_kw: dict[str, Any] = {"reconnect_interval": 0.05} if role == "client" else {}
    tp = None
    try:
        if role == "client":
            tp = DpdkPeer(sock, role=peer_role)
            tp.wait_started()
        with Interface(sock, role=role, rx_mode="polling", **me_kw) as me:
            if tp is None:  # shmkit listens first, testpmd connects
                tp = DpdkPeer(sock, role=peer_role)
                tp.wait_started()
            me.wait_connected(30)
            warm_up(me, 0)
            side = Batch(me, form, size, burst=64)
            got = 0
            inflight = 0
            start = time.perf_counter()
            end = start + seconds
            idle = 0
            while time.perf_counter() < end:
                if inflight < 512:
                    inflight += side.send(0)
                k = side.recv(0)
                got += k
                inflight -= k
                # testpmd drops what it cannot send: after a long silence with the window
                # full, count the missing packets as lost instead of stalling for good.
                idle = 0 if k else idle + 1
                if idle > 10_000:
                    inflight = idle = 0
            return got / (time.perf_counter() - start)
    finally:
        if tp is not None:
            tp.stop()
        shutil.rmtree(d, ignore_errors=True)


def measure(fn: Any, size: int, form: str, seconds: float, runs: int, *extra: Any) -> str:
    rates = [fn(size, form, seconds, *extra) / 1e6 for _ in range(runs)]
    if runs == 1:
        return f"{rates[0]:>8.2f}"
    return f"{max(rates):>8.2f} {statistics.median(rates):>8.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--forms", default="copy,zc,packed,zcb")
    ap.add_argument("--sizes", default="64,1500")
    ap.add_argument("--no-testpmd", action="store_true")
    ap.add_argument("--no-pair", action="store_true", help="skip shmkit <-> shmkit")
    ap.add_argument(
        "--roles", default="client,server", help="shmkit's roles against testpmd (client,server)"
    )
    args = ap.parse_args()
    forms = args.forms.split(",")
    sizes = [int(x) for x in args.sizes.split(",")]
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    head = "Mpps" if args.runs == 1 else "best Mpps  median"
    print(f"{'peer':<10} {'form':<8} {'size':>6} {head:>8}")
    for size in sizes if not args.no_pair else []:
        for form in forms:
            r = measure(shmkit_pair, size, form, args.seconds, args.runs)
            print(f"{'shmkit':<10} {form:<8} {size:>6} {r}", flush=True)
    if not args.no_testpmd and shutil.which("dpdk-testpmd"):
        for role in args.roles.split(","):
            for size in sizes:
                for form in forms:
                    r = measure(testpmd_echo, size, form, args.seconds, args.runs, role)
                    print(f"{'testpmd':<10} {form:<8} {size:>6} {r}   (shmkit {role})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
