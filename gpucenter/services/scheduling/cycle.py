"""The scheduler loop's use case: apply cluster changes, run the core, start what it chose.

One pass = poll the dispatcher and record what ended (charging usage), build a snapshot from
the database, ask the pure core for decisions, persist the reasons, dispatch the starts.

With several sites, each is polled on its own and backs off on its own (`SiteHealth`): a
site that is down drops out of the snapshot, its running jobs stay as they are, and the jobs
only it could run say so. The core sees the other sites' nodes, each tagged with its site,
and places every job on the site that can start it first (it never splits a job over
sites); the job is then handed to that site's dispatcher.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Text, cast, select, update
from sqlalchemy.orm import Session

from gpucenter.core import (
    ClusterSnapshot,
    NodeGpus,
    NodeSnapshot,
    PassCadence,
    PendingJob,
    Preemption,
    RunningJob,
    Wait,
    schedule_pass,
)
from gpucenter.dispatch.base import SiteUnavailable, StateChange
from gpucenter.domain.clock import as_utc
from gpucenter.domain.ids import JobId, ProjectId, UserId
from gpucenter.domain.jobs import GpuRequest, JobState, WaitReason
from gpucenter.domain.messages import msg
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.tables import AllocationRow, JobRow, SiteRow
from gpucenter.services.awards.reports import holds as report_holds
from gpucenter.services.context import AppContext
from gpucenter.services.fairshare import load_fair_share
from gpucenter.services.programmes.awards import active_leases
from gpucenter.services.scheduling.endings import apply_changes, finish_job
from gpucenter.services.scheduling.launch import launch_requests
from gpucenter.services.scheduling.priority_writes import priority_writes
from gpucenter.services.scheduling.starts import held_back, start_job
from gpucenter.services.sessions.secret import session_key
from gpucenter.services.sites.runtime import SiteRuntime

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PassSummary:
    ended: int
    started: int
    waiting: int


def run_pass(ctx: AppContext) -> PassSummary:
    """One pass of the control loop. Safe to repeat: each step commits its own work."""
    with ctx.dispatch_lock:
        sites = ctx.site_runtimes()
        wanted = _cancel_requests(ctx)
        ended = 0
        for rt in sites:
            # Ends a failing database could not record last time come first (each is
            # reported by the site once: they must not be lost).
            changes, rt.unapplied = rt.unapplied, []
            if not rt.health.blocked(ctx.now()):
                changes.extend(_poll_site(ctx, rt, wanted, len(sites) > 1))
            if changes:
                ended += apply_changes(ctx, changes, rt.unapplied)
        usable = [rt for rt in sites if not rt.health.blocked(ctx.now())]
        _sync_accounts(ctx)
        if not usable:
            return PassSummary(ended, 0, _mark_site_unavailable(ctx, sites, None))
        started, waiting = _decide_and_start(ctx, usable)
        for rt in usable:
            if not rt.health.blocked(ctx.now()):
                rt.health.succeeded()
        down = [rt for rt in sites if rt.health.blocked(ctx.now())]
        if down:
            up_types = {n.gpu_type for rt in sites if rt not in down for n in rt.loaded.site.nodes}
            only_down = {n.gpu_type for rt in down for n in rt.loaded.site.nodes} - up_types
            _mark_site_unavailable(ctx, down, None if len(down) == len(sites) else only_down)
    return PassSummary(ended, started, waiting)


def _sync_accounts(ctx: AppContext) -> None:
    """Unix accounts for new users and members before anything starts (a multi-tenant local
    site); a failure is logged and retried next pass, never a reason to stop scheduling."""
    if ctx.account_sync is None:
        return
    try:
        ctx.account_sync()
    except Exception:
        log.exception("account provisioning failed; retrying on the next pass")


def _poll_site(
    ctx: AppContext, rt: SiteRuntime, wanted: Sequence[JobId], routed: bool
) -> Sequence[StateChange]:
    """Deliver cancels and read what ended at one site; a site that does not answer backs
    off (a dispatcher that reports unavailability instead of raising counts too)."""
    try:
        mine = rt.dispatcher.running_job_ids() if routed else frozenset(wanted)
        for job_id in wanted:
            if job_id in mine:
                rt.dispatcher.cancel(job_id)
        changes = rt.dispatcher.poll()
    except SiteUnavailable as exc:
        rt.health.failed(ctx.now(), str(exc))
        log.warning("site %s unavailable: %s", rt.name, exc)
        return []
    why = rt.dispatcher.unavailable
    if why:
        rt.health.failed(ctx.now(), why)
        log.warning("site %s unavailable: %s", rt.name, why)
    return changes


def _mark_site_unavailable(
    ctx: AppContext, down: Sequence[SiteRuntime], gpu_types: set[str] | None
) -> int:
    """Pending jobs say that they wait for the site, and until when (no job is lost): all of
    them when no site answers, else those of the GPU types only the sites that are down have."""
    if gpu_types is not None and not gpu_types:
        return 0
    detail = "; ".join(rt.health.reason(rt.name) for rt in down)
    where = [
        JobRow.state == JobState.PENDING.value,
        (JobRow.reason != WaitReason.SITE_UNAVAILABLE.value) | (JobRow.reason_detail != detail),
    ]
    if gpu_types is not None:
        where.append(JobRow.gpu_type.in_(sorted(gpu_types)))
    with ctx.fenced() as s:
        result = s.execute(
            update(JobRow)
            .where(*where)
            .values(reason=WaitReason.SITE_UNAVAILABLE.value, reason_detail=detail)
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)


def _cancel_requests(ctx: AppContext) -> list[JobId]:
    """Running jobs whose cancellation was asked for (by any server)."""
    with ctx.sessions.begin() as s:
        wanted = s.scalars(
            select(JobRow.id).where(
                JobRow.state == JobState.RUNNING.value, JobRow.cancel_requested_at.is_not(None)
            )
        ).all()
    return [JobId(job_id) for job_id in wanted]


PENDING_COLUMNS = (
    JobRow.id,
    JobRow.project_id,
    JobRow.user_id,
    JobRow.allocation_id,
    JobRow.gpu_type,
    JobRow.gpus_per_node,
    JobRow.nodes,
    JobRow.time_limit_s,
    JobRow.submitted_at,
    JobRow.qos,
    # As text: nearly every job has no dependencies ("[]"), and decoding 30,000 JSON values
    # a pass was a tenth of a pass under a submission storm; `_dependencies` decodes the rest.
    cast(JobRow.after_ok, Text).label("after_ok"),
    JobRow.reason,
    JobRow.reason_detail,
    JobRow.priority,
)


def _project_limits(s: Session, now: datetime) -> dict[ProjectId, dict[str, int]]:
    """Maximum concurrent GPUs per project and GPU type, from the awards' allocations."""
    limits: dict[ProjectId, dict[str, int]] = {}
    rows = s.execute(
        select(
            AllocationRow.project_id, AllocationRow.gpu_type, AllocationRow.max_concurrent_gpus
        ).where(
            repo.current_allocation(now),
            AllocationRow.max_concurrent_gpus.is_not(None),
            AllocationRow.gpu_type.is_not(None),
        )
    )
    for project_id, gpu_type, cap in rows:
        per_type = limits.setdefault(ProjectId(project_id), {})
        per_type[gpu_type] = per_type.get(gpu_type, 0) + int(cap)
    return limits


