"""Charts as Vega-Lite specifications, drawn in the browser by the vendored Vega libraries.

Why a library: the hand-drawn SVG this replaces ran axis labels together, had no ticks,
printed "1.44e+03" and "0.0 0.0 0.0", and scaled a year-long burn-down to its first three
minutes. Vega-Lite (vendored under `static/vendor/vega/`, no CDN; see VERSIONS.txt there)
chooses readable ticks at any scale, drops labels that would overlap, formats dates with the
reader's month names, and shows each point's values on hover. It runs under the portal's
Content-Security-Policy through Vega's expression interpreter (no `eval`).

Each function returns a `<div>` carrying the specification as JSON in `data-vl-spec` (safe:
attribute-escaped), its title as `aria-label` for the container, and the reader's number and
date formats (from CLDR, via Babel) in `data-vl-locale`; `static/charts.js` finds these on a
page and embeds them. The page keeps a table of the same numbers as the accessible
alternative and for readers without JavaScript.

Times are shown in the portal's zone: instants are shifted to that zone's wall-clock time and
plotted on a UTC scale, so every reader sees Seoul time (the axis title names the zone).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, tzinfo
from functools import cache
from typing import Any

from babel import Locale
from babel.dates import get_day_names, get_month_names, get_period_names
from markupsafe import Markup, escape

from gpucenter import locale

PALETTE = ("#1f5fa8", "#b3364a", "#2e7d32", "#8a5a00", "#6c4f9c", "#00707f")
HEIGHT = 240
# Dark enough on white for WCAG AA (4.5:1) where Vega would draw grey text.
TEXT = "#333333"
CONFIG: dict[str, Any] = {
    "font": "system-ui, sans-serif",
    "axis": {
        "labelColor": TEXT,
        "titleColor": TEXT,
        "labelFontSize": 12,
        "titleFontSize": 12,
        "gridColor": "#e4e4e4",
        "labelOverlap": True,
        "labelFlush": True,
    },
    "legend": {"labelColor": TEXT, "titleColor": TEXT, "labelFontSize": 12, "orient": "top"},
    "title": {"color": TEXT, "fontSize": 14, "anchor": "start"},
    "range": {"category": list(PALETTE)},
    "view": {"stroke": None},
}


def _div(title: str, spec: dict[str, Any], lang: str) -> Markup:
    spec = {
        "description": title,
        "width": "container",
        "height": HEIGHT,
        "autosize": {"type": "fit", "contains": "padding"},
        "config": CONFIG,
        **spec,
    }
    return Markup(
        '<div class="chart" role="figure" aria-label="{title}" data-vl-spec="{spec}" '
        'data-vl-locale="{loc}"></div>'
    ).format(
        title=title,
        spec=json.dumps(spec, ensure_ascii=False, separators=(",", ":")),
        loc=json.dumps(chart_locale(lang), ensure_ascii=False, separators=(",", ":")),
    )


def wall_time(instant: datetime, zone: tzinfo) -> str:
    """`instant` as the wall-clock time of `zone`, written as if it were UTC: plotted on a
    UTC scale it reads as that zone's time whatever the browser's zone is."""
    aware = instant if instant.tzinfo else instant.replace(tzinfo=UTC)
    return aware.astimezone(zone).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def time_chart(
    title: str,
    series: Sequence[tuple[str, Sequence[tuple[datetime, float]]]],
    *,
    lang: str,
    zone: tzinfo,
    zone_name: str,
    y_title: str,
    domain: tuple[datetime, datetime] | None = None,
    time_title: str = "Time",
) -> Markup:
    """Lines over time, e.g. GPU-hours left against the plan. `domain` fixes the x axis
    (a burn-down spans the allocation's whole period, not just the part used so far)."""
    values = [
        {
            "t": wall_time(at, zone),
            "when": locale.format_instant(at, lang, zone),
            "series": name,
            "value": value,
        }
        for name, points in series
        for at, value in points
    ]
    x: dict[str, Any] = {
        "field": "t",
        "type": "temporal",
        "title": f"{time_title} ({zone_name})",
        "scale": {"type": "utc"},
        "axis": {"tickCount": 6, "grid": False},
    }
    if domain is not None:
        x["scale"]["domain"] = [wall_time(domain[0], zone), wall_time(domain[1], zone)]
    names = [name for name, _ in series]
    spec = {
        "data": {"values": values},
        "mark": {"type": "line", "point": {"size": 18}, "strokeWidth": 2},
        "encoding": {
            "x": x,
            "y": {
                "field": "value",
                "type": "quantitative",
                "title": y_title,
                "scale": {"zero": True, "nice": True},
            },
            "color": {"field": "series", "type": "nominal", "title": None, "sort": names},
            "strokeDash": {
                "field": "series",
                "type": "nominal",
                "title": None,
                "sort": names,
                "scale": {"range": [[1, 0], [6, 4], [2, 2]]},
            },
            "tooltip": [
                {"field": "series", "type": "nominal", "title": title},
                {"field": "when", "type": "nominal", "title": time_title},
                {"field": "value", "type": "quantitative", "title": y_title, "format": ",.2f"},
            ],
        },
    }
    return _div(title, spec, lang)


def bar_chart(
    title: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float]]],
    *,
    lang: str = "en",
    y_title: str = "",
) -> Markup:
    """Bars over categories (grouped when there are several series), e.g. GPU-hours per
    month, or delivered against available GPU-hours per site."""
    values = [
        {"label": label, "series": name, "value": float(value)}
        for name, points in series
        for label, value in zip(labels, points, strict=False)
    ]
    grouped = len(series) > 1
    encoding: dict[str, Any] = {
        "x": {
            "field": "label",
            "type": "nominal",
            "sort": list(labels),
            "title": None,
            "axis": {"labelAngle": 0, "labelLimit": 120},
        },
        "y": {
            "field": "value",
            "type": "quantitative",
            "title": y_title or (series[0][0] if len(series) == 1 else None),
            "scale": {"zero": True, "nice": True},
        },
        "color": {
            "field": "series",
            "type": "nominal",
            "title": None,
            "sort": [name for name, _ in series],
            "legend": {} if grouped else None,
        },
        "tooltip": [
            {"field": "label", "type": "nominal", "title": title},
            {"field": "series", "type": "nominal", "title": " "},
            {"field": "value", "type": "quantitative", "title": y_title or " ", "format": ",.2f"},
        ],
    }
    if grouped:
        encoding["xOffset"] = {"field": "series", "sort": [name for name, _ in series]}
    spec = {"data": {"values": values}, "mark": {"type": "bar"}, "encoding": encoding}
    return _div(title, spec, lang)


