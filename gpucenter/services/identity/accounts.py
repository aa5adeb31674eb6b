"""Organisations, users, projects, memberships, allocations and centre roles: the admin's
use cases. Each writes an audit entry in the same transaction, naming who did it (`by`; the
admin CLI on the server host acts as `system`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gpucenter.auth import passwords
from gpucenter.auth.credentials import hash_password
from gpucenter.auth.permissions import CENTRE_ROLES, Role
from gpucenter.domain.errors import Conflict, NotFound, ValidationError
from gpucenter.domain.messages import Message, msg
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.tables import (
    AllocationRow,
    MembershipRow,
    OrganisationRow,
    ProjectRow,
    UserRow,
)
from gpucenter.persistence.tables_audit import RoleAssignmentRow
from gpucenter.services.identity import audit
from gpucenter.services.identity.audit import SYSTEM, Actor
from gpucenter.services.identity.tokens import issue

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
        raise ValidationError.about(field, msg("error.account_name", value=repr(value)))
    return value


def _password_problem(found: passwords.Problem) -> Message:
    """The password policy's refusal as a code, so the CLI and the portal say it in the
    reader's language (`Problem.message` is the same words in English only)."""
    if found is passwords.Problem.TOO_SHORT:
        return msg("error.password_too_short", least=passwords.MIN_LENGTH)
    if found is passwords.Problem.TOO_LONG:
        return msg("error.password_too_long", most=passwords.MAX_LENGTH)
    return msg(f"error.password_{found.value}")


def _flush_unique(s: Session, what: str, name: str) -> None:
    """Flush, saying "`what` `name` already exists" for a unique name taken meanwhile."""
    try:
        s.flush()
    except IntegrityError as exc:
        raise Conflict.of(msg(f"error.{what}_exists", name=repr(name))) from exc


def create_organisation(
    s: Session, name: str, kind: str, now: datetime, *, by: Actor = SYSTEM
) -> OrganisationRow:
    if not name.strip() or len(name) > 200:
        raise ValidationError.about("name", msg("error.key_length"))
    try:
        kind_value = OrganisationKind(kind)
    except ValueError:
        allowed = ", ".join(k.value for k in OrganisationKind)
        raise ValidationError.about(
            "kind", msg("error.unknown_org_kind", kind=repr(kind), allowed=allowed)
        ) from None
    row = OrganisationRow(name=name.strip(), kind=kind_value.value, created_at=now)
    s.add(row)
    _flush_unique(s, "organisation", name)
    audit.log(s, "admin.org_create", by, now, "organisation", row.id, {"name": row.name})
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
    by: Actor = SYSTEM,
) -> NewUser:
    """Create a user and a first API token, which is returned once and stored only hashed."""
    _check_name("username", username)
    if password is not None:
        check_password(password, username)
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
    audit.log(
        s,
        "admin.user_create",
        by,
        now,
        "user",
        user.id,
        {"username": username, "organisation": organisation, "is_admin": is_admin},
    )
    token = issue_token(s, user.id, now, name="initial", by=by)
    return NewUser(user, token)


def check_password(password: str, username: str, field: str = "password") -> None:
    """The one password policy (auth/passwords.py), as a ValidationError naming the field."""
    found = passwords.problem(password, username)
    if found is not None:
        raise ValidationError.about(field, _password_problem(found))


def set_password(
    s: Session, username: str, password: str, now: datetime, *, by: Actor, field: str = "password"
) -> None:
    """Give `username` a new password under the policy (an admin's reset, or the user's own
    change once their current password was checked)."""
    user = repo.user_by_name(s, username)
    check_password(password, username, field)
    user.password_hash = hash_password(password)
    action = "auth.password_change" if by.id == user.id else "admin.password_set"
    audit.log(s, action, by, now, "user", user.id, {"username": username})


def issue_token(
    s: Session, user_id: int, now: datetime, *, name: str = "", days: int = 90, by: Actor = SYSTEM
) -> str:
    """A full-power token for `user_id` (returned once); scoped ones come from tokens.create."""
    row, token = issue(s, user_id, now, name=name, days=days)
    audit.log(s, "token.create", by, now, "api_token", row.id, {"name": name, "user": user_id})
    return token


def create_project(
    s: Session, name: str, organisation: str, now: datetime, title: str = "", *, by: Actor = SYSTEM
) -> ProjectRow:
    _check_name("project", name)
    org = repo.org_by_name(s, organisation)
    row = ProjectRow(name=name, title=title or name, organisation_id=org.id, created_at=now)
    s.add(row)
    _flush_unique(s, "project", name)
    audit.log(s, "admin.project_create", by, now, "project", row.id, {"name": name})
    return row