def _shape(
    cache: dict[tuple[str, int, int], GpuRequest], gpu_type: str, per_node: int, nodes: int
) -> GpuRequest:
    """One GpuRequest per distinct shape: thousands of pending jobs share a handful."""
    key = (gpu_type, per_node, nodes)
    found = cache.get(key)
    if found is None:
        found = cache[key] = GpuRequest(gpu_type, per_node, nodes)
    return found


# Wait details name the job a queue waits behind, so a start can reword every pending
# job's detail; rewriting 10,000 rows each pass would cost more than the pass. Details that
# only reword an unchanged reason are written for the first this-many jobs in queue order
# (those whose wait is about to end); deeper jobs keep the reason right and the wording
# of an earlier pass until they come near the front.
MAX_DETAIL_REWRITES = 500


def _decide_and_start(ctx: AppContext, usable: Sequence[SiteRuntime]) -> tuple[int, int]:
    now = ctx.now()
    held = held_back(ctx.site_runtimes(), now)
    # Budgets reserve what a job may hold at the site it goes to: its time limit as that
    # site enforces it (Slurm: whole minutes and grace). Before placement the site is not
    # known, so the most any usable site may hold it.
    enforced = _enforced_limit(usable)
    with ctx.fenced() as s:
        nodes: list[NodeSnapshot] = []
        node_site: dict[str, tuple[SiteRuntime, int]] = {}
        for rt in usable:
            site = repo.site_by_name(s, rt.name)
            if site is None:
                continue
            for n in repo.nodes_of(s, site.id):
                if n.gpu_count > 0:
                    nodes.append(NodeSnapshot(n.name, n.gpu_type, n.gpu_count, n.block, rt.name))
                    node_site[n.name] = (rt, site.id)
        if not nodes:
            return 0, 0
        running = repo.jobs_in_states(s, [JobState.RUNNING])
        rows = s.execute(
            select(*PENDING_COLUMNS)
            .where(JobRow.state == JobState.PENDING.value)
            .order_by(JobRow.id)
        ).all()
        pending = [r for r in _eligible(s, rows, now) if r.id not in held]
        if not pending:
            return 0, 0
        budgets = _budgets_left(s, running, pending)
        fair_share = load_fair_share(s, now, ctx.settings.programme_shares)
        snapshot = ClusterSnapshot(
            nodes=tuple(nodes),
            running=tuple(
                _running(r, ctx.policies.preemption_grace_s)
                for r in running
                # Jobs on a site that is down now hold GPUs the snapshot does not have.
                if r.placement and all(p["node"] in node_site for p in r.placement)
            ),
        )
        shapes: dict[tuple[str, int, int], GpuRequest] = {}
        queue = [
            PendingJob(
                job_id=JobId(r.id),
                project_id=ProjectId(r.project_id),
                request=_shape(shapes, r.gpu_type, r.gpus_per_node, r.nodes),
                time_limit_s=enforced(r.time_limit_s),
                submitted_at=as_utc(r.submitted_at).timestamp(),
                budget_gpu_seconds_left=budgets.get(r.allocation_id or -1),
                qos=r.qos,
                user_id=UserId(r.user_id),
            )
            for r in pending
        ]
        if ctx.cadence is None:
            ctx.cadence = PassCadence(ctx.policies.backfill_interval_s)
        backfill = ctx.cadence.backfill_now(now.timestamp())
        result = schedule_pass(
            snapshot,
            queue,
            now.timestamp(),
            backfill=backfill,
            policy=replace(
                ctx.policies,
                project_gpu_limits=_project_limits(s, now),
                project_holds=report_holds(s, now),
            ),
            fair_share=fair_share,
            reservations=active_leases(s, now),
        )
        _request_preemptions(ctx, s, result.preemptions, now)
        by_id = {r.id: r for r in pending}
        changes = priority_writes(
            getattr(result, "priorities", {}), {r.id: r.priority for r in pending}
        )
        detail_only = 0
        for job_id, wait in result.waits.items():
            row = by_id[int(job_id)]
            if row.reason != wait.reason.value:
                changes.setdefault(int(job_id), {}).update(
                    reason=wait.reason.value, reason_detail=wait.detail, **_coded(wait)
                )
            elif row.reason_detail != wait.detail and detail_only < MAX_DETAIL_REWRITES:
                # Same reason, new wording (the job it waits behind started, a new ETA).
                detail_only += 1
                changes.setdefault(int(job_id), {}).update(
                    reason_detail=wait.detail, **_coded(wait)
                )
        if changes:
            s.execute(update(JobRow), [{"id": k, **v} for k, v in changes.items()])
        requests = launch_requests(
            s,
            {st.job_id: st.placement for st in result.starts},
            now,
            session_key(ctx.settings) if result.starts else None,
        )
        to_launch = [
            (requests[st.job_id], st.borrowed) for st in result.starts if st.job_id in requests
        ]
        _pause_for_tests(ctx)
    started = 0
    for request, borrowed in to_launch:
        rt, site_id = node_site[request.placement[0].node]
        if rt.health.blocked(ctx.now()):
            continue  # failed earlier in this pass: its jobs stay queued
        try:
            started += start_job(
                ctx, request.for_site(rt.kind), borrowed, rt.dispatcher, site_id, rt
            )
        except SiteUnavailable as exc:
            # The site's other jobs stay queued; the next pass after the backoff tries again.
            rt.health.failed(ctx.now(), str(exc))
            log.warning("site %s unavailable: %s", rt.name, exc)
    return started, len(pending) - started


