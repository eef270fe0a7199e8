"""shmkit's exception classes: made once in Rust (rust/src/py/errors.rs), re-exported by
``shmkit.errors``, all under ``ShmkitError`` with their stdlib bases, picklable with their
fields."""

from __future__ import annotations

import pathlib
import pickle
import queue
import re

import pytest
import shmkit
import shmkit.api
from shmkit import _native, errors

STDLIB_BASES = {
    "OutOfMemoryError": MemoryError,
    "InvalidOffsetError": ValueError,
    "DoubleFreeError": ValueError,
    "ClosedError": ValueError,
    "QueueFull": queue.Full,
    "QueueEmpty": queue.Empty,
    "MessageError": ValueError,
    "ServerGoneError": ConnectionError,
    "ServerRestartedError": ConnectionError,
    "ConnectionDamagedError": ConnectionError,
    "UnknownMessageError": KeyError,
    "RegionTruncatedError": errors.CorruptionError,
}


@pytest.mark.parametrize("name", errors.__all__)
def test_every_error_is_a_shmkit_error_made_natively(name: str) -> None:
    cls = getattr(errors, name)
    assert cls is getattr(_native, name)
    assert issubclass(cls, errors.ShmkitError) and issubclass(cls, Exception)
    assert cls.__module__ == "shmkit.errors" and cls.__doc__
    if name in STDLIB_BASES:
        assert issubclass(cls, STDLIB_BASES[name])
    e = cls("what happened")
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is cls and back.args == e.args


def test_the_public_faces_raise_the_same_classes() -> None:
    assert shmkit.QueueFull is errors.QueueFull
    assert shmkit.memif.MemifError is errors.MemifError
    assert shmkit.netmap.RingReinit is errors.RingReinit
    assert shmkit.api.MessageError is errors.MessageError
    assert shmkit.api.ServerGoneError is errors.ServerGoneError
    assert shmkit.api.ServerRunningError is errors.ServerRunningError


def test_fields_come_from_args_and_survive_pickling() -> None:
    e = errors.MemifError(3, "no such thing")
    assert (e.code, e.message, str(e)) == (3, "no such thing", "[3] no such thing")
    assert e.strerror == _native.memif_strerror(3)
    back = pickle.loads(pickle.dumps(e))
    assert (back.code, back.message, str(back)) == (3, "no such thing", "[3] no such thing")
    assert str(errors.MemifError(3)) == f"[3] {_native.memif_strerror(3)}"
    r = errors.RingReinit("reset", "tx", [0, 2])
    assert (str(r), r.direction, r.rings) == ("reset", "tx", [0, 2])
    back_r = pickle.loads(pickle.dumps(r))
    assert (str(back_r), back_r.direction, back_r.rings) == ("reset", "tx", [0, 2])


def test_no_rust_code_imports_shmkit_modules() -> None:
    """Exceptions are born in Rust: the bindings never import ``shmkit.*`` by name to find
    a class."""
    py_dir = pathlib.Path(__file__).resolve().parent.parent / "rust" / "src"
    offenders = [
        str(p)
        for p in py_dir.rglob("*.rs")
        if re.search(r'import\(\s*(py,\s*)?"shmkit\.errors"', p.read_text())
    ]
    assert offenders == []
