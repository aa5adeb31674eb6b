"""Free GPUs per node, bucketed by count: the baselines' placement (best fit, whole nodes).

The baselines deliberately do not reuse the core's placement, so that a comparison measures
the policy, and so that they stay what the literature describes: a single-node job takes the
fullest node that fits, a multi-node job takes wholly free nodes (lowest index first).
"""

from __future__ import annotations

from collections.abc import Sequence

from gpucenter.core import NodeGpus, NodeSnapshot
from gpucenter.domain.jobs import GpuRequest


class FreeMap:
    """Which GPU indices are free on every node; buckets[type][k] = nodes with k free."""

    def __init__(self, nodes: Sequence[NodeSnapshot]) -> None:
        self.nodes = tuple(nodes)
        self.index = {n.name: i for i, n in enumerate(nodes)}
        self.free: list[list[int]] = [list(range(n.gpu_count)) for n in nodes]
        self.size = [n.gpu_count for n in nodes]
        self.buckets: dict[str, list[dict[int, None]]] = {}
        for i, n in enumerate(nodes):
            b = self.buckets.setdefault(n.gpu_type, [])
            while len(b) <= n.gpu_count:
                b.append({})
            b[n.gpu_count][i] = None
        self.free_gpus = sum(self.size)

    def _move(self, i: int, before: int, after: int) -> None:
        b = self.buckets[self.nodes[i].gpu_type]
        del b[before][i]
        b[after][i] = None

    def fits_now(self, req: GpuRequest) -> bool:
        return self.find(req) is not None

    def find(self, req: GpuRequest) -> tuple[str, list[int]] | None:
        """(gpu type, nodes) for `req`, or None; does not take anything."""
        for t in req.acceptable_types:
            b = self.buckets.get(t)
            if b is None or req.gpus_per_node >= len(b):
                continue
            if req.nodes == 1:
                for k in range(req.gpus_per_node, len(b)):
                    if b[k]:
                        return t, [next(iter(b[k]))]
            else:
                full = b[-1]
                if len(full) >= req.nodes and req.gpus_per_node <= len(b) - 1:
                    it = iter(full)
                    return t, [next(it) for _ in range(req.nodes)]
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
