"""Who may do what: pure functions of the caller and the facts the service loaded."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from gpucenter.domain.errors import PermissionDenied


class Role(StrEnum):
    """Roles held centre-wide or within a programme (project roles live in memberships)."""

    CENTRE_ADMIN = "centre_admin"
    PROGRAMME_MANAGER = "programme_manager"
    REVIEWER = "reviewer"
    SITE_OPERATOR = "site_operator"


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated principal of a request or command.

    `roles` holds (role, programme_id) pairs; programme_id 0 means centre-wide.
    """

    user_id: int
    username: str
    is_admin: bool
    project_ids: frozenset[int]
    roles: frozenset[tuple[Role, int]] = field(default_factory=frozenset)

    def has_role(self, role: Role, programme_id: int | None = None) -> bool:
        """Centre-wide holders qualify everywhere; scoped holders only in their programme."""
        if self.is_admin or (role, 0) in self.roles:
            return True
        return programme_id is not None and (role, programme_id) in self.roles


class Permission(StrEnum):
    """What a route needs. Route-level checks are coarse; services check the resource."""

    PUBLIC = "public"
    SIGN_IN = "sign_in"
    AUTHENTICATED = "authenticated"
    JOBS_SUBMIT = "jobs:submit"
    JOBS_READ = "jobs:read"
    JOBS_CANCEL = "jobs:cancel"
    PROJECTS_READ = "projects:read"
    USAGE_READ = "usage:read"
    SITE_READ = "site:read"
    TEMPLATES_READ = "templates:read"
    TEMPLATES_PUBLISH = "templates:publish"
    ADMIN = "admin"


# Permissions every signed-in user holds; what they reach is then limited by the services
# to their own jobs and projects.
_MEMBER_PERMISSIONS = frozenset(
    {
        Permission.AUTHENTICATED,
        Permission.JOBS_SUBMIT,
        Permission.JOBS_READ,
        Permission.JOBS_CANCEL,
        Permission.PROJECTS_READ,
        Permission.USAGE_READ,
        Permission.SITE_READ,
        Permission.TEMPLATES_READ,
    }
)


def grants(caller: Caller, permission: Permission) -> bool:
    """Whether `caller` holds `permission` at route level."""
    if permission in (Permission.PUBLIC, Permission.SIGN_IN):
        return True
    if caller.is_admin or caller.has_role(Role.CENTRE_ADMIN):
        return True
    return permission in _MEMBER_PERMISSIONS


def can_submit(caller: Caller, project_id: int) -> bool:
    return caller.is_admin or project_id in caller.project_ids


def can_view_job(caller: Caller, owner_id: int, project_id: int) -> bool:
    """Members of a job's project see it; so do admins. Nobody else, not even its existence."""
    return caller.is_admin or caller.user_id == owner_id or project_id in caller.project_ids


def can_cancel_job(caller: Caller, owner_id: int, project_id: int) -> bool:
    return caller.is_admin or caller.user_id == owner_id


def require_admin(caller: Caller) -> None:
    if not caller.is_admin:
        raise PermissionDenied("this action needs the centre admin role")
