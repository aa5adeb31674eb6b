"""What ended, recorded: the dispatchers' state changes applied to the job rows.

A finished run is charged once (GPU-seconds actually held, keyed by job and run in the
ledger) and added to the project's decayed usage; a preempted job's run is charged and the
job goes back to the queue; a run's measured GPU utilisation is kept for use-it-or-lose-it.
Split from the scheduling pass (`services.scheduling`), which calls `apply_changes` after
polling each site; recovery after a restart and the accounting tests use it too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from gpucenter.dispatch.base import StateChange
from gpucenter.domain.clock import as_utc
from gpucenter.domain.jobs import JobState, WaitReason, check_transition
from gpucenter.persistence.tables import JobRow, LedgerEntryRow
from gpucenter.services.context import AppContext
from gpucenter.services.fairshare import add_decayed_usage

log = logging.getLogger(__name__)
APPLY_TRIES = 3


def apply_changes(
    ctx: AppContext,
    changes: Sequence[StateChange],
    unapplied: list[StateChange] | None = None,
) -> int:
    """Record each change in a fenced transaction of its own; returns how many were recorded.

    A site reports each end once, so an end must not be dropped when the database fails: a
    change whose transaction fails is tried again in a fresh one (an end whose COMMIT
    landed but whose answer was lost is then found recorded: charges are keyed by run), and
    if the database still fails, it and the changes after it go to `unapplied` for the next
    pass (without `unapplied`, the error propagates)."""
    count = 0
    for i, change in enumerate(changes):
        for attempt in range(APPLY_TRIES):
            try:
                count += _apply_one(ctx, change)
                break
            except DBAPIError:
                if attempt < APPLY_TRIES - 1:
                    log.warning("recording the end of job %s failed; again", change.job_id)
                    time.sleep(0.2 * (attempt + 1))
                    continue
                if unapplied is None:
                    raise
                log.warning("the database fails: %d ends kept for the next pass", len(changes) - i)
                unapplied.extend(changes[i:])
                return count
    return count


def _apply_one(ctx: AppContext, change: StateChange) -> int:
    with ctx.fenced() as s:
        row = s.get(JobRow, int(change.job_id), with_for_update=True)
        if row is None:
            log.warning("dispatcher reported unknown job %s", change.job_id)
            return 0
        current = JobState(row.state)
        if current.is_terminal:
            return 0
        at = datetime_from(change.at)
        if (
            change.state is JobState.CANCELLED
            and row.preempt_requested_at is not None
            and row.cancel_requested_at is None
        ):
            _requeue(s, row, at)
        else:
            check_transition(current, change.state)
            finish_job(s, row, change.state, at, change.exit_code, change.detail)
        if change.gpu_util is not None:
            _record_utilisation(s, row, change, at)
    return 1


def _record_utilisation(s: Session, row: JobRow, change: StateChange, at: datetime) -> None:
    """Keep the run's measured GPU utilisation for use-it-or-lose-it (row.runs is the run
    that just ended: it is counted when a run starts)."""
    from gpucenter.services.accounting.useit import record_utilisation

    assert change.gpu_util is not None
    mean, samples = change.gpu_util
    record_utilisation(
        s,
        row.id,
        row.runs or 1,
        min(max(mean, 0.0), 100.0),
        samples,
        change.measured_by or "dispatcher",
        at,
    )


def datetime_from(instant: float) -> datetime:
    from datetime import UTC

    return datetime.fromtimestamp(instant, tz=UTC)


def finish_job(
    s: Session, row: JobRow, state: JobState, at: datetime, exit_code: int | None, detail: str
) -> None:
    """The job ended in `state` at `at`: record it and charge its run."""
    row.state = state.value
    row.ended_at = at
    row.exit_code = exit_code
    row.reason = ""
    row.reason_detail = detail
    charge_job(s, row, at)


def _requeue(s: Session, row: JobRow, at: datetime) -> None:
    """A preempted job stopped: charge the run it had and put it back in the queue."""
    check_transition(JobState(row.state), JobState.PENDING)
    charge_job(s, row, at)
    victim_of = row.preempted_for
    row.state = JobState.PENDING.value
    row.started_at = None
    row.placement = None
    row.external_id = None
    row.borrowed = False
    row.preempt_requested_at = None
    row.preempted_for = None
    row.reason = WaitReason.PRIORITY.value
    row.reason_detail = f"preempted to make room for job {victim_of}; requeued"


def charge_job(s: Session, row: JobRow, ended_at: datetime) -> None:
    """Charge GPU-seconds actually held (allocated GPUs x elapsed), once per run of a job.

    Never beyond what the run reserved (`reserved_s`: the time limit as its site enforces
    it; the time limit itself for older rows): what a job holds past it is the site's
    stopping it (the kill grace, the next poll), which the job's owner did not ask for and
    admission did not reserve. A Slurm site's own figure comes in with the usage ingest."""
    if row.started_at is None or row.allocation_id is None:
        return
    source = f"job:{row.id}:run:{row.runs}"
    if s.scalar(select(LedgerEntryRow.id).where(LedgerEntryRow.source == source)) is not None:
        return
    limit = float(row.reserved_s or row.time_limit_s)
    elapsed = min(max(0.0, (ended_at - as_utc(row.started_at)).total_seconds()), limit)
    gpu_seconds = elapsed * row.gpus_per_node * row.nodes
    s.add(
        LedgerEntryRow(
            allocation_id=row.allocation_id,
            job_id=row.id,
            source=source,
            gpu_type=row.gpu_type,
            gpu_seconds=gpu_seconds,
            created_at=ended_at,
        )
    )
    add_decayed_usage(s, row.project_id, row.user_id, gpu_seconds, ended_at)


__all__ = ["apply_changes", "charge_job", "datetime_from", "finish_job"]
