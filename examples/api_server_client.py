"""A VPP-style binary API: a server process and a client calling it.

    python examples/api_server_client.py [--root R]

The server defines two message types, answers ``add`` with ``add_reply``, and serves until
told to stop. The client (this process) connects, calls it one message at a time, then
pipelines a thousand calls, and asks the server for a ``control_ping``. The API's region is
removed at the end.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from multiprocessing.connection import Connection

from shmkit.api import Client, Server, define
from shmkit.api.messages import u32

Add = define("example_add", [("a", u32), ("b", u32)])
AddReply = define("example_add_reply", [("sum", u32)])


def serve(root: str, conn: Connection) -> None:
    server = Server("calculator", root=root)

    @server.handle(Add, reply=AddReply)
    def add(msg, client):  # type: ignore[no-untyped-def]
        return AddReply(sum=(msg.a + msg.b) & 0xFFFFFFFF)

    server.start()  # a dispatch thread; server.serve_forever() would block here instead
    conn.send("ready")
    conn.recv()  # until the client says stop
    server.close()
    server.region.unlink()
    conn.send("stopped")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="examples", help="root namespace of the API region")
    args = ap.parse_args()

    here, there = mp.Pipe()
    server = mp.get_context("spawn").Process(target=serve, args=(args.root, there))
    server.start()
    try:
        assert here.recv() == "ready"
        with Client.connect("calculator", "example-client", root=args.root, timeout=10) as c:
            print(f"connected to server pid {c.server_pid} as handle {c.handle}")
            print("add(1, 2) =", c.call(Add(a=1, b=2)).sum)
            started = time.perf_counter()
            replies = c.call_many([Add(a=i, b=i) for i in range(1000)])
            elapsed = time.perf_counter() - started
            assert [r.sum for r in replies] == [2 * i for i in range(1000)]
            print(f"1000 pipelined calls in {elapsed * 1e3:.1f} ms, every reply checked")
            print(f"control_ping round trip: {c.ping(5) * 1e6:.0f} us")
    finally:
        here.send("stop")
        assert here.recv() == "stopped"
        server.join(10)


if __name__ == "__main__":
    main()
