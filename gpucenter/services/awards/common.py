"""What the after-award use cases share: who acted, the audit entry of every state change,
notices to people, and the rows an award hangs on.

Why one `move` for award states: every change of an award's state must be allowed by the
life cycle (`allocation.lifecycle.AWARD_MOVES`) and written to the audit log with its actor
(a person, or "system" for what the leader does on a deadline). Going through one function
makes that true by construction rather than by each use case remembering it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn

from sqlalchemy import select
from sqlalchemy.orm import Session

from gpucenter.allocation.lifecycle import AWARD_MOVES, AwardState, check
from gpucenter.auth.permissions import Caller, Role
from gpucenter.domain.errors import NotFound, PermissionDenied
from gpucenter.domain.messages import Message, msg
from gpucenter.persistence.tables import MembershipRow, UserRow
from gpucenter.persistence.tables_accounting import NotificationRow
from gpucenter.persistence.tables_allocation import ApplicationRow, AwardRow, CallRow
from gpucenter.persistence.tables_audit import RoleAssignmentRow
from gpucenter.services.identity import audit
from gpucenter.services.programmes import calls as prog

# Notifications of this kind are e-mailed like budget alerts (`budgets.deliver_email`).
MAIL_KIND = "award"


@dataclass(frozen=True, slots=True)
class Who:
    """The actor of a change, as the audit log names it."""

    id: int | None
    name: str

    @classmethod
    def of(cls, caller: Caller) -> Who:
        return cls(caller.user_id, caller.username)


SYSTEM = Who(None, "system")


def record(
    s: Session,
    who: Who,
    action: str,
    now: datetime,
    kind: str,
    target: object,
    details: Mapping[str, Any] | None = None,
) -> None:
    audit.record(
        s,
        action,
        actor_id=who.id,
        actor=who.name,
        at=now,
        target_type=kind,
        target_id=target,
        details=details,
    )


def move(
    s: Session, award: AwardRow, new: AwardState, who: Who, now: datetime, **details: Any
) -> None:
    """Change an award's state along the life cycle, audited as from -> to with its actor."""
    old = AwardState(award.state)
    check(AWARD_MOVES, msg("thing.award", id=award.id), old, new)
    award.state = new.value
    s.flush()
    record(
        s, who, f"award.{new.value}", now, "award", award.id, {"from": old, "to": new, **details}
    )


def notify(s: Session, user_ids: Iterable[int], subject: str, body: str, now: datetime) -> None:
    """An in-app notification to each user (once each), e-mailed where SMTP is set up."""
    for uid in dict.fromkeys(user_ids):
        s.add(
            NotificationRow(
                user_id=uid, kind=MAIL_KIND, subject=subject[:300], body=body, created_at=now
            )
        )
    s.flush()


def project_people(s: Session, project_id: int) -> list[int]:
    return list(
        s.scalars(select(MembershipRow.user_id).where(MembershipRow.project_id == project_id))
    )


def managers_of(s: Session, programme_id: int) -> list[int]:
    """The programme's managers (centre-wide managers too)."""
    return list(
        s.scalars(
            select(RoleAssignmentRow.user_id).where(
                RoleAssignmentRow.role == Role.PROGRAMME_MANAGER.value,
                (
                    (RoleAssignmentRow.scope_kind == "programme")
                    & (RoleAssignmentRow.scope_id == programme_id)
                )
                | (RoleAssignmentRow.scope_kind == "centre"),
            )
        )
    )


def signatories_of(s: Session, organisation_id: int) -> list[int]:
    """Users of the organisation who sign agreements for it."""
    return list(
        s.scalars(
            select(RoleAssignmentRow.user_id)
            .join(UserRow, UserRow.id == RoleAssignmentRow.user_id)
            .where(
                RoleAssignmentRow.role == Role.ORG_SIGNATORY.value,
                UserRow.organisation_id == organisation_id,
            )
        )
    )


def award_row(s: Session, award_id: int) -> AwardRow:
    row = s.get(AwardRow, award_id)
    if row is None:
        raise NotFound("award", award_id)
    return row


def call_of(s: Session, award: AwardRow) -> CallRow:
    return prog.call_row(s, award.call_id)


def application_of(s: Session, award: AwardRow) -> ApplicationRow:
    app = s.get(ApplicationRow, award.application_id)
    assert app is not None
    return app


def is_pi(s: Session, caller: Caller, award: AwardRow) -> bool:
    """The applicant, or a member holding the PI role on the award's project."""
    if application_of(s, award).applicant_id == caller.user_id:
        return True
    role = s.scalar(
        select(MembershipRow.role).where(
            MembershipRow.project_id == award.project_id, MembershipRow.user_id == caller.user_id
        )
    )
    return role == Role.PI.value


def is_manager(s: Session, caller: Caller, award: AwardRow) -> bool:
    return caller.has_role(Role.PROGRAMME_MANAGER, call_of(s, award).programme_id)


def is_signatory(s: Session, caller: Caller, award: AwardRow) -> bool:
    """An organisation signatory of the award's (applicant's) organisation."""
    return (
        (Role.ORG_SIGNATORY, 0) in caller.roles
        and caller.organisation_id is not None
        and caller.organisation_id == application_of(s, award).organisation_id
    )


def may_see(s: Session, caller: Caller, award: AwardRow) -> bool:
    """Whether `caller` may know that `award` exists: its PI and project members, its
    programme's managers and its organisation's signatories."""
    return (
        award.project_id in caller.project_ids
        or is_pi(s, caller, award)
        or is_manager(s, caller, award)
        or is_signatory(s, caller, award)
    )


def visible_award(s: Session, caller: Caller, award_id: int) -> AwardRow:
    """The award for those who may see it (`may_see`); NotFound for anyone else (its
    existence does not leak)."""
    award = award_row(s, award_id)
    if may_see(s, caller, award):
        return award
    raise NotFound("award", award_id)


Asked = tuple[str, object]
"""What the caller asked for, as NotFound names it: ("award", 7), ("report", 12)."""


def refuse(s: Session, caller: Caller, award: AwardRow, why: Message, asked: Asked) -> NoReturn:
    """Refuse an action on `award` (or on something of it, `asked`): NotFound for whoever
    may not see the award, so that an outsider's answer is the same for a real id and a
    made-up one (ids are sequential); PermissionDenied saying `why` for the others."""
    if not may_see(s, caller, award):
        raise NotFound(*asked)
    raise PermissionDenied.of(why)


def require_pi(s: Session, caller: Caller, award: AwardRow, asked: Asked | None = None) -> None:
    if not is_pi(s, caller, award):
        refuse(s, caller, award, msg("error.award_pi_only"), asked or ("award", award.id))


def require_manager(
    s: Session, caller: Caller, award: AwardRow, asked: Asked | None = None
) -> None:
    """A manager of the award's programme (an admin too); NotFound for those who may not
    see the award, PermissionDenied for the rest."""
    if not is_manager(s, caller, award) and not may_see(s, caller, award):
        kind, key = asked or ("award", award.id)
        raise NotFound(kind, key)
    prog.require_manager(caller, call_of(s, award).programme_id)


def quarter_of(when: datetime) -> str:
    return f"{when.year}Q{(when.month - 1) // 3 + 1}"
