"""Victims of the cross-object spray suite (``test_spray.py``).

``python spray_victims.py KIND ROLE ROOT SEED SECONDS``: do real work on one kind of shared
object for ``SECONDS`` while ``sprayer.py`` writes garbage into it (and perhaps truncates its
file). The ``owner`` role creates the objects and prints ``ready <spec>`` (the spec tells the
sprayer where the fields are); other roles open them. At the end every victim cleans up as a
user would (the owner last, once the supervisor closes its stdin: it unlinks what it created)
and prints ``result <json>``: how often each operation succeeded or failed, by exception
type, and its open file descriptors before and after (the supervisor fails on any growth).

What a victim may see is a clear error: a :class:`shmkit.ShmkitError` subclass (never
:class:`shmkit.InternalError`, a panic that reached a binding), an ``OSError``, a
``TimeoutError``, ``queue.Empty``/``queue.Full``. Anything else (``PanicException``, an
``AssertionError``, an ``IndexError`` ...) escapes, so the victim dies with a traceback and a
non-zero status; a signal death or a hang (``faulthandler`` dumps every thread's stack and
exits at the deadline) is caught by the supervisor too. After ``RegionTruncatedError`` the
objects are dead for everyone: the victim makes one more call (which must fail as clearly)
and stops.
"""

from __future__ import annotations

import contextlib
import faulthandler
import gc
import json
import os
import queue
import random
import select
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import shmkit
import shmkit.netmap as nm
from api_defs import Echo, EchoReply, make_server
from shmkit._native import shm_layout
from shmkit.api import state as api_state
from shmkit.api.client import Client
from shmkit.api.takeover import CLIENT_QUEUE_PREFIX, INPUT_QUEUE, RINGS
from shmkit.memif import Interface

ALLOWED = (shmkit.ShmkitError, OSError, TimeoutError, queue.Empty, queue.Full)
#: Waits inside one operation stay short, so a victim notices its deadline quickly.
WAIT = 0.1
#: Beyond SECONDS + GRACE a victim is hung: faulthandler dumps its stacks and exits. (A
#: victim's own bounded steps after SECONDS, such as an API client's reconnect-and-call
#: loop, take up to about 15 s.)
GRACE = 25.0


