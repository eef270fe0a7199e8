"""netmap pipes between real processes: each scenario drives a peer process (a separate Python
interpreter) step by step over its stdin/stdout, and checks what both sides see."""

from __future__ import annotations

import ast
import os
import selectors
import signal
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import shmkit
import shmkit.netmap as nm
from procs import finish, kill9, python, wait_line

#: The peer: evaluates (or executes) one line of Python per request and answers
#: "OK <repr>" or "ERR <exception type> <message>".
PEER = r"""
import sys
import shmkit
import shmkit.netmap as nm
ns = {"nm": nm, "shmkit": shmkit, "root": sys.argv[1]}
print("ready", flush=True)
for line in sys.stdin:
    src = line.rstrip("\n").replace("\\n", "\n")
    try:
        try:
            code = compile(src, "<peer>", "eval")
        except SyntaxError:
            exec(compile(src, "<peer>", "exec"), ns)
            res = None
        else:
            res = eval(code, ns)
        print("OK", repr(res), flush=True)
    except BaseException as e:
        msg = str(e).replace("\n", " ")
        print("ERR", type(e).__name__, getattr(e, "errno", None), msg, flush=True)
"""


class PeerError(Exception):
    def __init__(self, kind: str, code: str, msg: str) -> None:
        super().__init__(f"{kind}: {msg}")
        self.kind = kind
        self.errno = None if code == "None" else int(code)


