"""Smoke-test an installed shmkit wheel: run it with the interpreter of the environment the
wheel was installed into, from outside the source tree. Checks that the import comes from
site-packages with the metadata's version, that the wheel is a release build (no failpoints)
and, given ``cp39`` or ``cp310`` as argument, that pip installed that abi3 wheel and its
extension was built for that stable-ABI level; then makes a queue round trip and runs
`shmkit demo` (real processes using every component). Used by .ci/wheel-smoke and the GitHub
workflow: ``smoke.py [cp39|cp310]``."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from importlib.metadata import distribution, version

import shmkit
from shmkit import _native

assert shmkit.__version__ == version("shmkit"), (shmkit.__version__, version("shmkit"))
purelib = os.path.realpath(sysconfig.get_paths()["purelib"])
assert os.path.realpath(shmkit.__file__).startswith(purelib), f"{shmkit.__file__} not installed"

# The wheel pip picked (its WHEEL file's tags) and the build inside it.
wheel_tags = [
    line.split(":", 1)[1].strip()
    for line in (distribution("shmkit").read_text("WHEEL") or "").splitlines()
    if line.startswith("Tag:")
]
features = _native.build_features()
print(f"installed wheel {', '.join(wheel_tags)}; build features {features}")
assert "failpoints" not in features, f"a test build was installed: {features}"
if len(sys.argv) > 1:
    want = sys.argv[1]  # cp39 or cp310
    assert wheel_tags and all(t.startswith(f"{want}-abi3-") for t in wheel_tags), (
        f"pip installed the {wheel_tags} wheel, expected {want}-abi3"
    )
    level = f"abi3-py{want[2:]}"
    assert level in features, f"the {want}-abi3 wheel holds a {features} build, not {level}"

root = f"smoke{os.getpid()}"
with shmkit.Region.create("smoke", 1 << 20, root=root) as region:
    q = shmkit.Queue.create(region, "q", 8, 64)
    q.put(b"round trip")
    assert q.get(timeout=5) == b"round trip"
    region.unlink()
print(f"shmkit {shmkit.__version__} on Python {sys.version.split()[0]}: import and queue ok")

shmkit_cmd = os.path.join(os.path.dirname(sys.executable), "shmkit")
out = subprocess.run([shmkit_cmd, "--version"], capture_output=True, text=True, check=True)
assert out.stdout.strip() == f"shmkit {shmkit.__version__}", out.stdout
demo = subprocess.run([shmkit_cmd, "demo"], capture_output=True, text=True, timeout=600)
if demo.returncode != 0:
    sys.exit(f"shmkit demo failed ({demo.returncode}):\n{demo.stdout}\n{demo.stderr}")
print(demo.stdout.strip().splitlines()[-1])
