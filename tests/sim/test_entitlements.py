"""Entitlements hold under the default policy on a contended multi-tenant workload.

Three programmes entitled 50/30/20, every one submitting more than its share; the smallest
submits the most short, small jobs, so a scheduler that favoured short work without fair
share would hand it far more than 20% (EASY, which ignores shares, does). Delivered shares
are measured while all three still submit (`metrics._shares_arriving`).
"""

from __future__ import annotations

from gpucenter.sim.cluster import uniform_cluster
from gpucenter.sim.engine import simulate
from gpucenter.sim.metrics import compute_metrics
from gpucenter.sim.policies import make_policy
from gpucenter.sim.traces.synthetic import contended_trace

GPUS = 64


def test_default_delivers_entitled_shares_within_five_percent() -> None:
    jobs, shares = contended_trace(2000, GPUS, seed=1)
    assert shares == {"institute": 0.5, "university": 0.3, "startup": 0.2}
    nodes = uniform_cluster(GPUS).nodes()
    ours = compute_metrics(simulate(jobs, nodes, make_policy("ours"), shares=shares), shares)
    got = ours["shares_arriving"]
    assert got["max_relative_deviation"] <= 0.05, got["by_type"]
    easy = compute_metrics(simulate(jobs, nodes, make_policy("easy"), shares=shares), shares)
    assert easy["shares_arriving"]["max_relative_deviation"] > 0.5  # the workload contends
