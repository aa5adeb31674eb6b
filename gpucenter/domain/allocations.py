"""Allocations' states: what a grant of GPU time can be in, and which states still count."""

from __future__ import annotations

from enum import StrEnum


class AllocationState(StrEnum):
    """An allocation's state. Suspension is set by a manager; the others follow from time and
    use (expired after its end, exhausted when its GPU-seconds are used up).

    An awarded allocation is PENDING until its award's agreement is in force (it exists, so
    the PI sees what is offered, but charges nothing and gives no fair-share weight), and
    WITHDRAWN when the offer was declined or lapsed: kept for the record, never current."""

    ACTIVE = "active"
    EXHAUSTED = "exhausted"
    EXPIRED = "expired"
    SUSPENDED = "suspended"
    PENDING = "pending"
    WITHDRAWN = "withdrawn"


# States set by people or by an award's life, which time and use do not change.
SET_STATES: tuple[AllocationState, ...] = (
    AllocationState.SUSPENDED,
    AllocationState.PENDING,
    AllocationState.WITHDRAWN,
)


CURRENT_STATES: tuple[AllocationState, ...] = (AllocationState.ACTIVE, AllocationState.EXHAUSTED)
"""The states of an allocation that is current: it charges jobs (an exhausted one holds them or
lets them run opportunistically), gives its project fair-share weight and is synced to sites.
A suspended or expired allocation does none of these. One definition, used everywhere."""
