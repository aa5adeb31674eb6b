"""Backups of the database: a consistent copy of SQLite, `pg_dump` of PostgreSQL.

SQLite is copied with its online backup API, so a running server can keep writing. For
PostgreSQL the standard tools do the work (custom format, restorable with `pg_restore`);
restoring replaces the objects of the backup in the target database.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path

from sqlalchemy.engine.url import make_url

from gpucenter.domain.errors import ValidationError
from gpucenter.domain.messages import msg


def _libpq_url(url: str) -> str:
    """The URL without SQLAlchemy's driver suffix, as pg_dump and pg_restore take it."""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def _sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise ValidationError.about("database_url", msg("error.backup_in_memory"))
    return Path(database)


def backup(url: str, target: Path) -> Path:
    """Write a backup of the database at `url` to `target`; return the path written."""
    backend = make_url(url).get_backend_name()
    target.parent.mkdir(parents=True, exist_ok=True)
    if backend == "sqlite":
        source = _sqlite_path(url)
        if not source.exists():
            raise ValidationError.about(
                "database_url", msg("error.no_sqlite_database", path=str(source))
            )
        with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
            src.backup(dst)
        return target
    if backend == "postgresql":
        _run(["pg_dump", "--format=custom", "--no-owner", f"--file={target}", _libpq_url(url)])
        return target
    raise ValidationError.about("database_url", msg("error.backup_unsupported", backend=backend))


def restore(url: str, source: Path) -> None:
    """Replace the database at `url` with the backup in `source` (stop the server first)."""
    if not source.is_file():
        raise ValidationError.about("file", msg("error.not_backup_file", path=str(source)))
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        target = _sqlite_path(url)
        try:
            with sqlite3.connect(source) as src:
                sound = src.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        except sqlite3.DatabaseError:
            sound = False
        if not sound:
            raise ValidationError.about("file", msg("error.unsound_sqlite", path=str(source)))
        for suffix in ("-wal", "-shm"):
            Path(str(target) + suffix).unlink(missing_ok=True)
        tmp = target.with_suffix(target.suffix + ".restoring")
        shutil.copyfile(source, tmp)
        tmp.replace(target)
        return
    if backend == "postgresql":
        _run(
            [
                "pg_restore",
                "--clean",
                "--if-exists",
                "--no-owner",
                "--single-transaction",
                f"--dbname={_libpq_url(url)}",
                str(source),
            ]
        )
        return
    raise ValidationError.about("database_url", msg("error.restore_unsupported", backend=backend))


def _run(argv: list[str]) -> None:
    if shutil.which(argv[0]) is None:
        raise ValidationError.about("database_url", msg("error.tool_missing", tool=argv[0]))
    result = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        message = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed"
        raise ValidationError.about(
            "database_url", msg("error.tool_failed", tool=argv[0], problem=message)
        )
