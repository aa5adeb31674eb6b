"""Words people read for job states, wait reasons and priority factors, in both languages.

The core speaks in codes (`PENDING`, `Resources`, `fairshare`) and English sentences; the
portal shows a translated label for each code and keeps the core's sentence beside it, so a
reader in Korean knows at once why a job waits and can still quote the exact detail.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from gpucenter.domain.jobs import JobState, WaitReason
from gpucenter.web.i18n import N_

STATE_LABELS: dict[str, str] = {
    JobState.PENDING: N_("Pending"),
    JobState.RUNNING: N_("Running"),
    JobState.COMPLETED: N_("Completed"),
    JobState.FAILED: N_("Failed"),
    JobState.CANCELLED: N_("Cancelled"),
    JobState.TIMEOUT: N_("Timed out"),
}

REASON_LABELS: dict[str, str] = {
    WaitReason.PRIORITY: N_("Other jobs have higher priority"),
    WaitReason.RESOURCES: N_("Waiting for free GPUs"),
    WaitReason.RESERVATION: N_("GPUs are reserved for someone else"),
    WaitReason.ALLOCATION_EXHAUSTED: N_("The project's allocation is used up"),
    WaitReason.QUOTA_LIMIT: N_("The project's GPU limit is reached"),
    WaitReason.TOPOLOGY: N_("No nodes close enough together are free"),
    WaitReason.DEPENDENCY: N_("Waiting for the jobs it depends on"),
    WaitReason.SITE_UNAVAILABLE: N_("The site is unavailable"),
    WaitReason.SITE_NOT_READY: N_("The site is being set up for this job"),
    WaitReason.NEW: N_("Waiting for the next scheduling pass"),
    WaitReason.HELD: N_("The project is on hold until an overdue report is submitted"),
}

FACTOR_LABELS: dict[str, str] = {
    "fairshare": N_("Fair share"),
    "age": N_("Time waited"),
    "jobsize": N_("Job size"),
    "qos": N_("Quality of service"),
}

QOS_LABELS: dict[str, str] = {
    "normal": N_("Normal"),
    "opportunistic": N_("Opportunistic (idle GPUs, may be preempted)"),
}

_EXPECTED = re.compile(r"expected to start by (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)")


def state_label(state: str) -> str:
    return STATE_LABELS.get(state, state)


def reason_label(reason: str) -> str:
    return REASON_LABELS.get(reason, reason)


def expected_start(detail: str) -> datetime | None:
    """The start the scheduler's backfill plan promises, read from the wait detail.

    The core writes it into the sentence ("... expected to start by 2026-11-29T18:40:00Z");
    the portal shows it as a localised time."""
    found = _EXPECTED.search(detail or "")
    if not found:
        return None
    return datetime.strptime(found.group(1), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
