"""Backing off from a site that errors, and saying so to the jobs that wait for it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

MAX_BACKOFF_S = 60.0


@dataclass
class SiteHealth:
    """Consecutive failures of the site's dispatcher and when to try it again."""

    failures: int = 0
    last_error: str = ""
    down_since: datetime | None = None
    retry_at: datetime | None = None

    def blocked(self, now: datetime) -> bool:
        return self.retry_at is not None and now < self.retry_at

    def failed(self, now: datetime, error: str) -> None:
        """Exponential backoff: 1, 2, 4, ... seconds, at most a minute."""
        self.failures += 1
        self.last_error = error
        if self.down_since is None:
            self.down_since = now
        self.retry_at = now + timedelta(seconds=min(MAX_BACKOFF_S, 2.0 ** (self.failures - 1)))

    def succeeded(self) -> None:
        self.failures = 0
        self.last_error = ""
        self.down_since = None
        self.retry_at = None

    def reason(self, site: str) -> str:
        since = self.down_since.strftime("%Y-%m-%dT%H:%M:%SZ") if self.down_since else "now"
        retry = self.retry_at.strftime("%H:%M:%SZ") if self.retry_at else "soon"
        return (
            f"site {site!r} is unavailable since {since} ({self.last_error}); "
            f"retrying at {retry} (attempt {self.failures})"
        )


__all__ = [
    "MAX_BACKOFF_S",
    "SiteHealth",
]
