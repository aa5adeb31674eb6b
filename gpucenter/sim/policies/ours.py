"""Our policy: the real scheduling core (`gpucenter.core.Scheduler`) with fair share.

The share tree is the server's (`gpucenter.core.share_tree`): root -> applicant type
(programme, with the policy's entitled share) -> tenant (an organisation of one project).
Usage is GPU-seconds, decayed with the core's half-life and pushed to the scheduler every
`fair_share_period_s` of simulated time, as the accounting side does in production. A
reservation for an applicant type becomes a core `AdvanceReservation` over whole blocks
(`choose_nodes`), exactly what a programme manager would configure.
"""

from __future__ import annotations

from collections.abc import Sequence

from gpucenter.core import (
    AdvanceReservation,
    FairShare,
    NodeSnapshot,
    PassCadence,
    PendingJob,
    Policies,
    Scheduler,
    ShareAccount,
    choose_nodes,
    decay_all,
)
from gpucenter.core.share_tree import ShareHolder, build_share_tree
from gpucenter.domain.clock import Instant
from gpucenter.domain.ids import JobId, ProjectId
from gpucenter.sim.policies.base import PassOutcome, Workload

FOREVER = 1e15


class CorePolicy:
    """Drives `gpucenter.core.Scheduler` incrementally: submit / finish deltas, one pass per
    simulated instant at which something changed.

    Which passes are backfill passes (the whole queue, planned starts, preemption) and
    which quick ones (the top of the queue in strict priority order) is decided by the
    core's `PassCadence`, as in the server loop: a backfill pass at most every
    `backfill_interval_s` of simulated time (default: the policy's, 0 = every pass, what the
    server does), quick passes at the other instants. When a quick pass left jobs waiting,
    the policy asks for a backfill pass at the end of the interval even if nothing else
    happens then.
    """

    name = "ours"

    def __init__(
        self,
        policy: Policies | None = None,
        fair_share_period_s: float = 3600.0,
        backfill_interval_s: float | None = None,
    ) -> None:
        self.policy = policy if policy is not None else Policies(priority_recalc_s=300.0)
        self.period = fair_share_period_s
        self.cadence = PassCadence(
            self.policy.backfill_interval_s if backfill_interval_s is None else backfill_interval_s
        )
        self.sched: Scheduler | None = None
        self.root: ShareAccount | None = None
        self.usage: dict[ProjectId, float] = {}
        self.started: dict[JobId, tuple[ProjectId, int, Instant]] = {}
        self.pending_project: dict[JobId, tuple[ProjectId, int]] = {}
        self.last_decay = 0.0

    def prepare(self, nodes: Sequence[NodeSnapshot], workload: Workload) -> None:
        by_type: dict[str, list[ProjectId]] = {}
        for p, kind in sorted(workload.applicant_of.items()):
            by_type.setdefault(kind, []).append(p)
        # The server's tree (centre -> programme -> organisation -> project), built by the
        # same function: an applicant type is a programme with the policy's entitled share,
        # each tenant an organisation of one project.
        shares = workload.shares
        even = 1.0 / max(1, len(by_type))
        self.root = build_share_tree(
            (
                ShareHolder(kind, f"{kind}/{p}", f"{kind}/{p}", p, 1.0)
                for kind, projects in sorted(by_type.items())
                for p in projects
            ),
            root="root",
            programme_shares={k: shares.get(k, even) if shares else 1.0 for k in by_type},
        )
        reservations: list[AdvanceReservation] = []
        taken: list[str] = []
        for kind, gpus in sorted(workload.reserve.items()):
            members = frozenset(by_type.get(kind, ()))
            gpu_type = _largest_type(nodes)
            chosen = choose_nodes(nodes, gpu_type, gpus, taken)
            taken.extend(chosen)
            reservations.append(
                AdvanceReservation(f"reserve-{kind}", chosen, members, 0.0, FOREVER)
            )
        self.sched = Scheduler(
            nodes,
            policy=self.policy,
            fair_share=FairShare(self.root, {}),
            reservations=reservations,
        )

    def submit(self, job: PendingJob) -> None:
        assert self.sched is not None
        self.pending_project[job.job_id] = (job.project_id, job.request.total_gpus)
        self.sched.submit(job)

    def finish(self, job_id: JobId, now: Instant) -> None:
        assert self.sched is not None
        self.sched.finish(job_id)
        got = self.started.pop(job_id, None)
        if got is not None:
            project, gpus, since = got
            self.usage[project] = self.usage.get(project, 0.0) + gpus * (now - since)

    def run_pass(self, now: Instant) -> PassOutcome:
        assert self.sched is not None and self.root is not None
        if now - self.last_decay >= self.period:
            self._refresh_fair_share(now)
        backfill = self.cadence.backfill_now(now)
        result = self.sched.run_pass(now, backfill=backfill)
        for s in result.starts:
            project, gpus = self.pending_project.pop(s.job_id)
            self.started[s.job_id] = (project, gpus, now)
        self.cadence.after_pass(backfill, bool(self.pending_project))
        return PassOutcome(result.starts)

    def _refresh_fair_share(self, now: Instant) -> None:
        assert self.sched is not None and self.root is not None
        usage = decay_all(self.usage, now - self.last_decay)
        # Running jobs count up to now, so a long job's tenant is not treated as idle.
        charged = dict(usage)
        for project, gpus, since in self.started.values():
            charged[project] = charged.get(project, 0.0) + gpus * (now - since)
        self.usage = usage
        self.last_decay = now
        self.sched.set_fair_share(FairShare(self.root, charged))

    def next_wakeup(self, now: Instant) -> Instant | None:
        return self.cadence.wake_at()


def _largest_type(nodes: Sequence[NodeSnapshot]) -> str:
    count: dict[str, int] = {}
    for n in nodes:
        count[n.gpu_type] = count.get(n.gpu_type, 0) + n.gpu_count
    return max(sorted(count), key=lambda t: count[t])
