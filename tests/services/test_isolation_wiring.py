"""The local site's isolation as the server wires it: the mode rule with the live number of
organisations, the state directory made private, accounts provisioned from the database.

These go through `build_context` (the real wiring). Accounts are provisioned against an
in-memory machine (`FakeMachine`), so they run without root; the real ones are in
tests/security/hostile_local.
"""

from __future__ import annotations

import logging
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gpucenter.config import Settings
from gpucenter.dispatch.base import SiteUnavailable
from gpucenter.dispatch.isolation import IsolationSetting, RunMode
from gpucenter.dispatch.local.dispatcher import LocalDispatcher
from gpucenter.domain.jobs import JobState, WaitReason
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.db import migrate
from gpucenter.persistence.tables import JobRow
from gpucenter.services.context import AppContext
from gpucenter.services.identity import accounts
from gpucenter.services.identity.provisioning import AccountSync, desired_tenants
from gpucenter.services.jobs.manage import SubmitRequest, submit
from gpucenter.services.scheduling.cycle import run_pass
from gpucenter.services.scheduling.launch import launch_requests
from gpucenter.services.sites import isolation
from gpucenter.services.wiring import build_context, ensure_site
from tests.dispatch.builders import launch_request
from tests.dispatch.test_isolation_accounts import POLICY, FakeMachine
from tests.factories import wait_until


def _organisation(ctx: AppContext, name: str, user: str, project: str) -> None:
    now = datetime.now(tz=UTC)
    with ctx.sessions.begin() as s:
        accounts.create_organisation(s, name, "university", now)
        accounts.create_user(s, user, now, organisation=name)
        accounts.create_project(s, project, name, now)
        accounts.add_member(s, project, user)
        accounts.create_allocation(s, project, 10.0, now)


def _submit(ctx: AppContext, user: str, project: str, command: str = "true") -> int:
    from gpucenter.services.identity.signin import caller_for

    with ctx.sessions() as s:
        row = repo.user_by_name(s, user)
        assert row is not None
        caller = caller_for(s, row)
    return submit(ctx, caller, SubmitRequest(project=project, command=command)).id


