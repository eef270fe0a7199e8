"""Demo scene: a netmap pipe between two processes — rings, zero-copy buffers, fragments,
back-pressure, a strict reinit, and a quick burst measurement."""

from __future__ import annotations

import array
import multiprocessing as mp
import time
from multiprocessing.connection import Connection

import shmkit.netmap as nm


def _receiver(root: str, conn: Connection) -> None:
    with nm.open("tour}0", root=root) as rx:
        conn.send(("open", rx.name, rx.num_rx_rings, rx.num_rx_slots))
        while True:
            cmd = conn.recv()
            if cmd == "recv":
                rx.poll(timeout=5.0)  # sleeps on the pipe's doorbell, GIL released
                conn.send(rx.recv(64))
            elif cmd == "burst":
                count, size = conn.recv()
                data = bytearray(256 * size)
                sizes = array.array("I", [0] * 256)
                got, start = 0, 0.0
                with nm.open("tourburst}0", root=root, slots=4096) as brx:
                    conn.send("ready")
                    while got < count:
                        n, _ = brx.recv_into(data, sizes, timeout=5.0)
                        if n and not got:
                            start = time.perf_counter()
                        got += n
                conn.send((got, time.perf_counter() - start))
            else:
                return


def _ring_state(ring: nm.Ring) -> str:
    return f"head={ring.head} cur={ring.cur} tail={ring.tail} (space {ring.space})"


def run(root: str) -> None:
    ctx = mp.get_context("spawn")
    here, there = ctx.Pipe()
    tx = nm.open("tour{0", root=root, slots=16, buf_size=256)
    print(f"This process opened {tx.name!r} (master): region {tx.region_name!r} holds both ends.")
    peer = ctx.Process(target=_receiver, args=(root, there), daemon=True)
    peer.start()
    _, name, rings, slots = here.recv()
    print(f"A second process opened {name!r} (slave): {rings} RX ring of {slots} slots.")
    ring = tx.tx_rings[0]
    print(f"\nTX ring 0 before anything: {_ring_state(ring)}   (one slot always stays empty)")

    print("\nZero-copy: write into the slot's buffer through a memoryview, set len, advance.")
    for word in (b"netmap", b"pipes", b"between", b"processes"):
        ring.buf(ring.cur)[: len(word)] = word
        ring.slots[ring.cur].len = len(word)
        ring.slots[ring.cur].flags = 0
        ring.advance()
    print(f"  filled 4 slots:         {_ring_state(ring)}")
    tx.txsync()
    print(f"  after txsync:           {_ring_state(ring)}   hwcur={ring.hwcur}")
    here.send("recv")
    print(f"  the peer received:      {here.recv()}")

    big = bytes(range(256)) * 3
    print(f"\nA {len(big)}-byte packet spans {len(big) // 256} buffers, chained with NS_MOREFRAG;")
    print("the receiver sees it only once the last fragment is published, and gets it whole.")
    tx.send([big, b"after it"])
    here.send("recv")
    got = here.recv()
    print(f"  the peer received {len(got)} packets of {[len(p) for p in got]} bytes")

    print("\nBack-pressure: the pipe is lossless, the sender is held back when the receiver lags.")
    sent = tx.send([b"x"] * 40)
    print(f"  send(40 packets) queued {sent}; {_ring_state(ring)}")
    here.send("recv")
    n = len(here.recv())
    tx.txsync()
    print(f"  the peer read {n}; after txsync the sender sees {_ring_state(ring)}")

    print("\nWith 3 packets in flight, the slots between tail and the peer's position are not")
    print("ours: a head placed there is rejected by the prologue and strict mode resets the ring.")
    tx.send([b"a", b"b", b"c"])
    ring.head = ring.cur = (ring.tail + 1) % ring.num_slots
    try:
        tx.txsync()
    except nm.RingReinit as e:
        print(f"  RingReinit: {e}")
    print(f"  {_ring_state(ring)} == hwcur/hwtail; reinits={ring.reinits}")

    count, size = 2_000_000, 64
    print(
        f"\nA burst through a second pipe of 4096 slots: {count:,} packets of {size} B with"
        " send_packed / recv_into (batches of 256)"
    )
    here.send("burst")
    here.send((count, size))
    with nm.open("tourburst{0", root=root, slots=4096) as btx:
        assert here.recv() == "ready"
        sent = 0
        while sent < count:
            k = min(256, count - sent)
            sent += btx.send_packed(bytes(size) * k, array.array("I", [size] * k), timeout=5.0)
        got, elapsed = here.recv()
    print(f"  {got:,} packets in {elapsed:.2f} s: {got / elapsed / 1e6:.1f} M packets/s")

    here.send("quit")
    peer.join(10)
    print(f"\npeer_open after the peer left: {tx.peer_open}")
    tx.close()
    print("Both ends closed: the pipe and its region are gone.")
