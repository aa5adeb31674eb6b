"""Isolation on the accounting routes that take an id: notifications, enforcement, waitlist."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from gpucenter.persistence.tables import AllocationRow
from gpucenter.persistence.tables_accounting import NotificationRow
from tests.security.conftest import Env, auth

ACCOUNTING_ROUTES = [
    ("POST", "/api/v1/accounting/notifications/{notification_id}/read"),
    ("PUT", "/api/v1/accounting/programmes/{programme_id}/enforcement"),
    ("GET", "/api/v1/accounting/allocations/{allocation_id}/waitlist"),
]


def test_another_user_cannot_touch_accounting_objects_by_id(env: Env) -> None:
    c, root = env.client, env.centre.admin_token
    alice, bob = env.centre.alice_token, env.centre.bob_token
    pid = c.post(
        "/api/v1/programmes", json={"name": "ai", "owner": "MSIT"}, headers=auth(root)
    ).json()["id"]
    with env.ctx.sessions.begin() as s:
        note = NotificationRow(
            user_id=env.centre.alice.user_id,
            kind="budget",
            subject="alpha has used 80% of its allocation",
            body="secret-budget-note",
            created_at=datetime.now(tz=UTC),
        )
        s.add(note)
        s.flush()
        note_id = note.id
        alpha = next(iter(env.centre.alice.project_ids))
        allocation = s.scalars(
            select(AllocationRow.id).where(AllocationRow.project_id == alpha)
        ).one()
    ids = {"notification_id": note_id, "programme_id": pid, "allocation_id": allocation}
    bodies = {"PUT": {"on_exhausted": "opportunistic"}}
    for method, path in ACCOUNTING_ROUTES:
        r = c.request(method, path.format(**ids), headers=auth(bob), json=bodies.get(method))
        assert r.status_code in (403, 404), (method, path, r.status_code, r.text)
        assert "secret-budget-note" not in r.text
    # The owner may read her own notification; the check is not "nobody may".
    r = c.post(f"/api/v1/accounting/notifications/{note_id}/read", headers=auth(alice))
    assert r.status_code == 204