class Peer:
    """A second process running shmkit, driven one statement at a time."""

    def __init__(self, root: str, **kw: Any) -> None:
        self.proc = python(PEER, root, **kw)
        wait_line(self.proc, "ready", stream="stdout")

    def __call__(self, src: str, timeout: float = 30.0) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(src.replace("\n", "\\n") + "\n")
        self.proc.stdin.flush()
        line = wait_line(self.proc, "", timeout=timeout, stream="stdout").rstrip("\n")
        status, _, rest = line.partition(" ")
        if status == "ERR":
            kind, _, rest = rest.partition(" ")
            code, _, msg = rest.partition(" ")
            raise PeerError(kind, code, msg)
        assert status == "OK", line
        try:
            return ast.literal_eval(rest)
        except (ValueError, SyntaxError):
            return rest

    def send_nowait(self, src: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(src.replace("\n", "\\n") + "\n")
        self.proc.stdin.flush()

    def result(self, timeout: float = 30.0) -> Any:
        line = wait_line(self.proc, "", timeout=timeout, stream="stdout").rstrip("\n")
        status, _, rest = line.partition(" ")
        assert status == "OK", line
        try:
            return ast.literal_eval(rest)
        except (ValueError, SyntaxError):
            return rest

    def close(self) -> None:
        if self.proc.returncode is None:
            finish(self.proc)  # closes stdin: the peer's loop ends


@pytest.fixture
def peer(root: str) -> Iterator[Peer]:
    p = Peer(root)
    yield p
    p.close()


def kill_and_reap(proc: subprocess.Popen[str]) -> None:
    """SIGKILL a child and close its pipes."""
    kill9(proc)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def fill(port: nm.Port, count: int, tag: int = 0) -> None:
    r = port.tx_rings[0]
    for i in range(count):
        r.buf(r.cur)[:1] = bytes([(tag + i) & 0xFF])
        r.slots[r.cur].len = 1
        r.slots[r.cur].flags = 0
        r.advance()


PEER_TAKE = """
def take(port, n):
    r = port.rx_rings[0]
    out = []
    while not r.empty and len(out) < n:
        out.append(r.packet(r.cur)[0])
        r.advance()
    return out
"""


# --------------------------------------------------------------------------- scenarios


def test_send_ten_read_seven_leaves_three_pending(root: str, peer: Peer) -> None:
    tx = nm.open("pp{0", root=root, slots=16, buf_size=64)
    peer(f"rx = nm.open('pp}}0', root=root)\n{PEER_TAKE}")
    fill(tx, 10)
    tx.txsync()
    assert peer("rx.rxsync() or rx.rx_rings[0].space") == 10
    assert peer("take(rx, 7)") == list(range(7))
    peer("rx.rxsync()")
    tx.txsync()
    r = tx.tx_rings[0]
    assert 15 - r.space == 3, "the sender's pending count is 3"
    assert r.hwtail == (peer("rx.rx_rings[0].hwcur") - 1) % 16, "TX hwtail = RX hwcur - 1"
    tx.close()


def test_fill_then_one_more_is_rejected(root: str, peer: Peer) -> None:
    tx = nm.open("fo{0", root=root, slots=8, buf_size=64)
    peer("rx = nm.open('fo}0', root=root)")
    fill(tx, 7)
    tx.txsync()
    r = tx.tx_rings[0]
    assert r.space == 0 and r.head == r.tail
    r.head = r.cur = (r.tail + 1) % 8
    with pytest.raises(nm.RingReinit):
        tx.txsync()
    assert (r.head, r.cur, r.tail) == (r.hwcur, r.hwcur, r.hwtail)
    assert peer("rx.rxsync() or rx.rx_rings[0].space") == 7, "the pipe is lossless: all 7 arrive"
    tx.close()


def test_morefrag_invisible_until_last_fragment(root: str, peer: Peer) -> None:
    tx = nm.open("mf{0", root=root, slots=8, buf_size=64)
    peer("rx = nm.open('mf}0', root=root)")
    r = tx.tx_rings[0]
    for i in range(3):
        r.buf(i)[:2] = b"%d%d" % (i, i)
        r.slots[i].len = 2
        r.slots[i].flags = nm.NS_MOREFRAG if i < 2 else 0
    for upto in (1, 2):
        r.head = r.cur = upto
        tx.txsync()
        assert peer("rx.rxsync() or rx.rx_rings[0].space") == 0, f"{upto} fragment(s) are invisible"
    r.head = r.cur = 3
    tx.txsync()
    assert peer("rx.recv()") == [b"001122"]
    tx.close()


def test_buffer_swap_propagates_to_the_sender(root: str, peer: Peer) -> None:
    tx = nm.open("bs{0", root=root, slots=8, buf_size=64, extra_bufs=1)
    peer("rx = nm.open('bs}0', root=root)")
    spare = peer("rx.extra_bufs()")
    assert len(spare) == 1
    assert tx.send([b"payload"]) == 1
    old = peer(
        "rx.rxsync()\nr = rx.rx_rings[0]\ns = r.slots[r.cur]\nold = s.buf_idx\n"
        f"s.buf_idx = {spare[0]}\ns.flags |= nm.NS_BUF_CHANGED\nr.advance()\nrx.rxsync()"
    )
    assert old is None
    assert tx.tx_rings[0].slots[0].buf_idx == spare[0], "the receiver's buffer reached the sender"
    assert bytes(tx.buffer(peer("old"))[:7]) == b"payload", "the receiver kept the old buffer"
    tx.close()


def test_exclusive_and_busy_across_processes(root: str, peer: Peer) -> None:
    m = nm.open("ex{0/x", root=root, rings=2, slots=4, buf_size=64)
    for name in ("ex{0", "ex{0-1", "ex{0/xT"):
        with pytest.raises(PeerError) as ei:
            peer(f"nm.open('{name}', root=root)")
        assert (ei.value.kind, ei.value.errno) == ("OSError", 16), name
    peer("s = nm.open('ex}0/x', root=root)")  # the other end is free
    m.close()
    # A ring bound (even non-exclusively) by a live process is busy for the others.
    peer("a = nm.open('ex{0-0', root=root)")
    with pytest.raises(OSError) as ei2:
        nm.open("ex{0-0", root=root)
    assert ei2.value.errno == 16
    b = nm.open("ex{0-1", root=root)
    assert [r.index for r in b.tx_rings] == [1]
    b.close()


def test_counts_swapped_between_processes(root: str, peer: Peer) -> None:
    peer(
        "m = nm.open('sc{0@conf:tx-rings=2,rx-rings=3,tx-slots=16,rx-slots=32', "
        "root=root, buf_size=64)"
    )
    s = nm.open("sc}0", root=root)
    assert (s.num_tx_rings, s.num_rx_rings, s.num_tx_slots, s.num_rx_slots) == (3, 2, 32, 16)
    # Slave TX ring 2 crosses master RX ring 2.
    r = s.tx_rings[2]
    r.buf(0)[:3] = b"two"
    r.slots[0].len = 3
    r.advance()
    r.sync()
    assert peer("m.rxsync() or [x.space for x in m.rx_rings]") == [0, 0, 1]
    assert peer("m.recv()") == [b"two"]
    s.close()


def test_close_reopen_keeps_queued_packets(root: str) -> None:
    tx = nm.open("cr{0", root=root, slots=8, buf_size=64)
    first = Peer(root)
    first("rx = nm.open('cr}0', root=root)")
    assert tx.peer_open
    tx.send([b"1", b"2", b"3", b"4"])
    assert first("rx.recv(1)") == [b"1"]
    first("rx.close()")
    first.close()
    assert not tx.peer_open
    tx.send([b"5"])
    second = Peer(root)
    assert second("nm.open('cr}0', root=root).recv()") == [b"2", b"3", b"4", b"5"]
    second.close()
    # The survivor's state is intact after its peer left twice.
    assert tx.send([b"6"]) == 1
    third = Peer(root)
    assert third("nm.open('cr}0', root=root).recv()") == [b"6"]
    third.close()
    tx.close()
    assert not os.path.exists(f"/dev/shm/{root}-netmap.cr{{0"), "both ends closed: destroyed"


def test_killed_peer_ring_is_reclaimed(root: str) -> None:
    tx = nm.open("kp{0", root=root, slots=8, buf_size=64)
    victim = Peer(root)
    victim("rx = nm.open('kp}0', root=root)")
    tx.send([b"a", b"b"])
    assert victim("rx.rxsync() or rx.rx_rings[0].space") == 2
    kill_and_reap(victim.proc)
    heir = Peer(root)
    # The dead process's ring is free again, and the unreleased packets come again.
    assert heir("nm.open('kp}0', root=root).recv()") == [b"a", b"b"]
    heir.close()
    tx.close()


def test_poll_wakes_on_the_peer_across_processes(root: str, peer: Peer) -> None:
    rx = nm.open("pw{0", root=root, slots=8, buf_size=64)
    peer("tx = nm.open('pw}0', root=root)")
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(rx.poll(30.0)))
    start = time.monotonic()
    t.start()
    peer("tx.send([b'wake'])")
    t.join(25)
    assert result == [nm.POLLIN] and time.monotonic() - start < 20
    assert rx.recv() == [b"wake"]
    # POLLOUT: the peer fills the pipe, then waits for the room we free.
    peer("tx.send([b'x'] * 7)")
    peer(
        "import threading\nres = []\n"
        "th = threading.Thread(target=lambda: res.append(tx.poll(30.0, events=nm.POLLOUT)))\n"
        "th.start()"
    )
    assert len(rx.recv(8)) == 7
    assert peer("th.join(25) or res") == [nm.POLLOUT]
    # The descriptor: readable when the peer sends.
    with selectors.DefaultSelector() as sel:
        sel.register(rx.fileno(), selectors.EVENT_READ)
        assert sel.select(0) == []
        peer("tx.send([b'fd'])")
        assert sel.select(20)
        assert rx.recv() == [b"fd"]
    rx.close()


