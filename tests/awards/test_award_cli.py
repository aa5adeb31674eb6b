"""`gpucenter award ...` as a PI and a signatory use it: the CLI in its own process against
a live server (in-process uvicorn) with the awards world decided. The PI lists the offer,
accepts it, the organisation's signatory countersigns, another applicant declines theirs;
nobody acts on an award that is not theirs (the API's refusal, a non-zero exit); and the
list reads in Korean under LANG=ko_KR."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import uvicorn
from sqlalchemy import select

from gpucenter.app import create_app
from gpucenter.config import Settings
from gpucenter.domain.clock import ManualClock
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.tables_allocation import AwardRow
from gpucenter.services.awards import decision
from gpucenter.services.context import AppContext
from gpucenter.services.identity.tokens import issue
from tests.awards.world import SIGNATORIES, World, build, review_and_run
from tests.factories import make_context, one_node_site
from tests.resilience.servers import free_port

T0 = datetime(2026, 3, 20, tzinfo=UTC)
Q2 = datetime(2026, 4, 1, tzinfo=UTC)


@dataclass
class Live:
    url: str
    ctx: AppContext
    world: World
    home: Path

    def award(self, name: str) -> int:
        with self.ctx.sessions.begin() as s:
            found = s.scalar(
                select(AwardRow.id).where(AwardRow.application_id == self.world.apps[name])
            )
            assert found is not None
            return int(found)

    def state(self, name: str) -> str:
        with self.ctx.sessions.begin() as s:
            return str(s.get_one(AwardRow, self.award(name)).state)

    def cli(self, user: str, *args: str, ok: bool = True, lang: str = "C.UTF-8") -> str:
        with self.ctx.sessions.begin() as s:
            row = repo.user_by_name(s, user)
            assert row is not None
            _, token = issue(s, row.id, self.ctx.now())
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(self.home),
            "XDG_CONFIG_HOME": str(self.home / ".config"),
            "GPUCENTER_API_URL": self.url,
            "GPUCENTER_TOKEN": token,
            "LANG": lang,
            "COLUMNS": "200",
        }
        done = subprocess.run(
            [sys.executable, "-m", "gpucenter.cli", "award", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if ok:
            assert done.returncode == 0, done.stdout + done.stderr
            return done.stdout
        assert done.returncode != 0, done.stdout
        assert "Traceback" not in done.stderr
        return done.stderr


@pytest.fixture
def live(settings: Settings, tmp_path: Path) -> Iterator[Live]:
    ctx = make_context(settings, one_node_site(8, "h100"))
    ctx.clock = ManualClock(T0.timestamp())
    world = build(ctx.sessions, T0, Q2)
    run_id = review_and_run(world, T0 + timedelta(days=11))
    ctx.clock.set((T0 + timedelta(days=12)).timestamp())
    with ctx.sessions.begin() as s:
        decision.decide(s, world.who(s, "pm"), run_id, ctx.now())
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(ctx, run_scheduler=False), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the app did not start"
        time.sleep(0.05)
    try:
        yield Live(f"http://127.0.0.1:{port}", ctx, world, tmp_path / "home")
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        ctx.dispatcher.shutdown()
        ctx.engine.dispose()


def test_a_pi_answers_an_offer_and_a_signatory_countersigns_from_the_cli(live: Live) -> None:
    jiwoo = live.award("jiwoo")
    mine = json.loads(live.cli("jiwoo", "list", "--json"))
    assert [item["award"]["id"] for item in mine] == [jiwoo]
    assert mine[0]["award"]["state"] == "offered"
    assert "jiwoo's project" in live.cli("jiwoo", "list")

    # Not theirs: another applicant and another organisation's signatory are refused.
    refused = live.cli("minho", "accept", str(jiwoo), ok=False)
    assert "not found" in refused and "PI" not in refused  # its existence does not leak
    refused = live.cli(SIGNATORIES["Busan AI Startup"], "countersign", str(jiwoo), ok=False)
    assert "not found" in refused
    assert live.state("jiwoo") == "offered"

    live.cli("jiwoo", "accept", str(jiwoo))
    live.cli(SIGNATORIES["Hanbit University"], "countersign", str(jiwoo))
    assert live.state("jiwoo") == "active"
    shown = live.cli("jiwoo", "show", str(jiwoo))
    assert "active" in shown and "8,000" in shown

    sora = live.award("sora")
    live.cli("sora", "decline", str(sora), "--reason", "the project moved abroad")
    assert live.state("sora") == "declined"
    again = live.cli("sora", "accept", str(sora), ok=False)  # a declined offer stays declined
    assert again.strip()
    assert live.state("sora") == "declined"


def test_the_award_list_reads_in_korean(live: Live) -> None:
    listed = live.cli("jiwoo", "list", lang="ko_KR.UTF-8")
    assert "제안됨" in listed and "응답 기한" in listed
    refused = live.cli("jiwoo", "decline", "999999", "--reason", "x", ok=False, lang="ko_KR.UTF-8")
    assert "오류" in refused or "찾을 수 없습니다" in refused