def line_chart(
    title: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None]]],
    *,
    lang: str = "en",
    y_title: str = "",
) -> Markup:
    """Lines over categories in order (labels that are not times, e.g. quarters)."""
    values = [
        {"label": label, "series": name, "value": value}
        for name, points in series
        for label, value in zip(labels, points, strict=False)
        if value is not None
    ]
    spec = {
        "data": {"values": values},
        "mark": {"type": "line", "point": True},
        "encoding": {
            "x": {"field": "label", "type": "ordinal", "sort": list(labels), "title": None},
            "y": {"field": "value", "type": "quantitative", "title": y_title or None},
            "color": {"field": "series", "type": "nominal", "title": None},
            "tooltip": [
                {"field": "label", "type": "nominal", "title": title},
                {"field": "series", "type": "nominal", "title": " "},
                {"field": "value", "type": "quantitative", "format": ",.2f", "title": " "},
            ],
        },
    }
    return _div(title, spec, lang)


@cache
def chart_locale(lang: str) -> Mapping[str, Any]:
    """The reader's number and time formats for Vega (d3's locale definitions), made from
    CLDR through Babel: Korean month and day names, AM/PM words and digit grouping."""
    code = locale.BABEL_LOCALE.get(lang, locale.BABEL_LOCALE[locale.DEFAULT_LANGUAGE])
    loc = Locale.parse(code)
    sunday_first = [6, 0, 1, 2, 3, 4, 5]  # Babel counts from Monday, d3 from Sunday
    wide = get_day_names("wide", locale=code)
    short = get_day_names("abbreviated", locale=code)
    periods = get_period_names(width="abbreviated", context="format", locale=code)
    return {
        "number": {
            "decimal": loc.number_symbols["latn"]["decimal"],
            "thousands": loc.number_symbols["latn"]["group"],
            "grouping": [3],
            "currency": ["₩", ""] if lang == "ko" else ["", " KRW"],
        },
        "time": {
            "dateTime": "%x %X",
            "date": "%Y-%m-%d",
            "time": "%H:%M:%S",
            "periods": [str(periods["am"]), str(periods["pm"])],
            "days": [str(wide[i]) for i in sunday_first],
            "shortDays": [str(short[i]) for i in sunday_first],
            "months": [str(get_month_names("wide", locale=code)[m]) for m in range(1, 13)],
            "shortMonths": [
                str(get_month_names("abbreviated", locale=code)[m]) for m in range(1, 13)
            ],
        },
    }


def heat_cells(
    busy: int, total: int, down: bool = False, labels: dict[str, str] | None = None
) -> Markup:
    """One square per GPU of a node: busy, free or down, for the operator's heat map (plain
    HTML: a grid of squares needs no chart library; the page's table gives the numbers).

    `labels` gives the (translated) words for each state, shown as the square's tooltip.
    """
    words = labels or {}
    cells = []
    for i in range(total):
        state = "down" if down else ("busy" if i < busy else "free")
        label = escape(words.get(state, state))
        cells.append(f'<span class="gpu {state}" title="{label}"></span>')
    return Markup("".join(cells))
