"""Benchmark of the scheduling core: one full pass and incremental passes at national scale.

    .venv/bin/python bench/core_pass.py --gpus 260000 --pending 100000 --busy 200000

Setup (seeded, not timed): nodes of 8 GPUs in blocks of 32 nodes, three GPU types in equal
parts; running jobs with a Philly-like size mix fill `--busy` GPUs (single-node jobs packed
on random nodes, multi-node jobs on whole nodes); `--pending` queued jobs with the same mix
plus multi-node jobs up to 4,096 GPUs, 10% accepting any type, 5% opportunistic, spread over
500 projects in a programme/organisation/project share tree with random decayed usage.
`--max-blocks-share S` limits a share S of the multi-node jobs to the fewest network blocks
they fit in (or one more), as users ask with `max_blocks`.

Timed: `schedule_pass` end to end (building the scheduler's indices from the snapshot,
priorities, sort, placement, backfill over the whole queue) -- a cold start that fills the
free GPUs (~19,000 starts at 260,000 GPUs); the same full pass one cycle later, on the
snapshot with those starts running (steady state: a full cluster, few starts); and, on a
`Scheduler` kept between passes, a pass after `--completions` jobs finished (the `finish`
calls included). Every timed full pass starts from scratch: nothing is cached between them.
The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpucenter.core import (
    ClusterSnapshot,
    FairShare,
    NodeGpus,
    NodeSnapshot,
    PendingJob,
    RunningJob,
    ShareAccount,
    build_scheduler,
    schedule_pass,
)
from gpucenter.domain.ids import JobId, ProjectId
from gpucenter.domain.jobs import GpuRequest

TYPES = ("h100", "h200", "b200")
LIMITS_H = (1, 2, 4, 8, 12, 24, 48, 72)
NOW = 1_800_000_000.0
# Philly-like: most jobs are one GPU; a long tail of multi-node jobs.
SIZES = (
    (1, 0.55),
    (2, 0.10),
    (4, 0.10),
    (8, 0.14),
    (16, 0.04),
    (32, 0.03),
    (64, 0.02),
    (128, 0.01),
    (256, 0.005),
    (512, 0.003),
    (1024, 0.001),
    (2048, 0.0006),
    (4096, 0.0004),
)


def _size(rng: random.Random) -> int:
    x = rng.random()
    acc = 0.0
    for size, p in SIZES:
        acc += p
        if x < acc:
            return size
    return 1


def build(args: argparse.Namespace) -> tuple[ClusterSnapshot, list[PendingJob], FairShare]:
    rng = random.Random(args.seed)
    n_nodes = args.gpus // 8
    nodes = tuple(
        NodeSnapshot(f"n{i:06d}", TYPES[i * len(TYPES) // n_nodes], 8, f"b{i // 32:05d}")
        for i in range(n_nodes)
    )
    free = [8] * n_nodes
    running: list[RunningJob] = []
    busy = 0
    jid = 10_000_000
    order = list(range(n_nodes))
    rng.shuffle(order)
    cursor = 0
    while busy < args.busy and cursor < n_nodes:
        size = min(_size(rng), args.busy - busy)
        limit = rng.choice(LIMITS_H) * 3600
        started = NOW - rng.uniform(0, limit * 0.95)
        if size >= 8:
            k = size // 8
            picked = []
            while len(picked) < k and cursor < n_nodes:
                n = order[cursor]
                cursor += 1
                if free[n] == 8:
                    picked.append(n)
            for n in picked:
                free[n] = 0
            placement = tuple(NodeGpus(nodes[n].name, tuple(range(8))) for n in picked)
            busy += 8 * len(picked)
        else:
            n = order[cursor]
            if free[n] < size:
                cursor += 1
                continue
            first = 8 - free[n]
            placement = (NodeGpus(nodes[n].name, tuple(range(first, first + size))),)
            free[n] -= size
            busy += size
            if free[n] == 0 or rng.random() < 0.3:
                cursor += 1
        if placement:
            running.append(
                RunningJob(JobId(jid), ProjectId(rng.randrange(500)), placement, started, limit)
            )
            jid += 1
    projects = []
    for p in range(5):
        orgs = []
        for o in range(10):
            projs = tuple(
                ShareAccount(
                    f"proj{p}.{o}.{j}",
                    rng.uniform(1, 10),
                    project_id=ProjectId(p * 100 + o * 10 + j),
                )
                for j in range(10)
            )
            orgs.append(ShareAccount(f"org{p}.{o}", rng.uniform(1, 10), projs))
        projects.append(ShareAccount(f"prog{p}", (40, 25, 15, 10, 10)[p], tuple(orgs)))
    root = ShareAccount("root", children=tuple(projects))
    usage = {ProjectId(p): rng.uniform(0, 1e9) for p in range(500)}
    queue = []
    for i in range(args.pending):
        size = _size(rng)
        gpn, k = (size, 1) if size <= 8 else (8, size // 8)
        t = rng.choice(TYPES)
        alts = tuple(x for x in TYPES if x != t) if rng.random() < 0.1 else ()
        queue.append(
            PendingJob(
                JobId(i),
                ProjectId(rng.randrange(500)),
                GpuRequest(t, gpn, k, alts),
                rng.choice(LIMITS_H) * 3600,
                NOW - rng.uniform(0, 5 * 86400),
                qos="opportunistic" if rng.random() < 0.05 else "normal",
            )
        )
    share = getattr(args, "max_blocks_share", 0.0)
    if share > 0:
        # Gangs that must stay within the fewest blocks they fit in, or one more.
        limited = random.Random(args.seed + 7)
        queue = [
            dataclasses.replace(j, max_blocks=-(-j.request.nodes // 32) + limited.choice((0, 0, 1)))
            if j.request.nodes > 1 and limited.random() < share
            else j
            for j in queue
        ]
    return ClusterSnapshot(nodes, tuple(running)), queue, FairShare(root, usage)


def timed_full(
    snapshot: ClusterSnapshot, queue: list[PendingJob], fs: FairShare
) -> tuple[float, float, dict[str, float]]:
    gc.collect()
    t0 = time.perf_counter()
    c0 = time.process_time()
    result = schedule_pass(snapshot, queue, NOW, fair_share=fs)
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - c0
    started = sum(len(p.gpus) for s in result.starts for p in s.placement)
    return (
        elapsed,
        cpu,
        {
            "starts": len(result.starts),
            "started_gpus": started,
            "waits": len(result.waits),
            "planned": len(result.planned),
            "fragmentation_ratio": round(result.fragmentation.ratio, 4),
        },
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpus", type=int, default=260_000)
    ap.add_argument("--pending", type=int, default=100_000)
    ap.add_argument("--busy", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--incremental", type=int, default=10)
    ap.add_argument("--completions", type=int, default=100)
    ap.add_argument(
        "--max-blocks-share",
        type=float,
        default=0.0,
        help="share of multi-node jobs limited to the fewest network blocks they fit in (+0-1)",
    )
    args = ap.parse_args()

    t0 = time.perf_counter()
    snapshot, queue, fs = build(args)
    setup_s = time.perf_counter() - t0
    busy = sum(len(p.gpus) for r in snapshot.running for p in r.placement)

    full: list[float] = []
    full_cpu: list[float] = []
    info: dict[str, float] = {}
    for _ in range(args.repeat):
        elapsed, cpu, info = timed_full(snapshot, queue, fs)
        full.append(elapsed)
        full_cpu.append(cpu)
        print(f"full pass {elapsed:.3f} s (cpu {cpu:.3f} s) {info}", file=sys.stderr)

    # The same full pass one cycle later: the first pass's starts are now running jobs, so
    # the cluster is full (~259,000 of 260,000 GPUs busy) and the pass starts almost nothing.
    # This is the steady state of the services loop; the pass above is the cold start.
    first = schedule_pass(snapshot, queue, NOW, fair_share=fs)
    started = {s.job_id for s in first.starts}
    by_id = {j.job_id: j for j in queue}
    steady_snapshot = ClusterSnapshot(
        snapshot.nodes,
        snapshot.running
        + tuple(
            RunningJob(
                s.job_id, by_id[s.job_id].project_id, s.placement, NOW, by_id[s.job_id].time_limit_s
            )
            for s in first.starts
        ),
    )
    steady_queue = [j for j in queue if j.job_id not in started]
    steady: list[float] = []
    steady_cpu: list[float] = []
    for _ in range(args.repeat):
        elapsed, cpu, steady_info = timed_full(steady_snapshot, steady_queue, fs)
        steady.append(elapsed)
        steady_cpu.append(cpu)
        print(f"steady full pass {elapsed:.3f} s (cpu {cpu:.3f} s) {steady_info}", file=sys.stderr)

    sched = build_scheduler(snapshot, queue, fair_share=fs)
    sched.run_pass(NOW)
    rng = random.Random(args.seed + 1)
    now = NOW
    inc: list[float] = []
    inc_cpu: list[float] = []
    inc_starts = 0
    for _ in range(args.incremental):
        ids = sorted(sched.running)
        done = rng.sample(ids, min(args.completions, len(ids)))
        now += 30.0
        gc.collect()
        t1 = time.perf_counter()
        c1 = time.process_time()
        for job_id in done:
            sched.finish(job_id)
        result = sched.run_pass(now)
        elapsed = time.perf_counter() - t1
        inc_cpu.append(time.process_time() - c1)
        inc.append(elapsed)
        inc_starts += len(result.starts)
        print(f"incremental pass {elapsed:.4f} s starts={len(result.starts)}", file=sys.stderr)

    print(
        json.dumps(
            {
                "gpus": args.gpus,
                "nodes": len(snapshot.nodes),
                "pending": args.pending,
                "busy_gpus": busy,
                "running_jobs": len(snapshot.running),
                "setup_s": round(setup_s, 3),
                "median_full_pass_s": round(statistics.median(full), 4),
                "min_full_pass_s": round(min(full), 4),
                "median_incremental_pass_s": round(statistics.median(inc), 4),
                "median_full_pass_cpu_s": round(statistics.median(full_cpu), 4),
                "median_incremental_pass_cpu_s": round(statistics.median(inc_cpu), 4),
                "median_steady_full_pass_s": round(statistics.median(steady), 4),
                "median_steady_full_pass_cpu_s": round(statistics.median(steady_cpu), 4),
                "max_incremental_pass_s": round(max(inc), 4),
                "incremental_completions": args.completions,
                "max_blocks_share": args.max_blocks_share,
                "incremental_starts_total": inc_starts,
                **info,
            }
        )
    )


if __name__ == "__main__":
    main()
