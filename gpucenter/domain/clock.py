"""Time as an explicit input.

The scheduling core never reads the wall clock; it is handed an `Instant` (seconds since the
Unix epoch, as a float) by whoever drives it: the server loop, a test, or the simulator.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol

Instant = float


class Clock(Protocol):
    """Something that tells the time."""

    def now(self) -> Instant: ...


class SystemClock:
    """The wall clock, for the server loop and the local dispatcher."""

    def now(self) -> Instant:
        return time.time()


class ManualClock:
    """A clock that moves only when told to: tests and the simulator."""

    def __init__(self, start: Instant = 0.0) -> None:
        self._now = start

    def now(self) -> Instant:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock never runs backwards")
        self._now += seconds

    def set(self, instant: Instant) -> None:
        if instant < self._now:
            raise ValueError("a clock never runs backwards")
        self._now = instant


def as_utc(value: datetime) -> datetime:
    """A datetime with its zone: one without (as SQLite hands them back) is UTC, which is
    how everything is stored."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
