"""Queries the services need, in one place, so that services read as use cases."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, and_, bindparam, exists, func, or_, select, true
from sqlalchemy.orm import Session

from gpucenter.domain.allocations import CURRENT_STATES, AllocationState
from gpucenter.domain.errors import NotFound
from gpucenter.domain.jobs import JobState
from gpucenter.persistence.tables import (
    AllocationRow,
    ApiTokenRow,
    JobRow,
    LedgerEntryRow,
    MembershipRow,
    NodeRow,
    OrganisationRow,
    ProjectRow,
    SiteRow,
    UserRow,
)


def current_allocation(at: Any) -> ColumnElement[bool]:
    """The one condition for "a current allocation at `at`" (a datetime or a bind parameter):
    inside its period and in a current state (`gpucenter.domain.allocations.CURRENT_STATES`).
    Charging, budgets, fair share, site sync and reports all select allocations with it."""
    return and_(
        AllocationRow.starts_at <= at,
        AllocationRow.ends_at > at,
        AllocationRow.state.in_([state.value for state in CURRENT_STATES]),
    )


def org_by_name(s: Session, name: str) -> OrganisationRow:
    row = s.scalar(select(OrganisationRow).where(OrganisationRow.name == name))
    if row is None:
        raise NotFound("organisation", name)
    return row


def user_by_name(s: Session, username: str) -> UserRow:
    row = s.scalar(select(UserRow).where(UserRow.username == username))
    if row is None:
        raise NotFound("user", username)
    return row


def project_by_name(s: Session, name: str) -> ProjectRow:
    row = s.scalar(select(ProjectRow).where(ProjectRow.name == name))
    if row is None:
        raise NotFound("project", name)
    return row


def token_row(s: Session, digest: str) -> ApiTokenRow | None:
    return s.scalar(select(ApiTokenRow).where(ApiTokenRow.token_hash == digest))


def project_ids_of(s: Session, user_id: int) -> frozenset[int]:
    rows = s.scalars(select(MembershipRow.project_id).where(MembershipRow.user_id == user_id))
    return frozenset(rows)


def active_allocation(
    s: Session, project_id: int, at: datetime, gpu_type: str | None = None
) -> AllocationRow | None:
    """The allocation a new job charges.

    Only allocations active at `at` and neither suspended nor expired count; one awarded
    for the job's GPU type beats a general one; one with budget left beats an exhausted one
    (whose jobs would wait); among equals, the one ending soonest (use it before it lapses).
    """
    stmt = select(AllocationRow).where(
        AllocationRow.project_id == project_id,
        current_allocation(at),
    )
    if gpu_type is not None:
        stmt = stmt.where((AllocationRow.gpu_type.is_(None)) | (AllocationRow.gpu_type == gpu_type))
    candidates = list(s.scalars(stmt))
    if not candidates:
        return None
    return min(
        candidates,
        key=lambda a: (
            a.state == AllocationState.EXHAUSTED,
            a.gpu_type is None,
            a.ends_at,
            a.id,
        ),
    )


def _submit_target_query(with_token: bool) -> Select[Any]:
    at = bindparam("at", type_=AllocationRow.starts_at.type)
    alloc = (
        select(AllocationRow.id)
        .where(
            AllocationRow.project_id == ProjectRow.id,
            current_allocation(at),
            or_(AllocationRow.gpu_type.is_(None), AllocationRow.gpu_type == bindparam("gpu")),
        )
        .order_by(
            AllocationRow.state == AllocationState.EXHAUSTED,
            AllocationRow.gpu_type.is_(None),
            AllocationRow.ends_at,
            AllocationRow.id,
        )
        .limit(1)
        .scalar_subquery()
    )
    site_id = select(SiteRow.id).where(SiteRow.name == bindparam("site")).scalar_subquery()
    member = exists().where(
        MembershipRow.project_id == ProjectRow.id, MembershipRow.user_id == bindparam("user")
    )
    token_ok = (
        exists().where(and_(ApiTokenRow.id == bindparam("token"), ApiTokenRow.revoked_at.is_(None)))
        if with_token
        else true()
    )
    return select(
        ProjectRow.id, alloc, site_id, member.label("member"), token_ok.label("token_ok")
    ).where(ProjectRow.name == bindparam("project"))


# Built once: the statement is the same for every submission, only the parameters change.
_SUBMIT_TARGET = {True: _submit_target_query(True), False: _submit_target_query(False)}


def submit_target(
    s: Session,
    project: str,
    user_id: int,
    token_id: int | None,
    site: str,
    gpu_type: str,
    at: datetime,
) -> Row[Any] | None:
    """Everything a submission checks, in one round trip: (project id, the allocation to
    charge as `active_allocation` would choose it, the site id, whether the user is a member,
    whether the token used is still unrevoked). None when the project does not exist."""
    params = submit_target_params(project, user_id, token_id, site, gpu_type, at)
    return s.execute(submit_target_query(token_id is not None), params).first()


def submit_target_query(with_token: bool) -> Select[Any]:
    """The one query behind `submit_target` (also run on async connections by the REST
    submission path)."""
    return _SUBMIT_TARGET[with_token]


def submit_target_params(
    project: str, user_id: int, token_id: int | None, site: str, gpu_type: str, at: datetime
) -> dict[str, Any]:
    """The parameters of `submit_target_query(token_id is not None)`."""
    params: dict[str, Any] = {
        "project": project,
        "user": user_id,
        "site": site,
        "gpu": gpu_type,
        "at": at,
    }
    if token_id is not None:
        params["token"] = token_id
    return params


def charged_gpu_seconds(
    s: Session, allocation_ids: Sequence[int], since: datetime | None = None
) -> dict[int, float]:
    if not allocation_ids:
        return {}
    stmt = (
        select(LedgerEntryRow.allocation_id, func.sum(LedgerEntryRow.gpu_seconds))
        .where(LedgerEntryRow.allocation_id.in_(allocation_ids))
        .group_by(LedgerEntryRow.allocation_id)
    )
    if since is not None:
        stmt = stmt.where(LedgerEntryRow.created_at >= since)
    rows = s.execute(stmt)
    return {aid: float(total or 0.0) for aid, total in rows}


def site_by_name(s: Session, name: str) -> SiteRow | None:
    return s.scalar(select(SiteRow).where(SiteRow.name == name))


def nodes_of(s: Session, site_id: int) -> Sequence[NodeRow]:
    return s.scalars(select(NodeRow).where(NodeRow.site_id == site_id).order_by(NodeRow.name)).all()


def jobs_in_states(s: Session, states: Sequence[JobState]) -> Sequence[JobRow]:
    return s.scalars(
        select(JobRow).where(JobRow.state.in_([st.value for st in states])).order_by(JobRow.id)
    ).all()
