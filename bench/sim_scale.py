"""Synthetic national-scale replay: N jobs on G GPUs under our policy, timed, with peak RSS.

    .venv/bin/python bench/sim_scale.py --jobs 1000000 --gpus 260000 [--policy ours]

Last line: JSON with jobs, gpus, wall_s, cpu_s (process CPU time: the figure to compare on a
shared machine), events_per_s and peak_rss_mb. `--progress` prints progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpucenter.sim.cluster import uniform_cluster  # noqa: E402
from gpucenter.sim.engine import simulate  # noqa: E402
from gpucenter.sim.policies import make_policy  # noqa: E402
from gpucenter.sim.traces import synthetic_trace  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--gpus", type=int, default=260_000)
    ap.add_argument("--policy", default="ours")
    ap.add_argument("--load", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--progress", action="store_true", help="print progress to stderr")
    ap.add_argument(
        "--backfill-interval",
        type=float,
        default=None,
        help="seconds between backfill passes (default: the policy's, as the server runs it)",
    )
    a = ap.parse_args()
    t0 = time.perf_counter()
    c0 = time.process_time()
    jobs = synthetic_trace(a.jobs, a.gpus, seed=a.seed, load=a.load)
    gen_s = time.perf_counter() - t0
    nodes = uniform_cluster(a.gpus).nodes()
    shown = [-1]

    def progress(done: int, total: int) -> None:
        pct = 100 * done // max(1, total)
        if pct // 5 > shown[0]:
            shown[0] = pct // 5
            print(
                f"{pct}% of jobs done: wall {time.perf_counter() - t0:.0f} s, "
                f"cpu {time.process_time() - c0:.0f} s",
                file=sys.stderr,
                flush=True,
            )

    policy = make_policy(a.policy, backfill_interval_s=a.backfill_interval)
    res = simulate(jobs, nodes, policy, progress=progress if a.progress else None)
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "jobs": a.jobs,
                "gpus": a.gpus,
                "policy": a.policy,
                "backfill_interval_s": a.backfill_interval,
                "generate_s": round(gen_s, 1),
                "wall_s": round(time.perf_counter() - t0, 1),
                "cpu_s": round(time.process_time() - c0, 1),
                "replay_s": round(res.wall_s, 1),
                "events_per_s": round(res.events_per_s),
                "passes": res.passes,
                "peak_rss_mb": round(rss_kb / 1024),
            }
        )
    )


if __name__ == "__main__":
    main()
