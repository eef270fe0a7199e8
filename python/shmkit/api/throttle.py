"""Rate-limited logging, for loops that may meet the same failure many times a second."""

from __future__ import annotations

import logging
import time

__all__ = ["LOG_INTERVAL", "Throttle"]

#: at most one log record per kind of event per this many seconds
LOG_INTERVAL = 10.0


class Throttle:
    """Rate-limited logging: the first event of a kind is logged at once, the next ones at
    most once per ``interval`` seconds, saying how many were not logged in between."""

    def __init__(self, logger: logging.Logger, interval: float = LOG_INTERVAL) -> None:
        self.logger = logger
        self.interval = interval
        self._next: dict[str, float] = {}
        self._quiet: dict[str, int] = {}

    def __call__(self, kind: str, level: int, msg: str, *args: object, **kw: object) -> None:
        now = time.monotonic()
        if now < self._next.get(kind, 0.0):
            self._quiet[kind] = self._quiet.get(kind, 0) + 1
            return
        self._next[kind] = now + self.interval
        quiet = self._quiet.pop(kind, 0)
        if quiet:
            msg += f" ({quiet} more since the last report)"
        self.logger.log(level, msg, *args, **kw)  # type: ignore[arg-type]
