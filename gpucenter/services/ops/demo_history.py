"""A few months of a centre's life for the demo, so that `make run` shows what the reports,
burn-downs and queues are for on first start.

Nothing here is invented row by row. The programme round goes through the real use cases
(call, applications, conflict-free review assignment, scores, the award optimiser, the
decision that makes projects and allocations); the jobs of the awarded projects are a
seeded workload that `replay` schedules over the centre's main cluster. The CLI passes the
simulator there (`sim.engine` with the `ours` policy: the scheduling core the server runs,
with its priorities, fair share and backfill; services may not import the simulator, so it
is handed in). Each finished run is charged through the ledger's own batch charging
(`services.accounting.ledger.ingest_usage`) and folded into fair-share usage; an allocation
that was hardly used has GPU-hours reclaimed through the use-it-or-lose-it service. The same
seed gives the same centre; it takes seconds.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from gpucenter.auth.permissions import Caller
from gpucenter.core import NodeSnapshot, decay
from gpucenter.domain.clock import as_utc
from gpucenter.domain.messages import Message, msg
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.tables import (
    AllocationRow,
    JobRow,
    MembershipRow,
    NodeRow,
    OrganisationRow,
    ProjectRow,
    SiteRow,
)
from gpucenter.services.accounting.ledger import UsageCharge, ingest_usage
from gpucenter.services.accounting.useit import reclaim
from gpucenter.services.fairshare import HALF_LIFE_S, add_decayed_usage
from gpucenter.services.identity import accounts
from gpucenter.services.identity.signin import caller_for
from gpucenter.services.programmes import applications as apps
from gpucenter.services.programmes import awards
from gpucenter.services.programmes import calls as prog

SITE = "nac-daejeon"  # the centre's main cluster in the story (its jobs are history only)
NODES = 16
GPUS_PER_NODE = 8
GPU_TYPE = "h100"
DAYS = 90
JOBS = 2400

# (name, applicant type, region, PI, members): every applicant type, in and outside the
# capital region (the call gives a bonus outside it).
ORGANISATIONS = (
    ("Hanbit University", "university", "seoul", "jiwoo", ("seoyeon", "minho")),
    ("Gaya National University", "university", "busan", "haneul", ("dohyun",)),
    ("Korea Institute of Computing", "public_research_institute", "daejeon", "sumin", ("jaewon",)),
    ("Saebyeok AI", "startup", "seoul", "yuna", ("taeyang",)),
    ("Jeonju Vision Labs", "startup", "jeonbuk", "eunji", ()),
    ("Daegu Robotics", "sme", "daegu", "hyunwoo", ("nari",)),
    ("Gwangju Medical Imaging", "sme", "gwangju", "jisoo", ()),
    ("Hanil Heavy Industries", "large_enterprise", "ulsan", "sangmin", ()),
)
REVIEWERS: tuple[tuple[str, str | None], ...] = (
    ("rev-lee", "Hanbit University"),
    ("rev-park", "Korea Institute of Computing"),
    ("rev-choi", "Gaya National University"),
    ("rev-kang", None),
)
PROJECT_TITLES = (
    "Korean legal language model",
    "Protein structure search",
    "Typhoon track forecasting",
    "Speech recognition for dialects",
    "Defect detection on car parts",
    "Factory robot grasping",
    "Chest X-ray triage",
    "Ship hull design optimisation",
)


@dataclass(frozen=True, slots=True)
class Demand:
    """One job of the workload as the scheduler sees it (times in seconds from the start)."""

    submit_s: float
    duration_s: float
    gpus: int
    project: str
    applicant_type: str
    time_limit_s: float


# Given the demands, the cluster's nodes and each project's share, the (start, end) of every
# demand in seconds from the start (inf: never started); the CLI passes the simulator.
Replay = Callable[
    [Sequence[Demand], Sequence[NodeSnapshot], Mapping[str, float]],
    tuple[Sequence[float], Sequence[float]],
]


@dataclass(frozen=True)
class History:
    organisations: int
    awards: int
    jobs: int
    gpu_hours: float
    reclaimed_gpu_hours: float

    @property
    def summary(self) -> str:
        return (
            f"{DAYS} days of history: {self.organisations} organisations, a programme round "
            f"with {self.awards} awards, {self.jobs} finished jobs ({self.gpu_hours:,.0f} "
            f"GPU-hours charged), {self.reclaimed_gpu_hours:,.0f} idle GPU-hours reclaimed"
        )


def _quarter(when: datetime) -> str:
    return f"{when.year}Q{(when.month - 1) // 3 + 1}"


def _who(s: Session, username: str) -> Caller:
    user = repo.user_by_name(s, username)
    assert user is not None
    return caller_for(s, user)


def load_history(
    s: Session, admin: str, demo_user: str, now: datetime, seed: int, replay: Replay
) -> History:
    """Write the centre's history into `s` (one transaction), ending at `now`."""
    rng = random.Random(seed)
    start = now - timedelta(days=DAYS)
    founded = start - timedelta(days=60)
    site = SiteRow(name=SITE, kind="slurm")
    s.add(site)
    s.flush()
    for n in range(NODES):
        block = f"rack{n // 4 + 1}"
        s.add(
            NodeRow(
                site_id=site.id,
                name=f"{SITE}-g{n + 1:02d}",
                gpu_type=GPU_TYPE,
                gpu_count=GPUS_PER_NODE,
                block=block,
                virtual=True,
            )
        )
    # Only the people a visitor signs in as get a password: each hash takes argon2's
    # deliberate second, and the others sign in through nothing in a demo.
    for org, kind, _, pi, members in ORGANISATIONS:
        accounts.create_organisation(s, org, kind, founded)
        for name in (pi, *members):
            accounts.create_user(s, name, founded, organisation=org)
    accounts.create_organisation(s, "Ministry of Science and ICT", "government", founded)
    accounts.create_user(
        s,
        "pm-kim",
        founded,
        organisation="Ministry of Science and ICT",
        password="pm-kim-demo-password",
    )
    for reviewer, home in REVIEWERS:
        accounts.create_user(s, reviewer, founded, organisation=home)
    awarded = _programme_round(s, _who(s, admin), start, rng)
    for project in awarded[:1]:  # the demo user works in one awarded project too
        accounts.add_member(s, project, demo_user, "member")
    jobs, hours = _replay(s, site.id, awarded, start, now, rng, replay)
    reclaimed = _reclaim_idle(s, awarded, now)
    return History(len(ORGANISATIONS) + 1, len(awarded), jobs, hours, reclaimed)


