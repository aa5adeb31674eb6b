"""Delivered versus entitled shares on contended multi-tenant workloads (issue 19).

    nice -n 10 .venv/bin/python bench/entitlements.py [--seeds 1,2,3,4,5] [--gpus 64]

Three programmes entitled 50/30/20, each submitting more than its share
(`synthetic.contended_trace`); delivered shares are measured while all three still submit.
Runs the default policy and EASY (which ignores shares, for contrast) on each seed. Last
line: one JSON object with per-seed shares and `worst_relative_deviation` of the default
(goal: <= 0.05).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpucenter.sim.cluster import uniform_cluster
from gpucenter.sim.engine import simulate
from gpucenter.sim.metrics import compute_metrics
from gpucenter.sim.policies import make_policy
from gpucenter.sim.traces.synthetic import contended_trace


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="1,2,3,4,5")
    ap.add_argument("--gpus", type=int, default=64)
    ap.add_argument("--jobs", type=int, default=4000)
    a = ap.parse_args()
    t0 = time.perf_counter()
    nodes = uniform_cluster(a.gpus).nodes()
    rows = []
    for seed in (int(s) for s in a.seeds.split(",")):
        jobs, shares = contended_trace(a.jobs, a.gpus, seed=seed)
        row: dict[str, object] = {"seed": seed, "jobs": len(jobs)}
        for name in ("default", "easy"):
            res = simulate(jobs, nodes, make_policy(name), shares=shares)
            m = compute_metrics(res, shares)
            got = m["shares_arriving"]
            row[name] = {
                "delivered": {k: round(v["delivered_share"], 4) for k, v in got["by_type"].items()},
                "max_relative_deviation": round(got["max_relative_deviation"], 4),
                "mean_jct_h": round(m["jct_h"]["all"]["mean"], 3),
                "mean_wait_h": round(m["wait_h"]["all"]["mean"], 3),
                "max_wait_h": round(m["wait_h"]["all"]["max"], 2),
            }
        print(row, file=sys.stderr, flush=True)
        rows.append(row)
    worst = max(r["default"]["max_relative_deviation"] for r in rows)  # type: ignore[index]
    print(
        json.dumps(
            {
                "entitled": shares,
                "gpus": a.gpus,
                "seeds": rows,
                "worst_relative_deviation": worst,
                "goal_met": worst <= 0.05,
                "wall_s": round(time.perf_counter() - t0, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
