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

#: A future hold on a node: (start, end, gpus, job id or -1, advance reservation index or -1).
Hold = tuple[float, float, int, int, int]

# Preemption classes: a job may only preempt jobs of a strictly lower class, so there are no
# preemption cycles.
OPPORTUNISTIC_CLASS = 0
BORROWED_CLASS = 1
ENTITLED_CLASS = 2


class RunRec:
    """A running job as the scheduler tracks it."""

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
        self.gpus = sum(len(g) for _, g in parts)
        if qos == OPPORTUNISTIC:
            self.cls = OPPORTUNISTIC_CLASS
        elif borrowed:
            self.cls = BORROWED_CLASS
        else:
            self.cls = ENTITLED_CLASS


class ClusterState:
    """Nodes, pools and holds. All mutation goes through methods that keep indices right."""

    def __init__(self, nodes: Sequence[NodeSnapshot]) -> None:
        n_nodes = len(nodes)
        self.name: list[str] = []
        self.index: dict[str, int] = {}
        self.gtype: list[str] = []
        self.size: list[int] = []
        self.block: list[int] = []
        self.site: list[int] = []
        self.domain: list[int] = []
        self.free: list[list[int]] = []
        self.run: list[dict[JobId, tuple[float, int]]] = []
        self.pool_of: list[int] = [0] * n_nodes
        self.version: list[int] = [0] * n_nodes
        self.future: dict[int, list[Hold]] = {}
        self.block_ids: dict[tuple[str, str], int] = {}
        self.block_names: list[str] = []
        self.site_of_block: list[int] = []
        self.site_ids: dict[str, int] = {}
        self.domain_ids: dict[tuple[str, str], int] = {}
        self.pools: list[Pool] = []
        self.pool_ids: dict[tuple[str, int, int], int] = {}
        self.type_pools: dict[str, list[int]] = {}
        self.total_gpus = 0
        self.bulk = False
        for i, node in enumerate(nodes):
            if node.name in self.index:
                raise ValidationError("nodes", f"duplicate node name {node.name!r}")
            self.index[node.name] = i
            self.name.append(node.name)
            self.gtype.append(node.gpu_type)
            self.size.append(node.gpu_count)
            self.total_gpus += node.gpu_count
            site = self.site_ids.setdefault(node.site, len(self.site_ids))
            bkey = (node.site, node.block)
            block = self.block_ids.get(bkey)
            if block is None:
                block = self.block_ids[bkey] = len(self.block_names)
                self.block_names.append(node.block)
                self.site_of_block.append(site)
            self.site.append(site)
            self.block.append(block)
            if node.nvlink_domain is None:
                self.domain.append(-1)
            else:
                dkey = (node.site, node.nvlink_domain)
                self.domain.append(self.domain_ids.setdefault(dkey, len(self.domain_ids)))
            self.free.append(list(range(node.gpu_count)))
            self.run.append({})
            if node.gpu_count > 0:
                p = self.pool_for(node.gpu_type, node.gpu_count, -1)
                self.pool_of[i] = p
                pool = self.pools[p]
                pool.nodes[i] = None
                pool.insert(i, node.gpu_count, block, site, False)
            else:
                self.pool_of[i] = -1

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
        for pool in old:
            fresh = Pool(pool.index, pool.gpu_type, pool.size, pool.resv)
            fresh.nodes = pool.nodes
            fresh.preemptible = pool.preemptible
            self.pools.append(fresh)
        free, block, site, future = self.free, self.block, self.site, self.future
        for i, p in enumerate(self.pool_of):
            if p >= 0:
                self.pools[p].insert(i, len(free[i]), block[i], site[i], i in future)

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
        if len(gpus) == len(free) and sorted(gpus) == free:
            remaining: list[int] = []
        else:
            taken = set(gpus)
            if len(taken) != len(gpus) or not taken <= set(free):
                raise ValidationError("placement", f"GPUs {gpus} of {self.name[n]} are not free")
            remaining = [g for g in free if g not in taken]
        pool = self._unindex(n)
        self.free[n] = remaining
        held = self.run[n].get(job)
        self.run[n][job] = (end, len(gpus) + (held[1] if held else 0))
        self._reindex(n, pool)

    def take_free(self, n: int, count: int, job: JobId, end: float) -> None:
        """Give the `count` lowest free GPUs of `n` to `job`: the pass's own starts, which
        chose them from the free list and need no check."""
        pool = self._unindex(n)
        self.free[n] = self.free[n][count:]
        self.run[n][job] = (end, count)
        self._reindex(n, pool)

    def give_back(self, n: int, gpus: tuple[int, ...], job: JobId) -> None:
        pool = self._unindex(n)
        self.free[n] = sorted(self.free[n] + list(gpus))
        self.run[n].pop(job, None)
        self._reindex(n, pool)

    def set_end(self, n: int, job: JobId, end: float) -> None:
        held = self.run[n][job]
        self.run[n][job] = (end, held[1])
        self.version[n] += 1

    def add_hold(self, n: int, hold: Hold) -> None:
        pool = self._unindex(n)
        self.future.setdefault(n, []).append(hold)
        self._reindex(n, pool)

    def remove_hold(self, n: int, hold: Hold) -> None:
        pool = self._unindex(n)
        holds = self.future[n]
        holds.remove(hold)
        if not holds:
            del self.future[n]
        self._reindex(n, pool)

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
                raise ValidationError("reservation.nodes", f"unknown node {name!r}")
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
