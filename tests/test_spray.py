"""The cross-object spray suite: for every kind of shared object, victim processes do real
work while a hostile peer (``sprayer.py``) writes boundary and random values into the
object's fields (found through ``shm_layout()``) and, in some rounds, truncates the file.

The supervisor (this file) asserts what SECURITY.md promises: every victim ends by itself
(exit 0, its ``result`` line printed) having seen only clear errors; none dies of a signal,
raises ``InternalError``/``PanicException`` or anything unexpected, prints a Rust panic, or
hangs past its deadline (then it is killed and its stacks are shown); no ``/dev/shm`` file is
left once everyone has cleaned up; the API server keeps serving: after a spray (not a
truncation) a newcomer and every client are served again.

Seeded: the seed is printed, ``SHMKIT_SEED=<n>`` replays it. ``SHMKIT_SOAK_SECONDS=<n>`` runs
rounds of each kind for about that long (``make soak``); by default each kind runs one spray
round and one spray-and-truncate round of a few seconds.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass

import pytest
from procs import TESTS_DIR, wait_line

VICTIMS = os.path.join(TESTS_DIR, "spray_victims.py")
SPRAYER = os.path.join(TESTS_DIR, "sprayer.py")
#: Each kind's victims, started in this order; the ``owner`` creates the objects (it prints
#: where they are for the sprayer) and cleans up last.
ROLES = {
    "region": ["owner", "opener", "opener"],
    "queue": ["owner", "producer", "producer2", "consumer"],
    "msgring": ["owner", "user", "user"],
    "msgq": ["owner", "producer", "producer", "consumer", "consumer"],
    "netmap": ["owner", "peer"],
    "vale": ["owner", "peer", "peer"],
    "api": ["owner", "client", "client"],
    "memif": ["server", "owner"],
}
#: Seconds of spraying per round by default (a soak runs as many rounds as fit).
SPRAY_SECONDS = 2.5
#: Victims work a little longer than the sprayer, so they also run after the damage.
AFTER = 1.5
#: Beyond this (past their own faulthandler deadline) the supervisor kills a victim.
HANG = 40.0
#: What must never appear on a victim's stderr (a panic swallowed by a broad handler too).
NEVER = ("PanicException", "InternalError", "panicked at", "Fatal Python error", "gc.collect took")


@dataclass
class Proc:
    role: str
    proc: subprocess.Popen[str]
    err: pathlib.Path

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")


def start(cmd: list[str], err: pathlib.Path, role: str) -> Proc:
    with open(err, "w") as f:  # a file, never a pipe nobody reads
        p = subprocess.Popen(
            [sys.executable, *cmd],
            stdout=subprocess.PIPE,
            stderr=f,
            stdin=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": TESTS_DIR},
        )
    return Proc(role, p, err)


def shm_files(root: str) -> list[str]:
    return sorted(str(p) for p in pathlib.Path("/dev/shm").glob(f"{root}-*"))


def run_round(
    kind: str, root: str, seed: int, truncate: bool, tmp: pathlib.Path
) -> list[dict[str, object]]:
    """One round; returns the victims' results (asserting everything on the way)."""
    seconds = SPRAY_SECONDS
    victims: list[Proc] = []
    sprayer: Proc | None = None
    try:
        for i, role in enumerate(ROLES[kind]):
            secs = seconds + AFTER + (0.5 if role == "owner" else 0.0)
            cmd = [VICTIMS, kind, role, root, str(seed + i), str(secs)]
            victims.append(start(cmd, tmp / f"{root}-{i}-{role}.err", role))
            if role == "owner":
                owner = victims[-1]
                try:
                    spec = json.loads(
                        wait_line(owner.proc, "ready", stream="stdout").split(" ", 1)[1]
                    )
                except (AssertionError, TimeoutError) as e:
                    raise AssertionError(f"owner never got ready: {e}\n{owner.stderr()}") from None
        sprayer = start(
            [SPRAYER, json.dumps(spec), str(seed ^ 0x5A5A), str(seconds), "1" if truncate else "0"],
            tmp / f"{root}-sprayer.err",
            "sprayer",
        )
        results = []
        deadline = time.monotonic() + seconds + AFTER + HANG
        for v in [sprayer, *(v for v in victims if v is not owner), owner]:
            if v is owner:
                assert v.proc.stdin is not None
                v.proc.stdin.close()  # every other victim is done: the owner cleans up
                v.proc.stdin = None
            try:
                out, _ = v.proc.communicate(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                v.proc.send_signal(signal.SIGKILL)
                v.proc.communicate()
                pytest.fail(f"{kind}/{v.role} hung (killed); its stderr:\n{v.stderr()[-6000:]}")
            err = v.stderr()
            rc = v.proc.returncode
            assert rc >= 0, f"{kind}/{v.role} died of signal {-rc}:\n{err[-6000:]}"
            assert rc == 0, f"{kind}/{v.role} failed ({rc}):\n{err[-6000:]}"
            for bad in NEVER:
                assert bad not in err, f"{kind}/{v.role} printed {bad!r}:\n{err[-6000:]}"
            if v is sprayer:
                print(f"  {kind} sprayer: {out.strip()}")
                continue
            line = [ln for ln in out.splitlines() if ln.startswith("result ")]
            assert line, f"{kind}/{v.role} printed no result:\n{out[-2000:]}\n{err[-4000:]}"
            res = json.loads(line[-1].split(" ", 1)[1])
            res["role"] = v.role
            (fds0, maps0), (fds1, maps1) = res["resources"]
            print(f"  {kind}/{v.role}: fds {fds0} -> {fds1}, mappings {maps0} -> {maps1}")
            # Everything closed: no descriptor may be left behind (mappings are only shown:
            # thread stacks and malloc arenas come and go with the threads shmkit starts).
            assert fds1 <= fds0, (
                f"{kind}/{v.role} leaked descriptors: {res['fds']} threads {res['threads']}"
            )
            results.append(res)
        return results
    finally:
        for v in [*victims, *([sprayer] if sprayer else [])]:
            if v.proc.poll() is None:
                v.proc.kill()
            v.proc.wait()
            for pipe in (v.proc.stdout, v.proc.stdin):
                if pipe:
                    pipe.close()


def summary(results: list[dict[str, object]]) -> str:
    lines = []
    for r in results:
        counts: dict[str, int] = r["counts"]  # type: ignore[assignment]
        ok = sum(n for k, n in counts.items() if k.endswith(":ok"))
        bad = {k: n for k, n in counts.items() if not k.endswith(":ok")}
        lines.append(f"    {r['role']}: {ok} ok, truncated={r['truncated']}, errors={bad}")
    return "\n".join(lines)


@pytest.mark.parametrize("kind", list(ROLES))
def test_spray(kind: str, root: str, seed: int, tmp_path: pathlib.Path) -> None:
    soak = float(os.environ.get("SHMKIT_SOAK_SECONDS", "0"))
    base = seed ^ zlib.crc32(kind.encode())
    end = time.monotonic() + soak
    n = 0
    while n < 2 or time.monotonic() < end:
        truncate = n % 2 == 1
        r = f"{root}r{n}"
        try:
            results = run_round(kind, r, base + 1000 * n, truncate, tmp_path)
            print(f"  {kind} round {n} (truncate={truncate}):\n{summary(results)}")
            left = shm_files(r) + [f for res in results for f in res.get("leaked", [])]  # type: ignore[attr-defined]
            assert not left, f"{kind} round {n}: files left in /dev/shm: {left}"
            assert any(
                k.endswith(":ok")
                for res in results
                for k in res["counts"]  # type: ignore[attr-defined]
            ), f"no victim got any work done:\n{summary(results)}"
            if kind == "api" and not truncate:
                # The server kept serving: a newcomer and every client were served after the spray.
                for res in results:
                    assert res.get("served_after"), (
                        f"{res['role']} not served after the spray: {res}"
                    )
        finally:
            for f in shm_files(r):
                os.unlink(f)
        n += 1
