"""Messages of any size between processes: a camera process sends "frames" from 64 B to
1 MiB through one shmkit MsgQueue; a viewer reads each in place, checks it, and sends a
small receipt back; then the camera is killed in the middle of a send, and nothing leaks.

    python examples/msgq_images.py [--root R] [--frames N]

The camera writes each frame straight into shared memory (``reserve``: no copy on the
sending side), the viewer reads it where it lies (``borrow``: none on the receiving side).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import signal
import time
import zlib

import shmkit

SIZES = (64, 4096, 65536, 300_000, 1 << 20)


def camera(root: str, frames: int) -> None:
    with shmkit.Region.open("images", root=root) as region:
        q = shmkit.MsgQueue.open(region, "frames")
        for i in range(frames):
            n = SIZES[i % len(SIZES)]
            with q.reserve(n) as frame:  # queued at the end of the block
                frame[:8] = i.to_bytes(8, "little")
                frame[8:] = bytes([i & 0xFF]) * (n - 8)
                del frame


def viewer(root: str, frames: int) -> None:
    with shmkit.Region.open("images", root=root) as region:
        q = shmkit.MsgQueue.open(region, "frames")
        receipts = shmkit.MsgQueue.open(region, "receipts")
        for _ in range(frames):
            with q.borrow(timeout=30) as frame:  # read where it lies
                view = memoryview(frame)
                receipt = bytes(view[:8]) + zlib.crc32(view).to_bytes(4, "little")
                view.release()
            receipts.put(receipt)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="examples", help="root namespace of the region")
    ap.add_argument("--frames", type=int, default=2000)
    args = ap.parse_args()

    region = shmkit.Region.create("images", 64 << 20, root=args.root)
    q = shmkit.MsgQueue.create(region, "frames", 16)
    receipts = shmkit.MsgQueue.create(region, "receipts", 4096, max_msg=12)
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=camera, args=(args.root, args.frames)),
        ctx.Process(target=viewer, args=(args.root, args.frames)),
    ]
    started = time.perf_counter()
    try:
        for p in procs:
            p.start()
        total = 0
        for i in range(args.frames):
            r = receipts.get(timeout=30)
            n = SIZES[i % len(SIZES)]
            want = i.to_bytes(8, "little") + bytes([i & 0xFF]) * (n - 8)
            assert r == want[:8] + zlib.crc32(want).to_bytes(4, "little"), f"frame {i}"
            total += n
        elapsed = time.perf_counter() - started
        print(
            f"{args.frames} frames of 64 B..1 MiB ({total / 2**20:.0f} MiB) checked "
            f"in {elapsed:.2f} s ({total / 2**20 / elapsed:,.0f} MiB/s)"
        )
        for p in procs:
            p.join(30)

        # A camera killed in the middle of writing a frame: the frame is reclaimed.
        p = ctx.Process(target=camera, args=(args.root, 1 << 30))
        p.start()
        deadline = time.monotonic() + 30
        while len(q) < q.capacity:  # the queue fills up: the camera waits with a frame reserved
            assert time.monotonic() < deadline, "the camera never filled the queue"
            time.sleep(0.01)
        assert p.pid is not None
        os.kill(p.pid, signal.SIGKILL)
        p.join(30)
        while q.try_get() is not None:
            pass
        freed = q.gc()
        stats = q.stats()
        print(f"camera killed: gc freed {freed}, {stats['in_use']} messages left allocated")
        assert stats["in_use"] == 0
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join(30)
        region.unlink()
        region.close()


if __name__ == "__main__":
    main()
