"""Trace loaders: documented schemas, clear errors, deterministic synthetic traces."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from gpucenter.sim.cluster import ClusterSpecError, load_cluster, parse_cluster
from gpucenter.sim.traces import (
    ApplicantType,
    TraceError,
    load_generic,
    load_philly,
    load_tiresias,
    synthetic_trace,
    write_generic,
)

DATA = Path(__file__).resolve().parents[1] / "data"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "clusters"


def test_philly_slice_loads_sorted_from_zero() -> None:
    jobs = load_philly(DATA / "philly_slice.csv")
    assert len(jobs) == 400
    assert jobs[0].submit_s == 0.0
    assert all(a.submit_s <= b.submit_s for a, b in itertools.pairwise(jobs))
    assert all(j.gpus >= 1 and j.duration_s >= 1 for j in jobs)


def test_tiresias_loads() -> None:
    jobs = load_tiresias(DATA / "tiresias_60_job.csv")
    assert len(jobs) == 60
    assert {j.tenant for j in jobs} >= {"vgg19"}


def test_generic_round_trip(tmp_path: Path) -> None:
    jobs = synthetic_trace(50, 512, seed=3)
    path = tmp_path / "t.csv"
    write_generic(jobs, path)
    back = load_generic(path)
    assert [(j.job_id, j.gpus, j.applicant_type) for j in back] == [
        (j.job_id, j.gpus, j.applicant_type) for j in jobs
    ]


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        ("1,abc,4,,t,sme", "column 'duration' is not a number"),
        ("1,10,0,,t,sme", "column 'gpus' must be at least 1"),
        ("1,10,2,,t,ministry", "unknown applicant_type 'ministry'"),
        ("-5,10,2,,t,sme", "submit_time"),
    ],
)
def test_generic_errors_name_line_and_cell(tmp_path: Path, row: str, needle: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(
        "submit_time,duration,gpus,gpu_type,tenant,applicant_type\n0,5,1,,t,sme\n" + row
    )
    with pytest.raises(TraceError) as err:
        load_generic(path)
    assert needle in str(err.value)
    assert f"{path}:3" in str(err.value)


def test_missing_column_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("submit,duration\n0,1\n")
    with pytest.raises(TraceError, match="missing column"):
        load_generic(path)


def test_philly_bad_timestamp(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("timestamp,duration,num_gpus,gpu_time,cluster\n2017/10/09,5,1,5,x\n")
    with pytest.raises(TraceError, match="YYYY-MM-DD"):
        load_philly(path)


def test_synthetic_is_seeded_and_mixed() -> None:
    a = synthetic_trace(2000, 13_000, seed=7)
    assert a == synthetic_trace(2000, 13_000, seed=7)
    assert a != synthetic_trace(2000, 13_000, seed=8)
    kinds = {j.applicant_type for j in a}
    assert ApplicantType.SME in kinds and ApplicantType.FOUNDATION in kinds
    assert max(j.gpus for j in a) <= 4096 and min(j.gpus for j in a) == 1


def test_example_clusters() -> None:
    assert load_cluster(EXAMPLES / "national-13k.yaml").total_gpus == 13_056
    big = load_cluster(EXAMPLES / "national-260k-2030.yaml")
    assert 259_000 < big.total_gpus < 261_000
    assert len(big.nodes()) == big.total_gpus // 8


def test_cluster_errors_name_the_key() -> None:
    with pytest.raises(ClusterSpecError, match=r"sites\[0\].blocks\[0\].nodes"):
        parse_cluster(
            {
                "name": "x",
                "sites": [
                    {
                        "name": "s",
                        "blocks": [
                            {"name": "b", "nodes": 0, "gpus_per_node": 8, "gpu_type": "h100"}
                        ],
                    }
                ],
            }
        )
