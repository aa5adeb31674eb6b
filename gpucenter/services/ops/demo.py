"""Demo data so that `make run` shows a working centre at once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from gpucenter.auth.permissions import Caller
from gpucenter.config import Settings
from gpucenter.persistence.db import make_engine, session_factory
from gpucenter.persistence.tables import OrganisationRow, UserRow
from gpucenter.services.identity import accounts
from gpucenter.services.jobs import templates
from gpucenter.services.ops import demo_history
from gpucenter.services.programmes import calls as prog

DEMO_USER = "demo"
DEMO_PASSWORD = "demo-password"
DEMO_PROJECT = "demo"


def builtin_templates() -> list[dict[str, Any]]:
    """The templates shipped in gpucenter/demo/templates/."""
    folder = resources.files("gpucenter.demo").joinpath("templates")
    bodies = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            bodies.append(yaml.safe_load(entry.read_text()))
    return bodies


def _quarter(when: datetime) -> str:
    return f"{when.year}Q{(when.month - 1) // 3 + 1}"


def _demo_call(s: Session, now: datetime) -> None:
    """An open call, so that the portal's programme pages have something to show: the
    admin (who holds every role) manages it; the demo user can apply."""
    admin = s.scalar(select(UserRow).where(UserRow.username == "admin"))
    assert admin is not None
    root = Caller(admin.id, admin.username, True, frozenset())
    p = prog.create_programme(
        s, root, "ai-gpu-support", "Ministry of Science and ICT", now, "AI GPU support programme"
    )
    periods = [_quarter(now), _quarter(now + timedelta(days=92))]
    spec = prog.CallSpec(
        "demo-round",
        now - timedelta(hours=1),
        now + timedelta(days=30),
        {"h100": dict.fromkeys(periods, 20000.0), "b200": {periods[0]: 5000.0}},
        title="AI GPU support: open round",
        config={
            "eligible_types": ["university", "startup", "sme", "public_research_institute"],
            "max_gpu_hours": 15000,
            "shares": [
                {"name": "startups_smes", "applicant_types": ["startup", "sme"], "min_share": 0.3}
            ],
            "regional_bonus": 0.1,
        },
    )
    prog.create_call(s, root, p.id, spec, now)


@dataclass(frozen=True)
class DemoResult:
    created: bool
    summary: str
    token: str = ""  # the demo user's new API token (the CLI keeps it in its profile)
    username: str = DEMO_USER


def load_demo(
    settings: Settings, history: demo_history.Replay | None = None, seed: int = 7
) -> DemoResult:
    """The demo user, project and templates, an open call, and (with `history`, the replay
    of a workload by the scheduler: see demo_history) a few months of a centre's life."""
    engine = make_engine(settings.effective_database_url)
    now = datetime.now(tz=UTC)
    try:
        with session_factory(engine).begin() as s:
            if s.scalar(select(UserRow).where(UserRow.username == DEMO_USER)) is not None:
                return DemoResult(False, "demo data already loaded")
            if s.scalar(select(OrganisationRow).where(OrganisationRow.name == "Demo University")):
                return DemoResult(False, "demo organisation exists; left as it is")
            accounts.create_organisation(s, "Demo University", "university", now)
            accounts.create_user(s, "admin", now, password="admin-password", is_admin=True)
            new = accounts.create_user(
                s, DEMO_USER, now, organisation="Demo University", password=DEMO_PASSWORD
            )
            accounts.create_project(s, DEMO_PROJECT, "Demo University", now, "Demo project")
            accounts.add_member(s, DEMO_PROJECT, DEMO_USER, "pi")
            accounts.create_allocation(s, DEMO_PROJECT, 1000.0, now)
            for body in builtin_templates():
                templates.publish(s, body, now, None)
            _demo_call(s, now)
            past = None
            if history is not None:
                past = demo_history.load_history(s, "admin", DEMO_USER, now, seed, history)
    finally:
        engine.dispose()
    summary = (
        f"demo centre loaded: user {DEMO_USER!r} (password {DEMO_PASSWORD!r}) in project "
        f"{DEMO_PROJECT!r} with 1000 GPU-hours; admin {'admin'!r} (password 'admin-password')"
    )
    if past is not None:
        summary += f"\n{past.summary}"
    return DemoResult(True, summary, new.token)


__all__ = [
    "builtin_templates",
    "load_demo",
]
