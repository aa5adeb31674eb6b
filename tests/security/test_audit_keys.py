"""The audit chain is keyed: someone who can write the database but cannot read the server's
key ring cannot rewrite the log so that it verifies, nor cut entries off its end."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, text

from gpucenter.config import Settings
from gpucenter.persistence.tables_audit import AuditEntryRow
from gpucenter.services.context import AppContext
from gpucenter.services.identity import audit
from gpucenter.services.identity.audit_keys import AuditFiles, SigningKey
from tests.factories import make_context, seed_centre
from tests.security.test_audit_log import _drop_guard


@pytest.fixture
def ctx(settings: Settings) -> Iterator[AppContext]:
    ctx = make_context(settings)
    seed_centre(ctx)  # a dozen audited creations
    yield ctx
    ctx.dispatcher.shutdown()
    ctx.engine.dispose()


def _rewrite(ctx: AppContext, sign: object, key_id: str | None, drop_last: int = 0) -> None:
    """What an attacker with write access to the database does: change an entry, recompute
    every link after it with `sign(prev, canonical)`, and fix the head row to match."""
    with ctx.engine.begin() as conn:
        _drop_guard(conn, ctx.engine.dialect.name)
    with ctx.sessions.begin() as s:
        rows = list(s.scalars(select(AuditEntryRow).order_by(AuditEntryRow.id)))
        if drop_last:
            for row in rows[-drop_last:]:
                s.delete(row)
            rows = rows[:-drop_last]
        rows[len(rows) // 2].actor = "mallory"
        prev = audit.GENESIS
        for row in rows:
            canonical = audit._canonical(
                row.at if row.at.tzinfo else row.at.replace(tzinfo=UTC),
                row.actor_id,
                row.actor,
                row.action,
                row.target_type,
                row.target_id,
                row.details,
            )
            row.prev_hash = prev
            row.hash = sign(prev, canonical)  # type: ignore[operator]
            row.key_id = key_id
            prev = row.hash
        s.flush()
        s.execute(
            text("UPDATE audit_head SET last_id = :i, last_hash = :h, entries = :n"),
            {"i": rows[-1].id, "h": prev, "n": len(rows)},
        )


def test_the_log_is_keyed_and_verifies(ctx: AppContext) -> None:
    with ctx.sessions.begin() as s:
        result = audit.verify(s)
        rows = list(s.scalars(select(AuditEntryRow)))
    assert result.ok and result.entries == len(rows) >= 10
    files = AuditFiles.under(ctx.settings.var_dir)
    ring = files.load()
    assert ring is not None and {r.key_id for r in rows} == {ring.current.id}
    assert oct(files.key_ring.stat().st_mode & 0o777) == "0o600"
    assert oct(files.key_ring.parent.stat().st_mode & 0o777) == "0o700"
    assert set(files.read_heads()) == {r.id for r in rows}


def test_a_chain_recomputed_without_the_key_fails(ctx: AppContext) -> None:
    # As plain SHA-256 links, the way the log was kept before it had a key.
    _rewrite(ctx, audit.entry_hash, None)
    with ctx.sessions.begin() as s:
        result = audit.verify(s)
    assert not result.ok and "not signed with the audit key" in result.problem, result


def test_a_chain_recomputed_with_a_guessed_key_fails(ctx: AppContext) -> None:
    ring = AuditFiles.under(ctx.settings.var_dir).load()
    assert ring is not None
    guess = SigningKey(ring.current.id, secrets.token_bytes(32), "")
    _rewrite(ctx, guess.sign, ring.current.id)
    with ctx.sessions.begin() as s:
        result = audit.verify(s)
    assert not result.ok and result.broken_at == 1 and "was altered" in result.problem


def test_the_check_itself_accepts_a_chain_recomputed_with_the_real_key(ctx: AppContext) -> None:
    """The attacks above fail for want of the key, not for another reason: with the key the
    same rewrite passes every link and HMAC, and only the head file outside the database
    (whose remembered hashes no longer match) objects."""
    ring = AuditFiles.under(ctx.settings.var_dir).load()
    assert ring is not None
    _rewrite(ctx, ring.current.sign, ring.current.id)
    with ctx.sessions.begin() as s:
        result = audit.verify(s)
    assert not result.ok and "head file remembers" in result.problem, result


def test_a_truncated_chain_fails_through_the_head_file(ctx: AppContext) -> None:
    ring = AuditFiles.under(ctx.settings.var_dir).load()
    assert ring is not None
    with ctx.sessions.begin() as s:
        last = max(s.scalars(select(AuditEntryRow.id)))
    with ctx.engine.begin() as conn:
        _drop_guard(conn, ctx.engine.dialect.name)
        conn.execute(text("DELETE FROM audit_log WHERE id > :i"), {"i": last - 3})
        row = conn.execute(text("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1")).one()
        conn.execute(
            text("UPDATE audit_head SET last_id = :i, last_hash = :h"),
            {"i": row[0], "h": row[1]},
        )
    with ctx.sessions.begin() as s:
        result = audit.verify(s)
    assert not result.ok and f"entries {last - 2}-{last} were removed" in result.problem


def test_rotation_is_recorded_and_a_retired_key_cannot_sign_on(ctx: AppContext) -> None:
    files = AuditFiles.under(ctx.settings.var_dir)
    old = files.load()
    assert old is not None
    now = datetime.now(tz=UTC)
    with ctx.sessions.begin() as s:
        new_id = audit.rotate_key(s, audit.SYSTEM, now)
        audit.log(s, "test.after_rotation", audit.SYSTEM, now)
    with ctx.sessions.begin() as s:
        assert audit.verify(s).ok
        rows = list(s.scalars(select(AuditEntryRow).order_by(AuditEntryRow.id)))
    assert rows[-2].action == audit.ROTATED and rows[-2].key_id == new_id
    assert rows[-1].key_id == new_id and rows[0].key_id == old.current.id
    # Someone holding the old key appends an entry signed with it.
    with ctx.sessions.begin() as s:
        prev = rows[-1].hash
        canonical = audit._canonical(now, None, "system", "forged", "", "", {})
        forged = AuditEntryRow(
            at=now,
            actor_id=None,
            actor="system",
            action="forged",
            target_type="",
            target_id="",
            details={},
            prev_hash=prev,
            hash=old.current.sign(prev, canonical),
            key_id=old.current.id,
        )
        s.add(forged)
        s.flush()
        s.execute(
            text("UPDATE audit_head SET last_id = :i, last_hash = :h"),
            {"i": forged.id, "h": forged.hash},
        )
    with ctx.sessions.begin() as s:
        result = audit.verify(s)
    assert not result.ok and "retired key" in result.problem


def test_entries_from_before_the_key_are_sealed(settings: Settings) -> None:
    """A log kept by an older gpucenter (plain SHA-256 links) is sealed when the key ring is
    made: it still verifies, and rewriting the old entries is caught."""
    ctx = make_context(settings)
    now = datetime.now(tz=UTC)
    with ctx.sessions.begin() as s:
        prev = audit.GENESIS
        for n in range(3):
            canonical = audit._canonical(now, None, "system", f"old.{n}", "", "", {})
            row = AuditEntryRow(
                at=now,
                actor_id=None,
                actor="system",
                action=f"old.{n}",
                target_type="",
                target_id="",
                details={},
                prev_hash=prev,
                hash=audit.entry_hash(prev, canonical),
                key_id=None,
            )
            s.add(row)
            s.flush()
            prev = row.hash
        s.execute(
            text("INSERT INTO audit_head (id, last_id, last_hash, entries) VALUES (1, :i, :h, 3)"),
            {"i": row.id, "h": prev},
        )
    assert AuditFiles.under(settings.var_dir).load() is None
    seed_centre(ctx)  # the first keyed entries make the ring, sealing entries 1-3
    ring = AuditFiles.under(settings.var_dir).load()
    assert ring is not None and ring.sealed_id == row.id and ring.sealed_hash == prev
    with ctx.sessions.begin() as s:
        assert audit.verify(s).ok
    with ctx.engine.begin() as conn:
        _drop_guard(conn, ctx.engine.dialect.name)
        first = audit._canonical(now, None, "mallory", "old.0", "", "", {})
        conn.execute(
            text("UPDATE audit_log SET actor = 'mallory', hash = :h WHERE action = 'old.0'"),
            {"h": hashlib.sha256((audit.GENESIS + "\n" + first).encode()).hexdigest()},
        )
    with ctx.sessions.begin() as s:
        result = audit.verify(s)
    assert not result.ok
    ctx.dispatcher.shutdown()
    ctx.engine.dispose()
