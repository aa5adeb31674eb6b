"""Policy knobs of the scheduling core, as one frozen value passed to every pass.

Everything a site may tune lives here rather than in module globals, so that a replay or a
test states exactly which policy it ran under.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from gpucenter.core.fairshare import FAIR_TREE, FairShareStrategy
from gpucenter.core.model import NORMAL, OPPORTUNISTIC
from gpucenter.domain.ids import ProjectId


@dataclass(frozen=True, slots=True)
class PriorityWeights:
    """Weights of the normalised factors, Slurm-style (`PriorityWeight*`).

    Fair share dominates by default so that, under saturation, delivered GPU-hours follow
    entitlements; age and size only break near-ties and keep big jobs from starving.

    `favor_small` turns the job-size factor around, as Slurm's `PriorityFavorSmall` with
    `PriorityFlags=SMALL_RELATIVE_TO_TIME`: it then favours jobs that ask for little work
    (GPUs x time limit, log-scaled; `priority.small_factor`), which is what cuts mean
    completion time and queueing delay (shortest expected work first, bounded by age and
    fair share). Only the requested time limit is used, never the true run time.
    """

    fair_share: float = 10_000.0
    age: float = 1_000.0
    job_size: float = 500.0
    qos: float = 2_000.0
    max_age_s: float = 7 * 24 * 3600.0
    favor_small: bool = False


SMALL_WORK_WEIGHT = 8_000.0
"""The job-size weight of the centre's default policy, with `favor_small`: chosen by
bench/policy_tune.py on traces and seeds bench/policy_matrix.py does not score."""

CENTRE_WEIGHTS = PriorityWeights(job_size=SMALL_WORK_WEIGHT, favor_small=True)
"""The weights the server runs with and the simulator's default policy replays: fair share
first, then least requested work, with age against starvation (see bench/RESULTS.md, issue 19,
for how it compares with EASY backfill on real traces)."""


DEFAULT_QOS_FACTORS: Mapping[str, float] = MappingProxyType(
    {"high": 1.0, NORMAL: 0.5, "low": 0.2, OPPORTUNISTIC: 0.0}
)


@dataclass(frozen=True, slots=True)
class Policies:
    """How a pass orders, limits, backfills and preempts.

    `max_reservations` is the backfill depth: how many of the top blocked jobs get a planned
    start that lower jobs must not delay (every job is still considered for starting now).
    `entitlements` gives, per programme (top-level account of the share tree) and GPU type, the
    GPUs it owns; a programme running beyond them borrows, preemptibly. Empty: nobody borrows.
    `project_gpu_limits` caps concurrent GPUs per project and type. `project_holds` names
    projects none of whose pending jobs may start, each with the sentence its jobs show
    (a programme holding new jobs while a report is overdue). `fair_share` turns the share
    tree and usage into factors (Fair Tree unless a centre chooses otherwise).
    """

    weights: PriorityWeights = field(default_factory=PriorityWeights)
    qos_factors: Mapping[str, float] = field(default_factory=lambda: DEFAULT_QOS_FACTORS)
    max_reservations: int = 16
    max_preemption_attempts: int = 16
    preemption_grace_s: float = 300.0
    project_gpu_limits: Mapping[ProjectId, Mapping[str, int]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    project_holds: Mapping[ProjectId, str] = field(default_factory=lambda: MappingProxyType({}))
    entitlements: Mapping[str, Mapping[str, int]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    priority_recalc_s: float = 60.0
    # How many jobs a quick pass (`Scheduler.run_pass(backfill=False)`) looks at, as
    # Slurm's `default_queue_depth` bounds its main scheduler.
    quick_depth: int = 100
    fair_share: FairShareStrategy = FAIR_TREE
    # Seconds between backfill passes, quick passes in between (Slurm's `bf_interval`);
    # 0: every pass is a backfill pass. The server loop and the simulator both decide by
    # it (`cadence.PassCadence`), so the planner replays the centre's own cadence.
    backfill_interval_s: float = 0.0


DEFAULT_POLICIES = Policies()
