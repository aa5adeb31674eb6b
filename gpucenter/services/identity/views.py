"""Users, organisations and audit entries as pages and routes read them: frozen copies.

Why: a `UserRow` carries the password hash, and any row carries its session; what leaves
the services is only what a reader is meant to see. Field names are the rows', so templates
read the same attributes as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gpucenter.persistence.tables import OrganisationRow, UserRow
from gpucenter.persistence.tables_audit import AuditEntryRow


@dataclass(frozen=True, slots=True)
class UserView:
    id: int
    username: str
    display_name: str
    organisation_id: int | None
    is_admin: bool
    created_at: datetime

    @classmethod
    def of(cls, row: UserRow) -> UserView:
        return cls(
            row.id,
            row.username,
            row.display_name,
            row.organisation_id,
            row.is_admin,
            row.created_at,
        )


@dataclass(frozen=True, slots=True)
class OrganisationView:
    """An organisation: its name and kind (the applicant type its applications carry)."""

    id: int
    name: str
    kind: str

    @classmethod
    def of(cls, row: OrganisationRow) -> OrganisationView:
        return cls(row.id, row.name, row.kind)


@dataclass(frozen=True, slots=True)
class AuditEntryView:
    """One entry of the audit log as stored (`at` as the database gave it)."""

    id: int
    at: datetime
    actor_id: int | None
    actor: str
    action: str
    target_type: str
    target_id: str
    details: dict[str, Any]

    @classmethod
    def of(cls, row: AuditEntryRow) -> AuditEntryView:
        return cls(
            row.id,
            row.at,
            row.actor_id,
            row.actor,
            row.action,
            row.target_type,
            row.target_id,
            row.details,
        )


__all__ = ["AuditEntryView", "OrganisationView", "UserView"]
