"""Demo scene: a binary-API server process, client processes calling it, one client killed
with SIGKILL and reaped at once, and the ring statistics."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from multiprocessing.connection import Connection

from shmkit.api.client import Client
from shmkit.api.messages import define, u32
from shmkit.api.server import Server
from shmkit.api.show import describe, format_view

Add = define("demo_add", [("a", u32), ("b", u32)])
AddReply = define("demo_add_reply", [("sum", u32)])
NAME = "tour-api"


def _server(root: str, conn: Connection) -> None:
    server = Server(NAME, root=root)

    @server.handle(Add, reply=AddReply)
    def add(msg, client):  # type: ignore[no-untyped-def]
        return AddReply(sum=(msg.a + msg.b) & 0xFFFFFFFF)

    server.on_reap(
        lambda handle, info: conn.send(f"reaped {info.name!r} (handle {int(handle):#x})")
    )
    conn.send("ready")
    server.start()
    conn.poll(120)  # until the scene says stop
    server.close()
    server.region.unlink()


def _client(root: str, name: str, conn: Connection) -> None:
    with Client.connect(NAME, name, root=root) as c:
        start = time.perf_counter()
        for i in range(2000):
            assert c.call(Add(a=i, b=1)).sum == i + 1
        blocking = 2000 / (time.perf_counter() - start)
        start = time.perf_counter()
        c.call_many([Add(a=i, b=i) for i in range(20000)], timeout=30)
        pipelined = 20000 / (time.perf_counter() - start)
        conn.send((os.getpid(), int(c.handle), blocking, pipelined))
        conn.poll(60)


def run(root: str) -> None:
    ctx = mp.get_context("spawn")
    srv_end, srv_conn = ctx.Pipe()
    server = ctx.Process(target=_server, args=(root, srv_conn), daemon=True)
    server.start()
    assert srv_end.recv() == "ready"
    print(f"server process {server.pid} serves API {NAME!r}")
    clients = []
    for name in ("alpha", "beta", "gamma"):
        end, conn = ctx.Pipe()
        p = ctx.Process(target=_client, args=(root, name, conn), daemon=True)
        p.start()
        clients.append((name, p, end))
    for name, _, end in clients:
        pid, handle, blocking, pipelined = end.recv()
        print(
            f"  client {name} (pid {pid}, handle {handle:#x}): "
            f"{blocking:,.0f} blocking calls/s, {pipelined:,.0f} pipelined calls/s"
        )
    print("\nshmkit api show " + NAME)
    print(format_view(describe(NAME, root)))
    name, victim, _ = clients[1]
    killed = time.monotonic()
    print(f"\nkill -9 {victim.pid} ({name})")
    os.kill(victim.pid or 0, signal.SIGKILL)
    print(f"  server: {srv_end.recv()} after {1000 * (time.monotonic() - killed):.0f} ms")
    print(format_view(describe(NAME, root)))
    for _, p, end in clients:
        if p.is_alive():
            end.send("quit")
        p.join(10)
    srv_end.send("stop")
    server.join(10)
