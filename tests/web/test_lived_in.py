"""The portal of a centre that looks lived in (`gpucenter demo load`: months of history),
checked page by page in a real Chromium, in English and Korean:

- axe-core finds no WCAG 2.1 A or AA violation on any main page (charts drawn first);
- no Korean page shows a message code or an English sentence of the catalogues (a scheduler
  reason, a template description, an error, a health text left untranslated);
- the history is what the demo promises: organisations of every applicant type, a decided
  round, thousands of finished jobs charged in the ledger, a reclaimed allocation.

One server for the module: the demo centre takes a while to load on a busy machine.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from gpucenter import locale
from gpucenter.domain.messages import ENGLISH
from gpucenter.persistence.db import make_engine, session_factory
from gpucenter.persistence.tables import JobRow, LedgerEntryRow, OrganisationRow, ProjectRow
from gpucenter.persistence.tables_accounting import ReclaimRow
from gpucenter.persistence.tables_allocation import AwardRow
from gpucenter.web import catalogue_check
from tests.factories import wait_until
from tests.live import server_env, serving
from tests.web.axe import describe, violations
from tests.web.conftest import _multi_tenant, remove_test_accounts, shoot

GPUCENTER = [sys.executable, "-m", "gpucenter.cli"]


@dataclass
class Centre:
    base: str
    db_url: str
    env: dict[str, str]
    pending_job: int
    running_job: int
    project_id: int

    def url(self, path: str) -> str:
        return self.base + path


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([*GPUCENTER, *args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def centre(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Centre]:
    root = tmp_path_factory.mktemp("lived-in")
    db_url = f"sqlite:///{root / 'gpucenter.db'}"
    env = server_env(db_url, root / "var", GPUCENTER_COOKIE_SECURE="false")
    env["XDG_CONFIG_HOME"] = str(root / "xdg")
    # The demo centre has organisations of every applicant type: only a multi-tenant server
    # (root, bubblewrap) runs jobs for more than one organisation.
    policy = _multi_tenant(env, root)
    _cli(env, "db", "upgrade")
    _cli(env, "demo", "load")
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(remove_test_accounts, policy)
        base = cleanup.enter_context(serving(env))
        # A job that holds two of the four GPUs, and one that waits for three.
        running = _cli(
            env, "job", "submit", "-p", "demo", "-g", "2", "--time", "30m", "--parsable",
            "--", "sleep 600",
        )  # fmt: skip
        pending = _cli(env, "job", "submit", "-p", "demo", "-g", "3", "--parsable", "--", "true")
        engine = make_engine(db_url)
        with session_factory(engine).begin() as s:
            project = s.scalar(select(ProjectRow.id).where(ProjectRow.name == "demo"))
        engine.dispose()

        def waiting_with_reason() -> bool:
            job = httpx.get(
                f"{base}/api/v1/jobs/{pending.strip()}",
                headers={"Authorization": f"Bearer {_token(env)}"},
                timeout=5,
            ).json()
            return job["state"] == "PENDING" and bool(job["reason_message"])

        wait_until(waiting_with_reason, timeout=60, step=0.5)
        yield Centre(base, db_url, env, int(pending), int(running), int(project or 0))
        _cli(env, "job", "cancel", running.strip())


def _token(env: dict[str, str]) -> str:
    text = (Path(env["XDG_CONFIG_HOME"]) / "gpucenter" / "config.toml").read_text()
    found = re.search(r'token = "([^"]+)"', text)
    assert found, text
    return found.group(1)


def test_the_demo_centre_has_months_of_real_history(centre: Centre) -> None:
    engine = make_engine(centre.db_url)
    try:
        with session_factory(engine).begin() as s:
            kinds = set(s.scalars(select(OrganisationRow.kind)))
            assert {"university", "startup", "sme", "public_research_institute"} <= kinds
            assert s.scalar(select(func.count()).select_from(AwardRow)) >= 5
            finished = s.scalar(
                select(func.count()).select_from(JobRow).where(JobRow.state != "PENDING")
            )
            assert finished >= 2000
            charged = s.scalar(select(func.count()).select_from(LedgerEntryRow))
            assert charged >= 0.95 * finished - 5  # every run charged (cancelled ones too)
            assert s.scalar(select(func.count()).select_from(ReclaimRow)) == 1
            first = s.scalar(select(func.min(JobRow.submitted_at)))
            last = s.scalar(select(func.max(JobRow.ended_at)))
            assert first is not None and last is not None
            assert (last - first).days >= 80  # a few months, not minutes
    finally:
        engine.dispose()


# Pages a member, then an admin (who holds every role), reads; {pending} etc. filled in.
MEMBER_PAGES = (
    "/",
    "/jobs",
    "/jobs/new",
    "/jobs/new?template=pytorch-ddp",
    "/jobs/{pending}",
    "/jobs/{running}",
    "/projects",
    "/projects/{project}",
    "/programmes",
    "/applications",
)
ADMIN_PAGES = ("/reports", "/ops", "/admin", "/manage", "/reviews")


def _sign_in(page: Any, centre: Centre, user: str, password: str, lang: str) -> None:
    page.context.clear_cookies()
    page.goto(centre.url(f"/lang/{lang}?next=/login"))
    page.fill("#f-username", user)
    page.fill("#f-password", password)
    page.locator("form[action='/login'] button[type=submit]").click()
    page.wait_for_url(re.compile(r".*/$"))


def _visit(page: Any, centre: Centre, path: str) -> None:
    page.goto(
        centre.url(
            path.format(
                pending=centre.pending_job, running=centre.running_job, project=centre.project_id
            )
        )
    )
    if page.locator("div.chart[data-vl-spec]").count():
        page.wait_for_function(
            "() => [...document.querySelectorAll('div.chart[data-vl-spec]')]"
            ".every(e => e.dataset.chartReady || e.dataset.chartError)",
            timeout=30_000,
        )
        assert page.locator("div.chart[data-chart-error]").count() == 0


def _pages(page: Any, centre: Centre, lang: str) -> Iterator[str]:
    """Visit every main page in `lang`, yielding each path once it is loaded."""
    page.context.clear_cookies()
    page.goto(centre.url(f"/lang/{lang}?next=/login"))
    yield "/login"
    _sign_in(page, centre, "demo", "demo-password", lang)
    for path in MEMBER_PAGES:
        _visit(page, centre, path)
        yield path
    _sign_in(page, centre, "admin", "admin-password", lang)
    for path in ADMIN_PAGES:
        _visit(page, centre, path)
        yield path


@pytest.mark.parametrize("lang", ["en", "ko"])
def test_main_pages_have_no_wcag_aa_violations(
    centre: Centre, browser_page: Any, lang: str
) -> None:
    found: dict[str, str] = {}
    for path in _pages(browser_page, centre, lang):
        problems = violations(browser_page)
        if problems:
            found[path] = describe(problems)
        shoot(browser_page, lang, "lived-in" + path.replace("/", "-").replace("?", "-"))
    assert not found, "\n\n".join(f"{p}:\n{v}" for p, v in found.items())


def english_sentences() -> list[str]:
    """English text that must never show on a Korean page: the portal's msgids of two words
    or more, and the fixed parts of every service message (placeholders cut out)."""
    found: set[str] = set()
    for message in catalogue_check.messages():
        text = message.msgid if isinstance(message.msgid, str) else message.msgid[0]
        found.update(_phrases(text))
    for text in [*ENGLISH.values(), *locale.catalogue("ko")]:
        found.update(_phrases(text))
    return sorted(found, key=len, reverse=True)


def _phrases(text: str) -> list[str]:
    parts = re.split(r"%\(\w+\)s|\{\{.*?\}\}|<[^>]+>", text)
    return [p.strip(" .,;:()'\"") for p in parts if len(p.strip(" .,;:()'\"").split()) >= 3]


CODE = re.compile(
    r"\b(?:wait|job|pending|error|health|budget|award|shape)\.[a-z_]+(?:\.[a-z_]+)?\b"
)


def test_no_english_sentence_or_message_code_on_a_korean_page(
    centre: Centre, browser_page: Any
) -> None:
    sentences = english_sentences()
    assert "not enough free now" in sentences  # the scan knows the scheduler's words
    problems: dict[str, list[str]] = {}
    for path in _pages(browser_page, centre, "ko"):
        # What a reader sees, without the job's own output and commands (the user's words).
        text = browser_page.evaluate(
            """() => {
                const body = document.body.cloneNode(true);
                body.querySelectorAll("pre, code, script, [data-user-text]")
                    .forEach(e => e.remove());
                return body.innerText;
            }"""
        )
        bad = [s for s in sentences if s in text]
        bad += CODE.findall(text)
        if bad:
            problems[path] = bad[:10]
    assert not problems, problems
    # The scan's premise: in English, the same page does show the catalogue's sentences.
    _visit(browser_page, centre, "/lang/en?next=/jobs/{pending}")
    english = browser_page.locator("#why-pending").inner_text()
    assert any(s in english for s in sentences), english
