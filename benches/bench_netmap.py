"""Packets per second through a shmkit.netmap pipe between two processes, from Python.

Each run starts a receiver and a sender process (multiprocessing "spawn"); the receiver times
from its first packet to its last. Modes:

* ``packed``  — ``send_packed(data, sizes)`` / ``recv_into(data, sizes)``: one copy per packet,
  no Python object per packet (the fastest way to move many small packets from Python);
* ``list``    — ``send([bytes, ...])`` / ``recv(max)``: one ``bytes`` object per packet;
* ``dispatch``— ``send`` / ``poll`` + ``dispatch(callback)``: a Python call per packet.

For context the same run measures ``multiprocessing.Pipe`` and, when installed, faster-fifo and
pyzmq, each moving the same packets in batches of the same size.

    python benches/bench_netmap.py [--count N] [--size BYTES] [--batch N] [--slots N]
"""

from __future__ import annotations

import argparse
import array
import multiprocessing as mp
import os
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import shmkit.netmap as nm

CTX = mp.get_context("spawn")


# --------------------------------------------------------------------------- netmap


def _nm_receiver(root: str, mode: str, a: argparse.Namespace, out: Connection) -> None:
    port = nm.open("bench{0", root=root, slots=a.slots, buf_size=a.buf_size)
    out.send("ready")
    got = 0
    start = 0.0
    if mode == "packed":
        data = bytearray(a.batch * a.size)
        sizes = array.array("I", [0] * a.batch)
        while got < a.count:
            n, _ = port.recv_into(data, sizes, timeout=5.0)
            if n and not got:
                start = time.perf_counter()
            got += n
    elif mode == "list":
        while got < a.count:
            n = len(port.recv(a.batch, timeout=5.0))
            if n and not got:
                start = time.perf_counter()
            got += n
    else:
        sink: list[int] = []
        cb: Callable[[Any], None] = lambda v: sink.append(1)  # noqa: E731
        while got < a.count:
            port.poll(5.0)
            n = port.dispatch(cb)
            port.rxsync()
            if n and not got:
                start = time.perf_counter()
            got += n
    out.send((got, time.perf_counter() - start))
    port.close()


