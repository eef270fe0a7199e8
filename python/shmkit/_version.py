"""shmkit's version: one source, ``Cargo.toml``. maturin writes it into the package metadata
(``pyproject.toml`` declares the version dynamic), and the extension carries it too, for a
source tree used without installing."""

from __future__ import annotations

from importlib import metadata

__all__ = ["__version__"]

try:
    __version__: str = metadata.version("shmkit")
except metadata.PackageNotFoundError:  # not installed: running from a source tree
    from shmkit._native import __version__