def add_member(
    s: Session,
    project: str,
    username: str,
    role: str = "member",
    *,
    by: Actor = SYSTEM,
    now: datetime | None = None,
) -> MembershipRow:
    if role not in ("pi", "member"):
        raise ValidationError.about("role", msg("error.member_role"))
    proj = repo.project_by_name(s, project)
    user = repo.user_by_name(s, username)
    existing = s.scalar(
        select(MembershipRow).where(
            MembershipRow.project_id == proj.id, MembershipRow.user_id == user.id
        )
    )
    details = {"project": project, "username": username, "role": role}
    at = now or datetime.now(tz=UTC)
    if existing is not None:
        if existing.role != role:
            audit.log(s, "admin.member_role_change", by, at, "project", proj.id, details)
        existing.role = role
        return existing
    row = MembershipRow(project_id=proj.id, user_id=user.id, role=role)
    s.add(row)
    s.flush()
    audit.log(s, "admin.member_add", by, at, "project", proj.id, details)
    return row


def create_allocation(
    s: Session,
    project: str,
    gpu_hours: float,
    now: datetime,
    *,
    starts_at: datetime | None = None,
    days: int = 365,
    by: Actor = SYSTEM,
) -> AllocationRow:
    if not gpu_hours > 0 or gpu_hours > MAX_GPU_HOURS:
        raise ValidationError.about("gpu_hours", msg("error.gpu_hours_range", most=MAX_GPU_HOURS))
    if days < 1 or days > 3660:
        raise ValidationError.about("days", msg("error.between", low=1, high=3660))
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
    audit.log(
        s,
        "allocation.create",
        by,
        now,
        "allocation",
        row.id,
        {"project": project, "gpu_hours": gpu_hours, "days": days},
    )
    return row


def _centre_role(role: str) -> Role:
    try:
        wanted = Role(role)
    except ValueError:
        wanted = None
    if wanted not in CENTRE_ROLES:
        allowed = ", ".join(sorted(r.value for r in CENTRE_ROLES))
        raise ValidationError.about("role", msg("error.use_one_of", allowed=allowed))
    assert wanted is not None
    return wanted


def grant_role(
    s: Session, username: str, role: str, now: datetime, *, by: Actor = SYSTEM
) -> RoleAssignmentRow:
    """Give a centre-wide role (idempotent). Who may do this is checked by the caller."""
    wanted = _centre_role(role)
    user = repo.user_by_name(s, username)
    existing = s.scalar(
        select(RoleAssignmentRow).where(
            RoleAssignmentRow.user_id == user.id,
            RoleAssignmentRow.role == wanted.value,
            RoleAssignmentRow.scope_kind == "centre",
            RoleAssignmentRow.scope_id == 0,
        )
    )
    if existing is not None:
        return existing
    row = RoleAssignmentRow(
        user_id=user.id, role=wanted.value, scope_kind="centre", scope_id=0, created_at=now
    )
    s.add(row)
    s.flush()
    audit.log(s, "role.grant", by, now, "user", user.id, {"username": username, "role": role})
    return row


def revoke_role(s: Session, username: str, role: str, now: datetime, *, by: Actor = SYSTEM) -> None:
    wanted = _centre_role(role)
    user = repo.user_by_name(s, username)
    row = s.scalar(
        select(RoleAssignmentRow).where(
            RoleAssignmentRow.user_id == user.id,
            RoleAssignmentRow.role == wanted.value,
            RoleAssignmentRow.scope_kind == "centre",
            RoleAssignmentRow.scope_id == 0,
        )
    )
    if row is None:
        raise NotFound("role assignment", f"{username}:{role}")
    s.delete(row)
    s.flush()
    audit.log(s, "role.revoke", by, now, "user", user.id, {"username": username, "role": role})


def centre_roles(s: Session) -> list[tuple[str, str]]:
    """(username, role) for every centre-wide role held."""
    rows = s.execute(
        select(UserRow.username, RoleAssignmentRow.role)
        .join(UserRow, UserRow.id == RoleAssignmentRow.user_id)
        .where(RoleAssignmentRow.scope_kind == "centre")
        .order_by(UserRow.username, RoleAssignmentRow.role)
    )
    return [(u, r) for u, r in rows]


def list_organisations(s: Session) -> list[OrganisationRow]:
    return list(s.scalars(select(OrganisationRow).order_by(OrganisationRow.name)))


def list_users(s: Session, limit: int = 500) -> list[tuple[UserRow, str]]:
    """(user, organisation name or '') by username, for the admin's list."""
    rows = s.execute(
        select(UserRow, OrganisationRow.name)
        .outerjoin(OrganisationRow, OrganisationRow.id == UserRow.organisation_id)
        .order_by(UserRow.username)
        .limit(limit)
    )
    return [(u, name or "") for u, name in rows]


__all__ = [
    "add_member",
    "centre_roles",
    "create_allocation",
    "create_organisation",
    "create_project",
    "create_user",
    "grant_role",
    "list_organisations",
    "list_users",
    "revoke_role",
]
