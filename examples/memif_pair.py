"""A memif link between two processes: a server that echoes and a client that checks.

    python examples/memif_pair.py [--packets N] [--root R]

The server (master) listens on a socket in a private temporary directory; the client (slave)
connects, owns the shared memory, sends N numbered packets in bursts and checks that each
comes back unchanged. Any libmemif or DPDK net_memif peer could take either role. (memif
needs no region root: ``--root`` is accepted like the other examples' and unused.)
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from multiprocessing.connection import Connection

from shmkit.memif import Interface, MemifError


def echo_server(sock: str, conn: Connection) -> None:
    with Interface(sock, role="server", id=0, app_name="echo") as nic:
        conn.send("listening")
        nic.wait_connected(30)
        while nic.connected:
            try:
                if nic.wait(0, 0.2):  # GIL released while waiting
                    packets = nic.rx_burst(0, 256)
                    while packets:  # the ring may take fewer than we have
                        packets = packets[nic.tx_burst(0, packets) :]
            except MemifError:  # the client went away
                break
        conn.send(nic.stats()["tx"]["packets"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=100_000)
    ap.add_argument("--root", default=None, help="unused: memif needs no region root")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="shmkit-memif-")
    sock = os.path.join(tmp, "memif.sock")
    here, there = mp.Pipe()
    server = mp.get_context("spawn").Process(target=echo_server, args=(sock, there))
    server.start()
    try:
        assert here.recv() == "listening"
        with Interface(sock, role="client", id=0, app_name="checker") as nic:
            nic.wait_connected(30)
            print(f"connected: {nic.details()['remote_app_name']} (pid {server.pid}) echoes")
            sent = received = 0
            started = time.perf_counter()
            while received < args.packets:
                if sent < args.packets and sent - received < 512:
                    burst = [b"packet %08d" % i for i in range(sent, min(sent + 64, args.packets))]
                    sent += nic.tx_burst(0, burst)
                for pkt in nic.rx_burst(0, 256):
                    assert pkt == b"packet %08d" % received, (pkt, received)
                    received += 1
                if sent - received >= 512 or sent == args.packets:
                    nic.wait(0, 1.0)
            elapsed = time.perf_counter() - started
            print(f"{received} packets echoed in order in {elapsed:.2f} s")
        print(f"the server saw the link close after echoing {here.recv()} packets")
    finally:
        server.join(30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
