"""Jobs from a user's point of view: submit, list, show, cancel, read logs.

Submission itself lives in `submit.py` (its checks in `pipeline.py`); `submit` and
`SubmitRequest` are re-exported here, where the routes, pages and CLI have always found them.
"""

from __future__ import annotations

import base64
import logging
import os
import pwd
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from gpucenter.auth.permissions import (
    Caller,
    can_cancel_job,
    can_read_job_output,
    can_view_job,
)
from gpucenter.dispatch.base import SiteKind
from gpucenter.dispatch.isolation.safe_files import (
    UnsafeFile,
    open_dir_beneath,
    owner_of_dir,
    read_range,
)
from gpucenter.domain.errors import (
    Conflict,
    NotFound,
    PermissionDenied,
    ValidationError,
)
from gpucenter.domain.jobs import JobState
from gpucenter.domain.messages import msg
from gpucenter.persistence.sealed_env import SealError, is_sealed, open_env
from gpucenter.persistence.tables import JobRow, ProjectRow, SiteRow, UserRow
from gpucenter.services.context import AppContext
from gpucenter.services.jobs.pipeline import env_keys
from gpucenter.services.jobs.submit import SubmitRequest as SubmitRequest
from gpucenter.services.jobs.submit import submit as submit
from gpucenter.services.jobs.views import AnyJob, JobView, job_view

MAX_LOG_CHUNK = 1024 * 1024
log = logging.getLogger(__name__)


def array_task_ids(ctx: AppContext, leader: AnyJob) -> list[int]:
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


def get_visible(ctx: AppContext, caller: Caller, job_id: int, *, with_env: bool = True) -> JobView:
    """The job, if the caller may see it; NotFound otherwise (whether it exists or not).
    Its env's values are opened for its owner only: project members and admins see the
    names with the values masked (issue 17)."""
    row = _visible_row(ctx, caller, job_id)
    if not with_env or caller.user_id != row.user_id or not is_sealed(row.env):
        return job_view(row)
    try:
        opened = open_env(env_keys(ctx), row.user_id, row.env)
    except SealError as exc:
        log.warning("job %s: its environment cannot be opened: %s", row.id, exc)
        return job_view(row)
    # Shown as text: what UTF-8 cannot carry (a lone surrogate a client sent) is replaced.
    shown = {k: v.encode("utf-8", "replace").decode("utf-8") for k, v in opened.items()}
    return job_view(row, shown)


def _visible_row(ctx: AppContext, caller: Caller, job_id: int) -> JobRow:
    with ctx.sessions.begin() as s:
        row = s.get(JobRow, job_id)
        if row is None or not can_view_job(caller, row.user_id, row.project_id):
            raise NotFound("job", job_id)
        return row


def _readable_row(ctx: AppContext, caller: Caller, job_id: int) -> JobRow:
    """The job, if the caller may read its logs: NotFound where they may not see it at all,
    PermissionDenied where they see it but its project does not share outputs."""
    with ctx.sessions.begin() as s:
        row = s.get(JobRow, job_id)
        if row is None or not can_view_job(caller, row.user_id, row.project_id):
            raise NotFound("job", job_id)
        shares = bool(
            s.scalar(select(ProjectRow.share_outputs).where(ProjectRow.id == row.project_id))
        )
        if not can_read_job_output(caller, row.user_id, row.project_id, shares):
            raise PermissionDenied.of(msg("error.logs_not_shared", job=str(job_id)))
        return row


@dataclass(frozen=True, slots=True)
class JobPage:
    items: list[JobView]
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
        raise ValidationError.about("cursor", msg("error.cursor")) from None


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
    cursor_out = encode_cursor(rows[-1].id) if more and rows else None
    return JobPage([job_view(r) for r in rows], cursor_out)


def list_visible(
    ctx: AppContext, caller: Caller, *, states: Sequence[JobState] = (), limit: int = 100
) -> Sequence[JobView]:
    return list_page(ctx, caller, states=states, limit=limit).items


def cancel(ctx: AppContext, caller: Caller, job_id: int) -> JobView:
    """Cancel a pending job at once; a running one is stopped by the scheduler leader.

    The request is recorded in the database rather than sent to this process's dispatcher:
    with several servers, the one answering the request may not be the one watching the job.
    """
    with ctx.sessions.begin() as s:
        row = s.get(JobRow, job_id, with_for_update=True)
        if row is None or not can_view_job(caller, row.user_id, row.project_id):
            raise NotFound("job", job_id)
        if not can_cancel_job(caller, row.user_id, row.project_id):
            raise PermissionDenied.of(msg("error.cancel_not_owner"))
        state = JobState(row.state)
        if state.is_terminal:
            raise Conflict.of(msg("error.job_ended", job=str(job_id), state=state.value))
        if state is JobState.PENDING:
            why = msg("job.cancelled_pending", user=caller.username)
            row.state = JobState.CANCELLED.value
            row.ended_at = ctx.now()
            row.reason = ""
            row.reason_detail, row.reason_message = why.english(), why.to_json()
        elif row.cancel_requested_at is None:
            why = msg("job.cancel_requested", user=caller.username)
            row.cancel_requested_at = ctx.now()
            row.reason_detail, row.reason_message = why.english(), why.to_json()
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
        return job_view(row)


