"""Centre administration over the API: users, centre-wide roles and the audit log.

Routes parse and render; who may grant what is `auth.permissions.can_assign_role`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from gpucenter.api.schemas import (
    MAX_ID,
    AuditEntryOut,
    AuditVerifyOut,
    RoleGrantIn,
    RoleOut,
    UserIn,
    UserOut,
)
from gpucenter.auth.permissions import Permission, Role, can_assign_role
from gpucenter.domain.clock import as_utc
from gpucenter.domain.errors import PermissionDenied, ValidationError
from gpucenter.domain.messages import msg
from gpucenter.http.deps import Ctx, CurrentCaller
from gpucenter.http.permissions import requires
from gpucenter.services.identity import admin

router = APIRouter(prefix="/api/v1/admin", tags=["admin"])


def _role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise ValidationError.about("role", msg("error.unknown_role", role=repr(value))) from None


@router.post(
    "/users", status_code=201, response_model=UserOut, dependencies=[requires(Permission.ADMIN)]
)
def create_user(body: UserIn, ctx: Ctx, caller: CurrentCaller) -> UserOut:
    """Make a user who signs in with a password; 422 names what the password policy refuses."""
    view = admin.create_user(
        ctx,
        caller,
        body.username,
        organisation=body.organisation,
        password=body.password,
        display_name=body.display_name,
    )
    return UserOut(
        id=view.id,
        username=view.username,
        display_name=view.display_name,
        organisation_id=view.organisation_id,
        is_admin=view.is_admin,
        created_at=as_utc(view.created_at),
    )


@router.get(
    "/roles", response_model=list[RoleOut], dependencies=[requires(Permission.ROLES_MANAGE)]
)
def list_roles(ctx: Ctx) -> list[RoleOut]:
    return [RoleOut(username=u, role=r) for u, r in admin.centre_roles(ctx)]


@router.post(
    "/roles",
    status_code=201,
    response_model=RoleOut,
    dependencies=[requires(Permission.ROLES_MANAGE)],
)
def grant_role(body: RoleGrantIn, ctx: Ctx, caller: CurrentCaller) -> RoleOut:
    """Give a user a centre-wide role (centre_admin, site_operator, programme_manager)."""
    if not can_assign_role(caller, _role(body.role)):
        raise PermissionDenied.of(msg("error.cannot_grant_role", role=repr(body.role)))
    admin.grant_role(ctx, caller, body.username, body.role)
    return RoleOut(username=body.username, role=body.role)


@router.delete(
    "/roles/{username}/{role}", status_code=204, dependencies=[requires(Permission.ROLES_MANAGE)]
)
def revoke_role(
    username: Annotated[str, Path(max_length=64)],
    role: Annotated[str, Path(max_length=40)],
    ctx: Ctx,
    caller: CurrentCaller,
) -> None:
    if not can_assign_role(caller, _role(role)):
        raise PermissionDenied.of(msg("error.cannot_revoke_role", role=repr(role)))
    admin.revoke_role(ctx, caller, username, role)


@router.get(
    "/audit", response_model=list[AuditEntryOut], dependencies=[requires(Permission.AUDIT_READ)]
)
def audit_log(
    ctx: Ctx,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> list[AuditEntryOut]:
    """The newest entries first; pass the smallest id seen as `before_id` for older ones."""
    return [
        AuditEntryOut(
            id=e.id,
            at=as_utc(e.at),
            actor=e.actor,
            action=e.action,
            target_type=e.target_type,
            target_id=e.target_id,
            details=e.details,
        )
        for e in admin.audit_entries(ctx, limit=limit, before_id=before_id)
    ]


@router.get(
    "/audit/verify", response_model=AuditVerifyOut, dependencies=[requires(Permission.AUDIT_READ)]
)
def audit_verify(ctx: Ctx) -> AuditVerifyOut:
    """Walk the hash chain; name the first entry that was altered or removed."""
    result = admin.verify_audit(ctx)
    return AuditVerifyOut(
        ok=result.ok, entries=result.entries, broken_at=result.broken_at, problem=result.problem
    )
