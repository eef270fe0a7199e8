"""The hostile peer of the cross-object spray suite (``test_spray.py``).

``python sprayer.py SPEC_JSON SEED SECONDS TRUNCATE``: map a region's file as a raw peer would
(plain ``mmap``, no shmkit), and for ``SECONDS`` write boundary and random values (0, 1, max,
max - 1, the sign bit, the file size and beyond, a neighbour of the current value) into the
fields of the objects the spec names. With ``TRUNCATE`` = 1, cut the file (``ftruncate``) to
a smaller size part-way through (sometimes growing it back at once, so the cut pages return as
zeros), then keep spraying what is left.

The spec (printed by the victim that owns the objects) is ``{"path": file, "targets": [[what,
offset, count, stride], ...]}``: ``what`` is a structure of :func:`shmkit._native.shm_layout`
(the API state is ``ApiStateHeader`` and ``ApiClientEntry``), ``HeapWalk`` (the heap's block
headers, found by walking the block chain as the allocator does), or ``Bytes`` (a span
sprayed at random offsets). Fields come from the layout map, so writes land on real counters,
indexes, offsets, lengths, stamps and lock words, never only on padding.

Prints ``sprayed N truncated_to M`` at the end (M = -1 when the file was not cut, -2 when the
cut was refused: a memfd sealed against shrinking).
"""

from __future__ import annotations

import json
import mmap
import os
import random
import struct
import sys
import time
from typing import Any

from shmkit._native import shm_layout

PRIMS = {"u8": 1, "u16": 2, "u32": 4, "u64": 8}
FMT = {1: "<B", 2: "<H", 4: "<I", 8: "<Q"}
#: Arrays longer than this are sprayed at a sample of their elements (every element stays
#: reachable: the sample is drawn per write).
MAX_EXPAND = 64

Leaf = tuple[int, int]  # (offset in the file, width in bytes)


def structs() -> dict[str, dict[str, Any]]:
    return dict(shm_layout()["structs"])


def leaves(
    structs_: dict[str, dict[str, Any]], name: str, base: int, rng: random.Random
) -> list[Leaf]:
    """Scalar fields of struct ``name`` at ``base`` (arrays: every element up to MAX_EXPAND,
    else a random sample of that many)."""
    out: list[Leaf] = []
    for off, size, of in structs_[name]["fields"].values():
        if not of:
            out.append((base + off, size))
            continue
        el = PRIMS.get(of) or structs_[of]["size"]
        n = size // el
        picks = range(n) if n <= MAX_EXPAND else sorted(rng.sample(range(n), MAX_EXPAND))
        for k in picks:
            if of in PRIMS:
                out.append((base + off + k * el, el if el in FMT else 1))
            else:
                out.extend(leaves(structs_, of, base + off + k * el, rng))
    return out


def heap_blocks(
    buf: mmap.mmap, size: int, data_off: int, data_end: int, hb: dict[str, Any]
) -> list[Leaf]:
    """Walk the heap's block chain (size words) as the allocator does; the header fields of
    up to 64 blocks, stopping at the first size that is not a plausible block."""
    f = hb["fields"]
    out: list[Leaf] = []
    b = data_off  # the first block starts the data area
    for _ in range(64):
        if b < 0 or b + 32 > min(size, data_end):
            break
        (word,) = struct.unpack_from("<Q", buf, b)
        bsize = word & ~63
        out.extend((b + off, width) for off, width, _ in (f["size_flags"], f["magic"], f["pid"]))
        if not word & 1:  # free: its links too
            out.extend((b + off, width) for off, width, _ in (f["next"], f["prev"]))
        if bsize < 64 or b + bsize > data_end:
            break
        b += bsize
    return out


def dir_queues(
    buf: mmap.mmap,
    limit: int,
    dir_off: int,
    count: int,
    stride: int,
    prefix: str,
    structs_: dict[str, Any],
) -> list[int]:
    """Offsets of the queue objects whose names start with ``prefix``, read from the region's
    directory as any peer can."""
    f = structs_["DirEntry"]["fields"]
    out = []
    for k in range(count):
        e = dir_off + k * stride
        if e + stride > limit:
            break
        state, offset, name_len = (
            int.from_bytes(buf[e + f[n][0] : e + f[n][0] + f[n][1]], "little")
            for n in ("state", "offset", "name_len")
        )
        name = bytes(buf[e + f["name"][0] : e + f["name"][0] + min(name_len, f["name"][1])])
        if state == 1 and name.startswith(prefix.encode()) and offset + 1024 <= limit:
            out.append(offset)
    return out


