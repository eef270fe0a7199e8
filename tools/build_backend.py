"""shmkit's PEP 517 build backend: maturin's, with one difference.

An editable install (``pip install -e .``, the README's test command) is the test build: it
turns on the cargo feature ``failpoints`` (``SHMKIT_FAILPOINTS``, rust/src/failpoint.rs), which
the crash-safety and panic-shield tests need. Wheels and sdists (``pip install .``,
``maturin build``, ``python -m build``) are release builds without it, so no environment
variable can stall a production process. ``shmkit._native.build_features()`` tells which
build is loaded. Arguments in ``MATURIN_PEP517_ARGS`` or the ``maturin.build-args`` config
setting are kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import maturin
from maturin import (  # noqa: F401  (the rest of the backend is maturin's)
    build_sdist,
    build_wheel,
    get_requires_for_build_editable,
    get_requires_for_build_sdist,
    get_requires_for_build_wheel,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

TEST_FEATURES = ["--features", "failpoints"]


def build_editable(
    wheel_directory: str,
    config_settings: Mapping[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    args = [*maturin.get_maturin_pep517_args(config_settings), *TEST_FEATURES]
    settings = {**(config_settings or {}), "maturin.build-args": args}
    return str(maturin.build_editable(wheel_directory, settings, metadata_directory))
