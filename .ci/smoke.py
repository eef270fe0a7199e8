"""Smoke-test an installed shmkit wheel: run it with the interpreter of the environment the
wheel was installed into, from outside the source tree. Checks that the import comes from
site-packages with the metadata's version, makes a queue round trip, and runs `shmkit demo`
(real processes using every component). Used by .ci/wheel-smoke and the GitHub workflow."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from importlib.metadata import version

import shmkit

assert shmkit.__version__ == version("shmkit"), (shmkit.__version__, version("shmkit"))
purelib = os.path.realpath(sysconfig.get_paths()["purelib"])
assert os.path.realpath(shmkit.__file__).startswith(purelib), f"{shmkit.__file__} not installed"

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