def test_blocking_poll_is_interruptible(root: str) -> None:
    proc = python(
        """
        import sys, shmkit.netmap as nm
        p = nm.open("int{0", root=sys.argv[1])
        try:
            # A SIGINT that lands before the wait is raised at once; one that lands during
            # it ends the wait within a slice. Either way it reaches this handler.
            print("polling", file=sys.stderr, flush=True)
            p.poll(None)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr, flush=True)
        """,
        root,
    )
    wait_line(proc, "polling")
    proc.send_signal(signal.SIGINT)
    wait_line(proc, "interrupted", timeout=10)
    finish(proc)


def test_issue_457_full_pipe_with_implicit_tx_does_not_stall(root: str) -> None:
    """The sender fills the pipe with inject() (no sync) and relies on poll(POLLIN) to push
    the packets; upstream's poll never refreshes the tail of a full ring there."""
    sender = python(
        """
        import sys, time, shmkit.netmap as nm
        tx = nm.open("s457{0", root=sys.argv[1], slots=8, buf_size=64)
        print("open", file=sys.stderr, flush=True)
        sent, deadline = 0, time.monotonic() + 60
        while sent < 300 and time.monotonic() < deadline:
            if tx.inject(sent.to_bytes(2, "little")):
                sent += 1
            else:
                tx.poll(0.02, events=nm.POLLIN)   # implicit TX only
        while tx.tx_rings[0].hwcur != tx.tx_rings[0].head and time.monotonic() < deadline:
            tx.poll(0.02, events=nm.POLLIN)
        print("sent", sent, file=sys.stderr, flush=True)
        """,
        root,
    )
    wait_line(sender, "open")
    rx = nm.open("s457}0", root=root)
    got: list[int] = []
    deadline = time.monotonic() + 60
    while len(got) < 300 and time.monotonic() < deadline:
        got += [int.from_bytes(p, "little") for p in rx.recv(timeout=1.0)]
    assert got == list(range(300))
    assert "sent 300" in wait_line(sender, "sent")
    finish(sender)
    rx.close()


