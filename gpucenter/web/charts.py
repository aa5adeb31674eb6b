"""Charts drawn on the server as inline SVG: no JavaScript library, nothing to download.

A burn-down, a usage-by-month bar chart and a heat map are all a programme manager or an
operator needs to read at a glance; SVG keeps them sharp on a laptop and a tablet, printable,
and readable by screen readers through a title and a table fallback the page supplies.
Functions return SVG markup (a `Markup`, safe to insert) from plain numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

WIDTH = 640
HEIGHT = 220
PAD_LEFT = 56
PAD_BOTTOM = 28
PAD_TOP = 30  # room for the legend row above the plot
PAD_RIGHT = 12
PALETTE = ("#1f5fa8", "#d1495b", "#2e8540", "#edae49", "#6c4f9c", "#00798c")


def _scale(values: Sequence[float]) -> float:
    top = max((v for v in values if v is not None), default=0.0)
    return top if top > 0 else 1.0


def _ticks(top: float) -> list[float]:
    return [top * i / 4 for i in range(5)]


def _fmt(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if value >= 1_000:
        return f"{value / 1_000:.1f}k"
    return f"{value:.0f}" if value >= 10 or value == 0 else f"{value:.1f}"


def _legend(names: Sequence[str]) -> str:
    """Swatches and names in one row above the plot, where no bar or line can cover them."""
    parts = []
    x = PAD_LEFT
    for index, name in enumerate(names):
        colour = PALETTE[index % len(PALETTE)]
        parts.append(
            f'<rect x="{x}" y="8" width="12" height="12" fill="{colour}"/>'
            f'<text x="{x + 16}" y="18" font-size="12">{escape(name)}</text>'
        )
        x += 28 + 7 * len(name) + (7 * sum(1 for ch in name if ord(ch) > 0x2E80))
    return "".join(parts)


def _frame(title: str, top: float, body: str, labels: Sequence[str]) -> Markup:
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for tick in _ticks(top):
        y = PAD_TOP + plot_h - plot_h * tick / top
        parts.append(
            f'<line x1="{PAD_LEFT}" x2="{WIDTH - PAD_RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
            'stroke="#ddd"/>'
            f'<text x="{PAD_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" '
            f'font-size="11">{_fmt(tick)}</text>'
        )
    step = max(1, len(labels) // 8)
    for i, label in enumerate(labels):
        if i % step:
            continue
        x = PAD_LEFT + (plot_w * (i + 0.5) / max(1, len(labels)))
        parts.append(
            f'<text x="{x:.1f}" y="{HEIGHT - 8}" text-anchor="middle" '
            f'font-size="11">{escape(label)}</text>'
        )
    parts.append(body)
    parts.append("</svg>")
    return Markup("".join(parts))


def line_chart(
    title: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None]]],
) -> Markup:
    """Lines over shared x labels, e.g. budget left (actual) against the plan (burn-down)."""
    every = [v for _, values in series for v in values if v is not None]
    top = _scale(every)
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    n = max(1, len(labels))
    body: list[str] = []
    for index, (name, values) in enumerate(series):
        colour = PALETTE[index % len(PALETTE)]
        points = [
            f"{PAD_LEFT + plot_w * (i + 0.5) / n:.1f},{PAD_TOP + plot_h - plot_h * v / top:.1f}"
            for i, v in enumerate(values)
            if v is not None
        ]
        dash = ' stroke-dasharray="6 4"' if index else ""
        body.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2"{dash} '
            f'points="{" ".join(points)}"><title>{escape(name)}</title></polyline>'
        )
    body.append(_legend([name for name, _ in series]))
    return _frame(title, top, "".join(body), labels)


def bar_chart(
    title: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float]]],
) -> Markup:
    """Grouped bars over x labels, e.g. GPU-hours per month by applicant type."""
    every = [v for _, values in series for v in values]
    top = _scale(every)
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    n = max(1, len(labels))
    groups = max(1, len(series))
    slot = plot_w / n
    bar = slot * 0.8 / groups
    body: list[str] = []
    for s, (name, values) in enumerate(series):
        colour = PALETTE[s % len(PALETTE)]
        for i, value in enumerate(values):
            h = plot_h * value / top
            x = PAD_LEFT + slot * i + slot * 0.1 + bar * s
            body.append(
                f'<rect x="{x:.1f}" y="{PAD_TOP + plot_h - h:.1f}" width="{bar:.1f}" '
                f'height="{h:.1f}" fill="{colour}"><title>{escape(name)} · '
                f"{escape(labels[i] if i < len(labels) else '')}: {_fmt(value)}</title></rect>"
            )
    if len(series) > 1:
        body.append(_legend([name for name, _ in series]))
    return _frame(title, top, "".join(body), labels)


def heat_cells(
    busy: int, total: int, down: bool = False, labels: dict[str, str] | None = None
) -> Markup:
    """One square per GPU of a node: busy, free or down, for the operator's heat map.

    `labels` gives the (translated) words for each state, shown as the square's tooltip.
    """
    words = labels or {}
    cells = []
    for i in range(total):
        state = "down" if down else ("busy" if i < busy else "free")
        label = escape(words.get(state, state))
        cells.append(f'<span class="gpu {state}" title="{label}"></span>')
    return Markup("".join(cells))
