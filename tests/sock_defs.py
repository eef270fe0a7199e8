"""A socket-transport test server (imported by the socket tests and run as their server
process): the binary-API test server (``api_defs``) plus a VPP-style dump and event service.

``python sock_defs.py NAME ROOT SCAN SOCKET [JSON KEYWORDS]``: prints ``ready`` and serves
until killed. ``thing_dump`` is a dump (``thing_details`` closed by a control_ping_reply);
``want_ticks`` registers its client for ``tick_event``, which ``tick`` publishes (context 0);
``whoami`` tells a client its pid and transport as the server sees them, and how many clients
the ``on_reap`` callbacks saw go.
"""

from __future__ import annotations

import json
import sys

from api_defs import make_server
from shmkit.api.messages import define, i32, string, u32
from shmkit.api.server import Server

ThingDump = define("thing_dump", [("count", u32)])
ThingDetails = define("thing_details", [("id", u32), ("name", string(16))])
WantTicks = define("want_ticks", [("enable_disable", u32), ("pid", u32)])
WantTicksReply = define("want_ticks_reply", [("retval", i32)])
Tick = define("tick", [("count", u32)])
TickReply = define("tick_reply", [("retval", i32), ("sent", u32)])
TickEvent = define("tick_event", [("seq", u32)])
Whoami = define("whoami", [("x", u32)])
WhoamiReply = define(
    "whoami_reply", [("retval", i32), ("pid", u32), ("socket", u32), ("reaped", u32)]
)


def make_sock_server(name: str, root: str, **kw: object) -> Server:
    server = make_server(name, root, **kw)

    @server.handle(ThingDump, reply=ThingDetails, stream=True)
    def dump(msg, client):  # type: ignore[no-untyped-def]
        for i in range(msg.count):
            yield ThingDetails(id=i, name=f"thing{i}")

    server.events(TickEvent, want=WantTicks, reply=WantTicksReply)

    @server.handle(Tick, reply=TickReply)
    def tick(msg, client):  # type: ignore[no-untyped-def]
        sent = sum(server.publish(TickEvent(seq=seq)) for seq in range(msg.count))
        return TickReply(retval=0, sent=sent)

    reaped: list[str] = []

    @server.on_reap
    def gone(handle, client):  # type: ignore[no-untyped-def]
        reaped.append(client.name)

    @server.handle(Whoami, reply=WhoamiReply)
    def whoami(msg, client):  # type: ignore[no-untyped-def]
        return WhoamiReply(
            retval=0, pid=client.pid, socket=int(client.conn != 0), reaped=len(reaped)
        )

    return server


def main() -> None:
    name, root, scan, sock = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
    extra = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
    server = make_sock_server(name, root, scan_interval=scan, socket=sock, **extra)
    print(f"ready {server.epoch}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
