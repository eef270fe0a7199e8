"""A netmap pipe between two processes: zero-copy rings with netmap's ABI and sync rules.

    python examples/netmap_pipe.py [--root R] [--packets N]

This process opens the master end ``example{0`` and sends N numbered packets of varied sizes
(some larger than a buffer: they travel as fragment chains); a second process opens the slave
end ``example}0``, receives them and checks each. The pipe and its region disappear when both
ends are closed.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from multiprocessing.connection import Connection

import shmkit.netmap as nm


def packet(i: int) -> bytes:
    return i.to_bytes(4, "little") * (1 + i % 700)  # 4 B to 2.8 KB: some span two buffers


def receiver(root: str, count: int, conn: Connection) -> None:
    with nm.open("example}0", root=root) as rx:
        conn.send("open")
        got = 0
        while got < count:
            rx.poll(timeout=5.0)  # sleeps on the pipe's doorbell, GIL released
            for pkt in rx.recv(256):
                assert pkt == packet(got), got
                got += 1
        conn.send(got)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="examples", help="root namespace of the pipe's region")
    ap.add_argument("--packets", type=int, default=50_000)
    args = ap.parse_args()

    with nm.open("example{0", root=args.root, slots=1024) as tx:
        here, there = mp.Pipe()
        peer = mp.get_context("spawn").Process(
            target=receiver, args=(args.root, args.packets, there)
        )
        peer.start()
        assert here.recv() == "open"
        print(f"pipe {tx.pipe!r}: {tx.num_tx_rings} ring of {tx.num_tx_slots} slots each way")
        started = time.perf_counter()
        sent = 0
        while sent < args.packets:
            batch = [packet(i) for i in range(sent, min(sent + 128, args.packets))]
            sent += tx.send(batch, timeout=5.0)  # lossless: waits for room, never drops
        got = here.recv()
        elapsed = time.perf_counter() - started
        peer.join(10)
        print(f"{got} packets received in order by pid {peer.pid} in {elapsed:.2f} s")


if __name__ == "__main__":
    main()
