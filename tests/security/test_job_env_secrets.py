"""Issue 17: a job's environment secrets are not stored in clear and never shown to anyone
but the job's owner.

Real SQLite file and real PostgreSQL (the `db_url` fixture runs each test on both), the real
app through FastAPI's test client (the PostgreSQL fast path included: the client runs the
lifespan), the portal through a browser session, the CLI's `job show` through its real
client on the test client's transport, and the scheduler's real pass with the local
dispatcher."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from typer.testing import CliRunner

from gpucenter.auth.credentials import hash_password
from gpucenter.client import Client
from gpucenter.domain.directives import parse_directives
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.sealed_env import MASK, EnvKeys, SealError, keys_for, open_env
from gpucenter.persistence.tables import JobRow
from gpucenter.services.identity import accounts
from gpucenter.services.jobs import submit as submitting
from gpucenter.services.jobs.submission import JobForm
from gpucenter.services.scheduling.cycle import run_pass
from tests.factories import wait_until
from tests.security.conftest import Env, auth
from tests.security.web import web_session

SECRET = "hf_S3cr3tT0kenValue0123456789abcdef"
PATH = "/api/v1/jobs"
FIRST_ENV = {"HF_TOKEN": SECRET, "EPOCHS": "3"}


@pytest.fixture
def carol(env: Env) -> str:
    """Carol: alice's co-member in project 'alpha'; her API token."""
    from datetime import UTC, datetime

    now = datetime.now(tz=UTC)
    with env.ctx.sessions.begin() as s:
        made = accounts.create_user(s, "carol", now, organisation="Alpha University")
        accounts.add_member(s, "alpha", "carol")
        for name in ("alice", "carol", "root"):
            repo.user_by_name(s, name).password_hash = hash_password(f"{name}-password-x")
    return made.token


def _submit(env: Env, token: str, env_vars: dict[str, str], key: str | None = None) -> int:
    headers = auth(token) | ({"Idempotency-Key": key} if key else {})
    body = {"project": "alpha", "command": "echo $HF_TOKEN", "env": env_vars}
    resp = env.client.post(PATH, json=body, headers=headers)
    assert resp.status_code == 201, resp.text
    return int(resp.json()["id"])


def _raw_dump(env: Env, db_url: str) -> bytes:
    """Everything the database holds for the jobs table, as bytes: its rows as the database
    renders them, and on SQLite the file (and its write-ahead log) itself."""
    with env.ctx.engine.connect() as conn:
        if db_url.startswith("postgresql"):
            rows = conn.execute(text("SELECT jobs::text FROM jobs")).scalars().all()
        else:
            rows = [str(r) for r in conn.execute(text("SELECT * FROM jobs")).all()]
    dump = "\n".join(rows).encode()
    if db_url.startswith("sqlite:///"):
        base = Path(db_url.removeprefix("sqlite:///"))
        for path in (base, base.with_name(base.name + "-wal")):
            if path.exists():
                dump += path.read_bytes()
    return dump


