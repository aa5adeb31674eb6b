"""What `policy_matrix.py` and `policy_tune.py` share: trace sets, load levels, one case.

Trace sets name files under the shared trace folder (``$GPUCENTER_TRACES``, else
``../shared/traces`` next to the repository, see `traces_dir`). Every trace is replayed as
ONE tenant: none of them carries allocations or entitlements (Philly's virtual-cluster
column and the model names of Gavel/Tiresias/Shockwave are not shares), so the matrix
measures scheduling quality; entitlements are measured on the contended multi-tenant
workload instead (`entitlements.py`). None gives a requested time limit either: the
scheduler is told each job's duration as its time limit, the usual trace-replay
assumption, and the same for every policy.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpucenter.core import Policies, PriorityWeights  # noqa: E402
from gpucenter.sim.calibrate import TARGETS, choose, fifo_curve, replay  # noqa: E402
from gpucenter.sim.cluster import uniform_cluster  # noqa: E402
from gpucenter.sim.engine import refusals  # noqa: E402
from gpucenter.sim.metrics import compute_metrics, work_not_conserved  # noqa: E402
from gpucenter.sim.policies import (  # noqa: E402
    CorePolicy,
    SimPolicy,
    default_policies,
    make_policy,
)
from gpucenter.sim.traces import (  # noqa: E402
    TraceJob,
    gavel_throughputs,
    load_gavel,
    load_philly,
    load_tiresias,
)

Loader = Callable[[Path], tuple[TraceJob, ...]]


def traces_dir() -> Path:
    """$GPUCENTER_TRACES, else ../shared/traces beside the checkout (or beside the folder of
    worktrees the checkout is in)."""
    env = os.environ.get("GPUCENTER_TRACES")
    if env:
        return Path(env)
    near = [up / "shared" / "traces" for up in (ROOT.parent, ROOT.parent.parent)]
    return next((p for p in near if p.is_dir()), near[0])


def one_tenant(jobs: Sequence[TraceJob]) -> tuple[TraceJob, ...]:
    return tuple(dataclasses.replace(j, tenant="default") for j in jobs)


def philly(first: int, count: int) -> Loader:
    """`count` jobs of the Philly extract from the `first` (by submission time)."""
    return lambda d: load_philly(d / "philly-pollux" / "philly.csv")[first : first + count]


def gavel(seed: int, vc: str) -> Loader:
    """One virtual cluster's trace of Gavel's Philly-derived set; durations are total steps
    over the job type's isolated V100 throughput (Gavel's own oracle)."""

    def load(d: Path) -> tuple[TraceJob, ...]:
        rates = gavel_throughputs(d / "philly-gavel" / "simulation_throughputs.json")
        return load_gavel(d / "philly-gavel" / "msr" / f"seed={seed}" / f"{vc}.trace", rates)

    return load


def shockwave(prefix: str) -> Loader:
    def load(d: Path) -> tuple[TraceJob, ...]:
        (path,) = sorted((d / "shockwave" / "traces").glob(f"{prefix}*.trace"))
        return load_gavel(path)

    return load


def tiresias(d: Path) -> tuple[TraceJob, ...]:
    return load_tiresias(d / "tiresias" / "60_job.csv")


# name -> (loader, GPUs per node). Philly's and Gavel's clusters have 8-GPU nodes; the
# Tiresias testbed (n32g4) and Shockwave's TACC testbed have 4-GPU nodes.
SCORED: dict[str, tuple[Loader, int]] = {
    "philly": (philly(0, 8000), 8),
    "tiresias-60": (tiresias, 4),
    "shockwave-120": (shockwave("120_"), 4),
    "shockwave-220": (shockwave("220_"), 4),
    "shockwave-460": (shockwave("460_"), 4),
    "shockwave-900a": (shockwave("900_0.2_5_100_"), 4),
    "shockwave-900b": (shockwave("900_0.2_5_1000_"), 4),
    "gavel-11cb48": (gavel(0, "11cb48"), 8),
    "gavel-6214e9": (gavel(0, "6214e9"), 8),
    "gavel-6c71a0": (gavel(0, "6c71a0"), 8),
    "gavel-b436b2": (gavel(0, "b436b2"), 8),
    "gavel-ee9e8c": (gavel(0, "ee9e8c"), 8),
}

# For choosing weights: other virtual clusters of another Gavel seed, and a later Philly
# stretch. Nothing here is in SCORED.
TUNING: dict[str, tuple[Loader, int]] = {
    "philly-50000": (philly(50_000, 4000), 8),
    "gavel-s1-0e4a51": (gavel(1, "0e4a51"), 8),
    "gavel-s1-103959": (gavel(1, "103959"), 8),
    "gavel-s1-7f04ca": (gavel(1, "7f04ca"), 8),
    "gavel-s1-e13805": (gavel(1, "e13805"), 8),
}


def load_levels(
    jobs: Sequence[TraceJob], gpn: int, targets: Sequence[float] = TARGETS
) -> list[tuple[float, int, float]]:
    """(target, GPUs, FIFO utilisation reached) per target load."""
    curve = fifo_curve(jobs, gpn)
    return [(t, *choose(curve, t)) for t in targets]


def run_one(jobs: Sequence[TraceJob], gpus: int, gpn: int, policy: SimPolicy) -> dict[str, Any]:
    """One replay's figures, and whether every job's work was conserved."""
    t0 = time.perf_counter()
    res = replay(jobs, gpus, gpn, policy)
    m = compute_metrics(res)
    bad = work_not_conserved(res)
    return {
        "mean_jct_h": m["jct_h"]["all"]["mean"],
        "mean_wait_h": m["wait_h"]["all"]["mean"],
        "p99_wait_h": m["wait_h"]["all"]["p99"],
        "max_wait_h": m["wait_h"]["all"]["max"],
        "utilisation": m["utilisation_mean"],
        "fragmentation": m["fragmentation_mean"],
        "preemptions": m["preemptions"],
        "unfinished": m["unfinished"],
        "work_not_conserved": len(bad),
        "wall_s": round(time.perf_counter() - t0, 2),
    }


def ratio(a: float, b: float) -> float | None:
    """a / b; None when b is 0 (then a figure of 0 is a tie, reported as 1.0)."""
    if b > 0:
        return a / b
    return 1.0 if a == 0 else None


def policy(name: str) -> SimPolicy:
    """A baseline or the default by name, or one of the ablation variants below."""
    variant = VARIANTS.get(name)
    return variant() if variant is not None else make_policy(name)


# Ablations (what each idea is worth): the core as it was before issue 19, and the default
# with one idea taken out at a time. Not part of the acceptance matrix.
VARIANTS: dict[str, Callable[[], SimPolicy]] = {
    # Core defaults (size factor favours big jobs), hourly usage, backfill every 30 s.
    "before": lambda: CorePolicy(Policies(priority_recalc_s=300.0), backfill_interval_s=30.0),
    # ... without the size factor at all (what the issue found helped on two clusters).
    "no-size": lambda: CorePolicy(
        Policies(weights=PriorityWeights(job_size=0.0), priority_recalc_s=300.0),
        backfill_interval_s=30.0,
    ),
    # The default, but backfilling every 30 s with quick passes between (Slurm's cadence).
    "default-bf30": lambda: make_policy("ours", backfill_interval_s=30.0),
    # The default with usage pushed hourly (as before) instead of every 300 s.
    "default-fs3600": lambda: CorePolicy(
        default_policies(), fair_share_period_s=3600.0, backfill_interval_s=None
    ),
}


def refused_jobs(jobs: Sequence[TraceJob], gpus: int, gpn: int) -> list[str]:
    return [r for _, r in refusals(jobs, uniform_cluster(gpus, gpus_per_node=gpn).nodes())]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def finite(x: float) -> float | None:
    return x if math.isfinite(x) else None
