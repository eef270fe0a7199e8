"""A hostile client against the binary-API server, with real processes.

A second process maps the API region and sprays random and boundary values (0, 1, max,
max - 1, huge lengths, offsets past the end) over one area at a time: the message rings'
headers and slot headers, the server's input queue, the shared state, or one client's own
queue; then over all of them at once. Meanwhile well-behaved clients keep calling. They
must never get a wrong reply; a call may time out while its request or reply is destroyed,
and a client whose own queue was destroyed gets ``ConnectionDamagedError`` and connects
again. The server process must never exit, must count what it repaired, and must keep
serving: afterwards every client gets its replies and a new client registers.

Randomised: each test prints its seed; ``SHMKIT_SEED=<n>`` replays one.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import shmkit
from api_defs import Echo
from procs import finish, kill9, python, start_api_server, wait_line, wait_until
from shmkit.api.client import Client
from shmkit.api.show import describe

GOOD = """
import json, sys, threading
import api_defs
from shmkit.api.client import Client, ConnectionDamagedError

name, root, me = sys.argv[1], sys.argv[2], sys.argv[3]
phase = ["during"]
def commands():
    for line in sys.stdin:
        phase[0] = line.strip()
threading.Thread(target=commands, daemon=True).start()

stats = {"ok": 0, "ok_after": 0, "wrong": 0, "timeouts": 0, "damaged": 0, "queue": ""}
c = Client.connect(name, me, root=root, timeout=10)
stats["queue"] = c.queue_name
i = 0
while phase[0] != "stop":
    i = (i + 1) % 1_000_000
    try:
        r = c.call(api_defs.Echo(x=i), timeout=1)
    except TimeoutError:
        stats["timeouts"] += 1
        continue
    except ConnectionDamagedError:
        stats["damaged"] += 1
        c.close()
        while True:
            try:
                c = Client.connect(name, me, root=root, timeout=2)
                break
            except TimeoutError:
                stats["timeouts"] += 1
        continue
    if type(r) is not api_defs.EchoReply or r.x != i:
        stats["wrong"] += 1
        print("WRONG", i, r, flush=True)
        continue
    stats["ok"] += 1
    if stats["ok"] == 1:
        print("serving", c.queue_name, flush=True)
    if phase[0] == "after":
        stats["ok_after"] += 1
        if stats["ok_after"] == 1:
            print("recovered", flush=True)
c.close()
print(json.dumps(stats), flush=True)
"""

HOSTILE = """
import random, struct, sys, time
import shmkit

name, root, area, seed, duration = sys.argv[1:6]
victim = sys.argv[6] if len(sys.argv) > 6 else ""
rng = random.Random(int(seed))
region = shmkit.Region.open(name, root=root)
size = region.size

def spans_of(obj_name, picks):
    obj = region.find_object(obj_name)
    return [(obj["offset"] + a, min(b, obj["size"]) - a) for a, b in picks(obj["size"])]

def ring_spans(_size):
    # The pool header and descriptors, and the headers of the slots messages go through.
    rings = shmkit.MsgRings.open(region, "api/rings")
    base = region.find_object("api/rings")["offset"]
    out = [(0, 128 + 128 * 16)]
    for pool in ("server", "client"):
        held = [rings.alloc(n, pool=pool) for n in (10, 100, 500, 1500, 3000) for _ in range(3)]
        for ref in held:
            # Allocating from the server's pool breaks its one-allocator rule (that is the
            # point: this process is hostile), so the server may take the same slot and free
            # it under us: then the reference is stale, and that slot is skipped.
            try:
                msg = rings.validate(ref)
            except shmkit.InvalidOffsetError:
                continue
            if msg["ring"] is not None:  # not a heap fallback
                hdr = msg["offset"] - 32 - base
                out.append((hdr, hdr + 32))
            try:
                rings.free(ref)
            except shmkit.InvalidOffsetError:
                pass
    return out

def queue_spans(qsize):
    # Identity, positions (head, tail), and the slot stamps of the first laps.
    return [(0, 80), (128, 136), (192, 200), (1024, min(qsize, 1024 + 64 * 256))]

areas = {
    "rings": lambda: spans_of("api/rings", ring_spans),
    "input": lambda: spans_of("api/input", queue_spans),
    "state": lambda: spans_of("api/state", lambda s: [(0, s)]),
    "client": lambda: spans_of(victim, queue_spans),
}
chosen = list(areas) if area == "all" else [area]
if not victim:
    chosen = [a for a in chosen if a != "client"]
views = [region.buffer(start, length) for a in chosen for start, length in areas[a]()]

