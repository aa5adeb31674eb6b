"""The jobs and projects pages without a browser: the submit form's validation table, what a
member sees of a job and a project, and the operator and report pages' content."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from gpucenter.app import create_app
from gpucenter.auth.credentials import hash_password
from gpucenter.config import Settings
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.db import migrate
from gpucenter.persistence.tables import JobRow, LedgerEntryRow
from gpucenter.services.context import AppContext
from gpucenter.services.identity import accounts
from gpucenter.services.jobs import templates
from gpucenter.web import job_labels
from tests.factories import make_context, seed_centre
from tests.security.web import csrf_of, web_session

HANGUL = re.compile("[\uac00-\ud7a3]")

# A template whose command is shell-quoted from an int field (see domain/templates.py).
STEPS_TEMPLATE = {
    "name": "steps",
    "title": "Count steps",
    "description": "Prints one line per step.",
    "fields": [{"name": "steps", "type": "int", "default": 3, "min": 1, "max": 20}],
    "job": {"command": "sh -c 'seq 1 $0' {steps}", "gpus_per_node": "1", "time": "5m"},
}


@dataclass
class Web:
    ctx: AppContext
    client: TestClient

    def jobs(self) -> int:
        with self.ctx.sessions.begin() as s:
            return int(s.scalar(select(func.count()).select_from(JobRow)) or 0)


@contextmanager
def _signed_in(tmp_path: Path) -> Iterator[Web]:
    """alice signed in on SQLite (form logic does not depend on the database)."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'g.db'}", var_dir=tmp_path, cookie_secure=True
    )
    migrate(settings.effective_database_url)
    ctx = make_context(settings)
    seed_centre(ctx)
    now = datetime.now(tz=UTC)
    with ctx.sessions.begin() as s:
        repo.user_by_name(s, "alice").password_hash = hash_password("alice-password")
        templates.publish(s, STEPS_TEMPLATE, now, None)
    with TestClient(create_app(ctx, run_scheduler=False), base_url="https://testserver") as c:
        yield Web(ctx, web_session(c, "alice", "alice-password"))
    ctx.dispatcher.shutdown()
    ctx.engine.dispose()


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    """One portal for the module (setting one up takes seconds); tests count relatively."""
    with _signed_in(tmp_path_factory.mktemp("web")) as w:
        yield w


@pytest.fixture
def fresh_web(tmp_path: Path) -> Iterator[Web]:
    with _signed_in(tmp_path) as w:
        yield w


def _newest(web: Web) -> JobRow:
    with web.ctx.sessions.begin() as s:
        row = s.scalars(select(JobRow).order_by(JobRow.id.desc()).limit(1)).one()
        s.expunge(row)
        return row


GOOD = {
    "project": "alpha",
    "name": "",
    "command": "echo hello",
    "gpu_type": "vgpu",
    "gpus_per_node": "1",
    "nodes": "1",
    "time": "10m",
    "qos": "normal",
}


def _post(web: Web, data: dict[str, str], lang: str = "en") -> object:
    token = csrf_of(web.client.get("/jobs/new").text)
    return web.client.post(
        "/jobs/new",
        data={**data, "csrf": token},
        headers={"Accept-Language": lang},
        follow_redirects=False,
    )


