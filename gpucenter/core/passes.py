"""Per-pass bookkeeping: outputs being built, the failed-shape memo, and wait texts.

Wait objects are interned by message: a 100,000-job queue mostly waits for a handful of
reasons, and one shared frozen object per reason keeps a pass from allocating per job.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from gpucenter.core.model import Fragmentation, PlannedStart, Preemption, Start, Wait
from gpucenter.core.reservations import AdvanceReservation
from gpucenter.core.state import BORROWED_CLASS, ENTITLED_CLASS, ClusterState, Hold
from gpucenter.domain.ids import JobId, ProjectId
from gpucenter.domain.jobs import WaitReason
from gpucenter.domain.messages import At, Message

if TYPE_CHECKING:
    from gpucenter.core.queue import QueuedJob
    from gpucenter.core.timeline import Planner


def iso_instant(t: float) -> str:
    """An instant as people read it in an English wait reason: UTC ISO-8601 to the second,
    e.g. "2026-11-29T18:40:00Z". Pure: a function of `t` alone, no local time zone. Readers
    in another language or zone render the wait's `message` instead."""
    return At(t).iso()


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector for a pass, then restore it.

    A pass allocates ~10^5 short-lived, acyclic objects; each automatic collection would
    rescan the whole snapshot and queue (millions of objects), which cost a third of a
    260,000-GPU pass. Results do not depend on it; reference counting still frees memory.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class PassContext:
    """Everything one pass accumulates."""

    def __init__(
        self, now: float, reservations: Sequence[AdvanceReservation], st: ClusterState
    ) -> None:
        self.now = now
        self.st = st
        self.reservations = reservations
        self.active = [(r, resv) for r, resv in enumerate(reservations) if resv.active(now)]
        self.starts: list[Start] = []
        self.waits: dict[JobId, Wait] = {}
        self.planned: list[PlannedStart] = []
        self.preemptions: list[Preemption] = []
        self.spent: dict[ProjectId, float] = {}
        self.memo: dict[
            tuple[int, int, int, int | None], tuple[float, WaitReason | None, Hold | None]
        ] = {}
        self.holds: list[tuple[int, Hold]] = []
        self.tuples: dict[tuple[int, ...], tuple[int, ...]] = {}
        self.reserved = 0
        self.preempt_attempts = 0
        self.planner: Planner
        self.generic: Wait | None = None
        self._pools: dict[tuple[str, int, int], list[tuple[int, int]]] = {}
        self._texts: dict[tuple[WaitReason, Message], Wait] = {}

    # -- where a job may run -------------------------------------------------------------
    def pools_for(
        self, project: ProjectId, gpu_type: str, gpn: int, end: float, cls: int
    ) -> list[tuple[int, int]]:
        """(pool, class it would start as) in the order to try: the project's reservations,
        the general pools, then idle GPUs of other projects' leases (preemptible)."""
        key = (gpu_type, gpn, cls)
        general = self._pools.get(key)
        if general is None:
            st = self.st
            general = [(p, cls) for p in st.type_pools.get(gpu_type, ()) if st.pools[p].size >= gpn]
            self._pools[key] = general
        if not self.active:
            return general
        st = self.st
        mine: list[tuple[int, int]] = []
        lent: list[tuple[int, int]] = []
        for r, resv in self.active:
            member = project in resv.projects
            if member and end > resv.end:
                continue
            if not member and not resv.lease:
                continue
            for (t, size, rr), p in st.pool_ids.items():
                if rr == r and t == gpu_type and size >= gpn:
                    if member:
                        mine.append((p, max(cls, ENTITLED_CLASS) if cls else cls))
                    else:
                        lent.append((p, min(cls, BORROWED_CLASS)))
        return mine + general + lent

    # -- wait texts ----------------------------------------------------------------------
    def _wait(self, reason: WaitReason, message: Message) -> Wait:
        key = (reason, message)
        w = self._texts.get(key)
        if w is None:
            w = self._texts[key] = Wait(reason, message.english(), message)
        return w

    @staticmethod
    def shape(q: QueuedJob) -> Message:
        shape = q.shape
        return Message(
            "shape", (("nodes", shape.nodes), ("gpus", shape.gpn), ("types", "/".join(shape.types)))
        )

    def exhausted(self, q: QueuedJob, left: float) -> Wait:
        if left <= 0:
            return self._wait(WaitReason.ALLOCATION_EXHAUSTED, Message("wait.allocation_empty"))
        return self._wait(
            WaitReason.ALLOCATION_EXHAUSTED,
            Message.of(
                "wait.allocation_short",
                need=round(q.gpu_seconds / 3600, 1),
                left=round(left / 3600, 1),
            ),
        )

    def quota(self, q: QueuedJob, limits: Mapping[str, int]) -> Wait:
        caps = ", ".join(f"{t}: {limits[t]}" for t in q.shape.types if t in limits)
        return self._wait(
            WaitReason.QUOTA_LIMIT, Message.of("wait.quota", caps=caps, shape=self.shape(q))
        )

    def blocked(self, q: QueuedJob, reason: WaitReason, hold: Hold | None) -> Wait:
        if reason is WaitReason.TOPOLOGY:
            return self._wait(
                reason,
                Message.of(
                    "wait.topology",
                    shape=self.shape(q),
                    blocks=q.shape.max_blocks if q.shape.max_blocks is not None else "?",
                ),
            )
        if reason is WaitReason.RESERVATION and hold is not None:
            name = self.reservations[hold[4]].name
            return self._wait(
                reason, Message.of("wait.reservation", name=name, start=At(float(round(hold[0]))))
            )
        if reason is WaitReason.PRIORITY:
            return self._wait(
                reason, Message.of("wait.priority", job=str(hold[3]) if hold else "?")
            )
        return self._wait(reason, Message.of("wait.resources", shape=self.shape(q)))

    def plan(self, q: QueuedJob, reason: WaitReason, t: float, nodes: list[str], g: int) -> Wait:
        self.planned.append(PlannedStart(q.src.job_id, t, tuple(nodes), g))
        head = ", ".join(nodes[:3]) + (" ..." if len(nodes) > 3 else "")
        message = Message.of(
            "wait.planned", shape=self.shape(q), start=At(float(round(t))), nodes=head
        )
        return Wait(reason, message.english(), message)

    def never(self, q: QueuedJob) -> Wait:
        return self._wait(WaitReason.RESOURCES, Message.of("wait.never", shape=self.shape(q)))


