"""A small national programme for the award-aftercare tests: five applicants for a quarter of
H100 GPU-hours, two reviewers, a programme manager and each organisation's signatory.

Scores are set so that the round awards three applications (filling the quarter exactly:
8,000 + 6,000 + 6,000 GPU-hours, startups at the 30% floor) and ranks the other two on the
reserve list: an SME first, then a Seoul university.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gpucenter.auth.permissions import Caller
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.tables import LedgerEntryRow, UserRow
from gpucenter.persistence.tables_allocation import AwardRow
from gpucenter.persistence.tables_audit import AuditEntryRow
from gpucenter.services.identity import accounts
from gpucenter.services.identity.audit import verify
from gpucenter.services.identity.signin import caller_for
from gpucenter.services.programmes import applications as apps
from gpucenter.services.programmes import awards as rounds
from gpucenter.services.programmes import calls as prog

PASSWORD = "a-long-password-1"
CRITERIA = ("scientific_merit", "feasibility", "impact", "need_for_gpus")

ORGS = (
    ("Hanbit University", "university"),
    ("Busan AI Startup", "startup"),
    ("Korea Materials Institute", "public_research_institute"),
    ("Daegu Robotics SME", "sme"),
    ("Seoul National Lab University", "university"),
    ("Ministry of Science", "government"),
)
# applicant, organisation, region, GPU-hours, useful minimum, review score
APPLICANTS = (
    ("jiwoo", "Hanbit University", "busan", 8000, 4000, 9),
    ("minho", "Busan AI Startup", "busan", 6000, 3000, 8),
    ("sora", "Korea Materials Institute", "daejeon", 6000, 3000, 7),
    ("dami", "Daegu Robotics SME", "daegu", 6000, 3000, 6),
    ("yuna", "Seoul National Lab University", "seoul", 6000, 2000, 5),
)
SIGNATORIES = {org: f"sig-{i}" for i, (org, _) in enumerate(ORGS[:5])}


def quarter(when: datetime) -> str:
    return f"{when.year}Q{(when.month - 1) // 3 + 1}"


def quarter_start(when: datetime) -> datetime:
    return when.replace(month=3 * ((when.month - 1) // 3) + 1, day=1, hour=0, minute=0, second=0)


@dataclass
class World:
    sessions: sessionmaker[Session]
    programme_id: int
    call_id: int
    period: str
    next_period: str
    apps: dict[str, int] = field(default_factory=dict)

    def who(self, s: Session, username: str) -> Caller:
        return caller_for(s, repo.user_by_name(s, username))


def config(**changes: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "eligible_types": ["university", "startup", "sme", "public_research_institute"],
        "max_gpu_hours": 15000,
        "reviewers_per_application": 2,
        "shares": [
            {"name": "startups_smes", "applicant_types": ["startup", "sme"], "min_share": 0.3}
        ],
        "org_cap_share": 0.5,
        "regional_bonus": 0.1,
        "agreement": {"countersignature": True, "acceptance_days": 14},
        "reporting": {"progress_months": [1], "final_days": 30, "hold_when_overdue": True},
        "use_check": {"min_ratio": 0.5, "appeal_days": 7},
    }
    cfg.update(changes)
    return cfg


def build(
    sessions: sessionmaker[Session],
    opens: datetime,
    period_start: datetime,
    cfg: Mapping[str, Any] | None = None,
    extra: Mapping[str, Mapping[str, float]] | None = None,
) -> World:
    """The centre, the programme and an open call whose capacity is the quarter starting at
    `period_start` (20,000 H100 GPU-hours) and the next one (20,000), plus `extra`."""
    period = quarter(period_start)
    following = quarter(period_start + timedelta(days=100))
    capacity: dict[str, dict[str, float]] = {"h100": {period: 20000, following: 20000}}
    for gpu_type, cells in (extra or {}).items():
        capacity.setdefault(gpu_type, {}).update(cells)
    with sessions.begin() as s:
        for name, kind in ORGS:
            accounts.create_organisation(s, name, kind, opens)
        if s.scalar(select(UserRow.id).where(UserRow.username == "root")) is None:
            accounts.create_user(s, "root", opens, is_admin=True, password=PASSWORD)
        accounts.create_user(s, "pm", opens, organisation="Ministry of Science", password=PASSWORD)
        for r in ("rev1", "rev2"):
            accounts.create_user(s, r, opens, organisation="Ministry of Science", password=PASSWORD)
        for name, org, *_ in APPLICANTS:
            accounts.create_user(s, name, opens, organisation=org, password=PASSWORD)
        for org, sig in SIGNATORIES.items():
            accounts.create_user(s, sig, opens, organisation=org, password=PASSWORD)
            accounts.grant_role(s, sig, "org_signatory", opens)
        root = caller_for(s, repo.user_by_name(s, "root"))
        p = prog.create_programme(
            s, root, "ai-gpu-2026", "Ministry of Science and ICT", opens, "AI GPU support 2026"
        )
        prog.assign_role(s, root, p.id, "pm", "programme_manager", opens)
        for r in ("rev1", "rev2"):
            prog.assign_role(s, root, p.id, r, "reviewer", opens)
        spec = prog.CallSpec(
            "round-1",
            opens,
            opens + timedelta(days=10),
            capacity,
            title="AI GPU support, first round",
            config=dict(cfg or config()),
        )
        pm = caller_for(s, repo.user_by_name(s, "pm"))
        call = prog.create_call(s, pm, p.id, spec, opens)
        world = World(sessions, p.id, call.id, period, following)
        for name, _org, region, hours, least, _score in APPLICANTS:
            who = world.who(s, name)
            form = apps.ApplicationForm(
                title=f"{name}'s project",
                region=region,
                requests=[{"gpu_type": "h100", "period": period, "gpu_hours": hours}],
                min_gpu_hours=least,
                tags=("artificial_intelligence",),
            )
            row = apps.create_application(s, who, call.id, form, opens)
            apps.submit_application(s, who, row.id, opens + timedelta(hours=1))
            world.apps[name] = row.id
    return world


def review_and_run(world: World, now: datetime) -> int:
    """Both reviewers score every application as APPLICANTS says; the manager runs the
    optimiser. Returns the run's id."""
    score = {world.apps[a[0]]: a[5] for a in APPLICANTS}
    with world.sessions.begin() as s:
        pm = world.who(s, "pm")
        apps.assign_reviews(s, pm, world.call_id, now)
        for reviewer in ("rev1", "rev2"):
            who = world.who(s, reviewer)
            for app_id, points in score.items():
                apps.submit_review(s, who, app_id, dict.fromkeys(CRITERIA, points), "", now)
        return rounds.run_round(s, pm, world.call_id, now).id


