"""The programme path in a real Chromium, in English and in Korean: an applicant applies
(and is told what to fix), a reviewer scores, the manager runs the optimiser, reads its
explanation and decides; the admin verifies the audit log. Screenshots of each main page
go to var/screenshots/<lang>/."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from gpucenter.persistence import repositories as repo
from gpucenter.services.identity.signin import caller_for
from gpucenter.services.programmes import applications as apps
from gpucenter.web.apply_pages import application_of
from gpucenter.web.render import FormState
from tests.web.conftest import Portal, shoot, sign_in
from tests.web.test_programmes_pages import PASSWORD, Programme, Site, good_form, seed_programme

CRITERIA = ("scientific_merit", "feasibility", "impact", "need_for_gpus")


def _submitted(portal: Portal, programme: Programme, user: str, **changes: str) -> int:
    """An application made and submitted through the services (the other applicant)."""
    now = datetime.now(tz=UTC)
    site = Site(portal.ctx, programme, None)
    with portal.ctx.sessions.begin() as s:
        who = caller_for(s, repo.user_by_name(s, user))
        form = application_of(FormState.of(good_form(site, **changes)))
        row = apps.create_application(s, who, programme.call_id, form, now)
        apps.submit_application(s, who, row.id, now)
        return row.id


def _assign_and_score(
    portal: Portal, programme: Programme, scores: dict[str, dict[int, float]]
) -> None:
    now = datetime.now(tz=UTC)
    with portal.ctx.sessions.begin() as s:
        pm = caller_for(s, repo.user_by_name(s, "pm"))
        apps.assign_reviews(s, pm, programme.call_id, now)
        for reviewer, by_app in scores.items():
            who = caller_for(s, repo.user_by_name(s, reviewer))
            for app_id, score in by_app.items():
                apps.submit_review(s, who, app_id, dict.fromkeys(CRITERIA, score), "ok", now)


def test_apply_review_and_award_in_english(portal: Portal, browser_page) -> None:
    programme = seed_programme(portal.ctx)
    page = browser_page
    sign_in(page, portal, "jiwoo", PASSWORD)
    page.get_by_role("navigation").get_by_role("link", name="Programmes").click()
    assert page.get_by_role("heading", name="Programmes", level=1).is_visible()
    shoot(page, "en", "programmes")
    page.get_by_role("link", name="AI GPU support, first round").click()
    page.get_by_role("link", name="Apply to this call").click()

    page.fill("#f-title", "Korean weather foundation model")
    page.fill("#f-plan", "Pre-train a 7B model on 40 years of reanalysis data.")
    page.select_option("#f-region", "busan")
    page.select_option("#f-field", "artificial_intelligence")
    page.select_option("#f-gpu_type", "h100")
    page.select_option("#f-period", programme.periods[0])
    page.fill("#f-gpu_hours", "lots")
    page.fill("#f-min_gpu_hours", "4000")
    page.get_by_role("button", name="Submit application").click()
    assert page.locator("#e-gpu_hours").inner_text() == (
        "Enter the GPU-hours as a number greater than 0."
    )
    assert page.input_value("#f-title") == "Korean weather foundation model"
    shoot(page, "en", "apply-form-errors")
    page.fill("#f-gpu_hours", "8000")
    page.get_by_role("button", name="Submit application").click()
    page.wait_for_url(re.compile(r".*/applications/\d+\?flash=.*"))
    assert page.get_by_role("status").inner_text() == "Your application was submitted."
    mine = int(re.findall(r"/applications/(\d+)", page.url)[0])
    other = _submitted(portal, programme, "minho", title="Startup speech model", gpu_hours="6000")
    _assign_and_score(portal, programme, {"rev2": {mine: 8, other: 6}, "rev1": {other: 7}})

    sign_in(page, portal, "rev1", PASSWORD)
    page.get_by_role("link", name="Reviews").click()
    page.get_by_role("link", name="Korean weather foundation model").click()
    assert page.get_by_text("Other reviewers' scores").count() == 0  # not before submitting
    for name in CRITERIA:
        page.fill(f"#f-score_{name}", "8")
    page.fill("#f-comment", "A clear plan with realistic milestones.")
    shoot(page, "en", "review-form")
    page.get_by_role("button", name="Submit scores").click()
    assert page.get_by_role("status").inner_text() == "Your review was submitted."
    assert page.get_by_role("heading", name="Other reviewers' scores").is_visible()

    sign_in(page, portal, "pm", PASSWORD)
    page.get_by_role("link", name="Manage programmes").click()
    page.get_by_role("link", name="AI GPU support, first round").click()
    page.get_by_role("button", name="Run the award optimiser").click()
    page.wait_for_url(re.compile(r".*/manage/runs/\d+.*"))
    assert page.get_by_role("heading", name="What shaped the award").is_visible()
    page.wait_for_selector("div.chart[data-chart-ready=true]", timeout=30_000)  # drawn
    # Vega-Lite gives the drawn chart the role graphics-document; its name stays the title.
    chart = 'div.chart[aria-label="Awarded GPU-hours by applicant type"]'
    assert page.locator(chart).is_visible()
    shoot(page, "en", "manager-console-explanation")
    page.get_by_role("button", name="Decide these awards").click()
    assert "projects and allocations exist" in page.get_by_role("status").inner_text()

    sign_in(page, portal, "jiwoo", PASSWORD)
    page.goto(portal.url(f"/applications/{mine}"))
    assert page.get_by_text("Awarded 8,000 GPU-hours.").is_visible()

    sign_in(page, portal, "root", PASSWORD)
    page.get_by_role("link", name="Administration").click()
    assert page.get_by_role("heading", name="Users").is_visible()
    shoot(page, "en", "admin")
    page.get_by_role("link", name="Audit log").click()
    page.get_by_role("button", name="Verify the whole chain").click()
    assert "The chain is intact" in page.get_by_role("status").inner_text()


def test_the_same_path_in_korean(portal: Portal, browser_page) -> None:
    programme = seed_programme(portal.ctx)
    first = _submitted(portal, programme, "jiwoo")
    other = _submitted(portal, programme, "minho", title="Startup speech model", gpu_hours="6000")
    _assign_and_score(portal, programme, {"rev2": {first: 8, other: 6}, "rev1": {other: 7}})
    page = browser_page

    sign_in(page, portal, "jiwoo", PASSWORD, "ko")
    page.get_by_role("navigation").get_by_role("link", name="지원 사업").click()
    assert page.get_by_role("table", name="접수 중인 공모").is_visible()
    shoot(page, "ko", "programmes")
    page.goto(portal.url(f"/programmes/calls/{programme.call_id}/apply"))
    page.get_by_role("button", name="신청서 제출").click()
    assert page.locator("#e-title").inner_text() == "과제명을 입력하세요."
    assert page.get_by_role("alert").get_by_text("아래 표시된 항목을 고쳐 주세요.").is_visible()
    shoot(page, "ko", "apply-form-errors")

    sign_in(page, portal, "rev1", PASSWORD, "ko")
    page.goto(portal.url(f"/reviews/{first}"))
    assert page.get_by_label("연구의 우수성").is_visible()
    assert page.get_by_role("button", name="이해충돌 신고").is_visible()
    shoot(page, "ko", "review-form")

    sign_in(page, portal, "pm", PASSWORD, "ko")
    page.goto(portal.url(f"/manage/calls/{programme.call_id}"))
    assert page.get_by_role("table", name="신청서와 심사 점수").is_visible()
    page.get_by_role("button", name="배정 최적화 실행").click()
    page.wait_for_url(re.compile(r".*/manage/runs/\d+.*"))
    assert page.get_by_role("heading", name="신청 유형별 배정 GPU 시간").is_visible()
    shoot(page, "ko", "manager-console-explanation")
    page.get_by_role("button", name="이대로 선정 확정").click()
    assert "선정을 확정했습니다" in page.get_by_role("status").inner_text()

    sign_in(page, portal, "root", PASSWORD, "ko")
    page.get_by_role("link", name="센터 관리", exact=True).click()
    shoot(page, "ko", "admin")
    assert page.get_by_role("heading", name="센터 역할").is_visible()
