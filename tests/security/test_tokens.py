"""API tokens: scoped, shown once, listed without secrets, revocable; sign-in limits; TOTP."""

from __future__ import annotations

from sqlalchemy import select

from gpucenter.auth import totp
from gpucenter.persistence.tables_audit import AuditEntryRow
from gpucenter.services.identity import audit
from tests.security.conftest import Env, auth


def _actions(env: Env) -> list[str]:
    with env.ctx.sessions.begin() as s:
        return list(s.scalars(select(AuditEntryRow.action).order_by(AuditEntryRow.id)))


def test_a_scoped_token_reaches_only_its_scopes_and_dies_when_revoked(env: Env) -> None:
    c, alice = env.client, env.centre.alice_token
    made = c.post(
        "/api/v1/tokens",
        json={"name": "ci", "scopes": ["jobs:read"], "days": 7},
        headers=auth(alice),
    )
    assert made.status_code == 201, made.text
    secret, token_id = made.json()["token"], made.json()["id"]
    assert c.get("/api/v1/jobs", headers=auth(secret)).status_code == 200
    me = c.get("/api/v1/me", headers=auth(secret)).json()
    assert me["scopes"] == ["jobs:read"]
    denied = c.post("/api/v1/jobs", json={"project": "alpha", "command": "x"}, headers=auth(secret))
    assert denied.status_code == 403
    # A scoped token cannot mint a wider one (nor any: it lacks tokens:write).
    wider = c.post("/api/v1/tokens", json={"scopes": ["jobs:submit"]}, headers=auth(secret))
    assert wider.status_code == 403
    # Listing shows the scopes and last use, never a secret.
    listed = c.get("/api/v1/tokens", headers=auth(alice))
    assert secret not in listed.text
    row = next(t for t in listed.json() if t["id"] == token_id)
    assert row["scopes"] == ["jobs:read"] and row["last_used_at"] is not None
    assert "token" not in row
    # Bob cannot revoke alice's token (and cannot tell it exists).
    assert (
        c.delete(f"/api/v1/tokens/{token_id}", headers=auth(env.centre.bob_token)).status_code
        == 404
    )
    assert c.delete(f"/api/v1/tokens/{token_id}", headers=auth(alice)).status_code == 200
    assert c.get("/api/v1/jobs", headers=auth(secret)).status_code == 401
    assert {"token.create", "token.revoke"} <= set(_actions(env))


def test_scopes_cannot_exceed_the_creator(env: Env) -> None:
    c = env.client
    r = c.post(
        "/api/v1/tokens", json={"scopes": ["audit:read"]}, headers=auth(env.centre.alice_token)
    )
    assert r.status_code == 403
    r = c.post(
        "/api/v1/tokens", json={"scopes": ["nonsense"]}, headers=auth(env.centre.alice_token)
    )
    assert r.status_code == 422
    r = c.post(
        "/api/v1/tokens",
        json={"scopes": ["jobs:read"], "days": 100000},
        headers=auth(env.centre.alice_token),
    )
    assert r.status_code == 422


def test_repeated_failures_lock_the_username_and_are_audited(env: Env) -> None:
    c = env.client
    for _ in range(env.ctx.settings.signin_max_failures):
        r = c.post("/api/v1/auth/token", json={"username": "root", "password": "nope"})
        assert r.status_code == 401
    locked = c.post("/api/v1/auth/token", json={"username": "root", "password": "root-password"})
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0
    assert locked.headers["content-type"].startswith("application/problem+json")
    actions = _actions(env)
    assert actions.count("auth.sign_in_failed") == env.ctx.settings.signin_max_failures
    assert "auth.sign_in" not in actions


def test_the_address_rate_limit_applies_to_sign_in(env: Env) -> None:
    c = env.client
    c.app.state.guard.rate_per_minute = 3  # type: ignore[attr-defined]
    codes = [
        c.post("/api/v1/auth/token", json={"username": f"u{i}", "password": "x"}).status_code
        for i in range(5)
    ]
    assert codes[:3] == [401, 401, 401] and codes[3:] == [429, 429]


def test_totp_second_factor(env: Env) -> None:
    c, root = env.client, env.centre.admin_token
    setup = c.post("/api/v1/auth/totp", headers=auth(root)).json()
    secret = setup["secret"]
    assert setup["uri"].startswith("otpauth://totp/")
    now = env.ctx.clock.now()
    assert c.post(
        "/api/v1/auth/totp/enable", json={"code": "000000"}, headers=auth(root)
    ).status_code in (422,)
    code = totp.code_at(secret, now)
    assert (
        c.post("/api/v1/auth/totp/enable", json={"code": code}, headers=auth(root)).status_code
        == 204
    )
    body = {"username": "root", "password": "root-password"}
    assert c.post("/api/v1/auth/token", json=body).status_code == 401
    # The code used to enable it cannot be replayed; the next step's code works once.
    assert c.post("/api/v1/auth/token", json=body | {"code": code}).status_code == 401
    later = totp.code_at(secret, now + 30)
    assert c.post("/api/v1/auth/token", json=body | {"code": later}).status_code == 200
    assert c.post("/api/v1/auth/token", json=body | {"code": later}).status_code == 401
    with env.ctx.sessions.begin() as s:
        assert audit.verify(s).ok
    assert "auth.totp_enable" in _actions(env)
