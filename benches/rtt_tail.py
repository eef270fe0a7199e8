#!/usr/bin/env python3
"""Where the round-trip tail comes from: shmkit's Queue next to a bare shared-memory word
and the machine's own noise, in one run.

``benches/compare.py`` reports the 64 B round trip's p50/p99/p99.9. This bench explains its
tail. Each measurement runs between two spawned processes pinned to different CPUs with the
cyclic GC off (as compare.py), latencies go into preallocated arrays (nothing is allocated
per sample), and it reports:

* **shmkit spinning / blocking**: ``Queue.put`` + ``try_get`` polled (spinning) or
  ``get_into`` (blocking: the default 50 us poll, then the futex), as compare.py;
* **bare word**: the same ping-pong over one shared-memory word per direction written and
  polled from Python, no library at all: the floor a Python round trip on this machine has;
* **noise**: each pinned process only reads the clock in a loop for the same time; every
  gap above the threshold is time the CPU was taken from it (interrupts, the hypervisor's
  steal, other tasks);

and, for every round-trip run, the outliers (above 5x p50) as a histogram and a rate per
second, next to what each process was charged during its loop (``getrusage``: page faults,
voluntary and involuntary context switches) and what the machine did meanwhile (the
``/proc/stat`` steal/irq time and the ``/proc/interrupts`` counts of both CPUs). A tail
that the library causes shows up as outliers the bare word and the noise do not have;
one that the machine causes has the same rate in all three: the last table sets each run's
outliers next to the gaps the noise meter predicts during its loop.

``--perf`` (root, ``perf`` installed) records the kernel's scheduler, interrupt, page-fault
and system-call events on both CPUs during the runs, on the round trips' clock, and
attributes every outlier to what the guest kernel saw in its window: a preemption (and by
which task), a futex sleep, a page fault, a system call of the two processes, the timer
tick, another interrupt, or nothing at all (the hypervisor took the CPU).

    python benches/rtt_tail.py                   # 200k samples a run, about 10 s
    python benches/rtt_tail.py --samples 50000 --repeat 3 --perf
"""

from __future__ import annotations

import argparse
import array
import bisect
import collections
import contextlib
import dataclasses
import gc
import json
import multiprocessing as mp
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from typing import Any

END = (1 << 64) - 1
# A round-trip driver: run(first, stop, keep) does round trips first..stop-1 (recording them
# from index 0 when `keep`), end() sends the end marker.
Pinger = tuple[Callable[[int, int, bool], None], Callable[[], None]]
ctx = mp.get_context("spawn")
# Histogram edges of the outliers, microseconds.
EDGES = (2, 3, 5, 7, 10, 15, 20, 30, 50, 100, 200, 500, 1000, 10000)
IRQS = ("LOC", "RES", "CAL", "TLB")


def machine() -> dict[str, list[int]]:
    """Per-CPU steal, irq and softirq time (/proc/stat, jiffies) and interrupt counts."""
    out: dict[str, list[int]] = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                v = line.split()
                for key, col in (("irq", 6), ("softirq", 7), ("steal", 8)):
                    out.setdefault(key, []).append(int(v[col]))
    with open("/proc/interrupts") as f:
        ncpu = len(f.readline().split())
        for line in f:
            v = line.split()
            if v and v[0].rstrip(":") in IRQS:
                out[v[0].rstrip(":")] = [int(x) for x in v[1 : 1 + ncpu]]
    return out


Usage = tuple[int, int, int, int]


def usage() -> Usage:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_minflt, r.ru_majflt, r.ru_nvcsw, r.ru_nivcsw


def charged(before: Usage, after: Usage) -> dict[str, int]:
    """What this process was charged between two `usage()` calls (and its pid)."""
    names = ("minflt", "majflt", "nvcsw", "nivcsw")
    return {"pid": os.getpid()} | {k: b - a for k, a, b in zip(names, before, after)}


# --------------------------------------------------------------------------- the loops


