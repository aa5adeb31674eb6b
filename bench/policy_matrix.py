"""Every job-level trace x three loads x {fifo, easy, las, default} (issue 19).

    nice -n 10 .venv/bin/python bench/policy_matrix.py [--only NAME,...] [--policies ...]

Traces: ``$GPUCENTER_TRACES`` or ../shared/traces (see `matrix_lib.py` for the set and what
each trace gives). Per trace, the load levels are the cluster sizes at which FIFO's
utilisation is nearest 0.6, 0.75 and 0.9 (`gpucenter.sim.calibrate`); the utilisation FIFO
reached is reported with each case, and targets that map to the same size (FIFO cannot
reach them: head-of-line blocking caps it) are one case listing all of them. Every policy
replays every case in this one run, so the ratios compare figures measured side by side.
Each replay also checks that every job ran exactly its duration x GPUs (work conserved
across preemptions).

Progress goes to stderr; the last line of stdout is one JSON object: per case the
default's ratios to EASY and FIFO (mean JCT, mean wait), every policy's figures (p99 and
max wait, utilisation, FGD fragmentation), and `worst_jct_ratio_vs_easy`,
`worst_wait_ratio_vs_easy` over all cases (goal: both <= 0.95).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from matrix_lib import (
    SCORED,
    finite,
    load_levels,
    log,
    one_tenant,
    policy,
    ratio,
    refused_jobs,
    run_one,
    traces_dir,
)

POLICIES = ("fifo", "easy", "las", "default")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="", help="comma-separated trace names (default: all)")
    ap.add_argument("--policies", default=",".join(POLICIES))
    a = ap.parse_args()
    names = [n for n in a.only.split(",") if n] or list(SCORED)
    pols = [p for p in a.policies.split(",") if p]
    t0 = time.perf_counter()
    root = traces_dir()
    cases: list[dict[str, Any]] = []
    for name in names:
        loader, gpn = SCORED[name]
        jobs = one_tenant(loader(root))
        levels = load_levels(jobs, gpn)
        log(f"{name}: {len(jobs)} jobs, levels {[(t, g, round(u, 3)) for t, g, u in levels]}")
        # Targets FIFO cannot tell apart (the same nearest size) are one case, replayed once.
        sizes: dict[int, tuple[list[float], float]] = {}
        for target, gpus, fifo_util in levels:
            sizes.setdefault(gpus, ([], fifo_util))[0].append(target)
        for gpus, (targets, fifo_util) in sizes.items():
            case: dict[str, Any] = {
                "trace": name,
                "jobs": len(jobs),
                "load_targets": targets,
                "gpus": gpus,
                "gpus_per_node": gpn,
                "fifo_utilisation": round(fifo_util, 4),
                "refused": refused_jobs(jobs, gpus, gpn),
                "policies": {},
            }
            for p in pols:
                case["policies"][p] = run_one(jobs, gpus, gpn, policy(p))
            if "easy" in case["policies"]:
                # No schedule completes a job before its duration: the best JCT ratio any
                # policy could reach against EASY here (preemptive ones included).
                ideal = sum(j.duration_s for j in jobs) / len(jobs) / 3600.0
                case["jct_floor_vs_easy"] = round(ideal / case["policies"]["easy"]["mean_jct_h"], 4)
            case.update(_ratios(case["policies"]))
            log(_line(case))
            cases.append(case)
    print(json.dumps(_summary(cases, time.perf_counter() - t0), allow_nan=False))


def _ratios(fig: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "easy" in fig:
        e = fig["easy"]
        out["vs_easy"] = {
            p: [ratio(f["mean_jct_h"], e["mean_jct_h"]), ratio(f["mean_wait_h"], e["mean_wait_h"])]
            for p, f in fig.items()
            if p != "easy"
        }
    if "default" not in fig:
        return out
    d = fig["default"]
    for base in ("easy", "fifo"):
        if base in fig:
            b = fig[base]
            out[f"jct_ratio_vs_{base}"] = ratio(d["mean_jct_h"], b["mean_jct_h"])
            out[f"wait_ratio_vs_{base}"] = ratio(d["mean_wait_h"], b["mean_wait_h"])
    return out


def _line(case: dict[str, Any]) -> str:
    figs = " | ".join(
        f"{p} jct {f['mean_jct_h']:.3g} wait {f['mean_wait_h']:.3g} max {f['max_wait_h']:.3g} "
        f"{f['wall_s']}s"
        for p, f in case["policies"].items()
    )
    return (
        f"  {case['trace']} @{case['load_targets']} ({case['gpus']} GPUs, fifo util "
        f"{case['fifo_utilisation']}): jct/easy {case.get('jct_ratio_vs_easy')} "
        f"wait/easy {case.get('wait_ratio_vs_easy')} | {figs}"
    )


def _summary(cases: list[dict[str, Any]], wall_s: float) -> dict[str, Any]:
    def worst(key: str) -> float | None:
        vals = [c[key] for c in cases if c.get(key) is not None]
        return max(vals) if vals else None

    undefined = [
        f"{c['trace']}@{c['load_targets']}"
        for c in cases
        if "jct_ratio_vs_easy" in c and c.get("wait_ratio_vs_easy") is None
    ]
    conserved = all(f["work_not_conserved"] == 0 for c in cases for f in c["policies"].values())
    for c in cases:
        for f in c["policies"].values():
            for k, v in list(f.items()):
                if isinstance(v, float):
                    f[k] = finite(round(v, 6))
    by_policy: dict[str, dict[str, float | None]] = {}
    for p in sorted({p for c in cases for p in c.get("vs_easy", {})}):
        jct = [c["vs_easy"][p][0] for c in cases if p in c.get("vs_easy", {})]
        wait = [c["vs_easy"][p][1] for c in cases if p in c.get("vs_easy", {})]
        jct = [x for x in jct if x is not None]
        wait = [x for x in wait if x is not None]
        by_policy[p] = {
            "worst_jct": max(jct, default=None),
            "worst_wait": max(wait, default=None),
            "mean_jct": sum(jct) / len(jct) if jct else None,
            "mean_wait": sum(wait) / len(wait) if wait else None,
        }
    return {
        "cases": cases,
        "ratios_vs_easy_by_policy": by_policy,
        "worst_jct_ratio_vs_easy": worst("jct_ratio_vs_easy"),
        "worst_wait_ratio_vs_easy": worst("wait_ratio_vs_easy"),
        "worst_jct_ratio_vs_fifo": worst("jct_ratio_vs_fifo"),
        "worst_wait_ratio_vs_fifo": worst("wait_ratio_vs_fifo"),
        "wait_ratio_undefined": undefined,
        "work_conserved_every_replay": conserved,
        "goal_met": (worst("jct_ratio_vs_easy") or 9.0) <= 0.95
        and (worst("wait_ratio_vs_easy") or 9.0) <= 0.95,
        "wall_s": round(wall_s, 1),
    }


if __name__ == "__main__":
    main()
