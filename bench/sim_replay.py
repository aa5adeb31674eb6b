"""Replay the whole Philly extract on its cluster size, timed.

    .venv/bin/python bench/sim_replay.py [--trace PATH] [--cluster YAML] [--policies ours]

Last line: JSON with jobs, wall_s (load + replay) and events_per_s, per policy when several.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpucenter.sim.cluster import load_cluster  # noqa: E402
from gpucenter.sim.engine import simulate  # noqa: E402
from gpucenter.sim.metrics import compute_metrics  # noqa: E402
from gpucenter.sim.policies import make_policy  # noqa: E402
from gpucenter.sim.traces import load_philly  # noqa: E402

TRACE = ROOT.parent / "shared" / "traces" / "philly-pollux" / "philly.csv"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trace", type=Path, default=TRACE)
    ap.add_argument("--cluster", type=Path, default=ROOT / "examples/clusters/philly.yaml")
    ap.add_argument("--policies", default="ours")
    a = ap.parse_args()
    t0 = time.perf_counter()
    jobs = load_philly(a.trace)
    load_s = time.perf_counter() - t0
    nodes = load_cluster(a.cluster).nodes()
    out: dict[str, object] = {"jobs": len(jobs), "gpus": sum(n.gpu_count for n in nodes)}
    per: dict[str, object] = {}
    for name in a.policies.split(","):
        res = simulate(jobs, nodes, make_policy(name))
        m = compute_metrics(res)
        per[name] = {
            "wall_s": round(res.wall_s, 2),
            "events_per_s": round(res.events_per_s),
            "mean_jct_h": round(m["jct_h"]["all"]["mean"], 3),
            "mean_wait_h": round(m["wait_h"]["all"]["mean"], 3),
        }
        print(f"{name}: {per[name]}", file=sys.stderr)
    first = a.policies.split(",")[0]
    first_res = per[first]
    assert isinstance(first_res, dict)
    out["wall_s"] = round(load_s + float(first_res["wall_s"]), 2)
    out["events_per_s"] = first_res["events_per_s"]
    out["load_s"] = round(load_s, 2)
    out["policies"] = per
    print(json.dumps(out))


if __name__ == "__main__":
    main()
