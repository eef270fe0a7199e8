"""memif: the shared-memory packet interface of FD.io VPP, wire-compatible with libmemif and
DPDK's ``net_memif`` (protocol 2.0).

An :class:`Interface` is one end of a link: the *client* (libmemif's "slave") connects to a
Unix socket and owns the shared memory; the *server* ("master") listens and maps what the
client sends. Several server interfaces (distinct ids) can share one socket. The client
reconnects on a timer while the server is away.

Data path, per queue ``qid``:

* ``tx_burst(qid, packets) -> int`` copies packets (any buffers) in; packets larger than a
  buffer are split into chained buffers;
* ``rx_burst(qid, max) -> list[bytes]`` copies packets out;
* zero copy: ``alloc(qid, n)`` gives writable memoryviews of free buffers, ``tx_commit(qid,
  lengths)`` sends them, ``free(qid)`` drops unsent ones; ``rx_views(qid, max)`` gives
  memoryviews of received buffers, handed back with ``refill(qid, n)``.

Batch forms (no Python object per packet; arrays are any buffer of the named type —
``array.array``, numpy arrays, ``memoryview.cast`` — and a wrong type or size is a
``TypeError``/``ValueError``):

* ``tx_packed(qid, data, sizes) -> int`` sends packets laid end to end in ``data``
  (``sizes``: uint32 lengths, or a sequence of ints); ``rx_into(qid, data, sizes) -> int``
  copies a burst end to end into the writable ``data`` and its lengths into ``sizes``
  (uint32). Both handle chained packets. A packet larger than all of ``data`` is a
  ``ValueError``; one larger than what is left waits for the next call.
* zero copy: ``rx_zc(qid, offsets, lengths, regions=None) -> n`` fills ``offsets`` (uint64)
  and ``lengths`` (uint32) with the received buffers, at ``region()[off:off + len]``; they are
  held until ``refill(qid, n)``. ``tx_alloc_zc(qid, n, offsets, capacities, regions=None) ->
  n`` reserves buffers the same way; ``tx_commit_zc(qid, lengths, n=None)`` sends the first
  ``n`` with these lengths. A zero-copy packet is one buffer: ``rx_zc`` stops before a
  chained packet (and raises :class:`MemifError` if it comes first: take it with
  ``rx_into``/``rx_burst``), and a length above a buffer's capacity is refused. Without a
  ``regions`` array (uint16) every buffer must lie in the connection's data region (its last:
  where shmkit's, DPDK's and libmemif's clients keep their buffers), else :class:`MemifError`;
  with one, ``region(regions[i])`` holds buffer ``i``. ``region()`` belongs to the current
  connection: fetch it again after a reconnect.

Shared memory is shared: the peer may write under a memoryview at any time, and a view
handed back with ``refill`` (or sent with ``tx_commit``) belongs to the peer again. A view
never dangles: it keeps its region mapped even after a disconnect.

Waiting: ``wait(qid, timeout)`` blocks (GIL released) until a packet is there; in interrupt
mode ``fileno(qid)`` is the queue's eventfd for ``selectors``/``asyncio`` (it changes when the
link reconnects, see ``events()``); ``rx_mode="polling"`` asks the peer not to interrupt
(MASK_INT) and ``wait`` spins instead.

Threading: each client interface, and each server socket, has one background control thread
in the native core for the handshake, reconnection and teardown; bursts run on the caller's
thread without blocking. Errors carry libmemif's codes: :class:`MemifError` ``.code`` (see
:class:`ErrorCode`) and ``.strerror``.
"""

from __future__ import annotations

import enum

from shmkit._native import MemifInterface as _NativeInterface
from shmkit._native import memif_error_codes, memif_strerror
from shmkit.errors import MemifError
from shmkit.stats import MemifStats

__all__ = ["ErrorCode", "Interface", "MemifError", "error_codes", "strerror"]