@pytest.fixture
def single_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A server wired with isolation=single_user on SQLite, its count of organisations
    never cached (the rule is asked again at once)."""
    monkeypatch.setattr(isolation, "COUNT_TTL_S", 0.0)
    settings = Settings(
        var_dir=tmp_path / "var",
        database_url=f"sqlite:///{tmp_path / 'var' / 'gpucenter.db'}",
        isolation="single_user",
        kill_grace_s=0.5,
    )
    migrate(settings.effective_database_url)
    ctx = build_context(settings)
    ensure_site(ctx)
    yield ctx
    ctx.dispatcher.shutdown()
    ctx.engine.dispose()


def test_auto_is_multi_tenant_as_root_and_single_user_otherwise() -> None:
    settings = Settings(isolation="auto")
    assert isolation.effective_setting(settings, euid=0) is IsolationSetting.MULTI_TENANT
    assert isolation.effective_setting(settings, euid=1000) is IsolationSetting.SINGLE_USER
    pinned = Settings(isolation="single_user")
    assert isolation.effective_setting(pinned, euid=0) is IsolationSetting.SINGLE_USER


def test_single_user_runs_jobs_while_there_is_one_organisation(single_user: AppContext) -> None:
    _organisation(single_user, "Alpha University", "alice", "alpha")
    job_id = _submit(single_user, "alice", "alpha", "echo ran")
    run_pass(single_user)
    with single_user.sessions() as s:
        row = s.get(JobRow, job_id)
        assert row is not None and row.state == JobState.RUNNING.value, row.reason_detail


def test_a_second_organisation_stops_single_user_jobs_with_a_clear_reason(
    single_user: AppContext, caplog: pytest.LogCaptureFixture
) -> None:
    """The issue's set-up: `make run` (single-user), then the admin adds a second
    organisation, user and project. From then on nobody's job starts: it waits, saying why;
    none runs as the server (or as anyone else)."""
    _organisation(single_user, "Alpha University", "alice", "alpha")
    _organisation(single_user, "Beta Startup", "bob", "beta")
    with caplog.at_level(logging.ERROR):
        bob_job = _submit(single_user, "bob", "beta", "echo should-not-run")
        run_pass(single_user)
    with single_user.sessions() as s:
        row = s.get(JobRow, bob_job)
        assert row is not None
        assert row.state == JobState.PENDING.value
        assert row.reason == WaitReason.SITE_UNAVAILABLE.value
        assert "NO JOB WILL START" in row.reason_detail and "2 organisations" in row.reason_detail
    assert single_user.dispatcher.running_job_ids() == frozenset()
    assert any("NO JOB WILL START" in r.getMessage() for r in caplog.records)
    with pytest.raises(SiteUnavailable, match="2 organisations"):
        single_user.dispatcher.submit(launch_request(bob_job))


def test_multi_tenant_without_root_starts_nothing() -> None:
    gate = isolation.ModeGate(IsolationSetting.MULTI_TENANT, lambda: 1, None, euid=1000)
    decision = gate()
    assert decision.mode is RunMode.REFUSED and not decision.may_run_jobs
    assert "needs root" in decision.message


def test_the_gate_counts_again_and_says_each_change(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(isolation, "COUNT_TTL_S", 0.0)
    count = [1]
    gate = isolation.ModeGate(IsolationSetting.SINGLE_USER, lambda: count[0], None, euid=1000)
    with caplog.at_level(logging.INFO):
        assert gate().mode is RunMode.SINGLE_USER
        count[0] = 2
        assert gate().mode is RunMode.REFUSED
        assert gate().mode is RunMode.REFUSED
    said = [r for r in caplog.records if "job isolation" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.WARNING, logging.ERROR]  # once per change
    assert "SINGLE-USER MODE" in said[0].getMessage()


def test_the_state_directory_and_database_are_made_private(tmp_path: Path) -> None:
    var = tmp_path / "var"
    var.mkdir(mode=0o755)
    os.chmod(var, 0o755)
    url = f"sqlite:///{var / 'gpucenter.db'}"
    migrate(url)
    os.chmod(var / "gpucenter.db", 0o644)
    settings = Settings(var_dir=var, database_url=url)
    changes = isolation.secure_state(settings)
    assert stat.S_IMODE(var.stat().st_mode) == 0o700
    assert stat.S_IMODE((var / "gpucenter.db").stat().st_mode) == 0o600
    assert len(changes) == 2
    assert isolation.secure_state(settings) == []


def test_the_sandbox_hides_the_state_and_the_configuration(tmp_path: Path) -> None:
    settings = Settings(
        var_dir=tmp_path / "var",
        site_file=tmp_path / "site.yaml",
        isolation_hidden_paths=["/etc/gpucenter.env"],
    )
    hidden = isolation.sandbox_policy(settings).hidden_paths
    assert str((tmp_path / "var").resolve()) in hidden
    assert str((tmp_path / "site.yaml").resolve()) in hidden
    assert "/etc/gpucenter.env" in hidden


def test_accounts_follow_users_and_memberships(single_user: AppContext) -> None:
    """The leader's sync provisions members (and records their ids) once, and again only
    when something changed: a new member gets an account before their job starts."""
    _organisation(single_user, "Alpha University", "alice", "alpha")
    machine = FakeMachine()
    sync = AccountSync(single_user.sessions, POLICY, read=machine.read, run=machine.run)
    first = sync()
    assert first is not None and first.applied and not first.failed
    assert sync() is None  # nothing changed: nothing run
    with single_user.sessions() as s:
        alice = repo.user_by_name(s, "alice")
        assert alice is not None and alice.unix_uid is not None
        account = next(u for u in machine.read().users if u.uid == alice.unix_uid)
        assert account.name == "gpc-alice" and alice.unix_gid == account.gid
        users, projects = desired_tenants(s)
        assert [u.username for u in users] == ["alice"]
        assert [sorted(p.member_ids) for p in projects] == [[alice.id]]
    now = datetime.now(tz=UTC)
    with single_user.sessions.begin() as s:
        accounts.create_user(s, "carol", now, organisation="Alpha University")
        accounts.add_member(s, "alpha", "carol")
    again = sync()
    assert again is not None and any("gpc-carol" in str(c) for c in again.applied)
    group = next(g for g in machine.read().groups if g.name == "gpcp-alpha")
    assert group.members == {"gpc-alice", "gpc-carol"}


def test_a_launch_request_names_the_owner_by_their_account(single_user: AppContext) -> None:
    _organisation(single_user, "Alpha University", "alice", "alpha")
    machine = FakeMachine()
    AccountSync(single_user.sessions, POLICY, read=machine.read, run=machine.run)()
    job_id = _submit(single_user, "alice", "alpha")
    from gpucenter.core import NodeGpus
    from gpucenter.domain.ids import JobId

    with single_user.sessions() as s:
        request = launch_requests(s, {JobId(job_id): (NodeGpus("local", (0,)),)})[JobId(job_id)]
        alice = repo.user_by_name(s, "alice")
        assert alice is not None
    assert (request.owner.username, request.owner.uid, request.owner.gid) == (
        "alice",
        alice.unix_uid,
        alice.unix_gid,
    )


def test_only_a_root_multi_tenant_local_site_provisions(tmp_path: Path) -> None:
    settings = Settings(
        var_dir=tmp_path / "var",
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        isolation="single_user",
    )
    migrate(settings.effective_database_url)
    ctx = build_context(settings)
    try:
        assert ctx.account_sync is None
        assert isinstance(ctx.dispatcher, LocalDispatcher)
    finally:
        ctx.dispatcher.shutdown()
        ctx.engine.dispose()


def test_single_user_serving_one_owner_runs_theirs_and_never_anybody_elses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make run` as yourself with the lived-in demo (several organisations): the named
    owner's job runs; another organisation's user's job waits with the reason, never starts,
    and does not stop the owner's job in the same pass."""
    monkeypatch.setattr(isolation, "COUNT_TTL_S", 0.0)
    settings = Settings(
        var_dir=tmp_path / "var",
        database_url=f"sqlite:///{tmp_path / 'var' / 'gpucenter.db'}",
        isolation="single_user",
        single_user_owner="alice",
        kill_grace_s=0.5,
    )
    migrate(settings.effective_database_url)
    ctx = build_context(settings)
    ensure_site(ctx)
    try:
        _organisation(ctx, "Alpha University", "alice", "alpha")
        _organisation(ctx, "Beta Startup", "bob", "beta")
        bob_job = _submit(ctx, "bob", "beta", "echo should-not-run")
        alice_job = _submit(ctx, "alice", "alpha", "echo ran")
        run_pass(ctx)
        with ctx.sessions() as s:
            bob = s.get(JobRow, bob_job)
            alice = s.get(JobRow, alice_job)
            assert alice is not None and alice.state == JobState.RUNNING.value, alice.reason_detail
            assert bob is not None and bob.state == JobState.PENDING.value
            assert "only alice's jobs" in bob.reason_detail
        assert bob_job not in {int(j) for j in ctx.dispatcher.running_job_ids()}
    finally:
        ctx.dispatcher.shutdown()
        ctx.engine.dispose()


