"""Python-side region benchmark: heap alloc+free round trip per call, buffer access, and
region open/close. Run: python benches/bench_region.py [--quick]"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import shmkit


def per_op(fn: Callable[[int], None], n: int, repeats: int) -> tuple[float, float]:
    """Best and median ns per operation over ``repeats`` runs of ``n`` operations."""
    runs = []
    for _ in range(repeats):
        t = time.perf_counter_ns()
        fn(n)
        runs.append((time.perf_counter_ns() - t) / n)
    return min(runs), statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="short run")
    args = ap.parse_args()
    n = 100_000 if args.quick else 1_000_000
    repeats = 3 if args.quick else 7
    root = f"bench{os.getpid()}"
    region = shmkit.Region.create("bench", 64 << 20, root=root)
    try:
        alloc, free = region.alloc, region.free

        def pair64(k: int) -> None:
            for _ in range(k):
                free(alloc(64))

        def pair4k(k: int) -> None:
            for _ in range(k):
                free(alloc(4096))

        live = [alloc(64 + (i % 7) * 200) for i in range(20_000)]
        for off in live[::2]:
            free(off)

        def fragmented(k: int) -> None:
            for _ in range(k):
                free(alloc(64))

        def loop(k: int) -> None:
            for _ in range(k):
                pass

        off = alloc(64)

        def view(k: int) -> None:
            buffer = region.buffer
            for _ in range(k):
                buffer(off, 64)

        def open_close(k: int) -> None:
            for _ in range(k):
                shmkit.Region.open("bench", root=root).close()

        rows = [
            ("alloc+free 64 B (pair)", pair64, n),
            ("alloc+free 4 KiB (pair)", pair4k, n),
            ("alloc+free 64 B, fragmented heap", fragmented, n),
            ("buffer(offset, 64) -> memoryview", view, n),
            ("Region.open + close", open_close, n // 100),
            ("empty Python loop (baseline)", loop, n),
        ]
        print(f"{'operation':<36} {'best ns':>9} {'median ns':>10}")
        for name, fn, count in rows:
            best, med = per_op(fn, count, repeats)
            print(f"{name:<36} {best:>9.0f} {med:>10.0f}")
        target = per_op(pair64, n, repeats)[0]
        verdict = "meets" if target < 300 else "MISSES"
        print(f"\nalloc+free pair from Python: {target:.0f} ns ({verdict} the < 300 ns target)")
    finally:
        region.unlink()
        region.close()


if __name__ == "__main__":
    main()
