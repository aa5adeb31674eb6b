"""Job submission (POST /api/v1/jobs) answered before FastAPI's routing: the production path.

Why: a submission through FastAPI cost 7-9 ms of CPU on the 2-core reference machine
(bench/RESULTS.md, issue 11): two thread hops, routing, middleware and dependency solving,
the ORM session. This handler does the HTTP part on the event loop: the bearer token from
the token cache, the JOBS_SUBMIT check, `JobIn` validation; then `fast_path.submit`, which
runs the submission pipeline (`services/jobs/pipeline.py`, the same ordered checks the
FastAPI route runs through `jobs.submit`) on an async PostgreSQL connection, or hands the
submission to `jobs.submit` in a worker thread. The database work is the service's: this
module imports no SQLAlchemy and no persistence. Everything else goes where it went before:

- other methods and paths, and bodies FastAPI would answer differently (not JSON, not a
  JSON object, unreadable) pass to the FastAPI app untouched (a body already read is
  replayed);
- SQLite, an array, a repeated Idempotency-Key, a refusal of a request with a key, or a
  database error that cannot have written the job: `jobs.submit` in a worker thread,
  exactly as the FastAPI route calls it (decided in `services/jobs/fast_path.py`).

Errors are rendered by the app's own table (`errors.response_for`), so status, title and
body match the FastAPI route's; the handler sits inside the request-id and security
middleware, so headers match too. The FastAPI route stays: it documents the endpoint,
declares the permission, and answers whenever this handler is off (`submit_fast_path`).
"""

from __future__ import annotations

import json
from typing import Any

import pydantic
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from gpucenter.api.routes_jobs import job_response
from gpucenter.api.schemas import JobIn
from gpucenter.auth.permissions import Permission
from gpucenter.domain.errors import DomainError
from gpucenter.http import errors
from gpucenter.http.deps import bearer_token, caller_for_token
from gpucenter.http.permissions import check_permission
from gpucenter.http.security import ASGIApp, Message, Receive, Scope, Send
from gpucenter.services.context import AppContext
from gpucenter.services.jobs import fast_path
from gpucenter.services.jobs import manage as jobs
from gpucenter.services.jobs.fast_path import SubmitPool
from gpucenter.services.jobs.submission import JobForm

__all__ = ["PATH", "FastSubmit", "SubmitPool"]

PATH = "/api/v1/jobs"


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
    pool: SubmitPool | None = getattr(state, "submit_pool", None)
    row = await fast_path.submit(ctx, pool, caller, form, key)
    loop = getattr(state, "loop", None)
    if loop is not None:
        loop.poke()
    tasks = None
    if row.array_job_id is not None:
        tasks = await run_in_threadpool(jobs.array_task_ids, ctx, row)
    return job_response(row, tasks)
