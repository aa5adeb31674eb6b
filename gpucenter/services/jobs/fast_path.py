"""Submissions on the event loop: the pipeline on a small pool of async PostgreSQL
connections, for the REST fast path (`api/fast_submit.py`).

Why: a submission through FastAPI and the ORM session cost 7-9 ms of CPU on the 2-core
reference machine (bench/RESULTS.md, issue 11). Here `submit.submit_async` runs the same
`pipeline.CHECKS` and the same insert on psycopg async connections, each statement
compiled once by SQLAlchemy for the engine's dialect (and prepared by psycopg after a few
uses). Whatever it cannot finish goes to `submit.submit` in a worker thread, exactly as
the FastAPI route calls it: SQLite, an array, a repeated Idempotency-Key, a refusal of a
request with a key, a database error that cannot have written the job, a pool that is not
this loop's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

import anyio.to_thread
import psycopg
from sqlalchemy.engine import Dialect
from sqlalchemy.engine.url import make_url
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from gpucenter.auth.permissions import Caller
from gpucenter.persistence.tables import JobRow
from gpucenter.services.context import AppContext
from gpucenter.services.jobs import submit as submitting
from gpucenter.services.jobs.pipeline import Query
from gpucenter.services.jobs.submission import JobForm

log = logging.getLogger(__name__)


class _Compiled:
    """One SQLAlchemy statement compiled once for a dialect, run through psycopg directly.

    The SQL text, its constant parameters (the IN list, LIMIT 1 ...) and the per-type bind
    processors (JSON columns) all come from SQLAlchemy's compiler; per call only the given
    values are processed. `names` are the parameters given per call."""

    def __init__(self, statement: ClauseElement, dialect: Dialect, names: Iterable[str]) -> None:
        self.statement = statement  # held, so that its id() is not reused while cached
        given = set(names)
        compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
        state = compiled.construct_expanded_state(dict.fromkeys(given))
        self.sql = state.statement
        processors: dict[str, Callable[[Any], Any]] = {}
        for name, bind in compiled.binds.items():
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                processors[name] = process
        processors.update(state.processors)  # those of an expanded IN list
        self.processors = {k: p for k, p in processors.items() if k in given}
        self.constants = {
            k: processors[k](v) if k in processors else v
            for k, v in state.parameters.items()
            if k not in given
        }

    def params(self, values: Mapping[str, Any]) -> dict[str, Any]:
        found = dict(self.constants)
        processors = self.processors
        for key, value in values.items():
            process = processors.get(key)
            found[key] = value if process is None else process(value)
        return found


class _Connection:
    """`submit.SubmitConnection` on one psycopg connection in autocommit mode.

    No BEGIN/COMMIT around the statements: under READ COMMITTED (PostgreSQL's default,
    which the engine uses too) each statement of a transaction takes its own snapshot, the
    reads write nothing, and the insert is one statement, so a transaction would change no
    outcome; it would cost two more round trips (four system calls) per submission."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], pool: SubmitPool) -> None:
        self._conn = conn
        self._pool = pool
        self.inserting = False

    async def rows(self, query: Query[Any]) -> list[Sequence[Any]]:
        stmt = self._pool.compiled(cast(ClauseElement, query.statement), query.params)
        cur = await self._conn.execute(stmt.sql, stmt.params(query.params))
        if query.first:
            row = await cur.fetchone()
            return [] if row is None else [row]
        return list(await cur.fetchall())

    async def insert(self, values: dict[str, Any], on_conflict: bool) -> int | None:
        stmt = self._pool.compiled(submitting.insert_statement(on_conflict), values)
        self.inserting = True  # from here a failure may have written the job
        cur = await self._conn.execute(stmt.sql, stmt.params(values))
        row = await cur.fetchone()
        return None if row is None else int(row[0])


class SubmitPool:
    """A few async PostgreSQL connections of one server process, for submissions only.

    Bound to the event loop that first uses it (the server's); from any other loop (a test
    client without its lifespan) `usable()` is False and submissions take the thread path.
    Connections open on demand up to `size`; a broken one is dropped and replaced."""

    def __init__(self, url: str, dialect: Dialect, size: int) -> None:
        self._conninfo = make_url(url).set(drivername="postgresql").render_as_string(False)
        self._dialect = dialect
        self._size = size
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._compiled: dict[tuple[int, frozenset[str]], _Compiled] = {}

    @classmethod
    def for_context(cls, ctx: AppContext) -> SubmitPool | None:
        """A pool where the database is PostgreSQL; None elsewhere (SQLite: thread path)."""
        if ctx.engine.dialect.name != "postgresql" or not ctx.settings.submit_fast_path:
            return None
        url = ctx.engine.url.render_as_string(hide_password=False)
        return cls(url, ctx.engine.dialect, ctx.settings.submit_pool_size)

    def compiled(self, statement: ClauseElement, params: Mapping[str, Any]) -> _Compiled:
        """`statement` compiled for the parameters given, once per (statement, names)."""
        key = (id(statement), frozenset(params))
        found = self._compiled.get(key)
        if found is None or found.statement is not statement:
            found = self._compiled[key] = _Compiled(statement, self._dialect, key[1])
        return found

    async def open(self) -> None:
        """Bind to the running (serving) loop and open the connections now, so that the
        first submissions do not pay for them; a failure is logged, and the connections
        are opened on demand instead."""
        if not self.usable():
            return
        try:
            for _ in range(self._size - len(self._idle)):
                conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
                self._idle.append(conn)
        except psycopg.Error as exc:
            log.warning("submission pool: could not connect at start-up (%s)", exc)

    def usable(self) -> bool:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            self._slots = asyncio.Semaphore(self._size)
        return self._loop is loop and not self._closed

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[_Connection]:
        """A connection of the pool for one submission; back to the pool afterwards (or
        closed, if it broke)."""
        assert self._slots is not None
        async with self._slots:
            conn = (
                self._idle.pop()
                if self._idle
                else await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
            )
            try:
                yield _Connection(conn, self)
            finally:
                if conn.closed or conn.broken or self._closed:
                    await conn.close()
                else:
                    self._idle.append(conn)

    async def close(self) -> None:
        """Close the idle connections (at shutdown; one in use closes when released)."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()


async def submit(
    ctx: AppContext,
    pool: SubmitPool | None,
    caller: Caller,
    form: JobForm,
    key: str | None,
) -> JobRow:
    """`submit.submit_async` on the pool where it can answer; `submit.submit` in a worker
    thread otherwise. Same checks either way: both run `pipeline.CHECKS`."""
    if pool is not None and pool.usable():
        row = None
        async with pool.connection() as db:
            try:
                row = await submitting.submit_async(ctx, caller, form, key, db)
            except psycopg.Error as exc:
                # Refused or broken before anything was written: the general path answers
                # (a number out of range is its 422; a dropped connection is retried on the
                # engine's pool). Where the insert may have been written, only a request
                # with a key can be retried safely; without one the error stands (a 500).
                rejected = isinstance(exc, psycopg.DataError | psycopg.IntegrityError)
                if db.inserting and not rejected and key is None:
                    raise
                log.debug("fast submission fell back after %r", exc)
        if row is not None:
            return row
    general: Callable[[AppContext, Caller, JobForm, str | None], JobRow] = submitting.submit
    return await anyio.to_thread.run_sync(general, ctx, caller, form, key)


__all__ = [
    "SubmitPool",
    "submit",
]
