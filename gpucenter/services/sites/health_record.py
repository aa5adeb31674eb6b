"""Each site's health where every process can read it: the `site_health` table.

Only the scheduler leader polls the sites, and with ``serve --workers N`` it is a process of
its own: a readiness probe answered by an API worker knows nothing of its own about whether
slurmctld answers. So the leader writes what it saw (on every change, and at least every
`REFRESH_S` so that readers can tell a fresh answer from a stale one), and readiness reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from gpucenter.domain.clock import as_utc
from gpucenter.persistence.tables import SiteRow
from gpucenter.persistence.tables_ops import SiteHealthRow
from gpucenter.services.sites.runtime import SiteRuntime

__all__ = ["REFRESH_S", "STALE_S", "SiteHealthView", "read_site_health", "record_site_health"]

REFRESH_S = 15.0
STALE_S = 120.0
"""A site's record older than this says nothing current (no leader is polling it)."""


def record_site_health(
    s: Session, runtimes: list[SiteRuntime], now: datetime, written: dict[str, tuple[bool, str]]
) -> int:
    """Write each site's health where it changed, or where the last write is `REFRESH_S`
    old; `written` is the caller's memory of what it wrote last. Returns rows written."""
    ids = {row.name: row.id for row in s.scalars(select(SiteRow))}
    existing = {row.site_id: row for row in s.scalars(select(SiteHealthRow))}
    count = 0
    for rt in runtimes:
        site_id = ids.get(rt.name)
        if site_id is None:
            continue
        health = rt.health
        ok = health.failures == 0 and not health.last_error
        detail = "answering" if ok else health.reason(rt.name)
        row = existing.get(site_id)
        fresh = row is not None and now - as_utc(row.checked_at) < timedelta(seconds=REFRESH_S)
        if written.get(rt.name) == (ok, detail) and fresh:
            continue
        if row is None:
            row = SiteHealthRow(site_id=site_id, ok=ok, detail=detail, checked_at=now)
            s.add(row)
        if row.ok != ok or row.since is None:
            row.since = health.down_since if not ok and health.down_since else now
        row.ok, row.detail, row.checked_at = ok, detail, now
        written[rt.name] = (ok, detail)
        count += 1
    return count


@dataclass(frozen=True, slots=True)
class SiteHealthView:
    site: str
    ok: bool
    detail: str
    checked_at: datetime | None


def read_site_health(s: Session, now: datetime) -> list[SiteHealthView]:
    """Every site with what the leader last wrote about it (a stale record is not ok)."""
    rows = s.execute(
        select(SiteRow.name, SiteHealthRow)
        .outerjoin(SiteHealthRow, SiteHealthRow.site_id == SiteRow.id)
        .order_by(SiteRow.name)
    ).all()
    out: list[SiteHealthView] = []
    for name, row in rows:
        if row is None:
            out.append(SiteHealthView(name, True, "not checked yet", None))
            continue
        checked = as_utc(row.checked_at)
        age = (now - checked).total_seconds()
        if age > STALE_S:
            detail = f"no news from the scheduler for {age:.0f} s (last: {row.detail})"
            out.append(SiteHealthView(name, False, detail, checked))
        else:
            out.append(SiteHealthView(name, row.ok, row.detail, checked))
    return out
