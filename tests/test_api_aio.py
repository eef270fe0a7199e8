"""The asyncio client with real server processes: calls, concurrent calls, dumps, events,
a dead server, and an idle client that costs no CPU."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator

import pytest
from api_defs import Echo, EchoReply, Sum
from procs import kill9, wait_until
from services_defs import (
    Publish,
    Registered,
    ThingDump,
    ThingEvent,
    ThingGet,
    ThingGetReply,
    WantThingEvents,
)
from shmkit.api import AsyncClient, memclnt
from shmkit.api.show import describe
from shmkit.errors import ServerGoneError, ShmkitError
from test_api_services import start_services_server


@pytest.fixture
def server(root: str) -> Iterator[subprocess.Popen[str]]:
    proc = start_services_server("svc", root)
    yield proc
    if proc.poll() is None:
        kill9(proc)


def test_calls_dumps_and_events(root: str, server: subprocess.Popen[str]) -> None:
    async def main() -> None:
        async with await AsyncClient.connect("svc", "aio", root=root, timeout=10) as c:
            assert type(await c.recv(timeout=5)) is Registered  # on_register's greeting
            r = await c.call(Echo(x=7))
            assert type(r) is EchoReply and r.x == 7
            assert (await c.call(memclnt.ControlPing())).retval == 0
            # Many in flight at once, matched by context.
            replies = await asyncio.gather(*(c.call(Echo(x=i), timeout=20) for i in range(2000)))
            assert [r.x for r in replies] == list(range(2000))
            sums = await asyncio.gather(*(c.call(Sum(n=2, items=[i, 1])) for i in range(50)))
            assert [s.total for s in sums] == [i + 1 for i in range(50)]
            # Dumps, alone and concurrent with calls.
            assert await c.dump(ThingDump(count=0)) == []
            dumps = await asyncio.gather(
                c.dump(ThingDump(count=1000), timeout=20),
                c.dump(ThingDump(count=300), timeout=20),
                *(c.call(Echo(x=i)) for i in range(100)),
            )
            assert [t.seq for t in dumps[0]] == list(range(1000))
            assert [t.seq for t in dumps[1]] == list(range(300))
            with pytest.raises(ShmkitError, match="retval -1"):
                await c.dump(ThingDump(count=10, fail_at=5))
            reply, got_things = await c.dump(ThingGet(count=30, cursor=10), reply=ThingGetReply)
            assert reply.cursor == 30 and [t.seq for t in got_things] == list(range(10, 30))
            # Events after a want_* registration.
            await c.call(WantThingEvents(enable_disable=1, pid=os.getpid()))
            assert (await c.call(Publish(count=20))).sent == 20
            got = [ev async for ev in c.events(timeout=0.5)]
            assert [(type(e), e.seq) for e in got] == [(ThingEvent, i) for i in range(20)]
            with pytest.raises(TimeoutError):
                await c.recv(timeout=0.1)
        # The server acknowledges before it clears the entry (its reply leaves first).
        wait_until(lambda: describe("svc", root).clients == [], what="the entry cleared")

    asyncio.run(main())


def test_an_idle_client_costs_no_cpu(root: str, server: subprocess.Popen[str]) -> None:
    async def main() -> None:
        async with await AsyncClient.connect("svc", "idle", root=root) as c:
            await c.recv(timeout=5)
            cpu = time.process_time()
            with pytest.raises(TimeoutError):
                await c.recv(timeout=1.0)
            # A timer per 50 ms while awaiting, nothing else: far below a busy loop.
            assert time.process_time() - cpu < 0.1

    asyncio.run(main())


def test_a_dead_server_fails_pending_calls_at_once(root: str) -> None:
    proc = start_services_server("svc", root)

    async def main() -> None:
        c = await AsyncClient.connect("svc", "orphan", root=root)
        await c.recv(timeout=5)
        waiting = asyncio.ensure_future(c.recv(timeout=30))
        await asyncio.sleep(0)  # let it start waiting
        t = time.monotonic()
        kill9(proc)
        with pytest.raises(ServerGoneError):
            await waiting
        assert time.monotonic() - t < 1.0
        with pytest.raises(ServerGoneError):
            await c.call(Echo(x=1))
        await c.close()

    try:
        asyncio.run(main())
    finally:
        if proc.poll() is None:
            kill9(proc)


def test_over_the_socket_transport(root: str, tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "svc.sock")
    proc = start_services_server("svc", root, socket=path)

    async def main() -> None:
        async with await AsyncClient.connect("svc", "aiosock", socket=path) as c:
            assert type(await c.recv(timeout=5)) is Registered
            replies = await asyncio.gather(*(c.call(Echo(x=i), timeout=20) for i in range(1000)))
            assert [r.x for r in replies] == list(range(1000))
            things = await c.dump(ThingDump(count=2000), timeout=20)
            assert [t.seq for t in things] == list(range(2000))
            reply, got = await c.dump(ThingGet(count=5, cursor=1), reply=ThingGetReply)
            assert reply.cursor == 5 and [t.seq for t in got] == [1, 2, 3, 4]
            await c.call(WantThingEvents(enable_disable=1, pid=os.getpid()))
            assert (await c.call(Publish(count=3))).sent == 3
            assert [ev.seq async for ev in c.events(timeout=0.5)] == [0, 1, 2]
            waiting = asyncio.ensure_future(c.recv(timeout=30))
            await asyncio.sleep(0)
            t = time.monotonic()
            kill9(proc)
            with pytest.raises(ServerGoneError):
                await waiting
            assert time.monotonic() - t < 1.0

    try:
        asyncio.run(main())
    finally:
        if proc.poll() is None:
            kill9(proc)
