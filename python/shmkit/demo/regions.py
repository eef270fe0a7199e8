"""Demo scene: regions created and opened by several processes, the registry, and a scan
that cleans up after a process killed with SIGKILL."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from multiprocessing.connection import Connection

import shmkit
from shmkit._format import regions_table

NAME = "tour"
SIZE = 4 << 20


def _worker(root: str, conn: Connection) -> None:
    region = shmkit.Region.find_or_create(NAME, SIZE, root=root)
    offset = region.alloc(64)
    region.write(offset, f"hello from pid {os.getpid()}".encode())
    conn.send((os.getpid(), region.created, offset))
    # Wait for "quit" (a pipe, not an Event: a process killed inside Event.wait would leave
    # the Event's internal lock taken and wedge the others).
    conn.poll(60)
    region.close()


def run(root: str) -> None:
    ctx = mp.get_context("spawn")
    pipes = [ctx.Pipe() for _ in range(3)]
    workers = [ctx.Process(target=_worker, args=(root, w), daemon=True) for _, w in pipes]
    print("3 processes race Region.find_or_create('tour'): exactly one creates it.")
    for p in workers:
        p.start()
    reports = [r.recv() for r, _ in pipes]
    for pid, created, offset in reports:
        print(f"  pid {pid}: {'created' if created else 'opened '} it, wrote at offset {offset:#x}")
    assert sum(created for _, created, _ in reports) == 1

    region = shmkit.Region.open(NAME, root=root)
    print("\nThis process opens it too and reads what each worker wrote:")
    for _pid, _, offset in reports:
        print(f"  {offset:#x}: {region.read(offset, 64).rstrip(bytes(1)).decode()!r}")

    print(f"\nshmkit regions --root {root}")
    print(regions_table(shmkit.regions(root)))

    victim = workers[1]
    print(f"\nkill -9 {victim.pid} (it still has the region mapped and registered)")
    os.kill(victim.pid or 0, signal.SIGKILL)
    victim.join()
    print(regions_table(shmkit.regions(root)))

    report = shmkit.scan(root)
    print(f"\nshmkit scan --root {root}")
    for name, pid in report.ghosts:
        print(f"  ghost {name}: pid {pid} removed")
    print(regions_table(shmkit.regions(root)))

    for (conn, _), p in zip(pipes, workers):
        if p.is_alive():
            conn.send("quit")
        p.join()
    region.unlink()
    region.close()
    print("\nworkers closed their handles; the region was unlinked.")
