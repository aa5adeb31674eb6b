"""Job submission (POST /api/v1/jobs) answered before FastAPI's routing: the production path.

Why: a submission through FastAPI cost 7-9 ms of CPU on the 2-core reference machine
(bench/RESULTS.md, issue 11): two thread hops, routing, middleware and dependency solving,
the ORM session. This handler does the same work on the event loop: the bearer token from
the token cache, the JOBS_SUBMIT check, `JobIn` validation, then `jobs.submit_async`
(the service's own validation, checks and two statements) on an async PostgreSQL
connection. Everything else goes where it went before:

- other methods and paths, and bodies FastAPI would answer differently (not JSON, not a
  JSON object, unreadable) pass to the FastAPI app untouched (a body already read is
  replayed);
- SQLite, a template, dependencies, an array, a repeated Idempotency-Key, an error on a
  request with a key, or a database error that cannot have written the job:
  `jobs.submit` in a worker thread, exactly as the FastAPI route calls it.

On PostgreSQL the statements are the service's own (`jobs.submit_target_statement`,
`jobs.insert_statement`) compiled once by SQLAlchemy for the engine's dialect and run on a
small pool of psycopg async connections (prepared by psycopg after a few uses).

Errors are rendered by the app's own table (`errors.response_for`), so status, title and
body match the FastAPI route's; the handler sits inside the request-id and security
middleware, so headers match too. The FastAPI route stays: it documents the endpoint,
declares the permission, and answers whenever this handler is off (`submit_fast_path`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

import psycopg
import pydantic
from sqlalchemy.engine import Dialect
from sqlalchemy.engine.url import make_url
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from gpucenter.api.routes_jobs import job_response
from gpucenter.api.schemas import JobIn
from gpucenter.auth.permissions import Caller, Permission
from gpucenter.domain.errors import DomainError
from gpucenter.http import errors
from gpucenter.http.deps import bearer_token, caller_for_token
from gpucenter.http.permissions import check_permission
from gpucenter.http.security import ASGIApp, Message, Receive, Scope, Send
from gpucenter.persistence.tables import JobRow
from gpucenter.services.context import AppContext
from gpucenter.services.jobs import manage as jobs
from gpucenter.services.jobs.submission import JobForm

log = logging.getLogger(__name__)
PATH = "/api/v1/jobs"


class _Compiled:
    """One SQLAlchemy statement compiled once for a dialect, run through psycopg directly.

    The SQL text, its constant parameters (the IN list, LIMIT 1 ...) and the per-type bind
    processors (JSON columns) all come from SQLAlchemy's compiler; per call only the given
    values are processed. `names` are the parameters given per call."""

    def __init__(self, statement: ClauseElement, dialect: Dialect, names: Iterable[str]) -> None:
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

    def params(self, values: dict[str, Any]) -> dict[str, Any]:
        found = dict(self.constants)
        processors = self.processors
        for key, value in values.items():
            process = processors.get(key)
            found[key] = value if process is None else process(value)
        return found


_TARGET_PARAMS = ("project", "user", "site", "gpu", "at")


class _Statements:
    """`jobs.SubmitDatabase` on one psycopg connection in autocommit mode.

    No BEGIN/COMMIT around the two statements: under READ COMMITTED (PostgreSQL's default,
    which the engine uses too) each statement of a transaction takes its own snapshot, the
    read writes nothing, and the insert is one statement, so a transaction would change no
    outcome; it would cost two more round trips (four system calls) per submission."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], pool: SubmitPool) -> None:
        self._conn = conn
        self._pool = pool
        self.inserting = False

    async def target(self, params: dict[str, Any], with_token: bool) -> Sequence[Any] | None:
        stmt = self._pool.targets[with_token]
        cur = await self._conn.execute(stmt.sql, stmt.params(params))
        return await cur.fetchone()

    async def insert(self, values: dict[str, Any], on_conflict: bool) -> int | None:
        stmt = self._pool.inserts[on_conflict]
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
        self._size = size
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self.targets = {
            with_token: _Compiled(
                jobs.submit_target_statement(with_token),
                dialect,
                (*_TARGET_PARAMS, "token") if with_token else _TARGET_PARAMS,
            )
            for with_token in (True, False)
        }
        self.inserts = {
            on_conflict: _Compiled(jobs.insert_statement(on_conflict), dialect, jobs.INSERT_COLUMNS)
            for on_conflict in (True, False)
        }

    @classmethod
    def for_context(cls, ctx: AppContext) -> SubmitPool | None:
        """A pool where the database is PostgreSQL; None elsewhere (SQLite: thread path)."""
        if ctx.engine.dialect.name != "postgresql" or not ctx.settings.submit_fast_path:
            return None
        url = ctx.engine.url.render_as_string(hide_password=False)
        return cls(url, ctx.engine.dialect, ctx.settings.submit_pool_size)

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
    async def connection(self) -> AsyncIterator[_Statements]:
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
                yield _Statements(conn, self)
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


