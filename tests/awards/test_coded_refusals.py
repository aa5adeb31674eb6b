"""Refusals of programmes, calls, applications, reviews and awards read in Korean.

Why: the portal and the CLI render a refusal's `code`/`params` in the reader's language; one
raised as plain English reaches a Korean applicant in English (issue 22, item 5). The scan in
tests/api/test_coded_errors.py checks that every raise carries a code; these tables check
that representative refusals, caused the way a person causes them (REST calls, the award
services), come back with the code expected and render with Hangul, the English detail
unchanged."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from gpucenter import locale
from gpucenter.app import create_app
from gpucenter.config import Settings
from gpucenter.domain import messages
from gpucenter.domain.errors import DomainError
from gpucenter.domain.messages import ENGLISH, Message
from gpucenter.domain.texts_plans import PLAN_TEXTS
from gpucenter.domain.texts_programmes import PROGRAMME_ERRORS
from gpucenter.domain.texts_services import SERVICE_ERRORS
from gpucenter.persistence.tables_allocation import AwardRow, AwardRunRow
from gpucenter.services.awards import agreements, decision, requests
from gpucenter.services.context import AppContext
from gpucenter.services.identity import accounts
from gpucenter.services.programmes import awards as rounds
from tests.awards.world import World, build, review_and_run
from tests.factories import make_context

HANGUL = re.compile("[\uac00-\ud7a3]")
BASE = "/api/v1/programmes"


def _code_of(message: Message) -> str:
    """The code of the problem itself: a field's refusal wraps it in error.field."""
    if message.code == "error.field":
        inner = message.values["problem"]
        assert isinstance(inner, Message), message
        return inner.code
    return message.code


def _reads_in_korean(message: Message, english_detail: str, label: str) -> None:
    code = _code_of(message)
    assert locale.render(message, "en") == english_detail, label
    korean = locale.render(message, "ko")
    assert HANGUL.search(korean), f"{label}: {korean}"
    assert locale.gettext("ko", ENGLISH[code]) != ENGLISH[code], f"{label}: {code} untranslated"


# --- through the REST API: programmes, calls, applications -----------------------------------
NOW = datetime.now(tz=UTC)
PERIOD = f"{NOW.year}Q{(NOW.month - 1) // 3 + 1}"
CALL: dict[str, Any] = {
    "name": "r1",
    "opens_at": (NOW - timedelta(days=1)).isoformat(),
    "closes_at": (NOW + timedelta(days=9)).isoformat(),
    "capacity": {"h100": {PERIOD: 5000}},
    "config": {"eligible_types": ["university"]},
}
APPLICATION: dict[str, Any] = {
    "title": "LLM",
    "region": "busan",
    "min_gpu_hours": 100,
    "requests": [{"gpu_type": "h100", "period": PERIOD, "gpu_hours": 400}],
}

# (label, who, method, path ({pid}, {cid}, {aid} filled in), body, the problem's code)
CASES: list[tuple[str, str, str, str, dict[str, Any] | None, str]] = [
    (
        "programme needs admin",
        "pm",
        "POST",
        "",
        {"name": "x", "owner": "MSIT"},
        "error.programme_needs_admin",
    ),
    (
        "programme exists",
        "root",
        "POST",
        "",
        {"name": "ai", "owner": "MSIT"},
        "error.programme_exists",
    ),
    (
        "bad role",
        "root",
        "POST",
        "/{pid}/roles",
        {"username": "pm", "role": "boss"},
        "error.programme_role",
    ),
    ("call exists", "pm", "POST", "/{pid}/calls", CALL, "error.call_exists"),
    (
        "closes before opens",
        "pm",
        "POST",
        "/{pid}/calls",
        CALL | {"name": "r2", "closes_at": (NOW - timedelta(days=2)).isoformat()},
        "error.closes_before_opens",
    ),
    (
        "unknown setting",
        "pm",
        "POST",
        "/{pid}/calls",
        CALL | {"name": "r3", "config": {"wings": 2}},
        "error.settings_unknown",
    ),
    (
        "unknown applicant type",
        "pm",
        "POST",
        "/{pid}/calls",
        CALL | {"name": "r4", "config": {"eligible_types": ["pirates"]}},
        "error.config_choice",
    ),
    (
        "not eligible",
        "bob",
        "POST",
        "/applications/{bob_aid}/submit",
        None,
        "error.applicant_not_eligible",
    ),
    (
        "submitted twice",
        "alice",
        "POST",
        "/applications/{aid}/submit",
        None,
        "error.application_not_draft_submit",
    ),
    (
        "run as applicant",
        "alice",
        "POST",
        "/calls/{cid}/award-runs",
        {},
        "error.needs_programme_manager",
    ),
    (
        "not a quarter",
        "alice",
        "POST",
        "/calls/{cid}/applications",
        APPLICATION | {"requests": [{"gpu_type": "h100", "period": "Q3-26", "gpu_hours": 9}]},
        "error.period_format",
    ),
    (
        "empty title",
        "alice",
        "POST",
        "/calls/{cid}/applications",
        APPLICATION | {"title": " "},
        "error.value_empty",
    ),
]


