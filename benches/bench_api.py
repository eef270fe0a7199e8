"""Binary-API benchmark: a Python client calling a Python server in another process, with an
empty handler (echo). Blocking ``call()`` and pipelined ``call_many`` (1024 in flight), plus
the round-trip latency of ``control_ping``; over shared memory, then over VPP's socket
transport (the same server) through shmkit's client and through stock ``vpp_papi`` (if
installed). Run: python benches/bench_api.py [--quick] [--no-socket]"""

from __future__ import annotations

import argparse
import gc
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import Connection

from shmkit.api import memclnt
from shmkit.api.client import Client
from shmkit.api.messages import define, u32
from shmkit.api.server import Server

Echo = define("bench_echo", [("x", u32)])
EchoReply = define("bench_echo_reply", [("x", u32)])


def serve(name: str, root: str, conn: Connection, sock: str | None) -> None:
    server = Server(name, root=root, socket=sock)

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
    ap.add_argument("--no-socket", action="store_true", help="shared memory only")
    args = ap.parse_args()
    n = 20_000 if args.quick else 100_000
    root = f"bapi{os.getpid()}"
    tmp = tempfile.mkdtemp(prefix="shmkit-bench-")
    sock = None if args.no_socket else os.path.join(tmp, "api.sock")
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=serve, args=("bench", root, child, sock), daemon=True)
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
        sock_rows = bench_socket(sock, n) if sock is not None else []
    finally:
        parent.send("stop")
        proc.join(10)
        os.rmdir(tmp)
    q = statistics.quantiles(lat, n=1000)
    print(f"blocking call():                 {blocking:12,.0f} calls/s   (target >= 150,000)")
    print(f"pipelined call_many (1024):      {pipelined:12,.0f} calls/s   (target >= 1,000,000)")
    print(
        f"control_ping round trip:         p50 {q[499]:.1f} us  p99 {q[989]:.1f} us  "
        f"p99.9 {q[998]:.1f} us"
    )
    print("VPP's shared-memory API: about 35,000 blocking requests/s.")
    for row in sock_rows:
        print(row)


def _rate(n: int, fn: Callable[[int], object]) -> float:
    """Best of three: calls per second of ``fn(i)`` for ``i < n``."""
    rates = []
    for _ in range(3):
        t = time.perf_counter()
        for i in range(n):
            fn(i)
        rates.append(n / (time.perf_counter() - t))
    return max(rates)


def _p50_us(fn: Callable[[], object], n: int = 3000) -> tuple[float, float]:
    lat = []
    for _ in range(n):
        t = time.perf_counter_ns()
        fn()
        lat.append((time.perf_counter_ns() - t) / 1000)
    q = statistics.quantiles(lat, n=100)
    return q[49], q[98]


def bench_socket(sock: str, n: int) -> list[str]:
    """The same server over VPP's socket transport: shmkit's client, then vpp_papi's."""
    rows = []
    with Client.connect("bench", "bench-sock", socket=sock) as c:
        c.call_many([Echo(x=i) for i in range(2000)])  # warm up
        blocking = _rate(n // 10, lambda i: c.call(Echo(x=i)))
        msgs = [Echo(x=i) for i in range(n)]
        rates = []
        for _ in range(3):
            t = time.perf_counter()
            replies = c.call_many(msgs, timeout=120, window=1024)
            rates.append(n / (time.perf_counter() - t))
            assert replies[-1].x == n - 1
        p50, p99 = _p50_us(lambda: c.call(memclnt.ControlPing()))
    rows.append(f"socket, shmkit client: call()   {blocking:12,.0f} calls/s")
    rows.append(f"socket, shmkit call_many (1024):{max(rates):12,.0f} calls/s")
    rows.append(f"socket, shmkit control_ping:    p50 {p50:.1f} us  p99 {p99:.1f} us")
    with Client.connect("bench", "bench-sock-shm", socket=sock) as c:
        c.init_shm()  # sock_init_shm: a private segment carries the traffic
        c.call_many([Echo(x=i) for i in range(2000)])  # warm up
        blocking = _rate(n // 10, lambda i: c.call(Echo(x=i)))
        t = time.perf_counter()
        c.call_many(msgs, timeout=120, window=1024)
        pipelined = n / (time.perf_counter() - t)
        p50, p99 = _p50_us(lambda: c.call(memclnt.ControlPing()))
    rows.append(f"sock_init_shm segment: call()   {blocking:12,.0f} calls/s")
    rows.append(f"sock_init_shm call_many (1024): {pipelined:12,.0f} calls/s")
    rows.append(f"sock_init_shm control_ping:     p50 {p50:.1f} us  p99 {p99:.1f} us")
    try:
        from vpp_papi import VPPApiClient  # type: ignore[import-untyped]
    except ImportError:
        rows.append("socket, vpp_papi: not installed (pip install vpp_papi)")
        return rows
    v = VPPApiClient(server_address=sock, bootstrapapi=True, async_thread=False)
    v.connect("bench-papi")
    try:
        echo, ping = v.api.bench_echo, v.api.control_ping
        papi = _rate(n // 20, lambda i: echo(x=i))
        p50, p99 = _p50_us(ping, 2000)
    finally:
        v.disconnect()
    rows.append(f"socket, vpp_papi: call          {papi:12,.0f} calls/s")
    rows.append(f"socket, vpp_papi control_ping:  p50 {p50:.1f} us  p99 {p99:.1f} us")
    return rows


if __name__ == "__main__":
    main()