def _open_queues(root: str) -> tuple[Any, Any]:
    import shmkit

    region = shmkit.Region.open("tail", root=root)
    return shmkit.Queue.open(region, "ab"), shmkit.Queue.open(region, "ba")


def ping_shmkit(
    spec: Any, lat: array.array[int], start: array.array[int], blocking: bool
) -> Pinger:
    tx, rx = _open_queues(spec)
    buf = bytearray(64)
    view = memoryview(buf).cast("Q")
    rbuf = bytearray(64)
    rview = memoryview(rbuf).cast("Q")
    put, get_into, try_get = tx.put, rx.get_into, rx.try_get
    clock = time.perf_counter_ns

    def run(first: int, stop: int, keep: bool) -> None:
        for i in range(first, stop):
            view[0] = i
            t0 = clock()
            put(buf)
            if blocking:
                get_into(rbuf)
                t1 = clock()
                s = rview[0]
            else:
                m = try_get()
                while m is None:
                    m = try_get()
                t1 = clock()
                s = int.from_bytes(m[:8], "little")
            if s != i:
                raise AssertionError(f"reply {s} to {i}")
            if keep:
                lat[i - first] = t1 - t0
                start[i - first] = t0

    def end() -> None:
        view[0] = END
        put(buf)

    return run, end


def pong_shmkit(spec: Any, blocking: bool, warmup: int) -> Usage:
    """Echo until the end marker; returns the usage when the measured round trips began."""
    rx, tx = _open_queues(spec)
    put, get, try_get = tx.put, rx.get, rx.try_get
    end = END.to_bytes(8, "little")
    # (taken at the last warm-up message: getrusage is a system call, kept out of the loop)
    mark = max(warmup - 1, 0).to_bytes(8, "little")
    u0 = usage()
    while True:
        if blocking:
            m = get()
        else:
            m = try_get()
            while m is None:
                m = try_get()
        if m[:8] == end:
            return u0
        if m[:8] == mark:
            u0 = usage()
        put(m)


def words(shm: SharedMemory) -> memoryview:
    """The shared block as 64-bit words."""
    if shm.buf is None:
        raise ValueError("shared memory closed")
    return shm.buf.cast("Q")


def ping_bare(spec: Any, lat: array.array[int], start: array.array[int], blocking: bool) -> Pinger:
    shm = SharedMemory(spec)
    v = words(shm)  # v[0]: ping -> pong; v[8]: pong -> ping (another cache line)
    clock = time.perf_counter_ns

    def run(first: int, stop: int, keep: bool) -> None:
        for i in range(first, stop):
            t0 = clock()
            v[0] = i
            while v[8] != i:
                pass
            t1 = clock()
            if keep:
                lat[i - first] = t1 - t0
                start[i - first] = t0

    def end() -> None:
        v[0] = END
        v.release()
        shm.close()

    return run, end


def pong_bare(spec: Any, blocking: bool, warmup: int) -> Usage:
    shm = SharedMemory(spec)
    v = words(shm)
    last = END - 1
    u0 = usage()
    while True:
        s = v[0]
        while s == last:
            s = v[0]
        if s == END:
            break
        if s == warmup - 1:
            u0 = usage()
        v[8] = s
        last = s
    v.release()
    shm.close()
    return u0


def noise(gaps: array.array[int], seconds: float, threshold_ns: int) -> tuple[int, int]:
    """Read the clock in a loop for `seconds`; record the gaps above `threshold_ns` in `gaps`
    (preallocated); returns how many there were and how many loop turns ran."""
    clock = time.perf_counter_ns
    k = turns = 0
    last = clock()
    end = last + int(seconds * 1e9)
    while last < end:
        t = clock()
        if t - last > threshold_ns and k < len(gaps):
            gaps[k] = t - last
            k += 1
        last = t
        turns += 1
    return k, turns


# --------------------------------------------------------------------------- running


