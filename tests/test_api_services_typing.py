"""A user's script with dumps, events, callbacks and the asyncio client type-checks under
``mypy --strict``, and a misuse in it is reported."""

from __future__ import annotations

import pathlib

from test_typing import mypy

SERVICES_SCRIPT = """
from __future__ import annotations

import asyncio
from collections.abc import Iterator

from shmkit.api import AsyncClient, Client, ClientInfo, Handle, Message, Server, define
from shmkit.api.messages import i32, u32

Dump = define("thing_dump", [("count", u32)])
Details = define("thing_details", [("seq", u32)])
Event = define("thing_event", [("seq", u32)])
Want = define("want_thing_events", [("enable_disable", u32), ("pid", u32)])
WantReply = define("want_thing_events_reply", [("retval", i32)])


def serve(server: Server) -> None:
    @server.handle(Dump, reply=Details, stream=True)
    def things(msg: Message, client: ClientInfo) -> Iterator[Message]:
        for i in range(3):
            yield Details(seq=i)

    @server.on_register
    def hello(handle: Handle, client: ClientInfo) -> None:
        server.send(client, Event(seq=0))

    server.events(Event, want=Want, reply=WantReply)
    sent: int = server.publish(Event(seq=1))
    assert sent >= 0 and server.open_streams >= 0


def use(c: Client) -> int:
    details: list[Message] = c.dump(Dump(count=3), timeout=1.0)
    n = sum(1 for _ in c.dump_iter(Dump(count=3)))
    c.on_event(Event, lambda ev: None)
    c.on_restart(lambda client, exc: None)
    c.on_reconnect(lambda client: None)
    for ev in c.events(timeout=0.1):
        n += 1
    return len(details) + n


async def use_async() -> int:
    async with await AsyncClient.connect("api", "me", root="r") as c:
        details = await c.dump(Dump(count=3))
        await c.call(Dump(count=1))
        async for ev in c.events(timeout=0.1):
            pass
        return len(details)


reconnecting = Client.connect("api", "me", reconnect=True)
asyncio.run(use_async())
"""


def test_services_type_check_under_mypy_strict(tmp_path: pathlib.Path) -> None:
    ok = mypy(tmp_path, SERVICES_SCRIPT)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = mypy(
        tmp_path,
        SERVICES_SCRIPT + "\n\nasync def wrong(c: AsyncClient) -> int:\n"
        "    return c.dump(Dump(count=1))\n",
    )
    assert bad.returncode == 1 and "Incompatible return value type" in bad.stdout, bad.stdout
