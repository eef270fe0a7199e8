"""Instructions per packet of each memif form from Python, counted by callgrind.

Wall-clock rates on a shared machine are noisy; instruction counts are not. Each form runs
in one process (a client and a server interface over a real socket, polling mode), sending
bursts of ``--burst`` packets (64) one way and receiving them; the script runs it under
``valgrind --tool=callgrind`` twice, with ``--short`` and ``--long`` bursts, and reports
``(instructions(long) - instructions(short)) / (packets(long) - packets(short))``: start-up,
imports and the handshake cancel out, what is left is the cost of a packet in the loop
(Python and native code, both ends).

valgrind needs an extension built with ``RUSTFLAGS="--cfg rustix_use_libc"`` (rustix's raw
system calls are not understood by valgrind), in a separate target directory:

    CARGO_TARGET_DIR=target-vg RUSTFLAGS="--cfg rustix_use_libc" cargo build --release --lib
    python benches/callgrind_memif.py --lib target-vg/release/lib_native.so

Usage: ``python benches/callgrind_memif.py --lib PATH [--forms copy,zc,packed,zcb]
[--sizes 64,1500] [--short 100] [--long 600] [--burst 64]``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def inner(form: str, size: int, bursts: int, burst: int) -> None:
    """The measured loop (run under valgrind)."""
    sys.path.insert(0, HERE)
    from bench_memif import Batch
    from shmkit.memif import Interface

    d = tempfile.mkdtemp(prefix="shmkit-cg-")
    sock = os.path.join(d, "m.sock")
    with (
        Interface(sock, role="server", rx_mode="polling") as srv,
        Interface(sock, role="client", rx_mode="polling", reconnect_interval=0.05) as cli,
    ):
        assert srv.wait_connected(120) and cli.wait_connected(120)
        tx, rx = Batch(cli, form, size, burst=burst), Batch(srv, form, 0)
        moved = 0
        for _ in range(bursts):
            sent = tx.send(0)
            got = 0
            while got < sent:
                got += rx.recv(0)
            moved += got
        assert moved == bursts * burst, moved
    shutil.rmtree(d, ignore_errors=True)


def count(lib: str, form: str, size: int, bursts: int, burst: int) -> int:
    """Instructions of one run under callgrind."""
    pkg = tempfile.mkdtemp(prefix="shmkit-cg-pkg-")
    src = os.path.join(HERE, "..", "python", "shmkit")
    shutil.copytree(src, os.path.join(pkg, "shmkit"), ignore=shutil.ignore_patterns("*.so"))
    shutil.copy(lib, os.path.join(pkg, "shmkit", "_native.abi3.so"))
    out = os.path.join(pkg, "callgrind.out")
    env = dict(os.environ, PYTHONPATH=pkg)
    cmd = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        sys.executable,
        os.path.abspath(__file__),
        "--inner",
        form,
        str(size),
        str(bursts),
        str(burst),
    ]
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
        m = re.search(r"Collected : (\d+)", r.stderr)
        if r.returncode != 0 or not m:
            raise RuntimeError(f"callgrind failed ({r.returncode}):\n{r.stderr[-3000:]}")
        return int(m.group(1))
    finally:
        shutil.rmtree(pkg, ignore_errors=True)


def main() -> int:
    if len(sys.argv) == 6 and sys.argv[1] == "--inner":
        inner(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lib", required=True, help="lib_native.so built for valgrind")
    ap.add_argument("--forms", default="copy,zc,packed,zcb")
    ap.add_argument("--sizes", default="64,1500")
    ap.add_argument("--short", type=int, default=100)
    ap.add_argument("--long", type=int, default=600)
    ap.add_argument("--burst", type=int, default=64)
    a = ap.parse_args()
    packets = (a.long - a.short) * a.burst
    print(f"{'form':<8} {'size':>6} {'instructions/packet':>20}")
    for size in [int(x) for x in a.sizes.split(",")]:
        for form in a.forms.split(","):
            lo = count(a.lib, form, size, a.short, a.burst)
            hi = count(a.lib, form, size, a.long, a.burst)
            print(f"{form:<8} {size:>6} {(hi - lo) / packets:>20.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