class ErrorCode(enum.IntEnum):
    """libmemif's ``memif_err_t`` (``MEMIF_ERR_<name>``)."""

    SUCCESS = 0
    SYSCALL = 1
    CONNREFUSED = 2
    ACCES = 3
    NO_FILE = 4
    FILE_LIMIT = 5
    PROC_FILE_LIMIT = 6
    ALREADY = 7
    AGAIN = 8
    BAD_FD = 9
    NOMEM = 10
    INVAL_ARG = 11
    NOCONN = 12
    CONN = 13
    CB_FDUPDATE = 14
    FILE_NOT_SOCK = 15
    NO_SHMFD = 16
    COOKIE = 17
    NOBUF_RING = 18
    NOBUF = 19
    NOBUF_DET = 20
    INT_WRITE = 21
    MFMSG = 22
    QID = 23
    PROTO = 24
    ID = 25
    ACCSLAVE = 26
    ALRCONN = 27
    MODE = 28
    SECRET = 29
    NOSECRET = 30
    MAXREG = 31
    MAXRING = 32
    NO_INTFD = 33
    DISCONNECT = 34
    DISCONNECTED = 35
    UNKNOWN_MSG = 36
    POLL_CANCEL = 37
    MAX_RING = 38
    PRIVHDR = 39


def strerror(code: int) -> str:
    """libmemif's ``memif_strerror`` text for ``code``."""
    return memif_strerror(code)


def error_codes() -> list[tuple[int, str, str]]:
    """``(code, MEMIF_ERR_name, text)`` for every libmemif error code."""
    return memif_error_codes()


class Interface(_NativeInterface):
    """One end of a memif link.

    ``Interface(socket, *, role="client"|"server", id=0, secret=None, mode="ethernet",
    rings=1, log2_ring_size=10, buffer_size=2048, abstract=False, rx_mode="interrupt",
    app_name="shmkit", if_name=None, reconnect_interval=0.5, handshake_timeout=5.0,
    socket_mode=None, uid=None, gid=None, peer_uid=None, peer_gid=None, peer_pid=None)``

    ``socket`` is a path, or with ``abstract=True`` an abstract name (``@name``). For a
    client, ``rings``/``log2_ring_size``/``buffer_size`` are what it asks for (the server may
    lower the first two); for a server they are the most it accepts. ``secret`` (at most 24
    bytes) travels in clear text: the socket's permissions are the real boundary.

    Access (``mode`` is memif's interface mode, hence ``socket_mode`` for the file):

    * server: the socket file is created with ``socket_mode`` (default ``0o600``, never the
      umask) and, if given, owner ``uid`` and group ``gid``;
    * client: the socket file must be owned by ``uid`` (default: our effective uid), have
      group ``gid`` and a mode no wider than ``socket_mode`` if those are given, else
      ``PermissionError`` (at once if the file exists, otherwise recorded as a refusal);
    * both: ``peer_uid``/``peer_gid``/``peer_pid`` require the peer process's credentials
      (``SO_PEERCRED``); a mismatch is refused with a reason. With ``abstract=True`` there
      is no file: only these apply.

    Use it as a context manager or call :meth:`close`.
    """

    def __enter__(self) -> Interface:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def queues(self) -> tuple[int, int]:
        """(transmit queues, receive queues) of the current connection; (0, 0) when down."""
        d = self.details()
        return len(d["tx_queues"]), len(d["rx_queues"])

    def stats(self) -> MemifStats:
        """Packet/byte/buffer totals over all connections: ``{"tx": {...}, "rx": {...}}``."""
        d = self.details()
        return {"tx": d["tx_total"], "rx": d["rx_total"]}

    def __repr__(self) -> str:
        d = self.details()
        state = "closed" if self.closed else ("up" if d["connected"] else "down")
        return f"<shmkit.memif.Interface {d['role']} id={d['id']} {d['socket']!r} {state}>"
