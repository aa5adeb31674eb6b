"""Mutable working state of the scheduler: nodes as flat arrays, pools, running jobs, holds.

Flat lists indexed by node number rather than objects per node: at 32,500 nodes attribute
access and allocation dominate a pass, and lists of ints are what CPython does fastest. The
state is private to a `Scheduler` (or to one `schedule_pass` call); nothing outside core/ sees
it, so the frozen model types stay the contract.
"""

from __future__ import annotations

from collections.abc import Sequence

from gpucenter.core.model import OPPORTUNISTIC, NodeSnapshot
from gpucenter.core.pools import Pool
from gpucenter.core.reservations import AdvanceReservation
from gpucenter.domain.clock import Instant
from gpucenter.domain.errors import ValidationError
from gpucenter.domain.ids import JobId, ProjectId
from gpucenter.domain.messages import msg

#: A future hold on a node: (start, end, gpus, job id or -1, advance reservation index or -1).
Hold = tuple[float, float, int, int, int]

# Preemption classes: a job may only preempt jobs of a strictly lower class, so there are no
# preemption cycles.
OPPORTUNISTIC_CLASS = 0
BORROWED_CLASS = 1
ENTITLED_CLASS = 2


class RunRec:
    """A running job as the scheduler tracks it. `gpus` is the total over `parts`."""

    __slots__ = (
        "borrowed",
        "cls",
        "end",
        "gpu_type",
        "gpus",
        "job_id",
        "parts",
        "pool",
        "programme",
        "project",
        "qos",
        "requeue_at",
        "started_at",
    )

    def __init__(
        self,
        job_id: JobId,
        project: ProjectId,
        programme: str,
        parts: list[tuple[int, tuple[int, ...]]],
        started_at: Instant,
        end: Instant,
        qos: str,
        borrowed: bool,
        requeue_at: Instant | None,
        gpu_type: str,
        pool: int,
        gpus: int,
    ) -> None:
        self.job_id = job_id
        self.project = project
        self.programme = programme
        self.parts = parts
        self.started_at = started_at
        self.end = end
        self.qos = qos
        self.borrowed = borrowed
        self.requeue_at = requeue_at
        self.gpu_type = gpu_type
        self.pool = pool
        self.gpus = gpus
        if qos == OPPORTUNISTIC:
            self.cls = OPPORTUNISTIC_CLASS
        elif borrowed:
            self.cls = BORROWED_CLASS
        else:
            self.cls = ENTITLED_CLASS


