"""One self-contained HTML report (inline SVG, no scripts, no network) plus JSON and CSV.

Plots: utilisation and queue length over time, JCT CDF per applicant type, delivered versus
entitled shares. Every plotted series is also written as CSV next to the HTML, and all
metrics as JSON, so that a figure can be re-drawn or checked elsewhere.
"""

from __future__ import annotations

import csv
import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf")
W, H, PAD = 640, 260, 40


def _svg_lines(
    title: str,
    series: Sequence[tuple[str, Sequence[tuple[float, float]]]],
    xlabel: str,
    ylabel: str,
    log_x: bool = False,
) -> str:
    pts = [p for _, s in series for p in s if math.isfinite(p[0]) and math.isfinite(p[1])]
    if not pts:
        return f"<h3>{html.escape(title)}</h3><p>no data</p>"

    def fx(x: float) -> float:
        return math.log10(max(x, 1e-3)) if log_x else x

    xs = [fx(p[0]) for p in pts]
    ys = [p[1] for p in pts]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = 0.0, max(ys) * 1.05 if max(ys) > 0 else 1.0
    out = [f'<h3>{html.escape(title)}</h3><svg width="{W}" height="{H}" role="img">']
    out.append(
        f'<rect x="{PAD}" y="5" width="{W - PAD - 5}" height="{H - PAD - 5}" '
        'fill="none" stroke="#999"/>'
    )
    for n, (name, s) in enumerate(series):
        path = " ".join(
            f"{PAD + (fx(x) - x0) / (x1 - x0) * (W - PAD - 5):.1f},"
            f"{H - PAD - (y - y0) / (y1 - y0) * (H - PAD - 10):.1f}"
            for x, y in s
            if math.isfinite(x) and math.isfinite(y)
        )
        c = _COLOURS[n % len(_COLOURS)]
        out.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{path}"/>')
        out.append(
            f'<text x="{PAD + 8}" y="{20 + 14 * n}" fill="{c}" font-size="12">'
            f"{html.escape(name)}</text>"
        )
    xl = f"{xlabel} ({'log, ' if log_x else ''}{_fmt(10**x0 if log_x else x0)}"
    xl += f" to {_fmt(10**x1 if log_x else x1)})"
    out.append(f'<text x="{PAD}" y="{H - 12}" font-size="12">{html.escape(xl)}</text>')
    out.append(
        f'<text x="2" y="14" font-size="12">{html.escape(ylabel)} (max {_fmt(y1)})</text></svg>'
    )
    return "".join(out)


def _svg_bars(title: str, rows: Sequence[tuple[str, float, float]]) -> str:
    if not rows:
        return f"<h3>{html.escape(title)}</h3><p>no data</p>"
    top = max(max(d, e) for _, d, e in rows) or 1.0
    bw = (W - PAD) / len(rows)
    out = [f'<h3>{html.escape(title)}</h3><svg width="{W}" height="{H}" role="img">']
    for n, (name, d, e) in enumerate(rows):
        x = PAD + n * bw
        for k, (v, c) in enumerate(((d, _COLOURS[0]), (e, _COLOURS[3]))):
            h = v / top * (H - PAD - 20)
            out.append(
                f'<rect x="{x + 4 + k * bw * 0.4:.1f}" y="{H - PAD - h:.1f}" '
                f'width="{bw * 0.38:.1f}" height="{h:.1f}" fill="{c}"/>'
            )
        out.append(
            f'<text x="{x + 4:.1f}" y="{H - PAD + 14}" font-size="11">{html.escape(name)}</text>'
        )
    out.append(
        f'<text x="{PAD}" y="14" font-size="12" fill="{_COLOURS[0]}">delivered</text>'
        f'<text x="{PAD + 80}" y="14" font-size="12" fill="{_COLOURS[3]}">entitled</text>'
        "</svg>"
    )
    return "".join(out)


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def _table(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:]
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def summary_rows(runs: Sequence[dict[str, Any]]) -> list[list[str]]:
    """One row per policy: the figures a programme manager compares first."""
    rows = [
        [
            "policy",
            "jobs",
            "mean JCT h",
            "p95 JCT h",
            "mean wait h",
            "p99 wait h",
            "utilisation",
            "fragmentation",
            "makespan h",
            "Jain (shares)",
            "preemptions",
        ]
    ]
    for m in runs:
        rows.append(
            [
                m["policy"],
                str(m["finished"]),
                _fmt(m["jct_h"]["all"]["mean"]),
                _fmt(m["jct_h"]["all"]["p95"]),
                _fmt(m["wait_h"]["all"]["mean"]),
                _fmt(m["wait_h"]["all"]["p99"]),
                f"{100 * m['utilisation_mean']:.1f}%",
                f"{100 * m.get('fragmentation_mean', 0.0):.1f}%",
                _fmt(m["makespan_h"]),
                _fmt(m["fairness"]["jain_share_normalised_gpu_hours"]),
                str(m["preemptions"]),
            ]
        )
    return rows


