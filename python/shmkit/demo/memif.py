"""Demo scene: two processes linked by memif, a ping-pong exchange with round-trip times,
then a one-way burst with the packet rate."""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import tempfile
import time
from multiprocessing.connection import Connection

from shmkit.memif import Interface, MemifError

PINGS = 1000
FLOOD_SECONDS = 1.0


def _ponger(sock: str, conn: Connection) -> None:
    """The server side: echo every packet until the client goes away."""
    with Interface(sock, role="server", app_name="ponger", if_name="pong0") as iface:
        conn.send("listening")
        iface.wait_connected(30)
        while iface.connected:
            try:
                if not iface.wait(0, 0.2):
                    continue
                pkts = iface.rx_burst(0, 256)
                while pkts:
                    pkts = pkts[iface.tx_burst(0, pkts) :]
            except MemifError:  # the pinger went away
                break
        conn.send(iface.stats())


def run(root: str) -> None:
    del root  # memif needs no region namespace
    ctx = mp.get_context("spawn")
    d = tempfile.mkdtemp(prefix="shmkit-demo-memif-")
    sock = os.path.join(d, "memif.sock")
    here, there = ctx.Pipe()
    ponger = ctx.Process(target=_ponger, args=(sock, there), daemon=True)
    ponger.start()
    assert here.recv() == "listening"
    print(f"pid {ponger.pid} listens on {sock} (memif server, id 0)")
    with Interface(sock, role="client", app_name="pinger", if_name="ping0") as iface:
        iface.wait_connected(30)
        det = iface.details()
        print(
            f"pid {os.getpid()} connected as client: peer {det['remote_app_name']}/"
            f"{det['remote_if_name']} (pid {det['peer_pid']}), regions {det['regions']} bytes, "
            f"ring {det['tx_queues'][0]['ring_size']} slots, interrupt mode"
        )
        rtts = []
        for i in range(PINGS):
            t0 = time.perf_counter()
            iface.tx_burst(0, [b"ping %d" % i])
            while not (reply := iface.rx_burst(0, 1)):
                iface.wait(0, 1.0)
            rtts.append(time.perf_counter() - t0)
            assert reply[0] == b"ping %d" % i
        rtts.sort()
        print(
            f"{PINGS} pings: round trip min {rtts[0] * 1e6:.1f} us, median "
            f"{rtts[len(rtts) // 2] * 1e6:.1f} us, p99 {rtts[int(len(rtts) * 0.99)] * 1e6:.1f} us"
        )
        pkts = [bytes(64)] * 64
        sent = got = 0
        end = time.perf_counter() + FLOOD_SECONDS
        start = time.perf_counter()
        while time.perf_counter() < end:
            if sent - got < 512:
                sent += iface.tx_burst(0, pkts)
            got += len(iface.rx_burst(0, 256))
        while got < sent and iface.wait(0, 1.0):
            got += len(iface.rx_burst(0, 256))
        rate = got / (time.perf_counter() - start)
        print(f"echo flood, 64-byte packets: {got} echoed in {FLOOD_SECONDS:.0f} s", end="")
        print(f" = {rate / 1e6:.2f} Mpps")
    stats = here.recv()
    print(f"the ponger saw the link go down; it echoed {stats['tx']['packets']} packets in all")
    ponger.join(10)
    shutil.rmtree(d, ignore_errors=True)
