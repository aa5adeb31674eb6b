"""Wait reasons read by people: instants as UTC ISO-8601, node names kept."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from gpucenter.core import AdvanceReservation, Policies, schedule_pass
from gpucenter.core.passes import iso_instant
from gpucenter.domain.ids import JobId, ProjectId
from gpucenter.domain.jobs import WaitReason
from tests.core.builders import T0, cluster, job


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_iso_instant_is_utc_to_the_second() -> None:
    assert iso_instant(1_764_434_400.0) == "2025-11-29T16:40:00Z"
    assert iso_instant(1_764_434_400.4) == "2025-11-29T16:40:00Z"
    assert iso_instant(1e300).startswith("1")  # out of range: the number, not an error


def test_planned_start_names_the_instant_and_the_nodes() -> None:
    snapshot = cluster().nodes(2).busy("n0", limit=1000).busy("n1", 4, limit=5000).snapshot()
    result = schedule_pass(snapshot, [job(1, gpus=8, nodes=2)], T0)
    wait = result.waits[JobId(1)]
    assert wait.reason is WaitReason.RESOURCES
    (plan,) = result.planned
    assert plan.start_at > T0
    assert f"expected to start by {_iso(plan.start_at)} on n0, n1" in wait.detail
    assert not re.search(r"\d{7,}", wait.detail)


def test_reservation_wait_names_the_window_start() -> None:
    resv = AdvanceReservation(
        "fm", ("n0", "n1"), frozenset({ProjectId(7)}), start=T0 + 7200, end=T0 + 86400
    )
    result = schedule_pass(
        cluster().nodes(2).snapshot(),
        [job(1, gpus=8, limit=3600, submitted=T0 - 9), job(2, gpus=8, limit=10_000)],
        T0,
        reservations=[resv],
        policy=Policies(max_reservations=0),  # the generic text, not a planned start
    )
    wait = result.waits[JobId(2)]
    assert wait.reason is WaitReason.RESERVATION
    assert f"reserved by 'fm' from {_iso(T0 + 7200)};" in wait.detail
