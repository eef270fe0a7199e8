"""Packets per second through a shmkit VALE switch between processes, from Python.

A sender process pushes 64-byte frames with ``send_packed`` in bursts; receiver processes take
them with ``recv_into``. Scenarios:

* ``unicast`` — to one receiver whose address the switch has learnt;
* ``flood``   — broadcast frames, flooded to three receivers;
* ``memif``   — to a memif peer (a server interface) whose client is attached to the switch
  (``vale_attach``: the bridge thread copies port -> memif), in the receiver's process;
* ``pipe``    — the same bursts through a netmap pipe, for comparison.

A VALE destination that is full drops (it never holds the sender back, unlike a pipe), so each
receiver reports what it got and the rate at which it got it; the drops are the rest.

    python benches/bench_vale.py [--count N] [--batch N] [--slots N]
"""

from __future__ import annotations

import argparse
import array
import multiprocessing as mp
import os
import shutil
import time
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event

import shmkit.netmap as nm

CTX = mp.get_context("spawn")
SIZE = 64
BCAST = b"\xff" * 6


def mac(i: int) -> bytes:
    return bytes([2, 0, 0, 0, 0, i])


def frame(dst: bytes, src: bytes) -> bytes:
    return (dst + src + b"\x88\xb5" + bytes(range(SIZE)))[:SIZE]


def _memif_receiver(root: str, i: int, a: argparse.Namespace, done: Event, out: Connection) -> None:
    import tempfile

    from shmkit.memif import Interface

    sock = os.path.join(tempfile.mkdtemp(prefix="shmkit-bench-vale-"), "m.sock")
    with Interface(sock, role="server") as peer, Interface(sock, role="client") as client:
        bridge = nm.vale_attach("vale0:m", client, root=root, slots=a.slots)
        assert peer.wait_connected(10)
        while not peer.tx_burst(0, [frame(BCAST, mac(i))]):  # let the switch learn it
            time.sleep(0.001)
        out.send("ready")
        data = bytearray(a.batch * 2048)
        sizes = array.array("I", [0] * a.batch)
        got, first, last = 0, 0.0, 0.0
        while got < a.count:
            peer.wait(0, 0.2)
            n = peer.rx_into(0, data, sizes)
            if n:
                last = time.perf_counter()
                first = first or last
                got += n
            elif done.is_set():
                break
        out.send((got, last - first))
        bridge.close()
    shutil.rmtree(os.path.dirname(sock), ignore_errors=True)


def _receiver(
    root: str, name: str, i: int, a: argparse.Namespace, done: Event, out: Connection
) -> None:
    if name == "memif":
        _memif_receiver(root, i, a, done, out)
        return
    port = nm.open(name, root=root, slots=a.slots)
    if name.startswith("vale"):
        port.send([frame(BCAST, mac(i))])  # let the switch learn this address
    out.send("ready")
    data = bytearray(a.batch * SIZE)
    sizes = array.array("I", [0] * a.batch)
    got, first, last = 0, 0.0, 0.0
    while got < a.count:
        n, _ = port.recv_into(data, sizes, timeout=0.2)
        if n:
            last = time.perf_counter()
            first = first or last
            got += n
        elif done.is_set():
            break
    out.send((got, last - first))
    port.close()


def _sender(root: str, name: str, dst: bytes, a: argparse.Namespace, done: Event) -> None:
    port = nm.open(name, root=root, slots=a.slots)
    data = frame(dst, mac(1)) * a.batch
    sizes = array.array("I", [SIZE] * a.batch)
    sent = 0
    while sent < a.count:
        sent += port.send_packed(data, sizes, timeout=5.0)
    done.set()
    port.close()


def run(scenario: str, a: argparse.Namespace) -> list[tuple[int, float]]:
    root = f"vb{os.getpid()}"
    if scenario == "pipe":
        rx_names, tx_name, dst = ["bench{0"], "bench}0", mac(2)
    elif scenario == "unicast":
        rx_names, tx_name, dst = ["vale0:b"], "vale0:a", mac(2)
    elif scenario == "memif":
        rx_names, tx_name, dst = ["memif"], "vale0:a", mac(2)
    else:
        rx_names, tx_name, dst = ["vale0:b", "vale0:c", "vale0:d"], "vale0:a", BCAST
    done = CTX.Event()
    conns, procs = [], []
    for i, name in enumerate(rx_names):
        r, w = CTX.Pipe(duplex=False)
        p = CTX.Process(target=_receiver, args=(root, name, i + 2, a, done, w))
        p.start()
        assert r.recv() == "ready"
        conns.append(r)
        procs.append(p)
    sender = CTX.Process(target=_sender, args=(root, tx_name, dst, a, done))
    sender.start()
    results = [c.recv() for c in conns]
    sender.join()
    for p in procs:
        p.join()
    for f in os.listdir("/dev/shm"):
        if f.startswith(root + "-"):
            os.unlink(os.path.join("/dev/shm", f))
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--count", type=int, default=2_000_000, help="packets sent per scenario")
    ap.add_argument("--batch", type=int, default=256, help="packets per send/recv call")
    ap.add_argument("--slots", type=int, default=1024, help="slots per ring")
    a = ap.parse_args()
    print(f"{a.count} packets of {SIZE} B in bursts of {a.batch}, rings of {a.slots} slots")
    for scenario in ("unicast", "flood", "memif", "pipe"):
        for i, (got, secs) in enumerate(run(scenario, a)):
            rate = got / secs / 1e6 if secs > 0 else 0.0
            lost = 100.0 * max(0, a.count - got) / a.count
            print(
                f"  {scenario:<8} receiver {i}: {got:>9} packets, {rate:6.2f} Mpps, "
                f"{lost:5.1f}% dropped"
            )


if __name__ == "__main__":
    main()
