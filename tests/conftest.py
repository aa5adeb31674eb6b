"""Shared fixtures: a migrated database on SQLite and on PostgreSQL, and a wired AppContext.

PostgreSQL comes from GPUCENTER_TEST_POSTGRES_URL (default: the local server on 127.0.0.1).
Each test gets a database of its own. Where PostgreSQL cannot be reached the PostgreSQL
variants skip with the reason, except in CI (CI=true), where they fail: CI must run them.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import Phase
from hypothesis import settings as hypothesis_settings
from sqlalchemy import create_engine, text
from sqlalchemy.engine.url import make_url

from gpucenter.config import Settings
from gpucenter.persistence.db import migrate

# For mutation testing (bench/mutation.py, `--hypothesis-profile=mutation`): the same examples
# for every mutant and no example database, so that whether a mutant is killed depends on the
# mutant alone, not on the seed or on which mutant ran before it; no shrinking, since only
# whether a test fails counts there.
hypothesis_settings.register_profile(
    "mutation", derandomize=True, database=None, phases=(Phase.explicit, Phase.generate)
)

PG_ADMIN_URL = os.environ.get(
    "GPUCENTER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _pg_available() -> str | None:
    try:
        engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return None
    except Exception as exc:  # any failure to connect means "not available here"
        return f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc.__class__.__name__}"


_PG_PROBLEM: str | None = None
_PG_CHECKED = False


_PG_SETUP = Path(__file__).resolve().parents[1] / "scripts" / "postgres" / "setup.sh"


def _start_local_postgres() -> str | None:
    """Install and start the local server with the project's script (root on Debian only).

    Only for the default address: a URL given in GPUCENTER_TEST_POSTGRES_URL is someone
    else's server to run. Returns why it could not, or None when the script says it is up.
    """
    if "GPUCENTER_TEST_POSTGRES_URL" in os.environ or os.geteuid() != 0:
        return "not started here (a custom URL, or not root)"
    done = subprocess.run(["bash", str(_PG_SETUP)], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        return f"scripts/postgres/setup.sh exited {done.returncode}: {done.stderr.strip()[-300:]}"
    return None


def pg_problem() -> str | None:
    global _PG_CHECKED, _PG_PROBLEM
    if not _PG_CHECKED:
        _PG_PROBLEM = _pg_available()
        if _PG_PROBLEM and _start_local_postgres() is None:
            _PG_PROBLEM = _pg_available()
        _PG_CHECKED = True
    return _PG_PROBLEM


@pytest.fixture(autouse=True)
def _own_default_var_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Code that falls back to the configured settings (the audit log's key ring, the CLI in
    process) finds a state directory of this test's own, never the checkout's ./var."""
    from gpucenter.config import get_settings

    monkeypatch.setenv("GPUCENTER_VAR_DIR", str(tmp_path / "default-var"))
    # The CLI's per-user configuration (cli/profiles.py) lives under XDG_CONFIG_HOME: each
    # test gets its own, so neither the developer's profile nor another test's leaks in
    # (servers and CLI processes started by a test inherit it).
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.delenv("GPUCENTER_PROFILE", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    problem = pg_problem()
    if problem:
        if IN_CI:
            pytest.fail(f"{problem} (CI must run the PostgreSQL suite)")
        pytest.skip(problem)
    name = f"gpucenter_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A freshly migrated database of each kind."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'gpucenter.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    migrate(url)
    return url


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(
        var_dir=tmp_path / "var",
        database_url=db_url,
        scheduler_interval_s=0.2,
        kill_grace_s=0.5,
    )