class ClusterState:
    """Nodes, pools and holds. All mutation goes through methods that keep indices right.

    Built with `indexed=False` (a bulk load of running jobs follows), the pools' free-capacity
    indices are built once by `end_bulk` instead of node by node twice.
    """

    def __init__(self, nodes: Sequence[NodeSnapshot], *, indexed: bool = True) -> None:
        n_nodes = len(nodes)
        self.name: list[str] = [node.name for node in nodes]
        self.index: dict[str, int] = {name: i for i, name in enumerate(self.name)}
        if len(self.index) != n_nodes:
            seen: set[str] = set()
            for name in self.name:
                if name in seen:
                    raise ValidationError.about(
                        "nodes", msg("error.duplicate_node", node=repr(name))
                    )
                seen.add(name)
        self.gtype: list[str] = [node.gpu_type for node in nodes]
        self.size: list[int] = [node.gpu_count for node in nodes]
        self.block: list[int] = []
        self.site: list[int] = []
        self.domain: list[int] = []
        self.free: list[list[int]] = [list(range(g)) for g in self.size]
        self.run: list[dict[JobId, tuple[float, int]]] = [{} for _ in range(n_nodes)]
        self.pool_of: list[int] = [-1] * n_nodes
        self.version: list[int] = [0] * n_nodes
        self.future: dict[int, list[Hold]] = {}
        # Nodes whose GPUs or running jobs' ends changed, in order (holds and pool moves are
        # not logged): what the planner's kept plans check; the planner empties it per pass.
        self.log: list[int] = []
        # Per node, bumped with each logged change: with the node's holds it keys the
        # planner's exact earliest starts across passes (`version` also counts holds).
        self.real: list[int] = [0] * n_nodes
        self.block_ids: dict[tuple[str, str], int] = {}
        self.block_names: list[str] = []
        self.site_of_block: list[int] = []
        self.site_ids: dict[str, int] = {}
        self.domain_ids: dict[tuple[str, str], int] = {}
        self.pools: list[Pool] = []
        self.pool_ids: dict[tuple[str, int, int], int] = {}
        self.type_pools: dict[str, list[int]] = {}
        self.total_gpus = sum(self.size)
        self.bulk = True
        block_ids, site_ids = self.block_ids, self.site_ids
        block_list, site_list, domain_list = self.block, self.site, self.domain
        pool_of, pool_ids = self.pool_of, self.pool_ids
        members: dict[int, list[int]] = {}
        # Consecutive nodes usually share block and type: remember the last ones seen.
        last_block: tuple[str, str] | None = None
        last_kind: tuple[str, int] | None = None
        block = site = p = -1
        for i, node in enumerate(nodes):
            bkey = (node.site, node.block)
            if bkey != last_block:
                last_block = bkey
                got = block_ids.get(bkey)
                if got is None:
                    site = site_ids.setdefault(node.site, len(site_ids))
                    got = block_ids[bkey] = len(self.block_names)
                    self.block_names.append(node.block)
                    self.site_of_block.append(site)
                block = got
                site = self.site_of_block[block]
            block_list.append(block)
            site_list.append(site)
            if node.nvlink_domain is None:
                domain_list.append(-1)
            else:
                dkey = (node.site, node.nvlink_domain)
                domain_list.append(self.domain_ids.setdefault(dkey, len(self.domain_ids)))
            if node.gpu_count > 0:
                kind = (node.gpu_type, node.gpu_count)
                if kind != last_kind:
                    last_kind = kind
                    got = pool_ids.get((node.gpu_type, node.gpu_count, -1))
                    p = got if got is not None else self.pool_for(*kind, -1)
                    if p not in members:
                        members[p] = []
                pool_of[i] = p
                members[p].append(i)
        for p, nodes_of_pool in members.items():
            self.pools[p].nodes = dict.fromkeys(nodes_of_pool)
        if indexed:
            self.end_bulk()

    def pool_for(self, gpu_type: str, size: int, resv: int) -> int:
        key = (gpu_type, size, resv)
        p = self.pool_ids.get(key)
        if p is None:
            p = self.pool_ids[key] = len(self.pools)
            self.pools.append(Pool(p, gpu_type, size, resv))
            if resv < 0:
                ids = self.type_pools.setdefault(gpu_type, [])
                ids.append(p)
                ids.sort(key=lambda q: self.pools[q].size)
        return p

    # -- mutation ------------------------------------------------------------------------
    def begin_bulk(self) -> None:
        """Stop maintaining pool indices node by node: a bulk load follows."""
        self.bulk = True

    def end_bulk(self) -> None:
        """Rebuild every pool index once, after a bulk load of running jobs."""
        self.bulk = False
        old = self.pools
        self.pools = []
        held = set(self.future)
        for pool in old:
            fresh = Pool(pool.index, pool.gpu_type, pool.size, pool.resv)
            fresh.nodes = pool.nodes
            fresh.preemptible = pool.preemptible
            fresh.load(self.free, self.block, self.site, held)
            self.pools.append(fresh)

    def _unindex(self, n: int) -> Pool | None:
        p = self.pool_of[n]
        if p < 0 or self.bulk:
            return None
        pool = self.pools[p]
        pool.delete(n, len(self.free[n]), self.block[n], self.site[n], n in self.future)
        return pool

    def _reindex(self, n: int, pool: Pool | None) -> None:
        self.version[n] += 1
        if pool is not None and not self.bulk:
            pool.insert(n, len(self.free[n]), self.block[n], self.site[n], n in self.future)

    def take(self, n: int, gpus: tuple[int, ...], job: JobId, end: float) -> None:
        """Give `gpus` of node `n` to `job` until `end`. Raises if any is not free."""
        free = self.free[n]
        count = len(gpus)
        if tuple(free[:count]) == gpus:  # the lowest free GPUs, as placements usually are
            remaining = free[count:]
        elif count == len(free) and sorted(gpus) == free:
            remaining = []
        else:
            taken = set(gpus)
            if len(taken) != len(gpus) or not taken <= set(free):
                # English on purpose: the scheduler only takes GPUs it found free (a core invariant)
                raise ValidationError("placement", f"GPUs {gpus} of {self.name[n]} are not free")
            remaining = [g for g in free if g not in taken]
        pool = self._unindex(n)
        self.log.append(n)
        self.real[n] += 1
        self.free[n] = remaining
        held = self.run[n].get(job)
        self.run[n][job] = (end, len(gpus) + (held[1] if held else 0))
        self._reindex(n, pool)

    def take_free(self, n: int, count: int, job: JobId, end: float) -> None:
        """Give the `count` lowest free GPUs of `n` to `job`: the pass's own starts, which
        chose them from the free list and need no check."""
        free = self.free[n]
        self.free[n] = free[count:]
        self.run[n][job] = (end, count)
        self.version[n] += 1
        self.log.append(n)
        self.real[n] += 1
        p = self.pool_of[n]
        if p < 0 or self.bulk:
            return
        if n in self.future:
            held = self.pools[p].held  # re-inserted: moves to the end, as delete+insert did
            del held[n]
            held[n] = None
            return
        was = len(free)
        self.pools[p].change(n, was, was - count, self.block[n], self.site[n])

    def give_back(self, n: int, gpus: tuple[int, ...], job: JobId) -> None:
        pool = self._unindex(n)
        self.log.append(n)
        self.real[n] += 1
        self.free[n] = sorted(self.free[n] + list(gpus))
        self.run[n].pop(job, None)
        self._reindex(n, pool)

    def set_end(self, n: int, job: JobId, end: float) -> None:
        held = self.run[n][job]
        self.run[n][job] = (end, held[1])
        self.version[n] += 1
        self.log.append(n)
        self.real[n] += 1

    def add_hold(self, n: int, hold: Hold) -> None:
        p = self.pool_of[n]
        if p < 0 or self.bulk:
            self.future.setdefault(n, []).append(hold)
            self.version[n] += 1
            return
        # `_unindex`, the change, `_reindex`, inlined: planned starts put and take off
        # hundreds of holds per pass (the same dict operations in the same order).
        pool = self.pools[p]
        fut = self.future.get(n)
        if fut is None:
            pool.delete(n, len(self.free[n]), self.block[n], self.site[n], False)
            self.future[n] = [hold]
        else:
            del pool.held[n]
            fut.append(hold)
        self.version[n] += 1
        pool.held[n] = None

    def remove_hold(self, n: int, hold: Hold) -> None:
        holds = self.future[n]
        p = self.pool_of[n]
        if p < 0 or self.bulk:
            holds.remove(hold)
            if not holds:
                del self.future[n]
            self.version[n] += 1
            return
        pool = self.pools[p]  # as in `add_hold`
        del pool.held[n]
        holds.remove(hold)
        self.version[n] += 1
        if holds:
            pool.held[n] = None
        else:
            del self.future[n]
            pool.insert(n, len(self.free[n]), self.block[n], self.site[n], False)

    def move(self, n: int, new_pool: int) -> None:
        pool = self._unindex(n)
        if pool is not None:
            del pool.nodes[n]
        self.pool_of[n] = new_pool
        target = self.pools[new_pool]
        target.nodes[n] = None
        self._reindex(n, target)

    # -- queries -------------------------------------------------------------------------
    def usage_at(self, n: int, t: float) -> int:
        """GPUs of node `n` in use at instant `t`: running jobs not yet ended, plus holds."""
        used = 0
        for end, g in self.run[n].values():
            if end > t:
                used += g
        for h in self.future.get(n, ()):
            if h[0] <= t < h[1]:
                used += h[2]
        return used


