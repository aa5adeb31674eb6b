"""One self-contained HTML report (no network, no server) plus JSON and CSV.

The report opens with its findings in sentences and the summary table, then compares the
policies figure by figure: utilisation, queue length and fragmentation over time, the
completion-time distribution per applicant type, delivered against entitled shares, and
the wait per applicant type (`report_html.py` draws them with the vendored Vega-Lite).
Every plotted series is also written as CSV next to the HTML, and all metrics as JSON, so
that a figure can be re-drawn or checked elsewhere.
"""

from __future__ import annotations

import csv
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gpucenter.sim import report_html


def _fmt(v: float) -> str:
    return f"{v:.3g}"


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
    with (out / "summary.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows(summary_rows(runs))
    util: list[dict[str, Any]] = []
    queue: list[dict[str, Any]] = []
    frag: list[dict[str, Any]] = []
    cdfs: list[dict[str, Any]] = []
    share_rows: list[dict[str, Any]] = []
    waits = [["policy", "applicant type", "jobs", "mean wait h", "p50", "p95", "p99"]]
    for m in runs:
        p = m["policy"]
        tl = m["timeline"]
        bin_h = tl["bin_s"] / 3600.0
        fragmented = tl.get("fragmentation") or [0.0] * len(tl["utilisation"])
        with (out / f"timeline_{p}.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["hour", "utilisation", "queued_jobs", "fragmentation"])
            for i, (u, q, f) in enumerate(
                zip(tl["utilisation"], tl["queued_jobs"], fragmented, strict=True)
            ):
                w.writerow([f"{i * bin_h:.3f}", f"{u:.5f}", f"{q:.3f}", f"{f:.5f}"])
        step = max(1, len(tl["utilisation"]) // 600)  # at most ~600 points a line
        for i in range(0, len(tl["utilisation"]), step):
            hour = round(i * bin_h, 3)
            util.append({"policy": p, "hour": hour, "value": round(tl["utilisation"][i], 4)})
            queue.append({"policy": p, "hour": hour, "value": round(tl["queued_jobs"][i], 2)})
            frag.append({"policy": p, "hour": hour, "value": round(fragmented[i], 4)})
        with (out / f"jct_cdf_{p}.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["applicant_type", "jct_h", "fraction"])
            for kind, points in m["cdf_h"].items():
                every = max(1, len(points) // 200)  # the chart needs ~200 points a line
                for n, (x, y) in enumerate(points):
                    w.writerow([kind, f"{x:.5f}", f"{y:.5f}"])
                    if x > 0 and (n % every == 0 or n == len(points) - 1):
                        cdfs.append(
                            {
                                "policy": p,
                                "type": kind,
                                "hours": round(x, 4),
                                "fraction": round(y, 4),
                            }
                        )
        with (out / f"shares_{p}.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["applicant_type", "gpu_hours", "delivered_share", "entitled_share"])
            for kind, r in m["shares"].items():
                w.writerow(
                    [
                        kind,
                        f"{r['gpu_hours']:.1f}",
                        f"{r['delivered_share']:.5f}",
                        f"{r['entitled_share']:.5f}",
                    ]
                )
                share_rows.append(
                    {"type": kind, "series": f"{p}: delivered", "share": r["delivered_share"]}
                )
        for kind, st in m["wait_h"].items():
            waits.append(
                [
                    p,
                    kind,
                    str(int(st["count"])),
                    _fmt(st["mean"]),
                    _fmt(st["p50"]),
                    _fmt(st["p95"]),
                    _fmt(st["p99"]),
                ]
            )
    for kind, r in (runs[0]["shares"] if runs else {}).items():
        share_rows.append({"type": kind, "series": "entitled", "share": r["entitled_share"]})
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        _refused_header(runs),
        "<h2>Findings</h2>",
        report_html.findings(runs),
        report_html.table(summary_rows(runs), "Each policy at a glance (hours unless marked)"),
        "<h2>How busy the GPUs were</h2>",
        report_html.over_time("GPU utilisation over time", "GPUs busy", util, percent=True),
        "<h2>How many jobs waited</h2>",
        report_html.over_time("Queued jobs over time", "jobs waiting", queue),
        "<h2>Fragmentation</h2>",
        report_html.over_time(
            "Fragmented GPUs over time (FGD's measure)", "GPUs fragmented", frag, percent=True
        ),
        "<h2>How long jobs took, by applicant type</h2>",
        report_html.cdf("Job completion time by applicant type", cdfs),
        "<h2>Shares</h2>",
        report_html.shares("Delivered against entitled share of GPU-hours", share_rows),
        "<h2>Queueing delay per applicant type</h2>",
        report_html.table(waits, "Wait before start, hours"),
    ]
    path = out / "report.html"
    path.write_text(report_html.document(title, "".join(parts)), encoding="utf-8")
    return path
