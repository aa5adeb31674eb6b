"""Free GPUs per node, bucketed by count: the baselines' placement (best fit, whole nodes).

The baselines deliberately do not reuse the core's placement, so that a comparison measures
the policy, and so that they stay what the literature describes: a single-node job takes the
fullest node that fits, a multi-node job takes wholly free nodes.

Node choice is a pure function of the free GPUs, never of history: among equally good nodes
the lowest index (the order of the cluster spec) wins. Each bucket is kept as a sorted list
of node indices for that reason; with insertion order instead, which node a job gets would
depend on the order earlier jobs ended, and under heavy load with wide jobs that alone moved
FIFO's mean JCT by up to 6%.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence

from gpucenter.core import NodeGpus, NodeSnapshot
from gpucenter.domain.jobs import GpuRequest


class FreeMap:
    """Which GPU indices are free on every node; buckets[type][k] = nodes with k free,
    ascending by index."""

    def __init__(self, nodes: Sequence[NodeSnapshot]) -> None:
        self.nodes = tuple(nodes)
        self.index = {n.name: i for i, n in enumerate(nodes)}
        self.free: list[list[int]] = [list(range(n.gpu_count)) for n in nodes]
        self.size = [n.gpu_count for n in nodes]
        self.gtype = [n.gpu_type for n in nodes]
        self.buckets: dict[str, list[list[int]]] = {}
        for i, n in enumerate(nodes):
            b = self.buckets.setdefault(n.gpu_type, [])
            while len(b) <= n.gpu_count:
                b.append([])
            b[n.gpu_count].append(i)
        self.free_gpus = sum(self.size)

    def _move(self, i: int, before: int, after: int) -> None:
        b = self.buckets[self.gtype[i]]
        lst = b[before]
        del lst[bisect.bisect_left(lst, i)]
        bisect.insort(b[after], i)

    def fits_now(self, req: GpuRequest) -> bool:
        return self.find(req) is not None

    def candidates(self, gpu_type: str, g: int) -> Iterator[int]:
        """Nodes of `gpu_type` with at least `g` free GPUs, best fit first (fewest free),
        lowest index among equals."""
        b = self.buckets.get(gpu_type)
        if b is None:
            return
        for k in range(g, len(b)):
            yield from b[k]

    def whole(self, gpu_type: str) -> list[int]:
        """Wholly free nodes of `gpu_type` (of the type's largest node size), ascending."""
        b = self.buckets.get(gpu_type)
        return b[-1] if b else []

    def find(self, req: GpuRequest) -> tuple[str, list[int]] | None:
        """(gpu type, nodes) for `req`, or None; does not take anything."""
        for t in req.acceptable_types:
            b = self.buckets.get(t)
            if b is None or req.gpus_per_node >= len(b):
                continue
            if req.nodes == 1:
                for k in range(req.gpus_per_node, len(b)):
                    if b[k]:
                        return t, [b[k][0]]
            else:
                full = b[-1]
                if len(full) >= req.nodes:
                    return t, full[: req.nodes]
        return None

    def take(self, nodes: list[int], gpus_per_node: int) -> tuple[NodeGpus, ...]:
        out = []
        for i in nodes:
            f = self.free[i]
            before = len(f)
            got, self.free[i] = f[:gpus_per_node], f[gpus_per_node:]
            self._move(i, before, len(self.free[i]))
            out.append(NodeGpus(self.nodes[i].name, tuple(got)))
            self.free_gpus -= gpus_per_node
        return tuple(out)

    def give_back(self, placement: Sequence[NodeGpus]) -> None:
        for part in placement:
            i = self.index[part.node]
            before = len(self.free[i])
            self.free[i] = sorted(self.free[i] + list(part.gpus))
            self._move(i, before, len(self.free[i]))
            self.free_gpus += len(part.gpus)
