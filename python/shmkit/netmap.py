"""netmap rings and pipes between processes.

shmkit implements netmap's memory ABI (``netmap_slot``, ``netmap_ring``, ``netmap_if``) and its
sync rules on shared memory, for *pipes*: a pair of ports, the master ``port{id`` and the slave
``port}id``, whose rings cross (the master's TX ring *k* feeds the slave's RX ring *k* and the
other way round). Opening either end creates both; the pipe lives in its own region
(``netmap.port{id`` under ``root``) until both ends are closed.

The usual netmap loop works unchanged::

    import shmkit.netmap as nm

    with nm.open("demo{0", root="myapp", slots=1024) as tx:      # in one process
        ring = tx.tx_rings[0]
        ring.buf(ring.cur)[:5] = b"hello"
        ring.slots[ring.cur].len = 5
        ring.advance()                                            # head = cur = cur + 1
        tx.txsync()

    with nm.open("demo}0", root="myapp") as rx:                  # in another
        rx.poll(timeout=1.0)                                      # sleeps, GIL released
        for pkt in rx:                                            # bytes, released as read
            ...

Batch helpers move a burst per call: ``send(packets)`` / ``recv(max)``, and the copy-once
``send_packed(data, sizes)`` / ``recv_into(data, sizes)`` for the highest rates.
``inject(data)`` and ``dispatch(callback)`` behave like libnetmap's (no sync).

Port names follow libnetmap: ``[netmap:]port{id`` / ``port}id``, then ``-N`` (one ring pair,
``NR_REG_ONE_NIC``), ``/x`` (exclusive), ``/T`` / ``/R`` (TX / RX rings only), and
``@conf:rings=N,slots=N,tx-rings=..,rx-rings=..,tx-slots=..,rx-slots=..``. The first opener's
request configures the master; the slave sees TX and RX swapped.

Where shmkit deviates from netmap (each deviation is tested):

* **Strict reinit** (default): a ``head``/``cur`` that fails netmap's prologue check resets the
  ring (``head = cur = hwcur``, ``tail = hwtail``), sanitises its slots, skips its sync and
  raises :class:`RingReinit` (``poll`` reports ``POLLERR`` instead). ``reinit="compat"``
  reproduces netmap: adopt the user's values, reset only indexes ``>= n``, skip the TX sync
  but run the RX one, report success.
* The prologue rejects ``cur >= n`` in the one wrapped-window case netmap lets through.
* ``poll`` syncs every bound TX ring, so a full pipe polled for ``POLLIN`` sees the space its
  receiver freed (netmap issue #457); with ``NR_NO_TX_POLL`` a ``POLLOUT`` poll always pushes
  the TX rings (issue #103).
* A ring is driven by one process: binding a ring another live process binds is ``EBUSY``.
  Handles in one process share rings, with netmap's two-pass ``NR_EXCLUSIVE`` rule.
* ``NR_REG_NULL`` binds no ring of the end; there is one ``netmap_if`` per end.
* Reopening an end resumes from the published progress: unsynced slots and unfinished
  fragment chains of the previous owner are dropped, unreleased packets come again.
* Bad geometry is an error, not clamped: rings 1..256, slots 2..4096, ``buf_size`` a multiple
  of 64 in 64..65472.
* ``peer_open`` says whether the other end is open; ``fileno()`` is an eventfd that is readable
  while a bound RX ring has packets (wait for TX room with ``poll(events=POLLOUT)``).
* Host rings, monitors, memory ids and the ``extmem``/``share``/``offset`` options are
  refused (``OSError`` with ``EINVAL`` or ``EOPNOTSUPP``); a ring in use gives ``EBUSY``.

**VALE switches.** ``open("vale0:a")`` creates switch ``vale0`` (a region of its own,
``netmap.vale0``) if needed and attaches port ``a``; another process opens ``vale0:b``, and a
packet sent on one port reaches the port that owns its destination MAC. The switch learns
source addresses per port, floods broadcast, multicast and unknown unicast, and forgets an
address not seen for its age (300 s, :func:`vale_set_age`). A port has the same API as a pipe
end (its rings are the master end of a pipe of its own, ``netmap.vale0:a``); its txsync
forwards the new packets in a batch, copying each into the destination's RX ring under that
destination's lock. A full destination drops (counted), never blocks the sender. The last
port to close removes the switch; a port whose process died is detached by whoever looks
next, and its rings are reclaimed. :func:`vale_info` shows ports, counters and the MAC table
(``shmkit vale list --json``), :func:`vale_detach` detaches a port (``vale-ctl -d``), and
:func:`vale_attach` makes a :class:`shmkit.memif.Interface` (Ethernet mode, either role) a
port of a switch: a bridge thread in this process copies packets between the memif peer (a
DPDK testpmd, libmemif, another shmkit) and the switch; a full memif ring drops (counted).
Deviations: a port is driven by one process (``EBUSY`` for another), addresses age, TX ring
*k* feeds RX ring *k mod rx_rings* of the destination, at most 64 ports per switch and 31
characters per port name, no persistent ports.

Everything another process can write (ring indexes, slots, published progress) is checked
before use: garbage raises :class:`RingReinit` or :class:`shmkit.CorruptionError`, never
crashes. Memoryviews from ``ring.buf(i)`` are zero-copy views of shared memory: the peer may
write them, and a buffer belongs to you only while its slot lies between ``head`` and
``tail``.
"""

