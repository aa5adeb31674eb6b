"""Edges of the pure accounting rules that the table tests left open (found by mutation
testing, bench/mutation.py): tolerances, month and year boundaries, messages, the XLSX parts."""

from __future__ import annotations

import io
import json
import os
import time
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from xml.etree import ElementTree

import pytest

from gpucenter.accounting.budget import newly_crossed, project_exhaustion
from gpucenter.accounting.export import Format, render, to_json, to_xlsx
from gpucenter.accounting.rates import RateCard, fiscal_year, month_bounds, month_range
from gpucenter.accounting.report import percentile, shares
from gpucenter.accounting.useit import UsePlan, assess, pro_rata
from gpucenter.domain.errors import ValidationError

T = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_fraction_within_the_tolerance_of_a_threshold_crosses_it() -> None:
    assert newly_crossed((50 - 1e-9) / 100, set()) == [50]
    assert newly_crossed(0.4999, set()) == []


def test_less_than_one_gpu_hour_left_is_not_exhausted_yet() -> None:
    far = T + timedelta(days=365)
    assert project_exhaustion(0.5, 1.0, T, far) == T + timedelta(hours=12)
    assert project_exhaustion(0.0, 1.0, T, far) == T


@pytest.fixture
def seoul_local_time() -> Iterator[None]:
    """The process's local time zone set to Korea's, restored afterwards."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Seoul"
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()


def test_the_fiscal_year_is_the_utc_year_whatever_the_local_zone(seoul_local_time: None) -> None:
    # 20:00 UTC on 31 December is already 1 January in Seoul.
    assert fiscal_year(datetime(2026, 12, 31, 20, tzinfo=UTC)) == 2026
    assert fiscal_year(datetime(2026, 12, 31, 20)) == 2026  # naive means UTC


def test_december_ends_at_the_next_new_year_in_utc() -> None:
    start, end = month_bounds("2026-12")
    assert (start, end) == (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    assert end.tzinfo is UTC
    assert month_bounds("2026-02")[1] == datetime(2026, 3, 1, tzinfo=UTC)


@pytest.mark.parametrize("bad", ["2026-13", "2026-00", "2026-1", "2026/01"])
def test_month_labels_outside_the_calendar_are_refused(bad: str) -> None:
    with pytest.raises(ValidationError) as err:
        month_range(bad, "2026-12")
    assert err.value.field == "month"
    assert month_range("2026-11", "2027-02") == ["2026-11", "2026-12", "2027-01", "2027-02"]


RATE_ERRORS = {
    "negative price": (dict(krw_per_gpu_hour=-1.0), "krw_per_gpu_hour", "must not be negative"),
    "zero weight": (dict(billing_weight=0.0), "billing_weight", "must be more than 0"),
    "year too early": (
        dict(fiscal_year=1999),
        "fiscal_year",
        "must be a year between 2000 and 2100",
    ),
    "year too late": (
        dict(fiscal_year=2101),
        "fiscal_year",
        "must be a year between 2000 and 2100",
    ),
}


@pytest.mark.parametrize("name", RATE_ERRORS)
def test_rate_card_refusals_name_the_field_and_the_rule(name: str) -> None:
    changes, field, message = RATE_ERRORS[name]
    kw: dict[str, object] = dict(fiscal_year=2026, gpu_type="h100", krw_per_gpu_hour=1000.0)
    kw.update(changes)
    with pytest.raises(ValidationError) as err:
        RateCard(**kw)  # type: ignore[arg-type]
    assert (err.value.field, err.value.message) == (field, message)


def test_rate_cards_accept_the_ends_of_the_year_range() -> None:
    assert RateCard(2000, "h100", 0.0).fiscal_year == 2000
    assert RateCard(2100, "h100", 0.0).fiscal_year == 2100


def test_the_100th_percentile_is_the_largest_value() -> None:
    values = [float(v) for v in range(1, 203)]
    assert percentile(values, 100) == 202.0
    assert percentile(values, 50) == 101.0


def test_share_rows_carry_the_delivered_hours() -> None:
    (row,) = shares({"startup": 30.0, "university": 70.0}, [("s", ["startup"], 0.3, None)])
    assert row.delivered_gpu_hours == 30.0
    assert row.delivered_share == pytest.approx(0.3)


PLAN = UsePlan("allocation", 7, 42, 1000 * 3600.0, T, T + timedelta(days=100))


def test_nothing_is_expected_before_an_award_starts() -> None:
    assert pro_rata(PLAN, T) == 0.0
    assert pro_rata(PLAN, T - timedelta(days=1)) == 0.0
    got = assess(PLAN, 0.0, T)
    assert got.ratio == 1.0 and not got.flagged


def test_an_award_on_track_has_nothing_reclaimable() -> None:
    # Half-way, 80% of the pro-rata plan used: above the 50% threshold, so not flagged.
    got = assess(PLAN, 400 * 3600.0, T + timedelta(days=50))
    assert not got.flagged and got.reason == ""
    assert got.reclaimable_gpu_hours == 0.0
    assert (got.kind, got.id, got.project_id) == ("allocation", 7, 42)
    assert got.planned_gpu_hours == pytest.approx(500.0)
    assert got.used_gpu_hours == pytest.approx(400.0)


def test_a_flagged_award_says_why_and_what_can_be_reclaimed() -> None:
    # Half-way, 100 of 500 planned GPU-hours used (20%): 900 left, of which the 20% pace
    # would still use 0.2 x 500 = 100 in the second half; 800 are reclaimable.
    got = assess(PLAN, 100 * 3600.0, T + timedelta(days=50))
    assert got.flagged
    assert got.reason == "used 20% of the pro-rata plan (threshold 50%)"
    assert got.reclaimable_gpu_hours == pytest.approx(800.0)
    assert got.project_id == 42


def _parts(blob: bytes) -> dict[str, ElementTree.Element]:
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        return {name: ElementTree.fromstring(zf.read(name)) for name in zf.namelist()}


def test_xlsx_parts_follow_the_open_packaging_conventions() -> None:
    """Names and namespaces as ECMA-376 spells them (XML is case-sensitive): a reader that
    follows the standard finds every part, and numbers are numbers, not text."""
    blob = render([{"org": "가나다", "hours": 12.5, "jobs": 3, "note": None}], Format.XLSX, "usage")
    parts = _parts(blob)
    pkg = "http://schemas.openxmlformats.org/package/2006"
    rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    types = parts["[Content_Types].xml"]
    assert types.tag == f"{{{pkg}/content-types}}Types"
    defaults = {
        d.get("Extension"): d.get("ContentType")
        for d in types.iter(f"{{{pkg}/content-types}}Default")
    }
    assert defaults == {
        "rels": "application/vnd.openxmlformats-package.relationships+xml",
        "xml": "application/xml",
    }
    overrides = {
        o.get("PartName"): o.get("ContentType")
        for o in types.iter(f"{{{pkg}/content-types}}Override")
    }
    assert overrides["/xl/worksheets/sheet1.xml"] == (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"
    )
    (root_rel,) = parts["_rels/.rels"].iter(f"{{{pkg}/relationships}}Relationship")
    assert root_rel.get("Type") == f"{rel}/officeDocument"
    (sheet,) = parts["xl/workbook.xml"].iter(f"{{{main}}}sheet")
    assert sheet.get("name") == "usage"
    assert sheet.get(f"{{{rel}}}id") == "rId1"
    cells = {c.get("r"): c for c in parts["xl/worksheets/sheet1.xml"].iter(f"{{{main}}}c")}
    assert cells["B2"].get("t") is None and cells["B2"].findtext(f"{{{main}}}v") == "12.5"
    assert cells["C2"].findtext(f"{{{main}}}v") == "3"
    assert cells["A2"].get("t") == "inlineStr"
    assert "".join(cells["A2"].itertext()) == "가나다"
    assert "".join(cells["D2"].itertext()) == ""


def test_xlsx_of_records_with_different_keys_leaves_gaps_blank() -> None:
    parts = _parts(to_xlsx([{"a": 1}, {"b": "x"}]))
    main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    cells = {
        c.get("r"): "".join(c.itertext())
        for c in parts["xl/worksheets/sheet1.xml"].iter(f"{{{main}}}c")
    }
    assert cells == {"A1": "a", "B1": "b", "A2": "1", "B2": "", "A3": "", "B3": "x"}


def test_json_keeps_korean_text_readable() -> None:
    assert to_json([{"org": "가나다"}]).decode("utf-8") == '[\n {\n  "org": "가나다"\n }\n]'
    assert json.loads(to_json([{"at": T}]))[0]["at"] == str(T)
