"""Message types and a server program shared by the binary-API tests (imported by the test
process and by its children)."""

from __future__ import annotations

import json
import sys

from shmkit.api.messages import define, i32, string, u32, u64, vla
from shmkit.api.server import Server

Echo = define("echo", [("x", u32)])
EchoReply = define("echo_reply", [("x", u32)])
Flood = define("flood", [("count", u32)])
FloodReply = define("flood_reply", [("sent", u32)])
Event = define("event", [("seq", u32), ("text", string(32))])
# Variable length: the same native codec (cls._codec) as the fixed-size types.
Sum = define("sum", [("n", u32), ("items", vla(u32, "n"))])
SumReply = define("sum_reply", [("total", u64), ("n", u32), ("items", vla(u32, "n"))])
# Handlers that fail: one whose reply has a retval (VPP's convention), one whose has not.
Fail = define("fail", [("x", u32)])
FailReply = define("fail_reply", [("retval", i32), ("x", u32)])
Boom = define("boom", [("x", u32)])


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

    @server.handle(Fail, reply=FailReply)
    def fail(msg, client):  # type: ignore[no-untyped-def]
        raise ValueError(f"fail {msg.x}")

    @server.handle(Boom, reply=EchoReply)
    def boom(msg, client):  # type: ignore[no-untyped-def]
        if msg.x == 1:
            return EchoReply(x=-1)  # cannot be encoded
        raise RuntimeError("boom")

    server.register(Event)
    return server


def main() -> None:
    """``python api_defs.py NAME ROOT SCAN_INTERVAL [JSON KEYWORDS]``: serve until killed."""
    name, root, scan = sys.argv[1], sys.argv[2], float(sys.argv[3])
    extra = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    server = make_server(name, root, scan_interval=scan, **extra)
    print(f"ready {server.epoch}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
