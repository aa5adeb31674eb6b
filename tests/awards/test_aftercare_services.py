"""The after-award rules one by one, through the services: deadlines and countersignature,
programmes without agreements, appeals, commercial use, supplements, extensions and
transfers, the fast tier, overrides, the reserve list's closing, report review, e-mail."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gpucenter.allocation.lifecycle import AwardState
from gpucenter.allocation.outcomes import OutcomeInput
from gpucenter.config import Settings
from gpucenter.domain.errors import Conflict, NotFound, PermissionDenied, ValidationError
from gpucenter.persistence.db import make_engine, session_factory
from gpucenter.persistence.tables import AllocationRow
from gpucenter.persistence.tables_accounting import NotificationRow
from gpucenter.persistence.tables_allocation import ApplicationRow, AwardRow
from gpucenter.persistence.tables_audit import AuditEntryRow
from gpucenter.services.accounting.budgets import deliver_email
from gpucenter.services.awards import (
    agreements,
    checks,
    decision,
    periodic,
    reports,
    requests,
    reserve,
    tiers,
)
from gpucenter.services.identity import accounts
from gpucenter.services.identity.audit_keys import AuditFiles
from gpucenter.services.programmes import applications as apps
from tests.awards.world import SIGNATORIES, World, build, charge, config, review_and_run

T0 = datetime(2026, 3, 20, tzinfo=UTC)
Q2 = datetime(2026, 4, 1, tzinfo=UTC)
DECIDED = T0 + timedelta(days=12)


@pytest.fixture
def sessions(settings: Settings) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(settings.effective_database_url)
    yield session_factory(engine, {"audit_files": AuditFiles.under(settings.var_dir)})
    engine.dispose()


def decided(sessions: sessionmaker[Session], **cfg: object) -> World:
    extra = cfg.pop("extra", None)
    world = build(sessions, T0, Q2, config(**cfg), extra)  # type: ignore[arg-type]
    run_id = review_and_run(world, T0 + timedelta(days=11))
    with sessions.begin() as s:
        decision.decide(s, world.who(s, "pm"), run_id, DECIDED)
    return world


def award_of(s: Session, world: World, name: str) -> AwardRow:
    row = s.scalar(select(AwardRow).where(AwardRow.application_id == world.apps[name]))
    assert row is not None
    return row


def active(world: World, s: Session, name: str, org: str, when: datetime = DECIDED) -> AwardRow:
    award = award_of(s, world, name)
    agreements.accept(s, world.who(s, name), award.id, when)
    agreements.countersign(s, world.who(s, SIGNATORIES[org]), award.id, when)
    return award


def test_an_offer_not_accepted_in_time_lapses_and_only_its_people_act_on_it(sessions) -> None:
    world = decided(sessions)
    with sessions.begin() as s:
        jiwoo = award_of(s, world, "jiwoo")
        # Who may not see the award learns nothing of it (not even that it exists).
        with pytest.raises(NotFound):
            agreements.accept(s, world.who(s, "minho"), jiwoo.id, DECIDED)
        agreements.accept(s, world.who(s, "jiwoo"), jiwoo.id, DECIDED)
        with pytest.raises(NotFound):  # another organisation's signatory
            agreements.countersign(
                s, world.who(s, SIGNATORIES["Busan AI Startup"]), jiwoo.id, DECIDED
            )
        with pytest.raises(PermissionDenied):  # the PI does not countersign for the university
            agreements.countersign(s, world.who(s, "jiwoo"), jiwoo.id, DECIDED)
        minho = award_of(s, world, "minho")
        late = DECIDED + timedelta(days=15)
        with pytest.raises(Conflict, match="lapsed"):
            agreements.accept(s, world.who(s, "minho"), minho.id, late)
    tick = periodic.run_periodic(sessions, DECIDED + timedelta(days=15))
    assert sorted(tick.lapsed) == sorted([jiwoo.id, minho.id, award_of_id(sessions, world, "sora")])
    with sessions.begin() as s:
        assert {a.state for a in s.scalars(select(AwardRow))} == {"lapsed"}
        assert set(s.scalars(select(AllocationRow.state))) == {"withdrawn"}
        lapse = s.scalar(select(AuditEntryRow).where(AuditEntryRow.action == "award.lapsed"))
        assert lapse is not None and lapse.actor == "system" and lapse.actor_id is None
        told = s.scalars(
            select(NotificationRow.subject).where(NotificationRow.kind == "award")
        ).all()
        assert any("lapsed" in t for t in told)


def award_of_id(sessions: sessionmaker[Session], world: World, name: str) -> int:
    with sessions.begin() as s:
        return award_of(s, world, name).id


def test_programmes_without_countersignature_or_agreement(sessions) -> None:
    world = decided(sessions, agreement={"countersignature": False})
    with sessions.begin() as s:
        award = award_of(s, world, "jiwoo")
        agreements.accept(s, world.who(s, "jiwoo"), award.id, DECIDED)
        assert award.state == AwardState.ACTIVE
        assert reports.reports_of(s, award)[0].kind == "progress"


def test_no_agreement_means_active_at_the_decision(sessions) -> None:
    decided(sessions, agreement={"required": False})
    with sessions.begin() as s:
        assert {a.state for a in s.scalars(select(AwardRow))} == {"active"}
        assert set(s.scalars(select(AllocationRow.state))) == {"active"}


def _idle_until_reclaim(sessions, world: World) -> tuple[int, int]:
    with sessions.begin() as s:
        award = active(world, s, "jiwoo", "Hanbit University")
        reports.submit(
            s,
            world.who(s, "jiwoo"),
            reports.reports_of(s, award)[0].id,
            {"summary": "ok", "commercial_use": "no"},
            DECIDED,
        )
        award_id = award.id
    periodic.run_periodic(sessions, datetime(2026, 5, 1, 2, tzinfo=UTC))
    periodic.run_periodic(sessions, datetime(2026, 6, 1, 2, tzinfo=UTC))
    with sessions.begin() as s:
        notice = next(
            n
            for n in checks.notices_of(s, s.get(AwardRow, award_id))
            if n.kind == "reclaim"  # type: ignore[arg-type]
        )
        return award_id, notice.id


def test_an_idle_award_is_told_once_by_its_own_check_not_also_by_the_use_check(
    sessions,
) -> None:
    """Two periodic tasks assess use: the award's monthly check (warning, reclaim notice)
    and the leader's use check (every current allocation). An award's PI hears of its idle
    allocation from the first only; an allocation outside any award still gets the second."""
    from gpucenter.services.accounting.useit import periodic_use_check

    world = decided(sessions)
    award_id, _ = _idle_until_reclaim(sessions, world)
    at = datetime(2026, 6, 1, 3, tzinfo=UTC)
    with sessions.begin() as s:
        award = s.get(AwardRow, award_id)
        assert award is not None
        project = award.project_id
        before = s.scalars(select(NotificationRow.subject)).all()
        flagged = periodic_use_check(s, at)
        added = s.scalars(select(NotificationRow.subject)).all()[len(before) :]
    assert any("Award" in subject and "under-used" in subject for subject in before)
    assert [a for a in flagged if a.project_id == project and a.kind == "allocation"] == []
    assert [subject for subject in added if "allocation" in subject] == []
    with sessions.begin() as s:  # an allocation of no award, idle for months: told
        s.add(
            AllocationRow(
                project_id=project,
                gpu_seconds=1000 * 3600,
                starts_at=datetime(2026, 3, 1, tzinfo=UTC),
                ends_at=datetime(2026, 12, 1, tzinfo=UTC),
                created_at=datetime(2026, 3, 1, tzinfo=UTC),
                state="active",
            )
        )
    with sessions.begin() as s:
        flagged = periodic_use_check(s, at)
        told = s.scalars(
            select(NotificationRow.subject).where(NotificationRow.kind == "use-check")
        ).all()
    assert [a.kind for a in flagged if a.project_id == project] == ["allocation"]
    assert len(told) >= 1 and all("allocation" in subject for subject in told)


def test_an_appeal_in_time_stops_a_reclaim_one_too_late_does_not(sessions) -> None:
    world = decided(sessions)
    award_id, notice_id = _idle_until_reclaim(sessions, world)
    with sessions.begin() as s:
        with pytest.raises(ValidationError):
            checks.appeal(
                s, world.who(s, "jiwoo"), notice_id, " ", datetime(2026, 6, 2, tzinfo=UTC)
            )
        checks.appeal(
            s,
            world.who(s, "jiwoo"),
            notice_id,
            "conference deadline in June",
            datetime(2026, 6, 2, tzinfo=UTC),
        )
        with pytest.raises(PermissionDenied):
            checks.decide_appeal(
                s, world.who(s, "jiwoo"), notice_id, True, "mine", datetime(2026, 6, 3, tzinfo=UTC)
            )
        checks.decide_appeal(
            s, world.who(s, "pm"), notice_id, True, "fair", datetime(2026, 6, 3, tzinfo=UTC)
        )
    assert periodic.run_periodic(sessions, datetime(2026, 6, 20, tzinfo=UTC)).reclaimed == 0
    with sessions.begin() as s:
        alloc = s.scalar(select(AllocationRow).where(AllocationRow.award_id == award_id))
        assert alloc is not None and alloc.gpu_seconds == 8000 * 3600
        notice = checks.notice_row(s, notice_id)
        assert notice.state == "withdrawn"
        with pytest.raises(Conflict):
            checks.appeal(
                s, world.who(s, "jiwoo"), notice_id, "again", datetime(2026, 6, 20, tzinfo=UTC)
            )


def test_commercial_use_by_a_research_award_is_flagged_and_can_revoke_it(sessions) -> None:
    world = decided(sessions)
    with sessions.begin() as s:
        award = active(world, s, "minho", "Busan AI Startup")
        alloc = s.scalar(select(AllocationRow).where(AllocationRow.award_id == award.id))
        assert alloc is not None
        charge(s, alloc.id, 1800, datetime(2026, 4, 25, tzinfo=UTC), "use")
        reports.submit(
            s,
            world.who(s, "minho"),
            reports.reports_of(s, award)[0].id,
            {"summary": "we serve customers", "commercial_use": "yes"},
            datetime(2026, 4, 28, tzinfo=UTC),
        )
        award_id = award.id
    tick = periodic.run_periodic(sessions, datetime(2026, 5, 1, 2, tzinfo=UTC))
    assert tick.monthly is not None and tick.monthly.commercial == 1
    with sessions.begin() as s:
        award = s.get(AwardRow, award_id)
        assert award is not None
        flag = next(n for n in checks.notices_of(s, award) if n.kind == "commercial")
        with pytest.raises(NotFound):  # an outsider: the award's existence is not told
            checks.flag_commercial(
                s, world.who(s, "jiwoo"), award_id, "I saw it", datetime(2026, 5, 2, tzinfo=UTC)
            )
        with pytest.raises(PermissionDenied):  # its own PI sees it but does not flag it
            checks.flag_commercial(
                s, world.who(s, "minho"), award_id, "I saw it", datetime(2026, 5, 2, tzinfo=UTC)
            )
        checks.review_commercial(
            s,
            world.who(s, "pm"),
            flag.id,
            True,
            "a paid API was run on it",
            datetime(2026, 5, 2, tzinfo=UTC),
        )
        assert award.state == AwardState.REVOKED
        alloc = s.scalar(select(AllocationRow).where(AllocationRow.award_id == award_id))
        assert alloc is not None and alloc.state == "suspended"
        assert alloc.gpu_seconds == pytest.approx(1800 * 3600)  # what it used, nothing more


def test_supplement_extension_and_transfer_change_the_allocation(sessions) -> None:
    world = decided(sessions, extra={"b200": {"2026Q2": 4000}})
    now = DECIDED + timedelta(days=5)
    with sessions.begin() as s:
        award = active(world, s, "minho", "Busan AI Startup")
        pi, pm = world.who(s, "minho"), world.who(s, "pm")
        with pytest.raises(NotFound):  # an outsider: the award's existence is not told
            requests.submit(s, world.who(s, "jiwoo"), award.id, "extension", {"days": 10}, "x", now)
        with pytest.raises(PermissionDenied):  # its programme manager sees it, asks nothing
            requests.submit(s, pm, award.id, "extension", {"days": 10}, "x", now)
        with pytest.raises(ValidationError, match="at most 90 days"):
            requests.submit(s, pi, award.id, "extension", {"days": 120}, "late data", now)
        ext = requests.submit(s, pi, award.id, "extension", {"days": 30}, "late data", now)
        requests.decide(s, pm, ext.id, True, "fine", now)
        assert award.ends_at is not None and award.ends_at.date() == datetime(2026, 7, 31).date()
        final = next(r for r in reports.reports_of(s, award) if r.kind == "final")
        assert final.due_at.date() == datetime(2026, 8, 30).date()
        moved = requests.submit(
            s,
            pi,
            award.id,
            "transfer",
            {"from_type": "h100", "to_type": "b200", "period": "2026Q2", "gpu_hours": 1500},
            "b200 suits the model",
            now,
        )
        requests.decide(s, pm, moved.id, True, "room on b200", now)
        held = {
            (a.gpu_type, a.gpu_seconds // 3600)
            for a in s.scalars(select(AllocationRow).where(AllocationRow.award_id == award.id))
        }
        assert held == {("h100", 4500), ("b200", 1500)}
        assert award.gpu_hours == pytest.approx(6000)
        sup = requests.submit(
            s,
            pi,
            award.id,
            "supplement",
            {"gpu_type": "b200", "period": "2026Q2", "gpu_hours": 2000},
            "more",
            now,
        )
        requests.decide(s, pm, sup.id, True, "ok", now)
        assert award.gpu_hours == pytest.approx(8000)
        too_much = requests.submit(
            s,
            pi,
            award.id,
            "supplement",
            {"gpu_type": "b200", "period": "2026Q2", "gpu_hours": 600},
            "more",
            now,
        )
        with pytest.raises(ValidationError, match="capacity b200"):
            requests.decide(s, pm, too_much.id, True, "ok", now)
        actions = {e.action for e in s.scalars(select(AuditEntryRow))}
        assert {"request.submit", "request.approved"} <= actions


def test_the_fast_tier(sessions) -> None:
    world = build(
        sessions, T0, Q2, config(tier={"kind": "fast", "decide_within_days": 3}, max_gpu_hours=8000)
    )
    now = T0 + timedelta(days=2)
    with sessions.begin() as s:
        pm = world.who(s, "pm")
        late = T0 + timedelta(days=5)
        line = {q.application_id: q for q in tiers.queue(s, pm, world.call_id, late)}
        assert line[world.apps["jiwoo"]].late and len(line) == 5
        made = tiers.decide(s, pm, world.apps["jiwoo"], True, "", now, gpu_hours=5000)
        assert made is not None and made.gpu_hours == 5000 and made.state == "offered"
        assert made.source == "fast"
        assert agreements.agreement_of(s, made) is not None
        # Automatic eligibility: one fast award per applicant.
        with pytest.raises(Conflict, match="one award per applicant"):
            form = apps.ApplicationForm(
                title="second",
                region="busan",
                requests=[{"gpu_type": "h100", "period": world.period, "gpu_hours": 100}],
                min_gpu_hours=50,
            )
            row = apps.create_application(s, world.who(s, "jiwoo"), world.call_id, form, now)
            apps.submit_application(s, world.who(s, "jiwoo"), row.id, now)
        with pytest.raises(ValidationError):
            tiers.decide(s, pm, world.apps["minho"], False, "", now)
        tiers.decide(s, pm, world.apps["minho"], False, "outside the tier's purpose", now)
        assert s.get(ApplicationRow, world.apps["minho"]).state == "rejected"  # type: ignore[union-attr]
        with pytest.raises(ValidationError, match="capacity"):
            for name in ("sora", "dami", "yuna"):  # 5,000 + 3 x 6,000 > 20,000
                tiers.decide(s, pm, world.apps[name], True, "", now)


def test_overrides_reserve_closing_report_review_and_mail(sessions) -> None:
    world = decided(sessions)
    with sessions.begin() as s:
        pm = world.who(s, "pm")
        award = active(world, s, "jiwoo", "Hanbit University")
        with pytest.raises(ValidationError, match="reason"):
            tiers.override(s, pm, award.id, 7000, " ", DECIDED)
        with pytest.raises(ValidationError, match="capacity"):
            tiers.override(s, pm, award.id, 9000, "more", DECIDED)
        tiers.override(s, pm, award.id, 7000, "the group shrank", DECIDED)
        assert award.gpu_hours == 7000
        entry = s.scalar(select(AuditEntryRow).where(AuditEntryRow.action == "award.override"))
        assert entry is not None and entry.details["reason"] == "the group shrank"
        report = reports.reports_of(s, award)[0]
        reports.submit(
            s, world.who(s, "jiwoo"), report.id, {"summary": "ok", "commercial_use": "no"}, DECIDED
        )
        reports.review(s, pm, report.id, False, "add the loss curves", DECIDED)
        assert report.state == "returned" and report.due_at > DECIDED
        reports.submit(
            s,
            world.who(s, "jiwoo"),
            report.id,
            {"summary": "with curves", "commercial_use": "no"},
            DECIDED,
        )
        reports.review(s, pm, report.id, True, "", DECIDED)
        final = next(r for r in reports.reports_of(s, award) if r.kind == "final")
        reports.submit(
            s, world.who(s, "jiwoo"), final.id, {"summary": "done", "commercial_use": "no"}, DECIDED
        )
        reports.review(s, pm, final.id, True, "", DECIDED)
        assert award.state == AwardState.COMPLETED
        assert reserve.close(s, pm, world.call_id, DECIDED) == 2
        assert {
            a.state
            for a in s.scalars(select(ApplicationRow))
            if a.id in (world.apps["dami"], world.apps["yuna"])
        } == {"rejected"}
        with pytest.raises(Conflict):
            reports.record_outcome(
                s,
                world.who(s, "sora"),
                award_of(s, world, "sora").id,
                OutcomeInput("model", "m", "a/b"),
                DECIDED,
            )

    class Mailer:
        def __init__(self) -> None:
            self.sent: list[tuple[str, str]] = []

        def send(self, to: str, subject: str, body: str) -> None:
            self.sent.append((to, subject))

    mailer = Mailer()
    assert deliver_email(sessions, mailer, DECIDED, "example.kr") > 0
    assert any(
        to == "jiwoo@example.kr" and "Award offered" in subject for to, subject in mailer.sent
    )


def test_a_reserve_applicant_who_withdraws_leaves_the_list(sessions) -> None:
    world = decided(sessions)
    with sessions.begin() as s:
        apps.withdraw_application(s, world.who(s, "dami"), world.apps["dami"], DECIDED)
        states = {r.application_id: r.state for r in reserve.reserve_list(s, world.call_id)}
        assert states[world.apps["dami"]] == "closed"
        sora = award_of(s, world, "sora")
        agreements.decline(s, world.who(s, "sora"), sora.id, "", DECIDED)
        run = reserve.propose(s, world.who(s, "pm"), world.call_id, DECIDED)
        assert set(run.result["awards"]) == {str(world.apps["yuna"])}
        with pytest.raises(ValidationError):
            decision.decide(s, world.who(s, "pm"), run.id, DECIDED)
        with pytest.raises(PermissionDenied):
            reserve.approve(s, world.who(s, "jiwoo"), run.id, DECIDED)


def test_a_signatory_is_a_centre_role_an_admin_grants(sessions) -> None:
    with sessions.begin() as s:
        accounts.create_organisation(s, "Jeju Uni", "university", T0)
        accounts.create_user(s, "jeju-sig", T0, organisation="Jeju Uni")
        accounts.grant_role(s, "jeju-sig", "org_signatory", T0)
        assert ("jeju-sig", "org_signatory") in accounts.centre_roles(s)
