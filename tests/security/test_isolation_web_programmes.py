"""Isolation on the portal's programmes pages that take an id: another tenant, signed in with a
browser session, gets 404 or 403 and never the data."""

from __future__ import annotations

# (method, path) of every portal route of this area with an id in its path; each is checked
# by a test in this file.
ROUTES: list[tuple[str, str]] = []
