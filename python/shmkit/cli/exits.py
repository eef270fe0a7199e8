"""Exit codes of the ``shmkit`` command, and the one place that turns an exception into one
clean line on stderr and its code.

A user error (a region that does not exist, another user's file, a server that is not running,
a bad argument...) is never a traceback. Anything else is a bug in shmkit: exit code 70 and a
hint to rerun with ``--debug`` (or ``SHMKIT_DEBUG=1``), which prints the traceback.
"""

from __future__ import annotations

import enum
import errno

from shmkit.api.client import ServerGoneError, ServerRestartedError
from shmkit.api.show import NotAnApiError
from shmkit.errors import (
    CorruptionError,
    InternalError,
    LockError,
    NotARegionError,
    ShmkitError,
    StaleRegionError,
    VersionMismatchError,
)

__all__ = ["CliError", "Exit", "classify"]


class Exit(enum.IntEnum):
    """Exit codes (the README's table)."""

    OK = 0
    #: the command ran and something failed: ``scan`` could not clean every region, an
    #: operating-system error (out of space...), another shmkit refusal (a full client table)
    FAILED = 1
    #: bad usage: unknown command or option, a bad value, an invalid root or name
    USAGE = 2
    #: no such region (or API)
    NOT_FOUND = 3
    #: permission denied: another user's file, a mode wider than accepted, a symbolic link
    PERMISSION = 4
    #: the file is not what the command needs: not a shmkit region, or a region with no API
    WRONG_KIND = 5
    #: the API's server is not running
    SERVER_DOWN = 6
    #: a bounded wait expired
    TIMEOUT = 7
    #: the region is in use by live processes (``rm`` without ``--force``)
    BUSY = 8
    #: the region is damaged, of another layout version, or was never initialised
    DAMAGED = 9
    #: a bug in shmkit (rerun with --debug and report it)
    INTERNAL = 70
    #: interrupted (Ctrl-C)
    INTERRUPTED = 130


class CliError(Exception):
    """A user error the command detected itself: its exit code and message."""

    def __init__(self, code: Exit, message: str) -> None:
        super().__init__(message)
        self.code = code


def _os_text(exc: OSError) -> str:
    what = exc.strerror or str(exc)
    return f"{exc.filename}: {what}" if exc.filename else what


def classify(exc: BaseException) -> tuple[Exit, str]:
    """The exit code for ``exc`` and the line to print (without the ``shmkit:`` prefix)."""
    if isinstance(exc, CliError):
        return exc.code, str(exc)
    if isinstance(exc, InternalError):
        return Exit.INTERNAL, f"internal error: {exc}"
    if isinstance(exc, (ServerGoneError, ServerRestartedError)):
        return Exit.SERVER_DOWN, f"server not running: {exc}"
    if isinstance(exc, (NotAnApiError, NotARegionError)):
        return Exit.WRONG_KIND, str(exc)
    if isinstance(exc, (CorruptionError, VersionMismatchError, StaleRegionError, LockError)):
        return Exit.DAMAGED, str(exc)
    if isinstance(exc, FileNotFoundError):
        return Exit.NOT_FOUND, f"not found: {_os_text(exc)}"
    if isinstance(exc, PermissionError):
        return Exit.PERMISSION, f"permission denied: {_os_text(exc)}"
    if isinstance(exc, TimeoutError):
        return Exit.TIMEOUT, f"timed out: {exc}"
    if isinstance(exc, OSError) and exc.errno == errno.EBUSY:
        return Exit.BUSY, exc.strerror or str(exc)
    if isinstance(exc, ShmkitError):
        return Exit.FAILED, str(exc)
    if isinstance(exc, OSError):
        return Exit.FAILED, _os_text(exc)
    if isinstance(exc, ValueError):
        return Exit.USAGE, f"bad argument: {exc}"
    return Exit.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"