def _nm_sender(root: str, mode: str, a: argparse.Namespace) -> None:
    port = nm.open("bench}0", root=root)
    payload = bytes(range(256)) * (a.size // 256 + 1)
    packet = payload[: a.size]
    sent = 0
    if mode == "packed":
        data = packet * a.batch
        sizes = array.array("I", [a.size] * a.batch)
        while sent < a.count:
            k = min(a.batch, a.count - sent)
            if k < a.batch:
                data, sizes = packet * k, array.array("I", [a.size] * k)
            sent += port.send_packed(data, sizes, timeout=5.0)
    else:
        batch = [packet] * a.batch
        while sent < a.count:
            k = min(a.batch, a.count - sent)
            sent += port.send(batch[:k], timeout=5.0)
    port.close()


def run_netmap(mode: str, a: argparse.Namespace) -> tuple[int, float]:
    root = f"nmb{os.getpid()}"
    r_conn, w_conn = CTX.Pipe(duplex=False)
    receiver = CTX.Process(target=_nm_receiver, args=(root, mode, a, w_conn))
    receiver.start()
    assert r_conn.recv() == "ready"
    sender = CTX.Process(target=_nm_sender, args=(root, mode, a))
    sender.start()
    got, elapsed = r_conn.recv()
    sender.join()
    receiver.join()
    for f in os.listdir("/dev/shm"):
        if f.startswith(root + "-"):
            os.unlink(os.path.join("/dev/shm", f))
    return got, elapsed


# --------------------------------------------------------------------------- peers


def _distinct(a: argparse.Namespace) -> list[bytes]:
    # Distinct objects: pickle would send a repeated one once and memo references after.
    return [i.to_bytes(4, "little") * (a.size // 4) for i in range(a.batch)]


def _mp_sender(conn: Connection, a: argparse.Namespace) -> None:
    batch = _distinct(a)
    sent = 0
    while sent < a.count:
        k = min(a.batch, a.count - sent)
        conn.send(batch[:k])
        sent += k


def run_mp_pipe(a: argparse.Namespace) -> tuple[int, float]:
    r, w = CTX.Pipe(duplex=False)
    p = CTX.Process(target=_mp_sender, args=(w, a))
    p.start()
    got = len(r.recv())
    start = time.perf_counter()
    while got < a.count:
        got += len(r.recv())
    elapsed = time.perf_counter() - start
    p.join()
    return got, elapsed


def _ff_sender(q: Any, a: argparse.Namespace) -> None:
    batch = _distinct(a)
    sent = 0
    while sent < a.count:
        k = min(a.batch, a.count - sent)
        q.put_many(batch[:k], timeout=10)
        sent += k


def run_faster_fifo(a: argparse.Namespace) -> tuple[int, float] | None:
    try:
        from faster_fifo import Queue
    except ImportError:
        return None
    q = Queue(max_size_bytes=64 << 20)
    p = CTX.Process(target=_ff_sender, args=(q, a))
    p.start()
    got = len(q.get_many(timeout=10, max_messages_to_get=a.batch))
    start = time.perf_counter()
    while got < a.count:
        got += len(q.get_many(timeout=10, max_messages_to_get=a.batch))
    elapsed = time.perf_counter() - start
    p.join()
    return got, elapsed


def _zmq_sender(addr: str, a: argparse.Namespace) -> None:
    import zmq

    ctx = zmq.Context()
    s = ctx.socket(zmq.PUSH)
    s.connect(addr)
    batch = _distinct(a)
    sent = 0
    while sent < a.count:
        k = min(a.batch, a.count - sent)
        s.send_multipart(batch[:k])
        sent += k
    s.close(linger=10_000)
    ctx.term()


def run_zmq(a: argparse.Namespace) -> tuple[int, float] | None:
    try:
        import zmq
    except ImportError:
        return None
    addr = f"ipc:///tmp/shmkit-bench-{os.getpid()}.sock"
    ctx = zmq.Context()
    s = ctx.socket(zmq.PULL)
    s.bind(addr)
    p = CTX.Process(target=_zmq_sender, args=(addr, a))
    p.start()
    got = len(s.recv_multipart())
    start = time.perf_counter()
    while got < a.count:
        got += len(s.recv_multipart())
    elapsed = time.perf_counter() - start
    p.join()
    s.close()
    ctx.term()
    return got, elapsed


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--count", type=int, default=5_000_000, help="packets per run")
    ap.add_argument("--size", type=int, default=64, help="packet size in bytes")
    ap.add_argument("--batch", type=int, default=256, help="packets per call")
    ap.add_argument("--slots", type=int, default=4096, help="slots per ring")
    ap.add_argument("--buf-size", type=int, default=2048, help="netmap buffer size")
    ap.add_argument(
        "--peers", action=argparse.BooleanOptionalAction, default=True, help="also run the peers"
    )
    a = ap.parse_args()
    print(
        f"{a.count:,} packets of {a.size} B, batches of {a.batch}, "
        f"{a.slots} slots x {a.buf_size} B, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}"
    )
    runs: list[tuple[str, Callable[[], tuple[int, float] | None]]] = [
        ("shmkit.netmap packed (send_packed/recv_into)", lambda: run_netmap("packed", a)),
        ("shmkit.netmap list (send/recv)", lambda: run_netmap("list", a)),
        ("shmkit.netmap dispatch (callback per packet)", lambda: run_netmap("dispatch", a)),
    ]
    if a.peers:
        small = argparse.Namespace(**{**vars(a), "count": min(a.count, 1_000_000)})
        runs += [
            ("multiprocessing.Pipe (pickled batches)", lambda: run_mp_pipe(small)),
            ("faster-fifo (put_many/get_many)", lambda: run_faster_fifo(small)),
            ("pyzmq PUSH/PULL ipc (send_multipart)", lambda: run_zmq(small)),
        ]
    for label, fn in runs:
        res = fn()
        if res is None:
            print(f"  {label:48s} not installed")
            continue
        got, elapsed = res
        print(f"  {label:48s} {got / elapsed / 1e6:8.2f} M packets/s  ({got:,} in {elapsed:.2f} s)")


if __name__ == "__main__":
    main()