def charge(s: Session, allocation_id: int, gpu_hours: float, at: datetime, tag: str) -> None:
    """Usage on an allocation, as the ledger records a finished job's charge."""
    s.add(
        LedgerEntryRow(
            allocation_id=allocation_id,
            source=f"test:{tag}",
            gpu_type="h100",
            gpu_seconds=gpu_hours * 3600,
            created_at=at,
        )
    )
    s.flush()


def assert_every_award_move_audited(s: Session) -> None:
    """Every state change of every award is in the audit log with its actor: the entries of
    each award, in order, chain from its decision (from nothing) to the state it is in now,
    each move starting where the last ended; and the audit chain verifies."""
    for award in s.scalars(select(AwardRow)):
        entries = s.scalars(
            select(AuditEntryRow)
            .where(AuditEntryRow.target_type == "award", AuditEntryRow.target_id == str(award.id))
            .order_by(AuditEntryRow.id)
        ).all()
        moves = [
            e
            for e in entries
            if e.action == "award.decide"
            or (e.action.startswith("award.") and "to" in (e.details or {}))
        ]
        chain = [(e.details["from"], e.details["to"]) for e in moves]
        assert chain and chain[0][0] is None and chain[-1][1] == award.state, chain
        assert all(a[1] == b[0] for a, b in pairwise(chain)), chain
        assert all(e.actor for e in moves)
    assert verify(s).ok
