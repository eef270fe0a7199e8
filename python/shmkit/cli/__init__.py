"""The ``shmkit`` command: look inside shared memory, clean up, and run the demo.

:mod:`shmkit.cli.app` parses and reports errors (exit codes in :mod:`shmkit.cli.exits`);
:mod:`shmkit.cli.commands` holds the subcommands.
"""

from __future__ import annotations

from shmkit.cli.app import main
from shmkit.cli.exits import Exit

__all__ = ["Exit", "main"]
