"""Eligibility errors name the field; review assignment avoids conflicts; normalisation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gpucenter.allocation import (
    ApplicantType,
    AwardKind,
    BatchItem,
    CallRules,
    LeaseItem,
    Reviewer,
    ReviewTarget,
    Submission,
    assign_reviewers,
    check_submission,
    normalise,
)
from gpucenter.domain.errors import ValidationError

T0 = datetime(2026, 1, 1, tzinfo=UTC)
RULES = CallRules(
    T0,
    T0 + timedelta(days=30),
    frozenset({ApplicantType.STARTUP, ApplicantType.SME}),
    frozenset({"h100"}),
    frozenset({"2026Q2"}),
    max_gpu_hours=1000,
    max_lease_gpus=16,
)


def sub(**kw: object) -> Submission:
    base: dict[str, object] = dict(
        applicant_type="startup",
        kind=AwardKind.GPU_HOURS,
        batch=(BatchItem("h100", "2026Q2", 500),),
        lease=None,
        min_gpu_hours=100,
        tags=("quantum",),
        region="busan",
    )
    base.update(kw)
    return Submission(**base)  # type: ignore[arg-type]


CASES = {
    "too early": (sub(), T0 - timedelta(days=1), "call"),
    "too late": (sub(), T0 + timedelta(days=30), "call"),
    "ineligible type": (sub(applicant_type="university"), T0, "organisation"),
    "over the limit": (sub(batch=(BatchItem("h100", "2026Q2", 5000),)), T0, "requests"),
    "type not offered": (sub(batch=(BatchItem("b200", "2026Q2", 5),)), T0, "requests.gpu_type"),
    "minimum above request": (sub(min_gpu_hours=600), T0, "min_gpu_hours"),
    "unknown tag": (sub(tags=("alchemy",)), T0, "tags"),
    "lease too big": (
        sub(
            kind=AwardKind.LEASE,
            batch=(),
            lease=LeaseItem(
                "h100", 32, 8, datetime(2026, 4, 1, tzinfo=UTC), datetime(2026, 4, 2, tzinfo=UTC)
            ),
        ),
        T0,
        "lease.gpus",
    ),
    "lease outside periods": (
        sub(
            kind=AwardKind.LEASE,
            batch=(),
            lease=LeaseItem(
                "h100", 8, 8, datetime(2026, 6, 25, tzinfo=UTC), datetime(2026, 7, 5, tzinfo=UTC)
            ),
        ),
        T0,
        "lease.starts_at",
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_refusals_name_the_field(name: str) -> None:
    submission, now, field = CASES[name]
    with pytest.raises(ValidationError) as err:
        check_submission(RULES, submission, now)
    assert err.value.field == field


def test_a_good_submission_passes() -> None:
    check_submission(RULES, sub(), T0)


def test_assignment_refuses_when_too_few_conflict_free_reviewers() -> None:
    targets = [ReviewTarget(1, 10, frozenset({5}))]
    reviewers = [Reviewer(5, None), Reviewer(6, 10), Reviewer(7, 11)]
    with pytest.raises(ValidationError, match="only 1 conflict-free"):
        assign_reviewers(targets, reviewers, 2)
    assert assign_reviewers(targets, reviewers, 1) == {1: [7]}


def test_normalisation_cancels_a_harsh_reviewer() -> None:
    # Reviewer 1 is 3 points harsher than reviewer 2 on the same ranking.
    raw = {(1, 1): 3.0, (1, 2): 5.0, (2, 3): 6.0, (2, 4): 8.0}
    norm = normalise(raw)
    assert norm[1] == pytest.approx(norm[3]) and norm[2] == pytest.approx(norm[4])
    assert norm[2] > norm[1]
