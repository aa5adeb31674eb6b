"""The tamper-evident audit log: append an entry in the caller's transaction; verify the chain.

Each entry's hash is an HMAC (under the server's audit key, see `audit_keys`) over its
canonical JSON (time, actor, action, target, details) and the previous entry's hash, so
altering or deleting any row breaks every later link, and nobody without the key, not even
someone who can write the database, can recompute a chain that verifies. A head row in the
database and an append-only head file outside it keep the newest entries' ids and hashes, so
that cutting entries off the end is caught too. Appends are serialised (a transaction-scoped
advisory lock on PostgreSQL; SQLite serialises writers by itself) so that two writers never
chain onto the same predecessor.

Where the key ring and head file are: the session's `info["audit_files"]` (set by
`services.wiring`), else under the configured `var_dir`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event, select, text
from sqlalchemy.orm import Session

from gpucenter.config import get_settings
from gpucenter.persistence.tables_audit import AuditEntryRow
from gpucenter.persistence.tables_security import AuditHeadRow
from gpucenter.services.identity.audit_keys import AuditFiles, KeyRing, SigningKey

GENESIS = "0" * 64
_LOCK_KEY = 0x6770_6361  # "gpca": the advisory lock id for audit appends
_PENDING = "audit_heads_pending"
ROTATED = "audit.key_rotated"


def files_of(s: Session) -> AuditFiles:
    """The key ring and head file this session's server uses."""
    files = s.info.get("audit_files")
    if isinstance(files, AuditFiles):
        return files
    return AuditFiles.under(get_settings().var_dir)


@event.listens_for(Session, "after_commit")
def _write_heads(s: Session) -> None:
    """Committed entries go to the head file; rolled-back ones never do."""
    pending = s.info.pop(_PENDING, None)
    if pending:
        files_of(s).append_heads(pending)


@event.listens_for(Session, "after_soft_rollback")
def _forget_heads(s: Session, previous_transaction: object) -> None:
    s.info.pop(_PENDING, None)


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
    """The unkeyed link of entries written before the log had a key."""
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
    ring = files_of(s).load_or_create(last.id if last is not None else 0, prev)
    key = ring.current
    if last is not None and last.key_id not in (None, key.id) and action != ROTATED:
        # The ring has a newer key than the chain (a rotation whose entry was rolled back):
        # the change of key is always an entry of its own.
        last = _append(
            s,
            key.id,
            ring,
            prev,
            ROTATED,
            None,
            "system",
            at,
            "audit_key",
            key.id,
            {"from": last.key_id, "to": key.id},
        )
        prev = last.hash
    return _append(
        s,
        ring.current.id,
        ring,
        prev,
        action,
        actor_id,
        actor,
        at,
        target_type,
        str(target_id),
        dict(details or {}),
    )


def _append(
    s: Session,
    key_id: str,
    ring: KeyRing,
    prev: str,
    action: str,
    actor_id: int | None,
    actor: str,
    at: datetime,
    target_type: str,
    target_id: str,
    body: dict[str, Any],
) -> AuditEntryRow:
    index = ring.index_of(key_id)
    assert index is not None
    canonical = _canonical(at, actor_id, actor, action, target_type, target_id, body)
    row = AuditEntryRow(
        at=at,
        actor_id=actor_id,
        actor=actor,
        action=action,
        target_type=target_type,
        target_id=target_id,
        details=body,
        prev_hash=prev,
        hash=ring.keys[index].sign(prev, canonical),
        key_id=key_id,
    )
    s.add(row)
    s.flush()
    s.info.setdefault(_PENDING, []).append((row.id, row.hash))
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


