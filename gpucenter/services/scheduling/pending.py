"""Why is my job pending, answered: one plain sentence, where it stands in its queue, when
it is expected to start, and what would start it sooner.

Nothing here guesses. The reason and the expected start are what the last scheduling pass
decided (`core.model.Wait` and the backfill plan's `PlannedStart`, stored with the job as a
message). "What would start it sooner" asks the same pure core: a what-if pass over the
cluster as it is now, with the jobs ahead of this one and a changed copy of it (fewer GPUs,
another GPU type, a shorter time limit); a change is suggested only if that pass starts the
copy at once. The passes are throwaway: nothing is written and nothing is dispatched.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from gpucenter.auth.permissions import Caller, can_view_job
from gpucenter.core import (
    AdvanceReservation,
    ClusterSnapshot,
    FairShare,
    NodeSnapshot,
    PendingJob,
    Policies,
    schedule_pass,
)
from gpucenter.domain.clock import as_utc
from gpucenter.domain.errors import NotFound
from gpucenter.domain.ids import JobId, ProjectId, UserId
from gpucenter.domain.jobs import GpuRequest, JobState, WaitReason
from gpucenter.domain.messages import At, Message, msg
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.tables import JobRow, SiteRow
from gpucenter.services.context import AppContext
from gpucenter.services.fairshare import load_fair_share
from gpucenter.services.jobs.views import reason_message_of
from gpucenter.services.programmes.awards import active_leases
from gpucenter.services.scheduling.cycle import _budgets_left, _project_limits, _running

# The what-if passes see at most this many jobs ahead of the one asked about (by stored
# priority): enough for any queue a person reads about, and a bounded cost per page view.
MAX_AHEAD = 2000
_SHORTER_LIMITS_S = (8 * 3600, 4 * 3600, 2 * 3600, 3600, 1800, 900, 600)

_SENTENCES = {
    WaitReason.RESOURCES: "pending.sentence.resources",
    WaitReason.PRIORITY: "pending.sentence.priority",
    WaitReason.RESERVATION: "pending.sentence.reservation",
    WaitReason.ALLOCATION_EXHAUSTED: "pending.sentence.allocation",
    WaitReason.QUOTA_LIMIT: "pending.sentence.quota",
    WaitReason.TOPOLOGY: "pending.sentence.topology",
    WaitReason.DEPENDENCY: "pending.sentence.dependency",
    WaitReason.SITE_UNAVAILABLE: "pending.sentence.site",
    WaitReason.NEW: "pending.sentence.new",
    WaitReason.SITE_NOT_READY: "pending.sentence.site_not_ready",
    WaitReason.HELD: "pending.sentence.held",
}


@dataclass(frozen=True, slots=True)
class Suggestion:
    """One change that would let the job start now; `kind` is gpus, gpu_type, time_limit
    or top_up, `value` the changed setting (None for top_up)."""

    kind: str
    value: int | str | None
    message: Message


@dataclass(frozen=True, slots=True)
class PendingExplanation:
    """Everything a member needs to understand one pending job's wait."""

    job_id: int
    reason: str
    sentence: Message
    detail: Message | None  # the scheduler's own sentence, when it was stored as a message
    position: int  # 1-based, among pending jobs of the same GPU type in priority order
    waiting: int  # pending jobs of that GPU type
    gpu_type: str
    expected_start: datetime | None
    sooner: tuple[Suggestion, ...]

    @property
    def position_message(self) -> Message:
        return msg(
            "pending.position",
            position=self.position,
            total=self.waiting,
            gpu_type=self.gpu_type,
        )

    @property
    def start_message(self) -> Message:
        if self.expected_start is None:
            return msg("pending.no_estimate")
        return msg("pending.expected", start=At(self.expected_start.timestamp()))


