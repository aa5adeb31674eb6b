"""Who may do what: pure functions of the caller and the facts the service loaded.

Nothing here reads the database or the request: services load the facts (the job's owner,
the project's members) and ask these functions, so that every rule can be tested alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from gpucenter.domain.errors import PermissionDenied, ValidationError
from gpucenter.domain.messages import msg


class Role(StrEnum):
    """Roles held centre-wide or within a programme; PI and member are held in a project
    (they live in memberships, and are listed here so that one enum names every role)."""

    CENTRE_ADMIN = "centre_admin"
    PROGRAMME_MANAGER = "programme_manager"
    REVIEWER = "reviewer"
    SITE_OPERATOR = "site_operator"
    # Signs award agreements for their own organisation, where a programme asks for it.
    ORG_SIGNATORY = "org_signatory"
    PI = "pi"
    MEMBER = "member"


# Roles an admin grants centre-wide with `gpucenter admin role grant` or the admin API.
CENTRE_ROLES = frozenset(
    {Role.CENTRE_ADMIN, Role.SITE_OPERATOR, Role.PROGRAMME_MANAGER, Role.ORG_SIGNATORY}
)
PROJECT_ROLES = frozenset({Role.PI, Role.MEMBER})


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated principal of a request or command.

    `roles` holds (role, programme_id) pairs; programme_id 0 means centre-wide. `scopes` is
    None for a full-power credential (a password sign-in, the CLI's own token) and otherwise
    the permissions a scoped API token was limited to when it was made.
    """

    user_id: int
    username: str
    is_admin: bool
    project_ids: frozenset[int]
    roles: frozenset[tuple[Role, int]] = field(default_factory=frozenset)
    scopes: frozenset[str] | None = None
    organisation_id: int | None = None
    token_id: int | None = None

    def has_role(self, role: Role, programme_id: int | None = None) -> bool:
        """Centre-wide holders qualify everywhere; scoped holders only in their programme."""
        if self.is_admin or (role, 0) in self.roles:
            return True
        return programme_id is not None and (role, programme_id) in self.roles

    @property
    def is_centre_admin(self) -> bool:
        return self.is_admin or (Role.CENTRE_ADMIN, 0) in self.roles


class Permission(StrEnum):
    """What a route needs. Route-level checks are coarse; services check the resource.

    The values double as API token scopes (`jobs:read`, `tokens:write`, ...).
    """

    PUBLIC = "public"
    SIGN_IN = "sign_in"
    AUTHENTICATED = "authenticated"
    JOBS_SUBMIT = "jobs:submit"
    JOBS_READ = "jobs:read"
    JOBS_CANCEL = "jobs:cancel"
    PROJECTS_READ = "projects:read"
    PROJECTS_WRITE = "projects:write"  # a project's settings (its PI: output sharing)
    USAGE_READ = "usage:read"
    SITE_READ = "site:read"
    TEMPLATES_READ = "templates:read"
    TEMPLATES_PUBLISH = "templates:publish"
    PROGRAMMES = "programmes"
    TOKENS_READ = "tokens:read"
    TOKENS_WRITE = "tokens:write"
    ACCOUNT_SECURITY = "account:security"
    AUDIT_READ = "audit:read"
    ROLES_MANAGE = "roles:manage"
    ADMIN = "admin"


_OPEN = frozenset({Permission.PUBLIC, Permission.SIGN_IN})

# Permissions every signed-in user holds; what they reach is then limited by the services
# to their own jobs, projects, applications and reviews.
_MEMBER_PERMISSIONS = frozenset(
    {
        Permission.AUTHENTICATED,
        Permission.JOBS_SUBMIT,
        Permission.JOBS_READ,
        Permission.JOBS_CANCEL,
        Permission.PROJECTS_READ,
        Permission.PROJECTS_WRITE,
        Permission.USAGE_READ,
        Permission.SITE_READ,
        Permission.TEMPLATES_READ,
        Permission.PROGRAMMES,
        Permission.TOKENS_READ,
        Permission.TOKENS_WRITE,
        Permission.ACCOUNT_SECURITY,
    }
)

# Extra permissions a centre-wide role brings (the centre admin holds every permission).
_ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.SITE_OPERATOR: frozenset({Permission.AUDIT_READ}),
    Role.PROGRAMME_MANAGER: frozenset(),
}

# A token scoped to these can never widen itself: making or changing credentials needs them.
SENSITIVE_SCOPES = frozenset({Permission.TOKENS_WRITE, Permission.ACCOUNT_SECURITY})


def _role_grants(caller: Caller, permission: Permission) -> bool:
    if caller.is_centre_admin:
        return True
    if permission in _MEMBER_PERMISSIONS:
        return True
    return any(
        permission in _ROLE_PERMISSIONS.get(role, frozenset())
        for role, scope in caller.roles
        if scope == 0
    )


def grants(caller: Caller, permission: Permission) -> bool:
    """Whether `caller` holds `permission` at route level: its roles allow it and, for a
    scoped token, the token's scopes include it (scopes limit admins too)."""
    if permission in _OPEN:
        return True
    if not _role_grants(caller, permission):
        return False
    if caller.scopes is None or permission is Permission.AUTHENTICATED:
        return True
    return permission.value in caller.scopes


def grantable_scopes(caller: Caller) -> frozenset[Permission]:
    """The scopes `caller` may put on a new token: no more than it holds itself."""
    return frozenset(
        p
        for p in Permission
        if p not in _OPEN and p is not Permission.AUTHENTICATED
        if grants(caller, p)
    )


def check_scopes(caller: Caller, requested: Iterable[str]) -> frozenset[str]:
    """Validate the scopes asked for a new token; raise naming the first one not allowed."""
    allowed = {p.value for p in grantable_scopes(caller)}
    known = {p.value for p in Permission}
    wanted = frozenset(requested)
    if not wanted:
        raise ValidationError.about("scopes", msg("error.scopes_empty"))
    for scope in sorted(wanted):
        if scope not in known:
            raise ValidationError.about("scopes", msg("error.unknown_scope", scope=repr(scope)))
        if scope not in allowed:
            raise PermissionDenied.of(msg("error.cannot_grant_scope", scope=repr(scope)))
    return wanted


def can_view_job(caller: Caller, owner_id: int, project_id: int) -> bool:
    """Members of a job's project see it; so do admins. Nobody else, not even its existence."""
    return caller.is_admin or caller.user_id == owner_id or project_id in caller.project_ids


def can_read_job_output(
    caller: Caller, owner_id: int, project_id: int, project_shares_outputs: bool
) -> bool:
    """A job's logs and outputs: its owner's (and the centre admins'); its project's other
    members' only where the project shares its outputs (issue 17)."""
    if caller.is_admin or caller.user_id == owner_id:
        return True
    return project_shares_outputs and project_id in caller.project_ids


def can_cancel_job(caller: Caller, owner_id: int, project_id: int) -> bool:
    return caller.is_admin or caller.user_id == owner_id


def can_manage_token(caller: Caller, token_owner_id: int) -> bool:
    """Users manage their own tokens; centre admins may revoke anyone's (a leaked token)."""
    return caller.user_id == token_owner_id or caller.is_centre_admin


def can_assign_role(caller: Caller, role: Role) -> bool:
    """Only a centre admin hands out centre-wide roles (programme roles are the programme
    service's business, project roles the PI's)."""
    return role in CENTRE_ROLES and caller.is_centre_admin


def require_admin(caller: Caller) -> None:
    if not caller.is_admin:
        raise PermissionDenied.of(msg("error.needs_centre_admin"))