from __future__ import annotations

import select
from typing import Any

from shmkit._native import (
    NetmapPacketIter,
    NetmapPort,
    NetmapRing,
    NetmapSlot,
    NetmapSlots,
    ValeMemifPort,
    netmap_abi,
    netmap_prologue_accepts,
    vale_detach,
    vale_info,
    vale_set_age,
    vale_switches,
)
from shmkit.errors import RingReinit

__all__ = [
    "MAX_FRAGS",
    "NR_EXCLUSIVE",
    "NR_FORWARD",
    "NR_NO_TX_POLL",
    "NR_REG_ALL_NIC",
    "NR_REG_NIC_SW",
    "NR_REG_NULL",
    "NR_REG_ONE_NIC",
    "NR_REG_ONE_SW",
    "NR_REG_SW",
    "NR_RX_RINGS_ONLY",
    "NR_TIMESTAMP",
    "NR_TX_RINGS_ONLY",
    "NS_BUF_CHANGED",
    "NS_FORWARD",
    "NS_INDIRECT",
    "NS_MOREFRAG",
    "NS_NO_LEARN",
    "NS_REPORT",
    "NS_TXMON",
    "POLLERR",
    "POLLIN",
    "POLLOUT",
    "MemifPort",
    "PacketIter",
    "Port",
    "Ring",
    "RingReinit",
    "Slot",
    "Slots",
    "abi",
    "open",
    "prologue_accepts",
    "vale_attach",
    "vale_detach",
    "vale_info",
    "vale_list",
    "vale_set_age",
]

Port = NetmapPort
Ring = NetmapRing
Slot = NetmapSlot
Slots = NetmapSlots
PacketIter = NetmapPacketIter
MemifPort = ValeMemifPort

#: Slot flags (``netmap_slot.flags``).
NS_BUF_CHANGED = 0x0001
NS_REPORT = 0x0002
NS_FORWARD = 0x0004
NS_NO_LEARN = 0x0008
NS_INDIRECT = 0x0010
NS_MOREFRAG = 0x0020
NS_TXMON = 0x0040
#: Most slots one packet may span.
MAX_FRAGS = 64

#: Ring flags (``netmap_ring.flags``).
NR_TIMESTAMP = 0x0002
NR_FORWARD = 0x0004

