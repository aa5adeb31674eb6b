"""Acceptance (issue 21), through the services on SQLite and PostgreSQL: a call's awards
with a reserve list -> a PI declines -> the first reserve applicant gets an allocation under
the same shares -> the monthly check warns, then reclaims part of an idle award -> re-offered
-> an overdue progress report holds the project's new jobs in the real scheduler -> the
report releases them -> outcomes counted in the ministry's report -> a renewal extends the
allocation. Shares and caps are checked after every re-award, and every state change of
every award is in the audit log with its actor."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from gpucenter.allocation import AwardProblem, violations
from gpucenter.allocation.lifecycle import AwardState
from gpucenter.allocation.outcomes import OutcomeDimension, OutcomeInput
from gpucenter.config import Settings
from gpucenter.domain.clock import ManualClock
from gpucenter.domain.jobs import JobState, WaitReason
from gpucenter.persistence.tables import AllocationRow, JobRow, ProjectRow
from gpucenter.persistence.tables_allocation import ApplicationRow, AwardRow
from gpucenter.persistence.tables_awards import ReserveRow
from gpucenter.services.awards import (
    agreements,
    checks,
    decision,
    outcomes,
    periodic,
    reports,
    requests,
    reserve,
)
from gpucenter.services.context import AppContext
from gpucenter.services.jobs.submission import JobForm
from gpucenter.services.jobs.submit import submit
from gpucenter.services.programmes import calls as prog
from gpucenter.services.scheduling.cycle import run_pass
from tests.awards.world import (
    APPLICANTS,
    SIGNATORIES,
    World,
    assert_every_award_move_audited,
    build,
    charge,
    review_and_run,
)
from tests.factories import make_context, one_node_site

T0 = datetime(2026, 3, 20, tzinfo=UTC)
Q2 = datetime(2026, 4, 1, tzinfo=UTC)


@pytest.fixture
def ctx(settings: Settings) -> Iterator[AppContext]:
    ctx = make_context(settings, one_node_site(8, "h100"))
    ctx.clock = ManualClock(T0.timestamp())
    yield ctx
    ctx.dispatcher.shutdown()
    ctx.engine.dispose()


def at(ctx: AppContext, when: datetime) -> datetime:
    """Move the context's clock (the scheduler and job submission read it) to `when`."""
    assert isinstance(ctx.clock, ManualClock)
    ctx.clock.set(when.timestamp())
    return when


def award_of(s: Session, world: World, name: str) -> AwardRow:
    row = s.scalar(select(AwardRow).where(AwardRow.application_id == world.apps[name]))
    assert row is not None, name
    return row


def accept(world: World, name: str, now: datetime) -> AwardRow:
    """The PI accepts and the organisation's signatory countersigns."""
    with world.sessions.begin() as s:
        award = award_of(s, world, name)
        agreements.accept(s, world.who(s, name), award.id, now)
        org = next(o for n, o, *_ in APPLICANTS if n == name)
        agreements.countersign(s, world.who(s, SIGNATORIES[org]), award.id, now)
        return award


def assert_shares_and_caps_hold(s: Session, world: World) -> None:
    """The call's standing awards as they hold now, against the call's own rules."""
    call = prog.call_row(s, world.call_id)
    standing = reserve.standing(s, call)
    problem = AwardProblem(
        prog.capacity_of(s, call.id),
        tuple(x.candidate for x in standing),
        prog.policy_of(call.config),
    )
    held = {x.candidate.app_id: x.award for x in standing}
    broken = [v for v in violations(problem, held) if not v.startswith("application")]
    assert broken == []


