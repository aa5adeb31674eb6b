"""Re-offering freed capacity down the reserve list: the standing awards are constants, and
capacity, organisation caps and shares hold after every re-award (property test over random
calls, declines and reclaims), with the referee `violations` on the whole call."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpucenter.allocation import (
    ApplicantType,
    Award,
    AwardPolicy,
    AwardProblem,
    BatchItem,
    Candidate,
    ShareRule,
    greedy_plan,
    solve,
    violations,
)
from gpucenter.allocation.model import Committed
from gpucenter.allocation.plan import shares
from gpucenter.allocation.reoffer import (
    Standing,
    committed_of,
    relaxed_policy,
    reoffer_round,
    still_offerable,
)

NOW = datetime(2026, 1, 5, tzinfo=UTC)
CELLS = (("h100", "2026Q2"), ("h100", "2026Q3"))
SMALL = (ApplicantType.STARTUP, ApplicantType.SME)


def _cand(
    app_id: int, kind: ApplicantType, org: str, score: float, hours: float, least: float = 0.0
) -> Candidate:
    batch = (BatchItem("h100", "2026Q2", hours),)
    return Candidate(app_id, org, kind, score, batch=batch, min_gpu_hours=least or hours / 2)


def _rule(floor: float | None = 0.3, ceiling: float | None = None) -> ShareRule:
    return ShareRule("small", frozenset(SMALL), floor, ceiling)


def test_standing_awards_use_capacity_caps_and_shares() -> None:
    standing = [
        Standing(_cand(1, ApplicantType.UNIVERSITY, "u", 9, 6200), Award(1, {CELLS[0]: 6200})),
        Standing(_cand(2, ApplicantType.STARTUP, "s", 8, 2800), Award(2, {CELLS[0]: 2800})),
    ]
    committed = committed_of(standing)
    assert committed.by_cell == {CELLS[0]: 9000} and committed.total == 9000
    assert committed.by_org == {"u": 6200, "s": 2800}
    # 1,000 GPU-hours left; a university asking 800 (all or nothing) would push the
    # startups' share below 30%, an SME asking 800 keeps it: the optimiser must pick the SME.
    problem = AwardProblem(
        {CELLS[0]: 10000},
        (
            _cand(3, ApplicantType.UNIVERSITY, "u2", 9.9, 800, 800),
            _cand(4, ApplicantType.SME, "m", 1.0, 800, 800),
        ),
        AwardPolicy(shares=(_rule(0.3),), org_cap_share=0.65),
        committed=committed,
    )
    assert problem.room(CELLS[0]) == 1000
    plan = solve(problem)
    assert violations(problem, plan.awards) == []
    assert set(plan.awards) == {4}
    base = greedy_plan(problem)
    assert violations(problem, base.awards) == []
    # The university alone breaks the floor once the standing startup counts.
    alone = {3: Award(3, {CELLS[0]: 800})}
    assert any(v.startswith("share small") for v in violations(problem, alone))
    # An organisation's cap counts what it already holds: u holds 6,200 of a 6,500 cap.
    capped = replace(problem, candidates=(_cand(5, ApplicantType.UNIVERSITY, "u", 5, 800),))
    assert any("organisation u" in v for v in violations(capped, {5: Award(5, {CELLS[0]: 800})}))


def test_a_share_the_standing_awards_already_miss_may_only_improve() -> None:
    committed = Committed(
        {CELLS[0]: 10000},
        {"u": 8000, "s": 2000},
        {
            ApplicantType.UNIVERSITY: 8000,
            ApplicantType.STARTUP: 2000,
        },
    )
    policy, notes = relaxed_policy(AwardPolicy(shares=(_rule(0.3, 0.9),)), committed)
    assert policy.shares[0].min_share == 0.2 and policy.shares[0].max_share == 0.9
    assert notes and "below its floor" in notes[0]


def test_only_what_can_still_be_awarded_is_offered() -> None:
    cand = Candidate(
        1,
        "o",
        ApplicantType.SME,
        5,
        batch=(BatchItem("h100", "2025Q4", 100), BatchItem("h100", "2026Q2", 100)),
        min_gpu_hours=50,
    )
    left = still_offerable(cand, NOW)
    assert left is not None and [b.period for b in left.batch] == ["2026Q2"]
    assert still_offerable(replace(cand, batch=(BatchItem("h100", "2025Q4", 100),)), NOW) is None


kinds = st.sampled_from(
    [
        ApplicantType.UNIVERSITY,
        ApplicantType.STARTUP,
        ApplicantType.SME,
        ApplicantType.PUBLIC_RESEARCH_INSTITUTE,
    ]
)


@st.composite
def calls(draw: st.DrawFn) -> AwardProblem:
    n = draw(st.integers(4, 10))
    cands = []
    for i in range(n):
        cells = draw(st.lists(st.sampled_from(CELLS), min_size=1, max_size=2, unique=True))
        batch = tuple(BatchItem(t, p, float(draw(st.integers(5, 50)) * 100)) for t, p in cells)
        total = sum(b.gpu_hours for b in batch)
        cands.append(
            Candidate(
                i + 1,
                draw(st.sampled_from(["a", "b", "c", "d", "e"])),
                draw(kinds),
                float(draw(st.integers(1, 100))) / 10,
                batch=batch,
                min_gpu_hours=total * draw(st.sampled_from([0.25, 0.5, 1.0])),
            )
        )
    capacity = {c: float(draw(st.integers(20, 120)) * 100) for c in CELLS}
    floor = draw(st.sampled_from([None, 0.2, 0.3]))
    ceiling = draw(st.sampled_from([None, 0.6, 0.8]))
    rules = (_rule(floor, ceiling),) if floor is not None or ceiling is not None else ()
    policy = AwardPolicy(shares=rules, org_cap_share=draw(st.sampled_from([None, 0.4, 0.6])))
    return AwardProblem(capacity, tuple(cands), policy)


events = st.lists(
    st.tuples(st.sampled_from(["decline", "reclaim"]), st.integers(0, 50), st.floats(0.1, 0.9)),
    min_size=1,
    max_size=4,
)


def _outside(share: float, rule: ShareRule) -> float:
    """How far a share is outside its rule's bounds (0 when within)."""
    low = (rule.min_share - share) if rule.min_share is not None else 0.0
    high = (share - rule.max_share) if rule.max_share is not None else 0.0
    return max(0.0, low, high)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=calls(), script=events)
