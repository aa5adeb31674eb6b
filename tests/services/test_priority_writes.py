"""Which stored priorities a pass rewrites (services/scheduling/priority_writes.py): every
new job's, then at most MAX_PRIORITY_REWRITES moved ones, the most moved first; a move within
1% is not written. A pass over a deep queue must not rewrite the whole queue each time."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select

from gpucenter.config import Settings
from gpucenter.core.model import PriorityBreakdown
from gpucenter.domain.ids import JobId
from gpucenter.persistence.tables import JobRow
from gpucenter.services.context import AppContext
from gpucenter.services.jobs import manage as jobs
from gpucenter.services.scheduling import priority_writes as writes
from gpucenter.services.scheduling.cycle import run_pass
from tests.factories import make_context, seed_centre


def _breakdown(job: int, total: float) -> PriorityBreakdown:
    return PriorityBreakdown(
        job_id=JobId(job),
        total=total,
        fair_share=total,
        age=0.0,
        job_size=0.0,
        qos=0.0,
        weights=(1.0, 1.0, 1.0, 1.0),
    )


@pytest.mark.parametrize(
    ("stored", "computed", "written"),
    [
        pytest.param(None, 0.5, True, id="new job: always written"),
        pytest.param(0.5, 0.5, False, id="unchanged"),
        pytest.param(0.5, 0.504, False, id="moved under 1%"),
        pytest.param(0.5, 0.51, True, id="moved 2%"),
        pytest.param(0.0, 0.0, False, id="zero stays zero"),
        pytest.param(0.0, 0.001, True, id="from zero"),
        pytest.param(0.5, 0.4, True, id="moved down"),
    ],
)
def test_one_job(stored: float | None, computed: float, written: bool) -> None:
    found = writes.priority_writes({JobId(1): _breakdown(1, computed)}, {1: stored})
    assert (1 in found) is written
    if written:
        assert found[1]["priority"] == pytest.approx(computed)
        assert found[1]["priority_factors"]["fairshare"] == pytest.approx(computed)


def test_new_jobs_always_and_at_most_the_cap_of_moved_ones_most_moved_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(writes, "MAX_PRIORITY_REWRITES", 3)
    computed = {JobId(j): _breakdown(j, 1.0) for j in range(1, 21)}
    # Jobs 1-10 are new; jobs 11-20 were stored 1.1 .. 2.0 (job 20 the furthest off).
    stored: dict[int, float | None] = {j: None for j in range(1, 11)}
    stored |= {j: 1.0 + (j - 10) / 10 for j in range(11, 21)}
    found = writes.priority_writes(computed, stored)
    assert set(found) == set(range(1, 11)) | {18, 19, 20}


@pytest.fixture
def ctx(settings: Settings) -> Iterator[AppContext]:
    context = make_context(settings)
    yield context
    context.dispatcher.shutdown()
    context.engine.dispose()


def test_a_pass_writes_every_new_job_and_then_catches_up_a_few_at_a_time(
    ctx: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thirty jobs that cannot start (more GPUs than the site has free): the first pass
    stores every one's priority whatever the cap; after their stored figures are made
    wrong, each pass puts right at most the cap, the most wrong first, until all agree."""
    monkeypatch.setattr(writes, "MAX_PRIORITY_REWRITES", 4)
    centre = seed_centre(ctx)
    blocker = jobs.submit(
        ctx, centre.alice, jobs.SubmitRequest(project="alpha", command="sleep 30", gpus_per_node=4)
    ).id
    ids = [
        jobs.submit(
            ctx, centre.alice, jobs.SubmitRequest(project="alpha", command="true", gpus_per_node=1)
        ).id
        for _ in range(30)
    ]
    run_pass(ctx)

    def stored() -> dict[int, float | None]:
        with ctx.sessions.begin() as s:
            found = s.execute(select(JobRow.id, JobRow.priority).where(JobRow.id.in_(ids)))
            return {job: priority for job, priority in found}

    first = stored()
    assert all(p is not None for p in first.values()), "a new job's priority is unwritten"
    assert blocker not in first
    # The blocker's start moved the project's fair share: let the stored figures settle.
    settled = first
    for _ in range(15):
        run_pass(ctx)
        settled, before = stored(), settled
        if settled == before:
            break
    else:
        raise AssertionError("stored priorities never settled")
    with ctx.sessions.begin() as s:  # off by 10%, 20%, ... 300%: the last the furthest
        for k, job in enumerate(ids):
            row = s.get(JobRow, job)
            assert row is not None and row.priority is not None
            row.priority = row.priority * (1 + (k + 1) / 10)
    run_pass(ctx)
    after = stored()
    put_right = [job for job in ids if after[job] == pytest.approx(settled[job], rel=0.01)]
    assert put_right == ids[-4:]
    for _ in range(8):
        run_pass(ctx)
    assert stored() == pytest.approx(settled, rel=0.01)