def read_log(
    ctx: AppContext, caller: Caller, job_id: int, stream: str = "stdout", offset: int = 0
) -> tuple[bytes, int, bool]:
    """Return (chunk, next_offset, finished) of a job's stdout or stderr from `offset`."""
    if stream not in ("stdout", "stderr"):
        raise ValidationError.about("stream", msg("error.log_stream"))
    if offset < 0:
        raise ValidationError.about("offset", msg("error.not_negative"))
    row = _readable_row(ctx, caller, job_id)
    path = row.stdout_path if stream == "stdout" else row.stderr_path
    finished = JobState(row.state).is_terminal
    if not path:
        return b"", offset, finished
    try:
        chunk = read_job_file(ctx, Path(path), offset, MAX_LOG_CHUNK, owner_uid(ctx, row))
    except FileNotFoundError:
        return b"", offset, finished
    except UnsafeFile as exc:
        log.warning("job %s: %s refused: %s", job_id, stream, exc)
        raise Conflict.of(
            msg("error.log_unsafe", job=str(job_id), stream=stream, reason=exc.reason)
        ) from exc
    return chunk, offset + len(chunk), finished and len(chunk) < MAX_LOG_CHUNK


@dataclass(frozen=True, slots=True)
class LogTail:
    """The end of a job's stdout: `chunk` starts at byte `start`; follow from `next_offset`."""

    chunk: bytes
    start: int
    next_offset: int


def log_tail(ctx: AppContext, caller: Caller, job_id: int, max_bytes: int) -> LogTail:
    """The last `max_bytes` of the job's stdout as it is now (the portal's first screen;
    the log's place on disk stays in here)."""
    try:
        row = _readable_row(ctx, caller, job_id)
    except PermissionDenied:
        return LogTail(b"", 0, 0)  # the page shows the job, without its owner's output
    size = 0
    if row.stdout_path:
        try:
            size = os.lstat(row.stdout_path).st_size  # never the size of what a link names
        except OSError:
            size = 0
    start = max(0, size - max_bytes)
    chunk, _, _ = read_log(ctx, caller, job_id, "stdout", start)
    chunk = chunk[:max_bytes]
    return LogTail(chunk, start, start + len(chunk))


def owner_uid(ctx: AppContext, row: JobRow) -> int | None:
    """The uid the job's owner runs as: the account gpucenter provisioned for them, else
    their account of the same name on this host (a Slurm site's users, one directory
    service); None where neither is known."""
    with ctx.sessions() as s:
        user = s.get(UserRow, row.user_id)
        if user is None:
            return None
        site = s.get(SiteRow, row.site_id) if row.site_id is not None else None
        local = site is None or site.kind == SiteKind.LOCAL.value
        if local and user.unix_uid is not None:  # provisioned for the local site only
            return user.unix_uid
        username = user.username
    try:
        return pwd.getpwnam(username).pw_uid
    except KeyError:
        return None


def read_job_file(
    ctx: AppContext, path: Path, offset: int, max_bytes: int, owner_uid: int | None = None
) -> bytes:
    """Up to `max_bytes` of a job's log from `offset`, read so that the job cannot steer it.

    The job can replace its own log with anything (the server may be root): a symlink to a
    secret, a FIFO that blocks the reader forever, a hard link to someone else's file. So no
    component below a trusted directory is followed, only a regular file is opened (never
    blocking), and the read is capped (`safe_files.read_range`); the file must belong to the
    uid its directory says:

    - below a local site's job directories, the owner of its run directory, which the job
      cannot change (the directory's parent is root's): its owner's file, or, single-user,
      the server's own;
    - elsewhere the log's directory is opened below its own parent (a Slurm site's log
      directory, root's): an owner's directory there (a Slurm site running jobs as their
      owners) must be `owner_uid`'s, the job owner's, and so must the file; in a directory of
      the server's (Kubernetes' copies, a Slurm site running jobs as the server) the file
      must be the server's; in an old shared world-writable directory, the job owner's.
    """
    jobs = ctx.settings.tenant_root.resolve() / "jobs"
    path = Path(os.path.normpath(path))
    if jobs in path.parents:
        owner = owner_of_dir(path.parent, root=jobs)
        return read_range(path, offset=offset, max_bytes=max_bytes, expected_uid=owner, root=jobs)
    root = path.parent.parent
    fd = open_dir_beneath(path.parent, root=root)
    try:
        where = os.fstat(fd)
    finally:
        os.close(fd)
    server = os.geteuid()
    if where.st_uid not in (0, server):
        if where.st_uid != owner_uid:
            raise UnsafeFile(
                path,
                f"is in a directory of uid {where.st_uid}, not of the job's owner ({owner_uid})",
            )
        expected = where.st_uid
    elif where.st_mode & stat.S_IWOTH:
        expected = owner_uid if owner_uid is not None else server
    else:
        expected = server
    return read_range(path, offset=offset, max_bytes=max_bytes, expected_uid=expected, root=root)


__all__ = [
    "array_task_ids",
    "cancel",
    "encode_cursor",
    "get_visible",
    "list_page",
    "list_visible",
    "log_tail",
    "owner_uid",
    "read_job_file",
    "read_log",
]
