"""Jobs from a user's point of view: submit, list, show, cancel, read logs."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Select, TextClause, bindparam, select, text, update
from sqlalchemy.orm import Session

from gpucenter.auth.permissions import Caller, can_cancel_job, can_view_job
from gpucenter.domain.errors import (
    Conflict,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    ValidationError,
)
from gpucenter.domain.jobs import JobState, WaitReason
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.tables import JobRow, ProjectRow
from gpucenter.services.context import AppContext
from gpucenter.services.jobs.submission import (
    JobForm,
    NeedsDatabase,
    ResolvedJob,
    resolve,
    resolve_offline,
)

MAX_LOG_CHUNK = 1024 * 1024


SubmitRequest = JobForm


def submit(
    ctx: AppContext, caller: Caller, form: JobForm, idempotency_key: str | None = None
) -> JobRow:
    """Validate fully, then write the job (or every task of an array) in one transaction.

    Returns the first job; an error writes nothing. A repeated Idempotency-Key with the same
    body returns the job made the first time; with a different body it is a Conflict.

    The common case costs two statements: one query answers every check (project,
    membership, allocation, site, token not revoked) and one INSERT ... ON CONFLICT DO
    NOTHING writes the job, so that a retry racing its original never makes a second job
    and never fails on the unique key; only a retry reads the job it repeats.
    `submit_async` is the same common case on an async connection (the REST fast path).
    """
    now = ctx.now()
    fingerprint = form.fingerprint()
    _check_key(idempotency_key)
    try:
        return _submit(ctx, caller, form, idempotency_key, fingerprint, now)
    except (ValidationError, Conflict):
        if idempotency_key is None:
            raise
        # A retry of a job made earlier answers with that job even where the same request
        # would not be accepted now (the allocation ran out, the workdir went away).
        with ctx.sessions.begin() as s:
            previous = s.scalar(
                select(JobRow).where(
                    JobRow.user_id == caller.user_id, JobRow.idempotency_key == idempotency_key
                )
            )
        if previous is None or previous.request_hash != fingerprint:
            raise
        return previous


def _check_key(idempotency_key: str | None) -> None:
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= 200:
        raise ValidationError("Idempotency-Key", "must be 1-200 characters")


def _submit(
    ctx: AppContext,
    caller: Caller,
    form: JobForm,
    idempotency_key: str | None,
    fingerprint: str,
    now: datetime,
) -> JobRow:
    with ctx.sessions.begin() as s:
        resolved = resolve(ctx, s, caller, form)
        spec = resolved.spec
        target = repo.submit_target(
            s,
            resolved.project,
            caller.user_id,
            caller.token_id,
            ctx.site.site.name,
            spec.gpu.gpu_type,
            now,
        )
        ids = _charge_target(caller, resolved, target)
        base = _job_values(caller, resolved, ids, fingerprint, now)
        first = _insert_first(s, base, spec.name, dict(spec.env), resolved, idempotency_key)
        if first is None:
            assert idempotency_key is not None
            return _repeat(s, caller, idempotency_key, fingerprint)
        if not resolved.array_indices:
            return first
        rows = [first]
        for index in resolved.array_indices[1:]:
            row = JobRow(**_task(base, spec.name, dict(spec.env), index), array_job_id=first.id)
            s.add(row)
            rows.append(row)
        s.execute(update(JobRow).where(JobRow.id == first.id).values(array_job_id=first.id))
        first.array_job_id = first.id
        s.flush()
        return first


def _charge_target(
    caller: Caller, resolved: ResolvedJob, target: Sequence[Any] | None
) -> tuple[int, int, int]:
    """(project, allocation, site) ids from the answer of the submit-target query, or the
    error that refuses the submission."""
    if target is not None and not target[4]:
        raise Unauthenticated("invalid or revoked token")
    if target is None or not (caller.is_admin or target[3]):
        # Same answer whether the project is missing or not the caller's: no leak.
        raise ValidationError("project", f"unknown project {resolved.project!r} (or not yours)")
    project_id, allocation_id, site_id = target[0], target[1], target[2]
    if allocation_id is None:
        raise ValidationError(
            "project", f"project {resolved.project!r} has no active allocation to charge"
        )
    if site_id is None:
        raise Conflict("the site is not registered yet; start the server once")
    return project_id, allocation_id, site_id


def _job_values(
    caller: Caller,
    resolved: ResolvedJob,
    ids: tuple[int, int, int],
    fingerprint: str,
    now: datetime,
) -> dict[str, Any]:
    """The column values every job (or task) of one submission shares."""
    spec = resolved.spec
    return {
        "project_id": ids[0],
        "allocation_id": ids[1],
        "user_id": caller.user_id,
        "site_id": ids[2],
        "command": spec.command,
        "gpu_type": spec.gpu.gpu_type,
        "gpus_per_node": spec.gpu.gpus_per_node,
        "nodes": spec.gpu.nodes,
        "time_limit_s": spec.time_limit_s,
        "workdir": spec.workdir,
        "state": JobState.PENDING.value,
        "reason": WaitReason.NEW.value,
        "reason_detail": "submitted; waiting for the next scheduling pass",
        "submitted_at": now,
        "request_hash": fingerprint,
        "qos": resolved.qos,
        "image": resolved.image,
        "template": resolved.template,
        "after_ok": list(resolved.after_ok),
        "runs": 0,
        "borrowed": False,
    }


class SubmitDatabase(Protocol):
    """The two statements of a submission on an async connection (each may commit on its
    own: the first only reads)."""

    async def target(self, params: dict[str, Any], with_token: bool) -> Sequence[Any] | None:
        """The row of `submit_target_statement(with_token)` for `params`, or None."""

    async def insert(self, values: dict[str, Any], on_conflict: bool) -> int | None:
        """`insert_statement(on_conflict)` with `values`: the new id, None on a conflict."""


def submit_target_statement(with_token: bool) -> Select[Any]:
    """The one query behind `repositories.submit_target`, for async executors."""
    return repo.submit_target_query(with_token)


def insert_statement(on_conflict: bool) -> TextClause:
    """The INSERT ... [ON CONFLICT DO NOTHING] RETURNING id that writes a job."""
    return _INSERT[on_conflict]


async def submit_async(
    ctx: AppContext,
    caller: Caller,
    form: JobForm,
    idempotency_key: str | None,
    db: SubmitDatabase,
) -> JobRow | None:
    """`submit`'s common case (one job, no template, no dependencies, first time) on an
    async connection: same validation, same two statements, same answers and errors.

    Returns None where `submit` must answer instead, having written nothing: an array, a
    template or dependencies to read, a repeated Idempotency-Key, or an error on a request
    with a key (which may be the retry of a job accepted earlier)."""
    now = ctx.now()
    fingerprint = form.fingerprint()
    _check_key(idempotency_key)
    try:
        resolved = resolve_offline(ctx, form)
        if resolved.array_indices:
            return None
        spec = resolved.spec
        params = repo.submit_target_params(
            resolved.project,
            caller.user_id,
            caller.token_id,
            ctx.site.site.name,
            spec.gpu.gpu_type,
            now,
        )
        target = await db.target(params, caller.token_id is not None)
        ids = _charge_target(caller, resolved, target)
        base = _job_values(caller, resolved, ids, fingerprint, now)
        values = _task(base, spec.name, dict(spec.env), None) | {"idempotency_key": idempotency_key}
        new_id = await db.insert(values, idempotency_key is not None)
    except NeedsDatabase:
        return None
    except (ValidationError, Conflict):
        if idempotency_key is None:
            raise
        return None
    if new_id is None:
        return None  # the key is taken: `submit` reads the job it repeats
    return _written(new_id, values)


def _task(
    base: dict[str, Any], name: str, env: dict[str, str], index: int | None
) -> dict[str, Any]:
    """The column values of one job (or one task of an array)."""
    if index is not None:
        env = {**env, "GPUCENTER_ARRAY_TASK_ID": str(index)}
        name = f"{name}[{index}]"
    return {**base, "name": name[:200], "env": env, "array_index": index}


INSERT_COLUMNS = (
    "project_id",
    "allocation_id",
    "user_id",
    "site_id",
    "name",
    "command",
    "gpu_type",
    "gpus_per_node",
    "nodes",
    "time_limit_s",
    "workdir",
    "env",
    "state",
    "reason",
    "reason_detail",
    "submitted_at",
    "idempotency_key",
    "request_hash",
    "qos",
    "image",
    "template",
    "array_index",
    "after_ok",
    "runs",
    "borrowed",
)


def _insert_statement(on_conflict: bool) -> TextClause:
    """INSERT ... [ON CONFLICT DO NOTHING] RETURNING id as text, built once.

    SQLAlchemy does not cache the compiled form of an ON CONFLICT insert (its cache key is
    None), so each submission would compile it again; a text statement with typed
    parameters is compiled once, and PostgreSQL prepares it once. The same SQL runs on
    PostgreSQL and SQLite (3.35+)."""
    jobs = JobRow.__table__
    conflict = " ON CONFLICT (user_id, idempotency_key) DO NOTHING" if on_conflict else ""
    sql = (
        f"INSERT INTO jobs ({', '.join(INSERT_COLUMNS)}) "
        f"VALUES ({', '.join(':' + c for c in INSERT_COLUMNS)}){conflict} RETURNING id"
    )
    return text(sql).bindparams(*(bindparam(c, type_=jobs.c[c].type) for c in INSERT_COLUMNS))


_INSERT = {False: _insert_statement(False), True: _insert_statement(True)}


def _insert_first(
    s: Session,
    base: dict[str, Any],
    name: str,
    env: dict[str, str],
    resolved: ResolvedJob,
    idempotency_key: str | None,
) -> JobRow | None:
    """Insert the first (or only) job; None if the Idempotency-Key is already taken."""
    index = resolved.array_indices[0] if resolved.array_indices else None
    values = _task(base, name, env, index) | {"idempotency_key": idempotency_key}
    new_id = s.execute(_INSERT[idempotency_key is not None], values).scalar()
    if new_id is None:
        return None
    return _written(new_id, values)


def _written(new_id: int, values: dict[str, Any]) -> JobRow:
    """A detached copy of what was written: the response needs no second read."""
    return JobRow(id=new_id, priority=None, priority_factors=None, **values)


def _repeat(s: Session, caller: Caller, key: str, fingerprint: str) -> JobRow:
    previous = s.scalar(
        select(JobRow).where(JobRow.user_id == caller.user_id, JobRow.idempotency_key == key)
    )
    assert previous is not None  # the conflicting row is committed: ON CONFLICT waited for it
    if previous.request_hash != fingerprint:
        raise Conflict("this Idempotency-Key was used for a different submission")
    return previous


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
    get higher ids and so never shift the later pages (no duplicates, no gaps).

    With a project named, the project is looked up first so that the page is one range
    scan of the (project_id, id) or (project_id, state, id) index: a member sees the whole
    project, anyone else only the jobs they submitted to it. Without one, the visibility
    test is (own jobs or jobs of the caller's projects)."""
    limit = max(1, min(limit, 500))
    with ctx.sessions.begin() as s:
        stmt = select(JobRow).order_by(JobRow.id.desc()).limit(limit + 1)
        if project is not None:
            project_id = s.scalar(select(ProjectRow.id).where(ProjectRow.name == project))
            if project_id is None:
                return JobPage([], None)
            stmt = stmt.where(JobRow.project_id == project_id)
            if not (caller.is_admin or project_id in caller.project_ids):
                stmt = stmt.where(JobRow.user_id == caller.user_id)
        elif not caller.is_admin:
            stmt = stmt.where(
                (JobRow.user_id == caller.user_id) | JobRow.project_id.in_(caller.project_ids)
            )
        if len(states) == 1:
            stmt = stmt.where(JobRow.state == states[0].value)
        elif states:
            stmt = stmt.where(JobRow.state.in_([st.value for st in states]))
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
            from gpucenter.services.identity import audit

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
