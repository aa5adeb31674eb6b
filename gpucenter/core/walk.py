"""The walk over the queue in priority order, and the lazy mapping of its wait reasons.

Capacity only shrinks during a pass, so once a job of some shape fails, every later job of
that shape that runs no shorter fails the same way (the failed-shape memo, `dead`). While
planned starts are still being handed out, the walk visits every job (phase 1). After that
(phase 2), whole runs of jobs are answered at once: the queue is kept as per-(shape, time
limit) lists in queue order (`JobQueue.streams`), the walk merges the heads of those lists by
queue position, and a list whose shape is dead for its time limit is recorded as a slice with
its wait instead of job by job. Jobs whose fate is their own (a budget, a limited or
reserving project) are merged in from the solo list and visited one by one. Each visited job
runs exactly the per-job logic of phase 1, so the decisions are the same as a plain walk.

`Waits` expands the recorded slices into per-job entries only when read, in queue order.
"""

from __future__ import annotations

import bisect
import heapq
import operator
from collections.abc import Callable, Iterator, Mapping, Sequence

from gpucenter.core.model import Wait
from gpucenter.core.passes import PassContext
from gpucenter.core.queue import JobQueue, QueuedJob
from gpucenter.domain.ids import JobId, ProjectId
from gpucenter.domain.jobs import WaitReason

_BLOCKED = frozenset(
    {WaitReason.RESOURCES, WaitReason.PRIORITY, WaitReason.RESERVATION, WaitReason.TOPOLOGY}
)
_rank = operator.attrgetter("rank")
_job_id = operator.attrgetter("id")

Dead = dict[int, tuple[int, Wait]]
Segment = tuple[list[QueuedJob], Wait]


class Waits(Mapping[JobId, Wait]):
    """Job id -> wait, for one pass: jobs visited one by one in `explicit`, runs of jobs
    answered in bulk in `segments` (jobs that left the queue before the pass, `gone` below
    the pass number, are skipped). Iterates in queue order, like a walk filling a dict."""

    __slots__ = ("_all", "_explicit", "_final", "_listed", "_pass_no", "_segments")

    def __init__(
        self,
        explicit: dict[JobId, Wait],
        segments: list[Segment],
        listed: Sequence[QueuedJob],
        pass_no: int,
    ) -> None:
        self._explicit = explicit
        self._segments = segments
        self._listed = listed
        self._pass_no = pass_no
        # For a scheduler thrown away after the pass: job ids only (see `final`).
        self._final: tuple[list[tuple[list[JobId], Wait]], list[JobId]] | None = None
        self._all: dict[JobId, Wait] | None = None if segments else explicit

    @classmethod
    def final(
        cls, explicit: dict[JobId, Wait], segments: list[Segment], listed: Sequence[QueuedJob]
    ) -> Waits:
        """Waits of a first and last pass (`schedule_pass`): no job left the queue before
        it, so every job of a bulk run waits; keep ids, not the scheduler's entries."""
        out = cls(explicit, [], (), 0)
        if segments:
            out._final = (
                [(list(map(_job_id, jobs)), wait) for jobs, wait in segments],
                list(map(_job_id, listed)),
            )
            out._all = None
        return out

    def _full(self) -> dict[JobId, Wait]:
        full = self._all
        if full is None:
            found = dict(self._explicit)
            if self._final is not None:
                id_segments, order = self._final
                for ids, wait in id_segments:
                    found.update(dict.fromkeys(ids, wait))
            else:
                pass_no = self._pass_no
                for jobs, wait in self._segments:
                    found.update((q.id, wait) for q in jobs if q.gone >= pass_no)
                order = [q.id for q in self._listed]
            get = found.get
            full = {i: w for i in order if (w := get(i)) is not None}
            self._all = full
            self._segments = []
            self._listed = ()
            self._final = None
        return full

    def __getitem__(self, key: JobId) -> Wait:
        got = self._explicit.get(key)
        if got is not None:
            return got
        return self._full()[key]

    def __contains__(self, key: object) -> bool:
        if key in self._explicit:
            return True
        return key in self._full()

    def __iter__(self) -> Iterator[JobId]:
        return iter(self._full())

    def __len__(self) -> int:
        return len(self._full())


