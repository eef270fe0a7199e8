"""Run the loom model of the region's owner lock (``make loom``) in every test run: mutual
exclusion, takeover of a dead owner by exactly one contender, no lost wake-up, and a reused
thread id never mistaken for a dead owner (``rust/src/sys/lock/model.rs``)."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.timeout(1800)
def test_loom_model_of_the_owner_lock() -> None:
    cargo = shutil.which("cargo") or os.path.expanduser("~/.cargo/bin/cargo")
    assert os.path.exists(cargo), "cargo is required to run the loom model"
    env = dict(os.environ)
    # The same build as `make loom`: its own target directory, so switching cfg(loom) on and
    # off never rebuilds the ordinary one.
    env.update(
        RUSTFLAGS="--cfg loom",
        CARGO_TARGET_DIR=str(ROOT / "target" / "loom"),
        # 3 preemptions find every protocol bug we planted (a missing epoch CAS, identity
        # clear or waiters' bit); the models then take about 10 s.
        LOOM_MAX_PREEMPTIONS=env.get("LOOM_MAX_PREEMPTIONS", "3"),
    )
    proc = subprocess.run(
        [cargo, "test", "--no-default-features", "--release", "--lib", "sys::lock::model"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, f"loom failed:\n{proc.stdout[-20000:]}\n{proc.stderr[-20000:]}"
    assert "test result: ok. 5 passed" in proc.stdout, proc.stdout[-5000:]
