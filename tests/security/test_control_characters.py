"""NUL and other control characters are refused where text comes in, naming the field, and
nothing is written. A NUL byte in a job's command once made every later scheduling pass fail
for everybody (PostgreSQL cannot store it; a process cannot be given it)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from gpucenter.app import create_app
from gpucenter.config import Settings
from gpucenter.domain.text import find_control
from gpucenter.persistence.tables import ApiTokenRow, JobRow
from gpucenter.services.context import AppContext
from tests.factories import Centre, make_context, seed_centre
from tests.security.web import csrf_of, web_session

GOOD = {"project": "alpha", "command": "echo hi", "gpus_per_node": 1}


@pytest.fixture
def env(settings: Settings) -> Iterator[tuple[AppContext, Centre, TestClient]]:
    ctx = make_context(settings)
    centre = seed_centre(ctx)
    app = create_app(ctx, run_scheduler=False)
    with TestClient(app, base_url="https://testserver") as client:  # secure cookies
        yield ctx, centre, client
    ctx.dispatcher.shutdown()
    ctx.engine.dispose()


def _jobs(ctx: AppContext) -> int:
    with ctx.sessions.begin() as s:
        return int(s.scalar(select(func.count()).select_from(JobRow)) or 0)


CASES: list[tuple[dict[str, Any], str]] = [
    ({"command": "echo \x00"}, "command"),
    ({"command": "echo \x1b[2J"}, "command"),
    ({"script": "#!/bin/bash\necho \x00\n", "command": None}, "script"),
    ({"env": {"HF_TOKEN": "abc\x00"}}, "env.HF_TOKEN"),
    ({"env": {"A\x07": "x"}}, "env.<key>"),
    ({"name": "n\x00"}, "name"),
    ({"workdir": "/tmp/\x00"}, "workdir"),
    ({"project": "alpha\x00"}, "project"),
    ({"time": "5m\x00"}, "time"),
]


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "route"])
def test_a_control_character_in_a_submission_is_a_422_naming_the_field(
    env: tuple[AppContext, Centre, TestClient], fast_path: bool
) -> None:
    ctx, centre, client = env
    ctx.settings.submit_fast_path = fast_path
    alice = {"Authorization": f"Bearer {centre.alice_token}"}
    for change, field in CASES:
        body = {k: v for k, v in (GOOD | change).items() if v is not None}
        resp = client.post("/api/v1/jobs", json=body, headers=alice)
        assert resp.status_code == 422, (field, resp.text)
        assert resp.headers["content-type"].startswith("application/problem+json")
        problem = str(resp.json())
        assert field in problem and "control character" in problem, (field, problem)
    assert _jobs(ctx) == 0
    # Without the characters the same submissions are accepted: the refusals were theirs.
    assert client.post("/api/v1/jobs", json=GOOD, headers=alice).status_code == 201


def test_other_routes_refuse_control_characters_in_bodies_and_queries(
    env: tuple[AppContext, Centre, TestClient],
) -> None:
    ctx, centre, client = env
    alice = {"Authorization": f"Bearer {centre.alice_token}"}
    with ctx.sessions.begin() as s:
        tokens_before = s.scalar(select(func.count()).select_from(ApiTokenRow))
    resp = client.post(
        "/api/v1/tokens", json={"name": "ci\x00", "scopes": ["jobs:read"]}, headers=alice
    )
    assert resp.status_code == 422 and "name" in resp.text, resp.text
    with ctx.sessions.begin() as s:
        assert s.scalar(select(func.count()).select_from(ApiTokenRow)) == tokens_before
    resp = client.get("/api/v1/jobs", params={"state": "RUNNING\x00"}, headers=alice)
    assert resp.status_code == 422 and "state" in resp.text, resp.text


def test_the_portals_job_form_refuses_a_nul_byte(
    env: tuple[AppContext, Centre, TestClient],
) -> None:
    ctx, _, client = env
    web_session(client, "root", "root-password")
    page = client.get("/jobs/new")
    resp = client.post(
        "/jobs/new",
        data={
            "csrf": csrf_of(page.text),
            "project": "alpha",
            "command": "echo \x00 owned",
            "gpus_per_node": "1",
        },
        headers={"Accept": "text/html"},  # as a browser asks
        follow_redirects=False,
    )
    assert resp.status_code == 422
    assert resp.headers["content-type"].startswith("text/html")
    assert "command" in resp.text and "control character" in resp.text
    assert _jobs(ctx) == 0


def test_the_cli_refuses_a_control_character_in_an_argument() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gpucenter.cli", "job", "submit", "-p", "x", "--", "echo \x01"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "control character U+0001" in done.stderr


def test_the_finder_names_nested_fields_and_allows_tabs_and_line_ends() -> None:
    assert find_control({"a": ["ok", "b\x00"]}) == ("a[1]", "U+0000")
    assert find_control({"env": {"K": "tab\there\r\nand lines"}}) is None
    assert find_control("C1 \x85 next line") == ("value", "U+0085")
    assert find_control("printable 한국어 ✓") is None
