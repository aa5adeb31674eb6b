"""Interactive sessions as use cases: start one, list the caller's cards, share, stop.

A session is an ordinary job (`jobs.submit`, `jobs.cancel`): the same checks, scheduler,
time limit and ledger. Its command comes from its kind (`domain.sessions`) and this site's
settings, never from the user. Who may use it is decided here, on every proxied request
(`access_row`): its owner, and the members of its project the owner allowed, while they are
members; anyone else is told it does not exist (NotFound, whether it exists or not).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from gpucenter.auth.permissions import Caller
from gpucenter.domain.errors import NotFound, PermissionDenied, ValidationError
from gpucenter.domain.jobs import JobState
from gpucenter.domain.messages import msg
from gpucenter.domain.sessions import SESSION_TEMPLATE_PREFIX, SessionKind, kind_of_template
from gpucenter.persistence.tables import (
    JobRow,
    LedgerEntryRow,
    MembershipRow,
    SessionShareRow,
    UserRow,
)
from gpucenter.services.context import AppContext
from gpucenter.services.jobs import manage as jobs
from gpucenter.services.jobs.submission import JobForm
from gpucenter.services.jobs.submit import submit

__all__ = [
    "SessionCard",
    "access_row",
    "cards",
    "set_shared",
    "start",
    "stop",
]

_ENDED_SHOWN = 5
"""How many ended sessions the card list still shows (their final cost)."""


@dataclass(frozen=True, slots=True)
class SessionCard:
    """What the portal's session card shows: never the secret, never the socket's path."""

    job_id: int
    kind: str
    title: str
    state: JobState
    project_id: int
    owner: str
    is_owner: bool
    gpus: int
    gpu_type: str
    devices: str
    """Where its GPUs are, as placed (``node: 0,1``); empty before it starts."""
    time_left_s: int | None
    """Seconds until its wall-time limit; None before it starts and after it ends."""
    cost_gpu_hours: float
    """Charged so far: the ledger once it ended, GPUs x elapsed time while it runs."""
    shared_with: tuple[str, ...]
    members: tuple[str, ...]
    """The project's other members, whom the owner may allow (owner's card only)."""


def _aware(at: datetime | None) -> datetime | None:
    if at is None or at.tzinfo is not None:
        return at
    return at.replace(tzinfo=UTC)


def start(
    ctx: AppContext,
    caller: Caller,
    kind: SessionKind,
    project: str,
    gpus: int,
    time: str,
    gpu_type: str | None = None,
) -> JobRow:
    """Submit a session of `kind` as a job of `project`; its command is the kind's."""
    python = ctx.settings.session_python
    if not python:
        raise ValidationError.about("kind", msg("error.sessions_off"))
    command = kind.render(python, ctx.settings.session_idle_timeout_s)
    form = JobForm(
        project=project,
        command=command,
        gpus_per_node=gpus,
        nodes=1,
        gpu_type=gpu_type or None,
        time=time,
        name=kind.name,
        template=kind.template,
    )
    return submit(ctx, caller, form)


def _may_use(s: Session, caller: Caller, row: JobRow) -> bool:
    if row.user_id == caller.user_id:
        return True
    if row.project_id not in caller.project_ids:
        return False  # allowed once, but no longer a member of the project
    shared = s.get(SessionShareRow, (row.id, caller.user_id))
    return shared is not None


def access_row(ctx: AppContext, caller: Caller, job_id: int) -> JobRow:
    """The session's job if the caller may use it; NotFound for everyone else (other tenants,
    members not allowed, admins too: a session is its owner's desktop, not a job to read)."""
    with ctx.sessions.begin() as s:
        row = s.get(JobRow, job_id)
        if row is None or kind_of_template(row.template) is None or not _may_use(s, caller, row):
            raise NotFound("session", job_id)
        s.expunge(row)
        return row


def _cost(s: Session, row: JobRow, now: datetime) -> float:
    charged = s.scalar(
        select(func.sum(LedgerEntryRow.gpu_seconds)).where(LedgerEntryRow.job_id == row.id)
    )
    if charged is not None:
        return float(charged) / 3600
    started = _aware(row.started_at)
    if started is None:
        return 0.0
    end = _aware(row.ended_at) or now
    gpus = row.gpus_per_node * row.nodes
    return max(0.0, (end - started).total_seconds()) * gpus / 3600