# --------------------------------------------------------------------------- hostile peers


def _hostile(root: str, region: str, offset: int, data: bytes) -> None:
    proc = python(
        """
        import sys, shmkit
        r = shmkit.Region.open(sys.argv[2], root=sys.argv[1])
        r.write(int(sys.argv[3]), bytes.fromhex(sys.argv[4]))
        r.close()
        """,
        root,
        region,
        str(offset),
        data.hex(),
    )
    finish(proc)


def test_hostile_indexes_in_our_ring(root: str) -> None:
    tx = nm.open("hi{0", root=root, slots=8, buf_size=64)
    rx = nm.open("hi}0", root=root)
    lay = tx.layout()
    ring = lay["tx_rings"][0]
    for head, cur in [(0xFFFFFFFF, 0), (3, 9), (5, 4), (8, 8)]:
        _hostile(root, lay["region"], ring + 20, struct.pack("<II", head, cur))
        with pytest.raises(nm.RingReinit):
            tx.txsync()
        r = tx.tx_rings[0]
        assert (r.head, r.cur, r.tail) == (r.hwcur, r.hwcur, r.hwtail)
    # Garbage tail only: restored on the next sync, no reinit.
    _hostile(root, lay["region"], ring + 28, struct.pack("<I", 0xDEADBEEF))
    tx.txsync()
    assert tx.tx_rings[0].tail == 7
    assert tx.send([b"still works"]) == 1 and rx.recv() == [b"still works"]
    tx.close()
    rx.close()


