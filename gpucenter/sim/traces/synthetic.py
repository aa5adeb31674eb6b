"""A seeded synthetic workload for national scale: who applies, how big, how long.

The mix follows the 2026 programmes (see DESIGN.md): many small university and SME jobs, mid
sized institute and startup jobs, and a foundation-model programme that submits few jobs of
512 to 4,096 GPUs. Arrivals are Poisson at a rate that offers `load` x the cluster's GPU
capacity on average; durations are log-normal, capped at 14 days. The same seed gives the
same trace on every machine (only `random.Random` is used).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from gpucenter.sim.traces.common import ApplicantType, TraceJob


@dataclass(frozen=True, slots=True)
class ApplicantMix:
    """One applicant type: share of submitted jobs, job sizes (GPUs, weight), median hours."""

    kind: ApplicantType
    job_share: float
    sizes: tuple[tuple[int, float], ...]
    median_hours: float
    tenants: int


DEFAULT_MIX: tuple[ApplicantMix, ...] = (
    ApplicantMix(
        ApplicantType.UNIVERSITY,
        0.45,
        ((1, 40), (2, 20), (4, 20), (8, 15), (16, 4), (32, 1)),
        2.0,
        400,
    ),
    ApplicantMix(
        ApplicantType.INSTITUTE,
        0.15,
        ((1, 20), (4, 20), (8, 30), (16, 15), (32, 10), (64, 5)),
        4.0,
        60,
    ),
    ApplicantMix(
        ApplicantType.STARTUP,
        0.15,
        ((1, 15), (8, 35), (16, 25), (32, 15), (64, 7), (128, 3)),
        6.0,
        120,
    ),
    ApplicantMix(
        ApplicantType.SME,
        0.245,
        ((1, 45), (2, 20), (4, 20), (8, 15)),
        1.5,
        300,
    ),
    ApplicantMix(
        ApplicantType.FOUNDATION,
        0.005,
        ((512, 30), (1024, 30), (2048, 25), (4096, 15)),
        24.0,
        3,
    ),
)

MAX_DURATION_S = 14 * 24 * 3600.0
_SIGMA = 1.2


def _mean_gpu_seconds(mix: tuple[ApplicantMix, ...]) -> float:
    total = 0.0
    for m in mix:
        w = sum(wt for _, wt in m.sizes)
        mean_size = sum(g * wt for g, wt in m.sizes) / w
        mean_s = m.median_hours * 3600.0 * math.exp(_SIGMA**2 / 2)
        total += m.job_share * mean_size * min(mean_s, MAX_DURATION_S)
    return total / sum(m.job_share for m in mix)


def synthetic_trace(
    jobs: int,
    gpus: int,
    *,
    seed: int = 0,
    load: float = 0.9,
    mix: tuple[ApplicantMix, ...] = DEFAULT_MIX,
    gpu_type: str | None = None,
) -> tuple[TraceJob, ...]:
    """`jobs` jobs offering about `load` x `gpus` GPUs of work; sizes capped at `gpus`."""
    if jobs < 1 or gpus < 1:
        raise ValueError("jobs and gpus must be at least 1")
    rng = random.Random(seed)
    rate = load * gpus / _mean_gpu_seconds(mix)  # jobs per second
    kinds = [m for m in mix]
    kind_w = [m.job_share for m in mix]
    size_tables = [([g for g, _ in m.sizes], [w for _, w in m.sizes]) for m in mix]
    out: list[TraceJob] = []
    t = 0.0
    idx = list(range(len(kinds)))
    choices = rng.choices(idx, weights=kind_w, k=jobs)
    for i in range(jobs):
        t += rng.expovariate(rate)
        k = choices[i]
        m = kinds[k]
        sizes, weights = size_tables[k]
        size = min(rng.choices(sizes, weights=weights)[0], gpus)
        dur = min(rng.lognormvariate(math.log(m.median_hours * 3600.0), _SIGMA), MAX_DURATION_S)
        tenant = f"{m.kind.value}-{rng.randrange(m.tenants)}"
        out.append(
            TraceJob(
                job_id=i,
                submit_s=round(t, 3),
                duration_s=max(round(dur, 1), 60.0),
                gpus=size,
                gpu_type=gpu_type,
                tenant=tenant,
                applicant_type=m.kind,
            )
        )
    return tuple(out)


@dataclass(frozen=True, slots=True)
class ProgrammeLoad:
    """One programme of a multi-tenant workload: its entitled share of the cluster, the
    share of the offered work it submits, and its job mix (GPUs with weights, median hours)."""

    kind: ApplicantType
    entitled: float
    demand: float
    sizes: tuple[tuple[int, float], ...]
    median_hours: float
    tenants: int = 4


# Entitled 50/30/20, but the smallest programme submits the most short, small jobs and the
# largest the fewest, long, wide ones: a scheduler that favours short jobs without keeping
# entitlements would hand the 20% programme far more than its share.
CONTENDED_MIX: tuple[ProgrammeLoad, ...] = (
    ProgrammeLoad(ApplicantType.INSTITUTE, 0.5, 0.4, ((8, 50), (16, 40), (32, 10)), 2.0),
    ProgrammeLoad(ApplicantType.UNIVERSITY, 0.3, 0.3, ((1, 30), (4, 40), (8, 30)), 1.0),
    ProgrammeLoad(ApplicantType.STARTUP, 0.2, 0.3, ((1, 60), (2, 30), (4, 10)), 0.5),
)


def contended_trace(
    jobs: int,
    gpus: int,
    *,
    seed: int = 0,
    load: float = 2.5,
    mix: tuple[ProgrammeLoad, ...] = CONTENDED_MIX,
) -> tuple[tuple[TraceJob, ...], dict[str, float]]:
    """An oversubscribed multi-tenant workload and its entitled shares by programme.

    Each programme submits `demand` x `load` x the cluster's capacity of work (Poisson
    arrivals, log-normal durations), so with `load` > 1 / min(demand / entitled) every
    programme always has work waiting and what each one gets is the scheduler's choice."""
    rng = random.Random(seed)
    total = sum(m.demand for m in mix)
    rates = []  # jobs per second of each programme
    for m in mix:
        w = sum(wt for _, wt in m.sizes)
        mean_size = sum(g * wt for g, wt in m.sizes) / w
        mean_s = m.median_hours * 3600.0 * math.exp(_SIGMA**2 / 2)
        rates.append(load * m.demand / total * gpus / (mean_size * mean_s))
    streams: list[TraceJob] = []
    for m, rate in zip(mix, rates, strict=True):
        t = 0.0
        sizes = [g for g, _ in m.sizes]
        weights = [wt for _, wt in m.sizes]
        for _ in range(max(1, round(jobs * rate / sum(rates)))):
            t += rng.expovariate(rate)
            dur = min(rng.lognormvariate(math.log(m.median_hours * 3600.0), _SIGMA), MAX_DURATION_S)
            streams.append(
                TraceJob(
                    job_id=0,
                    submit_s=round(t, 3),
                    duration_s=max(round(dur, 1), 60.0),
                    gpus=min(rng.choices(sizes, weights=weights)[0], gpus),
                    tenant=f"{m.kind.value}-{rng.randrange(m.tenants)}",
                    applicant_type=m.kind,
                )
            )
    streams.sort(key=lambda j: j.submit_s)
    horizon = min(_last_submit(streams, m.kind) for m in mix)
    kept = [j for j in streams if j.submit_s <= horizon]
    out = tuple(
        TraceJob(k, j.submit_s, j.duration_s, j.gpus, None, j.tenant, j.applicant_type)
        for k, j in enumerate(kept)
    )
    return out, {m.kind.value: m.entitled for m in mix}


def _last_submit(jobs: list[TraceJob], kind: ApplicantType) -> float:
    """When `kind` submits its last job (the trace is cut there for every programme, so
    that none stops submitting while the others go on)."""
    return max(j.submit_s for j in jobs if j.applicant_type is kind)
