"""Issue 17 item 2 on the REAL server path: a project's output sharing.

Real root, real Unix accounts provisioned by the scheduler leader, real bubblewrap; the
server wired by `build_context` as in `test_hostile_tenant`. Alice (PI) and carol share
project 'alpha'; bob has 'beta'. With sharing off (the default) carol's job cannot read
alice's run directory and the log API refuses carol; alice turns sharing on (carol, a
member, may not), after which alice's new runs are 2750 setgid/0640 to alpha's group (the
files her job makes too: umask 027): carol's job reads them and the log API answers carol,
while bob's job (his project sharing as well, so that the runs root is in his sandbox) and
bob's API calls still get nothing. Needs root and bubblewrap (skipped with the reason
elsewhere, failing with CI=true).
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from gpucenter.persistence.db import migrate
from gpucenter.persistence.tables_audit import AuditEntryRow
from gpucenter.services.identity import accounts
from tests.security.hostile_local.conftest import TEST_UID_BASE, make_fake_gpus
from tests.security.hostile_local.conftest import remove_test_accounts as remove_accounts
from tests.security.hostile_local.test_hostile_tenant import (
    SITE,
    Server,
    _auth,
    _log,
    _settings,
    _start,
    _state,
    _submit,
)

pytestmark = pytest.mark.usefixtures("as_root_with_bwrap")

WRITE = "echo ALPHA-OUTPUT-{tag}; echo ALPHA-RESULT-{tag} > result.txt"
READ = 'for f in {run}/stdout {run}/result.txt; do cat "$f" || echo "DENIED $f"; done'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    from gpucenter.dispatch.isolation import AccountPolicy

    tag = secrets.token_hex(2)
    base = TEST_UID_BASE + secrets.randbelow(90) * 100
    policy = AccountPolicy(base, base + 99, f"h{tag}u-", f"h{tag}g-")
    root = tmp_path_factory.mktemp("shared-outputs")
    os.chmod(root, 0o755)
    (root / "site.yaml").write_text(SITE)
    config = root / "hidden.conf"
    config.write_text("x\n")
    settings = _settings(root, policy, config, make_fake_gpus(root / "dev", 3))
    migrate(settings.effective_database_url)
    ctx, client = _start(settings)
    now = datetime.now(tz=UTC)
    try:
        with ctx.sessions.begin() as s:
            accounts.create_organisation(s, "Alpha University", "university", now)
            accounts.create_organisation(s, "Beta Startup", "startup", now)
            admin = accounts.create_user(s, "root", now, is_admin=True, password="root-password-x1")
            made = {
                name: accounts.create_user(s, name, now, organisation=org)
                for name, org in (
                    ("alice", "Alpha University"),
                    ("carol", "Alpha University"),
                    ("bob", "Beta Startup"),
                )
            }
            accounts.create_project(s, "alpha", "Alpha University", now)
            accounts.create_project(s, "beta", "Beta Startup", now)
            accounts.add_member(s, "alpha", "alice", "pi")
            accounts.add_member(s, "alpha", "carol")
            accounts.add_member(s, "beta", "bob", "pi")
            accounts.create_allocation(s, "alpha", 100.0, now)
            accounts.create_allocation(s, "beta", 100.0, now)
        tokens = {name: m.token for name, m in made.items()} | {"root": admin.token}
        yield Server(settings, ctx, client, policy, tokens)
    finally:
        client.__exit__(None, None, None)
        ctx.dispatcher.shutdown()
        ctx.engine.dispose()
        remove_accounts(policy)


def _run_dir(server: Server, job_id: int) -> Path:
    return server.settings.tenant_root.resolve() / "jobs" / f"job-{job_id}.run-1"


def _share(server: Server, who: str, project: str, on: bool) -> int:
    resp = server.client.put(
        f"/api/v1/projects/{project}/sharing",
        json={"share_outputs": on},
        headers=_auth(server, who),
    )
    return resp.status_code


def _alice_run(server: Server) -> tuple[int, Path, str]:
    tag = secrets.token_hex(4)
    job_id = _submit(server, "alice", "alpha", WRITE.format(tag=tag))
    _state(server, "alice", job_id, "COMPLETED")
    return job_id, _run_dir(server, job_id), tag


def _probe(server: Server, who: str, project: str, run: Path) -> str:
    job_id = _submit(server, who, project, READ.format(run=run))
    _state(server, who, job_id, "COMPLETED", "FAILED")
    resp = _log(server, who, job_id)
    assert resp.status_code == 200, resp.text
    return resp.text


def _mode(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_gid, stat.S_IMODE(st.st_mode)


def test_sharing_off_keeps_outputs_from_co_members(server: Server) -> None:
    job_id, run, tag = _alice_run(server)
    assert _mode(run)[1] == 0o700
    assert _mode(run / "stdout")[1] == 0o600 and _mode(run / "result.txt")[1] == 0o600
    seen = _probe(server, "carol", "alpha", run)
    assert tag not in seen and f"DENIED {run}/stdout" in seen, seen
    refused = _log(server, "carol", job_id)
    assert refused.status_code == 403 and tag not in refused.text, refused.text
    assert tag in _log(server, "alice", job_id).text  # the owner reads her own


def test_only_the_pi_turns_sharing_on_and_it_is_audited(server: Server) -> None:
    assert _share(server, "carol", "alpha", True) == 403
    assert _share(server, "bob", "alpha", True) == 404
    assert _share(server, "alice", "alpha", True) == 200
    shown = server.client.get("/api/v1/projects/alpha/sharing", headers=_auth(server, "carol"))
    assert shown.status_code == 200 and shown.json()["share_outputs"] is True
    with server.ctx.sessions() as s:
        entries = list(
            s.scalars(select(AuditEntryRow).where(AuditEntryRow.action == "project.share_outputs"))
        )
    assert [e.actor for e in entries] == ["alice"]


def test_sharing_on_lets_co_members_read_and_nobody_else(server: Server) -> None:
    assert _share(server, "alice", "alpha", True) == 200
    assert _share(server, "bob", "beta", True) == 200  # bob's sandbox then has the runs root
    job_id, run, tag = _alice_run(server)
    alpha_gid = _mode(run)[0]
    assert alpha_gid != os.stat(run).st_uid  # the project's group, not the owner's own
    assert _mode(run) == (alpha_gid, 0o2750)
    assert _mode(run / "stdout") == (alpha_gid, 0o640)
    assert _mode(run / "result.txt") == (alpha_gid, 0o640)  # made by the job: umask 027
    seen = _probe(server, "carol", "alpha", run)
    assert f"ALPHA-OUTPUT-{tag}" in seen and f"ALPHA-RESULT-{tag}" in seen, seen
    assert _log(server, "carol", job_id).status_code == 200
    assert tag in _log(server, "carol", job_id).text
    stranger = _probe(server, "bob", "beta", run)
    assert tag not in stranger and f"DENIED {run}/stdout" in stranger, stranger
    assert _log(server, "bob", job_id).status_code == 404
    # Off again: the next run is private, whatever was shared before.
    assert _share(server, "alice", "alpha", False) == 200
    later, later_run, later_tag = _alice_run(server)
    assert _mode(later_run)[1] == 0o700
    assert _log(server, "carol", later).status_code == 403
    assert later_tag not in _probe(server, "carol", "alpha", later_run)