def test_env_values_are_sealed_at_rest_on_both_submission_paths(
    env: Env, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast: list[Any] = []
    real = submitting.submit_async

    async def counting(*args: Any, **kwargs: Any) -> Any:
        answer = await real(*args, **kwargs)
        fast.append(answer)
        return answer

    monkeypatch.setattr(submitting, "submit_async", counting)
    one = _submit(env, env.centre.alice_token, FIRST_ENV, key="k1")
    again = _submit(env, env.centre.alice_token, FIRST_ENV, key="k1")
    assert again == one  # the Idempotency-Key still recognises its request
    clash = env.client.post(
        PATH,
        json={"project": "alpha", "command": "echo $HF_TOKEN", "env": {"HF_TOKEN": "other"}},
        headers=auth(env.centre.alice_token) | {"Idempotency-Key": "k1"},
    )
    assert clash.status_code == 409, clash.text
    # An array goes through the general path (one transaction for its tasks).
    resp = env.client.post(
        PATH,
        json={"project": "alpha", "command": "true", "env": {"HF_TOKEN": SECRET}, "array": "0-2"},
        headers=auth(env.centre.alice_token),
    )
    assert resp.status_code == 201, resp.text
    if db_url.startswith("postgresql"):
        assert fast and fast[0] is not None  # the first was written by the fast path

    dump = _raw_dump(env, db_url)
    assert SECRET.encode() not in dump
    assert b"HF_TOKEN" in dump  # names stay readable
    with env.ctx.sessions() as s:
        rows = list(s.scalars(select(JobRow).order_by(JobRow.id)))
        keys = keys_for(s.info)
        assert len(rows) == 4
        for row in rows:
            assert SECRET not in json.dumps(row.env) and SECRET not in (row.request_hash or "")
            assert open_env(keys, row.user_id, row.env)["HF_TOKEN"] == SECRET
        tasks = [open_env(keys, r.user_id, r.env).get("GPUCENTER_ARRAY_TASK_ID") for r in rows]
        assert tasks == [None, "0", "1", "2"]
        # The Idempotency-Key digest covers the env's values only as an HMAC under the
        # server's key: a plain SHA-256 of the form would let a weak secret be guessed.
        form = JobForm(project="alpha", command="echo $HF_TOKEN", env=FIRST_ENV)
        assert rows[0].request_hash == form.fingerprint(keys.digest_key())
        assert rows[0].request_hash != form.fingerprint()
    # The key is outside the database, readable by the server only.
    key_file = env.ctx.settings.var_dir / "secrets" / "env-keys.json"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert key_file.read_bytes() not in dump


def test_an_env_given_as_a_script_directive_is_sealed_too(env: Env, db_url: str) -> None:
    """`#GPUCENTER --env NAME=VALUE` in a script: the value goes sealed into the job's env,
    and the script is stored with the name only (it is stored in clear and shown to the
    project); the job still gets the value, and the script still reads its directives."""
    script = (
        "#!/bin/bash\n"
        f"#GPUCENTER --env HF_TOKEN={SECRET} -e 'NOTE=two words' --gpus 1\n"
        "echo $HF_TOKEN\n"
    )
    body = {"project": "alpha", "script": script}
    resp = env.client.post(PATH, json=body, headers=auth(env.centre.alice_token))
    assert resp.status_code == 201, resp.text
    job_id = int(resp.json()["id"])
    assert SECRET.encode() not in _raw_dump(env, db_url)
    with env.ctx.sessions() as s:
        row = s.get_one(JobRow, job_id)
        keys = keys_for(s.info)
        assert open_env(keys, row.user_id, row.env) == {"HF_TOKEN": SECRET, "NOTE": "two words"}
        assert "HF_TOKEN=(sealed)" in row.command and "echo $HF_TOKEN" in row.command
        assert parse_directives(row.command)["gpus_per_node"] == 1
    shown = env.client.get(f"{PATH}/{job_id}", headers=auth(env.centre.alice_token)).json()
    assert SECRET not in shown["command"] and shown["env"]["HF_TOKEN"] == SECRET


def test_only_the_owner_sees_the_values_api_portal_and_cli(
    env: Env, carol: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = _submit(env, env.centre.alice_token, {"HF_TOKEN": SECRET})

    # API
    mine = env.client.get(f"{PATH}/{job_id}", headers=auth(env.centre.alice_token))
    assert mine.status_code == 200 and mine.json()["env"] == {"HF_TOKEN": SECRET}
    for token in (carol, env.centre.admin_token):
        theirs = env.client.get(f"{PATH}/{job_id}", headers=auth(token))
        assert theirs.status_code == 200, theirs.text
        assert theirs.json()["env"] == {"HF_TOKEN": MASK}
        assert SECRET not in theirs.text
        listing = env.client.get(f"{PATH}?project=alpha", headers=auth(token))
        assert listing.status_code == 200 and SECRET not in listing.text
    listing = env.client.get(f"{PATH}?project=alpha", headers=auth(env.centre.alice_token))
    assert SECRET not in listing.text  # lists never open secrets, even the owner's

    # Portal
    for name in ("carol", "root"):
        page = web_session(env.client, name, f"{name}-password-x").get(f"/jobs/{job_id}")
        assert page.status_code == 200 and "HF_TOKEN" in page.text
        assert SECRET not in page.text and MASK in page.text
        env.client.cookies.clear()
    page = web_session(env.client, "alice", "alice-password-x").get(f"/jobs/{job_id}")
    assert SECRET in page.text
    env.client.cookies.clear()

    # CLI (`gpucenter job show`, its real client on the test client's transport)
    from gpucenter.cli import jobs as cli_jobs

    def shown(token: str) -> str:
        transport = env.client._transport
        monkeypatch.setattr(
            cli_jobs, "api_client", lambda: Client("https://testserver", token, transport=transport)
        )
        result = CliRunner().invoke(cli_jobs.app, ["show", str(job_id)])
        assert result.exit_code == 0, result.output
        json_result = CliRunner().invoke(cli_jobs.app, ["show", str(job_id), "--json"])
        return result.output + json_result.output

    assert f"HF_TOKEN={MASK}" in shown(carol) and SECRET not in shown(carol)
    assert SECRET not in shown(env.centre.admin_token)
    assert f"HF_TOKEN={SECRET}" in shown(env.centre.alice_token)


def test_a_tampered_env_fails_its_job_alone_and_the_pass_goes_on(env: Env, carol: str) -> None:
    tampered = _submit(env, env.centre.alice_token, {"HF_TOKEN": SECRET})
    copied = _submit(env, carol, {"HF_TOKEN": "carols-own"})
    fine = _submit(env, env.centre.alice_token, {"OK": "1"})
    with env.ctx.sessions.begin() as s:
        row = s.get_one(JobRow, tampered)
        original = dict(row.env)
        token = original["$sealed"]
        flipped = token[:-6] + ("A" if token[-6] != "A" else "B") + token[-5:]
        row.env = {**original, "$sealed": flipped}
        # Alice's sealed secret put into carol's job: bound to alice, it does not open.
        s.get_one(JobRow, copied).env = original

    def settled() -> bool:
        run_pass(env.ctx)
        with env.ctx.sessions() as s:
            states = {j: s.get_one(JobRow, j).state for j in (tampered, copied, fine)}
        return states[tampered] == states[copied] == "FAILED" and states[fine] in (
            "RUNNING",
            "COMPLETED",
        )

    wait_until(settled, timeout=30, step=0.2)
    with env.ctx.sessions() as s:
        for job_id in (tampered, copied):
            row = s.get_one(JobRow, job_id)
            assert "could not be decrypted" in row.reason_detail, row.reason_detail
            assert row.reason_message and row.reason_message["code"] == "job.env_unreadable"
    shown = env.client.get(f"{PATH}/{tampered}", headers=auth(env.centre.alice_token))
    assert shown.status_code == 200 and shown.json()["env"] == {"HF_TOKEN": MASK}


def test_rotation_keeps_old_rows_readable_and_a_lost_key_fails_closed(
    env: Env, tmp_path: Path
) -> None:
    old = _submit(env, env.centre.alice_token, {"HF_TOKEN": SECRET})
    keys = keys_for(env.ctx.sessions.kw["info"])
    first = keys.cipher()[0]
    second = keys.rotate()
    assert second != first
    new = _submit(env, env.centre.alice_token, {"HF_TOKEN": SECRET})
    with env.ctx.sessions() as s:
        old_row, new_row = s.get_one(JobRow, old), s.get_one(JobRow, new)
        assert f".{first}." in old_row.env["$sealed"] and f".{second}." in new_row.env["$sealed"]
        # Another process (a fresh ring object on the same file) opens both.
        other = EnvKeys(keys.path)
        assert open_env(other, old_row.user_id, old_row.env)["HF_TOKEN"] == SECRET
        assert open_env(other, new_row.user_id, new_row.env)["HF_TOKEN"] == SECRET
        # A rotation made by another process is taken up for sealing within RECHECK_S.
        third = other.rotate()
        keys._checked = 0.0  # as if RECHECK_S had passed
        assert keys.cipher()[0] == third
        # A server without the ring (a restored database elsewhere) opens nothing.
        stranger = EnvKeys.under(tmp_path / "elsewhere")
        with pytest.raises(SealError):
            open_env(stranger, old_row.user_id, old_row.env)


def test_the_admin_cli_rotates_the_key_on_the_record(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`gpucenter admin rotate-env-key` on the server host: a new key is current, the old
    row still opens, and the audit log says so."""
    from gpucenter.cli.main import app
    from gpucenter.config import get_settings
    from gpucenter.persistence.tables_audit import AuditEntryRow

    old = _submit(env, env.centre.alice_token, {"HF_TOKEN": SECRET})
    keys = keys_for(env.ctx.sessions.kw["info"])
    first = keys.cipher()[0]
    monkeypatch.setenv("GPUCENTER_VAR_DIR", str(env.ctx.settings.var_dir))
    monkeypatch.setenv("GPUCENTER_DATABASE_URL", env.ctx.settings.effective_database_url)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["admin", "rotate-env-key"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    with env.ctx.sessions() as s:
        entry = s.scalars(
            select(AuditEntryRow).where(AuditEntryRow.action == "job_env.key_rotated")
        ).one()
        assert entry.details["from"] == first and entry.details["to"] in result.output
        row = s.get_one(JobRow, old)
        # The server's own ring object learns the new key from the file (another process).
        assert open_env(keys, row.user_id, row.env)["HF_TOKEN"] == SECRET
    new = _submit(env, env.centre.alice_token, {"HF_TOKEN": SECRET})
    with env.ctx.sessions() as s:
        sealed = s.get_one(JobRow, new).env["$sealed"]
    assert f".{entry.details['to']}." in sealed
