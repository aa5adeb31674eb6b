"""The GPU-sharing fragmentation experiment of the FGD paper, over `core.fractional`.

Protocol (the published artefact's, so that numbers compare): pods are shuffled with the seed,
then topped up by sampling pods of the list until the demand would pass `tune` x the cluster's
GPU capacity; pods arrive one by one and never leave; after every arrival the cluster's
fragmented GPU capacity is measured. The figure at an arrival point `x` (percent of capacity)
is the mean over all arrivals whose cumulative GPU demand rounds to `x`%, as a percentage of
the cluster's GPUs.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gpucenter.core.fractional import (
    BestFitPlacer,
    FragmentationAwarePlacer,
    Placer,
    RandomPlacer,
    ShareCluster,
    ShareNode,
    ShareRequest,
    TypicalShape,
    node_fragmentation,
    typical_shapes,
)

POLICIES: tuple[str, ...] = ("random", "bestfit", "default")


@dataclass(frozen=True, slots=True)
class SharingResult:
    """Fragmentation and allocation (% of cluster GPUs) at each arrival point reached."""

    policy: str
    seed: int
    frag_pct: dict[int, float]
    alloc_pct: dict[int, float]
    failed: int


def make_placer(
    policy: str, typical: Sequence[TypicalShape], seed: int, *, packing: float | None = None
) -> Placer:
    """A placer by name; `packing` overrides the default's BestFit weight (for tuning)."""
    if policy == "random":
        return RandomPlacer(seed)
    if policy == "bestfit":
        return BestFitPlacer(seed)
    if policy == "default":
        if packing is not None:
            return FragmentationAwarePlacer(typical, seed, packing=packing)
        return FragmentationAwarePlacer(typical, seed)
    raise ValueError(f"unknown sharing policy {policy!r}; choose from {', '.join(POLICIES)}")


def arrivals(
    requests: Sequence[ShareRequest], capacity_milli: int, seed: int, tune: float
) -> list[ShareRequest]:
    """The arrival sequence: the list shuffled, then topped up by sampling to `tune` x
    capacity (stopping at the first sample that would pass it, as the artefact does)."""
    rng = random.Random(seed)
    order = list(requests)
    rng.shuffle(order)
    demand = sum(r.total_milli_gpu for r in order)
    target = tune * capacity_milli
    if demand > target:
        while demand > target and order:
            r = order.pop(rng.randrange(len(order)))
            demand -= r.total_milli_gpu
        return order
    while True:
        r = requests[rng.randrange(len(requests))]
        if demand + r.total_milli_gpu > target:
            break
        demand += r.total_milli_gpu
        order.append(r)
    return order


def replay(
    nodes: Sequence[ShareNode],
    requests: Sequence[ShareRequest],
    policy: str,
    seed: int,
    *,
    tune: float = 1.3,
    typical: Sequence[TypicalShape] | None = None,
    on_arrival: Callable[[int], None] | None = None,
    packing: float | None = None,
) -> SharingResult:
    """Place the seeded arrival sequence with `policy` and measure after every arrival."""
    shapes = tuple(typical) if typical is not None else typical_shapes(requests)
    cluster = ShareCluster(nodes)
    gpus = sum(n.gpus for n in nodes)
    capacity = cluster.total_milli_gpu
    placer = make_placer(policy, shapes, seed, packing=packing)
    memo: dict[object, float] = {}

    def frag_of(i: int) -> float:
        key = cluster.key(i)
        f = memo.get(key)
        if f is None:
            f = memo[key] = node_fragmentation(key, shapes)
        return f

    frag = sum(frag_of(i) for i in range(len(nodes)))
    arrived = 0
    failed = 0
    sums: dict[int, tuple[float, float, int]] = {}
    for k, req in enumerate(arrivals(requests, capacity, seed, tune)):
        arrived += req.total_milli_gpu
        got = placer.choose(cluster, req)
        if got is None:
            failed += 1
        else:
            i, gpu_ids = got
            frag -= frag_of(i)
            cluster.place(i, req, gpu_ids)
            frag += frag_of(i)
        point = round(arrived / gpus / 10)
        s = sums.get(point, (0.0, 0.0, 0))
        sums[point] = (s[0] + frag, s[1] + cluster.used_milli_gpu, s[2] + 1)
        if on_arrival is not None:
            on_arrival(k)
    frag_pct = {p: round(100 * f / n / 1000 / gpus, 2) for p, (f, _, n) in sums.items()}
    alloc_pct = {p: round(100 * a / n / 1000 / gpus, 2) for p, (_, a, n) in sums.items()}
    return SharingResult(policy, seed, frag_pct, alloc_pct, failed)


def at_point(result: SharingResult, point: int) -> float:
    """Fragmentation at `point`% arrival, falling back to neighbours as the artefact does."""
    if point in result.frag_pct:
        return result.frag_pct[point]
    near = [result.frag_pct[p] for p in (point - 1, point + 1) if p in result.frag_pct]
    if not near:
        raise KeyError(f"arrivals never reached {point}% of capacity")
    return sum(near) / len(near)
