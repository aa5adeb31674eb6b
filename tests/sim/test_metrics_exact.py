"""Exact utilisation, FGD fragmentation over time, and refusing jobs that cannot run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpucenter.cli.sim import app
from gpucenter.core import NodeSnapshot
from gpucenter.domain.jobs import GpuRequest
from gpucenter.sim.calibrate import choose
from gpucenter.sim.engine import RefusedJobsWarning, refusals, simulate
from gpucenter.sim.fragmentation import FragmentationMeter
from gpucenter.sim.metrics import compute_metrics
from gpucenter.sim.policies import make_policy
from gpucenter.sim.traces import TraceJob, write_generic


def _nodes(count: int, gpus: int) -> tuple[NodeSnapshot, ...]:
    return tuple(NodeSnapshot(f"n{i}", "gpu", gpus, "b", "s") for i in range(count))


def test_utilisation_is_exact_not_rounded_to_bins() -> None:
    """Two 1-GPU jobs back to back on one GPU: busy all the time, whatever the bins. The
    old figure divided by the makespan rounded up to whole bins (and read low)."""
    jobs = (TraceJob(0, 0.0, 1000.0, 1), TraceJob(1, 0.0, 777.0, 1))
    m = compute_metrics(simulate(jobs, _nodes(1, 1), make_policy("fifo")))
    assert m["makespan_h"] == pytest.approx(1777.0 / 3600.0)
    assert m["utilisation_mean"] == pytest.approx(1.0, abs=1e-12)
    jobs = (TraceJob(0, 0.0, 1000.0, 1), TraceJob(1, 1500.0, 500.0, 1))
    m = compute_metrics(simulate(jobs, _nodes(1, 2), make_policy("fifo")))
    assert m["utilisation_mean"] == pytest.approx(1500.0 / (2 * 2000.0), abs=1e-12)


def test_fgd_fragmentation_of_whole_gpus() -> None:
    """Typical jobs: half want 1 GPU, half want 4 (a whole 4-GPU node). A node with 3 idle
    GPUs strands them for the 4-GPU half: 1.5 GPUs fragmented; a wholly idle node none."""
    typical = [GpuRequest("gpu", 1, 1), GpuRequest("gpu", 4, 1)]
    meter = FragmentationMeter(_nodes(2, 4), typical)
    assert meter.value == 0.0
    meter.change("n0", -1)
    assert meter.value == pytest.approx(1.5)
    meter.change("n0", -3)  # full: nothing idle, nothing stranded
    assert meter.value == pytest.approx(0.0)
    gang = FragmentationMeter(_nodes(2, 4), [GpuRequest("gpu", 4, 2)])
    gang.change("n1", -2)  # a gang needs whole nodes: n1's 2 idle GPUs are stranded
    assert gang.value == pytest.approx(2.0)


def test_fragmentation_is_integrated_over_the_replay() -> None:
    """One 1-GPU job on a 2-GPU node for 100 s, then nothing; the typical job wants both
    GPUs, so the idle one is stranded while the job runs: 1 GPU x 100 s over 2 x 100."""
    jobs = (TraceJob(0, 0.0, 100.0, 1), TraceJob(1, 0.0, 1.0, 2), TraceJob(2, 0.0, 1.0, 2))
    res = simulate(jobs, _nodes(1, 2), make_policy("fifo"))
    m = compute_metrics(res)
    assert res.frag_gpu_s_total == pytest.approx(1.0 * 100.0 * (2 / 3))
    assert m["fragmentation_mean"] == pytest.approx(res.frag_gpu_s_total / (2 * 102.0))
    assert len(m["timeline"]["fragmentation"]) == len(m["timeline"]["utilisation"])


def test_too_wide_jobs_are_refused_loudly() -> None:
    jobs = (TraceJob(0, 0.0, 10.0, 1), TraceJob(7, 1.0, 10.0, 64), TraceJob(8, 2.0, 9.0, 2))
    nodes = _nodes(2, 8)
    assert [k for k, _ in refusals(jobs, nodes)] == [1]
    with pytest.warns(RefusedJobsWarning, match="job 7: needs 64 GPUs"):
        res = simulate(jobs, nodes, make_policy("ours"))
    m = compute_metrics(res)
    assert m["rejected"] == 1 and m["refused"] == [
        "job 7: needs 64 GPUs (8 x 8 gpu), the cluster has 16"
    ]
    assert m["finished"] == 2


def test_cli_warns_naming_the_too_wide_job(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    write_generic([TraceJob(0, 0.0, 60.0, 4), TraceJob(41, 5.0, 60.0, 512)], trace)
    cluster = tmp_path / "c.yaml"
    cluster.write_text(
        "name: small\nsites:\n  - name: s\n    blocks:\n"
        "      - {name: b, nodes: 4, gpus_per_node: 8, gpu_type: h100}\n"
    )
    out = tmp_path / "r"
    r = CliRunner().invoke(
        app, ["run", "--trace", str(trace), "--cluster", str(cluster), "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    assert "warning" in r.stderr and "job 41: needs 512 GPUs" in r.stderr
    assert "1 refused" in (out / "report.html").read_text()
    assert "job 41" in (out / "report.html").read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics[0]["rejected"] == 1 and metrics[0]["refused"][0].startswith("job 41:")


def test_calibration_takes_the_nearest_level() -> None:
    curve = [(8, 0.85), (16, 0.8), (24, 0.74), (32, 0.61), (40, 0.55)]
    assert choose(curve, 0.6) == (32, 0.61)
    assert choose(curve, 0.75) == (24, 0.74)
    assert choose(curve, 0.9) == (8, 0.85)  # not reachable: the nearest, reported as such
    assert choose([(8, 0.7), (16, 0.8)], 0.75) == (16, 0.8)  # a tie: the larger cluster
