"""The award pages through a TestClient, in English and Korean: the decision from the run
page, agreements accepted, countersigned and declined, the re-offer proposed and approved,
a report and outcomes submitted, a supplement decided, the outcome report and its download,
a draft edited, an award overridden in a run with its reason; and an outsider sees nothing."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from gpucenter.app import create_app
from gpucenter.config import Settings
from gpucenter.domain.clock import ManualClock
from gpucenter.persistence.tables import AllocationRow
from gpucenter.persistence.tables_allocation import ApplicationRow, AwardRow, AwardRunRow
from gpucenter.persistence.tables_audit import AuditEntryRow
from gpucenter.services.context import AppContext
from gpucenter.services.identity import accounts
from gpucenter.services.programmes import applications as apps
from tests.awards.world import PASSWORD, SIGNATORIES, World, build, review_and_run
from tests.factories import make_context, one_node_site
from tests.security.web import csrf_of, web_session

T0 = datetime(2026, 3, 20, tzinfo=UTC)
Q2 = datetime(2026, 4, 1, tzinfo=UTC)


@dataclass
class Site:
    ctx: AppContext
    world: World
    run_id: int
    app: object

    def client(self, username: str | None = None, lang: str = "en") -> TestClient:
        c = TestClient(self.app, base_url="https://testserver")  # type: ignore[arg-type]
        c.cookies.set("gpc_lang", lang)
        if username:
            web_session(c, username, PASSWORD)
        return c

    def at(self, when: datetime) -> None:
        assert isinstance(self.ctx.clock, ManualClock)
        self.ctx.clock.set(when.timestamp())

    def award(self, name: str) -> int:
        with self.ctx.sessions.begin() as s:
            found = s.scalar(
                select(AwardRow.id).where(AwardRow.application_id == self.world.apps[name])
            )
            assert found is not None
            return int(found)


@pytest.fixture
def site(settings: Settings) -> Iterator[Site]:
    ctx = make_context(settings, one_node_site(8, "h100"))
    ctx.clock = ManualClock(T0.timestamp())
    world = build(ctx.sessions, T0, Q2)
    run_id = review_and_run(world, T0 + timedelta(days=11))
    ctx.clock.set((T0 + timedelta(days=12)).timestamp())
    yield Site(ctx, world, run_id, create_app(ctx, run_scheduler=False))
    ctx.dispatcher.shutdown()
    ctx.engine.dispose()


def post(c: TestClient, page: str, action: str, data: dict[str, str] | None = None) -> object:
    token = csrf_of(c.get(page).text)
    return c.post(action, data=(data or {}) | {"csrf": token}, follow_redirects=False)


def decide(site: Site) -> None:
    pm = site.client("pm")
    r = post(pm, f"/manage/runs/{site.run_id}", f"/manage/runs/{site.run_id}/decide")
    assert r.status_code == 303, r.text  # type: ignore[attr-defined]


def accept(site: Site, name: str, org: str) -> None:
    award = site.award(name)
    r = post(site.client(name), f"/awards/{award}", f"/awards/{award}/accept")
    assert r.status_code == 303, r.text  # type: ignore[attr-defined]
    sig = site.client(SIGNATORIES[org])
    r = post(sig, f"/awards/{award}", f"/awards/{award}/countersign")
    assert r.status_code == 303, r.text  # type: ignore[attr-defined]


def test_offers_agreements_decline_and_re_offer_in_the_portal(site: Site) -> None:
    decide(site)
    pm = site.client("pm")
    page = pm.get(f"/manage/calls/{site.world.call_id}/awards")
    assert page.status_code == 200
    assert page.text.count("Waiting for the PI's acceptance") == 3
    assert "dami&#39;s project" in page.text and "Reserve list" in page.text

    jiwoo = site.client("jiwoo")
    mine = jiwoo.get("/awards")
    assert "jiwoo&#39;s project" in mine.text and "Offered" in mine.text
    ko = site.client("jiwoo", "ko").get(f"/awards/{site.award('jiwoo')}")
    assert "협약 수락" in ko.text and "연구 목적만" in ko.text
    accept(site, "jiwoo", "Hanbit University")
    page = jiwoo.get(f"/awards/{site.award('jiwoo')}")
    assert "In force" in page.text and "Active" in page.text and "Submit the report" in page.text
    # A signatory of another organisation cannot countersign; an outsider sees nothing.
    sora_award = site.award("sora")
    other = site.client(SIGNATORIES["Hanbit University"])
    assert other.get(f"/awards/{sora_award}").status_code == 404
    assert site.client("yuna").get(f"/awards/{sora_award}").status_code == 404

    sora = site.client("sora")
    r = post(sora, f"/awards/{sora_award}", f"/awards/{sora_award}/decline", {"reason": "moved"})
    assert r.status_code == 303  # type: ignore[attr-defined]
    assert "Declined" in sora.get(f"/awards/{sora_award}").text

    r = post(
        pm,
        f"/manage/calls/{site.world.call_id}/awards",
        f"/manage/calls/{site.world.call_id}/reoffer",
    )
    assert r.status_code == 303  # type: ignore[attr-defined]
    proposal = pm.get(r.headers["location"])  # type: ignore[attr-defined]
    assert "dami&#39;s project" in proposal.text and "6,000" in proposal.text
    run = int(r.headers["location"].split("/")[3].split("?")[0])  # type: ignore[attr-defined]
    korean = site.client("pm", "ko").get(f"/manage/reoffers/{run}")
    assert "재배정 승인" in korean.text
    r = post(
        pm,
        f"/manage/reoffers/{run}",
        f"/manage/reoffers/{run}/approve",
        {"reason": "sora declined"},
    )
    assert r.status_code == 303  # type: ignore[attr-defined]
    accept(site, "dami", "Daegu Robotics SME")
    with site.ctx.sessions.begin() as s:
        states = s.scalars(
            select(AllocationRow.state).where(AllocationRow.award_id == site.award("dami"))
        ).all()
        assert list(states) == ["active"]
        actions = set(s.scalars(select(AuditEntryRow.action)))
        assert {"award.decide", "award.active", "award.declined", "call.reoffer.approve"} <= actions


def test_reports_outcomes_requests_and_the_outcome_report(site: Site) -> None:
    decide(site)
    accept(site, "minho", "Busan AI Startup")
    award = site.award("minho")
    minho = site.client("minho")
    page = minho.get(f"/awards/{award}")
    report = int(page.text.split(f"/awards/{award}/reports/")[1].split('"')[0])
    r = post(minho, f"/awards/{award}", f"/awards/{award}/reports/{report}", {"q_summary": ""})
    assert r.status_code == 422 and "please answer this question" in r.text  # type: ignore[attr-defined]
    answers = {"q_summary": "pre-training done", "q_commercial_use": "no"}
    r = post(minho, f"/awards/{award}", f"/awards/{award}/reports/{report}", answers)
    assert r.status_code == 303  # type: ignore[attr-defined]
    for data in (
        {"kind": "paper", "title": "Speech", "identifier": "doi:10.1234/speech.1"},
        {"kind": "people_trained", "count": "4"},
    ):
        r = post(minho, f"/awards/{award}", f"/awards/{award}/outcomes", data)
        assert r.status_code == 303  # type: ignore[attr-defined]
    r = post(
        minho,
        f"/awards/{award}",
        f"/awards/{award}/outcomes",
        {"kind": "paper", "title": "x", "identifier": "not-a-doi"},
    )
    assert r.status_code == 422 and "DOI" in r.text  # type: ignore[attr-defined]
    body = {
        "kind": "supplement",
        "gpu_type": "h100",
        "period": site.world.period,
        "gpu_hours": "1000",
        "justification": "more ablations",
    }
    r = post(minho, f"/awards/{award}", f"/awards/{award}/requests", body)
    assert r.status_code == 303  # type: ignore[attr-defined]

    pm = site.client("pm")
    call_page = f"/manage/calls/{site.world.call_id}/awards"
    page = pm.get(call_page)
    assert "more ablations" in page.text and "pre-training done" in page.text
    request_id = int(page.text.split("/manage/requests/")[1].split("/")[0])
    # Capacity is full: the supplement cannot be approved, and the page says why.
    r = post(
        pm,
        call_page,
        f"/manage/requests/{request_id}/decide",
        {"verdict": "approve", "reason": "ok", "call": str(site.world.call_id)},
    )
    assert r.status_code == 422 and "capacity" in r.text  # type: ignore[attr-defined]
    r = post(
        pm,
        call_page,
        f"/manage/requests/{request_id}/decide",
        {"verdict": "reject", "reason": "the quarter is full", "call": str(site.world.call_id)},
    )
    assert r.status_code == 303  # type: ignore[attr-defined]
    report_review = {"verdict": "accept", "note": "thanks", "call": str(site.world.call_id)}
    r = post(pm, call_page, f"/manage/reports/{report}/review", report_review)
    assert r.status_code == 303  # type: ignore[attr-defined]

    outcomes = pm.get("/reports/outcomes")
    assert outcomes.status_code == 200 and "Startup" in outcomes.text and "Busan" in outcomes.text
    csv = pm.get("/reports/download/outcomes?format=csv")
    assert "programme,applicant_type,region,strategic_field,paper" in csv.text.replace("\ufeff", "")
    assert "ai-gpu-2026,startup,busan,artificial_intelligence,1,0,0,0,4" in csv.text
    assert (
        "사업, 신청 유형, 지역, 전략 분야별 성과"
        in site.client("pm", "ko").get("/reports/outcomes").text
    )
    assert site.client("minho").get("/reports/outcomes").status_code == 403


def test_a_draft_is_edited_and_a_run_overridden_with_a_reason(site: Site) -> None:
    with site.ctx.sessions.begin() as s:
        accounts.create_organisation(s, "Gwangju Lab", "university", T0)
        accounts.create_user(s, "hana", T0, organisation="Gwangju Lab", password=PASSWORD)
    # The call has closed; a draft in another call is edited (drafts are checked on submit).
    hana = site.client("hana")
    r = post(
        hana,
        f"/programmes/calls/{site.world.call_id}/apply",
        f"/programmes/calls/{site.world.call_id}/apply",
        {
            "title": "First title",
            "region": "gwangju",
            "field": "quantum",
            "kind": "gpu_hours",
            "gpu_type": "h100",
            "period": site.world.period,
            "gpu_hours": "1000",
            "min_gpu_hours": "500",
            "action": "draft",
        },
    )
    assert r.status_code == 303, r.text  # type: ignore[attr-defined]
    with site.ctx.sessions.begin() as s:
        draft = s.scalar(select(ApplicationRow).where(ApplicationRow.title == "First title"))
        assert draft is not None and draft.state == apps.DRAFT
        draft_id = draft.id
    form = hana.get(f"/applications/{draft_id}/edit")
    assert (
        form.status_code == 200
        and 'value="First title"' in form.text
        and 'value="1000"' in form.text
    )
    r = post(
        hana,
        f"/applications/{draft_id}/edit",
        f"/applications/{draft_id}/edit",
        {
            "title": "Better title",
            "region": "gwangju",
            "field": "quantum",
            "kind": "gpu_hours",
            "gpu_type": "h100",
            "period": site.world.period,
            "gpu_hours": "1200",
            "min_gpu_hours": "600",
            "action": "draft",
        },
    )
    assert r.status_code == 303  # type: ignore[attr-defined]
    with site.ctx.sessions.begin() as s:
        row = s.get(ApplicationRow, draft_id)
        assert row is not None and row.title == "Better title"
        assert [b.gpu_hours for b in apps.batch_items(s, row)] == [1200.0]
    assert site.client("jiwoo").get(f"/applications/{draft_id}/edit").status_code == 404

    pm = site.client("pm")
    run_page = f"/manage/runs/{site.run_id}"
    r = post(
        pm,
        run_page,
        f"/manage/runs/{site.run_id}/override",
        {"application": str(site.world.apps["jiwoo"]), "gpu_hours": "6000", "reason": ""},
    )
    assert r.status_code == 422  # type: ignore[attr-defined]
    r = post(
        pm,
        run_page,
        f"/manage/runs/{site.run_id}/override",
        {
            "application": str(site.world.apps["jiwoo"]),
            "gpu_hours": "6000",
            "reason": "two GPUs of the group retire",
        },
    )
    assert r.status_code == 303  # type: ignore[attr-defined]
    new_run = r.headers["location"].split("?")[0]  # type: ignore[attr-defined]
    assert "two GPUs of the group retire" in pm.get(new_run).text
    r = post(pm, new_run, f"{new_run}/decide")
    assert r.status_code == 303, r.text  # type: ignore[attr-defined]
    with site.ctx.sessions.begin() as s:
        award = s.scalar(
            select(AwardRow).where(AwardRow.application_id == site.world.apps["jiwoo"])
        )
        assert award is not None and award.gpu_hours == 6000
        assert award.override_reason is not None and "retire" in award.override_reason
        decided = s.scalar(select(AuditEntryRow).where(AuditEntryRow.action == "call.decide"))
        assert decided is not None and "retire" in decided.details["reason"]
        assert s.scalar(select(AwardRunRow.id).where(AwardRunRow.decided.is_(True))) is not None
