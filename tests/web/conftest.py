"""Fixtures for the portal: a live server process and a real headless Chromium.

The browser is Debian's Chromium (`/usr/bin/chromium`, or GPUCENTER_TEST_CHROMIUM) driven by
Playwright. Where it is missing the browser tests skip with the reason, except in CI
(CI=true), where they fail: CI must run them. Screenshots go to var/screenshots/<lang>/ so
that a person can look at the main pages after a run.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gpucenter.config import Settings
from gpucenter.dispatch.isolation import AccountPolicy
from gpucenter.services.context import AppContext
from gpucenter.services.sites.config import load_site
from tests.conftest import IN_CI
from tests.factories import make_context
from tests.live import server_env, serving
from tests.security.hostile_local.conftest import (
    TEST_UID_BASE,
    remove_test_accounts,
    require,
    root_sandbox_problem,
)

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "var" / "screenshots"
CHROMIUM = os.environ.get("GPUCENTER_TEST_CHROMIUM") or shutil.which("chromium") or ""


@dataclass
class Portal:
    """A running gpucenter server and a context on the same database, for seeding data."""

    base: str
    db_url: str
    env: dict[str, str]
    ctx: AppContext

    def url(self, path: str) -> str:
        return self.base + path

    def cli(self, *args: str) -> str:
        """Run the gpucenter CLI against this server (admin commands need no token)."""
        done = subprocess.run(
            [sys.executable, "-m", "gpucenter.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout


@pytest.fixture
def portal(db_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Portal]:
    """A live server; `@pytest.mark.portal_site(yaml_text)` gives it a site of its own
    (the default is the demo site: one node with four virtual GPUs)."""
    env = server_env(db_url, tmp_path / "var", GPUCENTER_COOKIE_SECURE="false")
    marker = request.node.get_closest_marker("portal_site")
    if marker is not None:
        site_file = tmp_path / "site.yaml"
        site_file.write_text(marker.args[0])
        env["GPUCENTER_SITE_FILE"] = str(site_file)
    extra = request.node.get_closest_marker("portal_env")
    if extra is not None:
        env |= extra.args[0]
    # The server's own state directory: seeding writes audit entries, signed with the key
    # ring kept there, which the server's `audit verify` must find.
    settings = Settings(database_url=db_url, var_dir=tmp_path / "var", cookie_secure=False)
    # The seeding context describes the same site as the server, so that it registers the
    # same inventory.
    site_path = Path(env["GPUCENTER_SITE_FILE"]) if "GPUCENTER_SITE_FILE" in env else None
    ctx = make_context(settings, load_site(site_path, detect=lambda: ()) if site_path else None)
    policy = None
    if request.node.get_closest_marker("portal_multi_tenant") is not None:
        policy = _multi_tenant(env, tmp_path)
    try:
        with serving(env) as base:
            yield Portal(base, db_url, env, ctx)
    finally:
        ctx.engine.dispose()
        if policy is not None:
            remove_test_accounts(policy)


def _multi_tenant(env: dict[str, str], tmp_path: Path) -> AccountPolicy:
    """The server runs jobs as their owners' accounts, sandboxed, as a real centre does: the
    only mode that runs jobs for several organisations. Needs root and bubblewrap (skipped
    with the reason elsewhere, failing with CI=true); accounts in a test-only uid range with
    test-only prefixes, removed at the end."""
    require(root_sandbox_problem())
    tag = secrets.token_hex(2)
    base = TEST_UID_BASE + secrets.randbelow(90) * 100
    policy = AccountPolicy(base, base + 99, f"w{tag}u-", f"w{tag}g-")
    env |= {
        "GPUCENTER_ISOLATION": "multi_tenant",
        "GPUCENTER_ISOLATION_UID_MIN": str(policy.uid_min),
        "GPUCENTER_ISOLATION_UID_MAX": str(policy.uid_max),
        "GPUCENTER_ISOLATION_USER_PREFIX": policy.user_prefix,
        "GPUCENTER_ISOLATION_GROUP_PREFIX": policy.group_prefix,
        "GPUCENTER_TENANT_DIR": str(tmp_path / "tenants"),
    }
    return policy


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """One headless Chromium for the whole run (each test gets its own context)."""
    problem = None
    if not CHROMIUM or not Path(CHROMIUM).exists():
        problem = "Chromium not found: apt-get install chromium (or set GPUCENTER_TEST_CHROMIUM)"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        problem = "Playwright not installed: pip install -e '.[dev]'"
    if problem:
        if IN_CI:
            pytest.fail(f"{problem} (CI must run the browser tests)")
        pytest.skip(problem)
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browser_page(chromium: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies) on a laptop-sized screen."""
    context = chromium.new_context(viewport={"width": 1280, "height": 860}, locale="en-GB")
    context.set_default_timeout(15_000)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


def shoot(page: Any, lang: str, name: str) -> Path:
    """Save a full-page screenshot as var/screenshots/<lang>/<name>.png."""
    folder = SCREENSHOTS / lang
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{re.sub(r'[^a-z0-9_-]+', '-', name.lower())}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def sign_in(page: Any, portal: Portal, username: str, password: str, lang: str = "en") -> None:
    """Sign in through the form, in `lang` (the switch in the header sets it)."""
    page.goto(portal.url(f"/lang/{lang}?next=/login"))
    page.fill("#f-username", username)
    page.fill("#f-password", password)
    page.locator("form[action='/login'] button[type=submit]").click()
    page.wait_for_url(re.compile(r".*/$"))
