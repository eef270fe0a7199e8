"""Run the loom models (``make loom``) in every test run: the region's owner lock (mutual
exclusion, takeover of a dead owner by exactly one contender, no lost wake-up, a reused thread
id never mistaken for a dead owner: ``rust/src/sys/lock/model.rs``) and the queue's slot
protocol (MPMC with two producers or two consumers, put_pair, reservations, producers and
consumers dying at every step of their claims and recovered exactly once; SPSC exchange and
takeover of a dead role holder: ``rust/src/queue/ring/model.rs``)."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.timeout(1800)
def test_loom_models_of_the_owner_lock_and_the_queue() -> None:
    cargo = shutil.which("cargo") or os.path.expanduser("~/.cargo/bin/cargo")
    assert os.path.exists(cargo), "cargo is required to run the loom model"
    env = dict(os.environ)
    # The same build as `make loom`: its own target directory, so switching cfg(loom) on and
    # off never rebuilds the ordinary one.
    env.update(
        RUSTFLAGS="--cfg loom",
        CARGO_TARGET_DIR=str(ROOT / "target" / "loom"),
        # 3 preemptions find every protocol bug we planted in the lock (a missing epoch CAS,
        # identity clear or waiters' bit); the larger queue models cap themselves at 2, which
        # finds every bug planted in the queue (listed in its model's doc). About 40 s in all.
        LOOM_MAX_PREEMPTIONS=env.get("LOOM_MAX_PREEMPTIONS", "3"),
    )
    proc = subprocess.run(
        [
            cargo,
            "test",
            "--no-default-features",
            "--release",
            "--lib",
            "--",
            "sys::lock::model",
            "queue::ring::model",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, f"loom failed:\n{proc.stdout[-20000:]}\n{proc.stderr[-20000:]}"
    assert "test result: ok. 16 passed" in proc.stdout, proc.stdout[-5000:]
    for model in ("sys::lock::model::", "queue::ring::model::mpmc_", "queue::ring::model::spsc_"):
        assert model in proc.stdout, proc.stdout[-5000:]
