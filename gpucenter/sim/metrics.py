"""Metrics of a replay: completion time, queueing delay, utilisation, fairness, shares.

All pure functions of a `SimResult`; percentiles by the nearest-rank method so that results
are exact and reproducible without numpy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from gpucenter.sim.engine import SimResult


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence (nan when empty)."""
    if not sorted_values:
        return math.nan
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def summary(values: Sequence[float]) -> dict[str, float]:
    """mean, p50, p95, p99, max and count of a sample."""
    v = sorted(values)
    mean = sum(v) / len(v) if v else math.nan
    return {
        "count": float(len(v)),
        "mean": mean,
        "p50": percentile(v, 50),
        "p95": percentile(v, 95),
        "p99": percentile(v, 99),
        "max": v[-1] if v else math.nan,
    }


def work_not_conserved(res: SimResult, rel_tol: float = 1e-9) -> list[int]:
    """Indices of finished jobs whose GPU-seconds, summed over all their runs, differ from
    what they needed: GPUs held x run time (the trace's duration, or the time limit when
    that is shorter and the job was stopped at it). Empty for a correct replay, however
    often jobs were preempted and requeued."""
    bad: list[int] = []
    for k, job in enumerate(res.jobs):
        if math.isnan(res.end[k]):
            continue
        need = job.duration_s
        if job.time_limit_s is not None:
            need = min(need, float(max(1, math.ceil(job.time_limit_s))))
        want = res.gpus[k] * need
        if abs(res.run_gpu_s[k] - want) > rel_tol * max(1.0, want) + 1e-6:
            bad.append(k)
    return bad


def jain(values: Sequence[float]) -> float:
    """Jain's fairness index: 1 when all equal, 1/n when one takes everything."""
    vals = [x for x in values if x >= 0]
    if not vals or sum(vals) == 0:
        return math.nan
    return sum(vals) ** 2 / (len(vals) * sum(x * x for x in vals))


