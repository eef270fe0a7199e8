"""Run the Rust test suite (unit, integration and property tests of the core) from pytest, so
the README's single test command covers both languages."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.timeout(1800)
def test_cargo_test() -> None:
    cargo = shutil.which("cargo") or os.path.expanduser("~/.cargo/bin/cargo")
    assert os.path.exists(cargo), "cargo is required to run the Rust tests"
    proc = subprocess.run(
        [cargo, "test", "--no-default-features", "--all-targets", "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, (
        f"cargo test failed:\n{proc.stdout[-20000:]}\n{proc.stderr[-20000:]}"
    )
