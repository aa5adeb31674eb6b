"""GPU-sharing fragmentation on the Alibaba openb trace (FGD, ATC '23), our placers vs published.

    .venv/bin/python bench/openb_fragmentation.py [--traces-dir DIR] [--seeds 10] [--point 100]

Prints one line per policy and, last, a JSON object with the mean fragmented-GPU percentage at
`--point`% arrived GPU demand for `random`, `bestfit` and `default`, next to the published
Random / BestFit / FGD figures when the expected-results folder is present.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpucenter.sim.sharing import POLICIES, at_point, replay  # noqa: E402
from gpucenter.sim.traces.openb import load_openb_nodes, load_openb_pods  # noqa: E402

TRACES = ROOT.parent / "shared" / "traces"
PUBLISHED = {"random": "01-Random", "bestfit": "05-BestFit", "default": "06-FGD"}


def published(results_dir: Path, workload: str, point: int) -> dict[str, float]:
    path = results_dir / "analysis_frag_discrete.csv"
    if not path.is_file():
        return {}
    sums: dict[str, list[float]] = {}
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row["workload"] == workload and row.get(str(point)):
                sums.setdefault(row["sc_policy"], []).append(float(row[str(point)]))
    return {
        ours: round(sum(v) / len(v), 2)
        for ours, theirs in PUBLISHED.items()
        if (v := sums.get(theirs))
    }


def run_one(args: tuple[str, str, str, int, int]) -> tuple[str, int, float]:
    nodes_path, pods_path, policy, seed, point = args
    nodes = load_openb_nodes(nodes_path)
    pods = [p.request for p in load_openb_pods(pods_path)]
    res = replay(nodes, pods, policy, seed)
    return policy, seed, at_point(res, point)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces-dir", type=Path, default=TRACES)
    ap.add_argument("--pods", default="openb_pod_list_default")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=42)
    ap.add_argument("--point", type=int, default=100)
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    openb = a.traces_dir / "alibaba-gpu-v2023-openb"
    nodes_path = openb / "openb_node_list_gpu_node.csv"
    pods_path = openb / f"{a.pods}.csv"
    if not pods_path.is_file():
        sys.exit(f"no pod list at {pods_path}; pass --traces-dir")
    policies = [p for p in a.policies.split(",") if p]
    jobs = [
        (str(nodes_path), str(pods_path), p, s, a.point)
        for p in policies
        for s in range(a.first_seed, a.first_seed + a.seeds)
    ]
    t0 = time.perf_counter()
    per: dict[str, list[float]] = {p: [] for p in policies}
    with ProcessPoolExecutor(max_workers=a.workers) as pool:
        for policy, seed, value in pool.map(run_one, jobs):
            per[policy].append(value)
            print(f"{policy:8s} seed {seed}: {value:.2f}% fragmented", file=sys.stderr)
    ours = {p: round(sum(v) / len(v), 2) for p, v in per.items()}
    ref = published(a.traces_dir / "fgd-atc23-expected-results", a.pods, a.point)
    for p in policies:
        line = f"{p:8s} {ours[p]:6.2f}% of GPUs fragmented at {a.point}% arrival"
        if p in ref:
            line += f" (published {PUBLISHED[p]}: {ref[p]:.2f}%)"
        print(line)
    out: dict[str, object] = dict(ours)
    out.update(
        {
            "point_pct": a.point,
            "seeds": a.seeds,
            "published": ref,
            "wall_s": round(time.perf_counter() - t0, 1),
        }
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
