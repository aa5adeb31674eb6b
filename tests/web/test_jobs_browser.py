"""Jobs, projects, operations and reports in a real Chromium against a live server whose
scheduler runs the jobs: a member submits from a template and follows the job live, in
English and in Korean; an operator reads the heat map; an admin reads the reports."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from gpucenter.domain.jobs import JobState
from gpucenter.persistence import repositories as repo
from gpucenter.services.identity import accounts
from gpucenter.services.identity.signin import caller_for
from gpucenter.services.jobs import manage as jobs
from gpucenter.services.jobs import templates
from gpucenter.services.jobs.submission import JobForm
from tests.factories import wait_until
from tests.web.conftest import Portal, shoot, sign_in

STEPS = {
    "name": "steps",
    "title": "Count steps",
    "description": "Prints one line per step, slowly.",
    "fields": [
        {"name": "steps", "type": "int", "default": 3, "min": 1, "max": 20, "label": "Steps"}
    ],
    "job": {
        "name": "steps",
        "command": "sh -c 'for i in $(seq 1 $0); do echo step $i; sleep 0.4; done' {steps}",
        "gpus_per_node": "1",
        "time": "5m",
    },
}


def _member(portal: Portal) -> None:
    now = datetime.now(tz=UTC)
    with portal.ctx.sessions.begin() as s:
        accounts.create_organisation(s, "Hanbit University", "university", now)
        accounts.create_user(
            s, "minji", now, organisation="Hanbit University", password="minji-password-1"
        )
        accounts.create_project(s, "nlp-lab", "Hanbit University", now, title="Korean NLP")
        accounts.add_member(s, "nlp-lab", "minji", "pi")
        accounts.create_allocation(s, "nlp-lab", 50.0, now)
        templates.publish(s, STEPS, now, None)


def _run_from_template(page: Any, portal: Portal, lang: str, steps: str) -> str:
    """Submit the template with a wrong value, then a right one; follow the job live."""
    submit = "Submit" if lang == "en" else "제출"
    page.goto(portal.url("/jobs/new"))
    page.get_by_role("link", name="Count steps").click()
    page.get_by_label("Steps").fill("50")
    page.get_by_role("button", name=submit, exact=True).click()
    assert page.locator(".error-summary").is_visible()
    if lang == "ko":
        assert "1부터 20까지의 정수를 입력하세요." in page.locator("#e-fields\\.steps").inner_text()
        assert "아래 표시된 항목을 고쳐 주세요." in page.locator(".error-summary").inner_text()
    assert page.locator("#e-fields\\.steps").is_visible()
    assert page.get_by_label("Steps").input_value() == "50"  # what was typed is kept
    shoot(page, lang, "jobs-new-errors")

    page.get_by_label("Steps").fill(steps)
    page.get_by_role("button", name=submit, exact=True).click()
    page.wait_for_url(re.compile(r".*/jobs/\d+\?flash=.*"))
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads
    # Lines arrive through server-sent events while the job runs, without a reload.
    page.wait_for_function(
        "() => document.getElementById('job-log').textContent.includes('step 3')",
        timeout=20_000,
    )
    assert page.evaluate("window.__sameDocument === true")
    running = "Running" if lang == "en" else "실행 중"
    assert page.locator("#job-state").inner_text() in (running, "Completed", "완료")
    shoot(page, lang, "job-detail-log")
    # At the end the page reloads itself and shows the charge.
    done = "Completed" if lang == "en" else "완료"
    page.wait_for_function(
        "() => !window.__sameDocument && document.getElementById('job-state')"
        f".textContent.includes('{done}')",
        timeout=30_000,
    )
    charged = page.locator("#job-charge").inner_text()
    assert ("GPU-hours" if lang == "en" else "GPU시간") in charged
    assert f"step {steps}" in page.locator("#job-log").inner_text()
    return page.url.split("/jobs/")[1].split("?")[0]


def test_a_member_runs_a_job_from_a_template_and_sees_it_charged(
    portal: Portal, browser_page: Any
) -> None:
    _member(portal)
    page = browser_page
    sign_in(page, portal, "minji", "minji-password-1")
    job_id = _run_from_template(page, portal, "en", "6")

    page.goto(portal.url("/jobs"))
    assert page.get_by_role("link", name=f"#{job_id}").is_visible()
    shoot(page, "en", "jobs-list")

    page.get_by_role("navigation").get_by_role("link", name="Projects").click()
    page.get_by_role("link", name="nlp-lab").click()
    heading = page.get_by_role("heading", level=1)
    assert heading.inner_text() == "Project nlp-lab"
    used = page.locator("td.used").first.inner_text()
    assert float(used) > 0  # the run was charged to the allocation
    # Vega draws the burn-down: two lines, actual and plan.
    page.wait_for_selector("div.chart[data-chart-ready=true]")
    assert page.locator("div.chart .mark-line path").count() == 2
    shoot(page, "en", "project-burn-down")

    # The same in Korean.
    page.get_by_role("link", name="한국어").click()
    assert page.get_by_role("heading", level=1).inner_text() == "과제 nlp-lab"
    assert page.get_by_role("columnheader", name="잔여량").is_visible()
    shoot(page, "ko", "project-burn-down")
    _run_from_template(page, portal, "ko", "4")
    page.goto(portal.url("/jobs"))
    assert page.get_by_role("heading", level=1).inner_text() == "작업"
    assert page.locator("span.badge.COMPLETED").count() == 2
    assert page.locator("span.badge.COMPLETED").first.inner_text() == "완료"
    shoot(page, "ko", "jobs-list")


def _wait_state(portal: Portal, job_id: int, states: set[JobState]) -> None:
    with portal.ctx.sessions.begin() as s:
        caller = caller_for(s, repo.user_by_name(s, "minji"))

    def reached() -> bool:
        return JobState(jobs.get_visible(portal.ctx, caller, job_id).state) in states

    wait_until(reached, timeout=30, step=0.2)


def test_an_operator_reads_the_heat_map_and_an_admin_the_reports(
    portal: Portal, browser_page: Any
) -> None:
    _member(portal)
    now = datetime.now(tz=UTC)
    with portal.ctx.sessions.begin() as s:
        accounts.create_user(s, "ops-kim", now, password="ops-kim-pw-1")
        accounts.grant_role(s, "ops-kim", "site_operator", now)
        minji = caller_for(s, repo.user_by_name(s, "minji"))
    long = jobs.submit(portal.ctx, minji, JobForm(project="nlp-lab", command="sleep 60"))
    _wait_state(portal, long.id, {JobState.RUNNING})

    page = browser_page
    sign_in(page, portal, "ops-kim", "ops-kim-pw-1")
    page.get_by_role("navigation").get_by_role("link", name="Operations").click()
    assert page.locator(".heat-block .gpu.busy").count() == 1
    assert page.locator(".heat-block .gpu.free").count() == 3
    assert page.get_by_role("img", name=re.compile(r"1 of 4 GPUs busy")).is_visible()
    assert "minji" not in page.content() and "nlp-lab" not in page.content()
    shoot(page, "en", "ops-heat-map")
    page.get_by_role("link", name="한국어").click()
    assert page.get_by_role("heading", name="GPU 종류별 대기열").is_visible()
    shoot(page, "ko", "ops-heat-map")

    jobs.cancel(portal.ctx, minji, long.id)  # a stopped run is charged for what it used
    _wait_state(portal, long.id, {JobState.CANCELLED})

    page.context.clear_cookies()
    with portal.ctx.sessions.begin() as s:
        accounts.create_user(s, "admin-lee", now, is_admin=True, password="admin-lee-pw-1")
    sign_in(page, portal, "admin-lee", "admin-lee-pw-1")
    page.goto(portal.url("/reports?by=organisation"))
    usage = page.locator("#usage-table")
    assert "Hanbit University" in usage.inner_text()
    page.wait_for_selector("div.chart[data-chart-ready=true]")
    assert page.locator("div.chart .mark-rect path").count() >= 1
    assert page.get_by_role("link", name="XLSX").first.get_attribute("href", timeout=1000)
    shoot(page, "en", "reports")
    page.get_by_role("link", name="한국어").click()
    assert page.get_by_role("heading", level=1).inner_text() == "보고서"
    assert "₩" in usage.inner_text()
    shoot(page, "ko", "reports")