def test_hostile_slots_are_dropped_or_refused(root: str) -> None:
    tx = nm.open("hs{0", root=root, slots=8, buf_size=64)
    rx = nm.open("hs}0", root=root)
    assert tx.send([b"a", b"b", b"c", b"d"]) == 4
    lay = rx.layout()
    rslots = lay["rx_rings"][0] + 256
    # A peer rewrites the slots it handed over: buf_idx past the pool, 0, and a huge len.
    _hostile(root, lay["region"], rslots + 0 * 16, struct.pack("<I", 0xFFFFFFF0))
    _hostile(root, lay["region"], rslots + 1 * 16, struct.pack("<I", 0))
    _hostile(root, lay["region"], rslots + 2 * 16 + 4, struct.pack("<H", 0xFFFF))
    rx.rxsync()
    r = rx.rx_rings[0]
    with pytest.raises(shmkit.CorruptionError):
        r.buf(0)
    with pytest.raises(shmkit.CorruptionError):
        r.packet(2)
    assert rx.recv() == [b"d"]
    assert rx.stats()["bad_packets"] == 3
    # Reinit sanitises what is left.
    r.head = 77
    with pytest.raises(nm.RingReinit):
        rx.rxsync()
    assert (r.slots[0].buf_idx, r.slots[0].len) == (0, 0)
    tx.close()
    rx.close()


def test_hostile_published_progress_is_refused(root: str) -> None:
    tx = nm.open("hp{0", root=root, slots=8, buf_size=64)
    rx = nm.open("hp}0", root=root)
    tx.send([b"x"])
    lay = tx.layout()
    crossing = lay["tx_crossings"][0]
    for value in (0xFFFFFFFF, 8, 3):  # out of range; out of range; more than was sent
        _hostile(root, lay["region"], crossing + 64, struct.pack("<I", value))  # rx_pub
        with pytest.raises(shmkit.CorruptionError):
            tx.txsync()
    _hostile(root, lay["region"], crossing + 64, struct.pack("<I", 7))
    tx.txsync()
    rx.rxsync()
    assert rx.rx_rings[0].tail == 1
    for value in (0xFFFFFFFF, 0):  # out of range; moving backwards
        _hostile(root, lay["region"], crossing, struct.pack("<I", value))
        with pytest.raises(shmkit.CorruptionError):
            rx.rxsync()
    assert rx.poll(0) == nm.POLLIN, "a packet is visible: poll answers without syncing"
    rx.rx_rings[0].advance()
    assert rx.poll(0) & nm.POLLERR
    assert rx.stats()["peer_errors"] >= 2 and tx.stats()["peer_errors"] == 3
    tx.close()
    rx.close()


def test_hostile_random_garbage_never_crashes(root: str) -> None:
    """A peer sprays random bytes over both ends' rings, slots and published words while this
    process keeps sending, receiving and polling: only shmkit errors, never a crash."""
    tx = nm.open("hr{0", root=root, slots=16, buf_size=128)
    rx = nm.open("hr}0", root=root)
    lay = tx.layout()
    start = min(lay["tx_crossings"] + lay["rx_crossings"])
    end = lay["pool"]
    sprayer = python(
        """
        import os, random, sys, time, shmkit
        r = shmkit.Region.open(sys.argv[2], root=sys.argv[1])
        lo, hi = int(sys.argv[3]), int(sys.argv[4])
        rnd = random.Random(1234)
        print("spraying", file=sys.stderr, flush=True)
        stop = time.monotonic() + 1.5
        while time.monotonic() < stop:
            at = rnd.randrange(lo, hi - 8) & ~3
            r.write(at, os.urandom(rnd.choice((2, 4, 8))))
        print("done", file=sys.stderr, flush=True)
        """,
        root,
        lay["region"],
        str(start),
        str(end),
    )
    wait_line(sprayer, "spraying")
    errors = 0
    ops = 0
    while sprayer.poll() is None:
        for op in (
            lambda: tx.send([b"p" * 200, b"q"]),
            lambda: rx.recv(),
            lambda: tx.poll(0, events=nm.POLLIN | nm.POLLOUT),
            lambda: rx.poll(0),
            lambda: rx.dispatch(lambda v: None),
            lambda: [r.buf(i) for r in rx.rx_rings for i in range(r.num_slots)],
        ):
            ops += 1
            try:
                op()
            except (nm.RingReinit, shmkit.CorruptionError):
                errors += 1
    finish(sprayer)
    assert ops > 50
    for ring in tx.tx_rings + rx.rx_rings:
        assert ring.hwcur < ring.num_slots and ring.hwtail < ring.num_slots
    tx.close()
    rx.close()


