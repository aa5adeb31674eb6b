"""Acceptance (issue 21) in a real Chromium: an award's whole life as the people who live it
click through it, in English on SQLite and in Korean on PostgreSQL.

The manager decides a call with a reserve list; two PIs accept and their organisations
countersign; a PI declines; the manager re-offers the freed GPU-hours and the first reserve
applicant accepts, with a real allocation on the award's page; the leader's monthly check
warns, then reclaims part of an idle award (its PI sees the notice and the appeal form);
the manager re-offers again; an overdue progress report holds a new job in the real
scheduler (the job's page and the award's page say why) until the PI submits the report in
the browser; outcomes recorded by the PI are counted in the manager's report; a renewal asked
for by the PI, recommended by a reviewer and approved by the manager adds the next quarter to
the award; the administrator verifies the audit chain, and every award's state changes are
in it with their actors.

The life spans four months, so the server runs in this process on a clock the test moves
(`ManualClock`): the same app (`create_app`) a real server runs, served by uvicorn on a free
port, without its scheduler loop; what the leader does on its ticks (the scheduler pass,
`run_periodic`) the test does at the instants it chooses. Usage is charged to allocations as
the ledger records finished jobs (as in the services test).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import uvicorn
from sqlalchemy import select

from gpucenter.app import create_app
from gpucenter.config import Settings
from gpucenter.domain.clock import ManualClock
from gpucenter.domain.jobs import JobState
from gpucenter.persistence.tables import AllocationRow, JobRow, ProjectRow
from gpucenter.persistence.tables_allocation import AwardRow
from gpucenter.services.awards import periodic, reports
from gpucenter.services.context import AppContext
from gpucenter.services.jobs.submission import JobForm
from gpucenter.services.jobs.submit import submit
from gpucenter.services.scheduling.cycle import run_pass
from tests.awards.world import (
    APPLICANTS,
    PASSWORD,
    SIGNATORIES,
    World,
    assert_every_award_move_audited,
    build,
    charge,
    review_and_run,
)
from tests.factories import make_context, one_node_site
from tests.live import free_port
from tests.web.conftest import shoot

T0 = datetime(2026, 3, 20, tzinfo=UTC)
Q2 = datetime(2026, 4, 1, tzinfo=UTC)
MAY = datetime(2026, 5, 1, 2, tzinfo=UTC)
JUNE = datetime(2026, 6, 1, 2, tzinfo=UTC)

WORDS = {
    "en": {
        "decided": "projects and allocations exist",
        "reserve": "Reserve list",
        "awaiting_pi": "Waiting for the PI's acceptance",
        "accepted": "You accepted the agreement.",
        "in_force": "The agreement is countersigned and in force.",
        "declined": "The offer was declined.",
        "proposed": "The optimiser proposed a re-offer. Nothing is decided yet.",
        "approved": "The re-offer is approved: the reserve applicants have offers.",
        "active": "Active",
        "report_sent": "Your report was submitted.",
        "held_reason": "The project is on hold until an overdue report is submitted",
        "held_award": "New jobs of this project are on hold until the overdue report is submitted.",
        "running": "Running",
        "reclaim": "Reclaim",
        "appeal": "Appeal the reclaim",
        "checks": "Monthly use checks",
        "pending": "Pending",
        "reports": "Reports",
        "submitted": "Submitted for review",
        "allocations": "Allocations",
        "outcome_sent": "The outcome was recorded.",
        "outcomes": "Outcomes by programme, applicant type, region and strategic field",
        "startup": "Startup",
        "busan": "Busan",
        "request_sent": "Your request was sent to the programme.",
        "asked": "The reviewer was asked for a recommendation.",
        "recommended": "Your recommendation was sent to the programme manager.",
        "request_decided": "The request is decided.",
        "chain_intact": "The chain is intact",
    },
    "ko": {
        "decided": "선정을 확정했습니다",
        "reserve": "예비 순위",
        "awaiting_pi": "연구책임자의 수락 대기",
        "accepted": "협약을 수락했습니다.",
        "in_force": "협약이 연서되어 발효되었습니다.",
        "declined": "배정을 거절했습니다.",
        "proposed": "최적화기가 재배정을 제안했습니다. 아직 확정되지 않았습니다.",
        "approved": "재배정을 승인했습니다. 예비 순위 신청자에게 배정이 제안되었습니다.",
        "active": "진행 중",
        "report_sent": "보고서를 제출했습니다.",
        "held_reason": "기한이 지난 보고서를 제출할 때까지 과제가 보류되었습니다",
        "held_award": "기한이 지난 보고서를 제출할 때까지 이 과제의 새 작업은 대기합니다.",
        "running": "실행 중",
        "reclaim": "회수",
        "appeal": "회수에 이의 신청",
        "checks": "월별 사용 점검",
        "pending": "대기",
        "reports": "보고서",
        "submitted": "제출됨 · 검토 대기",
        "allocations": "배정 자원",
        "outcome_sent": "성과를 등록했습니다.",
        "outcomes": "사업, 신청 유형, 지역, 전략 분야별 성과",
        "startup": "스타트업",
        "busan": "부산",
        "request_sent": "요청을 사업 담당자에게 보냈습니다.",
        "asked": "심사위원에게 의견을 요청했습니다.",
        "recommended": "의견을 사업 관리자에게 보냈습니다.",
        "request_decided": "요청을 결정했습니다.",
        "chain_intact": "연결이 온전합니다",
    },
}


@dataclass
class Centre:
    """The app served on a free port, its context (clock, database) and the programme."""

    base: str
    ctx: AppContext
    world: World
    run_id: int
    lang: str

    def at(self, when: datetime) -> datetime:
        assert isinstance(self.ctx.clock, ManualClock)
        self.ctx.clock.set(when.timestamp())
        return when

    def award(self, name: str) -> int:
        with self.ctx.sessions.begin() as s:
            found = s.scalar(
                select(AwardRow.id).where(AwardRow.application_id == self.world.apps[name])
            )
            assert found is not None, name
            return int(found)

    def allocation(self, name: str) -> int:
        with self.ctx.sessions.begin() as s:
            found = s.scalar(
                select(AllocationRow.id)
                .where(AllocationRow.award_id == self.award(name))
                .order_by(AllocationRow.starts_at)
            )
            assert found is not None, name
            return int(found)


@pytest.fixture
def centre(settings: Settings, request: pytest.FixtureRequest) -> Iterator[Centre]:
    settings = settings.model_copy(update={"cookie_secure": False})
    ctx = make_context(settings, one_node_site(8, "h100"))
    ctx.clock = ManualClock(T0.timestamp())
    world = build(ctx.sessions, T0, Q2)
    run_id = review_and_run(world, T0 + timedelta(days=11))
    ctx.clock.set((T0 + timedelta(days=12)).timestamp())
    port = free_port()
    config = uvicorn.Config(
        create_app(ctx, run_scheduler=False), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the app did not start"
        time.sleep(0.05)
    try:
        yield Centre(f"http://127.0.0.1:{port}", ctx, world, run_id, request.param)
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        ctx.dispatcher.shutdown()
        ctx.engine.dispose()


class Browser:
    """The page, signed in as one person at a time, in the centre's language."""

    def __init__(self, page: Any, centre: Centre) -> None:
        self.page = page
        self.centre = centre
        self.words = WORDS[centre.lang]

    def sign_in(self, username: str) -> None:
        page = self.page
        page.context.clear_cookies()
        page.goto(f"{self.centre.base}/lang/{self.centre.lang}?next=/login")
        page.fill("#f-username", username)
        page.fill("#f-password", PASSWORD)
        page.locator("form[action='/login'] button[type=submit]").click()
        page.wait_for_url(re.compile(r".*/$"))

    def open(self, path: str) -> None:
        self.page.goto(self.centre.base + path)

    def press(self, action: str) -> None:
        """Submit the form posting to `action` on the page, by its button."""
        self.page.locator(f"form[action='{action}'] button[type=submit]").click()

    def flash(self, key: str) -> None:
        """The page the post redirected to says `key`'s sentence."""
        self.page.wait_for_url(re.compile(r".*flash=.*"))
        assert self.words[key] in self.page.locator("p.flash").inner_text()

    def my_award(self, username: str, name: str) -> int:
        """Sign in as `username` and open `name`'s award from My awards."""
        self.sign_in(username)
        self.open("/awards")
        self.page.get_by_role("link", name=f"{name}'s project").click()
        award = self.centre.award(name)
        self.page.wait_for_url(re.compile(rf".*/awards/{award}$"))
        return award

    def accept(self, name: str) -> None:
        """The PI accepts; the organisation's signatory countersigns."""
        award = self.my_award(name, name)
        self.press(f"/awards/{award}/accept")
        self.flash("accepted")
        org = next(o for n, o, *_ in APPLICANTS if n == name)
        self.my_award(SIGNATORIES[org], name)
        self.press(f"/awards/{award}/countersign")
        self.flash("in_force")

    def reoffer(self, to: str, reason: str) -> None:
        """The manager proposes a re-offer down the reserve list and approves it."""
        call = self.centre.world.call_id
        self.sign_in("pm")
        self.open(f"/manage/calls/{call}/awards")
        self.press(f"/manage/calls/{call}/reoffer")
        self.flash("proposed")
        run = int(re.findall(r"/manage/reoffers/(\d+)", self.page.url)[0])
        offered = self.page.get_by_role("row").filter(has_text=f"{to}'s project")
        assert offered.count() == 1
        self.page.fill("#f-reason", reason)
        self.press(f"/manage/reoffers/{run}/approve")
        self.flash("approved")

    def allocations(self) -> list[tuple[str, str, str]]:
        """The award page's allocations: (GPU type, GPU-hours, status), oldest first."""
        table = self.page.get_by_role("table", name=self.words["allocations"])
        rows = table.locator("tbody tr")
        out = []
        for i in range(rows.count()):
            cells = [c.strip() for c in rows.nth(i).locator("th, td").all_inner_texts()]
            out.append((cells[0], cells[3], cells[5]))
        return out