@pytest.mark.parametrize(
    ("change", "fields"),
    [
        ({"project": ""}, {"project"}),
        ({"project": "beta"}, {"project"}),  # bob's project: same answer as a missing one
        ({"command": "   "}, {"command"}),
        ({"gpus_per_node": "two"}, {"gpus_per_node"}),
        ({"gpus_per_node": "9"}, {"gpus_per_node"}),  # the site's node has 4
        ({"nodes": "0"}, {"nodes"}),
        ({"nodes": "2"}, {"nodes"}),  # the site has one node
        ({"gpu_type": "h100"}, {"gpu_type"}),
        ({"time": "soon"}, {"time"}),
        ({"time": "90d"}, {"time"}),
        ({"qos": "vip"}, {"qos"}),
        ({"project": "", "command": "", "time": "x"}, {"project", "command", "time"}),
    ],
)
def test_bad_input_is_shown_next_to_its_field_and_nothing_is_written(
    web: Web, change: dict[str, str], fields: set[str]
) -> None:
    typed = {**GOOD, **change}
    before = web.jobs()
    r = _post(web, typed)
    assert r.status_code == 422  # type: ignore[attr-defined]
    html = r.text  # type: ignore[attr-defined]
    for name in fields:
        assert f'id="e-{name}"' in html, name
        assert f'aria-describedby="e-{name}"' in html
    assert html.count('class="field-error"') == len(fields)
    assert "error-summary" in html
    if typed["command"].strip():
        assert typed["command"] in html  # what was typed is kept
    assert f'value="{typed["time"]}"' in html
    assert web.jobs() == before


def test_errors_are_in_korean_for_a_korean_reader(web: Web) -> None:
    r = _post(web, {**GOOD, "project": "", "command": ""}, lang="ko")
    assert r.status_code == 422  # type: ignore[attr-defined]
    assert "차감할 과제를 고르세요." in r.text  # type: ignore[attr-defined]
    assert "실행할 명령이나 스크립트를 입력하세요." in r.text  # type: ignore[attr-defined]


@pytest.mark.parametrize("change", [{"project": "beta"}, {"gpus_per_node": "9"}])
def test_a_service_refusal_is_in_korean_next_to_its_field(web: Web, change: dict[str, str]) -> None:
    """The submission service refuses these (not the form), with a message code: the field's
    error must be the Korean rendering, not the English text the service filled in."""
    r = _post(web, {**GOOD, **change}, lang="ko")
    assert r.status_code == 422  # type: ignore[attr-defined]
    errors = re.findall(r'class="field-error"[^>]*>(.*?)<', r.text)  # type: ignore[attr-defined]
    assert errors and all(HANGUL.search(e) for e in errors), errors


def test_a_good_form_submits_once_and_leads_to_the_job(web: Web) -> None:
    before = web.jobs()
    r = _post(web, GOOD)
    assert r.status_code == 303  # type: ignore[attr-defined]
    location = r.headers["location"]  # type: ignore[attr-defined]
    assert location.startswith("/jobs/") and "flash=Job" in location
    page = web.client.get(location)
    assert "Job submitted." in page.text and "echo hello" not in page.text.split("<h1>")[0]
    assert "Why it waits" in page.text and 'id="job-live"' in page.text
    assert web.jobs() == before + 1
    assert location.split("?")[0] in web.client.get("/jobs").text


def test_a_script_with_directives_is_submitted_as_a_script(web: Web) -> None:
    script = "#!/bin/sh\n#GPUCENTER --time 20m\necho from-script\n"
    r = _post(web, {**GOOD, "command": script, "time": ""})
    assert r.status_code == 303  # type: ignore[attr-defined]
    row = _newest(web)
    assert row.time_limit_s == 20 * 60 and "from-script" in row.command


def test_a_template_renders_its_fields_and_checks_their_range(web: Web) -> None:
    form = web.client.get("/jobs/new?template=steps")
    assert 'name="fields.steps"' in form.text and 'value="3"' in form.text
    before = web.jobs()
    bad = _post(web, {"project": "alpha", "template": "steps", "fields.steps": "50"})
    assert bad.status_code == 422  # type: ignore[attr-defined]
    assert 'id="e-fields.steps"' in bad.text and 'value="50"' in bad.text  # type: ignore[attr-defined]
    assert web.jobs() == before
    good = _post(web, {"project": "alpha", "template": "steps", "fields.steps": "4"})
    assert good.status_code == 303  # type: ignore[attr-defined]
    row = _newest(web)
    assert row.template == "steps" and row.command.endswith(" 4")


