"""The portal's frame in a real Chromium: sign-in, the language switch, keyboard use."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from gpucenter.services.identity import accounts
from tests.web.conftest import Portal, shoot, sign_in


def _user(portal: Portal, name: str, password: str) -> None:
    now = datetime.now(tz=UTC)
    with portal.ctx.sessions.begin() as s:
        accounts.create_organisation(s, "Hanbit University", "university", now)
        accounts.create_user(s, name, now, organisation="Hanbit University", password=password)


def test_sign_in_and_switch_language_in_a_real_browser(portal: Portal, browser_page) -> None:
    _user(portal, "jiwoo", "a-long-password-1")
    page = browser_page
    page.goto(portal.url("/login"))
    shoot(page, "en", "login")
    page.fill("#f-username", "jiwoo")
    page.fill("#f-password", "not-the-password")
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("alert").inner_text() == "The username, password or code is not right."
    assert page.input_value("#f-username") == "jiwoo"  # what was typed is kept

    sign_in(page, portal, "jiwoo", "a-long-password-1")
    assert page.get_by_role("heading", level=1).is_visible()
    assert page.get_by_role("navigation").get_by_role("link", name="Jobs").is_visible()
    assert page.get_by_role("link", name="Administration").count() == 0  # not an admin
    shoot(page, "en", "dashboard")

    page.get_by_role("link", name="한국어").click()
    page.wait_for_url(re.compile(r".*/$"))
    assert page.locator("html").get_attribute("lang") == "ko"
    assert page.get_by_role("navigation").get_by_role("link", name="작업").is_visible()
    assert page.get_by_role("button", name="로그아웃").is_visible()
    shoot(page, "ko", "dashboard")

    # Keyboard: the first Tab reaches the skip link, which jumps to the content.
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.getAttribute('href')")
    assert focused == "#main"

    page.get_by_role("button", name="로그아웃").click()
    page.wait_for_url(re.compile(r".*/login$"))
    assert page.get_by_role("heading", name="로그인").is_visible()
    shoot(page, "ko", "login")


def test_a_signed_out_browser_is_sent_to_sign_in(portal: Portal, browser_page) -> None:
    browser_page.goto(portal.url("/"))
    assert browser_page.url.endswith("/login")


def test_pages_fit_a_tablet_screen_without_sideways_scrolling(
    portal: Portal, chromium, browser_page
) -> None:
    _user(portal, "jiwoo", "a-long-password-1")
    sign_in(browser_page, portal, "jiwoo", "a-long-password-1", "ko")
    tablet = chromium.new_context(
        viewport={"width": 768, "height": 1024}, storage_state=browser_page.context.storage_state()
    )
    page = tablet.new_page()
    try:
        for path in ("/", "/programmes", "/jobs", "/jobs/new", "/projects"):
            page.goto(portal.url(path))
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 1, f"{path} is {overflow}px wider than a tablet screen"
        shoot(page, "ko", "tablet-job-form")
    finally:
        tablet.close()
