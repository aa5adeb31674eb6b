"""The pure accounting rules, table-driven: no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpucenter.accounting.budget import newly_crossed, project_exhaustion
from gpucenter.accounting.rates import RateCard, fiscal_year, month_range, value
from gpucenter.accounting.report import Dimension, Fact, aggregate, percentile
from gpucenter.accounting.useit import UsePlan, assess
from gpucenter.domain.errors import ValidationError

T = datetime(2026, 1, 1, tzinfo=UTC)

CROSSINGS = {
    "nothing below half": (0.49, set(), []),
    "exactly half": (0.5, set(), [50]),
    "a jump raises every threshold passed": (1.05, set(), [50, 80, 100]),
    "already raised stays quiet": (0.85, {50, 80}, []),
    "the next one only": (0.85, {50}, [80]),
}


@pytest.mark.parametrize("name", CROSSINGS)
def test_thresholds(name: str) -> None:
    fraction, already, expected = CROSSINGS[name]
    assert newly_crossed(fraction, already) == expected


@given(st.lists(st.floats(min_value=0, max_value=2), min_size=1, max_size=30))
def test_each_threshold_is_raised_at_most_once_whatever_the_path(fractions: list[float]) -> None:
    raised: list[int] = []
    for f in fractions:
        raised += newly_crossed(f, set(raised))
    assert len(raised) == len(set(raised))


def test_valuation_uses_the_fiscal_year_card_and_weight() -> None:
    book = {(2026, "b200"): RateCard(2026, "b200", 7000.0, 2.0)}
    v = value(7200.0, "b200", 2026, book)
    assert (v.gpu_hours, v.normalised_gpu_hours, v.value_krw) == (2.0, 4.0, 14000.0)
    assert value(3600.0, "b200", 2025, book).value_krw == 0.0
    assert fiscal_year(datetime(2026, 12, 31, 23, tzinfo=UTC)) == 2026
    with pytest.raises(ValidationError):
        RateCard(2026, "h100", -1.0)
    assert month_range("2025-11", "2026-02") == ["2025-11", "2025-12", "2026-01", "2026-02"]


def test_aggregation_prices_each_month_and_type_separately() -> None:
    book = {
        (2025, "h100"): RateCard(2025, "h100", 1000.0),
        (2026, "h100"): RateCard(2026, "h100", 2000.0),
    }

    def fact(month: str, secs: float) -> Fact:
        return Fact(month, "p", "sme", "o", "(none)", "s", "h100", "x", "(none)", secs, 1)

    (row,) = aggregate(
        [fact("2025-12", 3600.0), fact("2026-01", 3600.0)], [Dimension.GPU_TYPE], book
    )
    assert (row.gpu_hours, row.value_krw, row.entries) == (2.0, 3000.0, 2)


def test_exhaustion_projection() -> None:
    assert project_exhaustion(10.0, 2.0, T, T + timedelta(days=30)) == T + timedelta(days=5)
    assert project_exhaustion(10.0, 2.0, T, T + timedelta(days=3)) is None
    assert project_exhaustion(0.0, 0.0, T, T + timedelta(days=3)) == T


def test_use_it_or_lose_it() -> None:
    plan = UsePlan("allocation", 1, 1, 1000 * 3600.0, T, T + timedelta(days=100))
    day50 = T + timedelta(days=50)
    idle = assess(plan, 100 * 3600.0, day50)  # 20% of the 500 GPU-hours planned by now
    assert idle.flagged and idle.ratio == pytest.approx(0.2)
    assert 0 < idle.reclaimable_gpu_hours <= 900
    assert not assess(plan, 400 * 3600.0, day50).flagged
    assert not assess(plan, 0.0, T + timedelta(days=2)).flagged  # still in its first week
    assert assess(plan, 400 * 3600.0, day50, mean_utilisation_pct=10.0).flagged


def test_percentile_nearest_rank() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([5.0], 95) == 5.0


def test_slurm_gpu_tres_and_the_sampler() -> None:
    from gpucenter.dispatch.gpuutil import UtilisationSampler, parse_slurm_gpuutil

    assert parse_slurm_gpuutil("cpu=00:01:00,gres/gpumem=1024M,gres/gpuutil=37") == 37.0
    assert parse_slurm_gpuutil("cpu=00:01:00,mem=1G") is None
    readings = iter([10.0, 30.0, 50.0, 70.0])
    sampler = UtilisationSampler(read=lambda index: next(readings))
    sampler.start(7, [0, 1])
    sampler.sample()
    sampler.sample()
    assert sampler.finish(7) == (40.0, 4)
    assert sampler.finish(7) is None
