"""EASY backfill: strict FIFO, one reservation for the head job, backfill behind it.

What Slurm's backfill scheduler does with a reservation depth of one (and what most HPC
centres ran for two decades): jobs start in submission order while they fit; the first that
does not (the head) gets a reservation, the earliest instant enough GPUs are free for it
on specific nodes, computed from running jobs' requested time limits; every later job may
start now if it fits and does not delay that reservation: either it ends (by its time
limit) before the reservation begins, or it uses only GPUs the head will not need then.

The reservation is placed on nodes, not counted in GPUs: a single-node head needs one node
with enough GPUs, a gang needs whole nodes; counting GPUs alone would let backfill take the
very node the head was waiting for. Node choice follows `FreeMap` (best fit, lowest index).
The whole queue is scanned each pass (classic EASY; Slurm bounds it with bf_max_job_test).
"""

from __future__ import annotations

from gpucenter.core import PendingJob, Start
from gpucenter.domain.clock import Instant
from gpucenter.domain.ids import JobId
from gpucenter.domain.jobs import GpuRequest
from gpucenter.sim.policies.base import PassOutcome
from gpucenter.sim.policies.baseline import BaselinePolicy

Reservation = tuple[float, dict[int, int]]  # (start instant, GPUs left over per reserved node)


class EasyPolicy(BaselinePolicy):
    """FIFO + one reservation for the head job + backfill that never delays it."""

    name = "easy"

    def __init__(self) -> None:
        super().__init__()
        self.pending: dict[JobId, PendingJob] = {}  # insertion order = submission order

    def submit(self, job: PendingJob) -> None:
        self.pending[job.job_id] = job

    def run_pass(self, now: Instant) -> PassOutcome:
        assert self.free is not None
        starts: list[Start] = []
        resv: Reservation | None = None
        failed: set[tuple[tuple[str, ...], int, int, bool]] = set()
        for job in list(self.pending.values()):
            if self.free.free_gpus == 0:
                break
            req = job.request
            if resv is None:
                s = self._try_start(job, now)
                if s is None:
                    resv = self._reserve(req, now)
                    if resv is None:
                        break  # cannot fit even on an empty cluster (the engine refuses those)
                    continue
            else:
                late = now + job.time_limit_s > resv[0]
                key = (req.acceptable_types, req.gpus_per_node, req.nodes, late)
                if key in failed:
                    continue
                s = self._backfill(job, now, resv[1]) if late else self._try_start(job, now)
                if s is None:
                    failed.add(key)
                    continue
            starts.append(s)
            del self.pending[job.job_id]
        return PassOutcome(starts)

    def _backfill(self, job: PendingJob, now: Instant, slack: dict[int, int]) -> Start | None:
        """Start `job`, which runs past the reservation, on GPUs the head will not need."""
        assert self.free is not None
        req = job.request
        g = req.gpus_per_node
        for t in req.acceptable_types:
            if req.nodes == 1:
                for n in self.free.candidates(t, g):
                    if slack.get(n, g) >= g:
                        if n in slack:
                            slack[n] -= g
                        return self._start_on(job, [n], now)
            else:
                chosen = [n for n in self.free.whole(t) if slack.get(n, g) >= g][: req.nodes]
                if len(chosen) == req.nodes:
                    for n in chosen:
                        if n in slack:
                            slack[n] -= g
                    return self._start_on(job, chosen, now)
        return None

    def _reserve(self, req: GpuRequest, now: Instant) -> Reservation | None:
        """The head's reservation: the first instant running jobs (by their time limits)
        leave enough GPUs for `req`, the nodes it would take then, and how many GPUs of each
        of those nodes would be left over (what backfill may still use past that instant)."""
        assert self.free is not None
        fm = self.free
        avail = [len(f) for f in fm.free]
        types = req.acceptable_types
        ends = sorted(
            (since + job.time_limit_s, i, part.node, len(part.gpus))
            for i, (placement, job, since) in enumerate(self.running.values())
            for part in placement
        )
        g = req.gpus_per_node
        size, gtype = fm.size, fm.gtype
        whole = {
            t: sum(1 for n, a in enumerate(avail) if gtype[n] == t and a == size[n]) for t in types
        }
        k = 0
        while k < len(ends):
            t_end = ends[k][0]
            hopeful = False
            while k < len(ends) and ends[k][0] == t_end:
                n = fm.index[ends[k][2]]
                before = avail[n]
                avail[n] = after = before + ends[k][3]
                t = gtype[n]
                if t in whole:
                    if req.nodes == 1:
                        hopeful = hopeful or after >= g
                    elif after == size[n] and before < size[n]:
                        whole[t] += 1
                        hopeful = hopeful or whole[t] >= req.nodes
                k += 1
            if hopeful:
                got = self._fits(req, types, avail)
                if got is not None:
                    return t_end, {n: avail[n] - g for n in got}
        return None

    def _fits(self, req: GpuRequest, types: tuple[str, ...], avail: list[int]) -> list[int] | None:
        """Nodes `req` would take given `avail` free GPUs per node (best fit, lowest index)."""
        assert self.free is not None
        g = req.gpus_per_node
        size, gtype = self.free.size, self.free.gtype
        for t in types:
            if req.nodes == 1:
                best = -1
                for n, a in enumerate(avail):
                    if gtype[n] == t and a >= g and (best < 0 or a < avail[best]):
                        best = n
                if best >= 0:
                    return [best]
            else:
                whole = [n for n, a in enumerate(avail) if gtype[n] == t and a == size[n]]
                if len(whole) >= req.nodes:
                    return whole[: req.nodes]
        return None
