"""Charts for the dashboard, drawn on the server as inline SVG: no JavaScript, no library, nothing fetched.

Each function takes plain numbers and returns :class:`~markupsafe.Markup` holding one ``<svg>`` element with a
``<title>`` and ``<desc>`` (screen readers), every label escaped, and a ``data-chart`` attribute for tests. Sizes are
in SVG user units; the stylesheet makes them scale to the page width.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from markupsafe import Markup, escape

from ..formatting import number
from ..i18n import format_args, gettext

__all__ = ["Series", "bar_chart", "line_chart", "number_text", "percent_text"]

_PALETTE = ("#c2410c", "#1d4ed8", "#15803d", "#7e22ce", "#b45309", "#0f766e")


@dataclass(frozen=True, slots=True)
class Series:
    """One line of a line chart: a name, a colour, and one value per x label (``None``: no data there); ``dashed``
    draws it dashed, so a line lying on another stays visible."""

    name: str
    values: Sequence[float | None]
    color: str = ""
    dashed: bool = False


def _ticks(value: float) -> list[int]:
    """Whole-number y axis ticks from 0 to at least ``value``: a step of 1, 2 or 5 times a power of ten, at most five
    steps (patrons and percentages are read as whole numbers: no "1.2 patrons" on an axis)."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if value <= step * factor * 5:
                size = step * factor
                count = max(1, math.ceil(value / size))
                return [size * k for k in range(count + 1)]
        step *= 10


def _label_lines(label: str) -> tuple[str, str]:
    """``"January 2027"`` -> ``("January", "2027")``: a month label on two lines, so every month fits unclipped."""
    head, _, tail = label.rpartition(" ")
    return (head, tail) if head else (label, "")


def number_text(value: float) -> str:
    """:func:`flask_patronlock.formatting.number` in the site's locale: ``12.5`` -> ``"12.5"`` (German ``"12,5"``)."""
    site_locale, _currency = format_args()
    if site_locale is None:
        return number(value)
    from babel.numbers import format_decimal

    return str(format_decimal(Decimal(number(value)), format="0.#", locale=site_locale))


def percent_text(value: float) -> str:
    """A percentage as the site writes it: ``12.5`` -> ``"12.5%"`` (German ``"12,5 %"``), at most one decimal."""
    site_locale, _currency = format_args()
    if site_locale is None:
        return f"{number(value)}%"
    from babel.numbers import format_percent

    return str(format_percent(Decimal(number(value)) / 100, locale=site_locale, decimal_quantization=False))


def _value_label(value: float, unit: str) -> str:
    return percent_text(value) if unit == "%" else f"{number_text(value)}{unit}"


def _empty(text: str | None) -> str:
    return text if text is not None else gettext("Nothing to show yet.")


