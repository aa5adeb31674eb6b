"""Korean and English: every portal string translated, formats localised, language chosen."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from jinja2 import Environment

from gpucenter.app import create_app
from gpucenter.config import Settings
from gpucenter.web import catalogue_check, i18n
from tests.factories import make_context, seed_centre


def test_every_portal_string_has_a_korean_translation() -> None:
    gaps = catalogue_check.missing("ko")
    listed = "\n".join(f"{m.where}: {m.msgid!r}" for m in gaps)
    assert not gaps, f"untranslated strings (python -m gpucenter.web.catalogue_check ko):\n{listed}"


def test_the_check_finds_strings_in_templates_and_code() -> None:
    """Guard against an extractor that silently finds nothing (the check above would pass)."""
    found = {m.msgid for m in catalogue_check.messages()}
    assert "Sign in" in found  # a template string
    assert "Not allowed" in found  # an N_() string in web/errors.py
    assert "The username, password or code is not right." in found  # render.t(request, ...)
    assert len(found) > 40


def test_translations_keep_their_placeholders() -> None:
    assert catalogue_check.broken_placeholders("ko") == []


def test_an_untranslated_string_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    real = i18n.catalogue("ko")
    partial = {k: v for k, v in real.items() if k != "Sign in"}
    monkeypatch.setattr(i18n, "catalogue", lambda lang: partial)
    assert "Sign in" in {m.msgid for m in catalogue_check.missing("ko")}


def _render(source: str, lang: str, **values: object) -> str:
    env = Environment(autoescape=True)
    i18n.install(env)
    return env.from_string(source).render(lang=lang, **values)


@pytest.mark.parametrize(
    ("lang", "expected"),
    [("en", "1,234,567"), ("ko", "1,234,567")],
)
def test_numbers_are_grouped(lang: str, expected: str) -> None:
    assert _render("{{ 1234567|number }}", lang) == expected


def test_won_amounts_have_no_minor_unit_and_the_won_sign() -> None:
    assert _render("{{ 1234567.6|krw }}", "ko") == "₩1,234,568"
    assert "1,234,568" in _render("{{ 1234567.6|krw }}", "en")


def test_dates_read_naturally_in_each_language_and_zone() -> None:
    from zoneinfo import ZoneInfo

    when = datetime(2026, 3, 1, 15, 30, tzinfo=UTC)
    ko = _render("{{ when|when }}", "ko", when=when, display_tz=ZoneInfo("Asia/Seoul"))
    en = _render("{{ when|when }}", "en", when=when, display_tz=ZoneInfo("Asia/Seoul"))
    # One format on every page: CLDR month names, 24-hour time, the zone named.
    assert ko == "2026년 3월 2일 00:30 KST"  # 15:30 UTC is 00:30 the next day in Seoul
    assert en == "2 Mar 2026, 00:30 KST"


def test_translated_text_and_english_fallback() -> None:
    assert _render("{{ _('Sign out') }}", "ko") == "로그아웃"
    assert _render("{{ _('Sign out') }}", "en") == "Sign out"
    assert i18n.gettext("ko", "a string nobody translated") == "a string nobody translated"


def test_placeholders_are_escaped_in_translations() -> None:
    html = _render(
        "{% trans busy=b, total=t %}{{ busy }} of {{ total }} busy{% endtrans %}",
        "ko",
        b="<b>",
        t=8,
    )
    assert "&lt;b&gt;" in html and "8개 중" in html


@pytest.fixture
def client(tmp_path) -> TestClient:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'g.db'}", var_dir=tmp_path, cookie_secure=False
    )
    from gpucenter.persistence.db import migrate

    migrate(settings.effective_database_url)
    ctx = make_context(settings)
    seed_centre(ctx)
    settings.scheduler_enabled = False
    return TestClient(create_app(ctx), base_url="http://127.0.0.1")


def test_the_language_follows_the_browser_then_the_switch(client: TestClient) -> None:
    korean_browser = {"Accept-Language": "ko-KR,ko;q=0.9,en;q=0.8"}
    assert "로그인" in client.get("/login", headers=korean_browser).text
    assert "Sign in" in client.get("/login").text
    switched = client.get("/lang/en?next=/login", headers=korean_browser, follow_redirects=False)
    assert switched.status_code == 303 and switched.headers["location"] == "/login"
    client.cookies.set(i18n.LANG_COOKIE, "en")
    assert 'lang="en"' in client.get("/login", headers=korean_browser).text


def test_the_switch_never_sends_the_reader_to_another_site(client: TestClient) -> None:
    for target in ("https://evil.example/", "//evil.example/x", "javascript:alert(1)"):
        response = client.get(f"/lang/ko?next={target}", follow_redirects=False)
        assert response.headers["location"] == "/"


def test_a_failed_sign_in_keeps_the_username_and_says_what_is_wrong(client: TestClient) -> None:
    page = client.get("/login", headers={"Accept-Language": "ko"})
    token = page.text.split('name="csrf" value="')[1].split('"')[0]
    response = client.post(
        "/login",
        data={"username": "alice", "password": "wrong", "csrf": token},
        headers={"Accept-Language": "ko"},
    )
    assert response.status_code == 401
    assert "사용자 이름, 비밀번호 또는 코드가 올바르지 않습니다." in response.text
    assert 'value="alice"' in response.text


def test_portal_errors_are_pages_and_api_errors_stay_problem_json(client: TestClient) -> None:
    html = client.get("/no-such-page", headers={"Accept": "text/html", "Accept-Language": "ko"})
    assert html.status_code == 404
    assert html.headers["content-type"].startswith("text/html")
    assert "찾을 수 없습니다" in html.text
    api = client.get("/api/v1/jobs/999999", headers={"Accept": "text/html"})
    assert api.status_code == 401
    assert api.headers["content-type"].startswith("application/problem+json")


def test_templates_import_the_form_macros_with_their_context() -> None:
    """Macros imported without context cannot see the reader's language and would show
    English on a Korean page."""
    from gpucenter.web.render import TEMPLATES

    offenders = [
        str(path.relative_to(TEMPLATES))
        for path in TEMPLATES.rglob("*.html")
        for line in path.read_text().splitlines()
        if '"_form.html"' in line and "import" in line and "with context" not in line
    ]
    assert offenders == []
