"""The discrete-event engine: a trace, a cluster, a policy, a simulated clock and dispatcher.

The loop is the server's scheduling loop with time made explicit. At each instant something
happens (jobs arrive, the dispatcher reports jobs ended, a policy asked to be woken) the
engine moves the `ManualClock` there, feeds every change of that instant to the policy as a
delta (`submit`, `finish`), runs ONE pass, and hands the starts to the dispatcher. Events at
the same timestamp are batched; no pass runs at an instant where nothing changed (a pass
that preempted is followed by one more at the same instant, so the freed GPUs are used).
The core never learns it is simulated: it only sees snapshots, deltas and `now`.

Work is credited per run: a preempted job's remaining run time drops by the length of the
run just stopped, never by the time since its first start.
"""

from __future__ import annotations

import gc
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from gpucenter.core import NodeGpus, NodeSnapshot, PendingJob
from gpucenter.dispatch.base import JobOwner, LaunchRequest
from gpucenter.domain.clock import ManualClock
from gpucenter.domain.ids import JobId, ProjectId
from gpucenter.domain.jobs import GpuRequest
from gpucenter.sim.dispatcher import SimDispatcher
from gpucenter.sim.fragmentation import FragmentationMeter
from gpucenter.sim.policies.base import SimPolicy, Workload
from gpucenter.sim.traces.common import TraceJob

TIMELINE_BINS = 400
FREEZE_EVERY = 20_000  # passes between two `gc.freeze` calls (see `Engine.run`)


@dataclass(slots=True)
class SimResult:
    """Everything the metrics need: per-job times, work done, exact and binned totals.

    `run_gpu_s[k]` is the GPU-seconds job k actually ran, over all its runs; `gpus[k]` the
    GPUs it held. `busy_gpu_s_total` and `frag_gpu_s_total` are exact integrals over the
    replay (GPUs busy, GPUs fragmented by FGD's measure); the `*_gpu_s` lists are the same
    per timeline bin, for plots. `refused` names the jobs no cluster state could ever run.
    """

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
    refused: list[tuple[int, str]] = field(default_factory=list)
    run_gpu_s: list[float] = field(default_factory=list)
    gpus: list[int] = field(default_factory=list)
    busy_gpu_s_total: float = 0.0
    frag_gpu_s: list[float] = field(default_factory=list)
    frag_gpu_s_total: float = 0.0
    busy_gpu_s_arriving: float = 0.0  # busy GPU-seconds up to the last submission
    # Busy GPU-seconds per applicant type (programme) and timeline bin: who got what when.
    kind_gpu_s: dict[str, list[float]] = field(default_factory=dict)

    @property
    def events_per_s(self) -> float:
        return self.events / self.wall_s if self.wall_s > 0 else 0.0


class RefusedJobsWarning(UserWarning):
    """Jobs of the trace that can never run on the cluster (too wide, unknown GPU type)."""


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


def refusals(trace: Sequence[TraceJob], nodes: Sequence[NodeSnapshot]) -> list[tuple[int, str]]:
    """(index, reason) of every job that no state of the cluster could run: wider than all
    GPUs of its type, or of a GPU type the cluster lacks. A replay refuses them up front and
    says so (`RefusedJobsWarning`, the report's header): a silently dropped job would flatter
    every policy's figures."""
    gpn, count, default = _types(nodes)
    out: list[tuple[int, str]] = []
    for k, job in enumerate(trace):
        req = to_request(job, gpn, default)
        if req is None:
            out.append((k, f"job {job.job_id}: GPU type {job.gpu_type!r} is not in the cluster"))
        elif req.total_gpus > count.get(req.gpu_type, 0):
            out.append(
                (
                    k,
                    f"job {job.job_id}: needs {job.gpus} GPUs ({req.nodes} x {req.gpus_per_node}"
                    f" {req.gpu_type}), the cluster has {count.get(req.gpu_type, 0)}",
                )
            )
    return out


