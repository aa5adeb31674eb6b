"""What the scheduler's leader does for awards on its regular tick: lapse offers past their
deadline, remind of reports and mark overdue ones, carry out reclaims whose appeal window
closed, and run the monthly use check once a month.

Each step is idempotent and in its own transaction (a failing step is logged and retried on
the next tick; it never stops the others nor the scheduler), and each is cheap when there
is nothing to do, so the leader may call this as often as it likes; the monthly check runs
once per calendar month however often it is called (a row unique by month).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from gpucenter.services.awards import agreements, checks, reports

log = logging.getLogger(__name__)


@dataclass
class Tick:
    """What one tick did, step by step (for logs and tests)."""

    lapsed: list[int] = field(default_factory=list)
    reminded: int = 0
    overdue: int = 0
    reclaimed: int = 0
    monthly: checks.CheckSummary | None = None
    failed: list[str] = field(default_factory=list)


def run_periodic(
    sessions: sessionmaker[Session],
    now: datetime,
    begin: Callable[[], AbstractContextManager[Session]] | None = None,
) -> Tick:
    """One tick; `begin` opens each step's transaction (the scheduler leader passes its
    fenced one), by default `sessions.begin`."""
    tick = Tick()
    opened = begin if begin is not None else sessions.begin

    def step(name: str, work: Callable[[Session], Any]) -> Any:
        try:
            with opened() as s:
                return work(s)
        except Exception:
            log.exception("award aftercare step %s failed; retrying on the next tick", name)
            tick.failed.append(name)
            return None

    tick.lapsed = step("lapse", lambda s: agreements.lapse_due(s, now)) or []
    marked = step("reports", lambda s: reports.remind_and_mark(s, now)) or (0, 0)
    tick.reminded, tick.overdue = marked
    tick.reclaimed = step("reclaims", lambda s: checks.execute_due(s, now)) or 0
    tick.monthly = step("monthly check", lambda s: checks.run_monthly(s, now))
    if tick.lapsed or tick.overdue or tick.reclaimed or tick.monthly:
        log.info("award aftercare: %s", tick)
    return tick
