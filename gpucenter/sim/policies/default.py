"""The simulator's default policy: the core, ordering by fair share, then least requested
work first (Slurm's `PriorityFavorSmall` relative to time), with age against starvation.

Why this order: replaying the job-level traces in ../shared (Philly, Tiresias, Shockwave,
Gavel) against EASY backfill, what cuts mean completion time and queueing delay at every
load is running the jobs that asked for the least work (GPUs x time limit) first: a short
job waiting behind a long one adds the long one's run to its own completion time. Fair
share still dominates (entitlements are kept on contended multi-tenant workloads, see
`tests/sim/test_entitlements.py`), reservations for the top blocked jobs keep wide jobs
from being overtaken forever, and age lifts long jobs that have waited. Only the requested
time limit is used, never the true duration (traces without limits replay with limit =
duration, the usual assumption, stated per trace in bench/RESULTS.md).

`SMALL_WORK_WEIGHT` was chosen by `bench/policy_tune.py` on traces and seeds that
`bench/policy_matrix.py` does not score (see bench/RESULTS.md).
"""

from __future__ import annotations

from gpucenter.core import Policies, PriorityWeights
from gpucenter.core.policy import SMALL_WORK_WEIGHT

PRIORITY_RECALC_S = 300.0  # the simulator's recalculation period (Slurm: PriorityCalcPeriod)
# Usage is pushed to the scheduler at each priority recalculation. The server reads usage
# (running jobs included) at every pass; pushing it only hourly, as the simulator did, let
# a programme drift 7% off its share on contended workloads (the rank-based Fair Tree
# factor flips whole programmes, and an hour of flipped order is many jobs).
FAIR_SHARE_PERIOD_S = PRIORITY_RECALC_S


def default_policies(small_work_weight: float = SMALL_WORK_WEIGHT) -> Policies:
    """The core's policy knobs for the default: the core defaults but for the job-size
    factor, which favours small requested work with weight `small_work_weight`."""
    return Policies(
        weights=PriorityWeights(job_size=small_work_weight, favor_small=True),
        priority_recalc_s=PRIORITY_RECALC_S,
    )
