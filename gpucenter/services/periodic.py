"""Periodic work of the scheduler leader: what runs, how often, and when it last did.

The leader does more than scheduling passes: it keeps each site's accounts in step, reads
usage back, refreshes allocation states, and once a month checks that awards are used. Each
is a `PeriodicTask`: a name, a `Schedule` (every N seconds, or once per calendar period) and
a function of the `AppContext`. Site kinds contribute their own tasks (a Slurm site: account
sync and usage ingest; a Kubernetes site its own sync), so the loop schedules all of them
the same way and knows none by name.

When each task last ran is kept in the database (`periodic_runs`), so a new leader after a
failover continues the schedule instead of starting it over (a monthly check runs once a
month, not once per failover). A task that fails is logged with its error, retried after
`retry_s`, and never stops the others or the scheduling. `PeriodicRunner.request` asks for a
task to run at the next turn (a job found that a site's accounts are missing: sync now).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from sqlalchemy import select

from gpucenter.domain.clock import as_utc
from gpucenter.persistence.tables_ops import PeriodicRunRow

if TYPE_CHECKING:
    from gpucenter.services.context import AppContext

__all__ = ["Calendar", "PeriodicRunner", "PeriodicTask", "Schedule", "site_sync_task"]

log = logging.getLogger(__name__)


def site_sync_task(site: str) -> str:
    """The name of a site's sync task (each kind registers its sync under this name, so a
    job that finds the site not ready yet can ask for it whatever the kind)."""
    return f"site-sync:{site}"


class Calendar(StrEnum):
    """Once per calendar period (UTC): the first turn in a new day, week or month."""

    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    NEVER = "never"

    def period(self, at: datetime) -> str:
        at = at.astimezone(UTC)
        if self is Calendar.DAILY:
            return at.strftime("%Y-%m-%d")
        if self is Calendar.WEEKLY:
            year, week, _ = at.isocalendar()
            return f"{year}-W{week:02d}"
        return at.strftime("%Y-%m")


@dataclass(frozen=True, slots=True)
class Schedule:
    """Every `every_s` seconds (0: never), or once per `calendar` period."""

    every_s: float = 0.0
    calendar: Calendar | None = None

    def due(self, now: datetime, last_ok: datetime | None) -> bool:
        if self.calendar is not None:
            if self.calendar is Calendar.NEVER:
                return False
            return last_ok is None or self.calendar.period(last_ok) != self.calendar.period(now)
        if self.every_s <= 0:
            return False
        return last_ok is None or (now - last_ok).total_seconds() >= self.every_s


@dataclass(frozen=True, slots=True)
class PeriodicTask:
    """One piece of periodic work; `run` returns a one-line summary for the log."""

    name: str
    schedule: Schedule
    run: Callable[[AppContext], str]
    retry_s: float = 60.0
    """After a failure, wait this long before trying again (the schedule may be longer)."""
    min_gap_s: float = 5.0
    """A requested run (`PeriodicRunner.request`) waits at least this long after the last."""


@dataclass(slots=True)
class _State:
    last_run: datetime | None = None
    last_ok: datetime | None = None


class PeriodicRunner:
    """Runs the due tasks, one after the other, when the leader calls `run_due`."""

    def __init__(self, tasks: Sequence[PeriodicTask]) -> None:
        self.tasks = list(tasks)
        self._state: dict[str, _State] | None = None
        self._requested: set[str] = set()
        self._lock = threading.Lock()

    def request(self, name: str) -> None:
        """Run the task `name` at the next turn (within its `min_gap_s`)."""
        with self._lock:
            self._requested.add(name)

    def forget(self) -> None:
        """Read the schedule again from the database (after taking the leadership)."""
        self._state = None

    def _load(self, ctx: AppContext) -> dict[str, _State]:
        if self._state is None:
            with ctx.sessions() as s:
                rows = {r.name: r for r in s.scalars(select(PeriodicRunRow))}
            self._state = {
                t.name: _State(
                    _utc(rows[t.name].last_run_at) if t.name in rows else None,
                    _utc(rows[t.name].last_ok_at) if t.name in rows else None,
                )
                for t in self.tasks
            }
        return self._state

    def due(self, ctx: AppContext, now: datetime) -> list[PeriodicTask]:
        state = self._load(ctx)
        with self._lock:
            requested = set(self._requested)
        found = []
        for task in self.tasks:
            st = state.setdefault(task.name, _State())
            since_run = (now - st.last_run).total_seconds() if st.last_run else None
            asked = task.name in requested and (since_run is None or since_run >= task.min_gap_s)
            scheduled = task.schedule.due(now, st.last_ok) and (
                st.last_run is None
                or st.last_ok == st.last_run  # the last run succeeded
                or (since_run is not None and since_run >= task.retry_s)
            )
            if asked or scheduled:
                found.append(task)
        return found

    def run_due(self, ctx: AppContext, now: datetime) -> int:
        """Run every due task; returns how many ran (successfully or not)."""
        ran = 0
        for task in self.due(ctx, now):
            with self._lock:
                self._requested.discard(task.name)
            self._run(ctx, task, now)
            ran += 1
        return ran

    def _run(self, ctx: AppContext, task: PeriodicTask, now: datetime) -> None:
        assert self._state is not None
        st = self._state[task.name]
        st.last_run = now
        began = time.monotonic()
        error, summary = "", ""
        try:
            summary = task.run(ctx)
            st.last_ok = now
        except Exception as exc:
            error = f"{exc.__class__.__name__}: {exc}"[:2000]
            log.exception("periodic task %s failed; retrying in %g s", task.name, task.retry_s)
        else:
            if summary:
                log.info("%s: %s (%.2f s)", task.name, summary, time.monotonic() - began)
        try:
            with ctx.fenced() as s:
                row = s.get(PeriodicRunRow, task.name)
                if row is None:
                    row = PeriodicRunRow(name=task.name, last_error="", summary="")
                    s.add(row)
                row.last_run_at = now
                if not error:
                    row.last_ok_at = now
                row.last_error = error
                row.summary = summary[:2000]
        except Exception:
            log.warning("could not record the run of %s", task.name, exc_info=True)


def _utc(value: datetime | None) -> datetime | None:
    return as_utc(value) if value is not None else None
