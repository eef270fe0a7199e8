"""A raw memif peer written from the protocol facts (struct-packed messages, memfds, mmap),
for hostile-peer tests: it can send anything, and write anything into the rings."""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import select
import socket
import struct

MSG = 128
ACK, HELLO, INIT, ADD_REGION, ADD_RING, CONNECT, CONNECTED, DISCONNECT = range(1, 9)
VERSION = 0x0200
COOKIE = 0x3E31F20
RING_HDR = 128
DESC = 16


def msg(t: int, payload: bytes = b"") -> bytes:
    return (struct.pack("<H", t) + payload).ljust(MSG, b"\0")


def memfd(size: int, seal: bool = True) -> int:
    fd = os.memfd_create("raw", os.MFD_ALLOW_SEALING | os.MFD_CLOEXEC)
    os.ftruncate(fd, size)
    if seal:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
    return fd


class Raw:
    """One end of a control connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.s = sock
        self.fds: list[int] = []
        self.maps: list[mmap.mmap] = []

    def send(
        self, t: int, payload: bytes = b"", fds: list[int] | None = None, raw: bytes | None = None
    ) -> None:
        data = raw if raw is not None else msg(t, payload)
        if fds:
            socket.send_fds(self.s, [data], fds)
        else:
            self.s.send(data)

    def recv(self, timeout: float = 10.0) -> tuple[int, bytes]:
        """Next message: (type, payload); (0, b"") at EOF. Descriptors are closed."""
        t, p, fds = self.recv_fds(timeout)
        for fd in fds:
            os.close(fd)
        return t, p

    def recv_fds(self, timeout: float = 10.0) -> tuple[int, bytes, list[int]]:
        """Next message with the descriptors that came along (the caller owns them)."""
        r, _, _ = select.select([self.s], [], [], timeout)
        if not r:
            raise TimeoutError("no message")
        data, fds, _, _ = socket.recv_fds(self.s, 256, 4)
        if not data:
            return 0, b"", fds
        return struct.unpack_from("<H", data)[0], data[2:], fds

    early: tuple[int, str] | None = None

    def ack(self) -> bool:
        """Read the reply; False (remembering the DISCONNECT) if it is not ACK."""
        t, p = self.recv()
        if t == ACK:
            return True
        if t == DISCONNECT:
            code, reason = struct.unpack_from("<I96s", p)
            self.early = (code, reason.split(b"\0")[0].decode())
        return False

    def expect_disconnect(self, timeout: float = 10.0) -> tuple[int, str]:
        """Read until DISCONNECT; returns (code, reason)."""
        if self.early is not None:
            return self.early
        while True:
            t, p = self.recv(timeout)
            if t == DISCONNECT:
                code, reason = struct.unpack_from("<I96s", p)
                return code, reason.split(b"\0")[0].decode()
            assert t != 0, "closed without DISCONNECT"

    def close(self) -> None:
        for m in self.maps:
            m.close()
        for fd in self.fds:
            os.close(fd)
        self.s.close()


class RawClient(Raw):
    """A client that describes memory it built itself (1 S2M + 1 M2S ring)."""

    def __init__(self, path: str) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.connect(path)
        super().__init__(s)
        t, _ = self.recv()
        assert t == HELLO

    def init(self, id: int = 0, version: int = VERSION, secret: bytes = b"", mode: int = 0) -> None:
        self.send(INIT, struct.pack("<HIB24s32s", version, id, mode, secret, b"raw"))

    def connect(self, log2: int = 4, bs: int = 256, **bad: object) -> None:
        """Full handshake; ``bad`` bends one thing (seal, size_delta, cookie, offset, or
        ``intfd="pipe"``: the M2S ring's interrupt is the write end of a pipe)."""
        self.init(id=int(bad.get("id", 0)))  # type: ignore[call-overload]
        if not self.ack():
            return
        self.size = 1 << log2
        self.bs = bs
        ring_bytes = RING_HDR + DESC * self.size
        sizes = [2 * ring_bytes, 2 * self.size * bs]
        for i, size in enumerate(sizes):
            fd = memfd(size, seal=bool(bad.get("seal", True)))
            self.fds.append(fd)
            self.maps.append(mmap.mmap(fd, size))
            declared = size + int(bad.get("size_delta", 0)) if i == 0 else size  # type: ignore[call-overload]
            self.send(ADD_REGION, struct.pack("<HQ", i, declared), [fd])
            if not self.ack():
                return
        for g in range(2):
            off = g * ring_bytes
            struct.pack_into("<IHH", self.maps[0], off, int(bad.get("cookie", COOKIE)), 0, 0)  # type: ignore[call-overload]
            for j in range(self.size):
                self.desc(g, j, 0, 1, bs, (g * self.size + j) * bs)
            if g == 1 and bad.get("intfd") == "pipe":
                r, ev = os.pipe()
                self.fds.append(r)
            else:
                ev = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self.fds.append(ev)
            ring_off = int(bad.get("offset", off)) if g == 0 else off  # type: ignore[call-overload]
            self.send(
                ADD_RING, struct.pack("<HHHIBH", 1 if g == 0 else 0, 0, 0, ring_off, log2, 0), [ev]
            )
            if not self.ack():
                return
        self.send(CONNECT, struct.pack("<32s", b"rawif"))

    def connected(self) -> bool:
        return self.recv()[0] == CONNECTED

    def desc(self, ring: int, slot: int, flags: int, region: int, length: int, offset: int) -> None:
        off = ring * (RING_HDR + DESC * self.size) + RING_HDR + DESC * slot
        struct.pack_into("<HHIII", self.maps[0], off, flags, region, length, offset, 0)

    def set_head(self, ring: int, head: int) -> None:
        struct.pack_into(
            "<H", self.maps[0], ring * (RING_HDR + DESC * self.size) + 6, head & 0xFFFF
        )

    def write_buf(self, ring: int, slot: int, data: bytes) -> None:
        off = (ring * self.size + slot) * self.bs
        self.maps[1][off : off + len(data)] = data


class RawServer(Raw):
    """A listening socket that accepts one client."""

    def __init__(self, path: str) -> None:
        self.l = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.l.bind(path)
        self.l.listen(1)
        self.path = path

    def accept(self, hello: bytes | None = None) -> None:
        r, _, _ = select.select([self.l], [], [], 10)
        assert r, "no client"
        s, _ = self.l.accept()
        Raw.__init__(self, s)
        # The client may already have said DISCONNECT and gone (it still gets read).
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.send(
                HELLO,
                hello
                if hello is not None
                else struct.pack("<32sHHHHHB", b"rawsrv", VERSION, VERSION, 255, 0, 0, 14),
            )

    def serve(self) -> None:
        """Take whatever the client describes (keeping its memory and eventfds), ACK each
        message and answer CONNECT with CONNECTED."""
        self.rings: dict[tuple[bool, int], tuple[int, int, int]] = {}
        self.ring_fds: dict[tuple[bool, int], int] = {}
        while True:
            t, p, fds = self.recv_fds()
            self.fds.extend(fds)
            if t == INIT:
                self.send(ACK)
            elif t == ADD_REGION:
                _index, size = struct.unpack_from("<HQ", p)
                self.maps.append(mmap.mmap(fds[0], size))
                self.send(ACK)
            elif t == ADD_RING:
                flags, index, region, offset, log2, _ = struct.unpack_from("<HHHIBH", p)
                self.rings[(bool(flags & 1), index)] = (region, offset, log2)
                self.ring_fds[(bool(flags & 1), index)] = fds[0]
                self.send(ACK)
            elif t == CONNECT:
                self.send(CONNECTED, struct.pack("<32s", b"rawsrvif"))
                return
            else:
                raise AssertionError(f"unexpected message {t}")

    def field(self, s2m: bool, name: str, value: int | None = None) -> int:
        """Read (or write) ``head``/``tail`` of a ring the client described."""
        region, offset, _ = self.rings[(s2m, 0)]
        at = offset + {"head": 6, "tail": 64}[name]
        if value is not None:
            struct.pack_into("<H", self.maps[region], at, value & 0xFFFF)
        return int(struct.unpack_from("<H", self.maps[region], at)[0])

    def fill(self, slot: int, data: bytes) -> None:
        """Write ``data`` into the buffer the client posted in M2S slot ``slot``."""
        region, offset, log2 = self.rings[(False, 0)]
        d = offset + RING_HDR + DESC * (slot & ((1 << log2) - 1))
        _flags, breg, blen, boff = struct.unpack_from("<HHII", self.maps[region], d)
        assert len(data) <= blen
        self.maps[breg][boff : boff + len(data)] = data
        struct.pack_into("<HHI", self.maps[region], d, 0, breg, len(data))

    def close(self) -> None:
        if hasattr(self, "s"):
            Raw.close(self)
        self.l.close()
        os.unlink(self.path)


def memif_raw_ok() -> bool:
    """The raw peer's packing matches the protocol sizes (INIT 63 B, ADD_RING 13 B...)."""
    return (
        struct.calcsize("<32sHHHHHB") == 43
        and struct.calcsize("<HIB24s32s") == 63
        and struct.calcsize("<HQ") == 10
        and struct.calcsize("<HHHIBH") == 13
        and struct.calcsize("<I96s") == 100
    )
