"""The bindings' last line of defence: a Rust panic anywhere under a binding reaches Python as
``shmkit.InternalError`` (an ``Exception``), never as PyO3's ``PanicException`` (a
``BaseException`` that ``except Exception`` lets through). The panics are real ones, made on
purpose at failpoints (``SHMKIT_FAILPOINTS=panic:<name>``) in a child process."""

from __future__ import annotations

import pathlib

import shmkit
from procs import finish, python


def test_internal_error_is_a_shmkit_error() -> None:
    assert issubclass(shmkit.InternalError, shmkit.ShmkitError)
    assert issubclass(shmkit.InternalError, Exception)
    assert shmkit.errors.InternalError is shmkit.InternalError


CALL = """
import sys, shmkit
region = shmkit.Region.create("p", 1 << 20, root=sys.argv[1])
q = shmkit.Queue.create(region, "q", 4, 8) if "q." in sys.argv[2] else None
try:
    exec(sys.argv[2])
except Exception as e:
    print(type(e).__name__, "|", e)
else:
    print("no error")
"""


def shielded(root: str, point: str, call: str) -> str:
    return finish(python(CALL, root, call, failpoints=f"panic:{point}")).strip()


def test_panic_in_a_method_is_an_internal_error(root: str) -> None:
    out = shielded(root, "queue.put_claimed", "q.put(b'x')")
    assert out.startswith("InternalError | "), out
    assert "a bug in shmkit" in out and "deliberate panic" in out, out


def test_panic_under_the_region_lock_is_an_internal_error(root: str) -> None:
    out = shielded(root, "region.alloc_locked", "region.alloc(64)")
    assert out.startswith("InternalError | "), out


def test_panic_in_a_batch_call_is_an_internal_error(root: str) -> None:
    out = shielded(root, "queue.put_claimed", "q.put_many([b'a', b'b'])")
    assert out.startswith("InternalError | "), out


def test_panic_in_a_destructor_is_an_unraisable_internal_error(root: str) -> None:
    code = """
import gc, sys, shmkit
seen = []
sys.unraisablehook = lambda u: seen.append(type(u.exc_value).__name__)
region = shmkit.Region.create("p", 1 << 20, root=sys.argv[1])
q = shmkit.Queue.create(region, "q", 4, 8)
del q
gc.collect()
print(",".join(seen))
"""
    out = finish(python(code, root, failpoints="panic:queue.close")).strip()
    assert out == "InternalError", out


def test_without_failpoints_nothing_panics(root: str) -> None:
    out = finish(python(CALL, root, "q.put(b'x'); region.alloc(64)")).strip()
    assert out == "no error"


def test_every_binding_is_shielded() -> None:
    """Each ``#[pymethods]`` block and ``#[pyfunction]`` sits inside ``shielded! { ... }``
    (rust/src/py/shield.rs), so a new binding cannot skip the shield."""
    py_dir = pathlib.Path(__file__).resolve().parent.parent / "rust" / "src" / "py"
    unshielded = []
    for path in sorted(py_dir.glob("*.rs")):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.strip() not in ("#[pymethods]", "#[pyfunction]") or line.startswith(" "):
                continue
            j = i - 1
            while j >= 0 and lines[j].startswith(("///", "#[")):
                j -= 1
            if j < 0 or lines[j] != "shielded! {":
                unshielded.append(f"{path.name}:{i + 1}")
    assert unshielded == []
    assert len(list(py_dir.glob("*.rs"))) > 5
