"""The portal's id routes, gathered from each area's isolation tests for the matrix walk in
test_isolation.py (which fails on an id route listed nowhere)."""

from __future__ import annotations

from tests.security import (
    test_isolation_sessions,
    test_isolation_web_jobs,
    test_isolation_web_programmes,
)

# Paths with a parameter that is not an object id (nothing to isolate).
NOT_AN_ID = {"/lang/{code}"}

WEB_ROUTES: list[tuple[str, str]] = (
    test_isolation_web_programmes.ROUTES
    + test_isolation_web_jobs.ROUTES
    + test_isolation_sessions.ROUTES
)
