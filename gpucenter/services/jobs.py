"""Jobs from a user's point of view: submit, list, show, cancel, read logs."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from gpucenter.auth.permissions import Caller, can_cancel_job, can_submit, can_view_job
from gpucenter.domain.errors import Conflict, NotFound, PermissionDenied, ValidationError
from gpucenter.domain.jobs import GpuRequest, JobSpec, JobState, WaitReason
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.tables import JobRow, ProjectRow
from gpucenter.services.context import AppContext

MAX_LOG_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class SubmitRequest:
    """A submission as it arrives from the CLI or REST, before validation."""

    project: str
    command: str
    gpus_per_node: int
    nodes: int = 1
    gpu_type: str | None = None
    time_limit_s: int = 3600
    name: str = ""
    workdir: str | None = None
    env: Mapping[str, str] | None = None

    def fingerprint(self) -> str:
        body = json.dumps(
            {
                "project": self.project,
                "command": self.command,
                "gpus_per_node": self.gpus_per_node,
                "nodes": self.nodes,
                "gpu_type": self.gpu_type,
                "time_limit_s": self.time_limit_s,
                "name": self.name,
                "workdir": self.workdir,
                "env": dict(self.env or {}),
            },
            sort_keys=True,
        )
        return hashlib.sha256(body.encode()).hexdigest()


def _resolve_gpu_type(ctx: AppContext, requested: str | None) -> str:
    if requested:
        return requested.strip().lower()
    types = sorted(ctx.site.site.gpu_types)
    if len(types) == 1:
        return types[0]
    raise ValidationError(
        "gpu_type", f"this site has several GPU types ({', '.join(types)}); name one"
    )


def _validate(ctx: AppContext, req: SubmitRequest) -> JobSpec:
    gpu = GpuRequest(_resolve_gpu_type(ctx, req.gpu_type), req.gpus_per_node, req.nodes)
    ctx.site.site.check_request(gpu)
    if req.workdir is not None:
        if not os.path.isabs(req.workdir):
            raise ValidationError("workdir", "must be an absolute path")
        if not Path(req.workdir).is_dir():
            raise ValidationError("workdir", f"{req.workdir} is not an existing directory")
    default_name = req.command.strip().split()[0][:200] if req.command.strip() else ""
    return JobSpec(
        name=req.name or default_name,
        command=req.command,
        gpu=gpu,
        time_limit_s=req.time_limit_s,
        workdir=req.workdir,
        env=dict(req.env or {}),
    )


def submit(
    ctx: AppContext, caller: Caller, req: SubmitRequest, idempotency_key: str | None = None
) -> JobRow:
    """Validate fully, then write the job in one transaction: an error writes nothing."""
    spec = _validate(ctx, req)
    now = ctx.now()
    fingerprint = req.fingerprint()
    with ctx.sessions.begin() as s:
        if idempotency_key is not None:
            if not 1 <= len(idempotency_key) <= 200:
                raise ValidationError("Idempotency-Key", "must be 1-200 characters")
            previous = s.scalar(
                select(JobRow).where(
                    JobRow.user_id == caller.user_id, JobRow.idempotency_key == idempotency_key
                )
            )
            if previous is not None:
                if previous.request_hash != fingerprint:
                    raise Conflict("this Idempotency-Key was used for a different submission")
                return previous
        project = s.scalar(select(ProjectRow).where(ProjectRow.name == req.project))
        if project is None or not can_submit(caller, project.id):
            # Same answer whether the project is missing or not the caller's: no leak.
            raise ValidationError("project", f"unknown project {req.project!r} (or not yours)")
        allocation = repo.active_allocation(s, project.id, now)
        if allocation is None:
            raise ValidationError(
                "project", f"project {req.project!r} has no active allocation to charge"
            )
        site = repo.site_by_name(s, ctx.site.site.name)
        if site is None:
            raise Conflict("the site is not registered yet; run 'gpucenter db upgrade'")
        row = JobRow(
            project_id=project.id,
            allocation_id=allocation.id,
            user_id=caller.user_id,
            site_id=site.id,
            name=spec.name,
            command=spec.command,
            gpu_type=spec.gpu.gpu_type,
            gpus_per_node=spec.gpu.gpus_per_node,
            nodes=spec.gpu.nodes,
            time_limit_s=spec.time_limit_s,
            workdir=spec.workdir,
            env=dict(spec.env),
            state=JobState.PENDING.value,
            reason=WaitReason.NEW.value,
            reason_detail="submitted; waiting for the next scheduling pass",
            submitted_at=now,
            idempotency_key=idempotency_key,
            request_hash=fingerprint,
        )
        s.add(row)
        s.flush()
        return row


def get_visible(ctx: AppContext, caller: Caller, job_id: int) -> JobRow:
    with ctx.sessions.begin() as s:
        row = s.get(JobRow, job_id)
        if row is None or not can_view_job(caller, row.user_id, row.project_id):
            raise NotFound("job", job_id)
        return row


def list_visible(
    ctx: AppContext, caller: Caller, *, states: Sequence[JobState] = (), limit: int = 100
) -> Sequence[JobRow]:
    with ctx.sessions.begin() as s:
        stmt = select(JobRow).order_by(JobRow.id.desc()).limit(max(1, min(limit, 1000)))
        if not caller.is_admin:
            stmt = stmt.where(
                (JobRow.user_id == caller.user_id) | JobRow.project_id.in_(caller.project_ids)
            )
        if states:
            stmt = stmt.where(JobRow.state.in_([st.value for st in states]))
        return s.scalars(stmt).all()


def cancel(ctx: AppContext, caller: Caller, job_id: int) -> JobRow:
    """Cancel a pending job at once; ask the dispatcher to stop a running one."""
    with ctx.dispatch_lock, ctx.sessions.begin() as s:
        row = s.get(JobRow, job_id, with_for_update=True)
        if row is None or not can_view_job(caller, row.user_id, row.project_id):
            raise NotFound("job", job_id)
        if not can_cancel_job(caller, row.user_id, row.project_id):
            raise PermissionDenied("only the job's owner or an admin may cancel it")
        state = JobState(row.state)
        if state.is_terminal:
            raise Conflict(f"job {job_id} has already ended ({state})")
        if state is JobState.PENDING:
            row.state = JobState.CANCELLED.value
            row.ended_at = ctx.now()
            row.reason = ""
            row.reason_detail = f"cancelled by {caller.username} before it started"
        else:
            ctx.dispatcher.cancel(row.id)  # type: ignore[arg-type]
            row.reason_detail = f"cancel requested by {caller.username}"
        return row


def read_log(
    ctx: AppContext, caller: Caller, job_id: int, stream: str = "stdout", offset: int = 0
) -> tuple[bytes, int, bool]:
    """Return (chunk, next_offset, finished) of a job's stdout or stderr from `offset`."""
    if stream not in ("stdout", "stderr"):
        raise ValidationError("stream", "must be 'stdout' or 'stderr'")
    if offset < 0:
        raise ValidationError("offset", "must not be negative")
    row = get_visible(ctx, caller, job_id)
    path = row.stdout_path if stream == "stdout" else row.stderr_path
    finished = JobState(row.state).is_terminal
    if not path or not Path(path).exists():
        return b"", offset, finished
    with open(path, "rb") as fh:
        fh.seek(offset)
        chunk = fh.read(MAX_LOG_CHUNK)
    return chunk, offset + len(chunk), finished and len(chunk) < MAX_LOG_CHUNK
