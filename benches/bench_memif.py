"""memif from Python: packets per second, shmkit <-> shmkit and shmkit <-> DPDK testpmd.

* shmkit -> shmkit: a sender process and a receiver process (one interface each), one way,
  in two forms: copying (``tx_burst``/``rx_burst``) and batched zero copy
  (``alloc``/``tx_commit`` and ``rx_views``/``refill``), polling mode.
* shmkit <-> testpmd (io forwarding echoes every packet): one process sends and receives.

Usage: ``python benches/bench_memif.py [--seconds 2] [--no-testpmd]``. Numbers on a shared
2-core machine are noisy; the report states the load average.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from typing import Any

from shmkit.memif import Interface

BURST = 256


def _receiver(sock: str, zc: bool, seconds: float, q: Any) -> None:
    iface = Interface(sock, role="server", rx_mode="polling")
    q.put("ready")
    iface.wait_connected(30)
    got = 0
    start = None
    deadline = None
    while True:
        if zc:
            n = len(iface.rx_views(0, BURST))
            if n:
                iface.refill(0)
        else:
            n = len(iface.rx_burst(0, BURST))
        if n and start is None:
            start = time.perf_counter()
            deadline = start + seconds
        got += n
        if deadline is not None and time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - (start or 0)
    q.put(got / elapsed)
    iface.close()


def _sender(sock: str, size: int, zc: bool, stop: Any) -> None:
    iface = Interface(sock, role="client", rx_mode="polling", reconnect_interval=0.01)
    iface.wait_connected(30)
    pkts = [b"\x5a" * size] * BURST
    while not stop.is_set():
        try:
            if zc:
                bufs = iface.alloc(0, BURST)
                if bufs:
                    iface.tx_commit(0, size)
            else:
                iface.tx_burst(0, pkts)
        except Exception:
            break
    iface.close()


def shmkit_pair(size: int, zc: bool, seconds: float) -> float:
    ctx = mp.get_context("spawn")
    d = tempfile.mkdtemp(prefix="shmkit-bench-")
    sock = os.path.join(d, "m.sock")
    q = ctx.Queue()
    stop = ctx.Event()
    rx = ctx.Process(target=_receiver, args=(sock, zc, seconds, q))
    rx.start()
    assert q.get(timeout=30) == "ready"
    tx = ctx.Process(target=_sender, args=(sock, size, zc, stop))
    tx.start()
    rate = float(q.get(timeout=seconds + 60))
    stop.set()
    rx.join(30)
    tx.join(30)
    shutil.rmtree(d, ignore_errors=True)
    return rate


def testpmd_echo(size: int, zc: bool, seconds: float) -> float:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    from memif_peers import DpdkPeer, warm_up

    d = tempfile.mkdtemp(prefix="shmkit-bench-")
    sock = os.path.join(d, "m.sock")
    tp = DpdkPeer(sock, role="server")
    try:
        tp.wait_started()
        with Interface(sock, role="client", rx_mode="polling", reconnect_interval=0.05) as me:
            me.wait_connected(30)
            warm_up(me, 0)
            pkts = [b"\x5a" * size] * 64
            got = 0
            inflight = 0
            start = time.perf_counter()
            end = start + seconds
            while time.perf_counter() < end:
                if inflight < 512:
                    if zc:
                        bufs = me.alloc(0, 64)
                        n = me.tx_commit(0, size) if bufs else 0
                    else:
                        n = me.tx_burst(0, pkts)
                    inflight += n
                if zc:
                    k = len(me.rx_views(0, BURST))
                    me.refill(0)
                else:
                    k = len(me.rx_burst(0, BURST))
                got += k
                inflight -= k
            return got / (time.perf_counter() - start)
    finally:
        tp.stop()
        shutil.rmtree(d, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--no-testpmd", action="store_true")
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'peer':<10} {'form':<10} {'size':>6} {'Mpps':>8}")
    for size in (64, 1500):
        for zc in (False, True):
            rate = shmkit_pair(size, zc, args.seconds)
            print(
                f"{'shmkit':<10} {'zero-copy' if zc else 'copy':<10} {size:>6} {rate / 1e6:>8.2f}",
                flush=True,
            )
    if not args.no_testpmd and shutil.which("dpdk-testpmd"):
        for size in (64, 1500):
            for zc in (False, True):
                rate = testpmd_echo(size, zc, args.seconds)
                form = "zero-copy" if zc else "copy"
                print(f"{'testpmd':<10} {form:<10} {size:>6} {rate / 1e6:>8.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
