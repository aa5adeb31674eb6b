"""Signing a TestClient in through the portal's form, as a browser would."""

from __future__ import annotations

from fastapi.testclient import TestClient


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a rendered page."""
    return html.split('name="csrf" value="')[1].split('"')[0]


def web_session(client: TestClient, username: str, password: str) -> TestClient:
    """Sign `client` in through the form (CSRF cookie and field); it keeps the session."""
    page = client.get("/login")
    response = client.post(
        "/login",
        data={"username": username, "password": password, "csrf": csrf_of(page.text)},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    return client
