#!/usr/bin/env python3
"""Check that each wheel's native code keeps the promises of its file name.

For every ``*.so`` in a wheel this reads the ELF itself (no binutils needed, so an aarch64
wheel is checked on an x86_64 host too) and checks:

* the machine matches the wheel's platform tag (x86_64, aarch64);
* ``manylinux_X_Y``: no symbol needs a glibc version newer than X.Y (the versioned symbols
  of ``.gnu.version_r``: e.g. ``pthread_mutex_clocklock@GLIBC_2.30`` breaks a 2.28 tag), and
  the libraries it links are in the manylinux policy's list;
* ``musllinux_X_Y``: no symbol needs glibc at all;
* no libpython is linked (an extension gets its symbols from the interpreter);
* with ``--abi3 TAG`` (``cp39``, ``cp310``): the wheel is tagged ``TAG-abi3`` (the lowest
  CPython its stable-ABI extension serves) and its module has no version suffix. shmkit ships
  two per platform: ``cp39-abi3`` (every CPython from 3.9) and ``cp310-abi3`` (fastcall method
  calls; pip prefers it from 3.10).

Usage: ``check-wheel.py [--abi3 TAG] WHEEL...``; prints one line per wheel and exits 1 if any
check fails, naming the symbols at fault.
"""

from __future__ import annotations

import argparse
import re
import struct
import sys
import zipfile
from dataclasses import dataclass, field

MACHINES = {62: "x86_64", 183: "aarch64", 3: "i686", 40: "armv7l", 21: "ppc64le", 22: "s390x"}
#: libraries a manylinux wheel may link (PEP 600 / auditwheel's policy, the part we could use)
MANYLINUX_LIBS = {
    "libc.so.6",
    "libm.so.6",
    "libdl.so.2",
    "librt.so.1",
    "libpthread.so.0",
    "libgcc_s.so.1",
    "libutil.so.1",
    "libresolv.so.2",
    "libstdc++.so.6",
}
SHT_DYNAMIC, SHT_DYNSYM, SHT_GNU_VERSYM, SHT_GNU_VERNEED = 6, 11, 0x6FFFFFFF, 0x6FFFFFFE
DT_NEEDED = 1


@dataclass
class Elf:
    """The dynamic-linking facts of one shared object."""

    machine: str
    needed: list[str] = field(default_factory=list)
    #: version name ("GLIBC_2.28") -> the undefined symbols that need it
    versions: dict[str, list[str]] = field(default_factory=dict)


