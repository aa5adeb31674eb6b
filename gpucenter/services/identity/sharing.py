"""A project's output sharing (issue 17): whether its jobs' outputs are readable by the
project's group (new runs' directories 2750 setgid and files 0640, the job's umask 027; the
API's logs by its members), or their owner's alone (0700/0600, umask 077: the default).

Changed by the project's PI (or a centre admin), through the API, the portal and the CLI;
every change is audited. It applies to runs that start after the change: a run's modes are
set when its directory is made.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from gpucenter.auth.permissions import Caller, Role
from gpucenter.domain.errors import NotFound, PermissionDenied
from gpucenter.domain.messages import msg
from gpucenter.persistence.tables import MembershipRow, ProjectRow
from gpucenter.services.context import AppContext
from gpucenter.services.identity import audit
from gpucenter.services.identity.audit import Actor

__all__ = ["CHANGED", "Sharing", "can_change_sharing", "get_sharing", "set_sharing"]

CHANGED = "project.share_outputs"


@dataclass(frozen=True, slots=True)
class Sharing:
    project_id: int
    project: str
    share_outputs: bool
    can_change: bool


def _project(s: Session, caller: Caller, name_or_id: str | int) -> ProjectRow:
    if isinstance(name_or_id, int):
        row = s.get(ProjectRow, name_or_id)
    else:
        row = s.scalar(select(ProjectRow).where(ProjectRow.name == name_or_id))
    if row is None or not (caller.is_admin or row.id in caller.project_ids):
        raise NotFound("project", name_or_id)
    return row


def can_change_sharing(s: Session, caller: Caller, project_id: int) -> bool:
    """The project's PI, or a centre admin."""
    if caller.is_admin:
        return True
    role = s.scalar(
        select(MembershipRow.role).where(
            MembershipRow.project_id == project_id, MembershipRow.user_id == caller.user_id
        )
    )
    return role == Role.PI.value


def get_sharing(ctx: AppContext, caller: Caller, project: str | int) -> Sharing:
    """The project's setting, for its members and admins (NotFound for anyone else)."""
    with ctx.sessions.begin() as s:
        row = _project(s, caller, project)
        return Sharing(row.id, row.name, row.share_outputs, can_change_sharing(s, caller, row.id))


def set_sharing(ctx: AppContext, caller: Caller, project: str | int, share: bool) -> Sharing:
    """Turn the project's output sharing on or off (its PI or a centre admin); audited."""
    with ctx.sessions.begin() as s:
        row = _project(s, caller, project)
        if not can_change_sharing(s, caller, row.id):
            raise PermissionDenied.of(msg("error.sharing_not_pi", project=row.name))
        if row.share_outputs != share:
            details = {"project": row.name, "from": row.share_outputs, "to": share}
            row.share_outputs = share
            audit.log(s, CHANGED, Actor.of(caller), ctx.now(), "project", row.id, details)
        return Sharing(row.id, row.name, row.share_outputs, True)
