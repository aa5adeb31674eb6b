"""The Alembic migrations build exactly the schema the code declares, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from gpucenter.persistence.db import migrate
from gpucenter.persistence.schema import Base


def test_migrations_match_the_declared_tables(db_url: str) -> None:
    engine = create_engine(db_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        tables = set(inspect(conn).get_table_names())
    engine.dispose()
    assert diff == []
    assert {"jobs", "allocations", "ledger_entries", "users", "api_tokens"} <= tables


def test_upgrading_twice_is_harmless(db_url: str) -> None:
    migrate(db_url)
    migrate(db_url)