def queue_slots(
    buf: mmap.mmap, limit: int, qoff: int, structs_: dict[str, Any], rng: random.Random
) -> list[Leaf]:
    """Slot headers of the queue at ``qoff`` (geometry read once, bounded: a garbage header
    gives none)."""
    f = structs_["QueueHeader"]["fields"]
    cap, stride = (
        int.from_bytes(buf[qoff + f[n][0] : qoff + f[n][0] + 4], "little")
        for n in ("capacity", "stride")
    )
    if not (2 <= cap <= 4096 and 64 <= stride <= 1 << 16):
        return []
    out: list[Leaf] = []
    for k in rng.sample(range(cap), min(cap, 16)):
        s = qoff + 1024 + k * stride
        if s + stride <= limit:
            out.extend(leaves(structs_, "QueueSlot", s, rng))
    return out


def value(rng: random.Random, width: int, current: int, size: int) -> int:
    top = (1 << (8 * width)) - 1
    v = rng.choice(
        [
            0,
            1,
            top,
            top - 1,
            1 << (8 * width - 1),
            (1 << (8 * width - 1)) - 1,
            size,
            size + 8,
            size * 4,
            1 << 40,
            rng.randrange(max(size, 1)),
            rng.getrandbits(8 * width),
            current + 1,
            current - 1,
            current ^ (1 << rng.randrange(8 * width)),
            current + rng.choice((64, 1024, 1 << 20, 1 << 32)),
        ]
    )
    return v & top


def main() -> None:
    spec = json.loads(sys.argv[1])
    seed, seconds, truncate = int(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "1"
    rng = random.Random(seed)
    all_structs = structs()
    fd = os.open(spec["path"], os.O_RDWR)
    size = os.fstat(fd).st_size
    buf = mmap.mmap(fd, size)
    limit = size  # bytes still backed by the file (after a cut, nothing past it is touched)

    def targets() -> list[Leaf]:
        out: list[Leaf] = []
        for what, off, count, stride, *extra in spec["targets"]:
            if what == "DirQueues":
                for qoff in dir_queues(buf, limit, off, count, stride, extra[0], all_structs):
                    out.extend(leaves(all_structs, "QueueHeader", qoff, rng))
                    out.extend(queue_slots(buf, limit, qoff, all_structs, rng))
            elif what == "HeapWalk":
                out.extend(heap_blocks(buf, limit, off, count, all_structs["HeapBlock"]))
            elif what == "Bytes":
                out.extend((off + rng.randrange(max(count - 8, 1)) // 8 * 8, 8) for _ in range(32))
            else:
                ks = range(count) if count <= MAX_EXPAND else rng.sample(range(count), MAX_EXPAND)
                for k in ks:
                    out.extend(leaves(all_structs, what, off + k * stride, rng))
        return [(o, w) for o, w in out if o + w <= limit]

    fields = targets()
    assert fields, "the spec names no field"
    writes = 0
    cut_at = time.monotonic() + seconds * rng.uniform(0.3, 0.7) if truncate else None
    truncated_to = -1
    regrown = False
    start = time.monotonic()
    end = start + seconds
    while time.monotonic() < end:
        if cut_at is not None and time.monotonic() >= cut_at:
            cut_at = None
            truncated_to = (
                rng.choice([0, 4096, 8192, size // 2, max(size - 4096, 0)]) // 4096 * 4096
            )
            try:
                os.ftruncate(fd, truncated_to)
            except PermissionError:  # a memfd sealed against shrinking (memif): refused
                truncated_to = -2
            else:
                limit = truncated_to
                if rng.random() < 0.3:
                    # Grow it back: the cut pages return as zeros, without any fault for the
                    # victims to notice (only what the zeros say).
                    os.ftruncate(fd, size)
                    limit = size
                    regrown = True
            fields = [(o, w) for o, w in fields if o + w <= limit]
            if not fields:
                break
        # A burst of writes, then a pause: victims run their recovery between bursts.
        for _ in range(rng.randrange(1, 12)):
            off, width = rng.choice(fields)
            (cur,) = struct.unpack_from(FMT[width], buf, off)
            struct.pack_into(FMT[width], buf, off, value(rng, width, cur, size))
            writes += 1
        if writes % 256 < 12:
            fields = targets()  # the heap chain and the sampled elements move on
        time.sleep(rng.choice((0.0005, 0.002, 0.01)))  # pacing, not synchronisation
    buf.close()
    os.close(fd)
    print(f"sprayed {writes} truncated_to {truncated_to} regrown {regrown}", flush=True)


if __name__ == "__main__":
    main()
