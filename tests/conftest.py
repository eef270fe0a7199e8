"""Shared fixtures: a unique root namespace per test, cleaned up afterwards; the seed of a
randomised test (printed; ``SHMKIT_SEED=<n>`` replays it)."""

from __future__ import annotations

import itertools
import os
import pathlib
import random
from collections.abc import Iterator

import pytest

_counter = itertools.count()


def shm_files(prefix: str) -> list[pathlib.Path]:
    return sorted(pathlib.Path("/dev/shm").glob(f"{prefix}-*"))


@pytest.fixture
def root() -> Iterator[str]:
    """A fresh root namespace; every /dev/shm file under it is removed after the test."""
    name = f"t{os.getpid()}x{next(_counter)}"
    yield name
    for p in shm_files(name):
        p.unlink(missing_ok=True)


@pytest.fixture
def seed() -> int:
    """The seed of a randomised test: ``SHMKIT_SEED`` if set, else a random one, printed so a
    failure can be replayed."""
    s = int(os.environ.get("SHMKIT_SEED") or random.randrange(1 << 32))
    print(f"SHMKIT_SEED={s}")
    return s
