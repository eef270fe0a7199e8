"""Binary-API benchmark: a Python client calling a Python server in another process, with an
empty handler (echo). Blocking ``call()`` and pipelined ``call_many`` (1024 in flight), plus
the round-trip latency of ``control_ping``. Run: python benches/bench_api.py [--quick]"""

from __future__ import annotations

import argparse
import gc
import multiprocessing as mp
import os
import statistics
import time
from multiprocessing.connection import Connection

from shmkit.api import memclnt
from shmkit.api.client import Client
from shmkit.api.messages import define, u32
from shmkit.api.server import Server

Echo = define("bench_echo", [("x", u32)])
EchoReply = define("bench_echo_reply", [("x", u32)])


def serve(name: str, root: str, conn: Connection) -> None:
    server = Server(name, root=root)

    @server.handle(Echo, reply=EchoReply)
    def echo(msg, client):  # type: ignore[no-untyped-def]
        return EchoReply(x=msg.x)

    conn.send("ready")
    server.start()
    conn.poll(3600)
    server.close()
    server.region.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-gc", action="store_true", help="disable the client's cyclic GC")
    args = ap.parse_args()
    n = 20_000 if args.quick else 100_000
    root = f"bapi{os.getpid()}"
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=serve, args=("bench", root, child), daemon=True)
    proc.start()
    assert parent.recv() == "ready"
    if args.no_gc:
        gc.disable()
    try:
        with Client.connect("bench", "bench", root=root) as c:
            c.call_many([Echo(x=i) for i in range(5000)])  # warm up
            rates = []
            for _ in range(3):
                t = time.perf_counter()
                for i in range(n // 5):
                    c.call(Echo(x=i))
                rates.append(n // 5 / (time.perf_counter() - t))
            blocking = max(rates)
            msgs = [Echo(x=i) for i in range(n)]
            rates = []
            for _ in range(3):
                t = time.perf_counter()
                replies = c.call_many(msgs, timeout=120, window=1024)
                rates.append(n / (time.perf_counter() - t))
                assert replies[-1].x == n - 1
            pipelined = max(rates)
            lat = []
            for _ in range(5000):
                t = time.perf_counter_ns()
                c.call(memclnt.ControlPing())
                lat.append((time.perf_counter_ns() - t) / 1000)
            lat.sort()
    finally:
        parent.send("stop")
        proc.join(10)
    q = statistics.quantiles(lat, n=1000)
    print(f"blocking call():                 {blocking:12,.0f} calls/s   (target >= 150,000)")
    print(f"pipelined call_many (1024):      {pipelined:12,.0f} calls/s   (target >= 1,000,000)")
    print(
        f"control_ping round trip:         p50 {q[499]:.1f} us  p99 {q[989]:.1f} us  "
        f"p99.9 {q[998]:.1f} us"
    )
    print("VPP's shared-memory API: about 35,000 blocking requests/s.")


if __name__ == "__main__":
    main()
