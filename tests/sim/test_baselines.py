"""The baselines: EASY's reservation, deterministic node choice, and LAS's work accounting."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from gpucenter.core import NodeSnapshot, PendingJob
from gpucenter.domain.ids import JobId, ProjectId
from gpucenter.domain.jobs import GpuRequest
from gpucenter.sim.cluster import uniform_cluster
from gpucenter.sim.engine import simulate
from gpucenter.sim.metrics import compute_metrics, work_not_conserved
from gpucenter.sim.policies import EasyPolicy, LasPolicy, Workload, make_policy
from gpucenter.sim.policies.freemap import FreeMap
from gpucenter.sim.traces import TraceJob, load_philly, synthetic_trace

DATA = Path(__file__).resolve().parents[1] / "data"


def _nodes(count: int, gpus: int) -> tuple[NodeSnapshot, ...]:
    return tuple(NodeSnapshot(f"n{i}", "gpu", gpus, "b", "s") for i in range(count))


def _job(i: int, gpus: int, nodes: int, limit: int, at: float = 0.0) -> PendingJob:
    return PendingJob(JobId(i), ProjectId(1), GpuRequest("gpu", gpus, nodes), limit, at)


def test_freemap_picks_the_lowest_index_among_equals() -> None:
    """Node choice depends on free GPUs only, never on the order jobs ended."""
    fm = FreeMap(_nodes(4, 4))
    parts = [fm.take([i], 4) for i in range(4)]
    for i in (3, 1, 2, 0):  # given back in a scrambled order
        fm.give_back(parts[i])
    assert fm.find(GpuRequest("gpu", 2, 1)) == ("gpu", [0])
    assert fm.find(GpuRequest("gpu", 4, 3)) == ("gpu", [0, 1, 2])
    fm.take([0], 3)
    fm.take([2], 3)
    assert fm.find(GpuRequest("gpu", 1, 1)) == ("gpu", [0])  # best fit, then lowest index


def test_easy_backfills_only_what_does_not_delay_the_head() -> None:
    """Two 4-GPU nodes; n0 busy until t=100. The head needs both nodes, so it is reserved
    at 100 on n0+n1. A job ending by 100 backfills onto n1; one running past 100 does not,
    though it fits now; one that fits only on n0's... nothing else is free."""
    pol = EasyPolicy()
    pol.prepare(_nodes(2, 4), Workload({}))
    pol.submit(_job(0, 4, 1, 100))
    assert [int(s.job_id) for s in pol.run_pass(0.0).starts] == [0]
    pol.submit(_job(1, 4, 2, 50))  # head: both nodes
    pol.submit(_job(2, 2, 1, 500))  # would still run at 100 on n1: delays the head
    pol.submit(_job(3, 2, 1, 90))  # ends by 100: backfills
    pol.submit(_job(4, 2, 1, 100))  # ends exactly at 100: backfills too
    started = pol.run_pass(1.0).starts
    assert [int(s.job_id) for s in started] == [3]
    assert [p.node for p in started[0].placement] == ["n1"]
    started = pol.run_pass(2.0).starts
    assert [int(s.job_id) for s in started] == []  # job 4 would end at 102 > 100


def test_easy_lets_wide_reservations_leave_spare_gpus_to_backfill() -> None:
    """A single-node head reserves one node; the other node's GPUs remain for anyone."""
    pol = EasyPolicy()
    pol.prepare(_nodes(2, 4), Workload({}))
    pol.submit(_job(0, 3, 1, 100))
    pol.submit(_job(1, 3, 1, 100))
    pol.run_pass(0.0)
    pol.submit(_job(2, 4, 1, 10))  # head: a whole node, from t=100 (on n0)
    pol.submit(_job(3, 1, 1, 10_000))  # long, 1 GPU: fits on n1 and n1 is not reserved
    assert [int(s.job_id) for s in pol.run_pass(1.0).starts] == [3]


@pytest.mark.parametrize("name", ["fifo", "easy", "las", "ours"])
def test_every_policy_conserves_work_and_fits(name: str) -> None:
    jobs = load_philly(DATA / "philly_slice.csv")
    res = simulate(jobs, uniform_cluster(32).nodes(), make_policy(name))
    assert work_not_conserved(res) == []
    m = compute_metrics(res)
    assert m["finished"] == len(jobs)
    assert 0.0 < m["utilisation_mean"] <= 1.0


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_las_credits_each_run_and_never_loses_work(seed: int) -> None:
    """Under heavy preemption every job still runs exactly its duration x GPUs (the old
    engine credited time since the FIRST start after a second preemption, so jobs lost
    work and finished early)."""
    jobs = synthetic_trace(250, 64, seed=seed, load=2.0)
    pol = LasPolicy(thresholds=(600.0, 3600.0 * 4), quantum_s=60.0)
    res = simulate(jobs, uniform_cluster(64).nodes(), pol)
    assert res.preemptions > 10
    assert work_not_conserved(res) == []
    for k, j in enumerate(jobs):
        assert res.end[k] - res.start[k] >= j.duration_s - 1e-6  # never sooner than its run


def test_las_never_preempts_a_job_started_in_the_same_pass() -> None:
    """A job started at `now` has attained nothing since: it must not be a victim (it used
    to be, and the dispatcher then refused to start a job that was already running)."""
    pol = LasPolicy(thresholds=(10.0,), quantum_s=1.0)
    pol.prepare(_nodes(1, 4), Workload({}))
    pol.submit(_job(0, 1, 1, 1000))  # R
    pol.submit(_job(1, 1, 1, 1000))  # L
    pol.run_pass(0.0)
    pol.finish(JobId(1), 20.0)  # L attained 20 GPU-s: the lower queue
    pol.submit(_job(1, 1, 1, 980))
    pol.submit(_job(2, 4, 1, 100, at=50.0))  # H: fresh, the higher queue, needs the node
    out = pol.run_pass(100.0)
    assert [int(s.job_id) for s in out.starts] == [1]  # L fits beside R; H does not
    assert JobId(1) not in out.preempt  # L started in this very pass
    assert out.preempt == []  # R alone would not free enough for H


def test_easy_beats_fifo_and_is_deterministic() -> None:
    jobs = synthetic_trace(400, 128, seed=5, load=1.2)
    nodes = uniform_cluster(128).nodes()
    a = simulate(jobs, nodes, make_policy("easy"))
    b = simulate(jobs, nodes, make_policy("easy"))
    assert [x for x in a.start if not math.isnan(x)] == [x for x in b.start if not math.isnan(x)]
    fifo = compute_metrics(simulate(jobs, nodes, make_policy("fifo")))
    easy = compute_metrics(a)
    assert easy["wait_h"]["all"]["mean"] <= fifo["wait_h"]["all"]["mean"]


def test_trace_job_is_exported() -> None:
    assert TraceJob(0, 0.0, 1.0, 1).gpu_seconds == 1.0
