"""Allocation programmes as pure logic: eligibility, review, and the award optimiser.

Nothing here touches the database or the clock: services load a call into these values,
call the functions, and persist what comes back.
"""

from gpucenter.allocation.eligibility import CallRules, Submission, check_submission
from gpucenter.allocation.explain import Explanation, explain
from gpucenter.allocation.greedy import greedy_plan
from gpucenter.allocation.model import (
    CAPITAL_REGIONS,
    SECTOR_OF,
    STRATEGIC_TECHNOLOGIES,
    ApplicantType,
    Award,
    AwardKind,
    AwardPolicy,
    AwardProblem,
    BatchItem,
    Candidate,
    Cell,
    LeaseItem,
    Sector,
    ShareRule,
    quarter_bounds,
)
from gpucenter.allocation.optimiser import solve
from gpucenter.allocation.plan import AwardPlan, joined, objective, rule_breaks, violations
from gpucenter.allocation.review import (
    DEFAULT_RUBRIC,
    Criterion,
    Reviewer,
    ReviewTarget,
    assign_reviewers,
    conflicted,
    normalise,
    weighted_total,
)

__all__ = [
    "CAPITAL_REGIONS",
    "DEFAULT_RUBRIC",
    "SECTOR_OF",
    "STRATEGIC_TECHNOLOGIES",
    "ApplicantType",
    "Award",
    "AwardKind",
    "AwardPlan",
    "AwardPolicy",
    "AwardProblem",
    "BatchItem",
    "CallRules",
    "Candidate",
    "Cell",
    "Criterion",
    "Explanation",
    "LeaseItem",
    "ReviewTarget",
    "Reviewer",
    "Sector",
    "ShareRule",
    "Submission",
    "assign_reviewers",
    "check_submission",
    "conflicted",
    "explain",
    "greedy_plan",
    "joined",
    "normalise",
    "objective",
    "quarter_bounds",
    "rule_breaks",
    "solve",
    "violations",
    "weighted_total",
]