def resources() -> tuple[int, int]:
    """Open file descriptors and mappings of this process (a failure path that leaks either
    shows as growth between the start and the end, once everything is closed)."""
    started = time.monotonic()
    gc.collect()  # handles caught in reference cycles (e.g. through a traceback) go too
    if time.monotonic() - started > 1.0:
        print(f"gc.collect took {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    with open("/proc/self/maps") as maps:
        return len(os.listdir("/proc/self/fd")), sum(1 for _ in maps)


def open_fds() -> list[str]:
    """What each open file descriptor is (for the report of a leak)."""
    out = []
    for fd in sorted(os.listdir("/proc/self/fd"), key=int):
        with contextlib.suppress(OSError):  # the directory's own fd, closed by now
            out.append(f"{fd}:{os.readlink(f'/proc/self/fd/{fd}')}")
    return out


class Victim:
    def __init__(self, seed: int, seconds: float) -> None:
        self.rng = random.Random(seed)
        self.end = time.monotonic() + seconds
        self.counts: Counter[str] = Counter()
        self.truncated = False
        self.errors: list[str] = []
        self.resources_at_start = resources()

    def attempt(self, what: str, fn: Callable[[], object]) -> Any:
        try:
            out = fn()
        except shmkit.InternalError:
            raise  # a panic reached a binding: a bug, never a clear error
        except shmkit.RegionTruncatedError as e:
            self.truncated = True
            self.counts[f"{what}:RegionTruncatedError"] += 1
            self.note(e)
            return None
        except ALLOWED as e:
            self.counts[f"{what}:{type(e).__name__}"] += 1
            self.note(e)
            return None
        self.counts[f"{what}:ok"] += 1
        return out

    def note(self, e: BaseException) -> None:
        if len(self.errors) < 12:
            self.errors.append(f"{type(e).__name__}: {e}"[:200])

    def run(
        self, steps: dict[str, Callable[[], object]], after_truncation: Callable[[], object]
    ) -> None:
        names = list(steps)
        while time.monotonic() < self.end and not self.truncated:
            name = self.rng.choice(names)
            self.attempt(name, steps[name])
        if self.truncated:
            # Dead for good: the next call says so again (or fails as clearly otherwise).
            self.attempt("after_truncation", after_truncation)

    def result(self, **extra: object) -> None:
        out = {
            "counts": dict(self.counts),
            "truncated": self.truncated,
            "errors": self.errors,
            "resources": [self.resources_at_start, resources()],
            "fds": open_fds(),
            "threads": len(os.listdir("/proc/self/task")),
            **extra,
        }
        print("result " + json.dumps(out), flush=True)


def released(v: Victim) -> None:
    """The owner cleans up last: wait until the supervisor closes our stdin, which it does
    once every other victim has ended (bounded: well before our own hang deadline)."""
    deadline = v.end + GRACE - 5
    while (left := deadline - time.monotonic()) > 0:
        if select.select([sys.stdin], [], [], left)[0] and not sys.stdin.buffer.read1(4096):
            return


def ready(spec: dict[str, Any]) -> None:
    print("ready " + json.dumps(spec), flush=True)


def payload(rng: random.Random, n: int) -> bytes:
    return rng.randbytes(n)


def retry(fn: Callable[[], Any], v: Victim, seconds: float = 10.0) -> Any:
    """Open something the owner made, through the garbage (bounded)."""
    deadline = time.monotonic() + seconds
    while True:
        out = v.attempt("open", fn)
        if out is not None or v.truncated or time.monotonic() > deadline:
            return out


# --------------------------------------------------------------------------- regions


def region_owner(root: str, v: Victim) -> None:
    r = shmkit.Region.create("victim", 1 << 20, root=root, lock_timeout=0.5)
    data_off, data_end = r.data_range
    facts = shm_layout()
    dir_off = facts["constants"]["region.header_area"]
    entry = facts["structs"]["DirEntry"]["size"]
    bitmap_off = dir_off + facts["constants"]["region.dir_entries"] * entry
    ready(
        {
            "path": str(r.path),
            "targets": [
                ["RegionHeader", 0, 1, 0],
                ["DirEntry", dir_off, 8, entry],
                ["Bytes", bitmap_off, data_off - bitmap_off, 0],  # the block-start bitmap
                ["HeapWalk", data_off, data_end, 0],
            ],
        }
    )
    held: list[int] = []
    n = [0]

    def alloc() -> None:
        size = v.rng.choice((1, 64, 200, 4096, 30000))
        off = r.alloc(size)
        held.append(off)
        data = payload(v.rng, min(size, 256))
        r.write(off, data)
        r.read(off, len(data))
        r.usable_size(off)

    def free() -> None:
        if held:
            r.free(held.pop(v.rng.randrange(len(held))))

    def objects() -> None:
        n[0] += 1
        name = f"o{n[0] % 5}"
        v.attempt("create_object", lambda: r.create_object(name, v.rng.choice((64, 1000))))
        r.find_object(name)
        r.objects()
        r.remove_object(name)

    def inspect() -> None:
        r.check()
        r.stats()
        r.client_info()
        r.scan_ghosts()

    try:
        v.run(
            {"alloc": alloc, "free": free, "objects": objects, "inspect": inspect},
            lambda: r.alloc(64),
        )
        released(v)
    finally:
        r.unlink()
        v.attempt("close", r.close)


def region_opener(root: str, v: Victim) -> None:
    def cycle() -> None:
        r = shmkit.Region.open("victim", root=root, timeout=0.5, lock_timeout=0.5)
        try:
            v.attempt("objects", r.objects)
            off = v.attempt("alloc", lambda: r.alloc(v.rng.choice((8, 512, 8000))))
            if off is not None:
                v.attempt("free", lambda: r.free(off))
            v.attempt("find_object", lambda: r.find_object("o1"))
        finally:
            v.attempt("close", r.close)

    v.run({"open_cycle": cycle}, lambda: shmkit.Region.open("victim", root=root, timeout=0.5))


# --------------------------------------------------------------------------- queues

QUEUES = {"mpmc": False, "spsc": True}
CAPACITY = 64
ELSIZE = 100


def queue_region(root: str) -> shmkit.Region:
    return shmkit.Region.open("victim", root=root, timeout=2, lock_timeout=0.5)


def queue_owner(root: str, v: Victim) -> None:
    r = shmkit.Region.create("victim", 1 << 20, root=root, lock_timeout=0.5)
    qs = {
        name: shmkit.Queue.create(r, name, CAPACITY, ELSIZE, spsc=spsc)
        for name, spsc in QUEUES.items()
    }
    stride = -(-(16 + ELSIZE) // 64) * 64
    targets = []
    for q in qs.values():
        targets.append(["QueueHeader", q.offset, 1, 0])
        targets.append(["QueueSlot", q.offset + 1024, CAPACITY, stride])
    ready({"path": str(r.path), "targets": targets})

    def inspect() -> None:
        q = qs[v.rng.choice(list(qs))]
        q.stats()
        len(q)
        q.empty()
        q.full()
        v.attempt("check", q.check)

    def repair() -> None:
        qs[v.rng.choice(list(qs))].repair(v.rng.random() < 0.3)

    try:
        v.run({"inspect": inspect, "repair": repair}, lambda: qs["mpmc"].put_nowait(b"x"))
        released(v)
    finally:
        r.unlink()
        for q in qs.values():
            v.attempt("close", q.close)
        v.attempt("close", r.close)


def queue_producer(root: str, v: Victim, names: tuple[str, ...]) -> None:
    r = retry(lambda: queue_region(root), v)
    if r is None:
        return
    qs = [
        q for q in (retry(lambda n=n: shmkit.Queue.open(r, n), v) for n in names) if q is not None
    ]
    if not qs:
        return

    def put() -> None:
        q = v.rng.choice(qs)
        data = payload(v.rng, v.rng.randrange(1, ELSIZE + 1))
        k = v.rng.randrange(4)
        if k == 0:
            q.put(data, timeout=WAIT)
        elif k == 1:
            q.put_nowait(data)
        elif k == 2:
            q.put_many([data] * v.rng.randrange(1, 8))
        else:
            res = q.reserve(timeout=WAIT)
            res.view[: len(data)] = data
            res.commit(len(data))

    try:
        v.run({"put": put}, lambda: qs[0].put_nowait(b"x"))
    finally:
        for q in qs:
            v.attempt("close", q.close)
        v.attempt("close", r.close)


def queue_consumer(root: str, v: Victim) -> None:
    r = retry(lambda: queue_region(root), v)
    if r is None:
        return
    qs = [
        q for q in (retry(lambda n=n: shmkit.Queue.open(r, n), v) for n in QUEUES) if q is not None
    ]
    if not qs:
        return

    def get() -> None:
        q = v.rng.choice(qs)
        k = v.rng.randrange(4)
        if k == 0:
            q.get(timeout=WAIT)
        elif k == 1:
            q.get_nowait()
        elif k == 2:
            q.get_many(v.rng.randrange(1, 16), timeout=WAIT)
        else:
            b = q.borrow(timeout=WAIT)
            bytes(b)
            b.release()

    try:
        v.run({"get": get}, lambda: qs[0].get_nowait())
    finally:
        for q in qs:
            v.attempt("close", q.close)
        v.attempt("close", r.close)


# --------------------------------------------------------------------------- message rings

SERVER_RINGS = [(64, 32), (256, 16)]
CLIENT_RINGS = [(128, 32), (1024, 8)]


def msgring_owner(root: str, v: Victim) -> None:
    r = shmkit.Region.create("victim", 1 << 20, root=root, lock_timeout=0.5)
    rings = shmkit.MsgRings.create(r, "rings", server=SERVER_RINGS, client=CLIENT_RINGS, gc_age=0.2)
    base = r.find_object("rings")["offset"]
    targets: list[list[Any]] = [["PoolHeader", base, 1, 0]]
    pool = shm_layout()["structs"]["PoolHeader"]["fields"]
    desc = shm_layout()["structs"]["RingDesc"]["fields"]
    for k in range(len(rings.ring_stats())):  # where each ring's slots are, read before spraying
        d = base + pool["rings"][0] + k * 128
        slots_off, stride, nitems = (
            int.from_bytes(r.read(d + desc[f][0], desc[f][1]), "little")
            for f in ("slots_off", "stride", "nitems")
        )
        targets.append(["MsgHeader", slots_off, nitems, stride])
    ready({"path": str(r.path), "targets": targets})
    try:
        msgring_work(rings, v, "server")
        released(v)
    finally:
        r.unlink()
        v.attempt("close", r.close)


def msgring_user(root: str, v: Victim) -> None:
    r = retry(lambda: shmkit.Region.open("victim", root=root, timeout=2, lock_timeout=0.5), v)
    if r is None:
        return
    rings = retry(lambda: shmkit.MsgRings.open(r, "rings"), v)
    try:
        if rings is not None:
            msgring_work(rings, v, "client")
    finally:
        v.attempt("close", r.close)


def msgring_work(rings: shmkit.MsgRings, v: Victim, pool: str) -> None:
    held: list[int] = []

    def alloc() -> None:
        n = v.rng.choice((1, 60, 200, 1000, 3000))
        ref = rings.alloc(n, pool=pool)
        held.append(ref)
        rings.write(ref, payload(v.rng, min(n, 64)))
        rings.read(ref)
        rings.validate(ref)

    def free() -> None:
        if held:
            ref = held.pop(v.rng.randrange(len(held)))
            if v.rng.random() < 0.5:
                rings.free(ref)
            else:
                rings.take(ref)
                rings.free(ref)

    def housekeeping() -> None:
        k = v.rng.randrange(4)
        if k == 0:
            rings.collect()
        elif k == 1:
            rings.reclaim_pid(v.rng.choice((1, 2**22 - 1)))
        elif k == 2:
            rings.repair(v.rng.random() < 0.5)
        else:
            rings.ring_stats()
            rings.stats()
            rings.format_stats()

    v.run(
        {"alloc": alloc, "free": free, "housekeeping": housekeeping},
        lambda: rings.alloc(8, pool=pool),
    )


# --------------------------------------------------------------------------- message queues

MSGQ_CAPACITY = 32


def msgq_owner(root: str, v: Victim) -> None:
    r = shmkit.Region.create("victim", 8 << 20, root=root, lock_timeout=0.5)
    q = shmkit.MsgQueue.create(r, "mq", MSGQ_CAPACITY)
    objects = {o["name"]: o["offset"] for o in r.objects()}
    layout = shm_layout()["structs"]
    pool, desc = layout["PoolHeader"]["fields"], layout["RingDesc"]["fields"]
    off, size = layout["QueueHeader"]["fields"]["stride"][:2]
    slot_stride = int.from_bytes(r.read(objects["mq/refs"] + off, size), "little")
    targets: list[list[Any]] = [
        ["MsgqHeader", objects["mq"], 1, 0],
        ["QueueHeader", objects["mq/refs"], 1, 0],
        ["QueueSlot", objects["mq/refs"] + 1024, MSGQ_CAPACITY, slot_stride],
        ["PoolHeader", objects["mq/msgs"], 1, 0],
    ]
    for k in range(len(q.stats()["rings"])):  # where each ring's slots are
        d = objects["mq/msgs"] + pool["rings"][0] + k * 128
        slots_off, stride, nitems = (
            int.from_bytes(r.read(d + desc[f][0], desc[f][1]), "little")
            for f in ("slots_off", "stride", "nitems")
        )
        targets.append(["MsgHeader", slots_off, nitems, stride])
    ready({"path": str(r.path), "targets": targets})

    def inspect() -> None:
        q.stats()
        len(q)
        v.attempt("gc", q.gc)

    def repair() -> None:
        q.repair(v.rng.random() < 0.3)

    try:
        v.run({"inspect": inspect, "repair": repair}, lambda: q.put_nowait(b"x"))
        released(v)
    finally:
        r.unlink()
        v.attempt("close", q.close)
        v.attempt("close", r.close)


def msgq_open(root: str, v: Victim) -> tuple[shmkit.Region, shmkit.MsgQueue] | None:
    r = retry(lambda: shmkit.Region.open("victim", root=root, timeout=2, lock_timeout=0.5), v)
    if r is None:
        return None
    q = retry(lambda: shmkit.MsgQueue.open(r, "mq"), v)
    if q is None:
        v.attempt("close", r.close)
        return None
    return r, q


def msgq_producer(root: str, v: Victim) -> None:
    opened = msgq_open(root, v)
    if opened is None:
        return
    r, q = opened

    def size() -> int:
        return v.rng.choice((0, 1, 100, 256, 257, 3000, 5000, 70_000))

    def put() -> None:
        data = payload(v.rng, size())
        k = v.rng.randrange(3)
        if k == 0:
            q.put(data, timeout=WAIT)
        elif k == 1:
            q.put_nowait(data)
        else:
            q.try_put(data)

    def reserve() -> None:
        n = size()
        with q.reserve(n, timeout=WAIT) as buf:
            buf[: min(n, 8)] = bytes(min(n, 8))
            del buf

    try:
        v.run({"put": put, "reserve": reserve}, lambda: q.put_nowait(b"x"))
    finally:
        v.attempt("close", q.close)
        v.attempt("close", r.close)


def msgq_consumer(root: str, v: Victim) -> None:
    opened = msgq_open(root, v)
    if opened is None:
        return
    r, q = opened

    def get() -> None:
        if v.rng.random() < 0.5:
            q.get(timeout=WAIT)
        else:
            q.try_get()

    def borrow() -> None:
        with q.borrow(timeout=WAIT) as view:
            m = memoryview(view)
            bytes(m[1:])
            m.release()

    try:
        v.run({"get": get, "borrow": borrow, "gc": q.gc}, lambda: q.get_nowait())
    finally:
        v.attempt("close", q.close)
        v.attempt("close", r.close)


# --------------------------------------------------------------------------- netmap pipes


def netmap_port(root: str, end: str) -> nm.Port:
    return nm.open(f"sp{end}0", root=root, slots=64, buf_size=256, extra_bufs=4, timeout=2)


def netmap_owner(root: str, v: Victim) -> None:
    port = netmap_port(root, "{")
    lay = port.layout()
    ring_slots = port.num_tx_slots
    targets: list[list[Any]] = [
        ["PipeHeader", lay["object"], 1, 0],
        ["RingOwner", lay["owners"], 4, 16],
        ["NetmapIf", lay["nifp"], 1, 0],
    ]
    targets += [["CrossingShared", x, 1, 0] for x in lay["tx_crossings"] + lay["rx_crossings"]]
    for ring in lay["tx_rings"] + lay["rx_rings"]:
        targets.append(["NetmapRing", ring, 1, 0])
        targets.append(["NetmapSlot", ring + 256, ring_slots, 16])
    path = f"/dev/shm/{root}-{lay['region']}"
    ready({"path": path, "targets": targets})
    netmap_work(port, v, released)


def netmap_peer(root: str, v: Victim) -> None:
    port = retry(lambda: netmap_port(root, "}"), v)
    if port is not None:
        netmap_work(port, v)


def netmap_work(
    port: nm.Port, v: Victim, before_close: Callable[[Victim], None] = lambda v: None
) -> None:
    def send() -> None:
        pkts = [payload(v.rng, v.rng.randrange(1, 257)) for _ in range(v.rng.randrange(1, 16))]
        port.send(pkts, timeout=WAIT)

    def recv() -> None:
        port.recv(v.rng.randrange(1, 32), timeout=WAIT)

    def sync() -> None:
        k = v.rng.randrange(4)
        if k == 0:
            port.txsync()
        elif k == 1:
            port.rxsync()
        elif k == 2:
            port.poll(timeout=WAIT, events=nm.POLLIN | nm.POLLOUT)
        else:
            port.stats()
            assert port.peer_open in (True, False)

    try:
        v.run({"send": send, "recv": recv, "sync": sync}, port.txsync)
        before_close(v)
    finally:
        v.attempt("close", port.close)


# --------------------------------------------------------------------------- VALE switches


def vale_port(root: str, name: str) -> nm.Port:
    return nm.open(f"valesp:{name}", root=root, slots=64, buf_size=256, timeout=2)


def vale_owner(root: str, v: Victim) -> None:
    port = vale_port(root, "o")
    info = nm.vale_info("valesp", root)
    consts = shm_layout()["constants"]
    base, entry = info["object"], shm_layout()["structs"]["PortEntry"]["size"]
    targets: list[list[Any]] = [
        ["SwitchHeader", base, 1, 0],
        ["PortEntry", base + shm_layout()["structs"]["SwitchHeader"]["size"], 4, entry],
        ["MacEntry", base + consts["vale.table_off"], consts["vale.hash_size"], 16],
    ]
    ready({"path": f"/dev/shm/{root}-{info['region']}", "targets": targets})
    vale_work(root, port, v, 1, released)


def vale_peer(root: str, v: Victim) -> None:
    me = v.rng.randrange(2, 250)
    port = retry(lambda: vale_port(root, f"p{me}"), v)
    if port is not None:
        vale_work(root, port, v, me)


def vale_work(
    root: str,
    port: nm.Port,
    v: Victim,
    me: int,
    before_close: Callable[[Victim], None] = lambda v: None,
) -> None:
    def send() -> None:
        dst = v.rng.choice([b"\xff" * 6, bytes([2, 0, 0, 0, 0, v.rng.choice([1, 2, 3, 250])])])
        pkts = [
            dst + bytes([2, 0, 0, 0, 0, me]) + b"\x88\xb5" + payload(v.rng, v.rng.randrange(0, 200))
            for _ in range(v.rng.randrange(1, 16))
        ]
        port.send(pkts, timeout=WAIT)

    def recv() -> None:
        port.recv(v.rng.randrange(1, 32), timeout=WAIT)

    def inspect() -> None:
        d = nm.vale_info("valesp", root)
        assert isinstance(d["ports"], list) and isinstance(d["macs"], list)

    try:
        v.run({"send": send, "recv": recv, "inspect": inspect}, port.txsync)
        before_close(v)
    finally:
        v.attempt("close", port.close)


# --------------------------------------------------------------------------- binary API


def api_server(root: str, v: Victim) -> dict[str, Any]:

    server = make_server("api", root, scan_interval=0.2)
    r = server.region
    st = r.find_object(api_state.OBJECT)
    rings = r.find_object(RINGS)["offset"]
    inp = r.find_object(INPUT_QUEUE)["offset"]
    layout = shm_layout()["structs"]
    head, entry_size = layout["ApiStateHeader"]["size"], layout["ApiClientEntry"]["size"]
    entries = (st["size"] - head) // entry_size
    consts = shm_layout()["constants"]
    entry = shm_layout()["structs"]["DirEntry"]["size"]
    targets: list[list[Any]] = [
        ["ApiStateHeader", st["offset"], 1, 0],
        ["ApiClientEntry", st["offset"] + head, min(entries, 8), entry_size],
        ["PoolHeader", rings, 1, 0],
        ["QueueHeader", inp, 1, 0],
        [
            "DirQueues",
            consts["region.header_area"],
            consts["region.dir_entries"],
            entry,
            CLIENT_QUEUE_PREFIX,
        ],
    ]
    ready({"path": str(r.path), "targets": targets})
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            server.serve_forever()
        except shmkit.RegionTruncatedError as e:  # the one documented end of the loop
            v.truncated = True
            v.note(e)
        except BaseException as e:
            failure.append(e)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    while time.monotonic() < v.end and t.is_alive():
        t.join(0.05)
    if failure:
        raise failure[0]
    served_after = None
    if t.is_alive():
        # The spray is over: the server still serves a newcomer (damage is repaired by the
        # next death poll).
        def newcomer() -> bool:
            with Client.connect("api", "newcomer", root=root, timeout=5) as c:
                reply = c.call(Echo(x=7), timeout=5)
                assert type(reply) is EchoReply and reply.x == 7, reply
            return True

        deadline = time.monotonic() + 8
        while served_after is None and time.monotonic() < deadline and not v.truncated:
            served_after = v.attempt("newcomer", newcomer)
        released(v)  # the clients are done
        server.stop()
        t.join(5)
        assert not t.is_alive(), "serve_forever did not return after stop()"
    r.unlink()
    v.attempt("close", server.close)
    return {"served_after": served_after, "counters": v.attempt("counters", server.counters)}


def api_client(root: str, v: Victim) -> dict[str, Any]:

    me = f"c{v.rng.randrange(1 << 20)}"
    c = retry(lambda: Client.connect("api", me, root=root, timeout=2), v)
    n = [0]
    last_ok = [0.0]

    def call() -> None:
        nonlocal c
        if c is None:
            c = Client.connect("api", me, root=root, timeout=2)
        n[0] = (n[0] + 1) % 1_000_000
        try:
            reply = c.call(Echo(x=n[0]), timeout=0.5)
        except (shmkit.ShmkitError, OSError) as e:
            if not isinstance(e, TimeoutError):
                v.attempt("close", c.close)
                c = None  # connect again
            raise
        # Payloads may be changed in flight by the peer; a reply to another call is not.
        assert type(reply) is EchoReply, reply
        last_ok[0] = time.monotonic()

    v.run({"call": call}, lambda: Client.connect("api", me, root=root, timeout=1))
    if not v.truncated:
        # After the spray: served again within a bounded time (reconnecting if need be).
        deadline = time.monotonic() + 8
        while last_ok[0] < v.end and time.monotonic() < deadline and not v.truncated:
            v.attempt("call_after", call)
    if c is not None:
        v.attempt("close", c.close)
    return {"served_after": last_ok[0] >= v.end}


# --------------------------------------------------------------------------- memif

MEMIF_LOG2 = 6


def memif_socket(root: str) -> str:
    return f"/tmp/shmkit-spray-{root}.sock"


def memif_interface(root: str, role: str) -> Any:
    return Interface(
        memif_socket(root), role=role, rings=1, log2_ring_size=MEMIF_LOG2, buffer_size=256
    )


def memif_owner(root: str, v: Victim) -> None:
    """The memif client: it owns the memory (memfds sealed against shrinking). The sprayer
    reaches its ring region through /proc/PID/map_files, as a process of the same user with
    the rights to read our mappings could."""
    iface = memif_interface(root, "client")
    try:
        if not iface.wait_connected(10):
            raise TimeoutError("the memif server never connected")
        ring_bytes = 128 + 16 * (1 << MEMIF_LOG2)
        rings_size = iface.details()["regions"][0]
        with open("/proc/self/maps") as maps:
            line = next(ln for ln in maps if "memif-region0" in ln)
        path = f"/proc/{os.getpid()}/map_files/{line.split()[0]}"
        targets = []
        for k in range(rings_size // ring_bytes):
            targets.append(["MemifRingHeader", k * ring_bytes, 1, 0])
            targets.append(["MemifDesc", k * ring_bytes + 128, 1 << MEMIF_LOG2, 16])
        ready({"path": path, "targets": targets})
        memif_work(iface, v)
        released(v)
    finally:
        v.attempt("close", iface.close)


def memif_server(root: str, v: Victim) -> dict[str, Any]:
    iface = memif_interface(root, "server")
    try:
        memif_work(iface, v)
    finally:
        v.attempt("close", iface.close)
    # close() removes the socket file: nothing is left behind.
    return {"leaked": [memif_socket(root)] if os.path.exists(memif_socket(root)) else []}


def memif_work(iface: Any, v: Victim) -> None:
    def send() -> None:
        if iface.connected or iface.wait_connected(WAIT):
            iface.tx_burst(
                0, [payload(v.rng, v.rng.randrange(1, 257)) for _ in range(v.rng.randrange(1, 16))]
            )

    def recv() -> None:
        if iface.connected or iface.wait_connected(WAIT):
            iface.wait(0, WAIT)
            iface.rx_burst(0, v.rng.randrange(1, 32))

    def inspect() -> None:
        iface.details()
        iface.events()

    v.run({"send": send, "recv": recv, "inspect": inspect}, iface.details)


# --------------------------------------------------------------------------- main

ROLES: dict[tuple[str, str], Callable[[str, Victim], dict[str, Any] | None]] = {
    ("region", "owner"): region_owner,
    ("region", "opener"): region_opener,
    ("queue", "owner"): queue_owner,
    ("queue", "producer"): lambda root, v: queue_producer(root, v, tuple(QUEUES)),
    ("queue", "producer2"): lambda root, v: queue_producer(root, v, ("mpmc",)),
    ("queue", "consumer"): queue_consumer,
    ("msgring", "owner"): msgring_owner,
    ("msgring", "user"): msgring_user,
    ("msgq", "owner"): msgq_owner,
    ("msgq", "producer"): msgq_producer,
    ("msgq", "consumer"): msgq_consumer,
    ("netmap", "owner"): netmap_owner,
    ("netmap", "peer"): netmap_peer,
    ("vale", "owner"): vale_owner,
    ("vale", "peer"): vale_peer,
    ("api", "owner"): api_server,
    ("api", "client"): api_client,
    ("memif", "server"): memif_server,
    ("memif", "owner"): memif_owner,
}


def main() -> None:
    kind, role, root, seed, seconds = sys.argv[1:6]
    # A fatal signal shows the Python stacks (shmkit's SIGBUS guard stays in front of it for
    # its own mappings); a hang dumps them and exits at the deadline.
    faulthandler.enable()
    faulthandler.dump_traceback_later(float(seconds) + GRACE, exit=True)
    v = Victim(int(seed), float(seconds))
    extra = ROLES[kind, role](root, v) or {}
    v.result(**extra)


if __name__ == "__main__":
    main()