def _programme_round(s: Session, root: Caller, start: datetime, rng: random.Random) -> list[str]:
    """Call, applications, reviews, optimisation and decision, dated before the history."""
    opens, closes = start - timedelta(days=50), start - timedelta(days=20)
    p = prog.create_programme(
        s, root, "ai-computing", "Ministry of Science and ICT", opens, "AI computing support"
    )
    prog.assign_role(s, root, p.id, "pm-kim", "programme_manager", opens)
    for name, _ in REVIEWERS:
        prog.assign_role(s, root, p.id, name, "reviewer", opens)
    pm = _who(s, "pm-kim")
    periods = sorted({_quarter(start + timedelta(days=d)) for d in range(0, DAYS + 1, 15)})
    capacity = {GPU_TYPE: dict.fromkeys(periods, 60_000.0)}
    spec = prog.CallSpec(
        "autumn-2026",
        opens,
        closes,
        capacity,
        title="AI computing support: autumn round",
        config={
            "eligible_types": sorted({kind for _, kind, *_ in ORGANISATIONS}),
            "max_gpu_hours": 40_000,
            "reviewers_per_application": 2,
            "shares": [
                {"name": "startups_smes", "applicant_types": ["startup", "sme"], "min_share": 0.3}
            ],
            "regional_bonus": 0.1,
        },
    )
    call = prog.create_call(s, pm, p.id, spec, opens)
    applied = opens + timedelta(days=5)
    ids: list[int] = []
    for (_, _, region, pi, _), title in zip(ORGANISATIONS, PROJECT_TITLES, strict=True):
        hours = float(rng.choice((6_000, 9_000, 12_000, 18_000, 24_000)))
        form = apps.ApplicationForm(
            title=title,
            region=region,
            plan=f"{title}: training and evaluation on {GPU_TYPE} GPUs.",
            requests=[
                {"gpu_type": GPU_TYPE, "period": q, "gpu_hours": hours / len(periods)}
                for q in periods
            ],
            min_gpu_hours=hours / 3,
            tags=("artificial_intelligence",),
        )
        app = apps.create_application(s, _who(s, pi), call.id, form, applied)
        apps.submit_application(s, _who(s, pi), app.id, applied)
        ids.append(app.id)
    reviewed = closes + timedelta(days=3)
    plan = apps.assign_reviews(s, pm, call.id, reviewed)
    names = {_who(s, n).user_id: n for n, _ in REVIEWERS}
    for app_id, reviewers in sorted(plan.items()):
        for reviewer_id in reviewers:
            scores = {
                c: round(rng.uniform(5.0, 9.5), 1)
                for c in ("scientific_merit", "feasibility", "impact", "need_for_gpus")
            }
            apps.submit_review(s, _who(s, names[reviewer_id]), app_id, scores, "", reviewed)
    decided = closes + timedelta(days=10)
    run = awards.run_round(s, pm, call.id, decided)
    made = awards.decide(s, pm, run.id, decided)
    projects = [s.get(ProjectRow, a.project_id) for a in made]
    return [p.name for p in projects if p is not None]