def _types(nodes: Sequence[NodeSnapshot]) -> tuple[dict[str, int], dict[str, int], str]:
    """GPUs per node (largest) and in all, per GPU type, and the most plentiful type."""
    gpn: dict[str, int] = {}
    count: dict[str, int] = {}
    for n in nodes:
        gpn[n.gpu_type] = max(gpn.get(n.gpu_type, 0), n.gpu_count)
        count[n.gpu_type] = count.get(n.gpu_type, 0) + n.gpu_count
    default = max(sorted(count), key=lambda t: count[t]) if count else ""
    return gpn, count, default


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
        self.gpn, self.count, self.default_type = _types(self.nodes)
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
        refused = refusals(self.trace, self.nodes)
        if refused:
            names = "; ".join(r for _, r in refused[:20])
            more = f" (and {len(refused) - 20} more)" if len(refused) > 20 else ""
            warnings.warn(
                f"{len(refused)} job(s) can never run on this cluster and are refused: "
                f"{names}{more}",
                RefusedJobsWarning,
                stacklevel=3,
            )
        gc.collect()
        gc.freeze()
        try:
            return _Replay(self, refused).run()
        finally:
            gc.unfreeze()


class _Replay:
    """The event loop of one replay and the state it keeps (see the module docstring)."""

    def __init__(self, eng: Engine, refused: list[tuple[int, str]]) -> None:
        self.eng = eng
        self.refused = refused
        n = len(eng.trace)
        self.start = [math.nan] * n
        self.end = [math.nan] * n
        self.run_start = [math.nan] * n  # the current run's start (a job may run several times)
        self.gpus_of = [0] * n
        self.run_gpu_s = [0.0] * n
        self.placement: dict[int, tuple[NodeGpus, ...]] = {}
        skip = {k for k, _ in refused}
        self.requests = [
            None if k in skip else to_request(j, eng.gpn, eng.default_type)
            for k, j in enumerate(eng.trace)
        ]
        self.meter = FragmentationMeter(eng.nodes, (r for r in self.requests if r is not None))
        horizon = (eng.trace[-1].submit_s if n else 0.0) * 1.25 + 86400.0
        self.bin_s = max(60.0, horizon / TIMELINE_BINS)
        self.busy_bins: list[float] = []
        self.queue_bins: list[float] = []
        self.frag_bins: list[float] = []
        self.busy = 0
        self.queued = 0
        self.last_t = 0.0
        self.busy_total = 0.0
        self.frag_total = 0.0
        self.last_submit = eng.trace[-1].submit_s if n else 0.0
        self.busy_arriving = 0.0
        self.kind = [j.applicant_type.value for j in eng.trace]
        self.busy_kind: dict[str, int] = dict.fromkeys(sorted(set(self.kind)), 0)
        self.kind_bins: dict[str, list[float]] = {k: [] for k in self.busy_kind}

    def account(self, t: float) -> None:
        """Integrate busy GPUs, queued jobs and fragmentation from the last instant to `t`:
        exactly for the totals, and split over the timeline's bins for the plots."""
        a = self.last_t
        if t <= a:
            return
        busy, queued, frag = self.busy, self.queued, self.meter.value
        self.busy_total += busy * (t - a)
        self.frag_total += frag * (t - a)
        if a < self.last_submit:
            self.busy_arriving += busy * (min(t, self.last_submit) - a)
        bin_s = self.bin_s
        b0, b1 = int(a // bin_s), int(t // bin_s)
        while len(self.busy_bins) <= b1:
            self.busy_bins.append(0.0)
            self.queue_bins.append(0.0)
            self.frag_bins.append(0.0)
            for bins in self.kind_bins.values():
                bins.append(0.0)
        for b in range(b0, b1 + 1):
            lo = max(a, b * bin_s)
            hi = min(t, (b + 1) * bin_s)
            if hi > lo:
                self.busy_bins[b] += busy * (hi - lo)
                self.queue_bins[b] += queued * (hi - lo)
                self.frag_bins[b] += frag * (hi - lo)
                for kind, g in self.busy_kind.items():
                    if g:
                        self.kind_bins[kind][b] += g * (hi - lo)
        self.last_t = t

    def _stopped(self, k: int, t: float) -> None:
        """Job k's current run ended at `t` (completion, timeout or preemption)."""
        self.run_gpu_s[k] += self.gpus_of[k] * (t - self.run_start[k])
        self.busy -= self.gpus_of[k]
        self.busy_kind[self.kind[k]] -= self.gpus_of[k]
        for part in self.placement.pop(k):
            self.meter.change(part.node, len(part.gpus))

    def _started(self, k: int, t: float, placement: tuple[NodeGpus, ...]) -> None:
        if math.isnan(self.start[k]):
            self.start[k] = t
        self.run_start[k] = t
        self.placement[k] = placement
        g = 0
        for part in placement:
            g += len(part.gpus)
            self.meter.change(part.node, -len(part.gpus))
        self.gpus_of[k] = g
        self.busy += g
        self.busy_kind[self.kind[k]] += g
        self.queued -= 1

    def run(self) -> SimResult:
        eng = self.eng
        t0 = time.perf_counter()
        trace = eng.trace
        n = len(trace)
        clock = ManualClock(0.0)
        remaining: dict[JobId, float] = {}
        disp = SimDispatcher(clock, remaining)
        policy = eng.policy
        policy.prepare(eng.nodes, eng.workload)
        rejected: list[int] = []
        events = passes = preemptions = 0
        pending: dict[JobId, PendingJob] = {}
        i = done = 0
        report_every = max(1, n // 200)
        while True:
            t_arr = trace[i].submit_s if i < n else math.inf
            t_end = disp.next_event()
            t_wake = policy.next_wakeup(clock.now())
            t = min(t_arr, t_end if t_end is not None else math.inf)
            if t_wake is not None and t_wake > clock.now():
                t = min(t, t_wake)
            if t == math.inf:
                break
            self.account(t)
            clock.set(t)
            changed = t_wake is not None and t >= t_wake
            for ch in disp.poll():
                k = int(ch.job_id)
                self.end[k] = ch.at
                self._stopped(k, ch.at)
                policy.finish(ch.job_id, ch.at)
                events += 1
                done += 1
                changed = True
            while i < n and trace[i].submit_s <= t:
                job = trace[i]
                req = self.requests[i]
                if req is None:
                    rejected.append(i)
                    done += 1
                else:
                    jid = JobId(i)
                    limit = job.time_limit_s if job.time_limit_s is not None else job.duration_s
                    pj = PendingJob(
                        jid, eng.project[i], req, max(1, math.ceil(limit)), job.submit_s
                    )
                    pending[jid] = pj
                    remaining[jid] = job.duration_s
                    policy.submit(pj)
                    self.queued += 1
                    changed = True
                events += 1
                i += 1
            while changed:
                outcome = policy.run_pass(t)
                passes += 1
                if passes % FREEZE_EVERY == 0:
                    gc.freeze()
                for jid in outcome.preempt:
                    k = int(jid)
                    disp.cancel(jid)
                    policy.finish(jid, t)
                    remaining[jid] -= t - self.run_start[k]  # this run's work only
                    self._stopped(k, t)
                    pj = pending[jid]
                    limit = max(1, math.ceil(remaining[jid]))
                    pending[jid] = pj = PendingJob(
                        jid, pj.project_id, pj.request, limit, pj.submitted_at
                    )
                    policy.submit(pj)
                    self.queued += 1
                    preemptions += 1
                for s in outcome.starts:
                    pj = pending[s.job_id]
                    tenant = eng.trace[int(s.job_id)].tenant  # a trace names no users
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
                    self._started(int(s.job_id), t, s.placement)
                # GPUs freed by preemption go to waiting jobs at once, in a second pass at
                # the same instant (whose victims can only be jobs started before it).
                changed = bool(outcome.preempt)
                if eng.progress is not None and done % report_every < 1 + len(outcome.starts):
                    eng.progress(done, n)
        if eng.progress is not None:
            eng.progress(n, n)
        return SimResult(
            policy=policy.name,
            jobs=trace,
            start=self.start,
            end=self.end,
            preemptions=preemptions,
            total_gpus=eng.total_gpus,
            bin_s=self.bin_s,
            busy_gpu_s=self.busy_bins,
            queued_job_s=self.queue_bins,
            events=events,
            passes=passes,
            wall_s=time.perf_counter() - t0,
            rejected=rejected,
            refused=self.refused,
            run_gpu_s=self.run_gpu_s,
            gpus=self.gpus_of,
            busy_gpu_s_total=self.busy_total,
            frag_gpu_s=self.frag_bins,
            frag_gpu_s_total=self.frag_total,
            busy_gpu_s_arriving=self.busy_arriving,
            kind_gpu_s=self.kind_bins,
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
