"""Message types and a server program for the services tests (dumps, events, registration
callbacks): the test server of ``api_defs`` plus a dump, an event and its ``want_*``."""

from __future__ import annotations

import json
import sys

from api_defs import make_server
from shmkit.api.messages import define, i32, string, u32
from shmkit.api.server import Server

# fail_at: the handler raises there; bad_at: it yields a detail that cannot be encoded (0: never)
ThingDump = define("thing_dump", [("count", u32), ("fail_at", u32), ("bad_at", u32)])
ThingDetails = define("thing_details", [("seq", u32), ("name", string(16))])
# VPP's stream_msg form: details closed by a reply (a cursor past the count fails).
ThingGet = define("thing_get", [("count", u32), ("cursor", u32)])
ThingGetReply = define("thing_get_reply", [("retval", i32), ("cursor", u32)])
WantThingEvents = define("want_thing_events", [("enable_disable", u32), ("pid", u32)])
WantThingEventsReply = define("want_thing_events_reply", [("retval", i32)])
ThingEvent = define("thing_event", [("seq", u32)])
# Asks the server to publish `count` thing events; the reply says how many were queued.
Publish = define("publish_things", [("count", u32)])
PublishReply = define("publish_things_reply", [("retval", i32), ("sent", u32)])
Registered = define("registered_event", [("handle", u32)])


def make_services_server(name: str, root: str, **kw: object) -> Server:
    stall = kw.pop("stream_stall", None)
    server = make_server(name, root, **kw)
    if stall is not None:
        server.stream_stall = float(stall)  # type: ignore[arg-type]

    @server.handle(ThingDump, reply=ThingDetails, stream=True)
    def things(msg, client):  # type: ignore[no-untyped-def]
        for i in range(msg.count):
            if msg.fail_at and i == msg.fail_at:
                raise RuntimeError(f"thing {i} is broken")
            if msg.bad_at and i == msg.bad_at:
                yield ThingDetails(seq=-1, name="negative")
            yield ThingDetails(seq=i, name=f"thing{i}")

    @server.handle(ThingGet, reply=ThingGetReply, stream=ThingDetails)
    def get(msg, client):  # type: ignore[no-untyped-def]
        if msg.cursor > msg.count:
            raise ValueError("cursor past the end")
        for i in range(msg.cursor, msg.count):
            yield ThingDetails(seq=i, name=f"thing{i}")
        return ThingGetReply(retval=0, cursor=msg.count)

    server.events(ThingEvent, want=WantThingEvents, reply=WantThingEventsReply)

    @server.handle(Publish, reply=PublishReply)
    def publish(msg, client):  # type: ignore[no-untyped-def]
        sent = sum(server.publish(ThingEvent(seq=i)) for i in range(msg.count))
        return PublishReply(retval=0, sent=sent)

    server.register(Registered)

    @server.on_register
    def hello(handle, client):  # type: ignore[no-untyped-def]
        server.send(client, Registered(handle=int(handle)))

    return server


def main() -> None:
    """``python services_defs.py NAME ROOT [JSON KEYWORDS]``: serve until killed."""
    name, root = sys.argv[1], sys.argv[2]
    extra = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    server = make_services_server(name, root, **extra)
    print(f"ready {server.epoch}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
