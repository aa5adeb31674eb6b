"""Acceptance: a 200-application call through review and award, checked by invariants."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from gpucenter.allocation import (
    ApplicantType,
    AwardPlan,
    AwardProblem,
    Reviewer,
    ReviewTarget,
    assign_reviewers,
    conflicted,
    explain,
    greedy_plan,
    normalise,
    solve,
    violations,
)
from gpucenter.allocation.plan import shares, usage_by_cell
from gpucenter.allocation.synthetic import synthetic_round


@pytest.fixture(scope="module")
def round200() -> tuple[AwardProblem, AwardPlan, AwardPlan, dict[int, list[int]], set]:
    """200 applications, reviewed by 30 reviewers (3 each), then awarded."""
    problem, _ = synthetic_round(200, seed=11)
    rng = random.Random(3)
    orgs = sorted({c.organisation for c in problem.candidates})
    org_ids = {name: i for i, name in enumerate(orgs)}
    targets = [
        ReviewTarget(c.app_id, org_ids[c.organisation], frozenset({1000 + c.app_id}))
        for c in problem.candidates
    ]
    # Some reviewers work at applicant organisations, one is a co-applicant, some declare.
    reviewers = [Reviewer(r, rng.choice([None, *org_ids.values()])) for r in range(1, 31)]
    reviewers.append(Reviewer(1005, None))  # co-applicant of application 5
    declared = frozenset((rng.randint(1, 30), rng.randint(1, 200)) for _ in range(40))
    assignment = assign_reviewers(targets, reviewers, 3, declared)
    by_id = {r.user_id: r for r in reviewers}
    bias = {r.user_id: rng.uniform(-2, 2) for r in reviewers}
    raw = {
        (r, a): min(10.0, max(0.0, c.score + bias[r] + rng.gauss(0, 0.3)))
        for c in problem.candidates
        for a in [c.app_id]
        for r in assignment[a]
    }
    norm = normalise(raw)
    cands = tuple(replace(c, score=norm[c.app_id]) for c in problem.candidates)
    problem = replace(problem, candidates=cands)
    conflicts = {
        (r, t.app_id)
        for t in targets
        for r in assignment[t.app_id]
        if conflicted(by_id[r], t, declared)
    }
    return problem, solve(problem), greedy_plan(problem), assignment, conflicts


def test_every_application_of_every_type_is_reviewed_by_three(round200) -> None:
    problem, _, _, assignment, _ = round200
    assert {c.applicant_type for c in problem.candidates} == set(ApplicantType)
    assert all(len(set(assignment[c.app_id])) == 3 for c in problem.candidates)
    loads = [
        sum(r in rs for rs in assignment.values())
        for r in {r for rs in assignment.values() for r in rs}
    ]
    assert max(loads) - min(loads) <= 2, "review load is balanced"


def test_no_reviewer_judged_a_conflicted_application(round200) -> None:
    _, _, _, assignment, conflicts = round200
    assert conflicts == set()
    assert 1005 not in assignment[5]


def test_award_keeps_capacity_shares_caps_and_minimums(round200) -> None:
    problem, plan, _, _, _ = round200
    assert violations(problem, plan.awards) == []
    for cell, used in usage_by_cell(plan.awards).items():
        assert used <= problem.capacity[cell] * (1 + 1e-6)
    achieved = shares(problem, plan.awards)
    for rule in problem.policy.shares:
        if rule.min_share is not None:
            assert achieved[rule.name] >= rule.min_share - 1e-6
        if rule.max_share is not None:
            assert achieved[rule.name] <= rule.max_share + 1e-6
    by_id = {c.app_id: c for c in problem.candidates}
    for app_id, award in plan.awards.items():
        assert award.total == 0 or award.total >= by_id[app_id].useful_minimum * (1 - 1e-6)
    assert plan.gap <= 0.01


def test_optimiser_beats_the_greedy_baseline(round200) -> None:
    problem, plan, greedy, _, _ = round200
    assert violations(problem, greedy.awards) == []
    print(
        f"optimiser {plan.objective:,.0f} ({plan.method}, gap {plan.gap:.4%}) "
        f"greedy {greedy.objective:,.0f} ratio {plan.objective / greedy.objective:.4f}"
    )
    assert plan.objective >= greedy.objective


def test_branching_path_also_beats_greedy() -> None:
    problem, _ = synthetic_round(120, seed=5)
    plan = solve(problem, always_branch=True, keep_best_of_greedy=False)
    assert violations(problem, plan.awards) == []
    assert plan.method == "milp"
    assert plan.objective >= greedy_plan(problem).objective


def test_explanation_names_binding_constraints_and_every_rejection(round200) -> None:
    problem, plan, _, _, _ = round200
    why = explain(problem, plan)
    assert why.binding, "an oversubscribed round has binding constraints"
    rejected = [c.app_id for c in problem.candidates if c.app_id not in plan.awards]
    assert rejected and all(why.reasons[a] for a in rejected)
    assert why.cutoff_score is not None and why.cutoff_score > 0
