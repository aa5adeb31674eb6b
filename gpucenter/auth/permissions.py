"""Who may do what: pure functions of the caller and the facts the service loaded."""

from __future__ import annotations

from dataclasses import dataclass

from gpucenter.domain.errors import PermissionDenied


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated principal of a request or command."""

    user_id: int
    username: str
    is_admin: bool
    project_ids: frozenset[int]


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