def test_corrupt_header_is_refused_at_open(root: str, peer: Peer) -> None:
    peer("m = nm.open('hh{0', root=root, slots=8, buf_size=64)\nlay = m.layout()")
    lay = peer("lay")
    _hostile(root, lay["region"], lay["object"] + 40, struct.pack("<I", 4096))  # tx_slots
    with pytest.raises(shmkit.CorruptionError):
        nm.open("hh}0", root=root)
    # The peer that attached before is unaffected: geometry was read once and kept.
    assert peer("m.send([b'ok'])") == 1


# --------------------------------------------------------------------------- creation


def test_creator_killed_during_initialisation(root: str) -> None:
    victim = python(
        "import sys, shmkit.netmap as nm\nnm.open('ci{0', root=sys.argv[1], slots=8)",
        root,
        failpoints="netmap.init",
    )
    wait_line(victim, "failpoint netmap.init reached")
    # While the creator lives, an opener waits (and times out).
    with pytest.raises(TimeoutError):
        nm.open("ci}0", root=root, timeout=0.3)
    kill_and_reap(victim)
    # Once it is dead, the next opener recreates the pipe.
    p = nm.open("ci}0", root=root, slots=16)
    assert p.num_rx_slots == 16
    p.close()


def test_racing_openers_agree(root: str) -> None:
    procs = [
        python(
            """
            import sys, shmkit.netmap as nm
            end = "{" if sys.argv[2] == "0" else "}"
            p = nm.open("race" + end + "0", root=sys.argv[1], slots=32, buf_size=64)
            print("geometry", p.num_tx_slots, p.num_rx_slots, file=sys.stderr, flush=True)
            sys.stdin.readline()
            """,
            root,
            str(i % 2),
        )
        for i in range(2)
    ]
    for p in procs:
        assert "geometry 32 32" in wait_line(p, "geometry")
    for p in procs:
        finish(p)  # closes stdin
    assert not os.path.exists(f"/dev/shm/{root}-netmap.race{{0")


def test_process_exiting_without_close_leaves_nothing_held(root: str) -> None:
    """A process that exits without closing its port leaves no ring or lock held."""
    q = nm.open("ec}0", root=root, slots=8, buf_size=64)
    proc = python(
        "import sys, shmkit.netmap as nm\np = nm.open('ec{0/x', root=sys.argv[1])\np.send([b'z'])",
        root,
    )
    finish(proc)
    p = nm.open("ec{0/x", root=root)  # exclusive: nobody holds the master's rings
    assert q.recv() == [b"z"]
    p.close()
    q.close()


def test_a_pipe_marked_destroyed_is_refused(root: str, peer: Peer) -> None:
    peer("m = nm.open('dd{0', root=root, slots=8, buf_size=64)\nlay = m.layout()")
    lay = peer("lay")
    _hostile(root, lay["region"], lay["object"] + 12, struct.pack("<I", 2))  # state = DESTROYED
    with pytest.raises(shmkit.ClosedError):
        nm.open("dd}0", root=root, timeout=0.2)


def test_os_errors_keep_their_errno(root: str) -> None:
    proc = python(
        """
        import errno, os, resource, sys
        import shmkit.netmap as nm
        p = nm.open("os{0", root=sys.argv[1], slots=8, buf_size=64)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
        held = []
        try:
            while True:
                held.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            pass
        try:
            p.fileno()
        except OSError as e:
            print("errno", e.errno == errno.EMFILE, type(e).__name__, file=sys.stderr, flush=True)
        for fd in held:
            os.close(fd)
        p.close()
        """,
        root,
    )
    assert "errno True OSError" in wait_line(proc, "errno")
    finish(proc)
