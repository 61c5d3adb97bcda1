"""Small static SVG charts for the printable report: percentile bands, a median line, points,
event markers and a target band. Static so that a printed or archived report needs no
script (and passes the dashboard's content security policy)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import NamedTuple

WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 760, 220, 56, 12, 10, 34


class Band(NamedTuple):
    x: Sequence[float]
    low: Sequence[float]
    high: Sequence[float]
    fill: str


class Line(NamedTuple):
    x: Sequence[float]
    y: Sequence[float]
    stroke: str
    dash: bool = False


class Points(NamedTuple):
    x: Sequence[float]
    y: Sequence[float]
    fill: str


def _ticks(low: float, high: float, n: int = 5) -> list[float]:
    if high <= low:
        return [low]
    raw = (high - low) / n
    magnitude = 10 ** int(f"{raw:e}".split("e")[1])
    step = min((m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw), default=raw)
    first = step * -(-low // step)
    return [first + k * step for k in range(int((high - first) / step) + 1)]


def chart(bands: Sequence[Band] = (), lines: Sequence[Line] = (), points: Sequence[Points] = (), markers: Sequence[float] = (),
          target: tuple[float, float] | None = None, x_range: tuple[float, float] | None = None, y_label: str = "",
          x_labels: dict[float, str] | None = None, title: str = "") -> str:
    """An SVG chart; x in the caller's units (e.g. h since the first dose), ``x_labels`` the
    tick labels to show (position -> text), ``markers`` vertical ticks at the bottom (doses)."""
    xs = [v for b in bands for v in b.x] + [v for l in lines for v in l.x] + [v for p in points for v in p.x] + list(markers)
    ys = ([v for b in bands for v in (*b.low, *b.high)] + [v for l in lines for v in l.y] + [v for p in points for v in p.y]
          + (list(target) if target else []))
    if not xs or not ys:
        return f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{html.escape(title)}"><text x="{LEFT}" y="{HEIGHT / 2}">no data</text></svg>'
    x0, x1 = x_range or (min(xs), max(xs))
    x1 = x1 if x1 > x0 else x0 + 1
    y0, y1 = 0.0, max(ys) * 1.08 or 1.0
    sx = lambda x: LEFT + (x - x0) / (x1 - x0) * (WIDTH - LEFT - RIGHT)
    sy = lambda y: HEIGHT - BOTTOM - (y - y0) / (y1 - y0) * (HEIGHT - TOP - BOTTOM)
    out = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{html.escape(title)}">']
    if target:
        top, bottom = sy(min(target[1], y1)), sy(max(target[0], y0))
        out.append(f'<rect x="{LEFT}" y="{top:.1f}" width="{WIDTH - LEFT - RIGHT}" height="{max(bottom - top, 0):.1f}" fill="#2e7d32" fill-opacity="0.10"/>')
    for t in _ticks(y0, y1):
        out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" stroke="#ddd"/>'
                   f'<text x="{LEFT - 6}" y="{sy(t) + 4:.1f}" text-anchor="end" font-size="11">{t:g}</text>')
    for x, text in (x_labels or {}).items():
        if x0 <= x <= x1:
            out.append(f'<line x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" stroke="#eee"/>'
                       f'<text x="{sx(x):.1f}" y="{HEIGHT - BOTTOM + 14}" text-anchor="middle" font-size="11">{html.escape(text)}</text>')
    for b in bands:
        if len(b.x):
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(b.x, b.high))
            back = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(reversed(b.x), reversed(b.low)))
            out.append(f'<polygon points="{path} {back}" fill="{b.fill}"/>')
    for l in lines:
        if len(l.x):
            dash = ' stroke-dasharray="5,4"' if l.dash else ""
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(l.x, l.y))
            out.append(f'<polyline points="{path}" fill="none" stroke="{l.stroke}" stroke-width="1.8"{dash}/>')
    for p in points:
        out += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{p.fill}"/>' for x, y in zip(p.x, p.y)]
    for x in markers:
        out.append(f'<line x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{HEIGHT - BOTTOM}" y2="{HEIGHT - BOTTOM - 10}" stroke="#7b1fa2" stroke-width="3"/>')
    if y_label:
        out.append(f'<text x="12" y="{TOP + (HEIGHT - TOP - BOTTOM) / 2:.0f}" font-size="11" transform="rotate(-90 12 {TOP + (HEIGHT - TOP - BOTTOM) / 2:.0f})" text-anchor="middle">{html.escape(y_label)}</text>')
    out.append("</svg>")
    return "".join(out)