def value(width):
    top = (1 << (8 * width)) - 1
    return rng.choice([0, 1, top, top - 1, 1 << (8 * width - 1), 0x7FFFFFFF, size + 8,
                       size * 4, rng.randrange(size), rng.getrandbits(8 * width)]) & top

writes = 0
end = time.monotonic() + float(duration)
while time.monotonic() < end:
    view = rng.choice(views)
    width = rng.choice((4, 8)) if len(view) >= 8 else 4
    if len(view) < width:
        continue
    off = rng.randrange(0, len(view) - width + 1) // width * width
    struct.pack_into("<I" if width == 4 else "<Q", view, off, value(width))
    writes += 1
    if writes % 4 == 0:
        time.sleep(0.001)  # pacing: other processes get the CPU too
print("sprayed", writes, flush=True)
"""


@pytest.fixture
def server(root: str, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    # stderr to a file: a server that logs while nobody reads must never block on a pipe.
    with open(tmp_path / "server.err", "w") as err:
        proc = start_api_server("api", root, 0.2, stderr=err)
    yield proc
    if proc.poll() is None:
        kill9(proc)


def tell(procs: list[subprocess.Popen[str]], line: str) -> None:
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(line + "\n")
        p.stdin.flush()


#: The counters that must show each area's damage was found and repaired, and what the
#: server's log says about it (once, then at most every LOG_INTERVAL: rate-limited).
REPAIRED = {
    "rings": [("ring_repairs", "message-ring fields")],
    "input": [("queue_repairs", "input queue damaged")],
    "state": [("state_repairs", "shared state damaged")],
    "client": [("damaged_clients", "dropped client")],
    "all": [
        ("ring_repairs", "message-ring fields"),
        ("queue_repairs", "input queue damaged"),
        ("state_repairs", "shared state damaged"),
    ],
}


@pytest.mark.parametrize("area", ["rings", "input", "state", "client", "all"])
def test_hostile_client_sprays_while_others_call(
    root: str, server: subprocess.Popen[str], seed: int, area: str, tmp_path: Path
) -> None:
    good = [python(GOOD, "api", root, f"good{i}") for i in range(3)]
    try:
        queues = [wait_line(g, "serving", stream="stdout").split()[1] for g in good]
        victim = queues[0] if area in ("client", "all") else ""
        hostile = python(HOSTILE, "api", root, area, str(seed), "1.5", victim)
        assert "sprayed" in finish(hostile, timeout=60)
        assert server.poll() is None, "the server survived the spray"
        # Damage left at the end of the spray is repaired; every client is served again.
        tell(good, "after")
        for g in good:
            wait_line(g, "recovered", timeout=30, stream="stdout")
        with Client.connect("api", "newcomer", root=root, timeout=10) as c:
            assert c.call(Echo(x=42), timeout=5).x == 42
        tell(good, "stop")
        results = [json.loads(finish(g, timeout=30).splitlines()[-1]) for g in good]
        assert all(r["wrong"] == 0 for r in results), results
        if area == "client":
            assert results[0]["damaged"] >= 1, "the victim was told its connection is damaged"
            assert all(r["damaged"] == 0 for r in results[1:]), results
        counters = describe("api", root).counters
        log = (tmp_path / "server.err").read_text()
        for name, logged in REPAIRED[area]:
            assert counters[name] > 0, (name, counters)
            assert 1 <= log.count(logged) <= 3, (logged, log[-3000:])
        assert server.poll() is None
    finally:
        for g in good:
            if g.poll() is None:
                kill9(g)


def test_rings_at_their_counters_maximum(root: str, server: subprocess.Popen[str]) -> None:
    """Issue 11's first symptom: u64::MAX in a server ring's hit counter used to end the
    server process (an overflow panic in its allocator)."""
    import struct

    region = shmkit.Region.open("api", root=root)
    base = region.find_object("api/rings")["offset"]
    view = region.buffer(base, 128 + 128 * 16)
    for ring in range(16):
        for field in (24, 32):  # hits, misses
            struct.pack_into("<Q", view, 128 + 128 * ring + field, 2**64 - 1)
    with Client.connect("api", "after-max", root=root) as c:
        replies = c.call_many([Echo(x=i) for i in range(3000)], timeout=30)
        assert [r.x for r in replies] == list(range(3000))
    assert server.poll() is None
    del view
    region.close()


def test_garbage_in_the_input_queue_capacity(root: str, server: subprocess.Popen[str]) -> None:
    """Issue 11's second symptom: garbage in the capacity word of the server's input queue
    header ended serve_forever with CorruptionError."""
    import struct

    region = shmkit.Region.open("api", root=root)
    view = region.buffer(region.find_object("api/input")["offset"], 64)

    def opens() -> bool:
        try:
            shmkit.Queue.open(region, "api/input").close()
        except shmkit.CorruptionError:
            return False
        return True

    with Client.connect("api", "c", root=root) as c:
        for v in (0, 2**32 - 1, 2**32 - 2, 12345):
            struct.pack_into("<I", view, 16, v)  # capacity
            assert not opens()
            wait_until(opens, 5, "the header repaired")
            assert c.call(Echo(x=v & 0xFFFF), timeout=10).x == v & 0xFFFF
    assert describe("api", root).counters["queue_repairs"] >= 1
    assert server.poll() is None
    del view
    region.close()


def test_garbage_in_the_state_does_not_stop_new_clients(
    root: str, server: subprocess.Popen[str]
) -> None:
    """Issue 11's third symptom: garbage in the API state left every new client timing out
    until a restart."""
    region = shmkit.Region.open("api", root=root)
    obj = region.find_object("api/state")
    view = region.buffer(obj["offset"], obj["size"])
    with Client.connect("api", "old", root=root) as old:
        view[:] = os.urandom(obj["size"])
        with Client.connect("api", "new", root=root, timeout=10) as new:
            assert new.call(Echo(x=1)).x == 1
        assert old.call(Echo(x=2)).x == 2, "a garbage epoch is no restart"
    assert describe("api", root).counters["state_repairs"] >= 1
    del view
    region.close()


STALLER = """
import sys
import shmkit
region = shmkit.Region.open(sys.argv[1], root=sys.argv[2])
q = shmkit.Queue.open(region, "api/input")
r = q.reserve()  # claims the next position of the server's input queue, never commits
print("claimed", flush=True)
sys.stdin.readline()
try:
    r.commit()
    print("committed", flush=True)
