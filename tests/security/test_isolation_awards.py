"""Isolation on the after-award routes (API and portal): an award, its agreement, reports,
notices and change requests, and its call's re-offers belong to the award's team, its
organisation's signatory, the call's programme managers and a reviewer appointed to a
request. Anyone else (a manager of another programme, an applicant or a signatory of another
organisation, a reviewer of the programme not appointed to the request) gets 403 or 404 on
every route with an id, never the data, and a refused POST changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from gpucenter.app import create_app
from gpucenter.config import Settings
from gpucenter.domain.clock import ManualClock
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.tables import AllocationRow
from gpucenter.persistence.tables_allocation import (
    ApplicationRow,
    AwardRow,
    AwardRunRow,
    LeaseRow,
)
from gpucenter.persistence.tables_audit import RoleAssignmentRow
from gpucenter.persistence.tables_awards import (
    AgreementRow,
    AwardReportRow,
    AwardRequestRow,
    OutcomeRow,
    ReserveRow,
    UseNoticeRow,
)
from gpucenter.services.awards import agreements, checks, decision, reports, requests, reserve
from gpucenter.services.context import AppContext
from gpucenter.services.identity import accounts
from gpucenter.services.programmes import calls as prog
from tests.awards.world import PASSWORD, SIGNATORIES, World, build, review_and_run
from tests.factories import make_context, one_node_site
from tests.security.web import csrf_of, web_session

API_ROUTES: list[tuple[str, str]] = [
    ("GET", "/api/v1/awards/{award_id}"),
    ("POST", "/api/v1/awards/{award_id}/accept"),
    ("POST", "/api/v1/awards/{award_id}/countersign"),
    ("POST", "/api/v1/awards/{award_id}/decline"),
    ("POST", "/api/v1/awards/reports/{report_id}"),
    ("POST", "/api/v1/awards/reports/{report_id}/review"),
    ("POST", "/api/v1/awards/{award_id}/outcomes"),
    ("POST", "/api/v1/awards/{award_id}/requests"),
    ("POST", "/api/v1/awards/requests/{request_id}/reviewer"),
    ("POST", "/api/v1/awards/requests/{request_id}/recommend"),
    ("POST", "/api/v1/awards/requests/{request_id}/decide"),
    ("POST", "/api/v1/awards/requests/{request_id}/withdraw"),
    ("POST", "/api/v1/awards/notices/{notice_id}/appeal"),
    ("POST", "/api/v1/awards/notices/{notice_id}/decide"),
    ("POST", "/api/v1/awards/notices/{notice_id}/commercial"),
    ("POST", "/api/v1/awards/{award_id}/flag"),
    ("POST", "/api/v1/awards/{award_id}/override"),
    ("GET", "/api/v1/awards/calls/{call_id}"),
    ("POST", "/api/v1/awards/calls/{call_id}/reoffers"),
    ("POST", "/api/v1/awards/reoffers/{run_id}/approve"),
    ("POST", "/api/v1/awards/calls/{call_id}/reserve/close"),
    ("POST", "/api/v1/awards/applications/{app_id}/fast"),
]
WEB_ROUTES: list[tuple[str, str]] = [
    ("GET", "/awards/{award_id}"),
    ("POST", "/awards/{award_id}/accept"),
    ("POST", "/awards/{award_id}/countersign"),
    ("POST", "/awards/{award_id}/decline"),
    ("POST", "/awards/{award_id}/reports/{report_id}"),
    ("POST", "/awards/{award_id}/outcomes"),
    ("POST", "/awards/{award_id}/requests"),
    ("POST", "/awards/{award_id}/notices/{notice_id}/appeal"),
    ("POST", "/renewals/{request_id}"),
    ("GET", "/manage/calls/{call_id}/awards"),
    ("POST", "/manage/calls/{call_id}/reoffer"),
    ("GET", "/manage/reoffers/{run_id}"),
    ("POST", "/manage/reoffers/{run_id}/approve"),
    ("POST", "/manage/calls/{call_id}/reserve/close"),
    ("POST", "/manage/calls/{call_id}/reviewers"),
    ("POST", "/manage/requests/{request_id}/reviewer"),
    ("POST", "/manage/requests/{request_id}/decide"),
    ("POST", "/manage/notices/{notice_id}/appeal"),
    ("POST", "/manage/notices/{notice_id}/commercial"),
    ("POST", "/manage/reports/{report_id}/review"),
    ("POST", "/manage/applications/{app_id}/fast"),
    ("POST", "/manage/awards/{award_id}/override"),
    ("POST", "/manage/awards/{award_id}/flag"),
    ("POST", "/manage/runs/{run_id}/override"),
    ("GET", "/applications/{app_id}/edit"),
    ("POST", "/applications/{app_id}/edit"),
]
# Every after-award route with an id, for the matrix walk in test_isolation.py.
AWARD_ROUTES: list[tuple[str, str]] = API_ROUTES + WEB_ROUTES

T0 = datetime(2026, 3, 20, tzinfo=UTC)
Q2 = datetime(2026, 4, 1, tzinfo=UTC)
DECIDED = T0 + timedelta(days=12)
SECRETS = (
    "Secret plan of Hanbit",
    "secret-report-answer",
    "secret-renewal-reason",
    "secret-flag-evidence",
)
# Outsiders to jiwoo's award (Hanbit University, programme ai-gpu-2026): a manager of another
# programme, an applicant and a signatory of another organisation, a reviewer of the
# programme who is not the one appointed to the renewal.
OUTSIDERS = ("pmb", "yuna", "sig-4", "rev2")

API_BODIES: dict[str, Any] = {
    "/api/v1/awards/{award_id}/decline": {"reason": "x"},
    "/api/v1/awards/reports/{report_id}": {"answers": {"summary": "hostile"}},
    "/api/v1/awards/reports/{report_id}/review": {"accept": True, "note": "x"},
    "/api/v1/awards/{award_id}/outcomes": {"kind": "model", "title": "hostile"},
    "/api/v1/awards/{award_id}/requests": {
        "kind": "extension",
        "body": {"days": 10},
        "justification": "hostile",
    },
    "/api/v1/awards/requests/{request_id}/reviewer": {"username": "rev2"},
    "/api/v1/awards/requests/{request_id}/recommend": {"approve": True, "reason": "x"},
    "/api/v1/awards/requests/{request_id}/decide": {"approve": True, "reason": "x"},
    "/api/v1/awards/notices/{notice_id}/appeal": {"text": "x"},
    "/api/v1/awards/notices/{notice_id}/decide": {"grant": True, "reason": "x"},
    "/api/v1/awards/notices/{notice_id}/commercial": {"confirm": True, "reason": "x"},
    "/api/v1/awards/{award_id}/flag": {"evidence": "x"},
    "/api/v1/awards/{award_id}/override": {"gpu_hours": 100, "reason": "x"},
    "/api/v1/awards/reoffers/{run_id}/approve": {"reason": "x"},
    "/api/v1/awards/applications/{app_id}/fast": {"approve": True, "reason": "x"},
}


@dataclass
class Site:
    ctx: AppContext
    world: World
    ids: dict[str, int]
    app: Any


def _active(s: Session, world: World, name: str, org: str) -> AwardRow:
    award = _award_of(s, world, name)
    agreements.accept(s, world.who(s, name), award.id, DECIDED)
    agreements.countersign(s, world.who(s, SIGNATORIES[org]), award.id, DECIDED)
    return award


def _award_of(s: Session, world: World, name: str) -> AwardRow:
    row = s.scalar(select(AwardRow).where(AwardRow.application_id == world.apps[name]))
    assert row is not None, name
    return row


@pytest.fixture
def site(settings: Settings) -> Iterator[Site]:
    """A decided call: jiwoo's award active with a submitted report, a renewal waiting for
    the appointed reviewer (rev1), a commercial-use flag; sora declined, and a re-offer to
    the reserve list proposed and not yet approved. A second programme with its manager."""
    ctx = make_context(settings, one_node_site(8, "h100"))
    ctx.clock = ManualClock(T0.timestamp())
    world = build(ctx.sessions, T0, Q2)
    run_id = review_and_run(world, T0 + timedelta(days=11))
    ctx.clock.set(DECIDED.timestamp())
    with ctx.sessions.begin() as s:
        pm = world.who(s, "pm")
        decision.decide(s, pm, run_id, DECIDED)
        app = s.get(ApplicationRow, world.apps["jiwoo"])
        assert app is not None
        app.title = SECRETS[0]
        award = _active(s, world, "jiwoo", "Hanbit University")
        jiwoo = world.who(s, "jiwoo")
        report = reports.reports_of(s, award)[0]
        answers = {"summary": SECRETS[1], "commercial_use": "no"}
        reports.submit(s, jiwoo, report.id, answers, DECIDED)
        body = {"gpu_type": "h100", "period": world.next_period, "gpu_hours": 1000}
        renewal = requests.submit(s, jiwoo, award.id, "renewal", body, SECRETS[2], DECIDED)
        requests.assign_reviewer(s, pm, renewal.id, "rev1", DECIDED)
        assert checks.flag_commercial(s, pm, award.id, SECRETS[3], DECIDED) == 1
        notice = next(n for n in checks.notices_of(s, award) if n.kind == "commercial")
        sora = _award_of(s, world, "sora")
        agreements.decline(s, world.who(s, "sora"), sora.id, "moved abroad", DECIDED)
        reoffer = reserve.propose(s, pm, world.call_id, DECIDED)
        root = world.who(s, "root")
        other = prog.create_programme(s, root, "quantum-2026", "MOTIE", DECIDED, "Quantum")
        accounts.create_user(
            s, "pmb", DECIDED, organisation="Ministry of Science", password=PASSWORD
        )
        prog.assign_role(s, root, other.id, "pmb", "programme_manager", DECIDED)
        ids = {
            "award_id": award.id,
            "report_id": report.id,
            "request_id": renewal.id,
            "notice_id": notice.id,
            "call_id": world.call_id,
            "run_id": reoffer.id,
            "app_id": world.apps["jiwoo"],
        }
    yield Site(ctx, world, ids, create_app(ctx, run_scheduler=False))
    ctx.dispatcher.shutdown()
    ctx.engine.dispose()


def snapshot(site: Site) -> dict[str, list[dict[str, Any]]]:
    """Every row an after-award route could change, column by column."""
    tables = (
        AwardRow,
        AgreementRow,
        AwardReportRow,
        AwardRequestRow,
        UseNoticeRow,
        OutcomeRow,
        ReserveRow,
        AwardRunRow,
        ApplicationRow,
        AllocationRow,
        LeaseRow,
        RoleAssignmentRow,
    )
    out: dict[str, list[dict[str, Any]]] = {}
    with site.ctx.sessions.begin() as s:
        for table in tables:
            rows = s.scalars(select(table)).all()
            out[table.__tablename__] = sorted(
                (
                    {c.key: getattr(r, c.key) for c in table.__table__.columns}  # type: ignore[attr-defined]
                    for r in rows
                ),
                key=repr,
            )
    return out


def _token(site: Site, username: str) -> str:
    with site.ctx.sessions.begin() as s:
        return accounts.issue_token(s, repo.user_by_name(s, username).id, DECIDED)


def _browser(site: Site, username: str) -> TestClient:
    c = TestClient(site.app, base_url="https://testserver")
    return web_session(c, username, PASSWORD)


def _refused(r: Any, who: str, method: str, path: str) -> None:
    assert r.status_code in (403, 404), (who, method, path, r.status_code, r.text[:300])
    for secret in SECRETS:
        assert secret not in r.text, (who, method, path, secret)


# Routes about an award's own things: an outsider must not learn that the id exists, so the
# answer for the real id is the one for an id nobody has (a 403 against a 404 would tell).
AWARD_BOUND = ("{award_id}", "{report_id}", "{request_id}", "{notice_id}")
MADE_UP = 987_654


def _same_as_made_up(
    c: TestClient, ids: dict[str, int], r: Any, method: str, path: str, **kw: Any
) -> None:
    if not any(key in path for key in AWARD_BOUND):
        return
    fake = ids | {key.strip("{}"): MADE_UP for key in AWARD_BOUND}
    made_up = c.request(method, path.format(**fake), **kw)
    assert r.status_code == made_up.status_code, (method, path, r.status_code, made_up.text)


def test_the_insiders_see_the_award_so_the_ids_are_real(site: Site) -> None:
    """The ids the hostile tests use are live: the PI, the manager and the appointed reviewer
    each reach them (otherwise a 404 below would prove nothing)."""
    ids = site.ids
    c = TestClient(site.app, base_url="https://testserver")
    pi = {"Authorization": f"Bearer {_token(site, 'jiwoo')}"}
    pm = {"Authorization": f"Bearer {_token(site, 'pm')}"}
    r = c.get(f"/api/v1/awards/{ids['award_id']}", headers=pi)
    assert r.status_code == 200 and SECRETS[0] in r.text
    r = c.get(f"/api/v1/awards/calls/{ids['call_id']}", headers=pm)
    assert r.status_code == 200 and SECRETS[0] in r.text
    assert _browser(site, "pm").get(f"/manage/reoffers/{ids['run_id']}").status_code == 200
    renewals = _browser(site, "rev1").get("/renewals")
    assert renewals.status_code == 200 and SECRETS[2] in renewals.text


@pytest.mark.parametrize("outsider", OUTSIDERS)
def test_an_outsider_gets_nothing_from_the_award_api(site: Site, outsider: str) -> None:
    before = snapshot(site)
    c = TestClient(site.app, base_url="https://testserver")
    headers = {"Authorization": f"Bearer {_token(site, outsider)}"}
    for method, path in API_ROUTES:
        body = API_BODIES.get(path) if method == "POST" else None
        r = c.request(method, path.format(**site.ids), headers=headers, json=body)
        _refused(r, outsider, method, path)
        _same_as_made_up(c, site.ids, r, method, path, headers=headers, json=body)
    assert snapshot(site) == before


@pytest.mark.parametrize("outsider", OUTSIDERS)
def test_an_outsider_gets_nothing_from_the_award_pages(site: Site, outsider: str) -> None:
    before = snapshot(site)
    c = _browser(site, outsider)
    token = csrf_of(c.get("/awards").text)
    form = {
        "csrf": token,
        "reason": "x",
        "evidence": "x",
        "note": "x",
        "comment": "x",
        "appeal": "x",
        "verdict": "approve",
        "gpu_hours": "100",
        "username": outsider,
        "call": str(site.ids["call_id"]),
        "application": str(site.ids["app_id"]),
        "kind": "extension",
        "days": "10",
        "justification": "x",
        "title": "hostile",
        "q_summary": "hostile",
    }
    for method, path in WEB_ROUTES:
        data = form if method == "POST" else None
        r = c.request(method, path.format(**site.ids), data=data, follow_redirects=False)
        _refused(r, outsider, method, path)
        _same_as_made_up(c, site.ids, r, method, path, data=data, follow_redirects=False)
    assert snapshot(site) == before