def fragmentation(
    st: ClusterState, queue: Sequence[QueuedJob], waits: Mapping[JobId, Wait]
) -> Fragmentation:
    """Free GPUs the highest-priority waiting job could not use even if it were alone.

    For a single-node job of g GPUs that is the free GPUs on nodes with fewer than g free; for
    a gang, free GPUs on nodes not wholly free.
    """
    head = next(
        (
            q
            for q in queue
            if not q.done
            and (w := waits.get(q.src.job_id)) is not None
            and w.reason in (WaitReason.RESOURCES, WaitReason.PRIORITY, WaitReason.RESERVATION)
        ),
        None,
    )
    if head is None:
        return Fragmentation(0, 0)
    free = unusable = 0
    shape = head.shape
    g = shape.gpn if shape.nodes == 1 else None
    sizes = st.free
    for gpu_type in shape.types:
        for p in st.type_pools.get(gpu_type, ()):
            pool = st.pools[p]
            # Unheld nodes are counted by free GPUs in the pool's index; held ones one by one.
            limit = pool.size if g is None else g
            for f, count in enumerate(pool.count):
                if count:
                    free += f * count
                    if f < limit:
                        unusable += f * count
            for n in pool.held:
                f = len(sizes[n])
                free += f
                if f < limit:
                    unusable += f
    return Fragmentation(free, unusable)
