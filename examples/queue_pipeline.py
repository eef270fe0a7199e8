"""A pipeline across processes: a producer, two workers and a collector joined by two shmkit
queues in one shared-memory region.

    python examples/queue_pipeline.py [--root R] [--jobs N]

The producer puts N numbers on ``jobs``; each worker squares what it gets and puts the result
on ``results``; the collector (this process) sums them and checks the total. An empty element
tells a worker to stop. The region is removed at the end.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import shmkit

WORKERS = 2


def producer(root: str, jobs: int) -> None:
    with shmkit.Region.open("pipeline", root=root) as region:
        q = shmkit.Queue.open(region, "jobs")
        for i in range(jobs):
            q.put(i.to_bytes(8, "little"))  # waits while the queue is full
        for _ in range(WORKERS):
            q.put(b"")  # one stop marker per worker


def worker(root: str) -> None:
    with shmkit.Region.open("pipeline", root=root) as region:
        jobs = shmkit.Queue.open(region, "jobs")
        results = shmkit.Queue.open(region, "results")
        while True:
            item = jobs.get(timeout=30)
            if not item:
                results.put(b"")
                return
            n = int.from_bytes(item, "little")
            results.put((n * n).to_bytes(16, "little"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="examples", help="root namespace of the region")
    ap.add_argument("--jobs", type=int, default=100_000)
    args = ap.parse_args()

    region = shmkit.Region.create("pipeline", 16 << 20, root=args.root)
    shmkit.Queue.create(region, "jobs", 1024, 8)  # capacity, element size
    results = shmkit.Queue.create(region, "results", 1024, 16)
    ctx = mp.get_context("spawn")  # clean interpreters, as separate programs would be
    procs = [ctx.Process(target=producer, args=(args.root, args.jobs))]
    procs += [ctx.Process(target=worker, args=(args.root,)) for _ in range(WORKERS)]
    started = time.perf_counter()
    try:
        for p in procs:
            p.start()
        total, finished, count = 0, 0, 0
        while finished < WORKERS:
            for item in results.get_many(256, timeout=30):
                if item:
                    total += int.from_bytes(item, "little")
                    count += 1
                else:
                    finished += 1
        elapsed = time.perf_counter() - started
        expected = sum(i * i for i in range(args.jobs))
        assert (count, total) == (args.jobs, expected), (count, total, expected)
        print(
            f"{count} jobs through 2 queues and {len(procs)} processes in {elapsed:.2f} s "
            f"({count / elapsed:,.0f} jobs/s); sum of squares {total} checked"
        )
    finally:
        for p in procs:
            p.join(30)
        region.unlink()  # the name goes now; the memory when the last process unmaps it
        region.close()


if __name__ == "__main__":
    main()
