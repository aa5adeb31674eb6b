"""Fractional (GPU-sharing) placement: the measure, the placers, the replay protocol."""

from __future__ import annotations

import pytest

from gpucenter.core.fractional import (
    BestFitPlacer,
    FragmentationAwarePlacer,
    RandomPlacer,
    ShareCluster,
    ShareNode,
    ShareRequest,
    cluster_fragmentation,
    node_fragmentation,
    typical_shapes,
)
from gpucenter.sim.sharing import at_point, replay


def test_fragmentation_counts_what_typical_requests_cannot_use() -> None:
    typical = (((1000, 500, 1, frozenset()), 1.0),)
    # GPUs with 800 and 300 milli left: the 300 cannot host a half-GPU request.
    assert node_fragmentation(("T4", 8000, (800, 300)), typical) == 300
    # Not enough CPU: everything idle is fragmented.
    assert node_fragmentation(("T4", 500, (800, 300)), typical) == 1100
    # Wrong model: the same.
    only_v100 = (((1000, 500, 1, frozenset({"V100"})), 1.0),)
    assert node_fragmentation(("T4", 8000, (1000,)), only_v100) == 1000


def test_typical_shapes_cut_at_popularity() -> None:
    reqs = [ShareRequest(1000, 0, 1, 1000)] * 90 + [ShareRequest(2000, 0, 1, 500)] * 10
    shapes = typical_shapes(reqs, popularity=0.8)
    assert len(shapes) == 1 and shapes[0][1] == 1.0


def test_request_validation() -> None:
    with pytest.raises(ValueError):
        ShareRequest(1000, 0, 2, 500)
    with pytest.raises(ValueError):
        ShareRequest(1000, 0, 1, 0)


def _cluster() -> list[ShareNode]:
    return [ShareNode(f"n{i}", "T4", 2, 16_000, 64_000) for i in range(4)]


@pytest.mark.parametrize("placer", ["random", "bestfit", "default"])
def test_placers_never_overcommit_and_are_seeded(placer: str) -> None:
    reqs = [ShareRequest(2000, 1000, 1, m) for m in (1000, 500, 250, 750, 500)] * 4
    typical = typical_shapes(reqs)

    def run(seed: int) -> list[object]:
        c = ShareCluster(_cluster())
        p = {
            "random": RandomPlacer(seed),
            "bestfit": BestFitPlacer(seed),
            "default": FragmentationAwarePlacer(typical, seed),
        }[placer]
        out: list[object] = []
        for r in reqs:
            got = p.choose(c, r)
            out.append(got)
            if got is not None:
                c.place(got[0], r, got[1])
        assert all(v >= 0 for left in c.gpu_left for v in left)
        assert all(v >= 0 for v in c.cpu_left)
        return out

    assert run(1) == run(1)


def test_best_fit_shares_a_gpu_before_opening_a_new_one() -> None:
    c = ShareCluster(_cluster())
    p = BestFitPlacer(0)
    r = ShareRequest(1000, 0, 1, 400)
    a = p.choose(c, r)
    assert a is not None
    c.place(a[0], r, a[1])
    b = p.choose(c, r)
    assert b is not None and b == a


def test_default_fragments_less_than_random_on_a_mixed_workload() -> None:
    nodes = [ShareNode(f"n{i}", "G", 8, 96_000, 400_000) for i in range(40)]
    reqs = (
        [ShareRequest(8000, 0, 1, 1000)] * 50
        + [ShareRequest(4000, 0, 1, 500)] * 30
        + [ShareRequest(4000, 0, 1, 300)] * 20
        + [ShareRequest(12_000, 0, 0, 0)] * 10
    )
    frag = {p: at_point(replay(nodes, reqs, p, seed=1), 100) for p in ("random", "default")}
    assert frag["default"] < frag["random"]
    c = ShareCluster(nodes)
    assert cluster_fragmentation(c, typical_shapes(reqs)) > 0