def _child(
    role: str, args: tuple[Any, ...], cpu: int | None, barrier: Any, conn: Connection
) -> None:
    try:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        gc.disable()
        if role == "ping":
            kind, spec, n, warmup, blocking = args
            # Preallocated and touched: no allocation or page fault per sample.
            lat = array.array("q", bytes(8 * n))
            start = array.array("q", bytes(8 * n))
            make = ping_shmkit if kind == "shmkit" else ping_bare
            barrier.wait(60)
            run, end = make(spec, lat, start, blocking)
            run(0, warmup, False)
            # Only the measured loop is charged (not opening, mapping, or the warm-up).
            m0, u0 = machine(), usage()
            t0 = time.perf_counter()
            run(warmup, warmup + n, True)
            t1 = time.perf_counter()
            u1, m1 = usage(), machine()
            end()
            delta = {k: [b - a for a, b in zip(m0[k], m1[k])] for k in m0}
            conn.send(("ok", (lat.tobytes(), start.tobytes(), t1 - t0, charged(u0, u1), delta)))
        elif role == "pong":
            kind, spec, blocking, warmup = args
            barrier.wait(60)
            u0 = (pong_shmkit if kind == "shmkit" else pong_bare)(spec, blocking, warmup)
            conn.send(("ok", charged(u0, usage())))
        else:
            seconds, threshold = args
            gaps = array.array("q", bytes(8 << 20))  # up to 1M gaps, touched before the loop
            barrier.wait(60)
            u0 = usage()
            k, turns = noise(gaps, seconds, threshold)
            conn.send(("ok", (gaps[:k].tobytes(), turns, charged(u0, usage()))))
    except BaseException:
        conn.send(("error", traceback.format_exc()))


def run_pair(
    a: tuple[str, tuple[Any, ...]], b: tuple[str, tuple[Any, ...]], pin: bool
) -> tuple[Any, Any]:
    cpus = sorted(os.sched_getaffinity(0))
    where = (cpus[0], cpus[1]) if pin and len(cpus) >= 2 else (None, None)
    barrier = ctx.Barrier(2)
    pipes = [ctx.Pipe(duplex=False) for _ in range(2)]
    procs = [
        ctx.Process(target=_child, args=(role, args, cpu, barrier, w), daemon=True)
        for (role, args), cpu, (_, w) in zip((a, b), where, pipes)
    ]
    for p in procs:
        p.start()
    out = []
    try:
        for r, _ in pipes:
            if not r.poll(300):
                raise TimeoutError("no result within 300 s")
            status, value = r.recv()
            if status != "ok":
                raise RuntimeError(f"child failed:\n{value}")
            out.append(value)
    finally:
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join()
    return out[0], out[1]


@contextlib.contextmanager
def channel(kind: str) -> Any:
    if kind == "shmkit":
        import shmkit

        root = f"tail{os.getpid()}"
        try:  # (a failed creation leaves nothing behind either)
            region = shmkit.Region.create("tail", 4 << 20, root=root)
            for name in ("ab", "ba"):
                shmkit.Queue.create(region, name, 4096, 64, spsc=True).close()
            region.close()
            yield root
        finally:
            for info in shmkit.regions(root):
                with contextlib.suppress(OSError):
                    shmkit.Region.open(info.name, root=root).unlink()
    else:
        shm = SharedMemory(create=True, size=4096)
        words(shm)[:16] = array.array("Q", bytes(128))
        try:
            yield shm.name
        finally:
            shm.close()
            shm.unlink()


def pct(s: list[int], q: float) -> float:
    return s[min(len(s) - 1, int(q * len(s)))] / 1000.0


def histogram(values_us: list[float]) -> str:
    counts = [0] * (len(EDGES) + 1)
    for x in values_us:
        i = 0
        while i < len(EDGES) and x >= EDGES[i]:
            i += 1
        counts[i] += 1
    cells = []
    lo = 0.0
    for i, c in enumerate(counts):
        hi = f"{EDGES[i]}" if i < len(EDGES) else "inf"
        if c:
            cells.append(f"[{lo:g},{hi}) {c}")
        lo = EDGES[i] if i < len(EDGES) else lo
    return "  ".join(cells) or "none"