def _coded(wait: Wait) -> dict[str, Any]:
    """The wait's message code and parameters, stored beside its English detail so that
    the portal and the CLI can say it in the reader's language (see JobView)."""
    return {"reason_message": wait.message.to_json()} if wait.message is not None else {}


def _pause_for_tests(ctx: AppContext) -> None:
    """Crash tests (tests/resilience) need a server killed while a pass has decided but not
    committed: with `test_pass_pause_s` set, the pass touches `<var>/pass-paused` and then
    holds its uncommitted decisions that long. Zero (the default) costs one comparison."""
    pause = ctx.settings.test_pass_pause_s
    if pause > 0:
        (ctx.settings.var_dir / "pass-paused").touch()
        time.sleep(pause)


def _request_preemptions(
    ctx: AppContext, s: Session, preemptions: Sequence[Preemption], now: datetime
) -> None:
    """Ask the dispatcher to stop each victim; its CANCELLED report then requeues it. Only
    while this server leads (checked first: a deposed leader must not stop anything)."""
    if preemptions:
        ctx.fence.check(s)
    for p in preemptions:
        row = s.get(JobRow, int(p.job_id), with_for_update=True)
        if row is None or row.state != JobState.RUNNING.value:
            continue
        if row.preempt_requested_at is None:
            row.preempt_requested_at = now
            row.preempted_for = int(p.for_job)
            row.reason_detail = f"being preempted: {p.reason}"
            ctx.dispatcher.cancel(JobId(row.id))


