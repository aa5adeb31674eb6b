"""Jobs from a user's point of view: submit, list, show, cancel, read logs."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from gpucenter.auth.permissions import Caller, can_cancel_job, can_submit, can_view_job
from gpucenter.domain.errors import Conflict, NotFound, PermissionDenied, ValidationError
from gpucenter.domain.jobs import JobState, WaitReason
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.tables import JobRow, ProjectRow
from gpucenter.services.context import AppContext
from gpucenter.services.submission import JobForm, resolve

MAX_LOG_CHUNK = 1024 * 1024


SubmitRequest = JobForm


def submit(
    ctx: AppContext, caller: Caller, form: JobForm, idempotency_key: str | None = None
) -> JobRow:
    """Validate fully, then write the job (or every task of an array) in one transaction.

    Returns the first job; an error writes nothing. A repeated Idempotency-Key with the same
    body returns the job made the first time; with a different body it is a Conflict.
    """
    now = ctx.now()
    fingerprint = form.fingerprint()
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= 200:
        raise ValidationError("Idempotency-Key", "must be 1-200 characters")
    with ctx.sessions.begin() as s:
        if idempotency_key is not None:
            previous = s.scalar(
                select(JobRow).where(
                    JobRow.user_id == caller.user_id, JobRow.idempotency_key == idempotency_key
                )
            )
            if previous is not None:
                if previous.request_hash != fingerprint:
                    raise Conflict("this Idempotency-Key was used for a different submission")
                return previous
        resolved = resolve(ctx, s, caller, form)
        project = s.scalar(select(ProjectRow).where(ProjectRow.name == resolved.project))
        if project is None or not can_submit(caller, project.id):
            # Same answer whether the project is missing or not the caller's: no leak.
            raise ValidationError("project", f"unknown project {resolved.project!r} (or not yours)")
        spec = resolved.spec
        allocation = repo.active_allocation(s, project.id, now, spec.gpu.gpu_type)
        if allocation is None:
            raise ValidationError(
                "project", f"project {resolved.project!r} has no active allocation to charge"
            )
        site = repo.site_by_name(s, ctx.site.site.name)
        if site is None:
            raise Conflict("the site is not registered yet; start the server once")
        tasks: list[int | None] = list(resolved.array_indices) or [None]
        rows: list[JobRow] = []
        for position, index in enumerate(tasks):
            env = dict(spec.env)
            name = spec.name
            if index is not None:
                env["GPUCENTER_ARRAY_TASK_ID"] = str(index)
                name = f"{spec.name}[{index}]"
            row = JobRow(
                project_id=project.id,
                allocation_id=allocation.id,
                user_id=caller.user_id,
                site_id=site.id,
                name=name[:200],
                command=spec.command,
                gpu_type=spec.gpu.gpu_type,
                gpus_per_node=spec.gpu.gpus_per_node,
                nodes=spec.gpu.nodes,
                time_limit_s=spec.time_limit_s,
                workdir=spec.workdir,
                env=env,
                state=JobState.PENDING.value,
                reason=WaitReason.NEW.value,
                reason_detail="submitted; waiting for the next scheduling pass",
                submitted_at=now,
                idempotency_key=idempotency_key if position == 0 else None,
                request_hash=fingerprint,
                qos=resolved.qos,
                image=resolved.image,
                template=resolved.template,
                array_index=index,
                after_ok=list(resolved.after_ok),
            )
            s.add(row)
            s.flush()
            rows.append(row)
        if resolved.array_indices:
            for row in rows:
                row.array_job_id = rows[0].id
            s.flush()
        return rows[0]


def array_task_ids(ctx: AppContext, leader: JobRow) -> list[int]:
    if leader.array_job_id is None:
        return [leader.id]
    with ctx.sessions.begin() as s:
        return list(
            s.scalars(
                select(JobRow.id)
                .where(JobRow.array_job_id == leader.array_job_id)
                .order_by(JobRow.id)
            )
        )


def get_visible(ctx: AppContext, caller: Caller, job_id: int) -> JobRow:
    with ctx.sessions.begin() as s:
        row = s.get(JobRow, job_id)
        if row is None or not can_view_job(caller, row.user_id, row.project_id):
            raise NotFound("job", job_id)
        return row


@dataclass(frozen=True, slots=True)
class JobPage:
    items: list[JobRow]
    next_cursor: str | None


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"job:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        kind, _, value = base64.urlsafe_b64decode(padded.encode()).decode().partition(":")
        if kind != "job":
            raise ValueError
        return int(value)
    except (ValueError, UnicodeDecodeError):
        raise ValidationError(
            "cursor", "not a cursor this API gave out; start again without one"
        ) from None


def list_page(
    ctx: AppContext,
    caller: Caller,
    *,
    states: Sequence[JobState] = (),
    project: str | None = None,
    array_job_id: int | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> JobPage:
    """Newest first, keyset-paginated on the id: jobs submitted while a client pages through
    get higher ids and so never shift the later pages (no duplicates, no gaps)."""
    limit = max(1, min(limit, 500))
    with ctx.sessions.begin() as s:
        stmt = select(JobRow).order_by(JobRow.id.desc()).limit(limit + 1)
        if not caller.is_admin:
            stmt = stmt.where(
                (JobRow.user_id == caller.user_id) | JobRow.project_id.in_(caller.project_ids)
            )
        if states:
            stmt = stmt.where(JobRow.state.in_([st.value for st in states]))
        if project is not None:
            stmt = stmt.join(ProjectRow, ProjectRow.id == JobRow.project_id).where(
                ProjectRow.name == project
            )
        if array_job_id is not None:
            stmt = stmt.where(JobRow.array_job_id == array_job_id)
        if cursor is not None:
            stmt = stmt.where(JobRow.id < decode_cursor(cursor))
        rows = list(s.scalars(stmt).all())
    more = len(rows) > limit
    rows = rows[:limit]
    return JobPage(rows, encode_cursor(rows[-1].id) if more and rows else None)


def list_visible(
    ctx: AppContext, caller: Caller, *, states: Sequence[JobState] = (), limit: int = 100
) -> Sequence[JobRow]:
    return list_page(ctx, caller, states=states, limit=limit).items


def cancel(ctx: AppContext, caller: Caller, job_id: int) -> JobRow:
    """Cancel a pending job at once; a running one is stopped by the scheduler leader.

    The request is recorded in the database rather than sent to this process's dispatcher:
    with several servers, the one answering the request may not be the one watching the job.
    """
    with ctx.sessions.begin() as s:
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
        elif row.cancel_requested_at is None:
            row.cancel_requested_at = ctx.now()
            row.reason_detail = f"cancel requested by {caller.username}"
        if caller.user_id != row.user_id:
            # Someone else (an admin) stopped this user's work: that goes on the record.
            from gpucenter.services import audit

            audit.record(
                s,
                "job.cancel_by_other",
                actor_id=caller.user_id,
                actor=caller.username,
                at=ctx.now(),
                target_type="job",
                target_id=row.id,
                details={"owner_id": row.user_id, "project_id": row.project_id, "state": state},
            )
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
