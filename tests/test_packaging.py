"""Packaging promises: one version source, no silent Rust download when building from source
without cargo, an sdist that carries what building it needs, a license."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile

import shmkit

ROOT = pathlib.Path(__file__).resolve().parent.parent

HOOK = """
import json, sys
sys.path.insert(0, "tools")
import build_backend
print(json.dumps(getattr(build_backend, sys.argv[1])()))
"""


def run_hook(hook: str, path: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k != "SHMKIT_INSTALL_RUST"}
    return subprocess.run(
        [sys.executable, "-c", HOOK, hook],
        cwd=ROOT,
        env={**clean, "PATH": path, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_no_cargo_stops_with_an_explanation_instead_of_downloading(tmp_path: pathlib.Path) -> None:
    for hook in (
        "get_requires_for_build_wheel",
        "get_requires_for_build_editable",
        "get_requires_for_build_sdist",
    ):
        r = run_hook(hook, str(tmp_path))  # an empty PATH directory: no cargo
        assert r.returncode == 1, r.stdout + r.stderr
        assert "needs Rust" in r.stderr and "Nothing was downloaded" in r.stderr
        assert "SHMKIT_INSTALL_RUST=1" in r.stderr and "rustup.rs" in r.stderr
        assert r.stdout == ""
    # Asked for, the download is maturin's (its bootstrap package is requested).
    r = run_hook("get_requires_for_build_wheel", str(tmp_path), SHMKIT_INSTALL_RUST="1")
    assert r.returncode == 0 and "puccinialin" in r.stdout, r.stderr
    # With cargo on PATH the backend is maturin's, needing nothing more.
    cargo = shutil.which("cargo")
    assert cargo, "cargo is needed to build shmkit"
    cargo_dir = os.path.dirname(cargo)
    r = run_hook("get_requires_for_build_wheel", cargo_dir)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stderr


def test_version_has_one_source() -> None:
    cargo = (ROOT / "Cargo.toml").read_text()
    version = next(
        line.split('"')[1] for line in cargo.splitlines() if line.startswith("version = ")
    )
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and "\nversion =" not in pyproject
    assert shmkit.__version__ == version == shmkit._native.__version__


def test_sdist_carries_the_backend_and_the_license(tmp_path: pathlib.Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "maturin", "sdist", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    (sdist,) = tmp_path.glob("shmkit-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for needed in (
        "pyproject.toml",
        "Cargo.toml",
        "Cargo.lock",
        "tools/build_backend.py",
        "LICENSE",
        "README.md",
        "python/shmkit/__init__.py",
        "rust/src/lib.rs",
    ):
        assert needed in names, f"{needed} missing from the sdist"
    assert not any(n.startswith(("target/", ".venv/")) for n in names)


def test_license_is_the_apache_2_0_text() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert 'license = { text = "Apache-2.0" }' in (ROOT / "pyproject.toml").read_text()


def _wheel_with(so: pathlib.Path, name: str, where: pathlib.Path) -> str:
    path = where / name
    with zipfile.ZipFile(path, "w") as zf:
        zf.write(so, f"shmkit/{so.name}")
    return str(path)


def check_wheel(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / ".ci" / "check-wheel.py"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_wheel_reads_the_glibc_floor_of_the_extension(tmp_path: pathlib.Path) -> None:
    so = pathlib.Path(shmkit._native.__file__)
    # The oracle: binutils' reading of the same versioned symbols.
    dump = subprocess.run(["objdump", "-T", str(so)], capture_output=True, text=True, check=True)
    versions = {
        tuple(int(x) for x in v.split(".")) for v in re.findall(r"\(GLIBC_([0-9.]+)\)", dump.stdout)
    }
    newest = max(versions)
    newest_text = ".".join(map(str, newest))
    arch = {"x86_64": "x86_64", "aarch64": "aarch64"}[os.uname().machine]

    honest = _wheel_with(
        so, f"shmkit-1.0-cp39-abi3-manylinux_{newest[0]}_{newest[1]}_{arch}.whl", tmp_path
    )
    r = check_wheel(honest)
    assert r.returncode == 0 and f"GLIBC_{newest_text}" in r.stdout, r.stdout

    below = (newest[0], newest[1] - 1)
    lying = _wheel_with(
        so, f"shmkit-1.0-cp39-abi3-manylinux_{below[0]}_{below[1]}_{arch}.whl", tmp_path
    )
    r = check_wheel(lying)
    assert r.returncode == 1 and f"needs GLIBC_{newest_text}, newer than" in r.stdout, r.stdout

    other_arch = "aarch64" if arch == "x86_64" else "x86_64"
    musl = _wheel_with(so, f"shmkit-1.0-cp39-abi3-musllinux_1_2_{other_arch}.whl", tmp_path)
    r = check_wheel(musl)
    assert r.returncode == 1
    assert f"{arch} code in a musllinux_1_2_{other_arch} wheel" in r.stdout
    assert "in a musl wheel" in r.stdout

    # --abi3 TAG wants exactly that abi3 tag and a module name without a version suffix.
    r = check_wheel("--abi3", "cp39", honest)
    versioned = ".cpython-" in so.name
    assert (r.returncode == 1) == versioned, r.stdout
    r = check_wheel("--abi3", "cp310", honest)
    assert r.returncode == 1 and "tagged cp39-abi3, expected cp310-abi3" in r.stdout, r.stdout
    cp310 = _wheel_with(
        so, f"shmkit-1.0-cp310-abi3-manylinux_{newest[0]}_{newest[1]}_{arch}.whl", tmp_path
    )
    r = check_wheel("--abi3", "cp310", cp310)
    assert (r.returncode == 1) == versioned, r.stdout
    plain = _wheel_with(
        so, f"shmkit-1.0-cp311-cp311-manylinux_{newest[0]}_{newest[1]}_{arch}.whl", tmp_path
    )
    r = check_wheel("--abi3", "cp39", plain)
    assert r.returncode == 1 and "tagged cp311-cp311, expected cp39-abi3" in r.stdout
    r = check_wheel("--abi3", "3.10", cp310)
    assert r.returncode == 2 and "not a CPython tag" in r.stderr, r.stderr


def test_wheel_smoke_says_which_python_is_missing(tmp_path: pathlib.Path) -> None:
    """.ci/wheel-smoke needs Python 3.9 and 3.13 (pyenv's, or on PATH): without them it stops
    before building anything, naming what to install."""
    empty = tmp_path / "bin"
    empty.mkdir()
    r = subprocess.run(
        ["bash", str(ROOT / ".ci" / "wheel-smoke")],
        env={"PATH": f"{empty}:/usr/bin:/bin", "HOME": str(tmp_path), "PYENV_ROOT": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAILED: no usable Python 3.9" in r.stderr and "pyenv install 3.9" in r.stderr
    assert "maturin" not in r.stdout
