"""Fragmentation of whole-GPU clusters over time, by the FGD paper's definition.

FGD (Weng et al., ATC '23) calls a node's idle GPUs fragmented *for a task* when the task
cannot use them there, and weighs tasks by how often they arrive (the "typical" workload).
For whole GPUs that reads: a node with k idle GPUs is fragmented by k for a single-node job
of g > k GPUs (or of another GPU type), and for a gang (which takes whole nodes) unless the
node is wholly idle; otherwise not at all. The cluster's fragmentation is the sum over nodes
of the expectation over arriving job shapes, in GPUs. `FragmentationMeter` keeps it current
as jobs start and end, so the engine can integrate it over time exactly.

The GPU-sharing form (fractional GPUs, CPU) is `core.fractional.node_fragmentation`; the
whole-GPU form here is the same measure with every GPU's share either 0 or 1000.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from gpucenter.core import NodeSnapshot
from gpucenter.domain.jobs import GpuRequest


class FragmentationMeter:
    """The FGD fragmentation (GPUs) of the cluster, updated per node as GPUs are taken or
    given back. `typical` is the arriving requests (their shapes weighted by count)."""

    def __init__(self, nodes: Sequence[NodeSnapshot], typical: Iterable[GpuRequest]) -> None:
        counts: dict[tuple[tuple[str, ...], int, bool], int] = {}
        for req in typical:
            key = (req.acceptable_types, req.gpus_per_node, req.nodes > 1)
            counts[key] = counts.get(key, 0) + 1
        total = sum(counts.values())
        self.index = {n.name: i for i, n in enumerate(nodes)}
        self.free = [n.gpu_count for n in nodes]
        # phi[(type, size)][k]: expected fragmented GPUs on such a node with k idle.
        self._phi: dict[tuple[str, int], list[float]] = {}
        self.phi: list[list[float]] = []
        for n in nodes:
            kind = (n.gpu_type, n.gpu_count)
            table = self._phi.get(kind)
            if table is None:
                table = self._phi[kind] = [
                    k * _unusable_share(counts, total, n.gpu_type, n.gpu_count, k)
                    for k in range(n.gpu_count + 1)
                ]
            self.phi.append(table)
        self.value = sum(self.phi[i][f] for i, f in enumerate(self.free))

    def change(self, node: str, delta: int) -> None:
        """`delta` GPUs of `node` became idle (positive) or busy (negative)."""
        i = self.index[node]
        before = self.free[i]
        after = self.free[i] = before + delta
        table = self.phi[i]
        self.value += table[after] - table[before]


def _unusable_share(
    counts: dict[tuple[tuple[str, ...], int, bool], int],
    total: int,
    gpu_type: str,
    size: int,
    idle: int,
) -> float:
    """Share of arriving jobs that could not use a node of `gpu_type`/`size` with `idle`
    GPUs idle (1.0 when nothing arrives: idle GPUs nobody asks for are all stranded)."""
    if total == 0:
        return 1.0
    bad = 0
    for (types, gpn, gang), c in counts.items():
        if gpu_type not in types:
            bad += c
        elif gang:
            bad += c if idle < size else 0
        elif idle < gpn:
            bad += c
    return bad / total
