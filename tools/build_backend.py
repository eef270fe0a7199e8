"""shmkit's PEP 517 build backend: maturin's, with three differences.

* **No silent Rust download.** maturin's backend, finding no ``cargo``, quietly downloads a
  whole Rust toolchain (about 750 MB) into a cache directory before building. A user who
  expected a wheel usually wants to hear instead why none fitted, and how to get one. So when
  ``cargo`` is not on ``PATH`` this backend stops with that explanation, unless
  ``SHMKIT_INSTALL_RUST=1`` asks for the download.
* **Failpoints in the test build only.** An editable install (``pip install -e .``, the
  README's test command) is the test build: it turns on the cargo feature ``failpoints``
  (``SHMKIT_FAILPOINTS``, rust/src/failpoint.rs), which the crash-safety and panic-shield tests
  need. Wheels and sdists (``pip install .``, ``maturin build``, ``python -m build``) are
  release builds without it, so no environment variable can stall a production process.
  ``shmkit._native.build_features()`` tells which build is loaded. Arguments in
  ``MATURIN_PEP517_ARGS`` or the ``maturin.build-args`` config setting are kept.
* **The fast stable ABI from Python 3.10.** The default cargo features build for the 3.9
  stable ABI (``abi3-py39``), whose calls pay ~18 ns for an argument tuple the 3.10 one does
  without (fastcall). The published wheels come in both flavours and pip picks; a build from
  source (``pip install .``, the sdist, the editable test build) under Python 3.10 or newer
  selects ``abi3-py310`` the same way, unless the arguments choose features themselves
  (``--no-default-features``, ``--all-features`` or an ``abi3`` feature).

Every other hook is maturin's own.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from typing import Any

import maturin
from maturin import (  # noqa: F401  (the rest of the backend is maturin's)
    build_sdist,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

TEST_FEATURES = ["--features", "failpoints"]
#: the cp310-abi3 build (see Cargo.toml's features), for interpreters from 3.10
ABI3_PY310 = ["--no-default-features", "--features", "python,abi3-py310"]
OPT_IN = "SHMKIT_INSTALL_RUST"

MESSAGE = f"""
shmkit: building shmkit from source needs Rust (cargo and rustc 1.85 or newer), and `cargo`
is not on PATH. Nothing was downloaded. Choose one:

  * Use a prebuilt wheel: there are wheels for Linux on x86_64 and aarch64 (glibc 2.28+ or
    musl 1.2+) for every CPython from 3.9. If pip chose this source package instead, upgrade
    pip (python -m pip install -U pip) or check that your platform is one of those.
  * Install Rust (https://rustup.rs, or your distribution's rustc and cargo packages), make
    sure `cargo` is on PATH (rustup puts it in ~/.cargo/bin), and install again.
  * Let the build download a private Rust toolchain (about 750 MB, kept in a cache
    directory): set {OPT_IN}=1 and install again.
"""


def _check_rust() -> None:
    if shutil.which("cargo") or os.environ.get(OPT_IN, "") not in ("", "0"):
        if not shutil.which("cargo"):
            os.environ.pop("MATURIN_NO_INSTALL_RUST", None)  # the user asked for the download
        return
    sys.stderr.write(MESSAGE)
    sys.stderr.flush()
    raise SystemExit(1)


def get_requires_for_build_wheel(config_settings: Mapping[str, Any] | None = None) -> list[str]:
    _check_rust()
    return list(maturin.get_requires_for_build_wheel(config_settings))


def get_requires_for_build_editable(
    config_settings: Mapping[str, Any] | None = None,
) -> list[str]:
    _check_rust()
    return list(maturin.get_requires_for_build_editable(config_settings))


def get_requires_for_build_sdist(config_settings: Mapping[str, Any] | None = None) -> list[str]:
    _check_rust()
    return list(maturin.get_requires_for_build_sdist(config_settings))


def build_editable(
    wheel_directory: str,
    config_settings: Mapping[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    args = [*_with_abi(maturin.get_maturin_pep517_args(config_settings)), *TEST_FEATURES]
    settings = {**(config_settings or {}), "maturin.build-args": args}
    return str(maturin.build_editable(wheel_directory, settings, metadata_directory))


def build_wheel(
    wheel_directory: str,
    config_settings: Mapping[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    args = _with_abi(maturin.get_maturin_pep517_args(config_settings))
    settings = {**(config_settings or {}), "maturin.build-args": args}
    return str(maturin.build_wheel(wheel_directory, settings, metadata_directory))


def _with_abi(args: list[str], version: tuple[int, int] = sys.version_info[:2]) -> list[str]:
    """The build arguments, with the 3.10 stable ABI chosen under Python 3.10 and newer unless
    the arguments already choose features."""
    chosen = any(a in ("--no-default-features", "--all-features") or "abi3" in a for a in args)
    return list(args) if chosen or version < (3, 10) else [*args, *ABI3_PY310]
