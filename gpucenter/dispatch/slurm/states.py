"""Slurm's job states and pending reasons, mapped to gpucenter's, with words for people.

Every state Slurm 22.05 can print (squeue's long names, sacct's ``CANCELLED by <uid>``) maps
to one of three things:

- `Phase.WAITING`: Slurm holds the job in its queue (PENDING, REQUEUED, held...). gpucenter
  keeps the job as dispatched and shows Slurm's reason (``AssocGrpGRESMinutes``...).
- `Phase.RUNNING`: it holds nodes (RUNNING, COMPLETING, SUSPENDED, CONFIGURING...).
- `Phase.ENDED`: terminal, with gpucenter's terminal `JobState`. Endings gpucenter has no
  state for (NODE_FAIL, PREEMPTED, OUT_OF_MEMORY, BOOT_FAIL, DEADLINE...) become FAILED with
  the Slurm state in the detail, so that the user learns what happened. (When Slurm requeues
  a job itself after a node failure, squeue shows it PENDING/REQUEUED again: WAITING.)

A state this table does not know is treated as RUNNING (never as ended: ending a job that
still holds GPUs would hand them out twice) and logged by the caller.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from gpucenter.domain.jobs import JobState

__all__ = ["Phase", "SlurmState", "describe_reason", "map_state"]


class Phase(Enum):
    WAITING = "waiting"
    RUNNING = "running"
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class SlurmState:
    phase: Phase
    state: JobState | None  # our terminal state when phase is ENDED
    slurm: str  # Slurm's own name, normalised (``CANCELLED``, not ``CANCELLED by 0``)
    detail: str


_WAITING = {
    "PENDING": "pending in Slurm's queue",
    "REQUEUED": "requeued by Slurm",
    "REQUEUE_FED": "requeued by Slurm (federation)",
    "REQUEUE_HOLD": "requeued by Slurm and held",
    "RESV_DEL_HOLD": "held: its reservation was deleted",
    "SPECIAL_EXIT": "held by Slurm after a special exit",
}
_RUNNING = {
    "RUNNING": "running",
    "CONFIGURING": "its nodes are being configured",
    "COMPLETING": "completing (Slurm is cleaning up its nodes)",
    "SUSPENDED": "suspended by Slurm",
    "STOPPED": "stopped (SIGSTOP) but holding its nodes",
    "SIGNALING": "being signalled",
    "STAGE_OUT": "staging out data",
    "RESIZING": "being resized",
    "POWER_UP_NODE": "waiting for its nodes to power up",
    "UPDATE_DB": "being recorded in the accounting database",
}
_ENDED: dict[str, tuple[JobState, str]] = {
    "COMPLETED": (JobState.COMPLETED, "completed"),
    "FAILED": (JobState.FAILED, "failed"),
    "CANCELLED": (JobState.CANCELLED, "cancelled"),
    "TIMEOUT": (JobState.TIMEOUT, "time limit exceeded (Slurm TIMEOUT)"),
    "DEADLINE": (JobState.FAILED, "ended by Slurm: its deadline passed (DEADLINE)"),
    "NODE_FAIL": (JobState.FAILED, "a node failed under the job (Slurm NODE_FAIL)"),
    "BOOT_FAIL": (JobState.FAILED, "its node failed to boot (Slurm BOOT_FAIL)"),
    "PREEMPTED": (JobState.FAILED, "preempted by Slurm and not requeued (PREEMPTED)"),
    "OUT_OF_MEMORY": (JobState.FAILED, "ran out of memory (Slurm OUT_OF_MEMORY)"),
    "LAUNCH_FAILED": (JobState.FAILED, "Slurm could not launch it (LAUNCH_FAILED)"),
    "RECONFIG_FAIL": (JobState.FAILED, "node reconfiguration failed (RECONFIG_FAIL)"),
    "REVOKED": (JobState.CANCELLED, "revoked by the federation (REVOKED)"),
}


def _normalise(raw: str) -> str:
    """``CANCELLED by 0`` -> ``CANCELLED``; ``COMPLETED+`` (sacct's flag) -> ``COMPLETED``."""
    name = raw.strip().split(" ", 1)[0].rstrip("+").upper()
    return {"CA": "CANCELLED", "CD": "COMPLETED", "F": "FAILED", "PD": "PENDING"}.get(name, name)


def map_state(raw: str, exit_code: str = "") -> SlurmState:
    """Map a Slurm state name (and sacct's ``code:signal`` exit code) to ours."""
    name = _normalise(raw)
    if name in _WAITING:
        return SlurmState(Phase.WAITING, None, name, _WAITING[name])
    if name in _ENDED:
        state, words = _ENDED[name]
        how = _describe_exit(exit_code)
        if name in ("FAILED", "COMPLETED") and how:
            words = f"{words}: {how}"
        return SlurmState(Phase.ENDED, state, name, words)
    detail = _RUNNING.get(name, f"in Slurm state {name}")
    return SlurmState(Phase.RUNNING, None, name, detail)


def exit_status(exit_code: str) -> int | None:
    """sacct's ``code:signal`` as one number the way shells report it (128 + signal)."""
    code, _, sig = exit_code.partition(":")
    try:
        code_n, sig_n = int(code), int(sig or 0)
    except ValueError:
        return None
    return 128 + sig_n if sig_n else code_n


def _describe_exit(exit_code: str) -> str:
    code, _, sig = exit_code.partition(":")
    if sig and sig != "0":
        return f"killed by signal {sig}"
    if code and code.isdigit():
        return f"exit code {code}"
    return ""


# Pending reasons users meet most, in words. Others are explained from their parts below.
_REASONS = {
    "None": "",
    "Priority": "other jobs in Slurm's queue have higher priority",
    "Resources": "waiting for GPUs to become free at the Slurm site",
    "Dependency": "waiting for a job it depends on",
    "DependencyNeverSatisfied": "a job it depends on failed: it can never run",
    "BeginTime": "its start time has not come yet",
    "JobHeldUser": "held by its user",
    "JobHeldAdmin": "held by an administrator",
    "PartitionConfig": "the partition cannot satisfy the request (nodes, GPUs or time)",
    "PartitionTimeLimit": "its time limit exceeds the partition's maximum",
    "PartitionDown": "the partition is down",
    "PartitionInactive": "the partition is inactive",
    "PartitionNodeLimit": "it asks for more nodes than the partition allows",
    "ReqNodeNotAvail": "a node it needs is unavailable (down, drained or reserved)",
    "NodeDown": "a node it needs is down",
    "Reservation": "waiting for its reservation to start",
    "InvalidAccount": "its account is not valid at the Slurm site",
    "InvalidQOS": "its QOS is not valid at the Slurm site",
    "BadConstraints": "its constraints cannot be satisfied",
    "launch failed requeued held": "launch failed; requeued and held",
}
_RESOURCE_WORDS = {
    "GRES": "GPU",
    "CPU": "CPU",
    "Mem": "memory",
    "Node": "node",
    "Billing": "billing",
    "Jobs": "job count",
    "Submit": "submitted-job count",
    "Wall": "wall-clock",
}
_LIMIT = re.compile(
    r"^(?P<who>Assoc|QOS)(?P<kind>Grp|Max)(?P<what>GRES|CPU|Mem|Node|Billing|Jobs|Submit|Wall)?"
    r"(?P<rest>.*)$"
)


def describe_reason(reason: str) -> str:
    """Slurm's pending reason in words, keeping the code itself so it can be looked up."""
    reason = reason.strip()
    if reason in _REASONS:
        words = _REASONS[reason]
        return f"{reason}: {words}" if words else ""
    match = _LIMIT.match(reason)
    if match:
        who = "the account's" if match["who"] == "Assoc" else "the QOS's"
        kind = "total" if match["kind"] == "Grp" else "per-job"
        what = _RESOURCE_WORDS.get(match["what"] or "", "resource")
        rest = match["rest"]
        if rest.startswith("RunMin"):
            unit = f"{what}-minutes of running jobs"
        elif rest.startswith("Min"):
            unit = f"{what}-minutes (GrpTRESMins, the GPU-hours granted)"
        else:
            unit = f"{what} limit"
        extra = "; it waits until the limit is raised" if rest.startswith("Min") else ""
        return f"{reason}: {who} {kind} {unit} would be exceeded{extra}"
    return f"Slurm reason: {reason}"