def _enforced_limit(usable: Sequence[SiteRuntime]) -> Callable[[int], int]:
    """The longest time a job may hold GPUs at any of the usable sites, by its limit."""
    caps = {rt.dispatcher.capabilities for rt in usable}
    if all(c.time_limit_step_s <= 1 and c.time_limit_grace_s <= 0 for c in caps):
        return lambda limit: limit
    return lambda limit: max(c.enforced_time_limit(limit) for c in caps)


def _eligible(s: Session, pending: Sequence[Row[Any]], now: datetime) -> list[Row[Any]]:
    """Pending jobs whose after-ok dependencies have all completed.

    A job whose dependency ended any other way can never run: it is cancelled, saying why.
    The rest wait with the Dependency reason and are not shown to the core at all.
    """
    deps_of = {r.id: _dependencies(r.after_ok) for r in pending}
    wanted = sorted({d for deps in deps_of.values() for d in deps})
    states: dict[int, JobState] = {}
    if wanted:
        found = s.execute(select(JobRow.id, JobRow.state).where(JobRow.id.in_(wanted)))
        states = {job_id: JobState(state) for job_id, state in found}
    eligible: list[Row[Any]] = []
    updates: list[dict[str, Any]] = []
    for row in pending:
        deps = deps_of[row.id]
        if not deps:
            eligible.append(row)
            continue
        ended = {d: states.get(d, JobState.FAILED) for d in deps}
        broken = [d for d, st in ended.items() if st.is_terminal and st is not JobState.COMPLETED]
        waiting = [d for d, st in ended.items() if not st.is_terminal]
        if broken:
            why = msg("wait.dependency_failed", job=str(broken[0]), state=ended[broken[0]].value)
            updates.append(
                {
                    "id": row.id,
                    "state": JobState.CANCELLED.value,
                    "ended_at": now,
                    "reason": "",
                    "reason_detail": why.english(),
                    "reason_message": why.to_json(),
                }
            )
        elif waiting:
            why = msg("wait.dependency", jobs=", ".join(map(str, waiting)))
            detail = why.english()
            if row.reason != WaitReason.DEPENDENCY.value or row.reason_detail != detail:
                updates.append(
                    {
                        "id": row.id,
                        "reason": WaitReason.DEPENDENCY.value,
                        "reason_detail": detail,
                        "reason_message": why.to_json(),
                    }
                )
        else:
            eligible.append(row)
    if updates:
        s.execute(update(JobRow), updates)
    return eligible


