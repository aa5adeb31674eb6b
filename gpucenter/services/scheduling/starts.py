"""Starting one job the core chose: lock its row, check it and the epoch, hand it to the site.

The order is what makes a start happen once. The job's row is locked (``SELECT ... FOR
UPDATE`` on PostgreSQL) and its state checked *before* the site sees anything, in a
transaction that is fenced (`AppContext.fenced`): a job another leader started meanwhile,
or one cancelled since the pass decided, is left alone, and a server that no longer leads
never reaches the site. The epoch is checked again before the site is called (the lock it
takes lasts until COMMIT, so a server taking over waits for this start to be recorded).

If the server dies or is deposed between the site accepting the job and the commit, the
job stays PENDING in the database while the site has it: the next start of the same run
finds it by its marker (the local site's run marker file, Slurm's ``--comment``) and adopts
it instead of starting it again. On Slurm the job is also submitted *held* and released
only once its start is recorded (see `gpucenter.dispatch.slurm.dispatcher`).

The database may drop the connection, or lose the answer to a COMMIT, just after the site
took the job: the start is then recorded again in a fresh transaction (finding it already
recorded when only the answer was lost), and if even that fails the server remembers it
(`SiteRuntime.unrecorded`) and records it at the next attempt instead of handing the job over
a second time.

A site that cannot run the job *yet* (`SiteNotReady`: its account is not synced, its owner
not provisioned) leaves it queued with the reason, asks for the site's sync, and holds the
job back from the next passes for `NOT_READY_RETRY_S`.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import object_session

from gpucenter.dispatch.base import (
    Dispatcher,
    DispatchError,
    Launched,
    LaunchRequest,
    SiteNotReady,
    SiteUnavailable,
)
from gpucenter.domain.jobs import JobState, WaitReason, check_transition
from gpucenter.persistence.tables import JobRow, JobRunRow
from gpucenter.services.context import AppContext
from gpucenter.services.periodic import site_sync_task
from gpucenter.services.scheduling.endings import datetime_from
from gpucenter.services.sites.runtime import SiteRuntime

__all__ = ["NOT_READY_RETRY_S", "held_back", "start_job"]

log = logging.getLogger(__name__)
NOT_READY_RETRY_S = 15.0
RECORD_TRIES = 3


def held_back(runtimes: list[SiteRuntime], now: datetime) -> set[int]:
    """Jobs a site said it cannot run yet, until their retry time (expired ones dropped)."""
    out: set[int] = set()
    for rt in runtimes:
        for job_id, until in list(rt.not_ready.items()):
            if until <= now:
                del rt.not_ready[job_id]
            else:
                out.add(job_id)
    return out


def start_job(
    ctx: AppContext,
    request: LaunchRequest,
    borrowed: bool = False,
    dispatcher: Dispatcher | None = None,
    site_id: int | None = None,
    runtime: SiteRuntime | None = None,
) -> int:
    """Start the job of `request` if it is still the pending run the pass saw; 1 if it was
    handed to the site, else 0. SiteUnavailable propagates (the site backs off), and so
    does Deposed (this server no longer leads: nothing of it was written)."""
    dispatcher = dispatcher or ctx.dispatcher
    unrecorded = runtime.unrecorded if runtime is not None else {}
    launched: Launched | None = None
    try:
        with ctx.fenced() as s:
            row = s.get(JobRow, int(request.job_id), with_for_update=True)
            if not _still_pending(row, request):
                return 0  # changed since the pass decided: started elsewhere, cancelled...
            assert row is not None
            ctx.fence.check(s)  # still the leader: only now may the site see the job
            known = unrecorded.get(row.id)
            if known is not None and known[0] == request.run:
                launched = known[1]  # handed over before, its start not recorded: record it
            else:
                try:
                    launched = dispatcher.submit(request)
                except SiteUnavailable:
                    raise
                except SiteNotReady as exc:
                    _not_ready(ctx, row, runtime, str(exc))
                    return 0
                except DispatchError as exc:
                    _could_not_start(ctx, row, str(exc))
                    return 0
                except Exception as exc:
                    # Defence in depth: whatever a job carries that its dispatcher chokes on
                    # (a NUL byte once raised ValueError here and failed every pass, for
                    # everybody), it fails alone, saying why to its owner, and the pass goes
                    # on with the next job.
                    log.exception("job %s could not be launched", request.job_id)
                    _could_not_start(ctx, row, f"internal error ({exc.__class__.__name__}: {exc})")
                    return 0
            _record(row, request, launched, borrowed, dispatcher, site_id)
    except DBAPIError:
        if launched is None:
            raise
        # The site has the job; the database lost the transaction that records it, or only
        # its answer. Record it now (or find it recorded); if that fails too, remember it, so
        # that the next start of this run records it rather than handing it over again.
        unrecorded[int(request.job_id)] = (request.run, launched)
        _record_again(ctx, request, launched, borrowed, dispatcher, site_id)
    unrecorded.pop(int(request.job_id), None)
    return 1


def _still_pending(row: JobRow | None, request: LaunchRequest) -> bool:
    return (
        row is not None
        and row.state == JobState.PENDING.value
        and (row.runs or 0) + 1 == request.run
        and row.cancel_requested_at is None
    )


def _record(
    row: JobRow,
    request: LaunchRequest,
    launched: Launched,
    borrowed: bool,
    dispatcher: Dispatcher,
    site_id: int | None,
) -> None:
    check_transition(JobState(row.state), JobState.RUNNING)
    row.state = JobState.RUNNING.value
    row.started_at = datetime_from(launched.started_at)
    row.external_id = launched.external_id
    row.stdout_path = launched.stdout_path
    row.stderr_path = launched.stderr_path
    row.placement = [{"node": p.node, "gpus": list(p.gpus)} for p in request.placement]
    row.runs = (row.runs or 0) + 1
    row.borrowed = borrowed
    row.reason = ""
    row.reason_detail = ""
    row.reserved_s = dispatcher.capabilities.enforced_time_limit(row.time_limit_s)
    if site_id is not None:
        row.site_id = site_id  # the site the job was brokered to
    session = object_session(row)
    assert session is not None  # a row the caller locked in its transaction
    # A new row: each start increments `runs`, and a start is recorded once (the retry in
    # `_record_again` records only a run whose first record did not commit).
    session.add(
        JobRunRow(
            job_id=row.id,
            run=row.runs,
            site_id=row.site_id,
            external_id=launched.external_id,
            started_at=row.started_at,
        )
    )


def _record_again(
    ctx: AppContext,
    request: LaunchRequest,
    launched: Launched,
    borrowed: bool,
    dispatcher: Dispatcher,
    site_id: int | None,
) -> None:
    """After a commit whose outcome is unknown: a few tries in fresh transactions."""
    for attempt in range(RECORD_TRIES):
        try:
            with ctx.fenced() as s:
                row = s.get(JobRow, int(request.job_id), with_for_update=True)
                if _still_pending(row, request):
                    assert row is not None
                    _record(row, request, launched, borrowed, dispatcher, site_id)
                elif row is None or row.external_id != launched.external_id:
                    log.warning("job %s changed while its start was recorded", request.job_id)
            return
        except DBAPIError:
            if attempt == RECORD_TRIES - 1:
                raise
            log.warning("recording the start of job %s failed; trying again", request.job_id)
            time.sleep(0.2 * (attempt + 1))


def _could_not_start(ctx: AppContext, row: JobRow, why: str) -> None:
    """The job ends FAILED with the reason shown to its owner (its `reason_detail`)."""
    row.state = JobState.FAILED.value
    row.ended_at = ctx.now()
    row.reason = ""
    row.reason_detail = f"could not start: {why}"[:2000]


def _not_ready(ctx: AppContext, row: JobRow, runtime: SiteRuntime | None, why: str) -> None:
    site = runtime.name if runtime is not None else ctx.site.site.name
    row.reason = WaitReason.SITE_NOT_READY.value
    row.reason_detail = (
        f"site {site!r} cannot run it yet: {why}; its sync has been asked for and the job "
        f"is tried again in {NOT_READY_RETRY_S:.0f} s"
    )
    if runtime is not None:
        runtime.not_ready[row.id] = ctx.now() + timedelta(seconds=NOT_READY_RETRY_S)
    ctx.want_task(site_sync_task(site))
    log.info("job %s waits for site %s: %s", row.id, site, why)
