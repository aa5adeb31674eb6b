"""The discrete-event engine: a trace, a cluster, a policy, a simulated clock and dispatcher.

The loop is the server's scheduling loop with time made explicit. At each instant something
happens (jobs arrive, the dispatcher reports jobs ended, a policy asked to be woken) the
engine moves the `ManualClock` there, feeds every change of that instant to the policy as a
delta (`submit`, `finish`), runs ONE pass, and hands the starts to the dispatcher. Events at
the same timestamp are batched; no pass runs at an instant where nothing changed. The core
never learns it is simulated: it only sees snapshots, deltas and `now`.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from gpucenter.core import NodeSnapshot, PendingJob
from gpucenter.dispatch.base import JobOwner, LaunchRequest
from gpucenter.domain.clock import ManualClock
from gpucenter.domain.ids import JobId, ProjectId
from gpucenter.domain.jobs import GpuRequest
from gpucenter.sim.dispatcher import SimDispatcher
from gpucenter.sim.policies.base import SimPolicy, Workload
from gpucenter.sim.traces.common import TraceJob

TIMELINE_BINS = 400
FREEZE_EVERY = 20_000  # passes between two `gc.freeze` calls (see `Engine.run`)


@dataclass(slots=True)
class SimResult:
    """Everything the metrics need: per-job times and binned utilisation / queue length."""

    policy: str
    jobs: Sequence[TraceJob]
    start: list[float]
    end: list[float]
    preemptions: int
    total_gpus: int
    bin_s: float
    busy_gpu_s: list[float]
    queued_job_s: list[float]
    events: int
    passes: int
    wall_s: float
    rejected: list[int] = field(default_factory=list)

    @property
    def events_per_s(self) -> float:
        return self.events / self.wall_s if self.wall_s > 0 else 0.0


def to_request(job: TraceJob, gpn: Mapping[str, int], default_type: str) -> GpuRequest | None:
    """A trace job as a core request: on one node if it fits, else whole nodes."""
    gtype = job.gpu_type or default_type
    per = gpn.get(gtype)
    if per is None:
        return None
    others = tuple(t for t in sorted(gpn) if t != gtype) if job.gpu_type is None else ()
    if job.gpus <= per:
        return GpuRequest(gtype, job.gpus, 1, others)
    return GpuRequest(gtype, per, math.ceil(job.gpus / per), others)


class Engine:
    """One replay. `simulate()` is the convenience wrapper."""

    def __init__(
        self,
        trace: Sequence[TraceJob],
        nodes: Sequence[NodeSnapshot],
        policy: SimPolicy,
        *,
        shares: Mapping[str, float] | None = None,
        reserve: Mapping[str, int] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.trace = trace
        self.nodes = tuple(nodes)
        self.policy = policy
        self.progress = progress
        self.total_gpus = sum(n.gpu_count for n in nodes)
        gpn: dict[str, int] = {}
        count: dict[str, int] = {}
        for n in nodes:
            gpn[n.gpu_type] = max(gpn.get(n.gpu_type, 0), n.gpu_count)
            count[n.gpu_type] = count.get(n.gpu_type, 0) + n.gpu_count
        self.gpn = gpn
        self.default_type = max(sorted(count), key=lambda t: count[t])
        self.count = count
        tenants: dict[str, ProjectId] = {}
        applicant: dict[ProjectId, str] = {}
        self.project: list[ProjectId] = []
        for j in trace:
            p = tenants.get(j.tenant)
            if p is None:
                p = tenants[j.tenant] = ProjectId(len(tenants) + 1)
                applicant[p] = j.applicant_type.value
            self.project.append(p)
        self.workload = Workload(applicant, dict(shares or {}), dict(reserve or {}))

    def run(self) -> SimResult:
        """Replay the trace. The cyclic garbage collector is kept off the trace and the
        replay's long-lived state (`gc.freeze` at the start and every `FREEZE_EVERY` passes,
        undone at the end): a 1,000,000-job replay holds millions of objects, and each full
        collection, triggered as passes allocate, would walk all of them (13% of a replay's
        time). Memory is unaffected (the replay's objects are acyclic and freed by reference
        counting) and so are the results."""
        gc.collect()
        gc.freeze()
        try:
            return self._run()
        finally:
            gc.unfreeze()

    def _run(self) -> SimResult:
        t0 = time.perf_counter()
        trace = self.trace
        n = len(trace)
        clock = ManualClock(0.0)
        remaining: dict[JobId, float] = {}
        disp = SimDispatcher(clock, remaining)
        policy = self.policy
        policy.prepare(self.nodes, self.workload)
        start = [math.nan] * n
        end = [math.nan] * n
        gpus_of = [0] * n
        rejected: list[int] = []
        horizon = (trace[-1].submit_s if n else 0.0) * 1.25 + 86400.0
        bin_s = max(60.0, horizon / TIMELINE_BINS)
        busy_bins: list[float] = []
        queue_bins: list[float] = []
        busy = 0
        queued = 0
        last_t = 0.0
        events = passes = preemptions = 0
        requests: dict[JobId, PendingJob] = {}
        i = 0
        done = 0
        report_every = max(1, n // 200)

        def account(t: float) -> None:
            nonlocal last_t
            a = last_t
            b0, b1 = int(a // bin_s), int(t // bin_s)
            while len(busy_bins) <= b1:
                busy_bins.append(0.0)
                queue_bins.append(0.0)
            for b in range(b0, b1 + 1):
                lo = max(a, b * bin_s)
                hi = min(t, (b + 1) * bin_s)
                if hi > lo:
                    busy_bins[b] += busy * (hi - lo)
                    queue_bins[b] += queued * (hi - lo)
            last_t = t

        while True:
            t_arr = trace[i].submit_s if i < n else math.inf
            t_end = disp.next_event()
            t_wake = policy.next_wakeup(clock.now())
            t = min(t_arr, t_end if t_end is not None else math.inf)
            if t_wake is not None and t_wake > clock.now():
                t = min(t, t_wake)
            if t == math.inf:
                break
            account(t)
            clock.set(t)
            changed = t_wake is not None and t >= t_wake
            for ch in disp.poll():
                k = int(ch.job_id)
                end[k] = ch.at
                busy -= gpus_of[k]
                policy.finish(ch.job_id, ch.at)
                events += 1
                done += 1
                changed = True
            while i < n and trace[i].submit_s <= t:
                job = trace[i]
                req = to_request(job, self.gpn, self.default_type)
                if req is None or req.total_gpus > self.count.get(req.gpu_type, 0):
                    rejected.append(i)
                    done += 1
                else:
                    jid = JobId(i)
                    limit = job.time_limit_s if job.time_limit_s is not None else job.duration_s
                    pj = PendingJob(
                        jid, self.project[i], req, max(1, math.ceil(limit)), job.submit_s
                    )
                    requests[jid] = pj
                    remaining[jid] = job.duration_s
                    policy.submit(pj)
                    queued += 1
                    changed = True
                events += 1
                i += 1
            if not changed:
                continue
            outcome = policy.run_pass(t)
            passes += 1
            if passes % FREEZE_EVERY == 0:
                gc.freeze()
            for jid in outcome.preempt:
                k = int(jid)
                disp.cancel(jid)
                policy.finish(jid, t)
                remaining[jid] = max(1.0, remaining[jid] - (t - start[k]))
                busy -= gpus_of[k]
                pj = requests[jid]
                requeued = PendingJob(
                    jid,
                    pj.project_id,
                    pj.request,
                    max(1, math.ceil(remaining[jid])),
                    pj.submitted_at,
                )
                requests[jid] = requeued
                policy.submit(requeued)
                queued += 1
                preemptions += 1
            for s in outcome.starts:
                k = int(s.job_id)
                pj = requests[s.job_id]
                tenant = trace[k].tenant  # a trace names no users: its tenant runs the job
                disp.submit(
                    LaunchRequest(
                        job_id=s.job_id,
                        command="sim",
                        gpu=pj.request,
                        placement=s.placement,
                        time_limit_s=pj.time_limit_s,
                        owner=JobOwner(tenant),
                        project_id=pj.project_id,
                        project=tenant,
                        qos=pj.qos,
                    )
                )
                if math.isnan(start[k]):
                    start[k] = t
                g = sum(len(p.gpus) for p in s.placement)
                gpus_of[k] = g
                busy += g
                queued -= 1
            if self.progress is not None and done % report_every < 1 + len(outcome.starts):
                self.progress(done, n)
        if self.progress is not None:
            self.progress(n, n)
        return SimResult(
            policy=policy.name,
            jobs=trace,
            start=start,
            end=end,
            preemptions=preemptions,
            total_gpus=self.total_gpus,
            bin_s=bin_s,
            busy_gpu_s=busy_bins,
            queued_job_s=queue_bins,
            events=events,
            passes=passes,
            wall_s=time.perf_counter() - t0,
            rejected=rejected,
        )


def simulate(
    trace: Sequence[TraceJob],
    nodes: Sequence[NodeSnapshot],
    policy: SimPolicy,
    *,
    shares: Mapping[str, float] | None = None,
    reserve: Mapping[str, int] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SimResult:
    """Replay `trace` on `nodes` under `policy`; deterministic for a given input."""
    return Engine(trace, nodes, policy, shares=shares, reserve=reserve, progress=progress).run()
