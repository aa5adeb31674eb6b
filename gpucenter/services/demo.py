"""Demo data so that `make run` shows a working centre at once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import yaml
from sqlalchemy import select

from gpucenter.config import Settings
from gpucenter.persistence.db import make_engine, session_factory
from gpucenter.persistence.tables import OrganisationRow, UserRow
from gpucenter.services import accounts, templates

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


@dataclass(frozen=True)
class DemoResult:
    created: bool
    summary: str


def load_demo(settings: Settings) -> DemoResult:
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
        token_path = settings.var_dir / "cli-token"
        token_path.parent.mkdir(parents=True, exist_ok=True)
        token_path.write_text(new.token)
        token_path.chmod(0o600)
    finally:
        engine.dispose()
    return DemoResult(
        True,
        f"demo data loaded: user {DEMO_USER!r} (password {DEMO_PASSWORD!r}) in project "
        f"{DEMO_PROJECT!r} with 1000 GPU-hours; the CLI is signed in as {DEMO_USER}",
    )
