"""Rate limits and lock-out for sign-in and token endpoints, in process.

Two independent guards: a sliding window per client address (slows password spraying from one
place) and a failure count per username (stops guessing one account from many places). A
username locks whether or not it exists, so the lock-out reveals nothing about accounts.
State lives in memory: one server process is the embedded default, and a restart clearing
lock-outs is acceptable (the audit log keeps every failure).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gpucenter.domain.errors import DomainError

MAX_TRACKED = 100_000  # forget the oldest keys beyond this, so memory stays bounded


class TooManyRequests(DomainError):
    """Refused by a rate limit or a lock-out; `retry_after_s` says when to try again."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = max(1, int(retry_after_s + 0.999))


@dataclass
class SignInGuard:
    """Per-address sliding windows and per-username lock-outs.

    `max_failures` failures in a row lock a username for `lockout_s`; a success resets it.
    `rate_per_minute` requests from one address are allowed in any 60 s window.
    """

    max_failures: int = 5
    lockout_s: float = 300.0
    rate_per_minute: int = 30
    clock: Callable[[], float] = time.monotonic
    _hits: dict[str, deque[float]] = field(default_factory=dict)
    _failures: dict[str, tuple[int, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def hit(self, address: str) -> None:
        """Count one request from `address`; raise if it is over the rate."""
        now = self.clock()
        with self._lock:
            window = self._hits.setdefault(address, deque())
            while window and window[0] <= now - 60.0:
                window.popleft()
            if len(window) >= self.rate_per_minute:
                raise TooManyRequests(
                    "too many requests from this address; slow down", window[0] + 60.0 - now
                )
            window.append(now)
            self._trim(self._hits)

    def check_locked(self, username: str) -> None:
        """Raise if `username` is locked out now."""
        key = username.casefold()
        now = self.clock()
        with self._lock:
            count, until = self._failures.get(key, (0, 0.0))
            if count >= self.max_failures and until > now:
                raise TooManyRequests(
                    "too many failed sign-ins for this account; try again later", until - now
                )

    def failed(self, username: str) -> bool:
        """Count a failure; True if this one locked the username."""
        key = username.casefold()
        now = self.clock()
        with self._lock:
            count, until = self._failures.get(key, (0, 0.0))
            if count >= self.max_failures and until <= now:
                count = 0  # the last lock-out has passed: start counting again
            count += 1
            locked = count >= self.max_failures
            self._failures[key] = (count, now + self.lockout_s if locked else 0.0)
            self._trim(self._failures)
            return locked

    def succeeded(self, username: str) -> None:
        with self._lock:
            self._failures.pop(username.casefold(), None)

    @staticmethod
    def _trim(table: dict[str, Any]) -> None:
        while len(table) > MAX_TRACKED:
            table.pop(next(iter(table)))


__all__ = [
    "SignInGuard",
    "TooManyRequests",
]
