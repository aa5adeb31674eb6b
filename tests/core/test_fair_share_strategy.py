"""The fair-share seam: the scheduler asks its policy's strategy; two strategies behind it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from gpucenter.core import DEFAULT_POLICIES, FairShare, PendingJob, Scheduler, ShareAccount
from gpucenter.core.fairshare import FAIR_TREE, FairShareFactors, compute_factors
from gpucenter.core.fairshare_classic import CLASSIC
from gpucenter.core.share_tree import ShareHolder, build_share_tree
from gpucenter.domain.ids import JobId, ProjectId
from gpucenter.domain.jobs import GpuRequest
from tests.core.builders import T0, cluster

P1, P2, P3 = ProjectId(1), ProjectId(2), ProjectId(3)


def _tree() -> ShareAccount:
    """Programme big (3 shares: project 1) and small (1 share: projects 2 and 3)."""
    return build_share_tree(
        [
            ShareHolder("big", "org-a", "p1", P1, 3.0),
            ShareHolder("small", "org-b", "p2", P2, 1.0),
            ShareHolder("small", "org-c", "p3", P3, 1.0),
        ],
        programme_shares={"big": 3.0, "small": 1.0},
    )


@dataclass
class RecordingStrategy:
    """Answers fixed factors and remembers what it was asked."""

    answer: FairShareFactors
    seen: list[FairShare] = field(default_factory=list)
    name: str = "recording"

    def factors(self, fair_share: FairShare) -> FairShareFactors:
        self.seen.append(fair_share)
        return self.answer


def test_the_scheduler_takes_its_factors_from_the_policys_strategy() -> None:
    answer = FairShareFactors({P1: 0.1, P2: 0.9}, {}, {P1: "big", P2: "small"})
    strategy = RecordingStrategy(answer)
    fs = FairShare(_tree(), {P1: 0.0})
    sched = Scheduler(
        cluster().nodes(1).snapshot().nodes,
        policy=replace(DEFAULT_POLICIES, fair_share=strategy),
        fair_share=fs,
    )
    for job_id, project in ((1, P1), (2, P2)):
        sched.submit(PendingJob(JobId(job_id), project, GpuRequest("h100", 8), 3600, T0))
    result = sched.run_pass(T0)
    assert strategy.seen == [fs]
    assert result.priorities[JobId(1)].fair_share == pytest.approx(0.1)
    assert result.priorities[JobId(2)].fair_share == pytest.approx(0.9)
    assert [s.job_id for s in result.starts] == [JobId(2)]  # the strategy's favourite


def test_fair_tree_is_the_default_and_what_compute_factors_says() -> None:
    fs = FairShare(_tree(), {P1: 100.0, P2: 10.0, P3: 0.0})
    assert DEFAULT_POLICIES.fair_share is FAIR_TREE
    assert FAIR_TREE.factors(fs) == compute_factors(fs)


def test_classic_gives_one_half_at_exactly_the_share_and_one_with_no_usage() -> None:
    # Normalised shares: p1 3/4, p2 and p3 1/8 each. Usage 3/4 : 1/8 : 1/8 of the total.
    fs = FairShare(_tree(), {P1: 600.0, P2: 100.0, P3: 100.0})
    factors = CLASSIC.factors(fs)
    assert factors.by_project == pytest.approx({P1: 0.5, P2: 0.5, P3: 0.5})
    idle = CLASSIC.factors(FairShare(_tree(), {}))
    assert idle.by_project == pytest.approx({P1: 1.0, P2: 1.0, P3: 1.0})
    assert idle.programme_of == {P1: "big", P2: "small", P3: "small"}


def test_classic_compares_across_programmes_where_fair_tree_does_not() -> None:
    # The small programme used nothing of its share through p3 and p2 used twice its own;
    # the big programme's p1 used a bit more than its share. Fair Tree ranks the whole small
    # programme (it is under its share) above big; classic ranks p1 above the heavy p2.
    fs = FairShare(_tree(), {P1: 800.0, P2: 250.0, P3: 0.0})
    tree = FAIR_TREE.factors(fs).by_project
    classic = CLASSIC.factors(fs).by_project
    assert tree[P2] > tree[P1]
    assert classic[P1] > classic[P2]
