"""Engine and session factory, and running the Alembic migrations programmatically."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.engine.url import make_url
from sqlalchemy.exc import DataError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql import sqltypes

from gpucenter.domain.errors import OutOfRange

_HERE = Path(__file__).parent


def _ensure_sqlite_dir(url: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(str(parsed.database)).parent.mkdir(parents=True, exist_ok=True)


class DataOutOfRange(DataError, OutOfRange):
    """The database refused a value (SQLSTATE class 22: a number out of range, ...).

    Still a SQLAlchemy `DataError` (code that expects one, such as a savepoint around a
    setting that may be refused, keeps working) and also the domain's `OutOfRange`, which
    is all the HTTP layer maps: routes and pages never import the database's errors."""


def _data_errors_as_domain(context: ExceptionContext) -> BaseException | None:
    exc = context.sqlalchemy_exception
    if not isinstance(exc, DataError) or isinstance(exc, DataOutOfRange) or exc.orig is None:
        return None
    return DataOutOfRange(
        exc.statement,
        exc.params,
        exc.orig,
        hide_parameters=exc.hide_parameters,
        connection_invalidated=exc.connection_invalidated,
        code=exc.code,
        ismulti=exc.ismulti,
    )


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite gets foreign keys, WAL and a busy timeout for the server loop.

    Every engine raises the database's data errors as `DataOutOfRange`."""
    engine = _make_engine(url)
    event.listen(engine, "handle_error", _data_errors_as_domain, retval=True)
    return engine


class _AwareSqliteDateTime(sqlite.DATETIME):
    """SQLite keeps no offset: a `DateTime(timezone=True)` column came back naive there and
    aware from PostgreSQL, so the API wrote "2026-12-05T04:59:54" (no offset) on one and
    "...+00:00" on the other. Every value is stored in UTC, so on the way out it is marked
    UTC: both databases now hand the services the same aware datetimes."""

    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        parse = super().result_processor(dialect, coltype)
        if not self.timezone:
            return parse

        def aware(value: Any) -> Any:
            parsed = parse(value) if parse is not None else value
            if isinstance(parsed, datetime) and parsed.tzinfo is None:
                return parsed.replace(tzinfo=UTC)
            return parsed

        return aware


def _make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        _ensure_sqlite_dir(url)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        engine.dialect.colspecs = {
            **engine.dialect.colspecs,
            sqltypes.DateTime: _AwareSqliteDateTime,
        }

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    # The API's worker threads and the scheduler share the pool: with the default 5 kept,
    # a burst of submissions opens and closes overflow connections (a PostgreSQL backend
    # each) all the time; 10 kept + 10 overflow keeps a busy process's connections open
    # while staying far below the server's max_connections with several processes.
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def session_factory(engine: Engine, info: dict[str, Any] | None = None) -> sessionmaker[Session]:
    """Sessions on `engine`; `info` is given to every session (the audit log's files)."""
    return sessionmaker(engine, expire_on_commit=False, info=dict(info or {}))


def insert_or_ignore(
    s: Session, row_type: type[Any], values: dict[str, Any], keys: list[str]
) -> None:
    """INSERT ... ON CONFLICT (keys) DO NOTHING, on SQLite and PostgreSQL alike: for a row that
    several server processes may make at once, where the loser must neither fail nor wait
    for a retry. On SQLite it also takes the database's write lock for the transaction."""
    dialect = s.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    s.execute(insert(row_type).values(**values).on_conflict_do_nothing(index_elements=keys))


def alembic_config(url: str) -> Config:
    cfg = Config(str(_HERE / "alembic.ini"))
    cfg.set_main_option("script_location", str(_HERE / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(url: str, revision: str = "heads", var_dir: Path | None = None) -> None:
    """Bring the database at `url` up to `revision` (same migrations on SQLite and PostgreSQL).
    `var_dir`: the server's state directory, whose key ring seals job environments (0018);
    None: the configured one."""
    _ensure_sqlite_dir(url)
    cfg = alembic_config(url)
    if var_dir is not None:
        cfg.attributes["var_dir"] = var_dir
    command.upgrade(cfg, revision)