@pytest.fixture
def api(settings: Settings) -> Iterator[tuple[TestClient, dict[str, str], dict[str, Any]]]:
    ctx = make_context(settings)
    now = datetime.now(tz=UTC)
    with ctx.sessions.begin() as s:
        accounts.create_organisation(s, "Uni", "university", now)
        accounts.create_organisation(s, "Gov", "government", now)
        tokens = {
            "root": accounts.create_user(s, "root", now, is_admin=True).token,
            "pm": accounts.create_user(s, "pm", now, organisation="Gov").token,
            "alice": accounts.create_user(s, "alice", now, organisation="Uni").token,
            "bob": accounts.create_user(s, "bob", now, organisation="Gov").token,
        }
    with TestClient(create_app(ctx, run_scheduler=False)) as client:

        def post(who: str, path: str, body: dict[str, Any] | None = None) -> Any:
            auth = {"Authorization": f"Bearer {tokens[who]}"}
            resp = client.post(BASE + path, json=body, headers=auth)
            assert resp.status_code < 300, resp.text
            return resp.json()

        ids: dict[str, Any] = {"pid": post("root", "", {"name": "ai", "owner": "MSIT"})["id"]}
        post("root", f"/{ids['pid']}/roles", {"username": "pm", "role": "programme_manager"})
        ids["cid"] = post("pm", f"/{ids['pid']}/calls", CALL)["id"]
        ids["aid"] = post("alice", f"/calls/{ids['cid']}/applications", APPLICATION)["id"]
        post("alice", f"/applications/{ids['aid']}/submit")
        ids["bob_aid"] = post("bob", f"/calls/{ids['cid']}/applications", APPLICATION)["id"]
        yield client, tokens, ids
    ctx.dispatcher.shutdown()
    ctx.engine.dispose()


@pytest.mark.parametrize(
    ("label", "who", "method", "path", "body", "code"), CASES, ids=[c[0] for c in CASES]
)
def test_each_programme_refusal_reads_in_korean(
    api: tuple[TestClient, dict[str, str], dict[str, Any]],
    label: str,
    who: str,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    code: str,
) -> None:
    client, tokens, ids = api
    auth = {"Authorization": f"Bearer {tokens[who]}"}
    resp = client.request(method, BASE + path.format(**ids), json=body, headers=auth)
    assert 400 <= resp.status_code < 500, resp.text
    problem = resp.json()
    message = Message.from_json(problem)
    assert message is not None, f"{label}: no message code in {problem}"
    assert _code_of(message) == code, problem
    _reads_in_korean(message, problem["detail"], label)


# --- through the award services: agreements, changes, decisions --------------------------------
T0 = datetime(2026, 3, 20, tzinfo=UTC)
Q2 = datetime(2026, 4, 1, tzinfo=UTC)
DECIDED = T0 + timedelta(days=12)

Step = Callable[[Session, World], object]


def _award_id(s: Session, world: World, name: str) -> int:
    award = s.scalar(select(AwardRow.id).where(AwardRow.application_id == world.apps[name]))
    assert award is not None
    return award


