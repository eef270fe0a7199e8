"""Peers for the memif tests: DPDK's testpmd (net_memif) and shmkit in a child process.

testpmd runs without hugepages or NICs (see shared/reference/memif.md); readiness and
counters come from its telemetry socket, never from sleeps.
"""

from __future__ import annotations

import array
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest
from procs import python, wait_line, wait_until

_ids = itertools.count()


def require_testpmd() -> str:
    """Path of dpdk-testpmd; skip locally without it, fail under CI."""
    path = shutil.which("dpdk-testpmd")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("dpdk-testpmd is required in CI (apt-get install dpdk-dev)")
        pytest.skip("dpdk-testpmd not installed (apt-get install dpdk-dev)")
    return path


def sock_dir() -> str:
    return tempfile.mkdtemp(prefix="shmkit-memif-")


def runtime_dirs(prefix: str) -> list[str]:
    bases = ["/var/run/dpdk"]
    if os.environ.get("XDG_RUNTIME_DIR"):
        bases.append(os.path.join(os.environ["XDG_RUNTIME_DIR"], "dpdk"))
    bases.append("/tmp/dpdk")
    return [os.path.join(b, prefix) for b in bases]


class DpdkPeer:
    """A running dpdk-testpmd with one net_memif port in io-forward mode."""

    def __init__(
        self,
        sock: str,
        *,
        role: str,
        id: int = 0,
        secret: str | None = None,
        queues: int = 1,
        bsize: int | None = None,
        rsize: int | None = None,
        log: str | None = None,
        zero_copy: bool = False,
        testpmd_args: tuple[str, ...] = (),
        interactive: bool = False,
    ) -> None:
        """``interactive``: testpmd reads commands on stdin (``-i --auto-start``: forwarding
        starts at once), so forwarding can be stopped before a peer disconnects (DPDK 22.11
        may crash when a peer disconnects while its forwarding core polls the rings)."""
        self.prefix = f"shmkit{os.getpid()}x{next(_ids)}"
        vdev = f"net_memif0,role={role},socket={sock},socket-abstract=no,id={id}"
        if zero_copy:
            # Buffers in DPDK's own (unsealed) EAL memory files; needs one file per segment list.
            vdev += ",zero-copy=yes"
        if secret is not None:
            vdev += f",secret={secret}"
        if bsize is not None:
            vdev += f",bsize={bsize}"
        if rsize is not None:
            vdev += f",rsize={rsize}"
        cmd = [
            # Line-buffered output: interactive commands are awaited on what they print.
            *(["stdbuf", "-oL"] if interactive else []),
            require_testpmd(),
            "--lcores",
            "0@0,1@0",
            "--no-huge",
            "--no-shconf",
            "-m",
            "512",
            "--no-pci",
            *(["--single-file-segments"] if zero_copy else []),
            # memif's own log shows the DISCONNECT reasons it receives.
            "--log-level=pmd.net.memif:debug",
            f"--file-prefix={self.prefix}",
            f"--vdev={vdev}",
            "--",
            "--total-num-mbufs=16384",
            "--forward-mode=io",
            *(["-i", "--auto-start"] if interactive else ["--stats-period", "1"]),
            f"--rxq={queues}",
            f"--txq={queues}",
            *testpmd_args,
        ]
        self.log_path = log or os.path.join(tempfile.gettempdir(), f"{self.prefix}.log")
        self.logf = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd,
            stdout=self.logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE if interactive else subprocess.DEVNULL,
            text=True,
        )

    def telemetry_path(self) -> str | None:
        for d in runtime_dirs(self.prefix):
            p = os.path.join(d, "dpdk_telemetry.v2")
            if os.path.exists(p):
                return p
        return None

    def query(self, cmd: str) -> Any:
        path = self.telemetry_path()
        if path is None:
            raise OSError("telemetry socket not there yet")
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
            s.settimeout(5)
            s.connect(path)
            s.recv(4096)
            s.send(cmd.encode())
            reply = json.loads(s.recv(1 << 20))
        return reply[cmd.split(",")[0]]

    def _started(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"testpmd exited: {self.log()}")
        try:
            return bool(self.query("/ethdev/info,0")["dev_started"])
        except (OSError, ValueError, KeyError, TypeError):
            return False

    def wait_started(self, timeout: float = 30.0) -> None:
        """Wait until the port has started (telemetry), so a client may connect."""
        wait_until(self._started, timeout, "testpmd port started")

    def stats(self) -> dict[str, Any]:
        return dict(self.query("/ethdev/stats,0"))

    def link_up(self) -> bool:
        try:
            return self.query("/ethdev/link_status,0").get("status") == "UP"
        except (OSError, ValueError, KeyError):
            return False

    def log(self, tail: int | None = 4000) -> str:
        """What testpmd printed (the last ``tail`` characters; None: all of it)."""
        self.logf.flush()
        with open(self.log_path) as f:
            text = f.read()
        return text if tail is None else text[-tail:]

    def command(self, line: str, done: str, timeout: float = 30.0) -> None:
        """Send an interactive command; wait until testpmd prints ``done`` once more."""
        assert self.proc.stdin is not None, "not interactive"
        before = self.log(None).count(done)
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        wait_until(lambda: self.log(None).count(done) > before, timeout, f"testpmd {line!r}")

    def stop_forwarding(self) -> None:
        self.command("stop", "Done.\n")

    def start_forwarding(self) -> None:
        self.command("start", "forwards packets on")

    def stop(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(20)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.logf.close()
        for d in runtime_dirs(self.prefix):
            shutil.rmtree(d, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.unlink(self.log_path)


@contextlib.contextmanager
def run_testpmd(sock: str, **kwargs: Any) -> Iterator[DpdkPeer]:
    tp = DpdkPeer(sock, **kwargs)
    try:
        if kwargs.get("role") == "server":
            tp.wait_started()
        yield tp
    finally:
        tp.stop()


def echo(
    iface: Any, qid: int, packets: list[bytes], timeout: float = 60.0, window: int = 128
) -> list[bytes]:
    """Send ``packets`` on ``qid`` and collect as many back; returns what came back.

    At most ``window`` packets are in flight, so the echoing peer's transmit ring (1024
    slots) can never overflow: testpmd drops what it cannot send, which would look like loss.
    """
    got: list[bytes] = []
    sent = 0
    deadline = time.monotonic() + timeout
    while len(got) < len(packets):
        if time.monotonic() > deadline:
            raise TimeoutError(f"echo: sent {sent}, got {len(got)} of {len(packets)}")
        room = window - (sent - len(got))
        if sent < len(packets) and room > 0:
            sent += iface.tx_burst(qid, packets[sent : sent + min(64, room)])
        batch = iface.rx_burst(qid, 256)
        if batch:
            got.extend(batch)
        elif sent == len(packets) or room <= 0:
            iface.wait(qid, 0.05)
    return got


BATCH = 256


def packed(pkts: list[bytes]) -> tuple[bytes, array.array[int]]:
    return b"".join(pkts), array.array("I", [len(p) for p in pkts])


def echo_packed(me: Any, pkts: list[bytes], window: int = 128) -> list[bytes]:
    """Send with tx_packed, collect with rx_into (at most ``window`` in flight)."""
    data = bytearray(BATCH * 9216)
    sizes = array.array("I", [0] * BATCH)
    got: list[bytes] = []
    sent = 0
    deadline = time.monotonic() + 60
    while len(got) < len(pkts):
        assert time.monotonic() < deadline, f"sent {sent}, got {len(got)}"
        room = window - (sent - len(got))
        if sent < len(pkts) and room > 0:
            blob, lens = packed(pkts[sent : sent + min(64, room)])
            sent += me.tx_packed(0, blob, lens)
        n = me.rx_into(0, data, sizes)
        at = 0
        for ln in sizes[:n]:
            got.append(bytes(data[at : at + ln]))
            at += ln
        if not n and (sent == len(pkts) or room <= 0):
            me.wait(0, 0.05)
    return got


def echo_zc(me: Any, pkts: list[bytes], window: int = 128) -> list[bytes]:
    """Send with tx_alloc_zc/tx_commit_zc, collect with rx_zc/refill."""
    offs, caps = array.array("Q", [0] * BATCH), array.array("I", [0] * BATCH)
    roffs, rlens = array.array("Q", [0] * BATCH), array.array("I", [0] * BATCH)
    mo, mc = memoryview(offs), memoryview(caps)
    got: list[bytes] = []
    sent = 0
    deadline = time.monotonic() + 60
    while len(got) < len(pkts):
        assert time.monotonic() < deadline, f"sent {sent}, got {len(got)}"
        room = window - (sent - len(got))
        want = min(64, room, len(pkts) - sent)
        if want > 0:
            k = me.tx_alloc_zc(0, want, mo[:want], mc[:want])
            view = me.region()
            lens = array.array("I", [len(p) for p in pkts[sent : sent + k]])
            for i in range(k):
                assert caps[i] >= lens[i]
                view[offs[i] : offs[i] + lens[i]] = pkts[sent + i]
            sent += me.tx_commit_zc(0, lens, k)
        n = me.rx_zc(0, roffs, rlens)
        if n:
            view = me.region()
            got.extend(bytes(view[roffs[i] : roffs[i] + rlens[i]]) for i in range(n))
            assert me.refill(0, n) == n
        elif sent == len(pkts) or room <= 0:
            me.wait(0, 0.05)
    return got


def warm_up(iface: Any, qid: int, timeout: float = 30.0) -> int:
    """Probe until one packet comes back on ``qid`` (the readiness condition of the data
    path: DPDK 22.11 drops the first packet or two right after a connect). Returns how many
    probes were sent; every probe that comes back is consumed."""
    deadline = time.monotonic() + timeout
    probes = 0
    while time.monotonic() < deadline:
        probes += iface.tx_burst(qid, [b"\xff" * 64])
        iface.wait(qid, 0.02)
        if iface.rx_burst(qid, 256):
            # Let stragglers of earlier probes arrive (or not), without a sleep: a short
            # bounded wait for more, which returns at once if none is coming.
            while iface.wait(qid, 0.05) and iface.rx_burst(qid, 256):
                pass
            return probes
    raise TimeoutError(f"no echo on queue {qid} within {timeout} s")


def random_packets(n: int, lo: int, hi: int, seed: int = 1) -> list[bytes]:
    """``n`` packets of uniformly random sizes in [lo, hi] with random payload."""
    import random

    rng = random.Random(seed)
    blob = os.urandom(hi + 4096)
    out = []
    for i in range(n):
        size = rng.randint(lo, hi)
        start = rng.randrange(4096)
        # A sequence number in front makes reordering or loss visible.
        out.append(i.to_bytes(4, "little") + blob[start : start + size - 4])
    return out


#: A shmkit peer in another process: echoes every packet back until stdin closes.
ECHO_PEER = r"""
import sys, selectors
from shmkit.memif import Interface
args = dict(a.split("=", 1) for a in sys.argv[1:])
kw = dict(role=args["role"], id=int(args.get("id", 0)), rings=int(args.get("rings", 1)),
          rx_mode=args.get("rx_mode", "interrupt"), buffer_size=int(args.get("bs", 2048)),
          reconnect_interval=0.05, abstract=args.get("abstract") == "1")
if "secret" in args:
    kw["secret"] = args["secret"]
if "mode" in args:
    kw["mode"] = args["mode"]
iface = Interface(args["sock"], **kw)
print("ready", flush=True)
sel = selectors.DefaultSelector()
sel.register(sys.stdin, selectors.EVENT_READ)
zc = args.get("zc") == "1"
form = args.get("form", "")  # "packed" / "zcb": echo with the batch forms; "sink": never read
import array
data, sizes = bytearray(256 * 9216), array.array("I", [0] * 256)
offs, lens = array.array("Q", [0] * 256), array.array("I", [0] * 256)
toffs, caps = array.array("Q", [0] * 256), array.array("I", [0] * 256)
mtoffs, mcaps = memoryview(toffs), memoryview(caps)
while True:
    if sel.select(0):
        break
    if not iface.connected:
        iface.wait_connected(0.05)
        continue
    try:
        for q in range(iface.queues[1] if form != "sink" else 0):
            if form == "packed":
                n = iface.rx_into(q, data, sizes)
                at, view = 0, memoryview(data)[: sum(sizes[:n])]
                while at < n:
                    k = iface.tx_packed(q, view, sizes[at:n])
                    view = view[sum(sizes[at : at + k]) :]
                    at += k
            elif form == "zcb":
                n = iface.rx_zc(q, offs, lens)
                if n:
                    rx, at = iface.region(), 0
                    while at < n:
                        k = iface.tx_alloc_zc(q, n - at, mtoffs[: n - at], mcaps[: n - at])
                        tx = iface.region()
                        for i in range(k):
                            o, t, ln = offs[at + i], toffs[i], lens[at + i]
                            tx[t : t + ln] = rx[o : o + ln]
                        at += iface.tx_commit_zc(q, lens[at : at + k])
                    iface.refill(q, n)
            elif zc:
                views = iface.rx_views(q, 256)
                if views:
                    n = 0
                    while n < len(views):
                        bufs = iface.alloc(q, len(views) - n)
                        for b, v in zip(bufs, views[n:]):
                            b[: len(v)] = v
                        n += iface.tx_commit(q, [len(v) for v in views[n : n + len(bufs)]])
                    iface.refill(q)
            else:
                pkts = iface.rx_burst(q, 256)
                while pkts:
                    pkts = pkts[iface.tx_burst(q, pkts):]
        if form == "sink":
            sel.select(0.05)
        elif args.get("rx_mode") != "polling":
            iface.wait(0, 0.01)
    except Exception as e:  # the link went down mid-burst: wait for it again
        print("error", type(e).__name__, e, file=sys.stderr, flush=True)
d = iface.details()
print("stats", d["tx_total"]["packets"], d["rx_total"]["packets"], flush=True)
iface.close()
"""


def shmkit_peer(sock: str, **kwargs: Any) -> subprocess.Popen[str]:
    """Start an echoing shmkit interface in another process; returns once it exists."""
    args = [f"sock={sock}", *(f"{k}={v}" for k, v in kwargs.items())]
    proc = python(ECHO_PEER, *args)
    wait_line(proc, "ready", stream="stdout")
    return proc


def stop_peer(proc: subprocess.Popen[str]) -> tuple[int, int]:
    """Close the peer's stdin; returns its (tx, rx) packet totals."""
    assert proc.stdin is not None
    proc.stdin.close()
    try:
        line = wait_line(proc, "stats", timeout=30, stream="stdout")
        proc.wait(30)
    finally:
        close_pipes(proc)
    _, tx, rx = line.split()
    return int(tx), int(rx)


def refusal_of(proc: subprocess.Popen[str]) -> tuple[int, str]:
    """A raw peer process that prints ``refused CODE REASON`` and exits: (code, reason)."""
    try:
        line = wait_line(proc, "refused", stream="stdout", timeout=30)
        assert proc.wait(30) == 0
    finally:
        close_pipes(proc)
    _, code, why = line.split(" ", 2)
    return int(code), why.strip()


def close_pipes(proc: subprocess.Popen[str]) -> None:
    """Close our ends of a child's pipes (after it ended or was killed)."""
    for f in (proc.stdin, proc.stdout, proc.stderr):
        if f is not None:
            with contextlib.suppress(OSError):
                f.close()
