"""Which build of the extension the tests run against, and what it is.

The README's test command (``pip install -e '.[test]' && pytest``) installs the test build:
the in-tree backend (``tools/build_backend.py``) turns on the cargo feature ``failpoints`` for
editable installs, which the crash-safety tests need; release wheels are built without it."""

from __future__ import annotations

import importlib.machinery
import pathlib
import sys

import pytest
from shmkit import _native

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))


def test_the_test_build_has_failpoints() -> None:
    assert _native.build_features()[:1] == ["failpoints"], (
        "the tests run against a release build; install the test build with "
        "pip install -e '.[test]'"
    )


def test_the_extension_is_abi3() -> None:
    """One extension serves every CPython >= 3.9 (PyO3's abi3-py39, the default features),
    and says so: the wheel smoke test asserts the level of the wheel pip picked."""
    assert _native.build_features() == ["failpoints", "abi3-py39"], _native.build_features()
    assert _native.__file__.endswith(".abi3.so"), _native.__file__
    assert ".abi3.so" in importlib.machinery.EXTENSION_SUFFIXES


def test_only_the_editable_build_turns_failpoints_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """The backend adds the feature to editable builds only, and keeps the user's arguments."""
    import build_backend
    import maturin

    calls: list[tuple[str, dict[str, object] | None]] = []

    def editable(_dir: str, settings: dict[str, object] | None = None, *_: object) -> str:
        calls.append(("editable", settings))
        return "x.whl"

    monkeypatch.setattr(maturin, "build_editable", editable)
    monkeypatch.setenv("MATURIN_PEP517_ARGS", "--locked")
    build_backend.build_editable("/nonexistent")
    assert calls == [("editable", {"maturin.build-args": ["--locked", "--features", "failpoints"]})]
    assert build_backend.build_wheel is maturin.build_wheel
    assert build_backend.build_sdist is maturin.build_sdist
