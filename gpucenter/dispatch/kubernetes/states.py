"""Reading a gpucenter job's state out of its Job and pods (pure: JSON in, an `Observed` out).

The Job's conditions decide how it ended, the pods when it ran:

- ``Complete`` -> COMPLETED; ``Failed`` with reason ``DeadlineExceeded`` (the time limit,
  ``activeDeadlineSeconds``) -> TIMEOUT; any other ``Failed`` -> FAILED with the exit code
  of the pod that failed. ``FailureTarget``/``SuccessCriteriaMet`` come first while pods still
  terminate; we wait for the final condition, so an end is reported once its pods are gone.
- Suspended (Kueue has not admitted it) or with pods still Pending: waiting, with the why
  (Kueue's message, the scheduler's) for the job's page.
- Running: every pod of the gang Running (or already ended). The job *started* at the
  earliest pod start and *ended* at the latest pod end, which is what the ledger charges
  (x its GPUs): pod run time, never time queued in Kueue.

Times in the API are RFC 3339, whole seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from gpucenter.domain.clock import Instant
from gpucenter.domain.jobs import JobState

__all__ = ["Observed", "Phase", "condition", "observe", "parse_time", "pod_exit_code", "span"]

Json = dict[str, Any]


class Phase(Enum):
    WAITING = "waiting"
    RUNNING = "running"
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class Observed:
    """A job as the cluster shows it now."""

    phase: Phase
    state: JobState | None = None
    """The final state (ENDED only)."""
    reason: str = ""
    detail: str = ""
    started_at: Instant | None = None
    ended_at: Instant | None = None
    exit_code: int | None = None


def parse_time(value: object) -> Instant | None:
    """An API timestamp (``2026-05-01T10:00:00Z``) as seconds since the epoch."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def condition(obj: Json, kind: str) -> Json | None:
    """The status condition `kind` of an object when it is True."""
    for cond in (obj.get("status") or {}).get("conditions") or ():
        if cond.get("type") == kind and cond.get("status") == "True":
            return dict(cond)
    return None


def _terminated(pod: Json) -> list[Json]:
    found = []
    for status in (pod.get("status") or {}).get("containerStatuses") or ():
        done = (status.get("state") or {}).get("terminated")
        if done:
            found.append(dict(done))
    return found


def pod_exit_code(pods: Sequence[Json]) -> int | None:
    """The exit code that explains the run: the first non-zero of any container, else 0
    when some container ended, else None (no pod ever ran)."""
    codes = [int(t.get("exitCode", 0)) for pod in pods for t in _terminated(pod)]
    failed = [c for c in codes if c != 0]
    if failed:
        return failed[0]
    return 0 if codes else None


def _pod_start(pod: Json) -> Instant | None:
    status = pod.get("status") or {}
    starts = [parse_time(status.get("startTime"))]
    for container in status.get("containerStatuses") or ():
        state = container.get("state") or {}
        starts.append(parse_time((state.get("running") or {}).get("startedAt")))
        starts.append(parse_time((state.get("terminated") or {}).get("startedAt")))
    known = [s for s in starts if s is not None]
    return min(known) if known else None


def _pod_end(pod: Json) -> Instant | None:
    ends = [parse_time(t.get("finishedAt")) for t in _terminated(pod)]
    known = [e for e in ends if e is not None]
    return max(known) if known else None


def _ran(pod: Json) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Running", "Succeeded", "Failed")


def span(pods: Sequence[Json]) -> tuple[Instant | None, Instant | None]:
    """When the pods' run began (the earliest start) and ended (the latest end)."""
    ran = [pod for pod in pods if _ran(pod)]
    starts = [s for s in map(_pod_start, ran) if s is not None]
    ends = [e for e in map(_pod_end, ran) if e is not None]
    return (min(starts) if starts else None), (max(ends) if ends else None)


def _pending_why(pods: Sequence[Json], expected: int) -> tuple[str, str]:
    """Why a started (unsuspended) Job's gang is not all running yet."""
    for pod in pods:
        if _ran(pod):
            continue
        scheduled = next(
            (
                c
                for c in (pod.get("status") or {}).get("conditions") or ()
                if c.get("type") == "PodScheduled" and c.get("status") == "False"
            ),
            None,
        )
        if scheduled is not None:
            reason = str(scheduled.get("reason") or "Unschedulable")
            return reason, f"pod {pod['metadata']['name']}: {scheduled.get('message') or reason}"
    running = sum(1 for pod in pods if _ran(pod))
    return "PodsStarting", f"{running} of {expected} pods running"


def observe(job: Json, pods: Sequence[Json], waiting_detail: str = "") -> Observed:
    """The state of one run from its Job and its pods; `waiting_detail` is Kueue's word on a
    suspended Job, where the caller has it."""
    spec = job.get("spec") or {}
    started, ended = span(pods)
    for kind in ("Complete", "Failed"):
        cond = condition(job, kind)
        if cond is None:
            continue
        reason = str(cond.get("reason") or kind)
        at = parse_time(cond.get("lastTransitionTime"))
        if kind == "Complete":
            state = JobState.COMPLETED
            end = ended or parse_time((job.get("status") or {}).get("completionTime")) or at
        elif reason == "DeadlineExceeded":
            # The Job controller stopped its pods at the deadline: that is the end, not
            # when the pods were finally removed.
            state, end = JobState.TIMEOUT, at
        else:
            state, end = JobState.FAILED, ended or at
        detail = f"{reason}: {cond.get('message') or kind}"
        return Observed(Phase.ENDED, state, reason, detail, started, end, pod_exit_code(pods))
    if spec.get("suspend"):
        detail = waiting_detail or "suspended: waiting for Kueue to admit the whole job"
        return Observed(Phase.WAITING, None, "KueueQueued", detail)
    expected = int(spec.get("parallelism") or 1)
    ran = [pod for pod in pods if _ran(pod)]
    if len(ran) >= expected:
        return Observed(Phase.RUNNING, started_at=started)
    reason, detail = _pending_why(pods, expected)
    return Observed(Phase.WAITING, None, reason, detail)
