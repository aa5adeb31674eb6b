"""The admin pages through a TestClient: creating users and organisations with field errors,
granting and revoking centre roles, and verifying the audit log (intact, then broken)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import func, select, update

from gpucenter.config import Settings
from gpucenter.persistence.tables import UserRow
from gpucenter.persistence.tables_audit import AuditEntryRow
from tests.security.test_audit_log import _drop_guard as drop_audit_triggers
from tests.security.web import csrf_of
from tests.web.test_programmes_pages import Site, open_site


@pytest.fixture
def site(settings: Settings) -> Iterator[Site]:
    yield from open_site(settings)


def _users(site: Site) -> int:
    with site.ctx.sessions.begin() as s:
        return int(s.scalar(select(func.count()).select_from(UserRow)) or 0)


def test_admin_creates_users_and_organisations_and_manages_roles(site: Site) -> None:
    c = site.client("root")
    page = c.get("/admin")
    assert page.status_code == 200 and "jiwoo" in page.text and "Hanbit University" in page.text
    token = csrf_of(page.text)
    before = _users(site)
    bad = {"csrf": token, "username": "Bad Name", "display_name": "Kim", "password": "short"}
    r = c.post("/admin/users", data=bad)
    assert r.status_code == 422
    assert 'id="e-username"' in r.text and 'id="e-password"' in r.text
    assert 'value="Kim"' in r.text and "short" not in r.text  # a password is never echoed
    assert _users(site) == before
    taken = {"csrf": token, "username": "jiwoo", "password": "a-long-password-2"}
    assert "This username is taken." in c.post("/admin/users", data=taken).text
    good = {
        "csrf": token,
        "username": "seoyeon",
        "display_name": "Park Seoyeon",
        "organisation": "Hanbit University",
        "password": "a-long-password-2",
    }
    r = c.post("/admin/users", data=good, follow_redirects=False)
    assert r.status_code == 303 and _users(site) == before + 1

    r = c.post("/admin/organisations", data={"csrf": token, "name": "", "kind": "bank"})
    assert r.status_code == 422 and 'id="e-name"' in r.text and 'id="e-kind"' in r.text
    org = {"csrf": token, "name": "Daegu Robotics", "kind": "sme"}
    assert c.post("/admin/organisations", data=org, follow_redirects=False).status_code == 303
    assert "Daegu Robotics" in c.get("/admin").text

    role = {"csrf": token, "username": "seoyeon", "role": "site_operator"}
    assert c.post("/admin/roles", data=role, follow_redirects=False).status_code == 303
    assert "Site operator" in c.get("/admin").text
    nobody = {"csrf": token, "username": "ghost", "role": "site_operator"}
    assert "No user has this username." in c.post("/admin/roles", data=nobody).text
    assert c.post("/admin/roles/revoke", data=role, follow_redirects=False).status_code == 303
    ko = site.client("root", "ko").get("/admin")
    assert "센터 역할" in ko.text and "새 사용자" in ko.text


def test_audit_verification_shows_ok_then_the_first_broken_entry(site: Site) -> None:
    c = site.client("root")
    assert "The chain is intact" in c.get("/admin/audit?verify=1").text
    with site.ctx.sessions.begin() as s:
        first = s.scalar(select(func.min(AuditEntryRow.id)))
        drop_audit_triggers(s.connection(), site.ctx.engine.dialect.name)
        s.execute(update(AuditEntryRow).where(AuditEntryRow.id == first).values(actor="mallory"))
    page = c.get("/admin/audit?verify=1")
    assert f"The chain is broken at entry {first}." in page.text and "was altered" in page.text


def test_only_admins_reach_the_admin_pages(site: Site) -> None:
    c = site.client("pm")
    assert c.get("/admin").status_code == 403
    token = csrf_of(c.get("/programmes").text)
    data = {"csrf": token, "username": "pm", "role": "centre_admin"}
    assert c.post("/admin/roles", data=data).status_code == 403
    assert c.post("/admin/users", data={"csrf": token, "username": "x1"}).status_code == 403
    assert c.get("/admin/audit").status_code == 403
