"""One named rule per case: a small cluster, a queue, and what the pass must decide."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from gpucenter.core import (
    AdvanceReservation,
    ClusterSnapshot,
    FairShare,
    PassResult,
    PendingJob,
    Policies,
    ShareAccount,
    schedule_pass,
)
from gpucenter.domain.ids import JobId, ProjectId
from gpucenter.domain.jobs import WaitReason as R
from tests.core.builders import T0, cluster, job


@dataclass
class Expect:
    starts: set[int] | None = None
    waits: dict[int, R] = field(default_factory=dict)
    on: dict[int, set[str]] = field(default_factory=dict)
    preempted: set[int] | None = None
    opportunistic: set[int] | None = None
    check: Callable[[PassResult], None] | None = None


Case = tuple[ClusterSnapshot, list[PendingJob], dict[str, Any], Expect]


def tree(*projects: tuple[int, float], programme: str = "prog") -> ShareAccount:
    return ShareAccount(
        "root",
        children=(
            ShareAccount(
                programme,
                children=tuple(
                    ShareAccount(f"p{p}", shares, project_id=ProjectId(p)) for p, shares in projects
                ),
            ),
        ),
    )


def two_programmes() -> ShareAccount:
    return ShareAccount(
        "root",
        children=(
            ShareAccount("alpha", children=(ShareAccount("pa", project_id=ProjectId(1)),)),
            ShareAccount("beta", children=(ShareAccount("pb", project_id=ProjectId(2)),)),
        ),
    )


def _cases() -> dict[str, Case]:
    c: dict[str, Case] = {}
    c["gang job waits rather than start half"] = (
        cluster().nodes(2).busy("n1", 4).snapshot(),
        [job(1, gpus=8, nodes=2)],
        {},
        Expect(starts=set(), waits={1: R.RESOURCES}),
    )
    c["gang job takes whole nodes, all of them at once"] = (
        cluster().nodes(3).busy("n0", 2).snapshot(),
        [job(1, gpus=4, nodes=2)],
        {},
        Expect(starts={1}, on={1: {"n1", "n2"}}),
    )
    c["multi-node job fits in one block, the best-fitting one"] = (
        cluster().nodes(2, block="small").nodes(4, prefix="m", block="big").snapshot(),
        [job(1, gpus=8, nodes=2)],
        {},
        Expect(starts={1}, on={1: {"n0", "n1"}}),
    )
    c["multi-node job spans as few blocks as possible"] = (
        cluster().nodes(9, block_size=3).nodes(2, prefix="x", block="xb").busy("n0").snapshot(),
        [job(1, gpus=8, nodes=5)],
        {},
        Expect(
            starts={1},
            check=lambda r: _blocks_used(r, 1, {"n": 3, "x": 2}) == 2,
        ),
    )
    c["multi-node job prefers one NVLink domain inside a block"] = (
        cluster().nodes(8, gpus=4, nvlink=4, block="rack").busy("n1", 1).snapshot(),
        [job(1, gpus=4, nodes=4)],
        {},
        Expect(starts={1}, on={1: {"n4", "n5", "n6", "n7"}}),
    )
    c["single-node job packs onto the fullest node that fits"] = (
        cluster().nodes(3).busy("n1", 6).busy("n2", 3).snapshot(),
        [job(1, gpus=2)],
        {},
        Expect(starts={1}, on={1: {"n1"}}),
    )
    c["whole-node job keeps the block with most free nodes intact"] = (
        cluster().nodes(1, block="a").nodes(3, prefix="m", block="b").snapshot(),
        [job(1, gpus=8)],
        {},
        Expect(starts={1}, on={1: {"n0"}}),
    )
    c["job with alternatives runs on the other type"] = (
        cluster().nodes(1).nodes(1, gpu_type="b200", prefix="b").busy("n0").snapshot(),
        [job(1, gpus=8, alternatives=("b200",))],
        {},
        Expect(starts={1}, on={1: {"b0"}}),
    )
    c["small job backfills without delaying the reserved top job"] = (
        cluster().nodes(2).busy("n0", limit=1000).busy("n1", 4, limit=5000).snapshot(),
        [job(1, gpus=8, nodes=2, submitted=T0 - 500), job(2, gpus=4, limit=1000)],
        {},
        Expect(starts={2}, waits={1: R.RESOURCES}),
    )
    c["lower job that would delay the reserved top job waits with Priority"] = (
        cluster().nodes(2).busy("n0", limit=1000).busy("n1", 4, limit=5000).snapshot(),
        [job(1, gpus=8, nodes=2, submitted=T0 - 500), job(2, gpus=4, limit=90000)],
        {},
        Expect(starts=set(), waits={1: R.RESOURCES, 2: R.PRIORITY}),
    )
    c["the whole queue is considered, not the first jobs"] = (
        cluster().nodes(1).busy("n0", 7).snapshot(),
        [job(i, gpus=2, submitted=T0 - 1000 + i) for i in range(150)]
        + [job(500, gpus=1, limit=60)],
        {"policy": Policies(max_reservations=0)},
        Expect(starts={500}),
    )
    c["project under its share goes first"] = (
        cluster().nodes(1).busy("n0", 7).snapshot(),
        [job(1, project=1, submitted=T0 - 999), job(2, project=2)],
        {"fair_share": FairShare(tree((1, 1), (2, 1)), usage={ProjectId(1): 1e6})},
        Expect(starts={2}, waits={1: R.RESOURCES}),
    )
    c["sibling programme under its share outranks within-programme order"] = (
        cluster().nodes(1).busy("n0", 7).snapshot(),
        [job(1, project=1), job(2, project=2)],
        {"fair_share": FairShare(two_programmes(), usage={ProjectId(1): 10.0, ProjectId(2): 5.0})},
        Expect(starts={2}),
    )
    c["older job goes first at equal fair share"] = (
        cluster().nodes(1).busy("n0", 7).snapshot(),
        [job(1, submitted=T0 - 10), job(2, submitted=T0 - 86400)],
        {},
        Expect(starts={2}),
    )
    c["exhausted allocation waits with AllocationExhausted"] = (
        cluster().nodes(1).snapshot(),
        [job(1, budget=0.0), job(2, budget=10 * 3600.0, gpus=2, limit=3600)],
        {},
        Expect(starts={2}, waits={1: R.ALLOCATION_EXHAUSTED}),
    )
    c["jobs of one allocation share its budget within a pass"] = (
        cluster().nodes(1).snapshot(),
        [job(1, budget=3600.0, submitted=T0 - 50), job(2, budget=3600.0)],
        {},
        Expect(starts={1}, waits={2: R.ALLOCATION_EXHAUSTED}),
    )
    c["project at its GPU limit waits with QuotaLimit"] = (
        cluster().nodes(2).busy("n0", 6, project=1).snapshot(),
        [job(1, gpus=4, project=1), job(2, gpus=4, project=2)],
        {"policy": Policies(project_gpu_limits={ProjectId(1): {"h100": 8}})},
        Expect(starts={2}, waits={1: R.QUOTA_LIMIT}),
    )
    c["a limit on one type leaves the alternative type open"] = (
        cluster().nodes(1).nodes(1, gpu_type="b200", prefix="b").snapshot(),
        [job(1, gpus=4, project=1, alternatives=("b200",))],
        {"policy": Policies(project_gpu_limits={ProjectId(1): {"h100": 0}})},
        Expect(starts={1}, on={1: {"b0"}}),
    )
    c["topology limit makes a spread job wait with Topology"] = (
        cluster().nodes(4, block_size=2).busy("n0").busy("n2").snapshot(),
        [job(1, gpus=8, nodes=2, max_blocks=1)],
        {"policy": Policies(max_reservations=0)},
        Expect(starts=set(), waits={1: R.TOPOLOGY}),
    )
    c["opportunistic job starts preemptible on idle GPUs"] = (
        cluster().nodes(1).snapshot(),
        [job(1, gpus=8, qos="opportunistic")],
        {},
        Expect(starts={1}, opportunistic={1}),
    )
    c["entitled job preempts the opportunistic job that lost least work"] = (
        cluster()
        .nodes(2)
        .busy("n0", job=70, qos="opportunistic", started=T0 - 9000, limit=86400)
        .busy("n1", job=71, qos="opportunistic", started=T0 - 60, limit=86400)
        .snapshot(),
        [job(1, gpus=8)],
        {},
        Expect(starts=set(), preempted={71}, waits={1: R.RESOURCES}),
    )
    c["a job already being requeued is not preempted again"] = (
        cluster()
        .nodes(1)
        .busy("n0", job=70, qos="opportunistic", limit=86400, requeue_at=T0 + 100)
        .snapshot(),
        [job(1, gpus=8), job(2, gpus=8, submitted=T0 - 1)],
        {},
        Expect(starts=set(), preempted=set()),
    )
    c["opportunistic work never preempts"] = (
        cluster().nodes(1).busy("n0", job=70, qos="opportunistic", limit=86400).snapshot(),
        [job(1, gpus=8, qos="opportunistic")],
        {},
        Expect(starts=set(), preempted=set()),
    )
    c["entitled work never preempts entitled work"] = (
        cluster().nodes(1).busy("n0", job=70, limit=86400).snapshot(),
        [job(1, gpus=8, qos="high")],
        {},
        Expect(starts=set(), preempted=set()),
    )
    c["a programme beyond its entitlement borrows idle GPUs preemptibly"] = (
        cluster().nodes(2).snapshot(),
        [job(1, gpus=8, project=2, submitted=T0 - 50), job(2, gpus=8, project=2)],
        {
            "fair_share": FairShare(two_programmes()),
            "policy": Policies(entitlements={"alpha": {"h100": 8}, "beta": {"h100": 8}}),
        },
        Expect(starts={1, 2}, opportunistic={2}),
    )
    c["the owner reclaims borrowed GPUs"] = (
        cluster()
        .nodes(2)
        .busy("n0", job=70, project=2, limit=86400)
        .busy("n1", job=71, project=2, borrowed=True, limit=86400)
        .snapshot(),
        [job(1, gpus=8, project=1)],
        {
            "fair_share": FairShare(two_programmes()),
            "policy": Policies(entitlements={"alpha": {"h100": 8}, "beta": {"h100": 8}}),
        },
        Expect(starts=set(), preempted={71}),
    )
    resv = AdvanceReservation(
        "fm", ("n0", "n1"), frozenset({ProjectId(7)}), start=T0 + 7200, end=T0 + 86400
    )
    c["others use reserved nodes only if they end before the window"] = (
        cluster().nodes(2).snapshot(),
        [job(1, gpus=8, limit=3600, submitted=T0 - 9), job(2, gpus=8, limit=10_000)],
        {"reservations": [resv]},
        Expect(starts={1}, waits={2: R.RESERVATION}),
    )
    active = AdvanceReservation(
        "fm", ("n0",), frozenset({ProjectId(7)}), start=T0 - 10, end=T0 + 86400
    )
    c["inside the window only member projects use the reservation"] = (
        cluster().nodes(2).busy("n1").snapshot(),
        [job(1, gpus=8, project=1, submitted=T0 - 50), job(2, gpus=8, project=7)],
        {"reservations": [active]},
        Expect(starts={2}, on={2: {"n0"}}, waits={1: R.RESOURCES}),
    )
    lease = AdvanceReservation(
        "startup", ("n0",), frozenset({ProjectId(7)}), T0 - 10, T0 + 86400, lease=True
    )
    c["a lease lends idle GPUs to others as preemptible work"] = (
        cluster().nodes(2).busy("n1").snapshot(),
        [job(1, gpus=8, project=1)],
        {"reservations": [lease]},
        Expect(starts={1}, on={1: {"n0"}}, opportunistic={1}),
    )
    c["the lease holder preempts work borrowing its lease"] = (
        cluster().nodes(1).busy("n0", job=70, project=1, borrowed=True, limit=86400).snapshot(),
        [job(2, gpus=8, project=7)],
        {"reservations": [lease]},
        Expect(starts=set(), preempted={70}),
    )
    c["every pending job carries a reason"] = (
        cluster().nodes(1).busy("n0", 8).snapshot(),
        [job(i, gpus=1 + i % 8, nodes=1 + i % 2) for i in range(20)],
        {},
        Expect(
            starts=set(),
            check=lambda r: _all_have_reasons(r, 20),
        ),
    )
    c["fragmentation counts free GPUs the next job cannot use"] = (
        cluster().nodes(2).busy("n0", 5).busy("n1", 5).snapshot(),
        [job(1, gpus=4)],
        {"policy": Policies(max_reservations=0)},
        Expect(
            starts=set(),
            check=lambda r: (r.fragmentation.free_gpus, r.fragmentation.unusable_gpus) == (6, 6),
        ),
    )
    c["priority breakdown adds up like sprio"] = (
        cluster().nodes(1).busy("n0").snapshot(),
        [job(1, gpus=8, submitted=T0 - 3600, qos="high")],
        {},
        Expect(check=lambda r: _breakdown_adds_up(r, 1)),
    )
    return c


def _blocks_used(r: PassResult, job_id: int, _: dict[str, int]) -> int:
    start = next(s for s in r.starts if s.job_id == job_id)
    return len(
        {
            p.node[0] + str(int(p.node[1:]) // 3) if p.node[0] == "n" else p.node[0]
            for p in start.placement
        }
    )


def _all_have_reasons(r: PassResult, n: int) -> bool:
    return len(r.waits) == n and all(w.detail for w in r.waits.values())


def _breakdown_adds_up(r: PassResult, job_id: int) -> bool:
    b = r.priorities[JobId(job_id)]
    row = b.as_row()
    parts = row["fairshare"] + row["age"] + row["jobsize"] + row["qos"]
    return abs(parts - row["priority"]) < 1e-9 and b.qos == 1.0 and b.age > 0


CASES = _cases()


@pytest.mark.parametrize("name", list(CASES))
def test_rule(name: str) -> None:
    snapshot, queue, kwargs, expect = CASES[name]
    result = schedule_pass(snapshot, queue, T0, **kwargs)
    started = {int(s.job_id) for s in result.starts}
    if expect.starts is not None:
        assert started == expect.starts, result.waits
    for job_id, reason in expect.waits.items():
        assert result.waits[JobId(job_id)].reason is reason, result.waits[JobId(job_id)]
    for job_id, nodes in expect.on.items():
        start = next(s for s in result.starts if s.job_id == job_id)
        assert {p.node for p in start.placement} == nodes
    if expect.preempted is not None:
        assert {int(p.job_id) for p in result.preemptions} == expect.preempted
    if expect.opportunistic is not None:
        assert {int(j) for j in result.opportunistic} == expect.opportunistic
    if expect.check is not None:
        assert expect.check(result) is not False
    assert started.isdisjoint(int(j) for j in result.waits)
    assert started | {int(j) for j in result.waits} == {int(j.job_id) for j in queue}