def _devices(row: JobRow) -> str:
    parts = []
    for item in row.placement or []:
        if isinstance(item, dict):
            node, gpus = item.get("node", "?"), item.get("gpus", [])
        elif isinstance(item, list | tuple) and len(item) == 2:
            node, gpus = item
        else:
            continue
        parts.append(f"{node}: {','.join(str(g) for g in gpus)}")
    return "; ".join(parts)


def cards(ctx: AppContext, caller: Caller) -> list[SessionCard]:
    """The caller's sessions and those shared with them: running and waiting ones, then the
    last few ended ones."""
    now = ctx.now()
    with ctx.sessions.begin() as s:
        shared_ids = select(SessionShareRow.job_id).where(SessionShareRow.user_id == caller.user_id)
        rows = s.scalars(
            select(JobRow)
            .where(JobRow.template.like(SESSION_TEMPLATE_PREFIX + "%"))
            .where((JobRow.user_id == caller.user_id) | JobRow.id.in_(shared_ids))
            .order_by(JobRow.id.desc())
            .limit(50)
        ).all()
        result: list[SessionCard] = []
        ended = 0
        for row in rows:
            kind = kind_of_template(row.template)
            if kind is None or not _may_use(s, caller, row):
                continue
            state = JobState(row.state)
            if state.is_terminal:
                ended += 1
                if ended > _ENDED_SHOWN:
                    continue
            started = _aware(row.started_at)
            left = None
            if state is JobState.RUNNING and started is not None:
                left = max(0, int(row.time_limit_s - (now - started).total_seconds()))
            is_owner = row.user_id == caller.user_id
            shared = s.scalars(
                select(UserRow.username)
                .join(SessionShareRow, SessionShareRow.user_id == UserRow.id)
                .where(SessionShareRow.job_id == row.id)
                .order_by(UserRow.username)
            ).all()
            members: list[str] = []
            if is_owner:
                members = list(
                    s.scalars(
                        select(UserRow.username)
                        .join(MembershipRow, MembershipRow.user_id == UserRow.id)
                        .where(MembershipRow.project_id == row.project_id)
                        .where(UserRow.id != caller.user_id)
                        .order_by(UserRow.username)
                    ).all()
                )
            owner = s.scalar(select(UserRow.username).where(UserRow.id == row.user_id)) or ""
            result.append(
                SessionCard(
                    job_id=row.id,
                    kind=kind.name,
                    title=kind.title,
                    state=state,
                    project_id=row.project_id,
                    owner=owner,
                    is_owner=is_owner,
                    gpus=row.gpus_per_node * row.nodes,
                    gpu_type=row.gpu_type,
                    devices=_devices(row),
                    time_left_s=left,
                    cost_gpu_hours=_cost(s, row, now),
                    shared_with=tuple(shared),
                    members=tuple(members),
                )
            )
        return result


def _owned(s: Session, caller: Caller, job_id: int) -> JobRow:
    row = s.get(JobRow, job_id)
    if row is None or kind_of_template(row.template) is None or not _may_use(s, caller, row):
        raise NotFound("session", job_id)
    if row.user_id != caller.user_id:
        raise PermissionDenied.of(msg("error.session_owner_only"))
    return row


def set_shared(ctx: AppContext, caller: Caller, job_id: int, username: str, allow: bool) -> None:
    """Allow (or no longer allow) a member of the session's project to use it."""
    with ctx.sessions.begin() as s:
        row = _owned(s, caller, job_id)
        user = s.scalar(select(UserRow).where(UserRow.username == username))
        member = user is not None and (
            s.scalar(
                select(MembershipRow.user_id).where(
                    MembershipRow.project_id == row.project_id, MembershipRow.user_id == user.id
                )
            )
            is not None
        )
        if user is None or not member or user.id == caller.user_id:
            raise ValidationError.about("username", msg("error.session_share"))
        if allow:
            if s.get(SessionShareRow, (row.id, user.id)) is None:
                s.add(SessionShareRow(job_id=row.id, user_id=user.id, created_at=ctx.now()))
        else:
            s.execute(
                delete(SessionShareRow).where(
                    SessionShareRow.job_id == row.id, SessionShareRow.user_id == user.id
                )
            )


def stop(ctx: AppContext, caller: Caller, job_id: int) -> None:
    """End the session (its owner only): the job is cancelled, and charged, like any job."""
    with ctx.sessions.begin() as s:
        _owned(s, caller, job_id)
    jobs.cancel(ctx, caller, job_id)