def test_shares_and_caps_hold_after_every_re_award(problem: AwardProblem, script: list) -> None:  # type: ignore[type-arg]
    """Decide the call, then decline or reclaim awards at random; after each, re-offer the
    freed capacity down the reserve list. Capacity and organisation caps always hold on the
    whole call; every share holds unless the decline or reclaim itself broke it, and then
    the re-award never moves it further out."""
    plan = solve(problem, time_limit_s=5)
    assert violations(problem, plan.awards) == []
    by_id = {c.app_id: c for c in problem.candidates}
    held = dict(plan.awards)
    reserve = sorted(
        (c for c in problem.candidates if c.app_id not in held and c.score > 0),
        key=lambda c: (-c.score, c.app_id),
    )
    for kind, pick, fraction in script:
        if not held:
            break
        app_id = sorted(held)[pick % len(held)]
        if kind == "decline":
            del held[app_id]
        else:
            award = held[app_id]
            held[app_id] = Award(
                app_id, {c: h * (1 - fraction) for c, h in award.gpu_hours.items()}
            )
        before = shares(problem, held)
        standing = [Standing(by_id[a], w) for a, w in held.items()]
        rnd = reoffer_round(dict(problem.capacity), problem.policy, {}, standing, reserve, NOW)
        again = solve(rnd.problem, time_limit_s=5)
        assert violations(rnd.problem, again.awards) == []
        held.update(again.awards)
        reserve = [c for c in reserve if c.app_id not in again.awards]
        whole = [v for v in violations(problem, held) if not v.startswith("application")]
        assert [v for v in whole if not v.startswith("share")] == [], whole
        after = shares(problem, held)
        for rule in problem.policy.shares:
            was, now = _outside(before[rule.name], rule), _outside(after[rule.name], rule)
            assert now <= was + 1e-6, (rule, before, after)