def rotate_key(s: Session, actor: Actor, at: datetime) -> str:
    """Take a new audit key into use; the change is an entry of the log, signed with the new
    key. Old keys stay in the ring (the entries they signed must still verify)."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
    files = files_of(s)
    last = s.scalar(select(AuditEntryRow).order_by(AuditEntryRow.id.desc()).limit(1))
    ring = files.load_or_create(
        last.id if last is not None else 0, last.hash if last is not None else GENESIS
    )
    new = SigningKey.new()
    files.save(KeyRing((*ring.keys, new), ring.sealed_id, ring.sealed_hash))
    log(s, ROTATED, actor, at, "audit_key", new.id, {"from": ring.current.id, "to": new.id})
    return new.id


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    entries: int
    broken_at: int | None = None
    problem: str = ""


def verify(s: Session) -> VerifyResult:
    """Walk the chain in id order and report the first entry whose link does not hold; then
    check the newest entries against the database's head row and the head file."""
    files = files_of(s)
    ring = files.load()
    prev, prev_id, count = GENESIS, 0, 0
    key_index: int | None = None
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
        problem, key_index = _check_link(row, prev, canonical, ring, key_index)
        if problem:
            return VerifyResult(False, count, row.id, problem)
        if ring is not None and row.id == ring.sealed_id and row.hash != ring.sealed_hash:
            return VerifyResult(False, count, row.id, f"entry {row.id} was altered")
        prev, prev_id = row.hash, row.id
    if ring is not None and ring.sealed_id > prev_id:
        return VerifyResult(
            False, count, ring.sealed_id, f"entries {prev_id + 1}-{ring.sealed_id} were removed"
        )
    return _check_heads(s, files, count, prev_id, prev)


def _check_link(
    row: AuditEntryRow, prev: str, canonical: str, ring: KeyRing | None, key_index: int | None
) -> tuple[str, int | None]:
    """Why `row` does not verify ("" when it does), and the index of the key now in use."""
    if row.key_id is None:
        if ring is not None and row.id > ring.sealed_id:
            return f"entry {row.id} is not signed with the audit key", key_index
        if entry_hash(prev, canonical) != row.hash:
            return f"entry {row.id} was altered", key_index
        return "", key_index
    if ring is None:
        return (
            f"entry {row.id} is signed with audit key {row.key_id}, but this server has no "
            f"key ring (restore it, or point GPUCENTER_VAR_DIR at the server's state)"
        ), key_index
    index = ring.index_of(row.key_id)
    if index is None:
        return f"entry {row.id} is signed with a key the ring never held", key_index
    if key_index is not None and index < key_index:
        return f"entry {row.id} is signed with a retired key", key_index
    if key_index is not None and index > key_index and row.action != ROTATED:
        return f"entry {row.id} changes the audit key without a rotation entry", key_index
    if not hmac.compare_digest(ring.keys[index].sign(prev, canonical), row.hash):
        return f"entry {row.id} was altered", index
    return "", index


def _check_heads(
    s: Session, files: AuditFiles, count: int, last_id: int, last_hash: str
) -> VerifyResult:
    head = s.get(AuditHeadRow, 1)
    if head is not None and (head.last_id != last_id or head.last_hash != last_hash):
        gone = f"entry {head.last_id}" if head.last_id > last_id else f"the head ({head.last_id})"
        return VerifyResult(
            False,
            count,
            head.last_id,
            f"{gone} was removed: the newest entry is {last_id}, the log had {head.entries}",
        )
    if head is None and count:
        return VerifyResult(False, count, None, "the audit head is missing")
    remembered = files.read_heads()
    if remembered:
        newest = max(remembered)
        if newest > last_id:
            return VerifyResult(
                False,
                count,
                newest,
                f"entries {last_id + 1}-{newest} were removed: the head file outside the "
                "database remembers them",
            )
        query = select(AuditEntryRow.id, AuditEntryRow.hash).where(
            AuditEntryRow.id.in_(list(remembered))
        )
        stored = {entry_id: digest for entry_id, digest in s.execute(query)}
        for entry_id in sorted(remembered):
            if stored.get(entry_id) != remembered[entry_id]:
                return VerifyResult(
                    False,
                    count,
                    entry_id,
                    f"entry {entry_id} is not the one the head file remembers",
                )
    return VerifyResult(True, count)


def entries(s: Session, *, limit: int = 100, before_id: int | None = None) -> list[AuditEntryRow]:
    """The newest entries first; page with `before_id`."""
    stmt = select(AuditEntryRow).order_by(AuditEntryRow.id.desc()).limit(max(1, min(limit, 1000)))
    if before_id is not None:
        stmt = stmt.where(AuditEntryRow.id < before_id)
    return list(s.scalars(stmt))


__all__ = [
    "GENESIS",
    "ROTATED",
    "SYSTEM",
    "Actor",
    "VerifyResult",
    "entries",
    "entry_hash",
    "record",
    "rotate_key",
    "verify",
]
