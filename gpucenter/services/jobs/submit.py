"""Submitting a job: the pipeline's checks, then the write, on a session or on an async
connection.

`submit` is the general path (every caller: REST route, web form, CLI, SDK; SQLite and
PostgreSQL). `submit_async` is the fast path's common case on an async PostgreSQL
connection (`fast_path.py`). Both run `pipeline.CHECKS`, the one ordered list of checks, so
they accept and refuse alike by construction; they differ only in what they write:
`submit_async` writes one job the first time its key is seen (or reads the job a repeated
key names), and hands everything else (an array, a refusal that a key may turn into a
replay) back to `submit` having written nothing.

The common case costs two statements: one query answers the project, membership,
allocation, site and token checks (`repositories.submit_target`) and one INSERT ... ON
CONFLICT DO NOTHING writes the job, so that a retry racing its original never makes a
second job and never fails on the unique key; only a retry reads the job it repeats.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy import TextClause, bindparam, select, text, update
from sqlalchemy.orm import Session

from gpucenter.auth.permissions import Caller
from gpucenter.domain.errors import Conflict, ValidationError
from gpucenter.domain.jobs import JobState, WaitReason
from gpucenter.domain.messages import msg
from gpucenter.persistence.sealed_env import ARRAY_TASK_VAR, seal_env
from gpucenter.persistence.tables import JobRow
from gpucenter.services.context import AppContext
from gpucenter.services.jobs.pipeline import (
    Query,
    Submission,
    env_keys,
    run_checks,
    run_checks_async,
    session_reader,
)
from gpucenter.services.jobs.submission import JobForm

SubmitRequest = JobForm


def submit(
    ctx: AppContext, caller: Caller, form: JobForm, idempotency_key: str | None = None
) -> JobRow:
    """Run every check, then write the job (or every task of an array) in one transaction.

    Returns the first job; an error writes nothing. A repeated Idempotency-Key with the same
    body returns the job made the first time; with a different body it is a Conflict.
    """
    sub = Submission.start(ctx, caller, form, idempotency_key)
    try:
        with ctx.sessions.begin() as s:
            run_checks(ctx, sub, session_reader(s))
            return _write(s, sub, _sealed(ctx, sub))
    except (ValidationError, Conflict):
        if not sub.replayable:
            raise
        # A retry of a job made earlier answers with that job even where the same request
        # would not be accepted now (the allocation ran out, the workdir went away).
        with ctx.sessions.begin() as s:
            previous = s.scalar(
                select(JobRow).where(
                    JobRow.user_id == caller.user_id, JobRow.idempotency_key == idempotency_key
                )
            )
        if previous is None or previous.request_hash != sub.fingerprint:
            raise
        return previous


class SubmitConnection(Protocol):
    """An async connection for `submit_async`: the pipeline's reads and the one insert
    (each may commit on its own: the reads write nothing)."""

    async def rows(self, query: Query[Any]) -> list[Sequence[Any]]:
        """The rows of `query` (only the first where `query.first`)."""

    async def insert(self, values: dict[str, Any], on_conflict: bool) -> int | None:
        """`insert_statement(on_conflict)` with `values`: the new id, None on a conflict."""


async def submit_async(
    ctx: AppContext,
    caller: Caller,
    form: JobForm,
    idempotency_key: str | None,
    db: SubmitConnection,
) -> JobRow | None:
    """`submit` on an async connection: the same checks, in the same order, with the same
    errors; then one job written in one statement.

    Returns None where `submit` must answer instead, having written nothing: an array (its
    rows go in one transaction) or a refusal of a request with a key (which may be the
    retry of a job accepted earlier). A repeated Idempotency-Key is answered here: the
    insert found the key taken (ON CONFLICT waited for the original to commit), so one
    more read returns the job it repeats. Why not hand it to `submit`: a client's retries
    come in bursts, and each would run every check again in a worker thread (7-9 ms of
    CPU under the GIL, issue 11's figures), stalling the event loop's other requests."""
    sub = Submission.start(ctx, caller, form, idempotency_key)
    try:
        await run_checks_async(ctx, sub, db.rows)
        if sub.array_indices:
            return None
        values = _first_values(sub, _sealed(ctx, sub))
        new_id = await db.insert(values, idempotency_key is not None)
    except (ValidationError, Conflict):
        if not sub.replayable:
            raise
        return None
    if new_id is None:
        assert idempotency_key is not None  # only an insert with a key can conflict
        found = await db.rows(_repeat_query(caller.user_id, idempotency_key))
        return _repeated(_row_from(found[0]) if found else None, sub.fingerprint)
    return _written(new_id, values)


_JOB_COLUMNS = tuple(JobRow.__mapper__.column_attrs)
_REPEAT = select(*(attr.columns[0] for attr in _JOB_COLUMNS)).where(
    JobRow.user_id == bindparam("user_id"), JobRow.idempotency_key == bindparam("key")
)


def _repeat_query(user_id: int, key: str) -> Query[Any]:
    """The job one user's key was first used for, as plain columns (fast path)."""
    return Query(_REPEAT, {"user_id": user_id, "key": key}, lambda rows: rows)


def _row_from(values: Sequence[Any]) -> JobRow:
    """A detached job from the columns of `_REPEAT`, in their order."""
    return JobRow(**{attr.key: v for attr, v in zip(_JOB_COLUMNS, values, strict=True)})


def _repeated(previous: JobRow | None, fingerprint: str) -> JobRow:
    """The job a repeated key names, if the request is the same; else a Conflict."""
    assert previous is not None  # the conflicting row is committed: ON CONFLICT waited for it
    if previous.request_hash != fingerprint:
        raise Conflict.of(msg("error.key_reused"))
    return previous


def _sealed(ctx: AppContext, sub: Submission) -> dict[str, Any]:
    """The job's env as stored: its values sealed (`sealed_env`), once per submission
    (every task of an array shares the one token)."""
    assert sub.spec is not None
    return seal_env(env_keys(ctx), sub.caller.user_id, sub.spec.env)


def _write(s: Session, sub: Submission, env: dict[str, Any]) -> JobRow:
    """The first (or only) job; then the other tasks of an array."""
    values = _first_values(sub, env)
    new_id = s.execute(_INSERT[sub.key is not None], values).scalar()
    if new_id is None:
        assert sub.key is not None
        return _repeat(s, sub.caller, sub.key, sub.fingerprint)
    first = _written(new_id, values)
    if not sub.array_indices:
        return first
    base = _job_values(sub)
    assert sub.spec is not None
    for index in sub.array_indices[1:]:
        row = JobRow(**_task(base, sub.spec.name, env, index), array_job_id=new_id)
        s.add(row)
    s.execute(update(JobRow).where(JobRow.id == new_id).values(array_job_id=new_id))
    first.array_job_id = new_id
    s.flush()
    return first


def _job_values(sub: Submission) -> dict[str, Any]:
    """The column values every job (or task) of one submission shares."""
    spec, target = sub.spec, sub.target
    assert spec is not None and target is not None
    return {
        "project_id": target.project_id,
        "allocation_id": target.allocation_id,
        "user_id": sub.caller.user_id,
        "site_id": target.site_id,
        "command": spec.command,
        "gpu_type": spec.gpu.gpu_type,
        "gpus_per_node": spec.gpu.gpus_per_node,
        "nodes": spec.gpu.nodes,
        "time_limit_s": spec.time_limit_s,
        "workdir": spec.workdir,
        "state": JobState.PENDING.value,
        "reason": WaitReason.NEW.value,
        "reason_detail": "submitted; waiting for the next scheduling pass",
        "submitted_at": sub.now,
        "request_hash": sub.fingerprint,
        "qos": sub.qos,
        "image": sub.image,
        "template": sub.form.template,
        "after_ok": list(sub.after_ok),
        "runs": 0,
        "borrowed": False,
    }


def _first_values(sub: Submission, env: dict[str, Any]) -> dict[str, Any]:
    """The column values of the first (or only) job, its Idempotency-Key included; `env`
    is the stored (sealed) env."""
    assert sub.spec is not None
    index = sub.array_indices[0] if sub.array_indices else None
    values = _task(_job_values(sub), sub.spec.name, env, index)
    return values | {"idempotency_key": sub.key}


def _task(
    base: dict[str, Any], name: str, env: dict[str, Any], index: int | None
) -> dict[str, Any]:
    """The column values of one job (or one task of an array); the task's index is the one
    clear entry of its stored env."""
    if index is not None:
        env = {**env, ARRAY_TASK_VAR: str(index)}
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


def insert_statement(on_conflict: bool) -> TextClause:
    """The INSERT ... [ON CONFLICT DO NOTHING] RETURNING id that writes a job."""
    return _INSERT[on_conflict]


def _written(new_id: int, values: dict[str, Any]) -> JobRow:
    """A detached copy of what was written: the response needs no second read."""
    return JobRow(id=new_id, priority=None, priority_factors=None, **values)


def _repeat(s: Session, caller: Caller, key: str, fingerprint: str) -> JobRow:
    previous = s.scalar(
        select(JobRow).where(JobRow.user_id == caller.user_id, JobRow.idempotency_key == key)
    )
    return _repeated(previous, fingerprint)


__all__ = [
    "SubmitConnection",
    "SubmitRequest",
    "insert_statement",
    "submit",
    "submit_async",
]