def _dependencies(after_ok: str | None) -> list[int]:
    """The after-ok job ids from the column's JSON text."""
    if not after_ok or after_ok == "[]":
        return []
    return [int(d) for d in json.loads(after_ok) or ()]


def _running(row: JobRow, grace_s: float) -> RunningJob:
    assert row.placement is not None and row.started_at is not None
    return RunningJob(
        job_id=JobId(row.id),
        project_id=ProjectId(row.project_id),
        placement=tuple(NodeGpus(p["node"], tuple(p["gpus"])) for p in row.placement),
        started_at=as_utc(row.started_at).timestamp(),
        time_limit_s=row.reserved_s or row.time_limit_s,
        qos=row.qos,
        borrowed=bool(row.borrowed),
        requeue_at=(
            as_utc(row.preempt_requested_at).timestamp() + grace_s
            if row.preempt_requested_at is not None
            else None
        ),
    )


def _budgets_left(
    s: Session, running: Sequence[JobRow], pending: Sequence[Row[Any]]
) -> dict[int, float]:
    """GPU-seconds each allocation has left after its charges and the whole time limit of
    each of its running jobs (reserved at admission, as Slurm's AccountingStorageEnforce=safe
    does): a job starts only when the balance covers all it may use, so an allocation is
    never overspent however many of its jobs run at once. Charges stay what was used."""
    ids = sorted(
        {r.allocation_id for r in running if r.allocation_id is not None}
        | {r.allocation_id for r in pending if r.allocation_id is not None}
    )
    if not ids:
        return {}
    charged = repo.charged_gpu_seconds(s, ids)
    left: dict[int, float] = {}
    for alloc in s.scalars(select(AllocationRow).where(AllocationRow.id.in_(ids))):
        left[alloc.id] = alloc.gpu_seconds - charged.get(alloc.id, 0.0)
    for r in running:
        if r.allocation_id is not None and r.allocation_id in left:
            reserved = r.reserved_s or r.time_limit_s
            left[r.allocation_id] -= reserved * r.gpus_per_node * r.nodes
    return left


def recover_after_restart(ctx: AppContext) -> int:
    """Re-adopt jobs the database says are running but this dispatcher does not watch.

    After a restart or a failover the jobs keep running where they are; the dispatcher is
    told about them (where it can adopt) and reports their end as usual. A dispatcher that
    cannot adopt leaves them to be marked FAILED, charged up to now, so that their GPUs are
    free again. Returns how many jobs were adopted or failed.
    """
    sites = ctx.site_runtimes()
    by_node = {n.name: rt for rt in sites for n in rt.loaded.site.nodes}
    by_name = {rt.name: rt for rt in sites}
    now = ctx.now()
    handled = 0
    with ctx.fenced() as s:
        site_names = {site.id: site.name for site in s.scalars(select(SiteRow))}
        for row in repo.jobs_in_states(s, [JobState.RUNNING]):
            # Its site: where its placement is, else the site it was recorded at.
            node = (row.placement or [{}])[0].get("node", "")
            rt = by_node.get(node) or by_name.get(site_names.get(row.site_id, ""))
            if rt is None and len(sites) == 1:
                rt = sites[0]
            dispatcher = rt.dispatcher if rt is not None else None
            if dispatcher is not None and JobId(row.id) in dispatcher.running_job_ids():
                continue
            handled += 1
            if (
                dispatcher is not None
                and dispatcher.capabilities.adopts_after_restart
                and row.external_id
                and row.started_at is not None
            ):
                adopted = dispatcher.adopt(
                    JobId(row.id),
                    row.external_id,
                    as_utc(row.started_at).timestamp(),
                    row.time_limit_s,
                    row.stderr_path,
                )
                # Refused and not watched (a Slurm job without the job's marker): it ends
                # here; one that is watched anyway reports its own end at the next poll.
                if adopted or JobId(row.id) in dispatcher.running_job_ids():
                    continue
            finish_job(
                s,
                row,
                JobState.FAILED,
                now,
                None,
                "the server restarted while the job ran and could not re-adopt it",
            )
    return handled


__all__ = ["PassSummary", "recover_after_restart", "run_pass"]
