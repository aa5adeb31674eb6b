"""Interactive sessions in a real Chromium against a live server run as root, whose jobs run
as their owners in bubblewrap: a member starts a JupyterLab session from the portal, runs a
cell that prints CUDA_VISIBLE_DEVICES, sees GPUs, time left and cost on the session's card,
and stops it; another tenant's user and a project member the owner did not allow get 404 at
the session's URL (HTTP) and no WebSocket; a socket name the job swapped for a symlink is
refused (409) while the session keeps running. Once in English (SQLite), once in Korean
(PostgreSQL).

JupyterLab is the project's own (the `jupyter` extra), run from this environment: the
sandbox is given it read-only (GPUCENTER_ISOLATION_EXTRA_RO_PATHS), as a site would give its
jobs a software tree.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gpucenter.domain.errors import Conflict
from gpucenter.domain.jobs import JobState
from gpucenter.domain.sessions import socket_name
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.tables import JobRow
from gpucenter.services.identity import accounts
from gpucenter.services.identity.signin import caller_for
from gpucenter.services.jobs import manage as jobs
from tests.factories import wait_until
from tests.web.conftest import Portal, shoot, sign_in

PASSWORD = "session-password-1"
SESSION_ENV = {
    "GPUCENTER_SESSION_PYTHON": str(Path(sys.prefix) / "bin" / "python"),
    "GPUCENTER_ISOLATION_EXTRA_RO_PATHS": json.dumps(
        sorted({os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix)})
    ),
}
WORDS = {
    "en": {
        "start": "Start session",
        "stop": "Stop session",
        "running": "Running",
        "cancelled": "Cancelled",
        "gpu_hours": "GPU-hours",
        "min": "min",
    },
    "ko": {
        "start": "세션 시작",
        "stop": "세션 종료",
        "running": "실행 중",
        "cancelled": "취소됨",
        "gpu_hours": "GPU시간",
        "min": "분",
    },
}


def _seed(portal: Portal) -> None:
    """minji (PI) and jisoo share a project; dongho is in another organisation."""
    now = datetime.now(tz=UTC)
    with portal.ctx.sessions.begin() as s:
        accounts.create_organisation(s, "Hanbit University", "university", now)
        accounts.create_organisation(s, "Other Startup", "startup", now)
        for name, org in (
            ("minji", "Hanbit University"),
            ("jisoo", "Hanbit University"),
            ("dongho", "Other Startup"),
        ):
            accounts.create_user(s, name, now, organisation=org, password=PASSWORD)
        accounts.create_project(s, "nlp-lab", "Hanbit University", now, title="Korean NLP")
        accounts.add_member(s, "nlp-lab", "minji", "pi")
        accounts.add_member(s, "nlp-lab", "jisoo", "member")
        accounts.create_allocation(s, "nlp-lab", 50.0, now)
        accounts.create_project(s, "rival", "Other Startup", now, title="Rival")
        accounts.add_member(s, "rival", "dongho", "pi")
        accounts.create_allocation(s, "rival", 50.0, now)


def _run_dir(portal: Portal, job_id: int) -> Path:
    with portal.ctx.sessions() as s:
        row = s.scalar(select(JobRow).where(JobRow.id == job_id))
        assert row is not None and row.stdout_path
        return Path(row.stdout_path).parent


def _end_sessions(portal: Portal) -> None:
    """Cancel whatever session is still running and wait for it to end: the local site leaves
    its jobs running when the server stops (a restart adopts them)."""
    with portal.ctx.sessions.begin() as s:
        caller = caller_for(s, repo.user_by_name(s, "minji"))
        live = [row.id for row in s.scalars(select(JobRow)) if not JobState(row.state).is_terminal]
    for job_id in live:
        with contextlib.suppress(Conflict):
            jobs.cancel(portal.ctx, caller, job_id)

    def ended() -> bool:
        return all(
            JobState(jobs.get_visible(portal.ctx, caller, j).state).is_terminal for j in live
        )

    wait_until(ended, timeout=60, step=0.5)


def _websocket_opens(page: Any, url: str) -> bool:
    """Whether a WebSocket to `url` opens from this page (with its cookies, its origin)."""
    return bool(
        page.evaluate(
            """url => new Promise(done => {
                const ws = new WebSocket(url);
                ws.onopen = () => { ws.close(); done(true); };
                ws.onerror = () => done(false);
                setTimeout(() => done(false), 10000);
            })""",
            url,
        )
    )


def _run_cell(page: Any, code: str) -> str:
    """Open a new notebook from the launcher, run one cell, return its output."""
    page.locator(".jp-LauncherCard[data-category='Notebook']").first.click(timeout=60_000)
    cell = page.locator(".jp-Notebook .jp-Cell .cm-content").first
    cell.wait_for(timeout=60_000)
    # The kernel must be connected (over the proxy's WebSocket) and idle before the cell
    # runs: a cell run earlier is not run at all. The status bar says "... | Idle".
    page.get_by_text(re.compile(r"\| Idle$")).wait_for(timeout=90_000)
    cell.click()
    page.keyboard.insert_text(code)  # as pasted: no brackets closed for us
    page.keyboard.press("Shift+Enter")
    output = page.locator(".jp-OutputArea-output").first
    try:
        output.wait_for(timeout=60_000)
    except Exception:
        shoot(page, "debug", "session-cell-no-output")
        raise
    return str(output.inner_text())


@pytest.mark.portal_multi_tenant  # jobs run as their owners, in bubblewrap
@pytest.mark.portal_env(SESSION_ENV)
@pytest.mark.parametrize(
    ("db_url", "lang"), [("sqlite", "en"), ("postgres", "ko")], indirect=["db_url"]
)
def test_start_use_and_stop_a_jupyterlab_session(portal: Portal, chromium: Any, lang: str) -> None:
    words = WORDS[lang]
    _seed(portal)
    owner_ctx = chromium.new_context(viewport={"width": 1280, "height": 860}, locale="en-GB")
    owner_ctx.set_default_timeout(20_000)
    page = owner_ctx.new_page()
    others = []
    try:
        sign_in(page, portal, "minji", PASSWORD, lang)
        page.goto(portal.url("/sessions"))
        page.fill("#f-gpus", "2")
        page.fill("#f-time", "20m")
        page.get_by_role("button", name=words["start"]).click()
        page.wait_for_url(re.compile(r".*/sessions\?flash=.*"))
        card = page.locator("article.session-card").first
        job_id = int(str(card.get_attribute("id")).removeprefix("session-"))

        def running() -> bool:
            page.reload()
            return page.locator(f"#session-{job_id}-open").count() == 1

        wait_until(running, timeout=60, step=1)
        assert words["running"] in page.locator(f"#session-{job_id}-state").inner_text()
        assert page.locator(f"#session-{job_id}-gpus").inner_text().startswith("2 ×")
        assert words["min"] in page.locator(f"#session-{job_id}-left").inner_text()
        shoot(page, lang, "session-card-running")

        # JupyterLab, through the proxy: the socket appears once it is listening.
        lab = portal.url(f"/sessions/{job_id}/app/lab")
        wait_until(lambda: page.request.get(lab).status == 200, timeout=90, step=1)
        page.goto(lab)
        printed = _run_cell(page, "import os; print(os.environ['CUDA_VISIBLE_DEVICES'])")
        devices = printed.strip().split(",")
        assert len(devices) == 2, printed
        shoot(page, lang, "session-jupyterlab-cell")
        ws_url = portal.url(f"/sessions/{job_id}/app/api/events/subscribe").replace("http", "ws")
        assert _websocket_opens(page, ws_url)  # the owner's own WebSocket does open

        # Another tenant, and a member of the project the owner did not allow: as if it did
        # not exist, over HTTP and WebSocket.
        for name in ("dongho", "jisoo"):
            context = chromium.new_context()
            others.append(context)
            intruder = context.new_page()
            sign_in(intruder, portal, name, PASSWORD, lang)
            assert intruder.request.get(lab).status == 404, name
            assert (
                intruder.request.get(portal.url(f"/sessions/{job_id}/app/api/status")).status == 404
            )
            intruder.goto(portal.url("/sessions"))
            assert not _websocket_opens(intruder, ws_url), name
            assert intruder.locator(f"#session-{job_id}").count() == 0

        # The owner allows jisoo: she reaches it; dongho still cannot.
        page.goto(portal.url("/sessions"))
        page.select_option(f"#share-{job_id}", "jisoo")
        page.locator(f"form[action='/sessions/{job_id}/share'] button[value='1']").click()
        page.wait_for_url(re.compile(r".*/sessions\?flash=.*"))
        jisoo = others[1].pages[0]
        assert jisoo.request.get(portal.url(f"/sessions/{job_id}/app/api/status")).status == 200
        assert _websocket_opens(jisoo, ws_url)
        assert others[0].pages[0].request.get(lab).status == 404

        # A socket name swapped for a symlink (to the real socket, even) is refused.
        run_dir = _run_dir(portal, job_id)
        sock = run_dir / socket_name(job_id)
        moved = run_dir / "real.sock"
        os.rename(sock, moved)
        os.symlink(moved, sock)
        try:
            assert page.request.get(lab).status == 409
        finally:
            os.unlink(sock)
            os.rename(moved, sock)
        assert page.request.get(lab).status == 200

        # The card shows what it cost so far; the owner stops it.
        page.goto(portal.url("/sessions"))
        cost = page.locator(f"#session-{job_id}-cost").inner_text()
        assert words["gpu_hours"] in cost
        assert float(re.sub(r"[^0-9.]", "", cost)) > 0, cost
        shoot(page, lang, "session-card-cost")
        page.locator(f"#session-{job_id}-stop").click()
        page.wait_for_url(re.compile(r".*/sessions\?flash=.*"))

        def ended() -> bool:
            page.reload()
            return words["cancelled"] in page.locator(f"#session-{job_id}-state").inner_text()

        wait_until(ended, timeout=60, step=1)
        assert page.locator(f"#session-{job_id}-open").count() == 0
        assert page.request.get(lab).status == 409  # not running any more
        final = page.locator(f"#session-{job_id}-cost").inner_text()
        assert float(re.sub(r"[^0-9.]", "", final)) > 0, final
        shoot(page, lang, "session-card-stopped")
    finally:
        for context in others:
            context.close()
        owner_ctx.close()
        _end_sessions(portal)