def test_the_whole_life_of_a_call_s_awards(ctx: AppContext) -> None:
    world = build(ctx.sessions, T0, Q2)
    run_id = review_and_run(world, T0 + timedelta(days=11))

    # The decision: three offers, pending allocations, agreements, the reserve list.
    decided = T0 + timedelta(days=12)
    with ctx.sessions.begin() as s:
        made = decision.decide(s, world.who(s, "pm"), run_id, decided)
        assert {a.application_id for a in made} == {
            world.apps[n] for n in ("jiwoo", "minho", "sora")
        }
        assert all(a.state == AwardState.OFFERED for a in made)
        allocs = s.scalars(select(AllocationRow).where(AllocationRow.award_id.is_not(None)))
        assert {a.state for a in allocs} == {"pending"}
        ranked = [(r.rank, r.application_id) for r in reserve.reserve_list(s, world.call_id)]
        assert ranked == [(1, world.apps["dami"]), (2, world.apps["yuna"])]
        assert s.get(ApplicationRow, world.apps["dami"]).state == "reserve"  # type: ignore[union-attr]
        assert_shares_and_caps_hold(s, world)

    # Two PIs accept (and their organisations countersign); the third declines.
    jiwoo = accept(world, "jiwoo", decided + timedelta(days=1))
    minho = accept(world, "minho", decided + timedelta(days=1))
    with ctx.sessions.begin() as s:
        assert award_of(s, world, "jiwoo").state == AwardState.ACTIVE
        sora = award_of(s, world, "sora")
        agreements.decline(
            s, world.who(s, "sora"), sora.id, "the group moved", decided + timedelta(days=2)
        )
        states = set(
            s.scalars(select(AllocationRow.state).where(AllocationRow.award_id == sora.id))
        )
        assert states == {"withdrawn"}
        freed = reserve.freed(s, world.call_id, decided + timedelta(days=2))
        assert freed[("h100", world.period)] == 6000.0

    # The freed 6,000 GPU-hours go to the first reserve applicant, under the same shares.
    with ctx.sessions.begin() as s:
        pm = world.who(s, "pm")
        proposal = reserve.propose(s, pm, world.call_id, decided + timedelta(days=3))
        assert set(proposal.result["awards"]) == {str(world.apps["dami"])}
        assert proposal.result["violations"] == []
        reserve.approve(s, pm, proposal.id, decided + timedelta(days=3), "sora declined")
        assert_shares_and_caps_hold(s, world)
    dami = accept(world, "dami", decided + timedelta(days=4))
    with ctx.sessions.begin() as s:
        got = s.scalars(select(AllocationRow).where(AllocationRow.award_id == dami.id)).all()
        assert [(a.state, a.gpu_seconds) for a in got] == [("active", 6000 * 3600)]
        entry = s.scalar(select(ReserveRow).where(ReserveRow.application_id == world.apps["dami"]))
        assert entry is not None and entry.state == "offered" and entry.award_id == dami.id

    # April: minho and dami use their GPUs, jiwoo does not. jiwoo and dami report on time.
    with ctx.sessions.begin() as s:
        for award, hours in ((minho, 1500), (dami, 1500)):
            alloc = s.scalar(select(AllocationRow).where(AllocationRow.award_id == award.id))
            assert alloc is not None
            charge(s, alloc.id, hours, Q2 + timedelta(days=25), f"april-{award.id}")
        for name in ("jiwoo", "dami"):
            award = award_of(s, world, name)
            report = reports.reports_of(s, award)[0]
            assert report.kind == "progress" and report.due_at.month == 5
            answers = {"summary": "on track", "commercial_use": "no"}
            reports.submit(s, world.who(s, name), report.id, answers, Q2 + timedelta(days=27))

    # 1 May: the leader's tick marks minho's report overdue and the monthly check warns jiwoo.
    may = at(ctx, datetime(2026, 5, 1, 2, tzinfo=UTC))
    tick = periodic.run_periodic(ctx.sessions, may)
    assert tick.failed == [] and tick.overdue == 1
    assert tick.monthly is not None and tick.monthly.warned == 1
    assert periodic.run_periodic(ctx.sessions, may).monthly is None  # once a month

    # minho's new job waits, saying why; the report releases it.
    at(ctx, may + timedelta(days=1))
    with ctx.sessions.begin() as s:
        project = s.get(ProjectRow, minho.project_id)
        assert project is not None
        caller = world.who(s, "minho")
    job = submit(
        ctx,
        caller,
        JobForm(
            project=project.name, command="sleep 30", gpus_per_node=1, gpu_type="h100", time="1h"
        ),
    )
    run_pass(ctx)
    with ctx.sessions.begin() as s:
        row = s.get(JobRow, job.id)
        assert row is not None and row.state == JobState.PENDING
        assert row.reason == WaitReason.HELD
        assert "progress report" in row.reason_detail and "submitted" in row.reason_detail
        report = reports.reports_of(s, award_of(s, world, "minho"))[0]
        reports.submit(
            s,
            world.who(s, "minho"),
            report.id,
            {"summary": "late but done", "commercial_use": "no"},
            may + timedelta(days=1),
        )
    run_pass(ctx)
    with ctx.sessions.begin() as s:
        row = s.get(JobRow, job.id)
        assert row is not None and row.state == JobState.RUNNING, (row.state, row.reason_detail)

    # May: jiwoo uses a little; 1 June: still idle, so part of the award is to be reclaimed.
    with ctx.sessions.begin() as s:
        alloc_j = s.scalar(select(AllocationRow).where(AllocationRow.award_id == jiwoo.id))
        assert alloc_j is not None
        charge(s, alloc_j.id, 500, datetime(2026, 5, 20, tzinfo=UTC), "may-jiwoo")
        for award in (minho, dami):
            alloc = s.scalar(select(AllocationRow).where(AllocationRow.award_id == award.id))
            assert alloc is not None
            charge(s, alloc.id, 2000, datetime(2026, 5, 25, tzinfo=UTC), f"may-{award.id}")
    june = datetime(2026, 6, 1, 2, tzinfo=UTC)
    tick = periodic.run_periodic(ctx.sessions, june)
    assert tick.monthly is not None and tick.monthly.reclaim_notices == 1
    with ctx.sessions.begin() as s:
        notice = next(n for n in checks.notices_of(s, jiwoo) if n.kind == "reclaim")
        assert notice.state == "open" and 0 < notice.gpu_hours < 7500
        planned = notice.gpu_hours
    # Nobody appeals: a week later the leader reclaims.
    tick = periodic.run_periodic(ctx.sessions, june + timedelta(days=7, hours=1))
    assert tick.reclaimed == 1
    with ctx.sessions.begin() as s:
        alloc_j = s.get(AllocationRow, alloc_j.id)
        assert alloc_j is not None
        assert alloc_j.gpu_seconds == pytest.approx((8000 - planned) * 3600, abs=2)
        freed = reserve.freed(s, world.call_id, june + timedelta(days=8))
        assert freed[("h100", world.period)] == pytest.approx(planned, abs=0.01)

    # Re-offered: the next on the reserve list gets an award and, accepted, an allocation.
    with ctx.sessions.begin() as s:
        pm = world.who(s, "pm")
        proposal = reserve.propose(s, pm, world.call_id, june + timedelta(days=8))
        assert set(proposal.result["awards"]) == {str(world.apps["yuna"])}
        reserve.approve(s, pm, proposal.id, june + timedelta(days=8))
        assert_shares_and_caps_hold(s, world)
    yuna = accept(world, "yuna", june + timedelta(days=9))
    with ctx.sessions.begin() as s:
        got = s.scalars(select(AllocationRow).where(AllocationRow.award_id == yuna.id)).all()
        assert [a.state for a in got] == ["active"] and got[0].starts_at.day == 9

    # Outcomes, counted in the ministry's report by programme, type, region and field.
    with ctx.sessions.begin() as s:
        for name, raw in (
            (
                "minho",
                OutcomeInput("paper", "Korean speech at scale", "https://doi.org/10.1234/ksp.2026"),
            ),
            ("minho", OutcomeInput("people_trained", "", count=3)),
            (
                "jiwoo",
                OutcomeInput("model", "Weather-7B", "https://huggingface.co/hanbit/weather-7b"),
            ),
        ):
            reports.record_outcome(s, world.who(s, name), award_of(s, world, name).id, raw, june)
        dims = list(OutcomeDimension)
        rows = {
            tuple(r.key.values()): r.counts
            for r in outcomes.outcome_report(s, world.who(s, "pm"), dims)
        }
        assert rows[("ai-gpu-2026", "startup", "busan", "artificial_intelligence")] == {
            "paper": 1,
            "people_trained": 3,
        }
        assert rows[("ai-gpu-2026", "university", "busan", "artificial_intelligence")] == {
            "model": 1
        }

    # A renewal for the next quarter: a reviewer recommends, the manager approves, and the
    # allocation runs on to the quarter's end (the final report moves with it).
    with ctx.sessions.begin() as s:
        req = requests.submit(
            s,
            world.who(s, "minho"),
            minho.id,
            "renewal",
            {"gpu_type": "h100", "period": world.next_period, "gpu_hours": 5000},
            "the model converges; fine-tuning next",
            june + timedelta(days=10),
        )
        pm = world.who(s, "pm")
        with pytest.raises(Exception, match="reviewer"):
            requests.decide(s, pm, req.id, True, "too early", june + timedelta(days=10))
        requests.assign_reviewer(s, pm, req.id, "rev1", june + timedelta(days=10))
        requests.recommend(
            s, world.who(s, "rev1"), req.id, True, "good progress", june + timedelta(days=11)
        )
        requests.decide(s, pm, req.id, True, "recommended", june + timedelta(days=12))
        award = award_of(s, world, "minho")
        assert award.ends_at is not None and award.ends_at.month == 10 and award.ends_at.day == 1
        periods = sorted(
            (a.starts_at.month, a.gpu_seconds // 3600, a.state)
            for a in s.scalars(select(AllocationRow).where(AllocationRow.award_id == award.id))
        )
        assert periods == [(4, 6000, "active"), (7, 5000, "active")]
        final = next(r for r in reports.reports_of(s, award) if r.kind == "final")
        assert final.due_at.date() == datetime(2026, 10, 31).date()
        assert_shares_and_caps_hold(s, world)

    # Every state change of every award, in the audit log with its actor.
    with ctx.sessions.begin() as s:
        assert_every_award_move_audited(s)