class Walk:
    """One pass's walk; `run` returns the number of jobs started and the bulk segments."""

    def __init__(
        self,
        jq: JobQueue,
        px: PassContext,
        consider: Callable[[QueuedJob, PassContext], Wait | None],
        special: set[ProjectId],
        max_res: int,
        pass_no: int,
    ) -> None:
        self.jq = jq
        self.px = px
        self.consider = consider
        self.special = special
        self.max_res = max_res
        self.pass_no = pass_no
        self.started = 0
        # The failed-shape memo: shape id -> (shortest time limit that failed, its wait).
        self.dead: Dead = {}
        # Lists answered in bulk, per shape id: [list, start indices, waits from there].
        self.bulk: dict[int, list[tuple[list[QueuedJob], list[int], list[Wait]]]] = {}

    def run(self, bulk: bool = True) -> tuple[int, list[Segment]]:
        """Walk the queue; with `bulk` false, visit every job (a scheduler thrown away after
        one pass gains nothing from building the per-shape lists for it)."""
        order = self.jq.order
        i = self._phase1(order, stop=bulk)
        if i < len(order):
            self._phase2(order[i - 1].rank if i else None)
        segments: list[Segment] = []
        for records in self.bulk.values():
            for members, starts, waits in records:
                ends = [*starts[1:], len(members)]
                for s, e, w in zip(starts, ends, waits, strict=True):
                    segments.append((members[s:e], w))
        return self.started, segments

    def _phase1(self, queue: list[QueuedJob], stop: bool = True) -> int:
        """Every job, in order, while planned starts are still handed out (or to the end if
        not `stop`). Returns how many jobs of `queue` it went through."""
        px = self.px
        max_res = self.max_res
        planning = px.reserved < max_res
        if not planning and stop:
            return 0
        special = self.special
        waits = px.waits
        dead = self.dead
        dead_get = dead.get
        consider = self.consider
        pending = self.jq.pending
        pass_no = self.pass_no
        blocked_reasons = _BLOCKED
        i = 0
        for q in queue:
            i += 1
            if q.done:
                continue
            d = dead_get(q.sid)
            if (
                d is not None
                and q.limit >= d[0]
                and (not planning or q.opp)
                and q.budget is None
                and q.project not in special
            ):
                waits[q.id] = d[1]
                continue
            wait = consider(q, px)
            if wait is None:  # started: what `JobQueue.started` does, inlined
                q.done = True
                q.gone = pass_no
                del pending[q.id]
                self.started += 1
                continue
            waits[q.id] = wait
            if (
                wait.reason in blocked_reasons
                and q.budget is None
                and q.project not in special
                and px.generic is not None
                and (d is None or q.limit < d[0])
            ):
                dead[q.sid] = (q.limit, px.generic)
            if planning and px.reserved >= max_res:
                if stop:
                    return i
                planning = False
        return i

    def _phase2(self, after: float | None) -> None:
        """The rest of the queue, merging the per-(shape, limit) lists by queue position."""
        px = self.px
        groups, solo = self.jq.streams()
        dead = self.dead
        dead_get = dead.get
        bulk = self.bulk
        lists: list[list[QueuedJob]] = []
        cursors: list[int] = []
        limits: list[int] = []  # the list's time limit; -1 for the solo list
        heap: list[tuple[float, int]] = []
        streams: list[tuple[list[QueuedJob], int]] = [(solo, -1)]
        streams += [(members, key[1]) for key, members in groups.items()]
        for members, limit in streams:
            c = 0 if after is None else bisect.bisect_right(members, after, key=_rank)
            end = len(members)
            while c < end and members[c].done:
                c += 1
            if c == end:
                continue
            if limit >= 0:
                sid = members[c].sid
                d = dead_get(sid)
                if d is not None and limit >= d[0]:
                    bulk.setdefault(sid, []).append((members, [c], [d[1]]))
                    continue
            heap.append((members[c].rank, len(lists)))
            lists.append(members)
            cursors.append(c)
            limits.append(limit)
        heapq.heapify(heap)
        special = self.special
        waits = px.waits
        consider = self.consider
        pending = self.jq.pending
        pass_no = self.pass_no
        blocked_reasons = _BLOCKED
        heapreplace, heappop = heapq.heapreplace, heapq.heappop
        while heap:
            k = heap[0][1]
            members = lists[k]
            c = cursors[k]
            q = members[c]
            sid = q.sid
            d = dead_get(sid)
            if limits[k] >= 0 and d is not None and limits[k] >= d[0]:
                # The shape is dead for this list's time limit: the rest of it, in bulk.
                bulk.setdefault(sid, []).append((members, [c], [d[1]]))
                heappop(heap)
                continue
            if d is not None and q.limit >= d[0] and q.budget is None and q.project not in special:
                waits[q.id] = d[1]
            else:
                wait = consider(q, px)
                if wait is None:
                    q.done = True
                    q.gone = pass_no
                    del pending[q.id]
                    self.started += 1
                else:
                    waits[q.id] = wait
                    if (
                        wait.reason in blocked_reasons
                        and q.budget is None
                        and q.project not in special
                        and px.generic is not None
                        and (d is None or q.limit < d[0])
                    ):
                        dead[sid] = (q.limit, px.generic)
                        self._switch(sid, q.rank, px.generic)
            end = len(members)
            c += 1
            while c < end and members[c].done:
                c += 1
            if c < end:
                cursors[k] = c
                heapreplace(heap, (members[c].rank, k))
            else:
                heappop(heap)

    def _switch(self, sid: int, after: float, wait: Wait) -> None:
        """The memo of `sid` got a new wait at queue position `after`: lists of that shape
        already answered in bulk answer with it from there on."""
        for members, starts, waits in self.bulk.get(sid, ()):
            c = bisect.bisect_right(members, after, lo=starts[-1], key=_rank)
            if c >= len(members):
                continue
            if c == starts[-1]:
                waits[-1] = wait
            else:
                starts.append(c)
                waits.append(wait)


