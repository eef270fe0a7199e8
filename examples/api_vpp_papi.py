"""VPP's own Python client (vpp_papi) talking to a shmkit API server over VPP's socket.

    python examples/api_vpp_papi.py [--root R]

The server (another process) serves its API on a Unix socket beside shared memory. Stock
``vpp_papi`` connects there, learns every message from the server (``get_api_json``), calls a
request, runs a dump and disconnects; shmkit's own client then does the same over the same
socket. Without vpp_papi installed (``pip install vpp_papi``), only shmkit's client runs.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
from multiprocessing.connection import Connection

from shmkit.api import Client, Server, define
from shmkit.api.messages import string, u32

Add = define("example_add", [("a", u32), ("b", u32)])
AddReply = define("example_add_reply", [("sum", u32)])
NamesDump = define("example_names_dump", [("count", u32)])
NameDetails = define("example_name_details", [("index", u32), ("name", string(16))])


def serve(root: str, sock: str, conn: Connection) -> None:
    server = Server("calculator", root=root, socket=sock, socket_mode=0o600)

    @server.handle(Add, reply=AddReply)
    def add(msg, client):  # type: ignore[no-untyped-def]
        return AddReply(sum=(msg.a + msg.b) & 0xFFFFFFFF)

    @server.handle(NamesDump, reply=NameDetails, stream=True)
    def names(msg, client):  # type: ignore[no-untyped-def]
        for i in range(msg.count):
            yield NameDetails(index=i, name=f"name-{i}")

    server.start()
    conn.send("ready")
    conn.recv()  # until told to stop
    server.close()
    server.region.unlink()
    conn.send("stopped")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="examples", help="root namespace of the API region")
    args = ap.parse_args()
    sock = os.path.join(tempfile.mkdtemp(prefix="shmkit-example-"), "api.sock")

    here, there = mp.Pipe()
    server = mp.get_context("spawn").Process(target=serve, args=(args.root, sock, there))
    server.start()
    try:
        assert here.recv() == "ready"
        try:
            from vpp_papi import VPPApiClient  # type: ignore[import-untyped]
        except ImportError:
            print("vpp_papi is not installed: skipping it (pip install vpp_papi)")
        else:
            vpp = VPPApiClient(server_address=sock, bootstrapapi=True)
            vpp.connect("example-vpp-papi")
            print("vpp_papi: example_add(2, 3) =", vpp.api.example_add(a=2, b=3).sum)
            details = vpp.api.example_names_dump(count=3)
            print("vpp_papi: example_names_dump ->", [d.name for d in details])
            vpp.disconnect()
        with Client.connect("calculator", "example-client", socket=sock, timeout=10) as c:
            print("shmkit over the socket: example_add(4, 5) =", c.call(Add(a=4, b=5)).sum)
            print("shmkit over the socket: dump ->", [d.name for d in c.dump(NamesDump(count=3))])
    finally:
        here.send("stop")
        assert here.recv() == "stopped"
        server.join(10)
        os.rmdir(os.path.dirname(sock))


if __name__ == "__main__":
    main()
