"""One password policy on every way a password is set: the admin CLI, the API (a new user,
one's own change) and the portal's admin form (issue 17 item 7)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpucenter.auth import passwords
from gpucenter.auth.passwords import Problem
from tests.security.conftest import Env, auth
from tests.security.web import csrf_of, web_session


@pytest.mark.parametrize(
    ("password", "username", "expected"),
    [
        ("password", "", Problem.TOO_SHORT),
        ("short-one", "", Problem.TOO_SHORT),
        ("x" * 1025, "", Problem.TOO_LONG),
        ("password1234", "", Problem.COMMON),  # in the list itself
        ("Qwertyuiop!!2024", "", Problem.COMMON),  # a common one with digits and symbols added
        ("abcabcabcabc", "", Problem.REPEATED),
        ("123456789012", "", Problem.REPEATED),  # counts up, digits going round
        ("zyxwvutsrqpo", "", Problem.REPEATED),
        ("Administrator", "administrator", Problem.USERNAME),
        ("kimjiwoo-lab!!", "kimjiwoo-lab", Problem.USERNAME),
        ("demo-password", "demo", None),  # the demo's and the tests' passwords pass
        ("admin-password", "admin", None),
        ("root-password", "root", None),
        ("correct horse battery staple", "", None),
    ],
)
def test_the_policy(password: str, username: str, expected: Problem | None) -> None:
    assert passwords.problem(password, username) is expected


def test_the_list_is_the_committed_one() -> None:
    common = passwords.common_passwords()
    assert len(common) > 9000 and {"123456", "password", "iloveyou"} <= common
    assert not any(line.startswith("Copyright") for line in common)  # the notice is not a word


def test_the_admin_cli_refuses_weak_passwords(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gpucenter.cli.admin import app
    from gpucenter.config import get_settings

    monkeypatch.setenv("GPUCENTER_DATABASE_URL", env.ctx.settings.effective_database_url)
    monkeypatch.setenv("GPUCENTER_VAR_DIR", str(env.ctx.settings.var_dir))
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        weak = runner.invoke(app, ["user", "create", "jiwoo", "--password", "password"])
        common = runner.invoke(app, ["user", "create", "jiwoo", "--password", "password1234"])
        good = runner.invoke(app, ["user", "create", "jiwoo", "--password", "a-long-password-1"])
        change = runner.invoke(app, ["user", "set-password", "jiwoo"], input="short\nshort\n")
    finally:
        get_settings.cache_clear()
    assert weak.exit_code == 2
    assert "password: is too short: use at least 12 characters" in weak.output
    assert common.exit_code == 2 and "most common passwords" in common.output
    assert good.exit_code == 0, good.output
    assert change.exit_code == 2 and "too short" in change.output
    assert env.client.post(
        "/api/v1/auth/token", json={"username": "jiwoo", "password": "a-long-password-1"}
    ).is_success


def test_the_api_refuses_weak_passwords(env: Env) -> None:
    c, root = env.client, env.centre.admin_token
    for weak, says in (("password", "too short"), ("password1234", "most common")):
        r = c.post(
            "/api/v1/admin/users", json={"username": "jiwoo", "password": weak}, headers=auth(root)
        )
        assert r.status_code == 422 and says in r.json()["detail"], r.text
    assert "password1234" not in r.text  # a password is never echoed
    made = c.post(
        "/api/v1/admin/users",
        json={"username": "jiwoo", "password": "a-long-password-1", "display_name": "Kim"},
        headers=auth(root),
    )
    assert made.status_code == 201 and made.json()["username"] == "jiwoo"
    # Only centre admins make users.
    denied = c.post(
        "/api/v1/admin/users",
        json={"username": "eve2", "password": "a-long-password-1"},
        headers=auth(env.centre.alice_token),
    )
    assert denied.status_code == 403

    # One's own change: the same policy, and the current password must be right.
    token = c.post(
        "/api/v1/auth/token", json={"username": "jiwoo", "password": "a-long-password-1"}
    ).json()["token"]
    change = {"current_password": "a-long-password-1"}
    short = c.post(
        "/api/v1/auth/password", json=change | {"new_password": "short"}, headers=auth(token)
    )
    assert short.status_code == 422 and "new_password" in short.json()["detail"]
    same = c.post(
        "/api/v1/auth/password", json=change | {"new_password": "jiwoo"}, headers=auth(token)
    )
    assert same.status_code == 422
    wrong = c.post(
        "/api/v1/auth/password",
        json={"current_password": "guess-guess-guess", "new_password": "a-new-long-phrase-9"},
        headers=auth(token),
    )
    assert wrong.status_code == 422 and "current_password" in wrong.json()["detail"]
    ok = c.post(
        "/api/v1/auth/password",
        json=change | {"new_password": "a-new-long-phrase-9"},
        headers=auth(token),
    )
    assert ok.status_code == 204
    new = {"username": "jiwoo", "password": "a-new-long-phrase-9"}
    assert c.post("/api/v1/auth/token", json=new).status_code == 200


def test_the_portal_refuses_weak_passwords(env: Env) -> None:
    c = web_session(env.client, "root", "root-password")
    token = csrf_of(c.get("/admin").text)
    for weak, says in (
        ("password", "at least 12 characters"),
        ("password1234", "most common passwords"),
        ("jiwoo-the-user", "must not be the username"),
    ):
        form = {"csrf": token, "username": "jiwoo-the-user", "password": weak}
        r = c.post("/admin/users", data=form)
        assert r.status_code == 422 and 'id="e-password"' in r.text and says in r.text
    form = {"csrf": token, "username": "jiwoo", "password": "a-long-password-1"}
    assert c.post("/admin/users", data=form, follow_redirects=False).status_code == 303
