"""Message types and a server program shared by the binary-API tests (imported by the test
process and by its children)."""

from __future__ import annotations

import sys

from shmkit.api.messages import define, string, u32, u64, vla
from shmkit.api.server import Server

Echo = define("echo", [("x", u32)])
EchoReply = define("echo_reply", [("x", u32)])
Flood = define("flood", [("count", u32)])
FloodReply = define("flood_reply", [("sent", u32)])
Event = define("event", [("seq", u32), ("text", string(32))])
# Variable length (no native codec): the Python codec on both sides.
Sum = define("sum", [("n", u32), ("items", vla(u32, "n"))])
SumReply = define("sum_reply", [("total", u64), ("n", u32), ("items", vla(u32, "n"))])


def make_server(name: str, root: str, **kw: object) -> Server:
    server = Server(name, root=root, **kw)  # type: ignore[arg-type]

    @server.handle(Echo, reply=EchoReply)
    def echo(msg, client):  # type: ignore[no-untyped-def]
        return EchoReply(x=msg.x)

    @server.handle(Flood, reply=FloodReply)
    def flood(msg, client):  # type: ignore[no-untyped-def]
        # Events to every client; a client that does not read has them dropped, counted.
        sent = sum(server.broadcast(Event(seq=i, text="flood")) for i in range(msg.count))
        return FloodReply(sent=sent)

    @server.handle(Sum, reply=SumReply)
    def total(msg, client):  # type: ignore[no-untyped-def]
        return SumReply(total=sum(msg.items), n=msg.n, items=msg.items)

    server.register(Event)
    return server


def main() -> None:
    """``python api_defs.py NAME ROOT SCAN_INTERVAL``: serve until killed."""
    name, root, scan = sys.argv[1], sys.argv[2], float(sys.argv[3])
    server = make_server(name, root, scan_interval=scan)
    print(f"ready {server.epoch}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
