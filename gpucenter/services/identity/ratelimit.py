"""Sign-in limits that an attacker cannot turn against the account's owner, kept in the
database so that every server process (`serve --workers N`, several hosts) shares them.

Three limits, each a row of `signin_limits`:
- rate, per client address: at most `rate_per_minute` sign-in and token requests in a
  minute (slows a sprayer at one address, whatever names it tries);
- pair, per username and address (or known browser): `max_failures` failed sign-ins lock
  that pair for `lockout_s`, twice as long at each repeat up to `lockout_max_s`. The owner
  elsewhere is not affected: a lock on the attacker's address is not a lock on the account;
- user, per username from anywhere: `user_max_failures` failures within `user_window_s`
  (many addresses guessing one account) throttle the username for the same growing time.
  The throttle stops unknown devices only: a browser or address the user signed in from
  before, or a user with a second factor giving the right password and code, still gets in
  (signin.py decides that; this module only counts).

A username is limited whether or not it exists, so the limits reveal nothing about accounts.
A pair's attempt is counted before its password is checked (`attempt`), so that requests in
flight together on several processes cannot exceed the limit; a success clears the pair.
Every change is one short transaction that first takes the row's lock (an upsert, then
SELECT ... FOR UPDATE on PostgreSQL; the upsert takes SQLite's write lock), so concurrent
processes serialise on the row and none of their counts is lost. Rows idle for a day are
pruned, and with them what a pair or username had learnt about repeats.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import delete, or_
from sqlalchemy.orm import Session, sessionmaker

from gpucenter.domain.errors import DomainError
from gpucenter.domain.messages import Message, msg
from gpucenter.persistence.db import insert_or_ignore
from gpucenter.persistence.tables_security import SignInLimitRow

RATE_WINDOW_S = 60.0
FORGET_S = 86400.0  # a pair or username without a failure for a day starts afresh
PRUNE_EVERY_S = 60.0  # each process prunes old rows at most this often
MAX_KEY = 100  # usernames and addresses are cut to the column's length


class TooManyRequests(DomainError):
    """Refused by a rate limit or a lock-out; `retry_after_s` says when to try again.

    `reason` says which limit: "rate" (the address's requests), "pair" (this username from
    this address) or "user" (the username-wide throttle, which known devices pass)."""

    def __init__(self, message: Message, retry_after_s: float, reason: str = "rate") -> None:
        super().__init__(message.english())
        self.coded = message
        self.retry_after_s = max(1, int(retry_after_s + 0.999))
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Attempt:
    """A sign-in attempt let through the pair's lock. `locks`: this attempt was the last the
    pair is allowed (it fails: the pair is locked; it succeeds: the lock is cleared).
    `throttle_s`: how long the username-wide throttle still lasts (0: not throttled)."""

    locks: bool
    throttle_s: float


def _key(value: str) -> str:
    return value.casefold()[:MAX_KEY]


@dataclass
class SignInGuard:
    """The sign-in limits over one database; one per server process (app.state.guard).

    The thresholds are plain attributes, read on every call, so that tests may change them."""

    sessions: sessionmaker[Session]
    clock: Callable[[], float]
    max_failures: int = 5
    lockout_s: float = 300.0
    lockout_max_s: float = 3600.0
    user_max_failures: int = 20
    user_window_s: float = 3600.0
    rate_per_minute: int = 30
    _pruned_at: float = field(default=float("-inf"))
    _prune_lock: threading.Lock = field(default_factory=threading.Lock)

    # -- the three limits ----------------------------------------------------------------

    def hit(self, address: str) -> None:
        """Count one sign-in or token request from `address`; raise if it is over the rate."""
        now = self.clock()
        self._maybe_prune(now)
        with self.sessions.begin() as s:
            row = _locked_row(s, "rate", "", _key(address), now)
            if row.window_start <= now - RATE_WINDOW_S:
                row.count, row.window_start = 0, now
            if row.count >= self.rate_per_minute:
                raise TooManyRequests(
                    msg("error.rate_address"), row.window_start + RATE_WINDOW_S - now
                )
            row.count += 1
            row.updated_at = now

    def attempt(self, username: str, where: str) -> Attempt:
        """Let one sign-in attempt of `username` from `where` (an address, or a known
        browser) through, counted as a failure until `succeeded` says otherwise; raise
        while the pair is locked. Also says whether the username is throttled."""
        now = self.clock()
        with self.sessions.begin() as s:
            row = _locked_row(s, "pair", _key(username), _key(where), now)
            if row.locked_until > now:
                raise TooManyRequests(msg("error.rate_pair"), row.locked_until - now, "pair")
            if row.window_start <= now - FORGET_S:
                row.count, row.window_start = 0, now
            row.count += 1
            locks = row.count >= self.max_failures
            if locks:
                self._lock(row, now)
            row.updated_at = now
            user = s.get(SignInLimitRow, ("user", _key(username), ""))
            throttle_s = max(0.0, user.locked_until - now) if user is not None else 0.0
        return Attempt(locks, throttle_s)

    def succeeded(self, username: str, where: str) -> None:
        """The right credentials came from `where`: its pair starts afresh. The username's
        throttle stays: an attack on the account may well go on."""
        with self.sessions.begin() as s:
            s.execute(
                delete(SignInLimitRow).where(
                    SignInLimitRow.kind == "pair",
                    SignInLimitRow.username == _key(username),
                    SignInLimitRow.place == _key(where),
                )
            )

    def failed(self, username: str) -> bool:
        """Count a failed sign-in of `username` from anywhere; True if this one set off the
        username-wide throttle."""
        now = self.clock()
        with self.sessions.begin() as s:
            row = _locked_row(s, "user", _key(username), "", now)
            row.updated_at = now
            if row.locked_until > now:
                return False
            if row.window_start <= now - self.user_window_s:
                row.count, row.window_start = 0, now
            row.count += 1
            if row.count < self.user_max_failures:
                return False
            self._lock(row, now)
            return True

    # -- helpers -------------------------------------------------------------------------

    def _lock(self, row: SignInLimitRow, now: float) -> None:
        """Lock `row` for its next lock time and double the one after, up to the cap."""
        first = min(self.lockout_s, self.lockout_max_s)
        lock_s = row.next_lock_s if row.next_lock_s > 0 else first
        row.locked_until = now + lock_s
        row.next_lock_s = min(lock_s * 2, self.lockout_max_s)
        row.count, row.window_start = 0, now

    def _maybe_prune(self, now: float) -> None:
        """Remove rows nobody has touched for a day (and rate windows long over), at most
        once a minute per process: cheap enough to do on the request path."""
        with self._prune_lock:
            if now - self._pruned_at < PRUNE_EVERY_S:
                return
            self._pruned_at = now
        with self.sessions.begin() as s:
            s.execute(
                delete(SignInLimitRow).where(
                    or_(
                        (SignInLimitRow.updated_at < now - FORGET_S)
                        & (SignInLimitRow.locked_until < now),
                        (SignInLimitRow.kind == "rate")
                        & (SignInLimitRow.window_start < now - 2 * RATE_WINDOW_S),
                    )
                )
            )


def unlock(s: Session, username: str) -> int:
    """Clear every lock and count of `username` (the admin CLI's `user unlock`); the number
    of limits cleared. The address rates stay: they are about addresses, not accounts."""
    result = s.execute(
        delete(SignInLimitRow).where(
            SignInLimitRow.kind.in_(("pair", "user")), SignInLimitRow.username == _key(username)
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)


def _locked_row(s: Session, kind: str, username: str, where: str, now: float) -> SignInLimitRow:
    """The row of one limit, made if missing, locked for the rest of the transaction.

    The insert (a no-op when the row exists) comes first: on SQLite it takes the database's
    write lock, so the read after it is of the latest state and nobody else writes until
    commit; on PostgreSQL the row then exists for SELECT ... FOR UPDATE to lock."""
    insert_or_ignore(
        s,
        SignInLimitRow,
        {
            "kind": kind,
            "username": username,
            "place": where,
            "count": 0,
            "window_start": now,
            "locked_until": 0.0,
            "next_lock_s": 0.0,
            "updated_at": now,
        },
        ["kind", "username", "place"],
    )
    row = s.get(
        SignInLimitRow, (kind, username, where), with_for_update=True, populate_existing=True
    )
    assert row is not None
    return row


__all__ = ["Attempt", "SignInGuard", "TooManyRequests", "unlock"]
