"""Refusals of accounts, sign-in, tokens, roles and accounting carry a message code, so a
Korean reader gets Korean (issue 22, item 5).

Why: the portal and the CLI render a problem's `code`/`params` in the reader's language; a
refusal raised as plain English reaches a Korean user in English. The API table sends one
request per refusal and checks the answer names the code, that its English is the `detail`
the API always sent (no client that compares the words breaks, and sign-in says no more
than before), and that it renders with Hangul in Korean. The CLI table runs
`gpucenter admin` under LANG=ko_KR.UTF-8 and expects Korean on the terminal."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from gpucenter import locale
from gpucenter.app import create_app
from gpucenter.config import Settings, get_settings
from gpucenter.domain.messages import ENGLISH, Message
from gpucenter.services.context import AppContext
from tests.factories import Centre, make_context, seed_centre

HANGUL = re.compile("[\uac00-\ud7a3]")
A = "/api/v1/accounting"
USAGE = f"{A}/reports/usage?from=2026-01&to=2026-02"
CREDIT = {"kind": "credit", "reason": "refund", "allocation_id": 1, "gpu_hours": 1, "key": "k1"}

# (label, who: alice|admin|none|bad, method, path, JSON body, status, code, the inner code
# of an `error.field` problem or None)
CASES: list[tuple[str, str, str, str, dict[str, Any] | None, int, str, str | None]] = [
    ("no bearer", "none", "GET", "/api/v1/jobs", None, 401, "error.bearer_missing", None),
    ("bad token", "bad", "GET", "/api/v1/jobs", None, 401, "error.token_invalid", None),
    (
        "wrong password",
        "none",
        "POST",
        "/api/v1/auth/token",
        {"username": "root", "password": "not-the-password"},
        401,
        "error.wrong_credentials",
        None,
    ),
    (
        "unknown user reads the same",
        "none",
        "POST",
        "/api/v1/auth/token",
        {"username": "nobody-here", "password": "not-the-password"},
        401,
        "error.wrong_credentials",
        None,
    ),
    (
        "no permission",
        "alice",
        "POST",
        "/api/v1/admin/roles",
        {"username": "bob", "role": "centre_admin"},
        403,
        "error.needs_permission",
        None,
    ),
    (
        "unknown role",
        "admin",
        "POST",
        "/api/v1/admin/roles",
        {"username": "bob", "role": "wizard"},
        422,
        "error.field",
        "error.unknown_role",
    ),
    (
        "short password",
        "admin",
        "POST",
        "/api/v1/admin/users",
        {"username": "carol", "password": "short"},
        422,
        "error.field",
        "error.password_too_short",
    ),
    (
        "bad username",
        "admin",
        "POST",
        "/api/v1/admin/users",
        {"username": "Carol!", "password": "a-long-password-1"},
        422,
        "error.field",
        "error.account_name",
    ),
    (
        "user exists",
        "admin",
        "POST",
        "/api/v1/admin/users",
        {"username": "alice", "password": "a-long-password-1"},
        409,
        "error.user_exists",
        None,
    ),
    (
        "unknown scope",
        "alice",
        "POST",
        "/api/v1/tokens",
        {"name": "ci", "scopes": ["wings:fly"]},
        422,
        "error.field",
        "error.unknown_scope",
    ),
    (
        "bad token name",
        "alice",
        "POST",
        "/api/v1/tokens",
        {"name": "ci/cd", "scopes": ["jobs:read"]},
        422,
        "error.field",
        "error.token_name",
    ),
    (
        "unknown job state",
        "alice",
        "GET",
        "/api/v1/jobs?state=flying",
        None,
        422,
        "error.field",
        "error.unknown_state",
    ),
    (
        "second factor not started",
        "admin",
        "POST",
        "/api/v1/auth/totp/enable",
        {"code": "123456"},
        409,
        "error.mfa_start_first",
        None,
    ),
    (
        "second factor not on",
        "admin",
        "POST",
        "/api/v1/auth/totp/disable",
        {"code": "123456"},
        409,
        "error.mfa_not_on",
        None,
    ),
    (
        "wrong current password",
        "admin",
        "POST",
        "/api/v1/auth/password",
        {"current_password": "not-it", "new_password": "a-long-password-2"},
        422,
        "error.field",
        "error.not_current_password",
    ),
    ("report not mine", "alice", "GET", f"{USAGE}&by=month", None, 403, "error.reports_role", None),
    (
        "unknown dimension",
        "admin",
        "GET",
        f"{USAGE}&by=wings",
        None,
        422,
        "error.field",
        "error.unknown_dimension",
    ),
    (
        "rate card by a member",
        "alice",
        "PUT",
        f"{A}/rate-cards",
        {"fiscal_year": 2026, "gpu_type": "a100", "krw_per_gpu_hour": 1000},
        403,
        "error.rate_cards_admin",
        None,
    ),
    (
        "rate card year",
        "admin",
        "PUT",
        f"{A}/rate-cards",
        {"fiscal_year": 1990, "gpu_type": "a100", "krw_per_gpu_hour": 1000},
        422,
        "error.field",
        "error.fiscal_year_range",
    ),
    (
        "ledger by a member",
        "alice",
        "POST",
        f"{A}/adjustments",
        CREDIT,
        403,
        "error.ledger_adjust_role",
        None,
    ),
    (
        "ledger without a reason",
        "admin",
        "POST",
        f"{A}/adjustments",
        CREDIT | {"reason": " "},
        422,
        "error.field",
        "error.reason_ledger",
    ),
    (
        "ledger nothing to credit",
        "admin",
        "POST",
        f"{A}/adjustments",
        CREDIT | {"gpu_hours": 0},
        422,
        "error.field",
        "error.more_than_zero",
    ),
]


@pytest.fixture
def env(settings: Settings) -> Iterator[tuple[AppContext, Centre, TestClient]]:
    ctx = make_context(settings)
    centre = seed_centre(ctx)
    with TestClient(create_app(ctx, run_scheduler=False)) as client:
        yield ctx, centre, client
    ctx.engine.dispose()


def _headers(centre: Centre, who: str) -> dict[str, str]:
    token = {"alice": centre.alice_token, "admin": centre.admin_token, "bad": "gpc_nope"}
    return {"Authorization": f"Bearer {token[who]}"} if who in token else {}


@pytest.mark.parametrize(
    ("label", "who", "method", "path", "body", "status", "code", "inner"),
    CASES,
    ids=[c[0] for c in CASES],
)
def test_each_service_refusal_reads_in_korean(
    env: tuple[AppContext, Centre, TestClient],
    label: str,
    who: str,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    status: int,
    code: str,
    inner: str | None,
) -> None:
    _, centre, client = env
    resp = client.request(method, path, json=body, headers=_headers(centre, who))
    assert resp.status_code == status, resp.text
    problem = resp.json()
    message = Message.from_json(problem)
    assert message is not None, f"{label}: no message code in {problem}"
    assert message.code == code, problem
    said = message
    if inner is not None:
        said = message.values["problem"]  # type: ignore[assignment]
        assert isinstance(said, Message) and said.code == inner, problem
    assert locale.render(message, "en") == problem["detail"]
    korean = locale.render(message, "ko")
    assert HANGUL.search(korean), korean
    assert locale.gettext("ko", ENGLISH[said.code]) != ENGLISH[said.code]


def test_sign_in_says_no_more_than_before(env: tuple[AppContext, Centre, TestClient]) -> None:
    """A wrong password and an unknown username stay one answer, word for word."""
    _, _, client = env
    known = client.post("/api/v1/auth/token", json={"username": "root", "password": "x" * 12})
    unknown = client.post("/api/v1/auth/token", json={"username": "zed", "password": "x" * 12})
    assert known.status_code == unknown.status_code == 401
    assert known.json()["detail"] == unknown.json()["detail"]
    assert known.json()["detail"] == "wrong username or password (or second-factor code)"


# (label, the `gpucenter admin` arguments, the code whose Korean the terminal shows)
CLI_CASES: list[tuple[str, list[str], str]] = [
    ("weak password", ["user", "create", "jiwoo", "--password", "password"], "too_short"),
    ("bad username", ["user", "create", "Ji Woo", "--password", "a-long-password-1"], "name"),
    ("user exists", ["user", "create", "alice", "--password", "a-long-password-1"], "exists"),
    ("unreadable file", ["template", "publish", "/nonexistent/t.yaml"], "cannot_read"),
]
CLI_KOREAN = {
    "too_short": "너무 짧습니다",
    "name": "사용할 수 없습니다",
    "exists": "이미 있습니다",
    "cannot_read": "파일을 읽을 수 없습니다",
}


@pytest.mark.parametrize(("label", "args", "says"), CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_the_admin_cli_refuses_in_korean(
    env: tuple[AppContext, Centre, TestClient],
    monkeypatch: pytest.MonkeyPatch,
    label: str,
    args: list[str],
    says: str,
) -> None:
    from gpucenter.cli.admin import app

    ctx, _, _ = env
    monkeypatch.setenv("GPUCENTER_DATABASE_URL", ctx.settings.effective_database_url)
    monkeypatch.setenv("GPUCENTER_VAR_DIR", str(ctx.settings.var_dir))
    monkeypatch.setenv("LANG", "ko_KR.UTF-8")
    monkeypatch.delenv("LC_ALL", raising=False)
    monkeypatch.delenv("LC_MESSAGES", raising=False)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, args)
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2, result.output
    assert CLI_KOREAN[says] in result.output, f"{label}: {result.output}"