def clocksource() -> str:
    with open("/sys/devices/system/clocksource/clocksource0/current_clocksource") as f:
        return f.read().strip()


def load() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def report_rtt(
    label: str,
    kind: str,
    blocking: bool,
    n: int,
    warmup: int,
    pin: bool,
    dump: str | None,
    runs: list[Run],
) -> float:
    with channel(kind) as spec:
        ld = load()
        (lat_b, start_b, secs, ping_use, delta), pong_use = run_pair(
            ("ping", (kind, spec, n, warmup, blocking)),
            ("pong", (kind, spec, blocking, warmup)),
            pin,
        )
    lat = array.array("q")
    lat.frombytes(lat_b)
    s = sorted(lat)
    p50 = pct(s, 0.5)
    print(
        f"{label:<22} p50 {p50:6.2f}  p99 {pct(s, 0.99):6.2f}  p99.9 {pct(s, 0.999):7.2f}  "
        f"p99.99 {pct(s, 0.9999):8.2f}  max {s[-1] / 1000:9.1f} us  "
        f"p99.9/p50 {pct(s, 0.999) / p50:5.1f}x  ({n} samples in {secs:.2f} s, {ld})"
    )
    out = [x / 1000 for x in lat if x / 1000 > 5 * p50]
    print(
        f"    above 5x p50: {len(out)} ({100 * len(out) / n:.3f}%, {len(out) / secs:.0f}/s): "
        f"{histogram(out)}"
    )
    print(f"    charged during the loop: ping {ping_use}; pong {pong_use}")
    print(f"    machine during the loop (cpu0, cpu1): {format_delta(delta)}")
    start = array.array("q")
    start.frombytes(start_b)
    # Outlier windows on CLOCK_MONOTONIC (perf_counter_ns), to match with a kernel trace.
    windows = [(t, x) for t, x in zip(start, lat) if x > 5 * p50 * 1000]
    span = (start[0], start[-1] + lat[-1])
    runs.append(Run(label, p50, n, windows, {ping_use["pid"], pong_use["pid"]}, span, secs))
    if dump:
        with open(dump, "a") as f:
            f.write(json.dumps({"label": label, "p50_ns": p50 * 1000, "n": n, "outliers": windows}))
            f.write("\n")
    return p50


# --------------------------------------------------------------------------- attribution

# What can take a CPU from a round trip that the guest kernel sees. A window with none of
# these on either CPU lost its time outside the guest (the hypervisor: steal, host
# interrupts, VM exits).
PERF_EVENTS = (
    "sched:sched_switch",
    "exceptions:page_fault_user",
    "exceptions:page_fault_kernel",
    "raw_syscalls:sys_enter",
    "irq_vectors:local_timer_entry",
    "irq_vectors:reschedule_entry",
    "irq_vectors:call_function_entry",
    "irq_vectors:call_function_single_entry",
    "irq_vectors:irq_work_entry",
    "irq:irq_handler_entry",
    "irq:softirq_entry",
)


@dataclasses.dataclass
class Event:
    ns: int
    cpu: int
    pid: int
    name: str
    trace: str


@dataclasses.dataclass
class Run:
    label: str
    p50_us: float
    n: int
    # (start ns on CLOCK_MONOTONIC, latency ns) of the round trips above 5x p50.
    outliers: list[tuple[int, int]]
    pids: set[int]
    # The measured loop: first start, last end (ns).
    span: tuple[int, int]
    seconds: float


