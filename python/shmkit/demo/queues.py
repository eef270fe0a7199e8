"""Demo scene: a producer and a consumer process stream through a shared-memory queue
(per message, then in batches), the counters are read from a third process, and a producer
killed in the middle of a put does not wedge the queue."""

from __future__ import annotations

import array
import multiprocessing as mp
import os
import signal
import struct
import time
from multiprocessing.connection import Connection

import shmkit

SIZE = 64
SECONDS = 1.0
END = (1 << 64) - 1


def _producer(root: str, name: str, batch: int, conn: Connection) -> None:
    q = shmkit.Queue.open(shmkit.Region.open("queues", root=root), name)
    conn.recv()  # go
    end = time.perf_counter() + SECONDS
    n = 0
    if batch == 1:
        buf = bytearray(SIZE)
        seq = memoryview(buf).cast("Q")
        while time.perf_counter() < end:
            for _ in range(1000):
                seq[0] = n
                q.put(buf)
                n += 1
    else:
        packed = bytearray(batch * SIZE)
        seqs = memoryview(packed).cast("Q")[:: SIZE // 8]
        while time.perf_counter() < end:
            seqs[:] = array.array("Q", range(n, n + batch))
            done = 0
            while done < batch:
                done += q.put_many_from(memoryview(packed)[done * SIZE :], SIZE)
            n += batch
    q.put(struct.pack("<Q", END))
    conn.send(n)


def _consumer(root: str, name: str, batch: int, conn: Connection) -> None:
    q = shmkit.Queue.open(shmkit.Region.open("queues", root=root), name)
    conn.send("ready")
    buf = bytearray(batch * SIZE)
    seqs = memoryview(buf).cast("Q")
    expect = 0
    start = 0.0
    while True:
        n = q.get_many_into(buf, SIZE, timeout=None) if batch > 1 else (q.get_into(buf), 1)[1]
        if expect == 0:
            start = time.perf_counter()
        for i in range(n):
            s = seqs[i * (SIZE // 8)]
            if s == END:
                conn.send((expect, time.perf_counter() - start))
                return
            if s != expect:
                raise AssertionError(f"got message {s}, expected {expect}")
            expect += 1


def _stream(ctx: mp.context.SpawnContext, root: str, name: str, batch: int) -> None:
    pc, cc = ctx.Pipe(), ctx.Pipe()
    producer = ctx.Process(target=_producer, args=(root, name, batch, pc[1]), daemon=True)
    consumer = ctx.Process(target=_consumer, args=(root, name, batch, cc[1]), daemon=True)
    consumer.start()
    producer.start()
    assert cc[0].recv() == "ready"
    pc[0].send("go")
    sent = pc[0].recv()
    got, elapsed = cc[0].recv()
    producer.join()
    consumer.join()
    assert got == sent, (got, sent)
    how = "one put/get per message" if batch == 1 else f"batches of {batch} (put_many_from)"
    print(
        f"  {how:<40} {got / elapsed / 1e6:6.2f} M msg/s "
        f"({got:,} messages of {SIZE} B, every sequence number checked)"
    )


def _busy_producer(root: str) -> None:
    q = shmkit.Queue.open(shmkit.Region.open("queues", root=root), "crash")
    while True:  # until it is killed, somewhere inside a put or a get
        if not q.try_put(b"x"):
            q.try_get()


def run(root: str) -> None:
    ctx = mp.get_context("spawn")
    region = shmkit.Region.create("queues", 8 << 20, root=root)
    try:
        q = shmkit.Queue.create(region, "stream", 4096, SIZE, spsc=True)
        print(f"A single-producer/single-consumer queue in region 'queues': {q}")
        print(f"A producer and a consumer process stream {SIZE} B messages for {SECONDS:.0f} s:")
        _stream(ctx, root, "stream", 1)
        q.close()
        q = shmkit.Queue.create(region, "batches", 4096, SIZE, spsc=True)
        _stream(ctx, root, "batches", 256)
        s = q.stats()
        print(
            f"\nCounters, read by this third process: puts {s['puts']:,}, gets {s['gets']:,}, "
            f"full {s['full']:,}, empty {s['empty']:,}, wake-ups {s['wakeups']:,}"
        )

        print("\nA process is SIGKILLed while it puts and gets as fast as it can (MPMC queue):")
        crash = shmkit.Queue.create(region, "crash", 8, SIZE)
        victim = ctx.Process(target=_busy_producer, args=(root,), daemon=True)
        victim.start()
        deadline = time.monotonic() + 20
        while crash.stats()["puts"] < 100_000:
            if time.monotonic() > deadline:
                raise TimeoutError("the producer did not start")
            time.sleep(0.01)
        os.kill(victim.pid or 0, signal.SIGKILL)
        victim.join()
        drained = 0
        while crash.try_get() is not None:
            drained += 1
        print(f"  pid {victim.pid} died mid-stream; {drained} of its messages were still queued")
        crash.put(b"after the crash")
        print(f"  another producer puts, a consumer gets: {crash.get(timeout=5)!r}")
        s = crash.stats()
        print(
            f"  recovered_puts {s['recovered_puts']} (a slot the dead producer had claimed but not"
            " filled is skipped, never waited for)"
        )
    finally:
        region.unlink()
        region.close()