def test_the_list_filters_by_state_and_pages_by_key(fresh_web: Web) -> None:
    web = fresh_web
    for _ in range(27):
        assert _post(web, GOOD).status_code == 303  # type: ignore[attr-defined]
    first = web.client.get("/jobs")
    assert first.text.count('<tr>\n  <td><a href="/jobs/') == 25
    cursor = first.text.split("cursor=")[1].split('"')[0]
    second = web.client.get(f"/jobs?cursor={cursor}")
    assert second.text.count('<tr>\n  <td><a href="/jobs/') == 2
    assert "No jobs match." in web.client.get("/jobs?state=RUNNING").text


def test_the_project_page_shows_the_charge_and_the_burn_down(web: Web) -> None:
    _post(web, GOOD)
    newest = _newest(web).id
    with web.ctx.sessions.begin() as s:
        job = s.get(JobRow, newest)
        assert job is not None and job.allocation_id is not None
        job.state = "COMPLETED"
        s.add(
            LedgerEntryRow(
                allocation_id=job.allocation_id,
                job_id=job.id,
                source=f"test:{job.id}",
                gpu_type="vgpu",
                gpu_seconds=1800.0,
                created_at=datetime.now(tz=UTC),
            )
        )
        project_id = job.project_id
        job_id = job.id
    page = web.client.get(f"/projects/{project_id}").text
    assert "data-vl-spec" in page and "Remaining (actual)" in page and "Plan (even use)" in page
    assert "0.500 GPU-hours" in web.client.get(f"/jobs/{job_id}").text
    assert "alice" in page  # a member
    assert 'id="job-live"' not in web.client.get(f"/jobs/{job_id}").text


def test_every_wait_reason_and_state_has_a_label() -> None:
    from gpucenter.domain.jobs import JobState, WaitReason

    assert set(job_labels.REASON_LABELS) == {r.value for r in WaitReason}
    assert set(job_labels.STATE_LABELS) == {s.value for s in JobState}
    detail = "waiting for 2 x vgpu; expected to start by 2026-11-29T18:40:00Z on local"
    assert job_labels.expected_start(detail) == datetime(2026, 11, 29, 18, 40, tzinfo=UTC)
    assert job_labels.expected_start("waiting") is None


def test_operators_see_the_heat_map_and_the_queue(web: Web) -> None:
    _post(web, GOOD)
    now = datetime.now(tz=UTC)
    with web.ctx.sessions.begin() as s:
        accounts.create_user(s, "oper", now, password="operator-password")
        accounts.grant_role(s, "oper", "site_operator", now)
    client = TestClient(web.client.app, base_url="https://testserver")
    web_session(client, "oper", "operator-password")
    page = client.get("/ops", headers={"Accept-Language": "ko"}).text
    assert page.count('class="gpu free"') >= 4 and "GPU 종류별 대기열" in page
    queue = page.split('id="queue"')[1].split("</table>")[0]
    with web.ctx.sessions.begin() as s:
        pending = s.scalar(select(func.count()).where(JobRow.state == "PENDING"))
    assert f'<th scope="row">vgpu</th><td class="num">{pending}</td>' in queue
    assert "alice" not in page and "alpha" not in page  # aggregates only
    assert "보고서" in page  # operators also reach the site reports
    reports = client.get("/reports")
    assert reports.status_code == 200 and "Supplier statement" in reports.text
    assert "Usage from" not in reports.text  # tenant usage is for managers and admins


def test_the_dashboard_shows_my_waiting_jobs_and_what_my_projects_have_left(web: Web) -> None:
    _post(web, GOOD)
    job = _newest(web)
    page = web.client.get("/", headers={"Accept-Language": "ko"}).text
    mine = page.split('id="my-jobs"')[1]
    assert f'href="/jobs/{job.id}"' in mine and "대기" in mine
    assert "내 과제" in page and 'href="/projects/' in page
    assert "<caption>노드</caption>" not in page  # the node table is for operators