def _replay(
    s: Session,
    site_id: int,
    projects: list[str],
    start: datetime,
    now: datetime,
    rng: random.Random,
    replay: Replay,
) -> tuple[int, float]:
    """The awarded projects' jobs, scheduled by the real core (through the simulator), then
    written as finished jobs and charged through the ledger. Returns (jobs, GPU-hours)."""
    rows = {p.name: p for p in s.scalars(select(ProjectRow).where(ProjectRow.name.in_(projects)))}
    members = defaultdict(list)
    for project_id, user_id in s.execute(
        select(MembershipRow.project_id, MembershipRow.user_id).where(
            MembershipRow.project_id.in_([p.id for p in rows.values()])
        )
    ):
        members[project_id].append(user_id)
    kinds = {p.name: _applicant_type(s, p) for p in rows.values()}
    # One project keeps quiet (the one that will have GPU-hours reclaimed).
    quiet = projects[-1] if len(projects) > 1 else None
    weights = {p: (0.05 if p == quiet else rng.uniform(0.6, 1.4)) for p in projects}
    total = sum(weights.values())
    span = (now - start).total_seconds() - 6 * 3600
    trace: list[Demand] = []
    owners: list[tuple[str, int, str, int, str]] = []
    for k in range(JOBS):
        pick = rng.uniform(0, total)
        project = next(p for p in projects if (pick := pick - weights[p]) <= 0) if projects else ""
        gpus = rng.choices((1, 2, 4, 8, 16, 32), weights=(30, 20, 20, 18, 8, 4))[0]
        duration = min(36 * 3600.0, math.exp(rng.gauss(math.log(5400), 1.1)))
        limit = max(3600, math.ceil(duration * rng.uniform(1.1, 2.5) / 3600) * 3600)
        outcome = rng.choices(("ok", "fail", "timeout", "cancel"), weights=(86, 7, 4, 3))[0]
        if outcome == "timeout":
            duration = float(limit)
        elif outcome == "fail":
            duration = max(30.0, duration * rng.uniform(0.01, 0.4))
        arrival = span * (k + rng.random()) / JOBS
        trace.append(Demand(arrival, duration, gpus, project, kinds[project], float(limit)))
        user = rng.choice(members[rows[project].id])
        name = rng.choice(("train", "finetune", "eval", "sweep", "pretrain", "infer"))
        owners.append((project, user, outcome, limit, f"{name}-{k % 97}"))
    nodes = [
        NodeSnapshot(f"{SITE}-g{n + 1:02d}", GPU_TYPE, GPUS_PER_NODE, f"rack{n // 4 + 1}", SITE)
        for n in range(NODES)
    ]
    starts, ends = replay(trace, nodes, weights)
    allocs = _allocations(s, [p.id for p in rows.values()])
    epoch = start.timestamp()
    written: list[tuple[JobRow, float]] = []
    for job, (project, user, outcome, limit, name), began, ended in zip(
        trace, owners, starts, ends, strict=True
    ):
        if not (math.isfinite(began) and math.isfinite(ended)) or epoch + ended > now.timestamp():
            continue
        state, code, why = _ending(outcome, limit)
        row = JobRow(
            project_id=rows[project].id,
            allocation_id=_allocation_at(allocs, rows[project].id, epoch + ended),
            user_id=user,
            site_id=site_id,
            name=name,
            command=f"python {name.split('-')[0]}.py --config runs/{name}.yaml",
            gpu_type=GPU_TYPE,
            gpus_per_node=min(job.gpus, GPUS_PER_NODE),
            nodes=max(1, job.gpus // GPUS_PER_NODE),
            time_limit_s=limit,
            state=state,
            reason="",
            reason_detail=why.english() if why else "",
            reason_message=why.to_json() if why else None,
            exit_code=code,
            submitted_at=_at(epoch + job.submit_s),
            started_at=_at(epoch + began),
            ended_at=_at(epoch + ended),
            runs=1,
            qos="normal",
        )
        s.add(row)
        written.append((row, job.gpus * (ended - began)))
    s.flush()
    charges = [
        UsageCharge(
            source=f"job:{row.id}:run:1",
            allocation_id=row.allocation_id,
            gpu_type=GPU_TYPE,
            gpu_seconds=gpu_s,
            at=as_utc(row.ended_at) if row.ended_at else now,
            job_id=row.id,
        )
        for row, gpu_s in written
        if row.allocation_id is not None
    ]
    ingest_usage(s, charges)
    # Fair-share usage: decay is linear, so each (project, user)'s charges decayed to `now`
    # and folded in once equal the charges folded in one by one, in a fraction of the time.
    decayed: dict[tuple[int, int], float] = defaultdict(float)
    for row, gpu_s in written:
        age = (now - as_utc(row.ended_at or now)).total_seconds()
        decayed[(row.project_id, row.user_id)] += decay(gpu_s, age, HALF_LIFE_S)
    for (project_id, user_id), gpu_s in sorted(decayed.items()):
        add_decayed_usage(s, project_id, user_id, gpu_s, now)
    return len(written), sum(c.gpu_seconds for c in charges) / 3600


def _ending(outcome: str, limit: int) -> tuple[str, int | None, Message | None]:
    if outcome == "fail":
        return "FAILED", 1, msg("job.exit_code", code=1)
    if outcome == "timeout":
        return "TIMEOUT", None, msg("job.time_limit", limit=f"{limit // 3600} h")
    if outcome == "cancel":
        return "CANCELLED", None, None
    return "COMPLETED", 0, None


def _at(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=UTC)


def _applicant_type(s: Session, project: ProjectRow) -> str:
    org = s.get(OrganisationRow, project.organisation_id)
    return org.kind if org else ""


def _allocations(s: Session, project_ids: list[int]) -> dict[int, list[AllocationRow]]:
    found: dict[int, list[AllocationRow]] = defaultdict(list)
    for a in s.scalars(
        select(AllocationRow)
        .where(AllocationRow.project_id.in_(project_ids))
        .order_by(AllocationRow.starts_at)
    ):
        found[a.project_id].append(a)
    return found


def _allocation_at(allocs: dict[int, list[AllocationRow]], project_id: int, t: float) -> int | None:
    """The project's allocation whose window holds `t` (else its latest that began)."""
    chosen = None
    for a in allocs.get(project_id, []):
        if as_utc(a.starts_at).timestamp() <= t:
            chosen = a.id
            if t < as_utc(a.ends_at).timestamp():
                return a.id
    return chosen


def _reclaim_idle(s: Session, projects: list[str], now: datetime) -> float:
    """The quiet project's current allocation gives back most of what it does not use."""
    if len(projects) < 2:
        return 0.0
    project = s.scalar(select(ProjectRow).where(ProjectRow.name == projects[-1]))
    assert project is not None
    current = [
        a
        for a in _allocations(s, [project.id])[project.id]
        if as_utc(a.starts_at) <= now < as_utc(a.ends_at)
    ]
    if not current:
        return 0.0
    alloc = current[0]
    used = repo.charged_gpu_seconds(s, [alloc.id]).get(alloc.id, 0.0)
    hours = round((alloc.gpu_seconds - used) / 3600 * 0.6)
    if hours <= 0:
        return 0.0
    reclaim(
        s,
        _who(s, "pm-kim"),
        alloc.id,
        float(hours),
        "less than a tenth of the award used in its first weeks; offered to the waiting list",
        now - timedelta(days=7),
    )
    return float(hours)


__all__ = ["Demand", "History", "Replay", "load_history"]
