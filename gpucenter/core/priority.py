"""Priority as a sum of weight x normalised factor, with an explainable breakdown.

The hot path computes one float per job from factors prepared once per job (size, QoS) and
once per project (fair share); the per-job breakdown objects users see (`sprio`) are built
lazily by `Breakdowns`, so a 100,000-job pass does not allocate 100,000 objects it may never
show.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from gpucenter.core.fairshare import FairShareFactors
from gpucenter.core.job_size import size_factor, small_factor
from gpucenter.core.model import PendingJob, PriorityBreakdown
from gpucenter.core.policy import Policies
from gpucenter.domain.clock import Instant
from gpucenter.domain.ids import JobId

if TYPE_CHECKING:
    from gpucenter.core.queue import QueuedJob


def _job_size(total_gpus: int, limit_s: float, cluster_gpus: int, policies: Policies) -> float:
    """The job-size factor the queue ordered by (see `PriorityWeights.favor_small`)."""
    w = policies.weights
    if w.favor_small:
        return small_factor(total_gpus, limit_s, cluster_gpus, w.max_age_s)
    return size_factor(total_gpus, cluster_gpus)


def age_factor(submitted_at: Instant, now: Instant, max_age_s: float) -> float:
    waited = now - submitted_at
    if waited <= 0:
        return 0.0
    return 1.0 if waited >= max_age_s else waited / max_age_s


class Breakdowns(Mapping[JobId, PriorityBreakdown]):
    """Lazy mapping job id -> breakdown; the index and each row are built when first read.

    `jobs` yields (job id, still listed) pairs; only listed ones are keys.
    """

    def __init__(
        self,
        jobs: Callable[[], Iterator[JobId]],
        explain: Callable[[JobId], PriorityBreakdown],
    ) -> None:
        self._jobs = jobs
        self._ids: dict[JobId, None] | None = None
        self._explain = explain
        self._cache: dict[JobId, PriorityBreakdown] = {}

    @classmethod
    def for_pass(
        cls,
        listed: Sequence[QueuedJob],
        pass_no: int,
        at: Instant,
        factors: FairShareFactors,
        policies: Policies,
        cluster_gpus: int,
    ) -> Breakdowns:
        """The breakdowns of one pass: every job pending when it began (`gone >= pass_no`),
        as ordered at `at` with these factors. Holds the queue entries, not the scheduler,
        so that a throw-away scheduler is freed as soon as its pass returns."""
        by_id: dict[JobId, QueuedJob] = {}

        def ids() -> Iterator[JobId]:
            return (q.id for q in listed if q.gone >= pass_no)

        def explain(job_id: JobId) -> PriorityBreakdown:
            if not by_id:
                by_id.update((q.id, q) for q in listed if q.gone >= pass_no)
            q = by_id[job_id]
            src = q.src
            return breakdown(
                src.job_id,
                fair_share=factors.factor(src.project_id, src.user_id),
                submitted_at=src.submitted_at,
                now=at,
                job_size=_job_size(q.shape.total, q.limit, cluster_gpus, policies),
                qos=policies.qos_factors.get(src.qos, 0.0),
                policies=policies,
            )

        return cls(ids, explain)

    @classmethod
    def for_final_pass(
        cls,
        jobs: Sequence[PendingJob],
        at: Instant,
        factors: FairShareFactors,
        policies: Policies,
        cluster_gpus: int,
    ) -> Breakdowns:
        """`for_pass` for a scheduler thrown away after its one pass: every job listed was
        pending when the pass began and nothing changes later, so the result keeps only the
        (long-lived) pending jobs, not the scheduler's per-job entries -- a 100,000-job pass
        leaves that much less for the garbage collector to trace."""
        by_id: dict[JobId, PendingJob] = {}

        def ids() -> Iterator[JobId]:
            return (src.job_id for src in jobs)

        def explain(job_id: JobId) -> PriorityBreakdown:
            if not by_id:
                by_id.update((src.job_id, src) for src in jobs)
            src = by_id[job_id]
            req = src.request
            return breakdown(
                src.job_id,
                fair_share=factors.factor(src.project_id, src.user_id),
                submitted_at=src.submitted_at,
                now=at,
                job_size=_job_size(
                    req.gpus_per_node * req.nodes, src.time_limit_s, cluster_gpus, policies
                ),
                qos=policies.qos_factors.get(src.qos, 0.0),
                policies=policies,
            )

        return cls(ids, explain)

    def _index(self) -> dict[JobId, None]:
        if self._ids is None:
            self._ids = dict.fromkeys(self._jobs())
        return self._ids

    def __getitem__(self, key: JobId) -> PriorityBreakdown:
        got = self._cache.get(key)
        if got is None:
            if key not in self._index():
                raise KeyError(key)
            got = self._explain(key)
            self._cache[key] = got
        return got

    def __iter__(self) -> Iterator[JobId]:
        return iter(self._index())

    def __len__(self) -> int:
        return len(self._index())


def breakdown(
    job_id: JobId,
    *,
    fair_share: float,
    submitted_at: Instant,
    now: Instant,
    job_size: float,
    qos: float,
    policies: Policies,
) -> PriorityBreakdown:
    """The full breakdown; `total` equals what the pass ordered by."""
    w = policies.weights
    age = age_factor(submitted_at, now, w.max_age_s)
    total = w.fair_share * fair_share + w.age * age + w.job_size * job_size + w.qos * qos
    return PriorityBreakdown(
        job_id=job_id,
        total=total,
        fair_share=fair_share,
        age=age,
        job_size=job_size,
        qos=qos,
        weights=(w.fair_share, w.age, w.job_size, w.qos),
    )


__all__ = [
    "Breakdowns",
    "FairShareFactors",
    "age_factor",
    "breakdown",
    "size_factor",
    "small_factor",
]