def explain_pending(ctx: AppContext, caller: Caller, job_id: int) -> PendingExplanation | None:
    """The explanation for a pending job the caller may see; None once it is not pending."""
    with ctx.sessions.begin() as s:
        row = s.get(JobRow, job_id)
        if row is None or not can_view_job(caller, row.user_id, row.project_id):
            raise NotFound("job", job_id)
        if row.state != JobState.PENDING.value:
            return None
        reason = WaitReason(row.reason) if row.reason in WaitReason.__members__.values() else None
        reason = reason or WaitReason.NEW
        detail = reason_message_of(row.reason_message, row.reason_detail)
        gpu_type = row.gpu_type
        gpus = row.gpus_per_node * row.nodes
        sentence = msg(_SENTENCES[reason], gpu_type=gpu_type, gpus=gpus)
        position, waiting = _position(s, row)
        expected = _expected_start(detail)
        sooner = tuple(_sooner(ctx, s, row, reason))
    return PendingExplanation(
        job_id, reason.value, sentence, detail, position, waiting, gpu_type, expected, sooner
    )


def _position(s: Session, row: JobRow) -> tuple[int, int]:
    """Where the job stands among pending jobs of its GPU type: by the priority the last
    pass gave them (higher first), then by id (older first), as the core orders ties."""
    same = and_(JobRow.state == JobState.PENDING.value, JobRow.gpu_type == row.gpu_type)
    total = int(s.scalar(select(func.count()).select_from(JobRow).where(same)) or 0)
    mine = row.priority
    if mine is None:
        ahead_rule = or_(JobRow.priority.is_not(None), JobRow.id < row.id)
    else:
        ahead_rule = or_(JobRow.priority > mine, and_(JobRow.priority == mine, JobRow.id < row.id))
    ahead = int(s.scalar(select(func.count()).select_from(JobRow).where(same, ahead_rule)) or 0)
    return ahead + 1, max(total, ahead + 1)


def _expected_start(detail: Message | None) -> datetime | None:
    """The start the backfill plan promised (the `start` of a planned wait), if any."""
    if detail is None or detail.code != "wait.planned":
        return None
    start = detail.values.get("start")
    return datetime.fromtimestamp(start.t, tz=UTC) if isinstance(start, At) else None


