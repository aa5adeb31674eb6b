"""Award optimiser benchmark: N applications x 4 GPU types x 4 quarters, against greedy.

    .venv/bin/python bench/award_optimiser.py --applications 5000

The last line is JSON: `seconds` (wall time of `solve`, model build included), `gap` (relative
gap to the best bound: the LP relaxation's, or HiGHS's dual bound when it branched),
`greedy_ratio` (our total score over the greedy score-order baseline's on the same input).
"""

from __future__ import annotations

import argparse
import json
import time

from gpucenter.allocation import greedy_plan, solve, violations
from gpucenter.allocation.synthetic import synthetic_round


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--applications", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--gap", type=float, default=0.01, help="mip_rel_gap")
    ap.add_argument("--time-limit", type=float, default=28.0)
    ap.add_argument("--always-branch", action="store_true", help="skip the LP-rounding shortcut")
    args = ap.parse_args()
    problem, _ = synthetic_round(args.applications, seed=args.seed)
    started = time.perf_counter()
    plan = solve(
        problem,
        mip_rel_gap=args.gap,
        time_limit_s=args.time_limit,
        always_branch=args.always_branch,
        keep_best_of_greedy=not args.always_branch,
    )
    seconds = time.perf_counter() - started
    greedy = greedy_plan(problem)
    broken = violations(problem, plan.awards)
    print(
        f"{args.applications} applications, {len(problem.capacity)} cells: "
        f"{len(plan.awards)} awarded by {plan.method} ({plan.status}); "
        f"greedy awards {len(greedy.awards)} in {greedy.seconds:.2f} s; "
        f"violations: {len(broken)} (greedy {len(violations(problem, greedy.awards))})"
    )
    print(
        json.dumps(
            {
                "applications": args.applications,
                "seconds": round(seconds, 3),
                "gap": round(plan.gap, 6),
                "greedy_ratio": round(plan.objective / greedy.objective, 6),
                "method": plan.method,
                "objective": round(plan.objective, 1),
                "greedy_objective": round(greedy.objective, 1),
                "feasible": not broken,
            }
        )
    )


if __name__ == "__main__":
    main()