def quick_walk(
    jq: JobQueue,
    px: PassContext,
    consider: Callable[[QueuedJob, PassContext], Wait | None],
    depth: int,
    pass_no: int,
) -> tuple[int, int]:
    """The walk of a quick pass: the top `depth` jobs of the queue in strict priority order
    per GPU type, without planned starts. Returns (jobs started, entries of `jq.order` gone
    through).

    A job that cannot start closes its GPU types: no later job that accepts any of them is
    tried, so nothing started here can delay a job above it (every job started is above
    every job still waiting for its types). A job skipped for a closed type closes its
    other types too (it may have been planned on them by the last backfill pass). Jobs that
    wait for their own reasons (budget, project quota) close nothing. The walk ends at
    `depth` jobs looked at, or when every type is closed: what it did not reach waits for
    the next backfill pass, as in Slurm's main scheduler (`default_queue_depth`).
    """
    order = jq.order
    pending = jq.pending
    waits = px.waits
    all_types = len(px.st.type_pools)
    closed: set[str] = set()
    started = looked = i = 0
    for q in order:
        if looked >= depth or len(closed) >= all_types:
            break
        i += 1
        if q.done:
            continue
        looked += 1
        types = q.shape.types
        if closed and not closed.isdisjoint(types):
            closed.update(types)
            continue
        wait = consider(q, px)
        if wait is None:
            q.done = True
            q.gone = pass_no
            del pending[q.id]
            started += 1
            continue
        waits[q.id] = wait
        if wait.reason in _BLOCKED:
            closed.update(types)
    return started, i
