"""A short-lived, per-process cache of resolved API tokens.

Resolving a bearer token costs four queries (token, user, scopes, roles and memberships);
a client that submits hundreds of jobs a second would pay them on every request. The cache
keeps the resolved Caller for `ttl_s` seconds (monotonic time) per token digest.

Why this is safe:
- Expiry is checked on every hit against the token's own expiry (on the caller's clock).
- Any change made through this process's sessions to tokens, users, memberships, roles or
  token scopes empties every cache at once (a session event below), so in one process a
  revocation or a removed membership takes effect on the next request.
- Changes made by another server process are seen within `ttl_s`; writes that must not act
  on a revoked token (job submission) re-check revocation and membership in their own
  transaction, so the window only affects reads.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.orm import Session, UOWTransaction

from gpucenter.auth.permissions import Caller

DEFAULT_TTL_S = 2.0
MAX_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class _Entry:
    caller: Caller
    expires_at: datetime | None
    loaded_at: float


class TokenCache:
    """Digest -> resolved Caller, each kept for at most `ttl_s` seconds."""

    def __init__(self, ttl_s: float = DEFAULT_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._generation = 0

    def get(self, digest: str, now: datetime) -> Caller | None:
        found = self.lookup(digest, now)
        return None if found is None else found[0]

    def lookup(self, digest: str, now: datetime) -> tuple[Caller, float] | None:
        """The cached caller and its age in seconds; None when absent or lapsed."""
        if self.ttl_s <= 0:
            return None
        entry = self._entries.get(digest)
        if entry is None:
            return None
        age = time.monotonic() - entry.loaded_at
        if age >= self.ttl_s or (entry.expires_at is not None and entry.expires_at <= now):
            self._entries.pop(digest, None)
            return None
        return entry.caller, age

    @property
    def generation(self) -> int:
        """Bumped by every clear: a resolution that began before a clear must not put back
        what the clear removed (a revocation landing while it was in flight)."""
        return self._generation

    def put(
        self,
        digest: str,
        caller: Caller,
        expires_at: datetime | None,
        generation: int | None = None,
    ) -> None:
        """Keep `caller`; ignored where `generation` (read before resolving) is no longer
        the cache's, since the answer may predate a change that emptied the cache."""
        if self.ttl_s <= 0:
            return
        with self._lock:
            if generation is not None and generation != self._generation:
                return
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()  # bounded memory; a burst of misses refills it
            self._entries[digest] = _Entry(caller, expires_at, time.monotonic())

    def drop(self, digest: str) -> None:
        with self._lock:
            self._entries.pop(digest, None)

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries.clear()


_CACHES: weakref.WeakKeyDictionary[Engine, TokenCache] = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def cache_for(engine: Engine, ttl_s: float = DEFAULT_TTL_S) -> TokenCache:
    """The cache of one database (tokens live there, so one cache per engine)."""
    cache = _CACHES.get(engine)
    if cache is None:
        with _CACHES_LOCK:
            cache = _CACHES.get(engine)
            if cache is None:
                cache = _CACHES[engine] = TokenCache(ttl_s)
    cache.ttl_s = ttl_s
    return cache


def clear_all() -> None:
    for cache in list(_CACHES.values()):
        cache.clear()


_WATCHED_TABLES = frozenset(
    {"api_tokens", "users", "memberships", "role_assignments", "api_token_scopes"}
)


def _touches_identity(objects: Any) -> bool:
    for obj in objects:
        table = getattr(obj, "__tablename__", None)
        if table in _WATCHED_TABLES:
            return True
    return False


@event.listens_for(Session, "after_flush")
def _after_flush(session: Session, _flush: UOWTransaction) -> None:
    """ORM writes to identity tables empty the caches (cheap: it only clears dicts)."""
    if (
        _touches_identity(session.new)
        or _touches_identity(session.dirty)
        or _touches_identity(session.deleted)
    ):
        clear_all()


@event.listens_for(Session, "do_orm_execute")
def _bulk_writes(state: Any) -> None:
    """Bulk UPDATE/DELETE/INSERT statements on identity tables do the same."""
    if not (state.is_update or state.is_delete or state.is_insert):
        return
    table = getattr(state.statement, "table", None)
    if getattr(table, "name", None) in _WATCHED_TABLES:
        clear_all()


__all__ = [
    "cache_for",
    "clear_all",
]
