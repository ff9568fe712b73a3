"""Bar charts as geometry for server-rendered SVG (no script, no chart library, no CDN).

Templates draw the rectangles; colours come from CSS classes (`series-0`, `series-1`...), since
the CSP forbids inline styles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

WIDTH = 560
HEIGHT = 220
_LEFT, _BOTTOM, _TOP = 48, 40, 12


@dataclass(frozen=True)
class Bar:
    """One rectangle with its label, value and series index."""

    x: float
    y: float
    w: float
    h: float
    label: str
    value: float
    series: int
    shown: str


@dataclass(frozen=True)
class Chart:
    """A chart's bars, axis ticks, group labels and legend."""

    title: str
    bars: list[Bar]
    ticks: list[tuple[float, str]]
    groups: list[tuple[float, str]]
    legend: list[str]
    unit: str
    width: int = WIDTH
    height: int = HEIGHT

    @property
    def empty(self) -> bool:
        """No data at all (the template says so instead of drawing zeros)."""
        return not any(b.value for b in self.bars)


def _fmt(value: float, unit: str) -> str:
    if unit == "$":
        return f"${value:.4f}" if value < 1 else f"${value:,.2f}"
    if value >= 10_000:
        return f"{value / 1000:.0f}k{unit}"
    if value >= 1000:
        return f"{value / 1000:.1f}k{unit}"
    if value >= 100 or value == int(value):
        return f"{value:.0f}{unit}"
    return f"{value:.2f}".rstrip("0").rstrip(".") + unit


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = float(10 ** math.floor(math.log10(value)))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def grouped(
    title: str,
    groups: list[tuple[str, list[float]]],
    *,
    legend: list[str],
    unit: str = "",
) -> Chart:
    """Bars in groups (one per label), one bar per series within a group."""
    top = _nice_max(max((v for _, values in groups for v in values), default=0.0))
    plot_w = WIDTH - _LEFT - 8
    plot_h = HEIGHT - _BOTTOM - _TOP
    slot = plot_w / max(len(groups), 1)
    series = max((len(values) for _, values in groups), default=1)
    bar_w = max(min(slot * 0.8 / series, 48), 2)
    bars: list[Bar] = []
    labels: list[tuple[float, str]] = []
    for i, (label, values) in enumerate(groups):
        start = _LEFT + i * slot + (slot - bar_w * len(values)) / 2
        for j, value in enumerate(values):
            h = plot_h * value / top
            bars.append(
                Bar(
                    x=round(start + j * bar_w, 1),
                    y=round(_TOP + plot_h - h, 1),
                    w=round(bar_w - 1, 1),
                    h=round(h, 1),
                    label=label if len(legend) <= 1 else f"{label} · {legend[j]}",
                    value=value,
                    series=j,
                    shown=_fmt(value, unit),
                )
            )
        labels.append((round(_LEFT + i * slot + slot / 2, 1), label))
    ticks = [(round(_TOP + plot_h - plot_h * k / 4, 1), _fmt(top * k / 4, unit)) for k in range(5)]
    return Chart(title, bars, ticks, labels, legend, unit)


def simple(title: str, items: list[tuple[str, float]], *, unit: str = "", name: str = "") -> Chart:
    """One bar per label."""
    return grouped(title, [(label, [value]) for label, value in items], legend=[name], unit=unit)


def percentile(values: list[float], q: float) -> float:
    """The `q` percentile (0..1) by nearest rank; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(math.ceil(q * len(ordered)) - 1, 0)
    return ordered[rank]
