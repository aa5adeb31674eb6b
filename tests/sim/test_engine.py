"""The engine: determinism, invariants, the dispatcher boundary, and a replay regression."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpucenter.cli.sim import app
from gpucenter.dispatch.base import Dispatcher
from gpucenter.domain.clock import ManualClock
from gpucenter.sim.cluster import uniform_cluster
from gpucenter.sim.dispatcher import SimDispatcher
from gpucenter.sim.engine import simulate
from gpucenter.sim.metrics import compute_metrics, jain, percentile
from gpucenter.sim.policies import POLICY_NAMES, make_policy
from gpucenter.sim.traces import load_philly, synthetic_trace, write_generic

DATA = Path(__file__).resolve().parents[1] / "data"


def test_sim_dispatcher_is_a_dispatcher() -> None:
    d: Dispatcher = SimDispatcher(ManualClock(), {})
    assert d.poll() == []


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_replay_is_deterministic_and_never_overcommits(name: str) -> None:
    jobs = load_philly(DATA / "philly_slice.csv")
    nodes = uniform_cluster(64).nodes()
    a = simulate(jobs, nodes, make_policy(name))
    b = simulate(jobs, nodes, make_policy(name))
    assert a.start == b.start or all(
        (x == y) or (math.isnan(x) and math.isnan(y)) for x, y in zip(a.start, b.start, strict=True)
    )
    m = compute_metrics(a)
    assert m["finished"] == len(jobs)
    assert max(m["timeline"]["utilisation"]) <= 1.0 + 1e-9
    assert all(s >= j.submit_s for s, j in zip(a.start, jobs, strict=True))


def test_philly_slice_regression() -> None:
    """A trace replay is a regression test: these figures change only with the policy."""
    jobs = load_philly(DATA / "philly_slice.csv")
    nodes = uniform_cluster(64).nodes()
    got = {
        name: round(
            compute_metrics(simulate(jobs, nodes, make_policy(name)))["jct_h"]["all"]["mean"], 3
        )
        for name in ("ours", "fifo")
    }
    assert got == EXPECTED_MEAN_JCT_H


EXPECTED_MEAN_JCT_H: dict[str, float] = {"ours": 4.081, "fifo": 4.31}


def test_reservation_changes_who_waits() -> None:
    """Reserving GPUs for the foundation programme is a core AdvanceReservation: it changes
    the schedule, and every job still finishes."""
    jobs = synthetic_trace(300, 1024, seed=2, load=1.2)
    nodes = uniform_cluster(1024).nodes()
    free = compute_metrics(simulate(jobs, nodes, make_policy("ours")))
    held = compute_metrics(simulate(jobs, nodes, make_policy("ours"), reserve={"foundation": 512}))
    assert free["finished"] == len(jobs)
    assert held["finished"] + held["unfinished"] == len(jobs)
    assert held["wait_h"]["sme"] != free["wait_h"]["sme"]


def test_metric_helpers() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert jain([1.0, 1.0]) == 1.0
    assert abs(jain([1.0, 0.0]) - 0.5) < 1e-12


def test_cli_run_and_compare(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    write_generic(synthetic_trace(120, 256, seed=1), trace)
    cluster = tmp_path / "c.yaml"
    cluster.write_text(
        "name: t\nsites:\n  - name: s\n    blocks:\n"
        "      - {name: b, count: 2, nodes: 16, gpus_per_node: 8, gpu_type: h100}\n"
    )
    runner = CliRunner()
    r = runner.invoke(
        app,
        [
            "run",
            "--trace",
            str(trace),
            "--format",
            "csv",
            "--cluster",
            str(cluster),
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "r" / "report.html").read_text().startswith("<!doctype html>")
    r = runner.invoke(
        app,
        [
            "compare",
            "--trace",
            str(trace),
            "--cluster",
            str(cluster),
            "--policies",
            "ours,fifo,las",
            "--out",
            str(tmp_path / "c"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "c" / "timeline_las.csv").exists()
    r = runner.invoke(
        app,
        [
            *("run", "--trace", str(trace), "--cluster", str(cluster)),
            *("--out", str(tmp_path / "b"), "--backfill-interval", "0"),
        ],
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app, ["run", "--trace", str(trace), "--cluster", str(cluster), "--backfill-interval", "-1"]
    )
    assert r.exit_code == 2 and "backfill-interval" in r.output
    bad = tmp_path / "bad.csv"
    bad.write_text("submit_time,duration\n1,2\n")
    r = runner.invoke(app, ["run", "--trace", str(bad), "--cluster", str(cluster)])
    assert r.exit_code == 2
