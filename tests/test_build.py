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
    """A stable-ABI extension, built like the wheel pip picks for this interpreter: abi3-py39
    under 3.9, abi3-py310 (fastcall calls) from 3.10; build_features() says which."""
    level = "abi3-py310" if sys.version_info >= (3, 10) else "abi3-py39"
    assert _native.build_features() == ["failpoints", level], _native.build_features()
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

    def wheel(_dir: str, settings: dict[str, object] | None = None, *_: object) -> str:
        calls.append(("wheel", settings))
        return "x.whl"

    monkeypatch.setattr(maturin, "build_editable", editable)
    monkeypatch.setattr(maturin, "build_wheel", wheel)
    monkeypatch.setenv("MATURIN_PEP517_ARGS", "--locked")
    build_backend.build_editable("/nonexistent")
    build_backend.build_wheel("/nonexistent")
    abi = build_backend.ABI3_PY310 if sys.version_info >= (3, 10) else []
    assert calls == [
        ("editable", {"maturin.build-args": ["--locked", *abi, "--features", "failpoints"]}),
        ("wheel", {"maturin.build-args": ["--locked", *abi]}),
    ]
    assert build_backend.build_sdist is maturin.build_sdist


def test_source_builds_take_the_fast_stable_abi_from_python_3_10() -> None:
    """Like pip choosing between the two wheels: abi3-py310 from 3.10, the default abi3-py39
    under 3.9, and never over features the user chose."""
    import build_backend

    fast = ["--no-default-features", "--features", "python,abi3-py310"]
    assert build_backend._with_abi([], (3, 9)) == []
    assert build_backend._with_abi([], (3, 10)) == fast
    assert build_backend._with_abi(["--locked"], (3, 13)) == ["--locked", *fast]
    for own in (
        ["--no-default-features", "--features", "python"],
        ["--features", "abi3-py310"],
        ["--all-features"],
    ):
        assert build_backend._with_abi(own, (3, 13)) == own