def sync_reservations(
    state: ClusterState, reservations: Sequence[AdvanceReservation], now: Instant
) -> tuple[dict[int, Hold], bool]:
    """Put each reserved node in its reservation's pool while the window is open, and give it
    a whole-node hold from the window's start while the window is ahead. Returns the holds,
    and whether any node changed pool."""
    wanted_pool: dict[int, int] = {}
    wanted_hold: dict[int, Hold] = {}
    for r, resv in enumerate(reservations):
        if resv.end <= now:
            continue
        for name in resv.nodes:
            n = state.index.get(name)
            if n is None:
                raise ValidationError.about(
                    "reservation.nodes", msg("error.unknown_node", node=repr(name))
                )
            if n in wanted_pool or n in wanted_hold:
                continue  # the earlier reservation keeps an overlapping node
            if resv.active(now):
                wanted_pool[n] = state.pool_for(state.gtype[n], state.size[n], r)
            else:
                wanted_hold[n] = (resv.start, resv.end, state.size[n], -1, r)
    moved = False
    current = [n for pool in state.pools if pool.resv >= 0 for n in pool.nodes]
    for n in sorted(set(wanted_pool) | set(wanted_hold) | set(current)):
        if state.size[n] <= 0:
            continue
        target = wanted_pool.get(n, state.pool_for(state.gtype[n], state.size[n], -1))
        if state.pool_of[n] != target:
            state.move(n, target)
            moved = True
        hold = wanted_hold.get(n)
        if hold is not None:
            state.add_hold(n, hold)
    return wanted_hold, moved