def _sooner(ctx: AppContext, s: Session, row: JobRow, reason: WaitReason) -> list[Suggestion]:
    if reason is WaitReason.DEPENDENCY:
        return [Suggestion("dependency", None, msg("pending.wait_dependency"))]
    if reason is WaitReason.SITE_UNAVAILABLE:
        return []
    world = _World.load(ctx, s, row)
    if world is None:
        return []
    found: list[Suggestion] = []
    if row.gpus_per_node > 1:
        for g in _fewer(row.gpus_per_node):
            if world.starts(gpus_per_node=g):
                found.append(Suggestion("gpus", g, msg("pending.fewer_gpus", gpus=g)))
                break
    for gpu_type in world.other_types(row.gpu_type, row.gpus_per_node):
        if world.starts(gpu_type=gpu_type):
            found.append(
                Suggestion("gpu_type", gpu_type, msg("pending.other_type", gpu_type=gpu_type))
            )
    for limit in (t for t in _SHORTER_LIMITS_S if t < row.time_limit_s):
        if world.starts(time_limit_s=limit):
            said = (
                msg("pending.shorter_limit_h", hours=limit // 3600)
                if limit % 3600 == 0
                else msg("pending.shorter_limit_m", minutes=limit // 60)
            )
            found.append(Suggestion("time_limit", limit, said))
            break
    if reason is WaitReason.ALLOCATION_EXHAUSTED:
        found.append(Suggestion("top_up", None, msg("pending.top_up")))
    return found


def _fewer(gpus: int) -> list[int]:
    """GPU counts to try, largest first: halving, then the counts in between for small jobs."""
    tried = sorted({g for g in range(1, gpus) if gpus <= 8 or g & (g - 1) == 0}, reverse=True)
    return tried[:4]


@dataclass
class _World:
    """The inputs of a scheduling pass as they are now, with the asked-about job taken out."""

    snapshot: ClusterSnapshot
    ahead: list[PendingJob]
    job: PendingJob
    now: datetime
    policy: Policies
    fair_share: FairShare
    reservations: list[AdvanceReservation]

    @classmethod
    def load(cls, ctx: AppContext, s: Session, row: JobRow) -> _World | None:
        now = ctx.now()
        # The nodes of the sites this server schedules onto, as the pass does: a site known
        # to the database only (another server's, or the demo's history) is no suggestion.
        served = {rt.name for rt in ctx.site_runtimes()}
        nodes = [
            NodeSnapshot(n.name, n.gpu_type, n.gpu_count, n.block, site.name)
            for site in s.scalars(select(SiteRow).order_by(SiteRow.id))
            if site.name in served
            for n in repo.nodes_of(s, site.id)
            if n.gpu_count > 0
        ]
        if not nodes:
            return None
        known = {n.name for n in nodes}
        running = repo.jobs_in_states(s, [JobState.RUNNING])
        grace = ctx.policies.preemption_grace_s
        others = list(
            s.scalars(
                select(JobRow)
                .where(JobRow.state == JobState.PENDING.value, JobRow.id != row.id)
                .order_by(JobRow.priority.desc().nulls_last(), JobRow.id)
                .limit(MAX_AHEAD)
            )
        )
        # The rows carry what _budgets_left reads of its pending rows (allocation_id).
        waiting: list[Any] = [*others, row]
        budgets = _budgets_left(s, running, waiting)
        snapshot = ClusterSnapshot(
            tuple(nodes),
            tuple(
                _running(r, grace)
                for r in running
                if r.placement and all(p["node"] in known for p in r.placement)
            ),
        )
        # Lower-priority jobs are in the queue too: the core, not the stored priority, decides
        # who goes first. Jobs still waiting for dependencies are not shown to the core.
        ahead = [_pending(r, budgets) for r in others if not r.after_ok]
        return cls(
            snapshot,
            ahead,
            _pending(row, budgets),
            now,
            replace(ctx.policies, project_gpu_limits=_project_limits(s, now)),
            load_fair_share(s, now, ctx.settings.programme_shares),
            active_leases(s, now),
        )

    def other_types(self, gpu_type: str, gpus_per_node: int) -> list[str]:
        return sorted(
            {
                n.gpu_type
                for n in self.snapshot.nodes
                if n.gpu_type != gpu_type and n.gpu_count >= gpus_per_node
            }
        )

    def starts(
        self,
        *,
        gpus_per_node: int | None = None,
        gpu_type: str | None = None,
        time_limit_s: int | None = None,
    ) -> bool:
        """Would the core start the job now, changed like this, behind the jobs ahead?"""
        req = self.job.request
        changed = replace(
            self.job,
            request=GpuRequest(
                gpu_type or req.gpu_type, gpus_per_node or req.gpus_per_node, req.nodes
            ),
            time_limit_s=time_limit_s or self.job.time_limit_s,
        )
        result = schedule_pass(
            self.snapshot,
            [*self.ahead, changed],
            self.now.timestamp(),
            policy=self.policy,
            fair_share=self.fair_share,
            reservations=self.reservations,
        )
        return any(st.job_id == changed.job_id for st in result.starts)


def _pending(row: JobRow, budgets: dict[int, float]) -> PendingJob:
    return PendingJob(
        job_id=JobId(row.id),
        project_id=ProjectId(row.project_id),
        request=GpuRequest(row.gpu_type, row.gpus_per_node, row.nodes),
        time_limit_s=row.time_limit_s,
        submitted_at=as_utc(row.submitted_at).timestamp(),
        budget_gpu_seconds_left=budgets.get(row.allocation_id or -1),
        qos=row.qos,
        user_id=UserId(row.user_id),
    )


__all__ = ["PendingExplanation", "Suggestion", "explain_pending"]
