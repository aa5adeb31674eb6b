"""The capacity-planning report as one HTML file a ministry official can open anywhere.

Why it looks like this: the reader compares policies ("what happens to SMEs if we reserve
4,000 GPUs?"), so each figure puts every policy on one set of axes, the report opens with
its findings in sentences, and every figure has its numbers in a table below it (the
accessible alternative, and what gets copied into a memo). Charts are Vega-Lite, drawn by
the same vendored libraries as the portal (`gpucenter/web/static/vendor/vega/`), inlined
into the file so that it needs no network and no server: readable ticks at any scale, no
overlapping labels, values on hover. Without JavaScript the tables carry everything.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

VENDOR = Path(__file__).resolve().parents[1] / "web" / "static" / "vendor" / "vega"
SCRIPTS = ("vega.min.js", "vega-lite.min.js", "vega-embed.min.js", "vega-interpreter.js")
TEXT = "#333333"
CONFIG = {
    "font": "system-ui, sans-serif",
    "axis": {"labelColor": TEXT, "titleColor": TEXT, "labelOverlap": True, "labelFontSize": 12},
    "legend": {"labelColor": TEXT, "titleColor": TEXT, "orient": "top", "labelFontSize": 12},
    "range": {"category": ["#1f5fa8", "#b3364a", "#2e7d32", "#8a5a00", "#6c4f9c", "#00707f"]},
    "view": {"stroke": None},
}
BOOT = """
document.querySelectorAll("script[data-vl-for]").forEach(function (data) {
  var el = document.getElementById(data.getAttribute("data-vl-for"));
  vegaEmbed(el, JSON.parse(data.textContent), {
    renderer: "svg", actions: false, ast: true, expr: vega.expressionInterpreter
  }).then(function () { el.setAttribute("data-chart-ready", "true"); });
});
"""
STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:62rem;margin:auto;padding:0 1rem;"
    "color:#1a1a1a;line-height:1.45}"
    "table{border-collapse:collapse;margin:.4rem 0 1.4rem}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
    "th:first-child,td:first-child{text-align:left}"
    ".chart{width:100%;max-width:56rem;min-height:17rem}.chart-panels{min-height:17rem}"
    ".warn{color:#a00}.findings li{margin:.3rem 0}"
)


_COUNTER = iter(range(1, 1_000_000))


def _embed(title: str, spec: dict[str, Any], css: str = "chart") -> str:
    """A chart's place and its specification as a JSON data block (not executed; read by
    the boot script), with "</" escaped so that no data can end the block."""
    name = f"chart-{next(_COUNTER)}"
    data = json.dumps(spec, separators=(",", ":")).replace("</", "<\\/")
    return (
        f'<div class="{css}" id="{name}" role="figure" aria-label="{html.escape(title)}"></div>'
        f'<script type="application/json" data-vl-for="{name}">{data}</script>'
    )


def _chart(title: str, spec: dict[str, Any]) -> str:
    full = {
        "description": title,
        "title": title,
        "width": "container",
        "height": 240,
        "autosize": {"type": "fit", "contains": "padding"},
        "config": CONFIG,
        **spec,
    }
    return _embed(title, full)


def over_time(title: str, y_title: str, rows: list[dict[str, Any]], percent: bool = False) -> str:
    """One line per policy over simulated hours."""
    y: dict[str, Any] = {"field": "value", "type": "quantitative", "title": y_title}
    if percent:
        y["axis"] = {"format": ".0%"}
        y["scale"] = {"domain": [0, 1]}
    spec = {
        "data": {"values": rows},
        "mark": {"type": "line", "strokeWidth": 1.5},
        "encoding": {
            "x": {"field": "hour", "type": "quantitative", "title": "simulated hours"},
            "y": y,
            "color": {"field": "policy", "type": "nominal", "title": "policy"},
            "tooltip": [
                {"field": "policy", "type": "nominal"},
                {"field": "hour", "type": "quantitative", "format": ",.1f", "title": "hour"},
                {
                    "field": "value",
                    "type": "quantitative",
                    "format": ".1%" if percent else ",.1f",
                    "title": y_title,
                },
            ],
        },
    }
    return _chart(title, spec)


def cdf(title: str, rows: list[dict[str, Any]]) -> str:
    """Completion-time distribution per applicant type, one panel per policy, log hours."""
    spec = {
        "data": {"values": rows},
        "facet": {"field": "policy", "type": "nominal", "title": None},
        "columns": 2,
        "spec": {
            "width": 300,
            "height": 200,
            "mark": {"type": "line", "interpolate": "step-after"},
            "encoding": {
                "x": {
                    "field": "hours",
                    "type": "quantitative",
                    "scale": {"type": "log"},
                    "title": "job completion time (hours, log scale)",
                },
                "y": {
                    "field": "fraction",
                    "type": "quantitative",
                    "axis": {"format": ".0%"},
                    "title": "share of jobs finished",
                },
                "color": {"field": "type", "type": "nominal", "title": "applicant type"},
                "tooltip": [
                    {"field": "type", "type": "nominal", "title": "applicant type"},
                    {"field": "hours", "type": "quantitative", "format": ",.2f"},
                    {"field": "fraction", "type": "quantitative", "format": ".0%"},
                ],
            },
        },
    }
    full = {"description": title, "title": title, "config": CONFIG, **spec}
    return _embed(title, full, css="chart-panels")


def shares(title: str, rows: list[dict[str, Any]]) -> str:
    """Delivered against entitled share per applicant type, grouped by policy."""
    spec = {
        "data": {"values": rows},
        "mark": {"type": "bar"},
        "encoding": {
            "x": {"field": "type", "type": "nominal", "title": None, "axis": {"labelAngle": 0}},
            "xOffset": {"field": "series"},
            "y": {
                "field": "share",
                "type": "quantitative",
                "axis": {"format": ".0%"},
                "title": "share of GPU-hours",
            },
            "color": {"field": "series", "type": "nominal", "title": None},
            "tooltip": [
                {"field": "type", "type": "nominal", "title": "applicant type"},
                {"field": "series", "type": "nominal", "title": " "},
                {"field": "share", "type": "quantitative", "format": ".1%"},
            ],
        },
    }
    return _chart(title, spec)


def table(rows: Sequence[Sequence[str]], caption: str = "") -> str:
    head = "".join(f'<th scope="col">{html.escape(c)}</th>' for c in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:]
    )
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def findings(runs: Sequence[dict[str, Any]]) -> str:
    """The comparison in sentences, before any figure: which policy waits least, uses the
    GPUs best, and what each applicant type waits under each."""
    if not runs:
        return ""
    items = []
    least = min(runs, key=lambda m: m["wait_h"]["all"]["mean"])
    items.append(
        f"Shortest average wait: {least['policy']} "
        f"({least['wait_h']['all']['mean']:,.2f} h; 95th percentile "
        f"{least['wait_h']['all']['p95']:,.2f} h)."
    )
    busiest = max(runs, key=lambda m: m["utilisation_mean"])
    items.append(
        f"Highest GPU utilisation: {busiest['policy']} ({busiest['utilisation_mean']:.1%} of "
        "GPUs busy on average)."
    )
    for m in runs:
        waits = ", ".join(
            f"{kind} {s['mean']:,.2f} h"
            for kind, s in sorted(m["wait_h"].items())
            if kind != "all" and s.get("count")
        )
        if waits:
            items.append(f"Under {m['policy']}, the mean wait by applicant type: {waits}.")
    return "<ul class='findings'>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>"


def document(title: str, body: str) -> str:
    """The whole page, with the chart libraries inlined (read from the vendored files)."""
    scripts = "".join(
        f"<script>{(VENDOR / name).read_text(encoding='utf-8')}</script>" for name in SCRIPTS
    )
    licences = ", ".join(
        line.split()[1] + " (" + line.split()[2] + ")"
        for line in (VENDOR / "VERSIONS.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f"{body}<p><small>Charts drawn with {html.escape(licences)}.</small></p>"
        f"{scripts}<script>{BOOT}</script></body></html>"
    )


__all__ = ["cdf", "document", "findings", "over_time", "shares", "table"]