except shmkit.CorruptionError as exc:
    print("refused:", exc, flush=True)
"""


def test_a_client_stalled_half_way_through_a_request(root: str, tmp_path: Path) -> None:
    """A client stopped (or hostile) between claiming a slot of the server's input queue and
    publishing it makes every later request wait behind it: the server skips the claim after
    ``claim_timeout``, and the staller's publish is refused."""
    with open(tmp_path / "server.err", "w") as err:
        server = start_api_server("api", root, 10, stderr=err, claim_timeout=0.5)
    try:
        with Client.connect("api", "behind", root=root) as c:
            assert c.call(Echo(x=1)).x == 1
            staller = python(STALLER, "api", root)
            wait_line(staller, "claimed", stream="stdout")
            assert c.call(Echo(x=2), timeout=30).x == 2, "served once the claim is skipped"
            assert describe("api", root).counters["stalled_claims"] == 1
            assert c.call(Echo(x=3)).x == 3
            staller.stdin.write("\n")
            staller.stdin.flush()
            assert "refused:" in finish(staller)
            assert c.call(Echo(x=4)).x == 4
        assert "stalled the input queue" in (tmp_path / "server.err").read_text()
        assert server.poll() is None
    finally:
        kill9(server)


QUEUE_STALLER = """
import sys
import shmkit
region = shmkit.Region.open(sys.argv[1], root=sys.argv[2])
q = shmkit.Queue.open(region, sys.argv[3])
r = q.reserve()  # claims the next position of a client's queue, never commits
print("claimed", flush=True)
sys.stdin.readline()
"""


def test_a_client_whose_queue_head_stays_unwritten_reconnects(
    root: str, server: subprocess.Popen[str]
) -> None:
    """Another process holds the next slot of a client's queue without ever writing it (a
    hostile peer, or garbage that looks like such a claim): the server's replies land in the
    slots after it, which the client can never reach. The client gives the connection up as
    damaged after ``STALL_TIMEOUT`` (not a timeout on every call for ever), and a new
    connection is served."""
    from shmkit.api.client import STALL_TIMEOUT, ConnectionDamagedError

    c = Client.connect("api", "stalled", root=root)
    try:
        assert c.call(Echo(x=1)).x == 1
        staller = python(QUEUE_STALLER, "api", root, c.queue.name)
        wait_line(staller, "claimed", stream="stdout")
        with pytest.raises(ConnectionDamagedError, match="head stays unwritten"):
            for _ in range(int(STALL_TIMEOUT * 4) + 4):  # 0.5 s calls: damage within the budget
                with pytest.raises(TimeoutError):
                    c.call(Echo(x=2), timeout=0.5)
        assert len(c.queue) > 0  # the replies it could not reach
        staller.stdin.write("\n")
        staller.stdin.flush()
        finish(staller)
    finally:
        c.close()
    with Client.connect("api", "stalled", root=root) as again:
        assert again.call(Echo(x=3)).x == 3