def test_single_user_jobs_wait_until_the_rule_allows_them_again(single_user: AppContext) -> None:
    """Refused is not failed: when the second organisation goes away, the job starts."""
    _organisation(single_user, "Alpha University", "alice", "alpha")
    _organisation(single_user, "Beta Startup", "bob", "beta")
    job_id = _submit(single_user, "alice", "alpha", "echo late")
    run_pass(single_user)
    from sqlalchemy import delete, select, update

    from gpucenter.persistence.tables import OrganisationRow, ProjectRow, UserRow

    with single_user.sessions.begin() as s:
        beta = s.scalar(select(OrganisationRow.id).where(OrganisationRow.name == "Beta Startup"))
        s.execute(
            update(UserRow).where(UserRow.organisation_id == beta).values(organisation_id=None)
        )
        s.execute(
            update(ProjectRow).where(ProjectRow.organisation_id == beta).values(organisation_id=1)
        )
        s.execute(delete(OrganisationRow).where(OrganisationRow.id == beta))
    for rt in single_user.site_runtimes():
        rt.health.succeeded()  # no backoff wait in the test

    def started() -> bool:
        run_pass(single_user)
        with single_user.sessions() as s:
            row = s.get(JobRow, job_id)
            return row is not None and row.state != JobState.PENDING.value

    wait_until(started, timeout=20)