class FastSubmit:
    """Raw-ASGI middleware: POST /api/v1/jobs answered here, everything else passed on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        ctx: AppContext = state.ctx
        if not ctx.settings.submit_fast_path:
            await self.app(scope, receive, send)
            return
        authorization = key = content_type = None
        for name, value in scope["headers"]:
            if name == b"authorization" and authorization is None:
                authorization = value.decode("latin-1")
            elif name == b"idempotency-key" and key is None:
                key = value.decode("latin-1")
            elif name == b"content-type" and content_type is None:
                content_type = value.decode("latin-1")
        if not _is_json(content_type):
            await self.app(scope, receive, send)  # FastAPI's own handling of other bodies
            return
        try:
            body = await _read_body(receive)
        except DomainError as exc:  # over the size limit
            await _render(exc, scope, receive, send)
            return
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            await self.app(scope, _replay(body, receive), send)  # FastAPI's exact 422
            return
        try:
            response = await _submit(ctx, state, authorization, key, data)
        except Exception as exc:
            await _render(exc, scope, receive, send)
            return
        await response(scope, receive, send)


def _is_json(content_type: str | None) -> bool:
    if content_type is None:
        return False
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json"


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break  # the client went away; an empty body is passed on and answered 422
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _render(exc: Exception, scope: Scope, receive: Receive, send: Send) -> None:
    response = errors.response_for(exc)
    if response is None:
        raise exc  # the outer error middleware answers 500 and logs, as for any route
    await response(scope, receive, send)


async def _submit(
    ctx: AppContext, state: Any, authorization: str | None, key: str | None, data: dict[str, Any]
) -> Response:
    """The route's work in the route's order: caller, permission, body, submit, answer."""
    caller = check_permission(
        await caller_for_token(ctx, bearer_token(authorization)), Permission.JOBS_SUBMIT
    )
    try:
        body = JobIn.model_validate(data)
    except pydantic.ValidationError as exc:
        return errors.request_validation_problem(
            [{**err, "loc": ("body", *err["loc"])} for err in exc.errors(include_url=False)]
        )
    form = JobForm(**body.model_dump())
    row = await _write(ctx, state, caller, form, key)
    loop = getattr(state, "loop", None)
    if loop is not None:
        loop.poke()
    tasks = None
    if row.array_job_id is not None:
        tasks = await run_in_threadpool(jobs.array_task_ids, ctx, row)
    return job_response(row, tasks)


async def _write(
    ctx: AppContext, state: Any, caller: Caller, form: JobForm, key: str | None
) -> JobRow:
    """`jobs.submit_async` on the pool where it can answer; `jobs.submit` otherwise."""
    pool: SubmitPool | None = getattr(state, "submit_pool", None)
    if pool is not None and pool.usable():
        row = None
        async with pool.connection() as db:
            try:
                row = await jobs.submit_async(ctx, caller, form, key, db)
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
    submit: Callable[..., JobRow] = jobs.submit
    return await run_in_threadpool(submit, ctx, caller, form, key)
