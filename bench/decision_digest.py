"""Digests of scheduling decisions, to show that a change left them exactly as they were.

    .venv/bin/python bench/decision_digest.py            # prints one JSON object
    .venv/bin/python bench/decision_digest.py --quick    # smaller workloads (about 20 s)

Run it on the commit before a change and on the change; equal digests mean equal decisions.
Two families:

- `core`: the `bench/core_pass.py` workload (seeded) through `Scheduler.run_pass`: a first pass
  and incremental passes with completions, fair-share changes and clock steps. Hashed: every
  start (job, placement), plan (job, start time, nodes), preemption, wait (job, reason kind,
  text), the opportunistic set, the fragmentation figure and the priority breakdowns, in order.
- `sim`: simulator replays through every policy of `gpucenter.sim.policies` on the traces and
  cluster specs committed to the repository and on a seeded synthetic national workload.
  Hashed: every job's start and end time (rounded to a microsecond), preemptions, rejections.

A digest is of decisions, not of timings: it is the same on any machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from core_pass import NOW, build  # noqa: E402

from gpucenter.core import FairShare, build_scheduler  # noqa: E402
from gpucenter.sim.cluster import ClusterSpec, load_cluster  # noqa: E402
from gpucenter.sim.traces.common import TraceJob  # noqa: E402


def _hash(lines: Iterable[str]) -> str:
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


def _pass_lines(result: object) -> Iterable[str]:
    r: object = result
    for s in getattr(r, "starts", ()):
        yield f"S {s.job_id} {[(p.node, tuple(p.gpus)) for p in s.placement]}"
    for p in getattr(r, "planned", ()):
        yield f"P {p!r}"
    for p in getattr(r, "preemptions", ()):
        yield f"X {p!r}"
    waits = getattr(r, "waits", {})
    items = waits.items() if isinstance(waits, dict) else enumerate(waits)
    for k, w in items:
        yield f"W {k} {w!r}"
    yield f"O {sorted(getattr(r, 'opportunistic', ()) or ())}"
    frag = getattr(r, "fragmentation", None)
    if frag is not None:
        yield f"F {frag!r}"
    prios = getattr(r, "priorities", {})
    pitems = prios.items() if isinstance(prios, dict) else enumerate(prios)
    for n, (k, v) in enumerate(pitems):
        if n >= 2000:
            break
        yield f"R {k} {v!r}"


def core_digest(gpus: int, pending: int, busy: int, passes: int, seed: int) -> str:
    args = SimpleNamespace(gpus=gpus, pending=pending, busy=busy, seed=seed, max_blocks_share=0.1)
    snapshot, queue, fs = build(args)  # type: ignore[arg-type]
    sched = build_scheduler(snapshot, queue, fair_share=fs)
    lines: list[str] = list(_pass_lines(sched.run_pass(NOW)))
    rng = random.Random(seed + 1)
    now = NOW
    usage = dict(fs.usage)
    for i in range(passes):
        ids = sorted(sched.running)
        for job_id in rng.sample(ids, min(200, len(ids))):
            sched.finish(job_id)
        if i % 3 == 2:
            for k in list(usage)[: 50 + i]:
                usage[k] = usage[k] * 0.9 + rng.uniform(0, 1e7)
            sched.set_fair_share(FairShare(fs.root, dict(usage)))
        now += rng.uniform(10, 200)
        lines.extend(_pass_lines(sched.run_pass(now)))
    return _hash(lines)


def sim_digests(quick: bool) -> dict[str, str]:
    from gpucenter.sim.engine import simulate
    from gpucenter.sim.policies import POLICY_NAMES, make_policy
    from gpucenter.sim.traces import load_trace, synthetic_trace

    # Clusters small enough, and arrivals compressed enough (offered work 1.2x capacity), that
    # jobs wait: on the traces' own clusters and pace nothing ever does, and a digest of no
    # decisions shows nothing.
    cases = [
        ("philly_slice", "tests/data/philly_slice.csv", "philly", 4, 0),
        ("tiresias_60", "tests/data/tiresias_60_job.csv", "tiresias", 4, 0),
        ("synthetic_512", None, None, 64, 800 if quick else 2500),
        ("national", None, None, 0, 1000 if quick else 3000),
    ]
    out: dict[str, str] = {}
    for name, trace, fmt, nodes, synthetic in cases:
        if nodes:
            spec = _small_cluster(nodes)
        else:
            spec = load_cluster(ROOT / "examples" / "clusters" / "national-13k.yaml")
        if trace is None:
            jobs = synthetic_trace(synthetic, spec.total_gpus, seed=1, load=1.3)
        else:
            jobs = load_trace(ROOT / trace, fmt or "csv")
        jobs = _compressed(jobs, spec.total_gpus, 1.2)
        for policy in POLICY_NAMES:
            res = simulate(jobs, spec.nodes(), make_policy(policy), shares=spec.shares)
            lines = [
                f"{i} {s:.6f} {e:.6f}"
                for i, (s, e) in enumerate(zip(res.start, res.end, strict=True))
            ]
            lines.append(f"preemptions {res.preemptions} rejected {sorted(res.rejected)}")
            out[f"{name}/{policy}"] = _hash(lines)
    return out


def _small_cluster(nodes: int) -> ClusterSpec:
    """`nodes` nodes of 8 GPUs in racks of 4."""
    racks = -(-nodes // 4)
    text = (
        f"name: digest-{nodes}\nsites:\n  - name: s\n    blocks:\n"
        f"      - {{name: rack, count: {racks}, nodes: {min(nodes, 4)}, gpus_per_node: 8,"
        " gpu_type: gpu}\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cluster.yaml"
        path.write_text(text)
        return load_cluster(path)


def _compressed(jobs: Sequence[TraceJob], gpus: int, load: float) -> list[TraceJob]:
    """The same jobs arriving faster, so that they offer `load` x the cluster's capacity."""
    first = min(j.submit_s for j in jobs)
    span = max(j.submit_s for j in jobs) - first or 1.0
    work = sum(j.gpu_seconds for j in jobs)
    factor = min(1.0, work / (load * gpus * span))
    return [replace(j, submit_s=first + (j.submit_s - first) * factor) for j in jobs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller workloads")
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args()
    figures: dict[str, object] = {}
    sizes = (
        [(13_000, 30_000, 10_000, 12)]
        if args.quick
        else [
            (13_000, 30_000, 10_000, 12),
            (65_000, 50_000, 50_000, 4),
        ]
    )
    for gpus, pending, busy, passes in sizes:
        figures[f"core/{gpus}"] = core_digest(gpus, pending, busy, passes, args.seed)
        print(f"core {gpus}: {figures[f'core/{gpus}']}", file=sys.stderr)
    figures.update(sim_digests(args.quick))
    figures["all"] = _hash(f"{k}={v}" for k, v in sorted(figures.items()))
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