#: Binding modes (``mode=``).
NR_REG_ALL_NIC = 1
NR_REG_SW = 2
NR_REG_NIC_SW = 3
NR_REG_ONE_NIC = 4
NR_REG_NULL = 7
NR_REG_ONE_SW = 8

#: Binding flags (``flags=``).
NR_EXCLUSIVE = 0x800
NR_RX_RINGS_ONLY = 0x2000
NR_TX_RINGS_ONLY = 0x4000
NR_NO_TX_POLL = 0x20000

POLLIN: int = select.POLLIN
POLLOUT: int = select.POLLOUT
POLLERR: int = select.POLLERR


def open(
    name: str,
    *,
    root: str | None = None,
    mode: int | None = None,
    ring: int | None = None,
    flags: int = 0,
    reinit: str = "strict",
    rings: int | None = None,
    slots: int | None = None,
    tx_rings: int | None = None,
    rx_rings: int | None = None,
    tx_slots: int | None = None,
    rx_slots: int | None = None,
    buf_size: int | None = None,
    extra_bufs: int | None = None,
    timeout: float | None = 5.0,
    perm: int = 0o600,
) -> Port:
    """Open one end of a netmap pipe (creating the pipe if needed) and bind its rings.

    ``name`` is a libnetmap port name (see the module docs). ``mode``/``ring``/``flags`` add to
    what the name says (``NR_REG_*``, ring id, ``NR_*``). ``rings``, ``slots`` (or the per
    direction ``tx_*``/``rx_*``), ``buf_size`` (default 2048) and ``extra_bufs`` (per end)
    size a new pipe, from the master's point of view; an existing pipe keeps its geometry.
    ``reinit`` is ``"strict"`` (default) or ``"compat"``. ``timeout`` bounds the wait for a
    pipe another process is creating (seconds; ``None``: forever).
    """
    return Port(
        name,
        root=root,
        mode=mode,
        ring=ring,
        flags=flags,
        reinit=reinit,
        rings=rings,
        slots=slots,
        tx_rings=tx_rings,
        rx_rings=rx_rings,
        tx_slots=tx_slots,
        rx_slots=rx_slots,
        buf_size=buf_size,
        extra_bufs=extra_bufs,
        timeout=timeout,
        perm=perm,
    )


def prologue_accepts(n: int, lo: int, hi: int, head: int, cur: int) -> bool:
    """Whether a sync would accept ``head``/``cur`` on a ring of ``n`` slots whose window is
    ``(lo, hi)`` (TX: ``(rhead, rtail)``, RX: ``(hwcur, hwtail)``): ``head`` within
    ``[lo, hi]`` and ``cur`` within ``[head, hi]``, cyclically, both below ``n``."""
    return netmap_prologue_accepts(n, lo, hi, head, cur)


def abi() -> dict[str, tuple[int, int]]:
    """``{field: (offset, size)}`` of ``netmap_slot``, ``netmap_ring`` and ``netmap_if``."""
    table: dict[str, Any] = netmap_abi()
    return {k: (int(v[0]), int(v[1])) for k, v in table.items()}


def vale_list(root: str | None = None) -> list[dict[str, Any]]:
    """Every VALE switch under ``root`` as :func:`vale_info` describes it (switches that
    disappear while being listed are left out)."""
    out = []
    for name in vale_switches(root):
        try:
            out.append(vale_info(name, root))
        except FileNotFoundError:
            continue
    return out


def vale_attach(
    name: str,
    interface: Any,
    *,
    root: str | None = None,
    slots: int | None = None,
    timeout: float | None = 5.0,
) -> MemifPort:
    """Attach a :class:`shmkit.memif.Interface` to a VALE switch as port ``name``
    (``"vale0:m"``), creating the switch if needed; a bridge thread in this process forwards
    between the two until :meth:`MemifPort.close` (the interface stays open)."""
    return MemifPort(name, interface, root=root, slots=slots, timeout=timeout)
