"""The simulated dispatcher: the Dispatcher protocol against a simulated clock.

It is what the local, Slurm and Kubernetes dispatchers are to the real control plane: it
accepts `LaunchRequest`s for the placements the core chose and later reports the jobs'
terminal states through `poll`. Instead of running anything it knows each job's true run time
(from the trace) and reports completion when the `ManualClock` reaches it, or TIMEOUT when the
time limit comes first. The engine therefore drives scheduling exactly as the server loop does
(submit after a pass, poll for state changes); nothing in the core knows it is simulated.
It implements the whole site contract: a simulated site enforces time limits and nothing
else (no images, nothing to adopt after a restart, no measured utilisation).
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence

from gpucenter.dispatch.base import (
    DispatchError,
    Launched,
    LaunchRequest,
    SiteCapabilities,
    SiteKind,
    StateChange,
)
from gpucenter.domain.clock import Instant, ManualClock
from gpucenter.domain.ids import JobId
from gpucenter.domain.jobs import JobState

_CAPABILITIES = SiteCapabilities(SiteKind.SIMULATED, enforces_time_limit=True)


class SimDispatcher:
    """Completes each launched job after its trace run time (or its time limit)."""

    def __init__(self, clock: ManualClock, run_times: Mapping[JobId, float]) -> None:
        self.clock = clock
        self.run_times = run_times
        self._heap: list[tuple[Instant, int, JobState]] = []
        self._live: dict[JobId, Instant] = {}

    # -- the Dispatcher protocol ---------------------------------------------------------
    @property
    def capabilities(self) -> SiteCapabilities:
        return _CAPABILITIES

    @property
    def unavailable(self) -> str:
        """Always empty: a simulated site is never down."""
        return ""

    def submit(self, request: LaunchRequest) -> Launched:
        jid = request.job_id
        if jid in self._live:
            raise DispatchError(f"job {jid} is already running")
        if request.image is not None:
            raise DispatchError(f"job {jid}: a simulated site runs no container images")
        now = self.clock.now()
        run = self.run_times.get(jid)
        if run is None:
            raise DispatchError(f"job {jid} has no run time in the trace")
        state = JobState.COMPLETED
        if request.time_limit_s and run > request.time_limit_s:
            run, state = float(request.time_limit_s), JobState.TIMEOUT
        end = now + run
        self._live[jid] = end
        heapq.heappush(self._heap, (end, int(jid), state))
        return Launched(jid, f"sim-{jid}", "", "", now)

    def cancel(self, job_id: JobId) -> None:
        """Stop a running job now (preemption); it is reported by nobody afterwards."""
        self._live.pop(job_id, None)

    def poll(self) -> Sequence[StateChange]:
        now = self.clock.now()
        out: list[StateChange] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            end, jid_i, state = heapq.heappop(heap)
            jid = JobId(jid_i)
            if self._live.get(jid) != end:
                continue  # cancelled (and possibly relaunched with another end)
            del self._live[jid]
            out.append(StateChange(jid, state, end, 0 if state is JobState.COMPLETED else None))
        return out

    def running_job_ids(self) -> frozenset[JobId]:
        return frozenset(self._live)

    def adopt(
        self,
        job_id: JobId,
        external_id: str,
        started_at: Instant,
        time_limit_s: int,
        stderr_path: str | None,
    ) -> bool:
        """Nothing outlives a simulation: there is never a job to adopt."""
        del job_id, external_id, started_at, time_limit_s, stderr_path
        return False

    def detach(self) -> None:
        """Forget every job; none of them will be reported."""
        self.shutdown()

    def shutdown(self) -> None:
        self._heap.clear()
        self._live.clear()

    # -- for the engine ------------------------------------------------------------------
    def next_event(self) -> Instant | None:
        """When the next job ends, or None if nothing runs."""
        heap = self._heap
        while heap and self._live.get(JobId(heap[0][1])) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    @property
    def running(self) -> int:
        return len(self._live)