def _refused_header(runs: Sequence[dict[str, Any]]) -> str:
    """A warning at the top of the report when jobs of the trace were refused (too wide for
    the cluster, or of a GPU type it lacks): they are in no figure below."""
    refused: list[str] = runs[0].get("refused", []) if runs else []
    if not refused:
        return ""
    items = "".join(f"<li>{html.escape(r)}</li>" for r in refused[:50])
    more = f"<li>... and {len(refused) - 50} more</li>" if len(refused) > 50 else ""
    return (
        f"<p class='warn'><strong>{len(refused)} job(s) refused</strong>: they can never run "
        f"on this cluster and are left out of every figure.</p><ul>{items}{more}</ul>"
    )


def write_report(runs: Sequence[dict[str, Any]], out_dir: str | Path, title: str) -> Path:
    """Write report.html, metrics.json and one CSV per figure into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(list(runs), indent=1, default=float))
    parts = [f"<h1>{html.escape(title)}</h1>", _refused_header(runs), _table(summary_rows(runs))]
    with (out / "summary.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows(summary_rows(runs))
    for m in runs:
        p = m["policy"]
        tl = m["timeline"]
        bin_h = tl["bin_s"] / 3600.0
        util = [(i * bin_h, u) for i, u in enumerate(tl["utilisation"])]
        queue = [(i * bin_h, q) for i, q in enumerate(tl["queued_jobs"])]
        with (out / f"timeline_{p}.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["hour", "utilisation", "queued_jobs", "fragmentation"])
            frag = tl.get("fragmentation") or [0.0] * len(util)
            for (h, u), (_, q), f in zip(util, queue, frag, strict=True):
                w.writerow([f"{h:.3f}", f"{u:.5f}", f"{q:.3f}", f"{f:.5f}"])
        with (out / f"jct_cdf_{p}.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["applicant_type", "jct_h", "fraction"])
            for kind, cdf in m["cdf_h"].items():
                for x, y in cdf:
                    w.writerow([kind, f"{x:.5f}", f"{y:.5f}"])
        shares = m["shares"]
        with (out / f"shares_{p}.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["applicant_type", "gpu_hours", "delivered_share", "entitled_share"])
            for kind, r in shares.items():
                w.writerow(
                    [
                        kind,
                        f"{r['gpu_hours']:.1f}",
                        f"{r['delivered_share']:.5f}",
                        f"{r['entitled_share']:.5f}",
                    ]
                )
        wait_rows = [["applicant type", "jobs", "mean wait h", "p50", "p95", "p99"]]
        for kind, s in m["wait_h"].items():
            wait_rows.append(
                [
                    kind,
                    str(int(s["count"])),
                    _fmt(s["mean"]),
                    _fmt(s["p50"]),
                    _fmt(s["p95"]),
                    _fmt(s["p99"]),
                ]
            )
        parts.append(f"<h2>{html.escape(p)}</h2>")
        parts.append(
            _svg_lines(
                "GPU utilisation over time", [("utilisation", util)], "hours", "fraction of GPUs"
            )
        )
        parts.append(_svg_lines("Queued jobs over time", [("queued", queue)], "hours", "jobs"))
        parts.append(
            _svg_lines(
                "Fragmented GPUs over time (FGD's measure)",
                [
                    (
                        "fragmented",
                        [(i * bin_h, f) for i, f in enumerate(tl.get("fragmentation", []))],
                    )
                ],
                "hours",
                "fraction of GPUs",
            )
        )
        parts.append(
            _svg_lines(
                "JCT CDF per applicant type",
                [(k, v) for k, v in m["cdf_h"].items()],
                "JCT hours",
                "fraction of jobs",
                log_x=True,
            )
        )
        parts.append(
            _svg_bars(
                "Delivered vs entitled share of GPU-hours",
                [(k, r["delivered_share"], r["entitled_share"]) for k, r in shares.items()],
            )
        )
        parts.append("<h3>Queueing delay per applicant type</h3>" + _table(wait_rows))
    style = (
        "body{font-family:sans-serif;max-width:980px;margin:auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 6px}"
        ".warn{color:#a00}"
    )
    doc = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title><style>{style}</style></head><body>{''.join(parts)}</body></html>"
    )
    path = out / "report.html"
    path.write_text(doc, encoding="utf-8")
    return path