def bar_chart(
    items: Sequence[tuple[str, float]], *, title: str, unit: str = "", empty: str | None = None
) -> Markup:
    """Horizontal bars, one per ``(label, value)``, with the value written at the end of each bar; ``empty`` (by
    default "Nothing to show yet.") when there is none."""
    if not items:
        return Markup('<p class="pl-empty" data-chart="bar">{}</p>').format(_empty(empty))
    row, label_w, bar_w, pad = 28, 190, 360, 8
    width = label_w + bar_w + 80
    height = pad * 2 + row * len(items)
    top = max((v for _, v in items), default=0) or 1
    parts = [
        f'<svg class="pl-chart" data-chart="bar" viewBox="0 0 {width} {height}" role="img" '
        f'preserveAspectRatio="xMinYMin meet" width="100%">',
        f"<title>{escape(title)}</title>",
        f"<desc>{escape('; '.join(f'{label}: {_value_label(v, unit)}' for label, v in items))}</desc>",
    ]
    for i, (label, value) in enumerate(items):
        y = pad + i * row
        length = 0 if value <= 0 else max(2.0, bar_w * value / top)
        color = _PALETTE[i % len(_PALETTE)]
        parts.append(
            f'<text x="{label_w - 8}" y="{y + row / 2 + 5}" text-anchor="end" class="pl-label">{escape(label)}</text>'
        )
        parts.append(
            f'<rect x="{label_w}" y="{y + 4}" width="{length:.1f}" height="{row - 8}" rx="3" fill="{color}">'
            f"<title>{escape(label)}: {escape(_value_label(value, unit))}</title></rect>"
        )
        parts.append(
            f'<text x="{label_w + length + 6:.1f}" y="{y + row / 2 + 5}" class="pl-value">'
            f"{escape(_value_label(value, unit))}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def line_chart(
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    title: str,
    unit: str = "",
    y_max: float | None = None,
    empty: str | None = None,
) -> Markup:
    """Lines over ``labels`` (e.g. months), one per :class:`Series`, with a y axis from 0, a legend, and a dot and
    a tooltip per point."""
    points_known = [v for s in series for v in s.values if v is not None]
    if not labels or not points_known:
        return Markup('<p class="pl-empty" data-chart="line">{}</p>').format(_empty(empty))
    left, right, top_pad, bottom, legend = 56, 40, 16, 56, 22
    plot_w = max(120, 76 * (len(labels) - 1) if len(labels) > 1 else 120)
    plot_h = 200
    width = left + plot_w + right
    height = top_pad + plot_h + bottom + legend * ((len(series) + 2) // 3)
    ticks = _ticks(y_max if y_max is not None else max(points_known))
    top = float(ticks[-1])
    step = plot_w / max(len(labels) - 1, 1)

    def x(i: int) -> float:
        return left + (i * step if len(labels) > 1 else plot_w / 2)

    def y(v: float) -> float:
        return top_pad + plot_h - plot_h * (v / top)

    desc = "; ".join(
        f"{s.name}: "
        + ", ".join(f"{labels[i]} {_value_label(v, unit)}" for i, v in enumerate(s.values) if v is not None)
        for s in series
    )
    parts = [
        f'<svg class="pl-chart" data-chart="line" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
        f'preserveAspectRatio="xMinYMin meet" width="100%">',
        f"<title>{escape(title)}</title><desc>{escape(desc)}</desc>",
    ]
    for value in ticks:  # grid lines and y labels
        yy = y(value)
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{yy:.1f}" y2="{yy:.1f}" class="pl-grid"/>')
        parts.append(
            f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end" class="pl-axis" data-tick="{value}">'
            f"{escape(_value_label(value, unit))}</text>"
        )
    for i, label in enumerate(labels):
        first, second = _label_lines(label)
        parts.append(
            f'<text x="{x(i):.1f}" y="{top_pad + plot_h + 18}" text-anchor="middle" class="pl-axis">'
            f"<title>{escape(label)}</title>{escape(first)}"
            + (f'<tspan x="{x(i):.1f}" dy="14">{escape(second)}</tspan>' if second else "")
            + "</text>"
        )
    for n, s in enumerate(series):
        color = s.color or _PALETTE[n % len(_PALETTE)]
        run: list[str] = []
        runs: list[list[str]] = []
        for i, v in enumerate(s.values):
            if v is None:
                if run:
                    runs.append(run)
                run = []
                continue
            run.append(f"{x(i):.1f},{y(v):.1f}")
        if run:
            runs.append(run)
        for points in runs:
            if len(points) > 1:
                dash = ' stroke-dasharray="6 4"' if s.dashed else ""
                parts.append(
                    f'<polyline fill="none" stroke="{color}" stroke-width="2.5"{dash} points="{" ".join(points)}"/>'
                )
        for i, v in enumerate(s.values):
            if v is not None:
                parts.append(
                    f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="3.5" fill="{color}">'
                    f"<title>{escape(s.name)}, {escape(labels[i])}: {escape(_value_label(v, unit))}</title></circle>"
                )
        lx = left + (n % 3) * 200
        ly = top_pad + plot_h + bottom + (n // 3) * legend
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        parts.append(
            f'<line x1="{lx}" x2="{lx + 16}" y1="{ly - 8}" y2="{ly - 8}" stroke="{color}" stroke-width="3"{dash}/>'
        )
        parts.append(f'<text x="{lx + 20}" y="{ly - 4}" class="pl-label">{escape(s.name)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
