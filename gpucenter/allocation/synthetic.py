"""Seeded synthetic award rounds shaped like the 2026 national call, for tests and benchmarks.

Applicant mix, request sizes and oversubscription follow the first round (514 applications
for ~4,000 GPUs, about 3x oversubscribed); the policy has a startup+SME floor, an academia
floor, a ceiling on large enterprises, an organisation cap and a regional bonus.
"""

from __future__ import annotations

import random
from datetime import timedelta

from gpucenter.allocation.model import (
    ApplicantType,
    AwardKind,
    AwardPolicy,
    AwardProblem,
    BatchItem,
    Candidate,
    LeaseItem,
    ShareRule,
    quarter_bounds,
    quarter_hours,
)

GPU_TYPES = ("h100", "h200", "b200", "npu")
QUARTERS = ("2026Q1", "2026Q2", "2026Q3", "2026Q4")
_TYPE_WEIGHTS = (
    (ApplicantType.UNIVERSITY, 0.40),
    (ApplicantType.STARTUP, 0.20),
    (ApplicantType.SME, 0.15),
    (ApplicantType.PUBLIC_RESEARCH_INSTITUTE, 0.12),
    (ApplicantType.LARGE_ENTERPRISE, 0.08),
    (ApplicantType.GOVERNMENT, 0.05),
)
REGIONS = ("seoul", "gyeonggi", "incheon", "busan", "daejeon", "gwangju", "daegu", "ulsan")


def default_policy() -> AwardPolicy:
    return AwardPolicy(
        shares=(
            ShareRule(
                "startups_smes",
                frozenset({ApplicantType.STARTUP, ApplicantType.SME}),
                min_share=0.30,
            ),
            ShareRule("academia", frozenset({ApplicantType.UNIVERSITY}), min_share=0.35),
            ShareRule(
                "large_enterprises", frozenset({ApplicantType.LARGE_ENTERPRISE}), max_share=0.10
            ),
        ),
        org_cap_share=0.03,
        regional_bonus=0.10,
    )


def synthetic_round(
    applications: int,
    *,
    seed: int = 7,
    gpus_per_type: int = 1000,
    gpu_types: tuple[str, ...] = GPU_TYPES,
    quarters: tuple[str, ...] = QUARTERS,
    lease_fraction: float = 0.1,
    oversubscription: float = 3.0,
    policy: AwardPolicy | None = None,
) -> tuple[AwardProblem, dict[int, str]]:
    """A problem plus each application's region (for tests of the regional bonus)."""
    rng = random.Random(seed)
    pol = policy or default_policy()
    orgs = max(20, applications // 4)
    org_type = {f"org{i:05d}": _pick_type(rng) for i in range(orgs)}
    org_names = sorted(org_type)
    candidates: list[Candidate] = []
    regions: dict[int, str] = {}
    asked = 0.0
    for app_id in range(1, applications + 1):
        org = rng.choice(org_names)
        region = rng.choice(REGIONS)
        base = max(0.5, min(10.0, rng.gauss(6.0, 1.6)))
        score = pol.final_score(base, region)
        if rng.random() < lease_fraction:
            cand = _lease(rng, app_id, org, org_type[org], score, gpu_types, quarters)
        else:
            cand = _batch(rng, app_id, org, org_type[org], score, gpu_types, quarters)
        candidates.append(cand)
        regions[app_id] = region
        asked += cand.requested_gpu_hours
    # Size each cell so that the round is `oversubscription` times oversubscribed overall.
    raw = {(t, q): gpus_per_type * quarter_hours(q) for t in gpu_types for q in quarters}
    scale = asked / (oversubscription * sum(raw.values()))
    capacity = {cell: cap * scale for cell, cap in raw.items()}
    physical = {t: max(8, round(gpus_per_type * scale)) for t in gpu_types}
    return AwardProblem(capacity, tuple(candidates), pol, physical), regions


def _pick_type(rng: random.Random) -> ApplicantType:
    r = rng.random()
    acc = 0.0
    for kind, w in _TYPE_WEIGHTS:
        acc += w
        if r < acc:
            return kind
    return _TYPE_WEIGHTS[-1][0]


def _batch(
    rng: random.Random,
    app_id: int,
    org: str,
    kind: ApplicantType,
    score: float,
    gpu_types: tuple[str, ...],
    quarters: tuple[str, ...],
) -> Candidate:
    types = rng.sample(gpu_types, k=rng.choice((1, 1, 1, 2)))
    first = rng.randrange(len(quarters))
    span = quarters[first : first + rng.choice((1, 2, 2, 3, 4))]
    gpus = rng.choice((8, 8, 16, 16, 32, 64, 128))
    items = tuple(
        BatchItem(t, q, float(round(gpus * quarter_hours(q) * rng.uniform(0.2, 0.6))))
        for t in types
        for q in span
    )
    total = sum(i.gpu_hours for i in items)
    return Candidate(
        app_id,
        org,
        kind,
        score,
        AwardKind.GPU_HOURS,
        batch=items,
        min_gpu_hours=round(total * rng.choice((0.25, 0.5, 0.5, 0.75, 1.0)), 1),
    )


def _lease(
    rng: random.Random,
    app_id: int,
    org: str,
    kind: ApplicantType,
    score: float,
    gpu_types: tuple[str, ...],
    quarters: tuple[str, ...],
) -> Candidate:
    gpu_type = rng.choice(gpu_types)
    q_start, _ = quarter_bounds(quarters[0])
    _, q_end = quarter_bounds(quarters[-1])
    days = rng.choice((14, 14, 30, 60, 120))
    latest = (q_end - q_start).days - days
    start = q_start + timedelta(days=rng.randrange(max(1, latest)))
    gpus = rng.choice((8, 8, 16, 32))
    return Candidate(
        app_id,
        org,
        kind,
        score,
        AwardKind.LEASE,
        lease=LeaseItem(
            gpu_type,
            gpus,
            rng.choice((gpus, gpus // 2)),
            start,
            start + timedelta(days=days),
            "national-centre",
        ),
    )
