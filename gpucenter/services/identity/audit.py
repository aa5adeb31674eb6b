"""The tamper-evident audit log: append an entry in the caller's transaction; verify the chain.

Each entry's hash is SHA-256 over its canonical JSON (time, actor, action, target, details)
and the previous entry's hash, so altering or deleting any row breaks every later link.
A separate head row keeps the newest entry's id and hash, so that cutting entries off the end
is caught too. Appends are serialised (a transaction-scoped advisory lock on PostgreSQL;
SQLite serialises writers by itself) so that two writers never chain onto the same predecessor.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from gpucenter.persistence.tables_audit import AuditEntryRow
from gpucenter.persistence.tables_security import AuditHeadRow

GENESIS = "0" * 64
_LOCK_KEY = 0x6770_6361  # "gpca": the advisory lock id for audit appends


def _canonical(
    at: datetime,
    actor_id: int | None,
    actor: str,
    action: str,
    target_type: str,
    target_id: str,
    details: Mapping[str, Any],
) -> str:
    stamp = at.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")
    return json.dumps(
        [stamp, actor_id, actor, action, target_type, target_id, details],
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )


def entry_hash(prev_hash: str, canonical: str) -> str:
    return hashlib.sha256((prev_hash + "\n" + canonical).encode()).hexdigest()


def record(
    s: Session,
    action: str,
    *,
    actor_id: int | None,
    actor: str,
    at: datetime,
    target_type: str = "",
    target_id: object = "",
    details: Mapping[str, Any] | None = None,
) -> AuditEntryRow:
    """Append one entry inside the current transaction (it commits or rolls back with it)."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
    last = s.scalar(select(AuditEntryRow).order_by(AuditEntryRow.id.desc()).limit(1))
    prev = last.hash if last is not None else GENESIS
    body = dict(details or {})
    canonical = _canonical(at, actor_id, actor, action, target_type, str(target_id), body)
    row = AuditEntryRow(
        at=at,
        actor_id=actor_id,
        actor=actor,
        action=action,
        target_type=target_type,
        target_id=str(target_id),
        details=body,
        prev_hash=prev,
        hash=entry_hash(prev, canonical),
    )
    s.add(row)
    s.flush()
    head = s.get(AuditHeadRow, 1)
    if head is None:
        s.add(AuditHeadRow(id=1, last_id=row.id, last_hash=row.hash, entries=1))
    else:
        head.last_id, head.last_hash, head.entries = row.id, row.hash, head.entries + 1
    s.flush()
    return row


@dataclass(frozen=True, slots=True)
class Actor:
    """Who did something, for the log: a user, or a named system actor (the admin CLI)."""

    id: int | None
    name: str

    @classmethod
    def of(cls, caller: Any) -> Actor:
        return cls(caller.user_id, caller.username)


SYSTEM = Actor(None, "system")


def log(
    s: Session,
    action: str,
    actor: Actor,
    at: datetime,
    target_type: str = "",
    target_id: object = "",
    details: Mapping[str, Any] | None = None,
) -> AuditEntryRow:
    """`record` for callers that carry an Actor."""
    return record(
        s,
        action,
        actor_id=actor.id,
        actor=actor.name,
        at=at,
        target_type=target_type,
        target_id=target_id,
        details=details,
    )


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    entries: int
    broken_at: int | None = None
    problem: str = ""


def verify(s: Session) -> VerifyResult:
    """Walk the chain in id order; report the first entry whose link does not hold, then
    check that the newest entry is the one the head row remembers."""
    prev = GENESIS
    prev_id = 0
    count = 0
    for row in s.scalars(select(AuditEntryRow).order_by(AuditEntryRow.id)):
        count += 1
        if row.prev_hash != prev:
            missing = (
                f"entry {prev_id + 1}" if row.id == prev_id + 2 else f"entries after {prev_id}"
            )
            return VerifyResult(
                False,
                count,
                row.id,
                f"entry {row.id} does not follow the entry before it: {missing} "
                "was removed, or the chain was reordered",
            )
        at = row.at if row.at.tzinfo else row.at.replace(tzinfo=UTC)
        canonical = _canonical(
            at, row.actor_id, row.actor, row.action, row.target_type, row.target_id, row.details
        )
        if entry_hash(prev, canonical) != row.hash:
            return VerifyResult(False, count, row.id, f"entry {row.id} was altered")
        prev, prev_id = row.hash, row.id
    head = s.get(AuditHeadRow, 1)
    if head is not None and (head.last_id != prev_id or head.last_hash != prev):
        gone = f"entry {head.last_id}" if head.last_id > prev_id else f"the head ({head.last_id})"
        return VerifyResult(
            False,
            count,
            head.last_id,
            f"{gone} was removed: the newest entry is {prev_id}, the log had {head.entries}",
        )
    if head is None and count:
        return VerifyResult(False, count, None, "the audit head is missing")
    return VerifyResult(True, count)


def entries(s: Session, *, limit: int = 100, before_id: int | None = None) -> list[AuditEntryRow]:
    """The newest entries first; page with `before_id`."""
    stmt = select(AuditEntryRow).order_by(AuditEntryRow.id.desc()).limit(max(1, min(limit, 1000)))
    if before_id is not None:
        stmt = stmt.where(AuditEntryRow.id < before_id)
    return list(s.scalars(stmt))
