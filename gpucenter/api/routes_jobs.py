"""Job routes: parse, call a service, render. Permission checks live in services and auth."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response

from gpucenter.api.deps import Ctx, CurrentCaller
from gpucenter.api.schemas import JobIn, JobOut
from gpucenter.domain.errors import ValidationError
from gpucenter.domain.jobs import JobState
from gpucenter.services import jobs

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])


@router.post("", status_code=201, response_model=JobOut)
def submit_job(
    body: JobIn,
    ctx: Ctx,
    caller: CurrentCaller,
    request: Request,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> JobOut:
    row = jobs.submit(
        ctx,
        caller,
        jobs.SubmitRequest(
            project=body.project,
            command=body.command,
            gpus_per_node=body.gpus_per_node,
            nodes=body.nodes,
            gpu_type=body.gpu_type,
            time_limit_s=body.time_limit_s,
            name=body.name,
            workdir=body.workdir,
            env=body.env,
        ),
        idempotency_key=idempotency_key,
    )
    loop = getattr(request.app.state, "loop", None)
    if loop is not None:
        loop.poke()
    return JobOut.of(row)


@router.get("", response_model=list[JobOut])
def list_jobs(
    ctx: Ctx,
    caller: CurrentCaller,
    state: Annotated[list[str] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[JobOut]:
    try:
        states = [JobState(s.upper()) for s in state or []]
    except ValueError:
        allowed = ", ".join(s.value for s in JobState)
        raise ValidationError("state", f"unknown state; use one of {allowed}") from None
    return [JobOut.of(r) for r in jobs.list_visible(ctx, caller, states=states, limit=limit)]


@router.get("/{job_id}", response_model=JobOut)
def show_job(job_id: int, ctx: Ctx, caller: CurrentCaller) -> JobOut:
    return JobOut.of(jobs.get_visible(ctx, caller, job_id))


@router.post("/{job_id}/cancel", response_model=JobOut)
def cancel_job(job_id: int, ctx: Ctx, caller: CurrentCaller, request: Request) -> JobOut:
    row = jobs.cancel(ctx, caller, job_id)
    loop = getattr(request.app.state, "loop", None)
    if loop is not None:
        loop.poke()
    return JobOut.of(row)


@router.get("/{job_id}/logs")
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
