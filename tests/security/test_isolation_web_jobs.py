"""Isolation on the portal's jobs pages that take an id: another tenant, signed in with a
browser session, gets 404 or 403 and never the data."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from gpucenter.auth.credentials import hash_password
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.tables import JobRow, LedgerEntryRow
from gpucenter.persistence.tables_audit import RoleAssignmentRow
from gpucenter.services.jobs import manage as jobs
from gpucenter.services.jobs.submission import JobForm
from tests.security.conftest import Env
from tests.security.web import csrf_of, web_session

# (method, path) of every portal route of this area with an id in its path; each is checked
# by a test in this file.
ROUTES: list[tuple[str, str]] = [
    ("GET", "/jobs/{job_id}"),
    ("POST", "/jobs/{job_id}/cancel"),
    ("GET", "/jobs/{job_id}/events"),
    ("GET", "/projects/{project_id}"),
]

# Pages without an id that only some roles may open, and a member's answer on each.
ROLE_PAGES = [
    "/ops",
    "/reports",
    "/reports/download/usage?from=2026-01&to=2026-02",
    "/reports/download/statement?month=2026-01",
    "/reports/download/utilisation?month=2026-01",
    "/reports/download/queue-delay?month=2026-01",
]


def _passwords(env: Env) -> None:
    with env.ctx.sessions.begin() as s:
        for name in ("alice", "bob"):
            repo.user_by_name(s, name).password_hash = hash_password(f"{name}-password")


@pytest.fixture
def bob(env: Env) -> TestClient:
    """Bob signed in through the portal's form; alice has a job with secret output."""
    _passwords(env)
    return web_session(env.client, "bob", "bob-password")


def _alice_job(env: Env) -> int:
    row = jobs.submit(env.ctx, env.centre.alice, JobForm(project="alpha", command="echo secret"))
    return row.id


def test_another_tenant_gets_nothing_from_the_job_pages(env: Env, bob: TestClient) -> None:
    job_id = _alice_job(env)
    with env.ctx.sessions.begin() as s:
        alpha = repo.project_by_name(s, "alpha").id
    token = csrf_of(bob.get("/jobs").text)
    for method, path in ROUTES:
        url = path.format(job_id=job_id, project_id=alpha)
        data = {"csrf": token} if method == "POST" else None
        r = bob.request(method, url, data=data, headers={"Accept": "text/html"})
        assert r.status_code in (403, 404), (method, path, r.status_code)
        assert "secret" not in r.text and "alpha" not in r.text.split("<main")[-1]
    # Not in bob's list either, nor his project filter, and the job still waits.
    listing = bob.get("/jobs").text
    assert f"/jobs/{job_id}" not in listing
    assert f"/jobs/{job_id}" not in bob.get("/jobs?project=alpha").text
    assert jobs.get_visible(env.ctx, env.centre.alice, job_id).state == "PENDING"


def test_the_owner_sees_the_job_and_cancels_it_only_with_the_form_token(env: Env) -> None:
    _passwords(env)
    job_id = _alice_job(env)
    alice = web_session(env.client, "alice", "alice-password")
    page = alice.get(f"/jobs/{job_id}")
    assert page.status_code == 200 and "echo" in page.text
    forged = alice.post(f"/jobs/{job_id}/cancel", data={"csrf": "x" * 43})
    assert forged.status_code == 403
    done = alice.post(
        f"/jobs/{job_id}/cancel", data={"csrf": csrf_of(page.text)}, follow_redirects=False
    )
    assert done.status_code == 303 and done.headers["location"].startswith(f"/jobs/{job_id}?")
    assert jobs.get_visible(env.ctx, env.centre.alice, job_id).state == "CANCELLED"


def test_the_live_stream_needs_a_session_and_the_right_tenant(env: Env, bob: TestClient) -> None:
    job_id = _alice_job(env)
    r = bob.get(f"/jobs/{job_id}/events")
    assert r.status_code == 404 and "secret" not in r.text
    anonymous = TestClient(env.client.app, base_url="https://testserver")
    r = anonymous.get(f"/jobs/{job_id}/events", follow_redirects=False)
    assert r.status_code in (303, 401) and "secret" not in r.text
    # The API's bearer token does not open a portal page: the portal wants its cookie.
    r = anonymous.get(
        f"/jobs/{job_id}", headers={"Authorization": f"Bearer {env.centre.alice_token}"}
    )
    assert "secret" not in r.text


def test_operator_and_report_pages_are_closed_to_members(env: Env, bob: TestClient) -> None:
    for path in ROLE_PAGES:
        r = bob.get(path, headers={"Accept": "text/html"})
        assert r.status_code == 403, (path, r.status_code)


def charge(env: Env, job_id: int, gpu_hours: float) -> None:
    """Write the ledger entry the scheduler writes when a job ends (the reports read it)."""
    with env.ctx.sessions.begin() as s:
        job = s.get(JobRow, job_id)
        assert job is not None and job.allocation_id is not None
        s.add(
            LedgerEntryRow(
                allocation_id=job.allocation_id,
                job_id=job_id,
                source=f"test:{job_id}",
                gpu_type=job.gpu_type,
                gpu_seconds=gpu_hours * 3600,
                created_at=datetime.now(tz=UTC),
            )
        )


def test_a_programme_manager_reports_only_on_their_programmes(env: Env) -> None:
    _passwords(env)
    charge(env, _alice_job(env), 2.0)
    with env.ctx.sessions.begin() as s:
        s.add(
            RoleAssignmentRow(
                user_id=repo.user_by_name(s, "bob").id,
                role="programme_manager",
                scope_kind="programme",
                scope_id=999,
                created_at=datetime.now(tz=UTC),
            )
        )
    admin = TestClient(env.client.app, base_url="https://testserver")
    web_session(admin, "root", "root-password")
    assert "alpha" in admin.get("/reports?by=project").text.split("<main")[-1]
    manager = web_session(env.client, "bob", "bob-password")
    page = manager.get("/reports?by=project")
    assert page.status_code == 200
    assert "alpha" not in page.text.split("<main")[-1]
    csv = manager.get("/reports/download/usage?from=2000-01&to=2100-12&by=project")
    assert csv.status_code == 200 and "alpha" not in csv.text
