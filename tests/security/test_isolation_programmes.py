"""Isolation on the programme managers' routes, and conflicted reviewers.

A manager of another programme, and an ordinary user, get 403 or 404 on every route under
another programme's ids (programme, call, award run, allocation) and never its applicants'
data; a reviewer with a conflict of interest is never assigned and never sees the scores.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from gpucenter.app import create_app
from gpucenter.config import Settings
from gpucenter.persistence.tables import AllocationRow
from gpucenter.persistence.tables_allocation import AwardRow
from gpucenter.services.identity import accounts
from tests.factories import make_context

# Every programme route with an id that belongs to a programme's managers.
MANAGER_ROUTES = [
    ("GET", "/api/v1/programmes/{programme_id}/calls"),
    ("POST", "/api/v1/programmes/{programme_id}/calls"),
    ("POST", "/api/v1/programmes/{programme_id}/roles"),
    ("GET", "/api/v1/programmes/calls/{call_id}/applications"),
    ("POST", "/api/v1/programmes/calls/{call_id}/applications"),
    ("POST", "/api/v1/programmes/calls/{call_id}/review-assignments"),
    ("POST", "/api/v1/programmes/calls/{call_id}/award-runs"),
    ("GET", "/api/v1/programmes/calls/{call_id}/awards"),
    ("GET", "/api/v1/programmes/award-runs/{run_id}"),
    ("POST", "/api/v1/programmes/award-runs/{run_id}/decide"),
    ("POST", "/api/v1/programmes/allocations/{allocation_id}/suspend"),
    ("POST", "/api/v1/programmes/allocations/{allocation_id}/resume"),
]
# A programme's calls are public: applicants must find them.
PUBLIC_LISTING = {"/api/v1/programmes/{programme_id}/calls"}
# Listing routes may answer 200, but only with what the caller may see (nothing here).
MAY_LIST_EMPTY = {
    "/api/v1/programmes/calls/{call_id}/applications",
    "/api/v1/programmes/calls/{call_id}/awards",
}
# Creating one's own application in an open call is allowed to anyone eligible.
MAY_CREATE_OWN = {"/api/v1/programmes/calls/{call_id}/applications"}
SECRET = "secret-plan-of-alice"


def _h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_programme_routes_and_conflicted_reviewers(settings: Settings) -> None:
    ctx = make_context(settings)
    now = datetime.now(tz=UTC)
    # The quarter we are in: an allocation of a past quarter is expired, not active.
    quarter = f"{now.year}Q{(now.month - 1) // 3 + 1}"
    tokens: dict[str, str] = {}
    with ctx.sessions.begin() as s:
        for name, kind in (
            ("Uni", "university"),
            ("Inst", "public_research_institute"),
            ("Gov", "government"),
        ):
            accounts.create_organisation(s, name, kind, now)
        tokens["root"] = accounts.create_user(s, "root", now, is_admin=True).token
        for user, org in (
            ("pma", "Gov"),
            ("pmb", "Gov"),
            ("alice", "Uni"),
            ("rconf", "Uni"),
            ("r2", "Inst"),
            ("r3", "Inst"),
            ("bob", "Inst"),
        ):
            tokens[user] = accounts.create_user(s, user, now, organisation=org).token
    base = "/api/v1/programmes"
    with TestClient(create_app(ctx, run_scheduler=False)) as c:

        def ok(resp: Any, status: int = 200) -> Any:
            assert resp.status_code == status, resp.text
            return resp.json()

        root = _h(tokens["root"])
        pid = ok(c.post(base, json={"name": "ai-a", "owner": "MSIT"}, headers=root), 201)["id"]
        other = ok(c.post(base, json={"name": "ai-b", "owner": "MOTIE"}, headers=root), 201)["id"]
        for user, prog, role in (
            ("pma", pid, "programme_manager"),
            ("pmb", other, "programme_manager"),
            ("rconf", pid, "reviewer"),
            ("r2", pid, "reviewer"),
            ("r3", pid, "reviewer"),
        ):
            ok(
                c.post(f"{base}/{prog}/roles", json={"username": user, "role": role}, headers=root),
                201,
            )
        call = {
            "name": "r1",
            "opens_at": (now - timedelta(days=1)).isoformat(),
            "closes_at": (now + timedelta(days=9)).isoformat(),
            "capacity": {"h100": {quarter: 5000}},
            "config": {"eligible_types": ["university"], "reviewers_per_application": 2},
        }
        cid = ok(c.post(f"{base}/{pid}/calls", json=call, headers=_h(tokens["pma"])), 201)["id"]
        application = {
            "title": SECRET,
            "region": "busan",
            "min_gpu_hours": 100,
            "requests": [{"gpu_type": "h100", "period": quarter, "gpu_hours": 400}],
        }
        aid = ok(
            c.post(
                f"{base}/calls/{cid}/applications", json=application, headers=_h(tokens["alice"])
            ),
            201,
        )["id"]
        ok(c.post(f"{base}/applications/{aid}/submit", headers=_h(tokens["alice"])))
        assigned = ok(c.post(f"{base}/calls/{cid}/review-assignments", headers=_h(tokens["pma"])))
        assert assigned  # two reviewers for the one application

        # The reviewer from the applicant's own organisation is never assigned ...
        mine = ok(c.get(f"{base}/reviews/mine", headers=_h(tokens["rconf"])))
        assert all(r.get("application_id") != aid for r in mine)
        scores = {"scientific_merit": 8, "feasibility": 7, "impact": 9, "need_for_gpus": 6}
        for reviewer in ("r2", "r3"):
            ok(
                c.put(
                    f"{base}/applications/{aid}/review",
                    json={"scores": scores, "comment": "good"},
                    headers=_h(tokens[reviewer]),
                )
            )
        # ... cannot score it, and never sees the scores the others gave.
        r = c.put(
            f"{base}/applications/{aid}/review",
            json={"scores": scores, "comment": ""},
            headers=_h(tokens["rconf"]),
        )
        assert r.status_code in (403, 404)
        r = c.get(f"{base}/applications/{aid}/reviews", headers=_h(tokens["rconf"]))
        assert r.status_code in (403, 404) and "total" not in r.text and "good" not in r.text
        # A reviewer who submitted sees the others' scores: the rule is not just "nobody sees".
        assert len(ok(c.get(f"{base}/applications/{aid}/reviews", headers=_h(tokens["r2"])))) == 2

        run = ok(c.post(f"{base}/calls/{cid}/award-runs", json={}, headers=_h(tokens["pma"])), 201)[
            "id"
        ]
        ok(
            c.post(
                f"{base}/award-runs/{run}/decide", json={"reason": ""}, headers=_h(tokens["pma"])
            )
        )
        with ctx.sessions.begin() as s:
            award = s.scalar(select(AwardRow.id).where(AwardRow.application_id == aid))
            allocation = s.scalars(
                select(AllocationRow.id).where(AllocationRow.award_id.is_not(None))
            ).first()
        assert award is not None and allocation is not None
        # The decision offers the award; its allocation is pending until the PI accepts the
        # agreement (the award life cycle), and active after.
        ok(c.post(f"/api/v1/awards/{award}/accept", headers=_h(tokens["alice"])))
        with ctx.sessions.begin() as s:
            state = s.get(AllocationRow, allocation)
            assert state is not None and state.state == "active"
        ids = {"programme_id": pid, "call_id": cid, "run_id": run, "allocation_id": allocation}
        bodies: dict[str, Any] = {
            "/calls": call | {"name": "sneaky"},
            "/roles": {"username": "bob", "role": "programme_manager"},
            "/applications": application | {"title": "mine"},
            "/award-runs": {},
            "/decide": {"reason": "x"},
            "/suspend": {"reason": "x"},
            "/resume": {"reason": "x"},
        }
        for outsider in ("pmb", "bob", "rconf"):
            for method, path in MANAGER_ROUTES:
                body = next((v for k, v in bodies.items() if path.endswith(k)), None)
                r = c.request(
                    method,
                    path.format(**ids),
                    headers=_h(tokens[outsider]),
                    json=body if method != "GET" else None,
                )
                assert SECRET not in r.text, (outsider, method, path)
                if path in PUBLIC_LISTING and method == "GET":
                    assert r.status_code == 200
                elif path in MAY_CREATE_OWN and method == "POST":
                    assert r.status_code in (201, 403, 404, 422), (outsider, path, r.text)
                elif path in MAY_LIST_EMPTY and method == "GET":
                    assert r.status_code in (200, 403, 404), (outsider, path, r.text)
                    if r.status_code == 200:
                        assert r.json() == [], (outsider, path, r.text)
                else:
                    assert r.status_code in (403, 404), (outsider, method, path, r.text)
        with ctx.sessions.begin() as s:
            state = s.get(AllocationRow, allocation)
            assert state is not None and state.state == "active"  # nobody suspended it
    ctx.dispatcher.shutdown()
    ctx.engine.dispose()
