"""The arrival sequence of the GPU-sharing experiment: trimmed or topped up to the target."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from gpucenter.core.fractional import ShareRequest
from gpucenter.sim.sharing import arrivals


def _demand(reqs: list[ShareRequest]) -> int:
    return sum(r.gpus * r.milli_gpu for r in reqs)  # written out: GPUs x share of each


def test_top_up_counts_every_gpu_of_a_multi_gpu_pod() -> None:
    """One pod of 4 whole GPUs, 10 GPUs of target: two fit (8), a third would pass it."""
    pod = ShareRequest(1000, 0, 4, 1000)
    got = arrivals([pod], capacity_milli=10_000, seed=1, tune=1.0)
    assert got == [pod, pod]
    assert _demand(got) == 8_000


@pytest.mark.parametrize("seed", range(8))
def test_topped_up_sequence_never_passes_the_target(seed: int) -> None:
    rng = random.Random(100 + seed)
    pods = [
        ShareRequest(1000, 0, g, 1000 if g > 1 else rng.choice((250, 500, 1000)))
        for g in (rng.choice((1, 1, 2, 4, 8)) for _ in range(12))
    ]
    capacity = 64_000
    tune = 1.3
    got = arrivals(pods, capacity, seed, tune)
    # The list itself comes first, shuffled; only samples of it are added after.
    assert Counter(map(id, got[: len(pods)])) == Counter(map(id, pods))
    assert _demand(got) <= tune * capacity
    assert _demand(got) > tune * capacity - max(_demand([p]) for p in pods)


def test_a_list_above_the_target_is_trimmed_below_it() -> None:
    pods = [ShareRequest(1000, 0, 2, 1000)] * 10  # 20 GPUs asked, 10 GPUs of target
    got = arrivals(pods, capacity_milli=10_000, seed=3, tune=1.0)
    assert _demand(got) <= 10_000
    assert len(got) == 5
