"""Peer review: conflict-free assignment with balanced load, rubrics, score normalisation.

Reviewers differ in how harshly they score; comparing raw means would reward applications
that drew lenient reviewers. We z-score each reviewer's totals, average per application and
map back onto the rubric's scale, so the optimiser weighs comparable numbers.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gpucenter.domain.errors import ValidationError
from gpucenter.domain.messages import msg


@dataclass(frozen=True, slots=True)
class Criterion:
    name: str
    weight: float
    max_points: float = 10.0

    def __post_init__(self) -> None:
        if not self.name:
            raise ValidationError.about("rubric.name", msg("error.value_empty"))
        if not self.weight > 0:
            raise ValidationError.about("rubric.weight", msg("error.value_positive"))
        if not self.max_points > 0:
            raise ValidationError.about("rubric.max_points", msg("error.value_positive"))


DEFAULT_RUBRIC: tuple[Criterion, ...] = (
    Criterion("scientific_merit", 0.4),
    Criterion("feasibility", 0.3),
    Criterion("impact", 0.2),
    Criterion("need_for_gpus", 0.1),
)


def weighted_total(rubric: Sequence[Criterion], scores: Mapping[str, float]) -> float:
    """The rubric total on a 0-10 scale; every criterion must be scored within its range."""
    names = {c.name for c in rubric}
    extra = set(scores) - names
    if extra:
        raise ValidationError.about(
            "scores", msg("error.scores_unknown", names=", ".join(sorted(extra)))
        )
    total = 0.0
    for c in rubric:
        if c.name not in scores:
            raise ValidationError.about(f"scores.{c.name}", msg("error.score_missing"))
        v = scores[c.name]
        if not 0 <= v <= c.max_points:
            raise ValidationError.about(
                f"scores.{c.name}", msg("error.value_between", low=0, high=f"{c.max_points:g}")
            )
        total += c.weight * v / c.max_points
    return 10.0 * total / sum(c.weight for c in rubric)


@dataclass(frozen=True, slots=True)
class ReviewTarget:
    """An application as the assigner sees it: its organisation and its team."""

    app_id: int
    organisation_id: int
    team_user_ids: frozenset[int]


@dataclass(frozen=True, slots=True)
class Reviewer:
    user_id: int
    organisation_id: int | None


def conflicted(
    reviewer: Reviewer, target: ReviewTarget, declared: frozenset[tuple[int, int]]
) -> bool:
    """Same organisation, a co-applicant, or a declared conflict (reviewer_id, app_id)."""
    return (
        reviewer.organisation_id == target.organisation_id
        or reviewer.user_id in target.team_user_ids
        or (reviewer.user_id, target.app_id) in declared
    )


def assign_reviewers(
    targets: Sequence[ReviewTarget],
    reviewers: Sequence[Reviewer],
    k: int,
    declared: frozenset[tuple[int, int]] = frozenset(),
    existing: Mapping[int, Sequence[int]] | None = None,
) -> dict[int, list[int]]:
    """k conflict-free reviewers per application, spreading the load as evenly as possible.

    Most constrained applications go first (fewest eligible reviewers), each taking the
    least-loaded eligible reviewers (ties by id), so the result is deterministic. Existing
    assignments are kept and count towards load. Raises ValidationError naming the first
    application that cannot get k reviewers.
    """
    if k < 1:
        raise ValidationError.about("k", msg("error.value_at_least", low=1))
    load: dict[int, int] = defaultdict(int)
    result: dict[int, list[int]] = {}
    for app_id, ids in (existing or {}).items():
        result[app_id] = list(ids)
        for r in ids:
            load[r] += 1
    eligible = {
        t.app_id: [r.user_id for r in reviewers if not conflicted(r, t, declared)] for t in targets
    }
    for t in sorted(targets, key=lambda t: (len(eligible[t.app_id]), t.app_id)):
        have = result.setdefault(t.app_id, [])
        pool = [r for r in eligible[t.app_id] if r not in have]
        need = k - len(have)
        if need <= 0:
            continue
        if len(pool) < need:
            raise ValidationError.about(
                "reviewers",
                msg("error.reviewers_short", app=t.app_id, have=len(pool) + len(have), need=k),
            )
        for r in sorted(pool, key=lambda r: (load[r], r))[:need]:
            have.append(r)
            load[r] += 1
    return result


def normalise(scores: Mapping[tuple[int, int], float]) -> dict[int, float]:
    """Per-reviewer z-scores, averaged per application, mapped back to the raw scale.

    `scores` maps (reviewer_id, app_id) to the rubric total. A reviewer with one score or
    no spread contributes z = 0 (no information about their leniency). The result is
    clipped below at 0.01 so every reviewed application keeps a positive weight.
    """
    if not scores:
        return {}
    by_reviewer: dict[int, list[float]] = defaultdict(list)
    for (r, _), v in scores.items():
        by_reviewer[r].append(v)
    stats = {
        r: (statistics.fmean(vs), statistics.pstdev(vs) if len(vs) > 1 else 0.0)
        for r, vs in by_reviewer.items()
    }
    raw = list(scores.values())
    mean, spread = statistics.fmean(raw), statistics.pstdev(raw) if len(raw) > 1 else 0.0
    zs: dict[int, list[float]] = defaultdict(list)
    for (r, a), v in scores.items():
        mu, sd = stats[r]
        zs[a].append((v - mu) / sd if sd > 0 else 0.0)
    return {a: max(0.01, mean + statistics.fmean(z) * spread) for a, z in zs.items()}
