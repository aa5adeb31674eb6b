"""Known devices: the browsers and addresses a user has signed in from with the right
credentials. They pass the username-wide throttle (see ratelimit.py), so that guessing an
account's password from many addresses never keeps its owner out.

A browser is known by a long random cookie (`gpc_device`, HttpOnly) set on a successful
portal sign-in; an address (for the API and the CLI, which keep no such cookie) by having
signed in from it before, unless the site turned that off (`signin_known_addresses`: behind
a proxy that hides client addresses every request would come from one known address).
Only SHA-256 digests are stored, per user, so a copy of the database names no device.
A cookie is never taken from the request to be remembered: a successful sign-in without a
known one gets a fresh value, so nobody can plant a value and have it become known.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from gpucenter.persistence.db import insert_or_ignore
from gpucenter.persistence.tables_security import KnownDeviceRow

COOKIE = "gpc_device"
MAX_COOKIE = 100  # a longer value was never ours: not even hashed


@dataclass(frozen=True, slots=True)
class Recognised:
    """What the request showed: `browser`, a short id of a known browser (it keys the
    browser's own failure count, apart from its address's), or None; `address`, whether the
    address is a known one."""

    browser: str | None = None
    address: bool = False

    @property
    def known(self) -> bool:
        return self.browser is not None or self.address


def _digest(kind: str, value: str) -> str:
    return hashlib.sha256(f"{kind}:{value}".encode()).hexdigest()


def _known(s: Session, user_id: int, digest: str) -> bool:
    return (
        s.scalar(
            select(KnownDeviceRow.id).where(
                KnownDeviceRow.user_id == user_id, KnownDeviceRow.digest == digest
            )
        )
        is not None
    )


def _known_browser(s: Session, user_id: int, cookie: str | None) -> str | None:
    """The digest of `cookie` when it is a known browser of `user_id`, else None."""
    if not cookie or len(cookie) > MAX_COOKIE:
        return None
    digest = _digest("browser", cookie)
    return digest if _known(s, user_id, digest) else None


def recognise(
    s: Session, user_id: int | None, cookie: str | None, address: str | None
) -> Recognised:
    """Which of the request's browser cookie and address `user_id` signed in from before
    (`address` None: addresses are not considered)."""
    if user_id is None:
        return Recognised()
    digest = _known_browser(s, user_id, cookie)
    browser = digest[:16] if digest is not None else None
    known_address = address is not None and _known(s, user_id, _digest("address", address))
    return Recognised(browser, known_address)


def _touch(s: Session, user_id: int, kind: str, digest: str, now: datetime) -> None:
    """Remember a device, or when it was last seen (two sign-ins at once may both make it)."""
    insert_or_ignore(
        s,
        KnownDeviceRow,
        {
            "user_id": user_id,
            "kind": kind,
            "digest": digest,
            "created_at": now,
            "last_seen_at": now,
        },
        ["user_id", "digest"],
    )
    s.execute(
        update(KnownDeviceRow)
        .where(KnownDeviceRow.user_id == user_id, KnownDeviceRow.digest == digest)
        .values(last_seen_at=now)
    )


def remember(
    s: Session,
    user_id: int,
    now: datetime,
    *,
    address: str | None,
    browser: bool,
    cookie: str | None,
    keep_days: int,
) -> str | None:
    """After a successful sign-in: remember the address (when addresses count) and, for a
    browser, its cookie if it is already known for this user, else a new one. Returns the
    cookie value to set (None when not a browser). Devices unseen for `keep_days` go."""
    s.execute(
        delete(KnownDeviceRow).where(
            KnownDeviceRow.user_id == user_id,
            KnownDeviceRow.last_seen_at < now - timedelta(days=keep_days),
        )
    )
    if address is not None:
        _touch(s, user_id, "address", _digest("address", address), now)
    if not browser:
        return None
    if cookie is None or _known_browser(s, user_id, cookie) is None:
        cookie = secrets.token_urlsafe(32)
    _touch(s, user_id, "browser", _digest("browser", cookie), now)
    return cookie


__all__ = ["COOKIE", "Recognised", "recognise", "remember"]