def read_elf(data: bytes) -> Elf:
    if data[:4] != b"\x7fELF":
        raise ValueError("not an ELF file")
    is64, little = data[4] == 2, data[5] == 1
    e = "<" if little else ">"
    machine = struct.unpack_from(e + "H", data, 18)[0]
    if is64:
        (shoff,) = struct.unpack_from(e + "Q", data, 0x28)
        shentsize, shnum = struct.unpack_from(e + "HH", data, 0x3A)
        sh_fmt = e + "IIQQQQIIQQ"
    else:
        (shoff,) = struct.unpack_from(e + "I", data, 0x20)
        shentsize, shnum = struct.unpack_from(e + "HH", data, 0x2E)
        sh_fmt = e + "IIIIIIIIII"
    # (type, offset, size, link, entsize) of each section
    sections = []
    for i in range(shnum):
        f = struct.unpack_from(sh_fmt, data, shoff + i * shentsize)
        sections.append((f[1], f[4], f[5], f[6], f[9]))

    def string(table: int, off: int) -> str:
        start = sections[table][1] + off
        return data[start : data.index(b"\0", start)].decode()

    elf = Elf(MACHINES.get(machine, f"machine {machine}"))
    version_names: dict[int, str] = {}
    dynsym = versym = None
    for kind, off, size, link, entsize in sections:
        if kind == SHT_DYNAMIC:
            step = 16 if is64 else 8
            for pos in range(off, off + size, step):
                tag, val = struct.unpack_from(e + ("qQ" if is64 else "iI"), data, pos)
                if tag == DT_NEEDED:
                    elf.needed.append(string(link, val))
        elif kind == SHT_GNU_VERNEED:
            pos = off
            while True:
                _, cnt, _, aux, nxt = struct.unpack_from(e + "HHIII", data, pos)
                apos = pos + aux
                for _ in range(cnt):
                    _, _, other, name, anext = struct.unpack_from(e + "IHHII", data, apos)
                    version_names[other] = string(link, name)
                    apos += anext
                if not nxt:
                    break
                pos += nxt
        elif kind == SHT_DYNSYM:
            dynsym = (off, size, link, entsize)
        elif kind == SHT_GNU_VERSYM:
            versym = off
    if dynsym and versym is not None:
        off, size, link, entsize = dynsym
        for i in range(size // entsize):
            pos = off + i * entsize
            if is64:
                name, _, _, shndx = struct.unpack_from(e + "IBBH", data, pos)
            else:
                (name,) = struct.unpack_from(e + "I", data, pos)
                (shndx,) = struct.unpack_from(e + "H", data, pos + 14)
            ver = struct.unpack_from(e + "H", data, versym + 2 * i)[0] & 0x7FFF
            if shndx == 0 and ver in version_names:  # an import with a version
                elf.versions.setdefault(version_names[ver], []).append(string(link, name))
    # Versions required without any symbol (rare) still count.
    for name in version_names.values():
        elf.versions.setdefault(name, [])
    return elf


def glibc(version: str) -> tuple[int, ...] | None:
    m = re.fullmatch(r"GLIBC_(\d+(?:\.\d+)*)", version)
    return tuple(int(x) for x in m.group(1).split(".")) if m else None


def check(path: str, abi3: str | None) -> list[str]:
    """The problems of one wheel (empty: all promises kept)."""
    name = path.rsplit("/", 1)[-1]
    m = re.fullmatch(
        r"(?P<dist>[^-]+)-(?P<ver>[^-]+)(-\d[^-]*)?-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl",
        name,
    )
    if not m:
        return [f"{name}: not a wheel file name"]
    problems = []
    plats = m.group("plat").split(".")
    if abi3 and (m.group("py"), m.group("abi")) != (abi3, "abi3"):
        problems.append(f"tagged {m.group('py')}-{m.group('abi')}, expected {abi3}-abi3")
    with zipfile.ZipFile(path) as zf:
        libs = [n for n in zf.namelist() if n.endswith(".so") or ".so." in n]
        if not libs:
            problems.append("no shared object inside")
        for lib in libs:
            elf = read_elf(zf.read(lib))
            if abi3 and re.search(r"\.cpython-\d+", lib):
                problems.append(f"{lib}: a version-specific module name in an abi3 wheel")
            for plat in plats:
                arch = re.sub(r"^(many|musl)linux_\d+_\d+_|^linux_|^manylinux\d+_", "", plat)
                if arch != elf.machine:
                    problems.append(f"{lib}: {elf.machine} code in a {plat} wheel")
                glibcs = {v: s for v, s in elf.versions.items() if glibc(v)}
                if plat.startswith("musllinux_"):
                    for v, syms in glibcs.items():
                        problems.append(f"{lib}: needs {v} ({', '.join(syms[:5])}) in a musl wheel")
                tag = re.match(r"manylinux_(\d+)_(\d+)_", plat)
                if tag:
                    floor = (int(tag.group(1)), int(tag.group(2)))
                    for v, syms in sorted(glibcs.items(), key=lambda kv: glibc(kv[0]) or ()):
                        if (glibc(v) or ()) > floor:
                            problems.append(
                                f"{lib}: {', '.join(syms[:5]) or 'a symbol'} needs {v}, newer than "
                                f"the {plat} tag allows (glibc {floor[0]}.{floor[1]})"
                            )
                    for needed in elf.needed:
                        if needed not in MANYLINUX_LIBS and not needed.startswith("ld-linux"):
                            problems.append(f"{lib}: links {needed}, outside the manylinux policy")
            for needed in elf.needed:
                if needed.startswith("libpython"):
                    problems.append(f"{lib}: links {needed}")
    return problems


def summary(path: str) -> str:
    with zipfile.ZipFile(path) as zf:
        elfs = [read_elf(zf.read(n)) for n in zf.namelist() if n.endswith(".so")]
    newest = max(
        (v for e in elfs for v in e.versions if glibc(v)),
        key=lambda v: glibc(v) or (),
        default=None,
    )
    machines = ",".join(sorted({e.machine for e in elfs}))
    return f"{machines}, newest glibc symbol version needed: {newest or 'none (no glibc)'}"


def abi3_tag(text: str) -> str:
    if not re.fullmatch(r"cp3\d+", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a CPython tag such as cp39 or cp310")
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--abi3",
        metavar="TAG",
        type=abi3_tag,
        help="require a TAG-abi3 wheel (TAG: the lowest CPython served, cp39 or cp310)",
    )
    ap.add_argument("wheels", nargs="+")
    args = ap.parse_args()
    failed = False
    for path in args.wheels:
        problems = check(path, args.abi3)
        name = path.rsplit("/", 1)[-1]
        if problems:
            failed = True
            print(f"FAIL {name}")
            for p in problems:
                print(f"     {p}")
        else:
            print(f"ok   {name}: {summary(path)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
