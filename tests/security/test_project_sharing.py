"""Issue 17 item 2 through the portal, the CLI and the log API (no root needed): only the
project's PI turns output sharing on or off, every change is audited, and a co-member reads
another member's logs only while the project shares. Real SQLite and PostgreSQL, the real
app; the CLI command runs for real with its HTTP call routed into the test client (a fake
transport for `api_call`). The file modes themselves are tested as root with real accounts
and bubblewrap in `hostile_local/test_shared_outputs.py`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from gpucenter.auth.credentials import hash_password
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.tables import JobRow, ProjectRow
from gpucenter.persistence.tables_audit import AuditEntryRow
from gpucenter.services.identity import accounts
from tests.security.conftest import Env, auth
from tests.security.web import csrf_of, web_session


@pytest.fixture
def carol(env: Env) -> str:
    """Alice becomes alpha's PI; carol joins as a member. Carol's API token."""
    now = datetime.now(tz=UTC)
    with env.ctx.sessions.begin() as s:
        made = accounts.create_user(s, "carol", now, organisation="Alpha University")
        accounts.add_member(s, "alpha", "carol")
        accounts.add_member(s, "alpha", "alice", "pi")
        for name in ("alice", "carol"):
            repo.user_by_name(s, name).password_hash = hash_password(f"{name}-password-x")
    return made.token


def _shared(env: Env) -> bool:
    with env.ctx.sessions() as s:
        return bool(s.scalar(select(ProjectRow.share_outputs).where(ProjectRow.name == "alpha")))


def _audited(env: Env) -> list[tuple[str, Any]]:
    with env.ctx.sessions() as s:
        rows = s.scalars(
            select(AuditEntryRow)
            .where(AuditEntryRow.action == "project.share_outputs")
            .order_by(AuditEntryRow.id)
        )
        return [(r.actor, r.details["to"]) for r in rows]


def test_only_the_pi_changes_sharing_in_the_portal(env: Env, carol: str) -> None:
    with env.ctx.sessions() as s:
        alpha = repo.project_by_name(s, "alpha").id
    member = web_session(env.client, "carol", "carol-password-x")
    page = member.get(f"/projects/{alpha}")
    assert page.status_code == 200 and "owner only" in page.text
    assert f"/projects/{alpha}/sharing" not in page.text  # no form for a member
    posted = member.post(
        f"/projects/{alpha}/sharing",
        data={"csrf": csrf_of(page.text), "share_outputs": "on"},
        follow_redirects=False,
    )
    assert posted.status_code == 403 and not _shared(env)
    env.client.cookies.clear()
    pi = web_session(env.client, "alice", "alice-password-x")
    page = pi.get(f"/projects/{alpha}")
    assert f"/projects/{alpha}/sharing" in page.text
    no_token = pi.post(f"/projects/{alpha}/sharing", data={"share_outputs": "on"})
    assert no_token.status_code == 403 and not _shared(env)  # CSRF
    done = pi.post(
        f"/projects/{alpha}/sharing",
        data={"csrf": csrf_of(page.text), "share_outputs": "on"},
        follow_redirects=False,
    )
    assert done.status_code == 303 and _shared(env)
    assert _audited(env) == [("alice", True)]


def test_only_the_pi_changes_sharing_from_the_cli(
    env: Env, carol: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gpucenter.cli import projects as cli_projects
    from gpucenter.client import ApiError

    def run(token: str, *args: str) -> Any:
        def api_call(method: str, path: str, **kw: Any) -> Any:
            resp = env.client.request(method, path, headers=auth(token), **kw)
            if resp.status_code >= 400:
                body = resp.json()
                raise ApiError(resp.status_code, body.get("title", ""), body.get("detail", ""))
            return resp.json()

        monkeypatch.setattr(cli_projects, "api_call", api_call)
        from gpucenter.cli.main import app

        return CliRunner().invoke(app, ["project", "sharing", "alpha", *args])

    refused = run(carol, "--on")
    assert refused.exit_code == 1 and not _shared(env), refused.output
    assert "only the PI" in refused.output
    shown = run(carol)
    assert shown.exit_code == 0 and "to its owner" in shown.output
    turned = run(env.centre.alice_token, "--on")
    assert turned.exit_code == 0 and "shares" in turned.output and _shared(env)
    off = run(env.centre.admin_token, "--off")  # a centre admin may too
    assert off.exit_code == 0 and not _shared(env)
    assert _audited(env) == [("alice", True), ("root", False)]


def test_a_co_members_logs_only_while_the_project_shares(env: Env, carol: str) -> None:
    from gpucenter.services.jobs import manage as jobs
    from gpucenter.services.jobs.submission import JobForm

    job = jobs.submit(env.ctx, env.centre.alice, JobForm(project="alpha", command="true"))
    out = env.ctx.settings.var_dir / "alice-out"
    out.write_text("alice's output\n")
    with env.ctx.sessions.begin() as s:
        s.get_one(JobRow, job.id).stdout_path = str(out)
    url = f"/api/v1/jobs/{job.id}/logs"
    assert env.client.get(url, headers=auth(env.centre.alice_token)).status_code == 200
    refused = env.client.get(url, headers=auth(carol))
    assert refused.status_code == 403 and "alice's output" not in refused.text
    assert env.client.get(url, headers=auth(env.centre.bob_token)).status_code == 404
    put = env.client.put(
        "/api/v1/projects/alpha/sharing",
        json={"share_outputs": True},
        headers=auth(env.centre.alice_token),
    )
    assert put.status_code == 200
    allowed = env.client.get(url, headers=auth(carol))
    assert allowed.status_code == 200 and "alice's output" in allowed.text
    assert env.client.get(url, headers=auth(env.centre.bob_token)).status_code == 404
