"""``shmkit demo``: a tour in scenes, each with real processes.

Each component adds one scene module and one line to :data:`SCENES`.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence

from shmkit.demo import api as _api
from shmkit.demo import memif as _memif
from shmkit.demo import netmap as _netmap
from shmkit.demo import queues as _queues
from shmkit.demo import regions as _regions

#: name -> (title, run(root) -> None); run in this order
SCENES: dict[str, tuple[str, Callable[[str], None]]] = {
    "regions": ("Regions: create, share, list, and clean up after a killed process", _regions.run),
    "queues": (
        "Queues: processes streaming through shared memory, and a killed producer",
        _queues.run,
    ),
    "memif": (
        "memif: two processes, a ping-pong over shared-memory rings, then a flood",
        _memif.run,
    ),
    "netmap": ("netmap pipe: zero-copy rings, fragments, back-pressure, reinit", _netmap.run),
    "api": ("Binary API: a server, clients calling it, a killed client reaped", _api.run),
}


def banner(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 70 - len(text)))


def run(names: Sequence[str] | None = None) -> int:
    """Run the named scenes (all by default); returns an exit status."""
    chosen = list(names or SCENES)
    unknown = [n for n in chosen if n not in SCENES]
    if unknown:
        print(f"unknown scene(s): {', '.join(unknown)}; choose from {', '.join(SCENES)}")
        return 2
    root = f"demo{os.getpid()}"
    started = time.monotonic()
    for name in chosen:
        title, scene = SCENES[name]
        banner(title)
        scene(f"{root}_{name}")
        sys.stdout.flush()
    print(f"\ndemo finished in {time.monotonic() - started:.1f} s")
    return 0