@pytest.mark.parametrize(
    ("db_url", "centre"), [("sqlite", "en"), ("postgres", "ko")], indirect=True
)
def test_an_award_s_whole_life_in_the_browser(centre: Centre, browser_page: Any) -> None:
    world, lang = centre.world, centre.lang
    b = Browser(browser_page, centre)
    page = browser_page
    words = b.words

    # The manager decides the run: three offers and a reserve list of two.
    b.sign_in("pm")
    b.open(f"/manage/runs/{centre.run_id}")
    b.press(f"/manage/runs/{centre.run_id}/decide")
    b.flash("decided")
    b.open(f"/manage/calls/{world.call_id}/awards")
    awards_table = page.locator("table").first
    assert awards_table.get_by_text(words["awaiting_pi"]).count() == 3
    reserve = page.get_by_role("table", name=words["reserve"])
    ranked = reserve.locator("tbody tr").all_inner_texts()
    assert [r.split("\t")[:2] for r in ranked] == [
        ["1", "dami's project"],
        ["2", "yuna's project"],
    ]
    shoot(page, lang, "call-awards-reserve")

    # jiwoo and minho accept and their organisations countersign; sora declines.
    centre.at(T0 + timedelta(days=13))
    b.accept("jiwoo")
    b.accept("minho")
    centre.at(T0 + timedelta(days=14))
    sora = b.my_award("sora", "sora")
    page.fill("#f-reason", "the group moved")
    b.press(f"/awards/{sora}/decline")
    b.flash("declined")

    # The freed 6,000 GPU-hours go to the first on the reserve list, who accepts.
    centre.at(T0 + timedelta(days=15))
    b.reoffer("dami", "sora declined")
    centre.at(T0 + timedelta(days=16))
    b.accept("dami")
    assert b.allocations() == [("H100", "6,000", words["active"])]
    shoot(page, lang, "award-re-offered-active")

    # April: minho and dami use their GPUs, jiwoo does not; jiwoo reports in the browser.
    with centre.ctx.sessions.begin() as s:
        for name in ("minho", "dami"):
            charge(s, centre.allocation(name), 1500, Q2 + timedelta(days=25), f"april-{name}")
    with centre.ctx.sessions.begin() as s:
        award = s.get(AwardRow, centre.award("dami"))
        assert award is not None
        report = reports.reports_of(s, award)[0]
        answers = {"summary": "on track", "commercial_use": "no"}
        reports.submit(s, world.who(s, "dami"), report.id, answers, Q2 + timedelta(days=27))
    centre.at(Q2 + timedelta(days=27))
    b.my_award("jiwoo", "jiwoo")
    page.fill("#f-q_summary", "pre-training started")
    page.locator("form[action*='/reports/'] button[type=submit]").click()
    b.flash("report_sent")

    # 1 May: the leader's tick marks minho's report overdue and warns jiwoo.
    centre.at(MAY)
    tick = periodic.run_periodic(centre.ctx.sessions, MAY)
    assert tick.failed == [] and tick.overdue == 1
    assert tick.monthly is not None and tick.monthly.warned == 1

    # minho's new job waits in the real scheduler, and its page says why.
    centre.at(MAY + timedelta(days=1))
    with centre.ctx.sessions.begin() as s:
        minho_award = s.get(AwardRow, centre.award("minho"))
        assert minho_award is not None
        project = s.get(ProjectRow, minho_award.project_id)
        assert project is not None
        caller = world.who(s, "minho")
    job = submit(
        centre.ctx,
        caller,
        JobForm(project=project.name, command="sleep 60", gpus_per_node=1, gpu_type="h100"),
    )
    run_pass(centre.ctx)
    minho = b.my_award("minho", "minho")
    assert words["held_award"] in page.locator("p.error[role=status]").inner_text()
    b.open(f"/jobs/{job.id}")
    assert page.locator("#job-reason").inner_text() == words["held_reason"]
    assert "progress report" in page.locator("#job-reason-detail").inner_text()
    shoot(page, lang, "job-held-by-overdue-report")
    # The PI submits the overdue report; the next pass starts the job.
    b.open(f"/awards/{minho}")
    page.fill("#f-q_summary", "late but done")
    page.locator("form[action*='/reports/'] button[type=submit]").click()
    b.flash("report_sent")
    assert page.locator("p.error[role=status]").count() == 0  # no hold any more
    run_pass(centre.ctx)
    b.open(f"/jobs/{job.id}")
    assert page.locator("#job-state").inner_text() == words["running"]
    with centre.ctx.sessions.begin() as s:
        row = s.get(JobRow, job.id)
        assert row is not None and row.state == JobState.RUNNING

    # May: jiwoo uses a little. 1 June: still idle, so part of the award is to be reclaimed;
    # jiwoo's page shows the notice and the appeal form. Nobody appeals: a week later the
    # leader reclaims.
    with centre.ctx.sessions.begin() as s:
        charge(s, centre.allocation("jiwoo"), 500, datetime(2026, 5, 20, tzinfo=UTC), "may-j")
        for name in ("minho", "dami"):
            charge(s, centre.allocation(name), 2000, datetime(2026, 5, 25, tzinfo=UTC), name)
    centre.at(JUNE)
    tick = periodic.run_periodic(centre.ctx.sessions, JUNE)
    assert tick.monthly is not None and tick.monthly.reclaim_notices == 1
    b.my_award("jiwoo", "jiwoo")
    notices = page.get_by_role("table", name=words["checks"])
    reclaim_row = notices.locator("tbody tr").filter(has_text="2026-06")
    assert words["reclaim"] in reclaim_row.first.inner_text()
    assert words["pending"] in reclaim_row.first.inner_text()  # not "accepting applications"
    progress = page.get_by_role("table", name=words["reports"]).locator("tbody tr").first
    assert words["submitted"] in progress.inner_text()  # not "time of submission"
    assert page.get_by_role("button", name=words["appeal"]).is_visible()
    shoot(page, lang, "award-reclaim-notice")
    centre.at(JUNE + timedelta(days=7, hours=1))
    tick = periodic.run_periodic(centre.ctx.sessions, JUNE + timedelta(days=7, hours=1))
    assert tick.reclaimed == 1
    b.my_award("jiwoo", "jiwoo")  # signed in afresh: a week has passed
    left = float(b.allocations()[0][1].replace(",", ""))
    assert 0 < left < 8000

    # The reclaimed GPU-hours are re-offered to the next on the reserve list.
    centre.at(JUNE + timedelta(days=8))
    b.reoffer("yuna", "idle GPU-hours of jiwoo's award")
    centre.at(JUNE + timedelta(days=9))
    b.accept("yuna")
    ((_, _, state),) = b.allocations()
    assert state == words["active"]
    with centre.ctx.sessions.begin() as s:
        got = s.get(AllocationRow, centre.allocation("yuna"))
        assert got is not None and got.starts_at.day == 9 and got.state == "active"

    # Outcomes recorded by the PI, counted in the manager's report.
    b.my_award("minho", "minho")
    page.select_option("#f-kind", "paper")
    page.fill("#f-title", "Korean speech at scale")
    page.fill("#f-identifier", "https://doi.org/10.1234/ksp.2026")
    b.press(f"/awards/{minho}/outcomes")
    b.flash("outcome_sent")
    page.select_option("#f-kind", "people_trained")
    page.fill("#f-count", "3")
    b.press(f"/awards/{minho}/outcomes")
    b.flash("outcome_sent")
    b.sign_in("pm")
    b.open("/reports/outcomes")
    table = page.get_by_role("table", name=words["outcomes"])
    startup = table.locator("tbody tr").filter(has_text=words["startup"])
    cells = startup.locator("td").all_inner_texts()
    assert cells[:4] == ["ai-gpu-2026", words["startup"], words["busan"], cells[3]]
    assert cells[4] == "1" and cells[-1] == "3"  # one paper, three people trained
    shoot(page, lang, "outcomes-report")

    # A renewal: the PI asks, a reviewer recommends, the manager approves; the award gains
    # the next quarter.
    centre.at(JUNE + timedelta(days=10))
    b.my_award("minho", "minho")
    page.select_option("#f-rkind", "renewal")
    page.fill("#f-gpu_type", "h100")
    page.fill("#f-period", world.next_period)
    page.fill("#f-gpu_hours", "5000")
    page.fill("#f-justification", "the model converges; fine-tuning next")
    b.press(f"/awards/{minho}/requests")
    b.flash("request_sent")
    b.sign_in("pm")
    b.open(f"/manage/calls/{world.call_id}/awards")
    request_id = int(re.findall(r"/manage/requests/(\d+)/reviewer", page.content())[0])
    page.select_option(f"#f-qr-{request_id}", "rev1")
    b.press(f"/manage/requests/{request_id}/reviewer")
    b.flash("asked")
    centre.at(JUNE + timedelta(days=11))
    b.sign_in("rev1")
    b.open("/renewals")
    page.select_option(f"#f-verdict-{request_id}", "approve")
    page.fill(f"#f-comment-{request_id}", "good progress")
    b.press(f"/renewals/{request_id}")
    b.flash("recommended")
    centre.at(JUNE + timedelta(days=12))
    b.sign_in("pm")
    b.open(f"/manage/calls/{world.call_id}/awards")
    page.select_option(f"#f-qv-{request_id}", "approve")
    page.fill(f"#f-qd-{request_id}", "recommended")
    b.press(f"/manage/requests/{request_id}/decide")
    b.flash("request_decided")
    b.my_award("minho", "minho")
    assert [hours for _, hours, _ in b.allocations()] == ["6,000", "5,000"]
    with centre.ctx.sessions.begin() as s:
        starts = s.scalars(
            select(AllocationRow.starts_at)
            .where(AllocationRow.award_id == minho)
            .order_by(AllocationRow.starts_at)
        ).all()
        assert [d.month for d in starts] == [4, 7]
    shoot(page, lang, "award-renewed")

    # The administrator verifies the audit chain; every award's moves are in it with actors.
    b.sign_in("root")
    b.open("/admin/audit")
    page.locator("form[action='/admin/audit'] button[type=submit]").click()
    page.wait_for_url(re.compile(r".*verify=1.*"))
    assert words["chain_intact"] in page.locator("p.flash").inner_text()
    with centre.ctx.sessions.begin() as s:
        assert_every_award_move_audited(s)
