"""Load levels for a trace: the cluster sizes at which FIFO keeps the GPUs 60/75/90% busy.

A trace has no load of its own; it gets one from the cluster it is replayed on. To compare
policies "at three loads" on traces of very different sizes, the load is named by what the
plainest policy achieves: FIFO's exact utilisation (busy GPU-seconds over GPUs x makespan).
FIFO is cheap to replay, so the sizes are found by replaying it on a geometric grid of
cluster sizes, from the smallest that fits the trace's widest job upwards until FIFO's
utilisation falls below the lowest target.

FIFO's utilisation is not monotone in the size, and not every level is reachable: head-of-
line blocking behind wide jobs, and the drain after the last arrival (when a few long jobs
run alone), cap it; on some traces it never reaches 0.9, on one of Gavel's it stays near
0.4 even at the smallest size that fits. `choose` therefore takes the grid point nearest to
each target (the larger cluster on a tie) and the caller reports the utilisation reached.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from gpucenter.sim.cluster import uniform_cluster
from gpucenter.sim.engine import RefusedJobsWarning, SimResult, simulate
from gpucenter.sim.metrics import compute_metrics
from gpucenter.sim.policies.base import SimPolicy
from gpucenter.sim.policies.fifo import FifoPolicy
from gpucenter.sim.traces.common import TraceJob

TARGETS = (0.6, 0.75, 0.9)


def replay(
    trace: Sequence[TraceJob], gpus: int, gpus_per_node: int, policy: SimPolicy
) -> SimResult:
    """`trace` on a uniform cluster of `gpus` GPUs (refusals were reported by the caller)."""
    nodes = uniform_cluster(gpus, gpus_per_node=gpus_per_node).nodes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RefusedJobsWarning)
        return simulate(trace, nodes, policy)


def fifo_curve(
    trace: Sequence[TraceJob],
    gpus_per_node: int,
    *,
    ratio: float = 1.15,
    floor: float = 0.55,
    max_points: int = 40,
) -> list[tuple[int, float]]:
    """(GPUs, FIFO utilisation) from the smallest whole-node cluster that fits the widest
    job, growing by `ratio` (at least one node) until utilisation drops below `floor`."""
    widest = max(j.gpus for j in trace)
    nodes = max(1, -(-widest // gpus_per_node))
    out: list[tuple[int, float]] = []
    while len(out) < max_points:
        res = replay(trace, nodes * gpus_per_node, gpus_per_node, FifoPolicy())
        util = float(compute_metrics(res)["utilisation_mean"])
        out.append((nodes * gpus_per_node, util))
        if util < floor:
            break
        nodes = max(nodes + 1, round(nodes * ratio))
    return out


def choose(curve: Sequence[tuple[int, float]], target: float) -> tuple[int, float]:
    """The grid point whose FIFO utilisation is nearest `target` (larger cluster on ties)."""
    return min(curve, key=lambda p: (round(abs(p[1] - target), 9), -p[0]))