def compute_metrics(res: SimResult, shares: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Every figure of the report, as plain JSON-able data."""
    jobs = res.jobs
    jct: dict[str, list[float]] = {"all": []}
    wait: dict[str, list[float]] = {"all": []}
    ftf: list[float] = []
    gpu_h: dict[str, float] = {}
    makespan = 0.0
    unfinished = 0
    last_submit = max((j.submit_s for j in jobs), default=0.0)
    for k, j in enumerate(jobs):
        s, e = res.start[k], res.end[k]
        kind = j.applicant_type.value
        if math.isnan(s) or math.isnan(e):
            unfinished += 1
            continue
        c = e - j.submit_s
        w = s - j.submit_s
        jct["all"].append(c)
        wait["all"].append(w)
        jct.setdefault(kind, []).append(c)
        wait.setdefault(kind, []).append(w)
        # Finish-time fairness (Themis): time in the shared cluster over time alone.
        ftf.append(c / max(j.duration_s, 1.0))
        gpu_h[kind] = gpu_h.get(kind, 0.0) + j.gpus * (e - s) / 3600.0
        makespan = max(makespan, e)
    total_h = sum(gpu_h.values())
    entitled = dict(shares or {})
    if not entitled and gpu_h:
        entitled = {k: 1.0 / len(gpu_h) for k in gpu_h}
    norm = sum(entitled.values()) or 1.0
    delivered = {k: (v / total_h if total_h else 0.0) for k, v in sorted(gpu_h.items())}
    share_rows = {
        k: {
            "gpu_hours": gpu_h.get(k, 0.0),
            "delivered_share": delivered.get(k, 0.0),
            "entitled_share": entitled.get(k, 0.0) / norm,
        }
        for k in sorted(set(gpu_h) | set(entitled))
    }
    normalised = [
        r["delivered_share"] / r["entitled_share"]
        for r in share_rows.values()
        if r["entitled_share"] > 0
    ]
    capacity = res.total_gpus * res.bin_s
    util = [b / capacity for b in res.busy_gpu_s]
    queue = [q / res.bin_s for q in res.queued_job_s]
    frag = [f / capacity for f in res.frag_gpu_s]
    # Exact: GPU-seconds busy (integrated event to event) over GPUs x the span from the
    # first submission (time 0) to the last completion; no rounding to timeline bins.
    span = res.total_gpus * makespan
    return {
        "policy": res.policy,
        "jobs": len(jobs),
        "finished": len(jct["all"]),
        "unfinished": unfinished,
        "rejected": len(res.rejected),
        "refused": [reason for _, reason in res.refused],
        "preemptions": res.preemptions,
        "makespan_h": makespan / 3600.0,
        "utilisation_mean": res.busy_gpu_s_total / span if span else 0.0,
        # The same while jobs still arrive (time 0 to the last submission): the load a
        # policy sustains, without the drain after the trace ends, when only stragglers run.
        "utilisation_arriving": (
            res.busy_gpu_s_arriving / (res.total_gpus * last_submit) if last_submit > 0 else 0.0
        ),
        # FGD's fragmented GPUs (see `sim.fragmentation`), as a share of all GPUs, averaged
        # over the same span.
        "fragmentation_mean": res.frag_gpu_s_total / span if span else 0.0,
        "jct_h": {k: _hours(summary(v)) for k, v in sorted(jct.items())},
        "wait_h": {k: _hours(summary(v)) for k, v in sorted(wait.items())},
        "fairness": {
            "jain_share_normalised_gpu_hours": jain(normalised),
            "finish_time_fairness": summary(ftf),
        },
        "shares": share_rows,
        "shares_arriving": _shares_arriving(res, entitled, norm),
        "timeline": {
            "bin_s": res.bin_s,
            "utilisation": util,
            "queued_jobs": queue,
            "fragmentation": frag,
        },
        "cdf_h": {k: _cdf(v) for k, v in sorted(jct.items())},
        "engine": {
            "events": res.events,
            "passes": res.passes,
            "wall_s": res.wall_s,
            "events_per_s": res.events_per_s,
        },
    }


def _shares_arriving(res: SimResult, entitled: Mapping[str, float], norm: float) -> dict[str, Any]:
    """Delivered shares while every programme still submits (time 0 to the last
    submission). Over the whole replay every job finishes, so each programme's GPU-hours
    are its demand whatever the policy; only this window shows what the scheduler gave
    whom. It is also what fair share steers: decayed usage since the start. Summed over
    timeline bins (their width is the resolution)."""
    last = max((j.submit_s for j in res.jobs), default=0.0)
    b0, b1 = 0, int(last // res.bin_s)
    got = {k: sum(v[b0:b1]) for k, v in res.kind_gpu_s.items()}
    total = sum(got.values())
    rows = {
        k: {
            "delivered_share": got.get(k, 0.0) / total if total else 0.0,
            "entitled_share": entitled.get(k, 0.0) / norm,
        }
        for k in sorted(set(got) | set(entitled))
    }
    dev = [
        abs(r["delivered_share"] / r["entitled_share"] - 1.0)
        for r in rows.values()
        if r["entitled_share"] > 0
    ]
    return {
        "from_h": b0 * res.bin_s / 3600.0,
        "to_h": b1 * res.bin_s / 3600.0,
        "by_type": rows,
        "max_relative_deviation": max(dev, default=0.0),
    }


def _hours(s: dict[str, float]) -> dict[str, float]:
    return {k: (v if k == "count" else v / 3600.0) for k, v in s.items()}


def _cdf(values: Sequence[float], points: int = 100) -> list[tuple[float, float]]:
    v = sorted(values)
    if not v:
        return []
    step = max(1, len(v) // points)
    out = [(v[i] / 3600.0, (i + 1) / len(v)) for i in range(0, len(v), step)]
    if out[-1][1] < 1.0:
        out.append((v[-1] / 3600.0, 1.0))
    return out
