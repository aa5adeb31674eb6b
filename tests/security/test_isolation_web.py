"""Isolation on the portal's pages that take an id: another tenant signed in with a browser
session gets 404 or 403, never the data.

Each web area adds its id routes to WEB_ROUTES and a test below that signs in two users
(`web_session`) and checks them; the matrix test in test_isolation.py fails on any id route
that is listed nowhere.
"""

from __future__ import annotations

from fastapi.testclient import TestClient

# Paths with a parameter that is not an object id (nothing to isolate).
NOT_AN_ID = {"/lang/{code}"}

WEB_ROUTES: list[tuple[str, str]] = []


def web_session(client: TestClient, username: str, password: str) -> TestClient:
    """Sign `client` in through the form, as a browser would (CSRF cookie and field)."""
    page = client.get("/login")
    token = page.text.split('name="csrf" value="')[1].split('"')[0]
    response = client.post(
        "/login",
        data={"username": username, "password": password, "csrf": token},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    return client