class Perf:
    """`perf record` of PERF_EVENTS on every CPU, timestamps on CLOCK_MONOTONIC (the clock of
    `time.perf_counter_ns`), while the runs go."""

    def __init__(self) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="rtt_tail")
        self.data = os.path.join(self.dir.name, "perf.data")
        cmd = ["perf", "record", "-q", "-a", "-k", "CLOCK_MONOTONIC", "-o", self.data]
        for e in PERF_EVENTS:
            cmd += ["-e", e]
        if shutil.which("perf") is None:
            raise SystemExit("--perf needs the perf tool (linux-tools) on PATH, run as root")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # Recording has begun once perf has written its header.
        deadline = time.monotonic() + 30
        while not (os.path.exists(self.data) and os.path.getsize(self.data) > 0):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"perf record did not start: {err.strip()}")
            time.sleep(0.05)

    def events(self) -> list[Event]:
        """Stop recording; the events in time order."""
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(60)
        out = subprocess.run(
            ["perf", "script", "-i", self.data, "--ns", "-F", "pid,cpu,time,event,trace"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        self.dir.cleanup()
        evs = []
        for line in out.splitlines():
            # "  1234 [001] 5678.123456789: sched:sched_switch: prev_comm=... prev_state=R ..."
            m = re.match(r"\s*(\d+)\s+\[(\d+)\]\s+(\d+)\.(\d+):\s+(\S+):\s*(.*)$", line)
            if m:
                pid, cpu, sec, frac, name, trace = m.groups()
                ns = int(sec) * 1_000_000_000 + int(frac.ljust(9, "0")[:9])
                evs.append(Event(ns, int(cpu), int(pid), name, trace))
        evs.sort(key=lambda e: e.ns)
        return evs


def cause(evs: list[Event], pids: set[int]) -> str:
    """The likeliest thief of a window, from the events seen in it on either CPU."""
    for e in evs:
        if e.name == "sched:sched_switch" and e.pid in pids:
            # prev_state R: taken off the CPU while runnable; otherwise it went to sleep.
            if re.search(r"prev_state=R\b", e.trace):
                who = re.search(r"next_comm=(\S+)", e.trace)
                return f"preempted by another task ({who.group(1) if who else '?'})"
            return "slept (futex: the pre-sleep poll ran out)"
    names = {e.name for e in evs}
    if "sched:sched_switch" in names:
        return "a task switch on a CPU"
    if any(n.startswith("exceptions:page_fault") for n in names):
        return "a page fault"
    if any(e.name == "raw_syscalls:sys_enter" and e.pid in pids for e in evs):
        return "a system call of the round trip's processes"
    if "irq_vectors:local_timer_entry" in names:
        return "the timer interrupt (tick)"
    if any(n.startswith(("irq_vectors:", "irq:irq_handler")) for n in names):
        return "another interrupt (IPI or device)"
    if "irq:softirq_entry" in names:
        return "a softirq"
    return "nothing the guest saw (hypervisor: steal, host interrupts)"


def attribute(runs: list[Run], evs: list[Event]) -> None:
    times = [e.ns for e in evs]
    print(f"\nOutliers (above 5x p50) by cause, from {len(evs)} kernel events on both CPUs")
    for run in runs:
        by: dict[str, list[int]] = {}
        for t0, lat in run.outliers:
            lo = bisect.bisect_left(times, t0 - 2000)
            hi = bisect.bisect_right(times, t0 + lat)
            by.setdefault(cause(evs[lo:hi], run.pids), []).append(lat)
        lo = bisect.bisect_left(times, run.span[0])
        hi = bisect.bisect_right(times, run.span[1])
        own = collections.Counter(e.name for e in evs[lo:hi] if e.pid in run.pids)
        print(
            f"  {run.label}: {len(run.outliers)} of {run.n} (p50 {run.p50_us:.2f} us); "
            f"the two processes during the loop: {own['raw_syscalls:sys_enter']} system "
            f"calls, {own['exceptions:page_fault_user'] + own['exceptions:page_fault_kernel']} "
            f"page faults, {own['sched:sched_switch']} switches off the CPU"
        )
        for why, lats in sorted(by.items(), key=lambda kv: -len(kv[1])):
            us = sorted(x / 1000 for x in lats)
            print(
                f"    {len(lats):6d}  {why}: median {us[len(us) // 2]:.1f} us, max {us[-1]:.1f} us"
            )


def format_delta(delta: dict[str, list[int]]) -> str:
    parts = []
    for k, v in delta.items():
        if any(v):
            unit = " jiffies" if k in ("irq", "softirq", "steal") else ""
            parts.append(f"{k} {'/'.join(map(str, v))}{unit}")
    return ", ".join(parts) or "nothing"


def report_noise(seconds: float, threshold_ns: int, pin: bool) -> float:
    """Run the noise meter on both CPUs; returns the gaps of 5 us or more per second, both
    CPUs together."""
    ld = load()
    results = run_pair(("noise", (seconds, threshold_ns)), ("noise", (seconds, threshold_ns)), pin)
    rate = 0.0
    for cpu, (gaps_b, turns, use) in enumerate(results):
        gaps = array.array("q")
        gaps.frombytes(gaps_b)
        us = sorted(g / 1000 for g in gaps)
        big = [g for g in us if g >= 5]
        rate += len(big) / seconds
        print(
            f"noise, process {cpu}: {turns / seconds / 1e6:.1f}M clock reads/s; "
            f"{len(us)} gaps > {threshold_ns / 1000:g} us ({len(us) / seconds:.0f}/s), "
            f"{len(big)} >= 5 us ({len(big) / seconds:.0f}/s), "
            f"max {us[-1] if us else 0:.1f} us; charged {use} ({ld})"
        )
        print(f"    gaps: {histogram(us)}")
    return rate


def predicted(runs: list[Run], rate: float) -> None:
    """Each run's outliers next to the gaps the noise meter predicts during its loop: a gap
    on either CPU stalls the round trip under way (or the next one, on the waiting side)."""
    print(f"\nOutliers vs the machine's noise ({rate:.0f} gaps >= 5 us a second, both CPUs)")
    for run in runs:
        print(
            f"  {run.label:<22} {len(run.outliers):6d} above 5x p50 "
            f"({100 * len(run.outliers) / run.n:.3f}%); ~{rate * run.seconds:.0f} gaps >= 5 us "
            f"expected in its {run.seconds:.2f} s loop"
        )


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--samples", type=int, default=200_000, help="round trips a run")
    ap.add_argument("--warmup", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=1, help="runs of each kind")
    ap.add_argument("--noise-seconds", type=float, default=2.0)
    ap.add_argument("--threshold-us", type=float, default=2.0, help="noise gap threshold")
    ap.add_argument("--no-pin", action="store_true")
    ap.add_argument(
        "--dump", help="append each run's outliers (start ns, latency ns) as a JSON line here"
    )
    ap.add_argument(
        "--perf",
        action="store_true",
        help="record kernel events with perf (root) and attribute each outlier to a cause",
    )
    ap.add_argument("--only", help="comma-separated: spin,block,bare,noise (default: all)")
    args = ap.parse_args()
    pin = not args.no_pin
    only = set(args.only.split(",")) if args.only else {"spin", "block", "bare", "noise"}
    print(
        f"round-trip tail, 64 B: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"{args.samples} samples after {args.warmup} warm-up, "
        f"{'pinned' if pin else 'not pinned'}; clock {clocksource()}"
    )
    runs: list[Run] = []
    perf = Perf() if args.perf else None
    for _ in range(args.repeat):
        these: list[Run] = []
        for key, label, kind, blocking in (
            ("bare", "bare word spinning", "bare", False),
            ("spin", "shmkit spinning", "shmkit", False),
            ("block", "shmkit blocking", "shmkit", True),
        ):
            if key in only:
                report_rtt(label, kind, blocking, args.samples, args.warmup, pin, args.dump, these)
        if "noise" in only:
            rate = report_noise(args.noise_seconds, int(args.threshold_us * 1000), pin)
            predicted(these, rate)
        runs += these
    if perf:
        attribute(runs, perf.events())
    return 0


if __name__ == "__main__":
    sys.exit(main())
