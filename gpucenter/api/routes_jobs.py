"""Job routes: parse, call a service, render. Permission checks live in services and auth."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from gpucenter.api.schemas import JobIn, JobOut, JobPageOut, PendingOut
from gpucenter.auth.permissions import Permission
from gpucenter.domain.errors import Conflict, ValidationError
from gpucenter.domain.jobs import JobState
from gpucenter.domain.messages import msg
from gpucenter.http.deps import Ctx, CurrentCaller
from gpucenter.http.permissions import requires
from gpucenter.services.jobs import manage as jobs
from gpucenter.services.jobs.events import job_events
from gpucenter.services.jobs.submission import JobForm
from gpucenter.services.jobs.views import AnyJob, job_view
from gpucenter.services.scheduling import pending

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])


def _poke(request: Request) -> None:
    loop = getattr(request.app.state, "loop", None)
    if loop is not None:
        loop.poke()


def _json(model: BaseModel, status_code: int = 200) -> Response:
    """The model, serialised once: returning a Response skips FastAPI's second validation
    of a model built from rows we wrote or read ourselves (the hot routes' largest cost
    after the database). `response_model` still documents the shape."""
    return Response(model.model_dump_json(), status_code, media_type="application/json")


@router.post(
    "", status_code=201, response_model=JobOut, dependencies=[requires(Permission.JOBS_SUBMIT)]
)
def submit_job(
    body: JobIn,
    ctx: Ctx,
    caller: CurrentCaller,
    request: Request,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> Response:
    """Submit a job. A retry with the same Idempotency-Key returns the job made first.

    In a server this is answered by `fast_submit.FastSubmit` before routing (same checks,
    same answers); this route answers when that is switched off."""
    row = jobs.submit(ctx, caller, JobForm(**body.model_dump()), idempotency_key)
    _poke(request)
    tasks = jobs.array_task_ids(ctx, row) if row.array_job_id is not None else None
    return job_response(row, tasks)


def job_response(job: AnyJob, tasks: list[int] | None) -> Response:
    """201 with the job made (or repeated): this route's answer and the fast path's."""
    return _json(JobOut.of(job_view(job), tasks), 201)


@router.get("", response_model=JobPageOut, dependencies=[requires(Permission.JOBS_READ)])
def list_jobs(
    ctx: Ctx,
    caller: CurrentCaller,
    state: Annotated[list[str] | None, Query()] = None,
    project: Annotated[str | None, Query(max_length=100)] = None,
    array_job_id: Annotated[int | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """Newest first; follow `next_cursor` for older jobs."""
    try:
        states = [JobState(s.upper()) for s in state or []]
    except ValueError:
        allowed = ", ".join(s.value for s in JobState)
        raise ValidationError.about("state", msg("error.unknown_state", allowed=allowed)) from None
    page = jobs.list_page(
        ctx,
        caller,
        states=states,
        project=project,
        array_job_id=array_job_id,
        limit=limit,
        cursor=cursor,
    )
    return _json(JobPageOut(items=[JobOut.of(r) for r in page.items], next_cursor=page.next_cursor))


@router.get("/{job_id}", response_model=JobOut, dependencies=[requires(Permission.JOBS_READ)])
def show_job(job_id: int, ctx: Ctx, caller: CurrentCaller) -> JobOut:
    row = jobs.get_visible(ctx, caller, job_id)
    tasks = jobs.array_task_ids(ctx, row) if row.array_job_id is not None else None
    return JobOut.of(row, tasks)


@router.get(
    "/{job_id}/pending", response_model=PendingOut, dependencies=[requires(Permission.JOBS_READ)]
)
def why_pending(job_id: int, ctx: Ctx, caller: CurrentCaller) -> PendingOut:
    """Why the job waits (one sentence), its place among pending jobs of its GPU type, the
    expected start, and what would start it sooner. 409 once the job is not pending."""
    view = pending.explain_pending(ctx, caller, job_id)
    if view is None:
        raise Conflict.of(msg("error.not_pending", job=str(job_id)))
    return PendingOut.of(view)


@router.post(
    "/{job_id}/cancel", response_model=JobOut, dependencies=[requires(Permission.JOBS_CANCEL)]
)
def cancel_job(job_id: int, ctx: Ctx, caller: CurrentCaller, request: Request) -> JobOut:
    row = jobs.cancel(ctx, caller, job_id)
    _poke(request)
    return JobOut.of(row)


@router.get("/{job_id}/logs", dependencies=[requires(Permission.JOBS_READ)])
def job_logs(
    job_id: int,
    ctx: Ctx,
    caller: CurrentCaller,
    stream: Annotated[str, Query(pattern="^(stdout|stderr)$")] = "stdout",
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    """A chunk of the log from `offset`; headers say where to continue and whether it ended."""
    chunk, next_offset, finished = jobs.read_log(ctx, caller, job_id, stream, offset)
    return Response(
        content=chunk,
        media_type="text/plain; charset=utf-8",
        headers={
            "X-Next-Offset": str(next_offset),
            "X-Job-Finished": "true" if finished else "false",
        },
    )


@router.get("/{job_id}/events", dependencies=[requires(Permission.JOBS_READ)])
def job_event_stream(
    job_id: int,
    ctx: Ctx,
    caller: CurrentCaller,
    stream: Annotated[str, Query(pattern="^(stdout|stderr)$")] = "stdout",
    offset: Annotated[int, Query(ge=0)] = 0,
) -> StreamingResponse:
    """Server-sent events: `state` on every state change, `log` with output as it is
    written, and `end` once the job has ended and its log has been sent in full."""
    jobs.get_visible(ctx, caller, job_id)  # 404 before the stream starts
    return StreamingResponse(
        job_events(ctx, caller, job_id, stream, offset),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
