"""Bar charts as SVG, drawn on the server: no JavaScript library, nothing to download.

The markup uses presentation attributes only (no `style`), so the console's
Content-Security-Policy needs no 'unsafe-inline'. Each chart carries a title and a
description for screen readers, and each bar its value in a <title> (a tooltip).

Pure module: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from html import escape

WIDTH = 420
HEIGHT = 180
LEFT = 78  # room for the axis labels
BOTTOM = 22
TOP = 8


def _nice_max(value: float) -> float:
    """The axis top: 1, 2 or 5 times a power of ten, at least `value`."""
    if value <= 0:
        return 1.0
    power = 1.0
    while power * 10 <= value:
        power *= 10
    while power > value:
        power /= 10
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power  # pragma: no cover


def bar_chart(
    title: str,
    points: Sequence[tuple[str, float]],
    fmt: Callable[[float], str] = lambda v: f"{v:,.0f}",
) -> str:
    """A captioned SVG bar chart of (label, value) points, left to right."""
    plot_w = WIDTH - LEFT - 8
    plot_h = HEIGHT - TOP - BOTTOM
    top = _nice_max(max((v for _, v in points), default=0.0))
    n = max(len(points), 1)
    slot = plot_w / n
    bar_w = max(1.0, slot * 0.8)
    total = sum(v for _, v in points)
    desc = f"{len(points)} bars, total {fmt(total)}" if points else "no data"
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="t-{slug} d-{slug}" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="t-{slug}">{escape(title)}</title>',
        f'<desc id="d-{slug}">{escape(desc)}</desc>',
    ]
    for frac in (0.0, 0.5, 1.0):
        y = TOP + plot_h * (1 - frac)
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - 8}" y2="{y:.1f}" class="grid"/>')
        parts.append(
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="axis">'
            f"{escape(fmt(top * frac))}</text>"
        )
    label_every = max(1, n // 8)
    for i, (label, value) in enumerate(points):
        h = plot_h * value / top
        x = LEFT + i * slot + (slot - bar_w) / 2
        y = TOP + plot_h - h
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" class="bar">'
            f"<title>{escape(label)}: {escape(fmt(value))}</title></rect>"
        )
        if i % label_every == 0:
            parts.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle" '
                f'class="axis">{escape(label)}</text>'
            )
    if not points:
        parts.append(
            f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" class="axis">'
            "No requests in this period</text>"
        )
    parts.append("</svg>")
    return f"<figure><figcaption>{escape(title)}</figcaption>{''.join(parts)}</figure>"
