"""Organisations, users, projects, memberships and allocations: the admin's use cases."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gpucenter.auth.credentials import hash_password, new_token, token_digest
from gpucenter.domain.errors import Conflict, ValidationError
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.tables import (
    AllocationRow,
    ApiTokenRow,
    MembershipRow,
    OrganisationRow,
    ProjectRow,
    UserRow,
)

_NAME = re.compile(r"^[a-z][a-z0-9_.-]{1,63}$")
MAX_GPU_HOURS = 10_000_000


class OrganisationKind(StrEnum):
    PUBLIC_RESEARCH_INSTITUTE = "public_research_institute"
    UNIVERSITY = "university"
    STARTUP = "startup"
    SME = "sme"
    LARGE_ENTERPRISE = "large_enterprise"
    GOVERNMENT = "government"


def _check_name(field: str, value: str) -> str:
    if not _NAME.match(value):
        raise ValidationError(
            field,
            f"{value!r} is not allowed: use 2-64 lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter",
        )
    return value


def _flush_unique(s: Session, what: str, name: str) -> None:
    try:
        s.flush()
    except IntegrityError as exc:
        raise Conflict(f"{what} {name!r} already exists") from exc


def create_organisation(s: Session, name: str, kind: str, now: datetime) -> OrganisationRow:
    if not name.strip() or len(name) > 200:
        raise ValidationError("name", "must be 1-200 characters")
    try:
        kind_value = OrganisationKind(kind)
    except ValueError:
        allowed = ", ".join(k.value for k in OrganisationKind)
        raise ValidationError(
            "kind", f"unknown organisation kind {kind!r}; use one of {allowed}"
        ) from None
    row = OrganisationRow(name=name.strip(), kind=kind_value.value, created_at=now)
    s.add(row)
    _flush_unique(s, "organisation", name)
    return row


@dataclass(frozen=True)
class NewUser:
    user: UserRow
    token: str


def create_user(
    s: Session,
    username: str,
    now: datetime,
    *,
    organisation: str | None = None,
    password: str | None = None,
    is_admin: bool = False,
    display_name: str = "",
) -> NewUser:
    """Create a user and a first API token, which is returned once and stored only hashed."""
    _check_name("username", username)
    if password is not None and len(password) < 8:
        raise ValidationError("password", "must be at least 8 characters")
    org_id = repo.org_by_name(s, organisation).id if organisation else None
    user = UserRow(
        username=username,
        display_name=display_name or username,
        organisation_id=org_id,
        password_hash=hash_password(password) if password else None,
        is_admin=is_admin,
        created_at=now,
    )
    s.add(user)
    _flush_unique(s, "user", username)
    token = issue_token(s, user.id, now, name="initial")
    return NewUser(user, token)


def issue_token(s: Session, user_id: int, now: datetime, *, name: str = "", days: int = 90) -> str:
    token = new_token()
    s.add(
        ApiTokenRow(
            user_id=user_id,
            name=name,
            token_hash=token_digest(token),
            created_at=now,
            expires_at=now + timedelta(days=days),
        )
    )
    s.flush()
    return token


def create_project(
    s: Session, name: str, organisation: str, now: datetime, title: str = ""
) -> ProjectRow:
    _check_name("project", name)
    org = repo.org_by_name(s, organisation)
    row = ProjectRow(name=name, title=title or name, organisation_id=org.id, created_at=now)
    s.add(row)
    _flush_unique(s, "project", name)
    return row


def add_member(s: Session, project: str, username: str, role: str = "member") -> MembershipRow:
    if role not in ("pi", "member"):
        raise ValidationError("role", "must be 'pi' or 'member'")
    proj = repo.project_by_name(s, project)
    user = repo.user_by_name(s, username)
    existing = s.scalar(
        select(MembershipRow).where(
            MembershipRow.project_id == proj.id, MembershipRow.user_id == user.id
        )
    )
    if existing is not None:
        existing.role = role
        return existing
    row = MembershipRow(project_id=proj.id, user_id=user.id, role=role)
    s.add(row)
    s.flush()
    return row


def create_allocation(
    s: Session,
    project: str,
    gpu_hours: float,
    now: datetime,
    *,
    starts_at: datetime | None = None,
    days: int = 365,
) -> AllocationRow:
    if not gpu_hours > 0 or gpu_hours > MAX_GPU_HOURS:
        raise ValidationError("gpu_hours", f"must be more than 0 and at most {MAX_GPU_HOURS}")
    if days < 1 or days > 3660:
        raise ValidationError("days", "must be between 1 and 3660")
    proj = repo.project_by_name(s, project)
    start = starts_at or now
    row = AllocationRow(
        project_id=proj.id,
        gpu_seconds=round(gpu_hours * 3600),
        starts_at=start,
        ends_at=start + timedelta(days=days),
        created_at=now,
    )
    s.add(row)
    s.flush()
    return row
