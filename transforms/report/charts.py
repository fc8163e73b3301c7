"""A small SVG chart library: horizontal bars, a histogram and a step line over time, each returned as one
inline ``<svg>`` element (no script, nothing fetched), with the axis and tick helpers they share. Charts
take plain numbers, so anything that has them (a run's statistics, a training run's learning curve) can
draw them; text size and colour come from the page's CSS (``svg text``)."""

from __future__ import annotations

import dataclasses
import html
import math
from collections.abc import Callable, Sequence
from typing import Any

from distilbeam.transforms.report.text import fmt

COLOURS = ("#3b6ea8", "#e0863a", "#4f9a57", "#c44e52", "#8172b2", "#937860", "#da8bc3", "#8c8c8c")


def escape(text: Any) -> str:
    """Any value as text safe inside an element or a quoted attribute."""
    return html.escape(str(text), quote=True)


def _svg_open(width: int, height: int) -> str:
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">'


@dataclasses.dataclass(frozen=True)
class Plot:
    """A chart's drawing area: a ``width`` x ``height`` image less its margins, with a y axis from 0 up to
    ``peak`` (ticks at ``ticks``) and an x axis from 0 to ``x_end``. ``start()`` opens the image with its
    grid; ``x`` and ``y`` say where a value lands. Build one with ``Plot.fit``."""

    width: int
    height: int
    left: int
    top: int
    right: int
    bottom: int
    peak: float
    ticks: list[float]
    x_end: float = 1.0

    @classmethod
    def fit(
        cls, width: int, height: int, margins: tuple[int, int, int, int], highest: float, x_end: float = 1.0
    ) -> Plot:
        """An area whose y axis covers ``highest``; ``margins`` are (left, top, right, bottom)."""
        peak, ticks = nice_ticks(highest)
        return cls(width, height, *margins, peak=peak, ticks=ticks, x_end=x_end)

    @property
    def plot_w(self) -> int:
        return self.width - self.left - self.right

    @property
    def plot_h(self) -> int:
        return self.height - self.bottom - self.top

    @property
    def base(self) -> int:
        """The y of the x axis (value 0)."""
        return self.top + self.plot_h

    def x(self, t: float) -> float:
        return self.left + self.plot_w * t / self.x_end

    def rise(self, v: float) -> float:
        """How far above the x axis ``v`` lands: a bar's height."""
        return self.plot_h * v / self.peak

    def y(self, v: float) -> float:
        return self.base - self.rise(v)

    def start(self) -> list[str]:
        return [
            _svg_open(self.width, self.height),
            *y_axis(self.left, self.top, self.plot_w, self.plot_h, self.peak, self.ticks),
        ]


def svg_bars(items: Sequence[tuple[str, float]], width: int = 460, colour: str = COLOURS[0]) -> str:
    """Horizontal bars, one per (label, value), largest first as given."""
    if not items:
        return ""
    row, label_w, value_w = 22, 150, 70
    height = row * len(items) + 8
    top = max(v for _, v in items) or 1
    span = width - label_w - value_w
    total = sum(v for _, v in items) or 1
    parts = [_svg_open(width, height)]
    for i, (label, value) in enumerate(items):
        y = 4 + i * row
        w = max(1.0, span * value / top) if value else 0
        shown = label if len(label) <= 22 else label[:21] + "…"
        parts.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{escape(shown)}</text>')
        parts.append(f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row - 6}" fill="{colour}"/>')
        parts.append(
            f'<text x="{label_w + w + 5:.1f}" y="{y + 15}">{fmt(value)} ({100 * value / total:.0f}%)</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def svg_histogram(
    items: Sequence[tuple[str, float]], width: int = 460, height: int = 220, colour: str = COLOURS[0]
) -> str:
    """Vertical bars with their bucket names underneath."""
    if not items:
        return ""
    plot = Plot.fit(width, height, (44, 12, 8, 40), max(v for _, v in items))
    slot = plot.plot_w / len(items)
    bar = min(slot - 4, 48.0)
    parts = plot.start()
    for i, (label, value) in enumerate(items):
        cx = plot.left + i * slot + slot / 2
        parts.append(
            f'<rect x="{cx - bar / 2:.1f}" y="{plot.y(value):.1f}" width="{max(1.0, bar):.1f}" '
            f'height="{plot.rise(value):.1f}" fill="{colour}">'
            f"<title>{escape(label)}: {fmt(value)}</title></rect>"
        )
        ly = plot.base + 14
        parts.append(
            f'<text x="{cx:.1f}" y="{ly}" text-anchor="end" '
            f'transform="rotate(-35 {cx:.1f} {ly})">{escape(label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def duration_short(seconds: float) -> str:
    """An axis label for a time: 45 s, 12 min, 3.5 h."""
    seconds = round(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def svg_steps(
    series: Sequence[Sequence[float]],
    width: int = 940,
    height: int = 240,
    colour: str = COLOURS[0],
    x_label: Callable[[float], str] = duration_short,
) -> str:
    """Binned values as a filled step line: each [start, value] holds until the next start, the x axis
    runs from 0 to one step past the last start, and ``x_label`` names its five ticks (seconds by default;
    pass ``str`` or a formatter of your own for steps or epochs)."""
    if not series:
        return ""
    step = series[1][0] - series[0][0] if len(series) > 1 else 1.0
    x_end = series[-1][0] + step
    plot = Plot.fit(width, height, (50, 12, 14, 34), max(v for _, v in series), x_end)
    x, y, base = plot.x, plot.y, plot.base
    corners = [f"{x(series[0][0]):.1f},{base}"]
    for t, v in series:
        corners += [f"{x(t):.1f},{y(v):.1f}", f"{x(t + step):.1f},{y(v):.1f}"]
    corners.append(f"{x(x_end):.1f},{base}")
    parts = plot.start()
    parts.append(f'<polygon points="{" ".join(corners)}" fill="{colour}" fill-opacity="0.18"/>')
    parts.append(
        f'<polyline points="{" ".join(corners[1:-1])}" fill="none" stroke="{colour}" stroke-width="2"/>'
    )
    for i in range(5):
        t = x_end * i / 4
        parts.append(f'<text x="{x(t):.1f}" y="{base + 18}" text-anchor="middle">{escape(x_label(t))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def nice_ticks(peak: float, count: int = 4) -> tuple[float, list[float]]:
    """An axis top of 1, 2, 2.5 or 5 times a power of ten, at least ``peak``, and its tick values."""
    if peak <= 0:
        return 1.0, [0.0, 1.0]
    raw = peak / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    if peak >= 1 and step < 1:
        step = 1.0
    n = math.ceil(peak / step - 1e-9)
    return n * step, [i * step for i in range(n + 1)]


def y_axis(
    left: float, top: float, plot_w: float, plot_h: float, peak: float, ticks: Sequence[float]
) -> list[str]:
    """A horizontal grid line and a label at each tick, from ``top`` (= ``peak``) down ``plot_h``."""
    parts = []
    for value in ticks:
        y = top + plot_h - plot_h * value / peak
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w:.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e4e4e4"/>'
        )
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick_label(value)}</text>')
    return parts


def tick_label(value: float) -> str:
    """A tick value without trailing zeros: 2,500 or 0.25."""
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}".rstrip("0").rstrip(".")