AWARD_CASES: list[tuple[str, Step, str]] = [
    (
        "the signatory accepts for the PI",
        lambda s, w: agreements.accept(s, w.who(s, "sig-0"), _award_id(s, w, "jiwoo"), DECIDED),
        "error.agreement_pi_only",
    ),
    (
        "long decline reason",
        lambda s, w: agreements.decline(
            s, w.who(s, "jiwoo"), _award_id(s, w, "jiwoo"), "x" * 2001, DECIDED
        ),
        "error.reason_long",
    ),
    (
        "someone else asks for a change",
        lambda s, w: requests.submit(
            s, w.who(s, "pm"), _award_id(s, w, "jiwoo"), "extension", {}, "why", DECIDED
        ),
        "error.change_pi_only",
    ),
    (
        "unknown change",
        lambda s, w: requests.submit(
            s, w.who(s, "jiwoo"), _award_id(s, w, "jiwoo"), "bogus", {}, "why", DECIDED
        ),
        "error.request_kind",
    ),
    (
        "change before the award is active",
        lambda s, w: requests.submit(
            s, w.who(s, "jiwoo"), _award_id(s, w, "jiwoo"), "extension", {}, "why", DECIDED
        ),
        "error.award_not_active",
    ),
]


@pytest.fixture
def ctx(settings: Settings) -> Iterator[AppContext]:
    ctx = make_context(settings)
    yield ctx
    ctx.dispatcher.shutdown()
    ctx.engine.dispose()


def test_award_refusals_read_in_korean(ctx: AppContext) -> None:
    """One decided call (building it is the slow part), then each refusal in a transaction
    of its own that the refusal rolls back."""
    world = build(ctx.sessions, T0, Q2)
    run_id = review_and_run(world, T0 + timedelta(days=11))
    with ctx.sessions.begin() as s:
        decision.decide(s, world.who(s, "pm"), run_id, DECIDED)
    cases = [*AWARD_CASES, ("decided twice", _decide_again(run_id), "error.call_decided")]
    for label, step, code in cases:
        with pytest.raises(DomainError) as caught, ctx.sessions.begin() as s:
            step(s, world)
        message = caught.value.coded
        assert message is not None, f"{label}: {caught.value} has no code"
        assert _code_of(message) == code, f"{label}: {message}"
        _reads_in_korean(message, str(caught.value), label)


def test_a_plan_past_capacity_is_refused_at_the_decision_in_the_readers_words(
    ctx: AppContext,
) -> None:
    """An override past the call's capacity makes a run that cannot be decided. The refusal
    quotes the capacity breaks only (as messages: Korean for a Korean manager), and a run
    stored before the breaks were coded (English words only) is refused just the same."""
    world = build(ctx.sessions, T0, Q2)
    review_and_run(world, T0 + timedelta(days=11))
    jiwoo = world.apps["jiwoo"]
    with ctx.sessions.begin() as s:
        pm = world.who(s, "pm")
        run = rounds.run_round(
            s, pm, world.call_id, DECIDED, overrides={jiwoo: 25000}, override_reasons={jiwoo: "x"}
        )
        run_id, result = run.id, dict(run.result)
    codes = [c["code"] for c in result["violation_codes"]]
    assert "plan.over_capacity" in codes and "plan.over_request" in codes

    for stored in (result, {k: v for k, v in result.items() if k != "violation_codes"}):
        with ctx.sessions.begin() as s:
            s.get(AwardRunRow, run_id).result = stored  # type: ignore[union-attr]
        with pytest.raises(DomainError) as caught, ctx.sessions.begin() as s:
            decision.decide(s, world.who(s, "pm"), run_id, DECIDED)
        message = caught.value.coded
        assert message is not None and _code_of(message) == "error.over_capacity"
        detail = str(caught.value)
        assert f"capacity h100 {world.period}: " in detail, detail
        assert "more than it asked for" not in detail  # the request's own size is not capacity
        if "violation_codes" in stored:
            _reads_in_korean(message, detail, "over capacity")
            assert f"용량 h100 {world.period}: 20,000.0 GPU 시간 중" in locale.render(message, "ko")
    with ctx.sessions.begin() as s:
        assert s.scalar(select(AwardRow.id).where(AwardRow.application_id == jiwoo)) is None


def _decide_again(run_id: int) -> Step:
    return lambda s, w: decision.decide(s, w.who(s, "pm"), run_id, DECIDED)


def test_programme_codes_do_not_collide_with_other_catalogues() -> None:
    """`ENGLISH` merges the catalogues with `**`: a code defined twice would silently take
    the last one's English (and its Korean would not match)."""
    others = set(SERVICE_ERRORS) | set(PLAN_TEXTS)
    for name in dir(messages):
        value = getattr(messages, name)
        if name.startswith("_") and not name.startswith("__") and isinstance(value, dict):
            others |= set(value)
    assert set(PROGRAMME_ERRORS) & others == set()
