"""The browser portal: session cookies, CSRF on every form, security headers."""

from __future__ import annotations

import re

from tests.security.conftest import Env


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def _sign_in(env: Env) -> str:
    c = env.client
    page = c.get("/login")
    return c.post(
        "/login",
        data={"username": "root", "password": "root-password", "csrf": _csrf(page.text)},
        follow_redirects=False,
    ).headers["set-cookie"]


def test_sign_in_sets_a_hardened_session_cookie_and_shows_the_site(env: Env) -> None:
    c = env.client
    assert c.get("/", follow_redirects=False).headers["location"] == "/login"
    cookie = _sign_in(env)
    assert "gpc_session=" in cookie
    for flag in ("HttpOnly", "Secure", "SameSite=lax"):
        assert flag.lower() in cookie.lower(), cookie
    page = c.get("/")
    assert page.status_code == 200 and "GPUs busy" in page.text and "root" in page.text
    for header, expected in {
        "x-content-type-options": "nosniff",
        "x-frame-options": "DENY",
    }.items():
        assert page.headers[header] == expected
    csp = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp
    assert "'unsafe-inline'" not in csp
    # Sign out needs the form's CSRF token too, and ends the session everywhere.
    assert c.post("/logout", data={"csrf": "forged"}, follow_redirects=False).status_code == 403
    out = c.post("/logout", data={"csrf": _csrf(page.text)}, follow_redirects=False)
    assert out.status_code == 303
    assert c.get("/", follow_redirects=False).status_code == 303


def test_forms_refuse_missing_or_foreign_csrf(env: Env) -> None:
    c = env.client
    body = {"username": "root", "password": "root-password"}
    assert c.post("/login", data=body, follow_redirects=False).status_code in (403, 422)
    token = _csrf(c.get("/login").text)
    r = c.post("/login", data=body | {"csrf": "x" * 43}, follow_redirects=False)
    assert r.status_code == 403
    r = c.post(
        "/login",
        data=body | {"csrf": token},
        headers={"Origin": "https://evil.example"},
        follow_redirects=False,
    )
    assert r.status_code == 403
    wrong = c.post("/login", data={"username": "root", "password": "bad", "csrf": token})
    assert wrong.status_code == 401 and "The username, password or code is not right." in wrong.text


def test_api_answers_carry_security_headers_and_no_store(env: Env) -> None:
    r = env.client.get("/api/v1/me")
    assert r.status_code == 401
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["x-content-type-options"] == "nosniff"


def test_oversized_bodies_are_refused_before_parsing(env: Env) -> None:
    r = env.client.post(
        "/api/v1/auth/token",
        content=b"{" + b" " * (5 * 1024 * 1024) + b"}",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413
    assert r.headers["content-type"].startswith("application/problem+json")
