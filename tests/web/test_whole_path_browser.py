"""The whole path in a real Chromium, as the people who use it walk it: an applicant applies,
a reviewer scores, the programme manager runs the optimiser and awards, and the applicant,
now the PI of the awarded project, submits a job from a template, watches it run and sees
its usage charged to the award. Once in English (SQLite) and once in Korean (PostgreSQL)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from gpucenter.persistence.tables_allocation import AwardRow
from gpucenter.services.jobs import templates
from tests.web.conftest import Portal, shoot, sign_in
from tests.web.test_jobs_browser import STEPS
from tests.web.test_programmes_browser import CRITERIA, _assign_and_score, _submitted
from tests.web.test_programmes_pages import PASSWORD, seed_programme

# The awarded GPU type must exist at the site for the job to run: four virtual H100s.
H100_SITE = """
site: local
nodes:
  - name: local
    gpus: 4
    gpu_type: h100
    block: local
"""

WORDS = {
    "en": {
        "programmes": "Programmes",
        "apply": "Apply to this call",
        "submit_application": "Submit application",
        "reviews": "Reviews",
        "submit_scores": "Submit scores",
        "manage": "Manage programmes",
        "run": "Run the award optimiser",
        "decide": "Decide these awards",
        "awarded": "Awarded 8,000 GPU-hours.",
        "submit_job": "Submit",
        "completed": "Completed",
        "gpu_hours": "GPU-hours",
        "projects": "Projects",
    },
    "ko": {
        "programmes": "지원 사업",
        "apply": "이 공모에 신청",
        "submit_application": "신청서 제출",
        "reviews": "심사",
        "submit_scores": "점수 제출",
        "manage": "사업 관리",
        "run": "배정 최적화 실행",
        "decide": "이대로 선정 확정",
        "awarded": "GPU 8,000시간이 배정되었습니다.",
        "submit_job": "제출",
        "completed": "완료",
        "gpu_hours": "GPU시간",
        "projects": "과제",
    },
}


@pytest.mark.portal_site(H100_SITE)
@pytest.mark.portal_multi_tenant  # applicants of several organisations run jobs
@pytest.mark.parametrize(
    ("db_url", "lang"), [("sqlite", "en"), ("postgres", "ko")], indirect=["db_url"]
)
def test_apply_review_award_then_run_a_job_on_the_award(
    portal: Portal, browser_page: Any, lang: str
) -> None:
    words = WORDS[lang]
    programme = seed_programme(portal.ctx)
    with portal.ctx.sessions.begin() as s:
        templates.publish(s, STEPS, datetime.now(tz=UTC), None)
    page = browser_page

    # The applicant applies in the browser.
    sign_in(page, portal, "jiwoo", PASSWORD, lang)
    page.get_by_role("navigation").get_by_role("link", name=words["programmes"]).click()
    page.get_by_role("link", name="AI GPU support, first round").click()
    page.get_by_role("link", name=words["apply"]).click()
    page.fill("#f-title", "Korean weather foundation model")
    page.fill("#f-plan", "Pre-train a 7B model on 40 years of reanalysis data.")
    page.select_option("#f-region", "busan")
    page.select_option("#f-field", "artificial_intelligence")
    page.select_option("#f-gpu_type", "h100")
    page.select_option("#f-period", programme.periods[0])
    page.fill("#f-gpu_hours", "8000")
    page.fill("#f-min_gpu_hours", "4000")
    page.get_by_role("button", name=words["submit_application"]).click()
    page.wait_for_url(re.compile(r".*/applications/\d+\?flash=.*"))
    mine = int(re.findall(r"/applications/(\d+)", page.url)[0])

    # A competing application and the second reviewer's scores come through the services.
    other = _submitted(portal, programme, "minho", title="Startup speech model", gpu_hours="6000")
    _assign_and_score(portal, programme, {"rev2": {mine: 8, other: 6}, "rev1": {other: 7}})

    # The reviewer scores in the browser.
    sign_in(page, portal, "rev1", PASSWORD, lang)
    page.get_by_role("navigation").get_by_role("link", name=words["reviews"]).click()
    page.get_by_role("link", name="Korean weather foundation model").click()
    for name in CRITERIA:
        page.fill(f"#f-score_{name}", "8")
    page.fill("#f-comment", "A clear plan with realistic milestones.")
    page.get_by_role("button", name=words["submit_scores"]).click()
    page.wait_for_url(re.compile(r".*flash=.*"))

    # The programme manager runs the optimiser, reads it and decides.
    sign_in(page, portal, "pm", PASSWORD, lang)
    page.get_by_role("navigation").get_by_role("link", name=words["manage"]).click()
    page.get_by_role("link", name="AI GPU support, first round").click()
    page.get_by_role("button", name=words["run"]).click()
    page.wait_for_url(re.compile(r".*/manage/runs/\d+.*"))
    page.get_by_role("button", name=words["decide"]).click()
    page.wait_for_url(re.compile(r".*flash=.*"))

    # The applicant sees the award, then runs a job on the new project from a template.
    sign_in(page, portal, "jiwoo", PASSWORD, lang)
    page.goto(portal.url(f"/applications/{mine}"))
    assert page.get_by_text(words["awarded"]).is_visible()
    shoot(page, lang, "application-awarded")
    # The award's allocation is pending until the PI accepts the agreement, on its page.
    with portal.ctx.sessions() as s:
        award = s.scalar(select(AwardRow.id).where(AwardRow.application_id == mine))
    page.goto(portal.url(f"/awards/{award}"))
    page.locator(f"form[action='/awards/{award}/accept'] button[type=submit]").click()
    page.wait_for_url(re.compile(r".*flash=.*"))
    page.goto(portal.url("/jobs/new"))
    page.get_by_role("link", name="Count steps").click()
    page.get_by_label("Steps").fill("12")  # long enough to show on the allocation (3 decimals)
    project_select = page.locator("#f-project")
    awarded_project = project_select.input_value()
    assert awarded_project  # the only project jiwoo has: the one the award created
    page.get_by_role("button", name=words["submit_job"], exact=True).click()
    page.wait_for_url(re.compile(r".*/jobs/\d+\?flash=.*"))
    page.evaluate("window.__sameDocument = true")  # gone when the page reloads at the end
    page.wait_for_function(
        "() => document.getElementById('job-log').textContent.includes('step 12')",
        timeout=30_000,
    )
    done = words["completed"]
    page.wait_for_function(
        "() => !window.__sameDocument && "
        f"document.getElementById('job-state').textContent.includes('{done}')",
        timeout=40_000,
    )
    assert words["gpu_hours"] in page.locator("#job-charge").inner_text()
    shoot(page, lang, "awarded-job-completed")

    # The charge lands on the awarded project's allocation.
    page.get_by_role("navigation").get_by_role("link", name=words["projects"]).click()
    page.get_by_role("link", name=awarded_project).click()
    used = float(page.locator("td.used").first.inner_text().replace(",", ""))
    assert 0 < used < 8000
    shoot(page, lang, "awarded-project")
