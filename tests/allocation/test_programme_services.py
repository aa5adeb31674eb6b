"""Programme use cases end to end on SQLite and PostgreSQL: call, apply, review, award."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from gpucenter.auth.permissions import Caller
from gpucenter.config import Settings
from gpucenter.domain.errors import Conflict, NotFound, PermissionDenied, ValidationError
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.db import make_engine, session_factory
from gpucenter.persistence.tables import AllocationRow, NodeRow, SiteRow
from gpucenter.persistence.tables_audit import AuditEntryRow
from gpucenter.services.identity import accounts
from gpucenter.services.identity.audit import verify
from gpucenter.services.identity.signin import caller_for
from gpucenter.services.programmes import applications as apps
from gpucenter.services.programmes import awards
from gpucenter.services.programmes import calls as prog

NOW = datetime(2026, 1, 10, tzinfo=UTC)
KINDS = [
    "university",
    "startup",
    "sme",
    "public_research_institute",
    "large_enterprise",
    "government",
]


def who(s: Session, username: str) -> Caller:
    return caller_for(s, repo.user_by_name(s, username))


@pytest.fixture
def centre(settings: Settings) -> object:
    engine = make_engine(settings.effective_database_url)
    sessions = session_factory(engine)
    with sessions.begin() as s:
        for kind in KINDS:
            accounts.create_organisation(s, f"org-{kind}", kind, NOW)
        accounts.create_user(s, "root", NOW, is_admin=True)
        site = SiteRow(name="local", kind="local")
        s.add(site)
        s.flush()
        s.add(NodeRow(site_id=site.id, name="b200-n1", gpu_type="b200", gpu_count=8))
        accounts.create_user(s, "pm", NOW, organisation="org-government")
        for i, kind in enumerate(KINDS):
            accounts.create_user(s, f"app{i}", NOW, organisation=f"org-{kind}")
        for i, kind in enumerate(["university", "startup", "sme", "government"]):
            accounts.create_user(s, f"rev{i}", NOW, organisation=f"org-{kind}")
        root = who(s, "root")
        p = prog.create_programme(s, root, "ai-gpu", "Ministry of Science and ICT", NOW)
        prog.assign_role(s, root, p.id, "pm", "programme_manager", NOW)
        for i in range(4):
            prog.assign_role(s, root, p.id, f"rev{i}", "reviewer", NOW)
        pm = who(s, "pm")
        spec = prog.CallSpec(
            "round1",
            NOW - timedelta(days=1),
            NOW + timedelta(days=30),
            {"h100": {"2026Q2": 20000, "2026Q3": 20000}, "b200": {"2026Q2": 10000}},
            config={
                "eligible_types": [k for k in KINDS if k != "government"],
                "max_gpu_hours": 15000,
                "reviewers_per_application": 2,
                "shares": [
                    {
                        "name": "startups_smes",
                        "applicant_types": ["startup", "sme"],
                        "min_share": 0.3,
                    }
                ],
                "org_cap_share": 0.5,
                "regional_bonus": 0.1,
                "gpus": {"b200": 8},
            },
        )
        call = prog.create_call(s, pm, p.id, spec, NOW)
    yield sessions, p.id, call.id
    engine.dispose()


def _apply(s: Session, user: str, call_id: int, hours: float = 8000, **kw: object) -> int:
    form = apps.ApplicationForm(
        title=kw.pop("title", f"{user} project"),  # type: ignore[arg-type]
        region=kw.pop("region", "busan"),  # type: ignore[arg-type]
        requests=kw.pop("requests", [{"gpu_type": "h100", "period": "2026Q2", "gpu_hours": hours}]),  # type: ignore[arg-type]
        min_gpu_hours=kw.pop("min_gpu_hours", hours / 2),  # type: ignore[arg-type]
        tags=kw.pop("tags", ("artificial_intelligence",)),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )
    return apps.create_application(s, who(s, user), call_id, form, NOW).id


def test_submission_refuses_ineligible_late_duplicate_and_over_limit(centre) -> None:
    sessions, _, call_id = centre
    with sessions.begin() as s:
        gov = _apply(s, "app5", call_id)
        with pytest.raises(ValidationError, match="government is not eligible") as err:
            apps.submit_application(s, who(s, "app5"), gov, NOW)
        assert err.value.field == "organisation"
        big = _apply(s, "app0", call_id, hours=20000)
        with pytest.raises(ValidationError, match="limit of 15,000") as err:
            apps.submit_application(s, who(s, "app0"), big, NOW)
        ok = _apply(s, "app1", call_id, title="first")
        apps.submit_application(s, who(s, "app1"), ok, NOW)
        again = _apply(s, "app1", call_id, title="first")
        with pytest.raises(Conflict, match="duplicate"):
            apps.submit_application(s, who(s, "app1"), again, NOW)
        late = _apply(s, "app2", call_id)
        with pytest.raises(ValidationError, match="too late"):
            apps.submit_application(s, who(s, "app2"), late, NOW + timedelta(days=31))
        badtag = _apply(s, "app2", call_id, tags=("astrology",))
        with pytest.raises(ValidationError, match="unknown tags"):
            apps.submit_application(s, who(s, "app2"), badtag, NOW)
        with pytest.raises(NotFound):  # someone else's application does not exist for you
            apps.visible_application(s, who(s, "app2"), ok)


def test_review_award_and_allocations(centre) -> None:
    sessions, _pid, call_id = centre
    with sessions.begin() as s:
        ids = {}
        for i in range(5):
            ids[i] = _apply(s, f"app{i}", call_id, team=["rev3"] if i == 0 else [])
            apps.submit_application(s, who(s, f"app{i}"), ids[i], NOW)
        lease = apps.ApplicationForm(
            title="lease",
            region="seoul",
            kind="lease",
            lease={
                "gpu_type": "b200",
                "gpus": 8,
                "min_gpus": 8,
                "site": "local",
                "starts_at": "2026-04-01T00:00:00+00:00",
                "ends_at": "2026-04-15T00:00:00+00:00",
            },
        )
        lease_id = apps.create_application(s, who(s, "app3"), call_id, lease, NOW).id
        with pytest.raises(Conflict, match="duplicate"):
            apps.submit_application(s, who(s, "app3"), lease_id, NOW)
        apps.withdraw_application(s, who(s, "app3"), ids[3], NOW)
        apps.submit_application(s, who(s, "app3"), lease_id, NOW)
        apps.declare_conflict(s, who(s, "rev1"), ids[4], "advised the PI", NOW)
        with pytest.raises(PermissionDenied):
            apps.assign_reviews(s, who(s, "app0"), call_id, NOW)
        plan = apps.assign_reviews(s, who(s, "pm"), call_id, NOW)
    with sessions.begin() as s:
        users = {u: repo.user_by_name(s, u).id for u in ("rev0", "rev1", "rev2", "rev3")}
        assert users["rev0"] not in plan[ids[0]]  # same organisation
        assert users["rev3"] not in plan[ids[0]]  # co-applicant
        assert users["rev1"] not in plan[ids[4]]  # declared
        assert all(len(v) == 2 for v in plan.values())
        first = True
        for app_id, reviewers in sorted(plan.items()):
            for rid in reviewers:
                name = next(u for u, i in users.items() if i == rid)
                r = who(s, name)
                if first:
                    assert [x.reviewer_id for x in apps.reviews_of(s, r, app_id)] == [rid]
                scores = {
                    "scientific_merit": 5 + app_id % 5,
                    "feasibility": 7,
                    "impact": 6,
                    "need_for_gpus": 8,
                }
                apps.submit_review(s, r, app_id, scores, "", NOW)
                first = False
        reviewer = next(u for u, i in users.items() if i == plan[ids[1]][0])
        seen = apps.reviews_of(s, who(s, reviewer), ids[1])
        assert len(seen) == 2 and all(x.submitted_at is not None for x in seen)
        pm = who(s, "pm")
        what_if = awards.run_round(s, pm, call_id, NOW, policy_changes={"org_cap_share": 0.2})
        run = awards.run_round(s, pm, call_id, NOW)
        assert run.result["violations"] == []
        assert run.objective >= run.greedy_objective
        assert what_if.id != run.id and not what_if.decided
        decided = awards.decide(s, pm, run.id, NOW)
        assert decided
    with sessions.begin() as s:
        allocs = list(s.scalars(select(AllocationRow).where(AllocationRow.award_id.is_not(None))))
        assert allocs and all(
            a.gpu_type in ("h100", "b200") and a.state == "active" for a in allocs
        )
        leases = awards.active_leases(s, NOW)
        assert any(d.lease_gpus == 8 for d in decided)
        assert leases[0].lease and leases[0].nodes == ("b200-n1",)
        assert len(leases[0].projects) == 1
        alloc = allocs[0]
        awards.set_suspended(s, who(s, "pm"), alloc.id, True, "idle for a month", NOW)
        assert s.get(AllocationRow, alloc.id).state == "suspended"
        actions = set(s.scalars(select(AuditEntryRow.action)))
        assert {
            "call.decide",
            "award.decide",
            "allocation.suspend",
            "programme.role.assign",
        } <= actions
        assert verify(s).ok
        with pytest.raises(Conflict):
            awards.run_round(s, who(s, "pm"), call_id, NOW)
