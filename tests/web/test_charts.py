"""Charts drawn by the vendored Vega-Lite in a real Chromium, under the portal's CSP: the
burn-down spans the allocation's whole year with dates that do not run together, axes have
ticks, hovering shows values, and nothing on the page is refused or fails.

Also: the vendored files are the ones VERSIONS.txt records (version, licence, sha256), and
the specifications the server writes are what the page promises (whole period, zone named).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gpucenter.persistence.tables import JobRow, LedgerEntryRow, ProjectRow, SiteRow
from gpucenter.services.identity import accounts
from gpucenter.web import charts
from tests.web.conftest import Portal, shoot, sign_in

ROOT = Path(__file__).resolve().parents[2]
VENDOR = ROOT / "gpucenter" / "web" / "static" / "vendor" / "vega"
AXE = ROOT / "tests" / "web" / "vendor" / "axe-core"


@pytest.mark.parametrize("folder", [VENDOR, AXE])
def test_vendored_files_are_the_recorded_versions_with_their_licences(folder: Path) -> None:
    lines = [
        line.split()
        for line in (folder / "VERSIONS.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert lines
    for name, package, licence, digest in lines:
        data = (folder / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, f"{name} is not {package}"
        assert licence in ("BSD-3-Clause", "MPL-2.0")
    assert any(p.name.startswith("LICENSE") for p in folder.iterdir())


def test_the_package_ships_the_chart_library() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert '"web/static/vendor/*/*"' in text


def test_a_time_chart_spans_the_whole_period_in_the_portal_zone() -> None:
    from zoneinfo import ZoneInfo

    start = datetime(2026, 1, 1, tzinfo=UTC)
    end = start + timedelta(days=365)
    markup = charts.time_chart(
        "Remaining",
        [("actual", [(start, 100.0), (start + timedelta(minutes=3), 99.0)])],
        lang="ko",
        zone=ZoneInfo("Asia/Seoul"),
        zone_name="Asia/Seoul",
        y_title="GPU-hours",
        domain=(start, end),
    )
    spec = json.loads(
        re.search(r'data-vl-spec="([^"]*)"', str(markup)).group(1).replace("&#34;", '"')
    )
    x = spec["encoding"]["x"]
    assert x["scale"]["domain"] == ["2026-01-01T09:00:00Z", "2027-01-01T09:00:00Z"]
    assert x["title"].endswith("(Asia/Seoul)")
    loc = charts.chart_locale("ko")
    assert loc["time"]["months"][0] == "1월" and loc["time"]["periods"] == ["오전", "오후"]


def _seed_a_year(portal: Portal) -> int:
    """A project with a one-year allocation that began 60 days ago and some charges."""
    now = datetime.now(tz=UTC)
    with portal.ctx.sessions.begin() as s:
        accounts.create_organisation(s, "Hanbit University", "university", now)
        user = accounts.create_user(
            s, "minji", now, organisation="Hanbit University", password="minji-chart-password"
        ).user
        accounts.create_project(s, "nlp-lab", "Hanbit University", now, title="Korean NLP")
        accounts.add_member(s, "nlp-lab", "minji", "pi")
        alloc = accounts.create_allocation(
            s, "nlp-lab", 1440.0, now, starts_at=now - timedelta(days=60), days=365
        )
        project = s.scalars(select(ProjectRow).where(ProjectRow.name == "nlp-lab")).one()
        site = s.scalars(select(SiteRow)).first()
        assert site is not None
        for day in range(0, 60, 6):
            job = JobRow(
                project_id=project.id,
                allocation_id=alloc.id,
                user_id=user.id,
                site_id=site.id,
                name=f"train-{day}",
                command="true",
                gpu_type="vgpu",
                gpus_per_node=1,
                nodes=1,
                time_limit_s=3600,
                state="COMPLETED",
                submitted_at=now - timedelta(days=60 - day),
            )
            s.add(job)
            s.flush()
            s.add(
                LedgerEntryRow(
                    allocation_id=alloc.id,
                    job_id=job.id,
                    source=f"test:{job.id}",
                    gpu_type="vgpu",
                    gpu_seconds=3600.0 * 12,
                    created_at=now - timedelta(days=60 - day),
                )
            )
        return project.id


def _boxes(page: Any, selector: str) -> list[dict[str, float]]:
    return page.eval_on_selector_all(
        selector,
        "els => els.map(e => { const b = e.getBoundingClientRect();"
        " return {x: b.x, y: b.y, w: b.width, h: b.height, text: e.textContent}; })",
    )


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_burn_down_is_drawn_readably_with_values_on_hover(
    portal: Portal, browser_page: Any
) -> None:
    project_id = _seed_a_year(portal)
    page = browser_page
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on(
        "response",
        lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None,
    )
    sign_in(page, portal, "minji", "minji-chart-password")
    for lang in ("en", "ko"):
        page.goto(portal.url(f"/lang/{lang}?next=/projects/{project_id}"))
        page.wait_for_selector("div.chart[data-chart-ready=true]", timeout=30_000)
        assert page.locator("div.chart[data-chart-error]").count() == 0
        # The x axis: several ticks, none overlapping, covering the whole year.
        x_axis = "div.chart .role-axis[aria-label^='X-axis'] .role-axis-label text"
        labels = _boxes(page, x_axis)
        assert len(labels) >= 4, labels
        for a, b in itertools.pairwise(labels):
            assert a["x"] + a["w"] <= b["x"] + 0.5, (a, b)
        texts = " ".join(str(label["text"]) for label in labels)
        if lang == "ko":
            assert "월" in texts, texts  # Korean month names from CLDR
        assert len({str(label["text"]) for label in labels}) == len(labels)
        # The y axis: sensible ticks, no "0.0 0.0 0.0" and no exponent.
        y = [
            str(t["text"])
            for t in _boxes(
                page, "div.chart .role-axis[aria-label^='Y-axis'] .role-axis-label text"
            )
        ]
        assert len(set(y)) == len(y) >= 3, y
        assert not any("e+" in t for t in y), y
        # Hover a point: its values show.
        point = page.locator("div.chart .mark-symbol path").first
        point.hover(force=True)
        tooltip = page.locator("#vg-tooltip-element.visible")
        tooltip.wait_for(timeout=5_000)
        assert "KST" in tooltip.inner_text()
        shoot(page, lang, "project-burn-down-chart")
    assert not problems, problems
