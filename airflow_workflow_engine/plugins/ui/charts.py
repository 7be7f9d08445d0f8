"""The pages' charts as server-rendered inline SVG: no JavaScript library, nothing to build.

Each chart is computed as plain shapes (:class:`Rect`, :class:`Line`, :class:`Text`) in a
fixed view box, then written out by :meth:`Chart.svg`. The shapes carry CSS classes only
(``series-0`` ... ``series-7``, ``series-other``, a status name): the colours are in
``static/ui.css``, so a chart follows Airflow's light/dark theme like the rest of the page.
Every bar has a ``<title>`` (the browser's tooltip) with its exact value.

Airflow-free and dependency-free, so its geometry is unit-tested on its own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from html import escape

__all__ = [
    "OTHER",
    "SERIES_COLOURS",
    "Chart",
    "GanttRow",
    "Line",
    "Rect",
    "Text",
    "gantt",
    "nice_ceiling",
    "stacked_bars",
    "top_series",
]

#: Distinct series colours (``series-0`` ... in ui.css); the rest are grouped as :data:`OTHER`.
SERIES_COLOURS = 8
#: The series that groups everything past the first :data:`SERIES_COLOURS` - 1.
OTHER = "(other)"


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    width: float
    height: float
    css: str
    title: str = ""
    href: str | None = None


@dataclass(frozen=True)
class Line:
    x1: float
    y1: float
    x2: float
    y2: float
    css: str = "grid"


@dataclass(frozen=True)
class Text:
    x: float
    y: float
    text: str
    anchor: str = "start"
    css: str = ""


@dataclass
class Chart:
    """Shapes in a ``width`` x ``height`` view box, and the series shown in its legend."""

    width: float
    height: float
    label: str
    rects: list[Rect] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    texts: list[Text] = field(default_factory=list)
    #: ``(name, css class)`` in legend order.
    legend: list[tuple[str, str]] = field(default_factory=list)

    def svg(self, element_id: str = "") -> str:
        """The chart as an ``<svg>`` element (every text escaped)."""
        ident = f' id="{escape(element_id)}"' if element_id else ""
        out = [
            f'<svg{ident} xmlns="http://www.w3.org/2000/svg" role="img" '
            f'viewBox="0 0 {_n(self.width)} {_n(self.height)}" '
            f'aria-label="{escape(self.label)}">'
        ]
        out += [
            f'<line class="{escape(ln.css)}" x1="{_n(ln.x1)}" y1="{_n(ln.y1)}" '
            f'x2="{_n(ln.x2)}" y2="{_n(ln.y2)}"/>'
            for ln in self.lines
        ]
        for r in self.rects:
            rect = (
                f'<rect class="{escape(r.css)}" x="{_n(r.x)}" y="{_n(r.y)}" '
                f'width="{_n(r.width)}" height="{_n(r.height)}">'
                f"<title>{escape(r.title)}</title></rect>"
            )
            out.append(f'<a href="{escape(r.href)}">{rect}</a>' if r.href else rect)
        for t in self.texts:
            css = f' class="{escape(t.css)}"' if t.css else ""
            out.append(
                f'<text{css} x="{_n(t.x)}" y="{_n(t.y)}" text-anchor="{t.anchor}">'
                f"{escape(t.text)}</text>"
            )
        out.append("</svg>")
        return "".join(out)


def _n(value: float) -> str:
    """A coordinate with at most two decimals and no trailing zeros."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten that is at least ``value`` (1 for 0)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value * (1 - 1e-12):
            return float(step * power)
    return float(10 * power)  # pragma: no cover (10 always fits)


def money_label(value: Decimal | float) -> str:
    """A short axis label: ``$0``, ``$0.0025``, ``$1.5``, ``$1,200``."""
    amount = Decimal(str(value))
    if amount == 0:
        return "$0"
    text = f"{amount:,.6f}".rstrip("0").rstrip(".") if amount < 1000 else f"{amount:,.0f}"
    return f"${text}"


def money_exact(value: Decimal) -> str:
    """The exact amount, as the tables show it."""
    return f"${format(value.normalize(), 'f')}" if value else "$0"


def top_series(
    totals: Mapping[str, Decimal], limit: int = SERIES_COLOURS
) -> tuple[list[str], dict[str, str]]:
    """The series by total, biggest first: at most ``limit`` kept (the last slot becomes
    :data:`OTHER` when there are more), and each kept series' CSS class."""
    ranked = sorted(totals, key=lambda k: (-totals[k], k))
    if len(ranked) > limit:
        ranked = [*ranked[: limit - 1], OTHER]
    classes = {
        name: (f"series-{i}" if name != OTHER else "series-other") for i, name in enumerate(ranked)
    }
    return ranked, classes


# -- spend per day, stacked ----------------------------------------------------------------

#: Stacked-bar chart layout (view-box units).
WIDTH, HEIGHT = 960.0, 260.0
LEFT, RIGHT, TOP, BOTTOM = 72.0, 12.0, 12.0, 28.0
BAR_FILL = 0.72  # share of a day's slot the bar takes
Y_TICKS = 4


def stacked_bars(
    days: Sequence[date],
    values: Mapping[tuple[date, str], Decimal],
    *,
    label: str = "Spend per UTC day",
    width: float = WIDTH,
    height: float = HEIGHT,
) -> Chart:
    """One bar per day of ``days`` (in order, days without spend included), stacked by the
    series of ``values`` (``(day, series) -> amount``), biggest series at the bottom."""
    chart = Chart(width, height, label)
    totals: dict[str, Decimal] = {}
    for (_, name), amount in values.items():
        totals[name] = totals.get(name, Decimal(0)) + amount
    ranked, classes = top_series({k: v for k, v in totals.items() if v > 0})
    kept = set(ranked)
    stacks: dict[date, dict[str, Decimal]] = {d: {} for d in days}
    for (day, name), amount in values.items():
        if day not in stacks or amount <= 0:
            continue
        key = name if name in kept else OTHER
        stacks[day][key] = stacks[day].get(key, Decimal(0)) + amount
    peak = max((sum(s.values(), Decimal(0)) for s in stacks.values()), default=Decimal(0))
    top = nice_ceiling(float(peak))
    plot_w, plot_h = width - LEFT - RIGHT, height - TOP - BOTTOM
    base = TOP + plot_h

    for i in range(Y_TICKS + 1):
        tick = top * i / Y_TICKS
        y = base - plot_h * i / Y_TICKS
        chart.lines.append(Line(LEFT, y, width - RIGHT, y, "axis" if i == 0 else "grid"))
        chart.texts.append(Text(LEFT - 6, y + 4, money_label(tick), "end"))

    slot = plot_w / max(len(days), 1)
    bar = slot * BAR_FILL
    every = max(1, math.ceil(len(days) / 12))  # at most ~12 day labels
    for i, day in enumerate(days):
        x = LEFT + slot * i + (slot - bar) / 2
        y = base
        for name in ranked:
            amount = stacks[day].get(name, Decimal(0))
            if not amount:
                continue
            h = plot_h * float(amount) / top
            y -= h
            chart.rects.append(
                Rect(
                    x,
                    y,
                    bar,
                    h,
                    classes[name],
                    f"{day.isoformat()} · {name}: {money_exact(amount)}",
                )
            )
        if i % every == 0:
            chart.texts.append(Text(x + bar / 2, height - 8, day.strftime("%m-%d"), "middle"))
    chart.legend = [(name, classes[name]) for name in ranked]
    return chart


ROW, ROW_BAR = 24.0, 16.0


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- stage timeline (Gantt) ------------------------------------------------------------------

GANTT_LABEL = 200.0
GANTT_TICKS = 5


@dataclass(frozen=True)
class GanttRow:
    label: str
    start: datetime | None
    end: datetime | None
    status: str


def gantt(
    rows: Sequence[GanttRow],
    *,
    now: datetime,
    label: str = "Stage timeline",
    width: float = WIDTH,
) -> Chart:
    """One row per stage: a bar from its start to its end (``now`` while it runs) on a shared
    time axis from the first start; a stage that has not started has a label and no bar."""
    height = TOP + ROW * max(len(rows), 1) + BOTTOM
    chart = Chart(width, height, label)
    starts = [r.start for r in rows if r.start is not None]
    if not starts:
        for i, row in enumerate(rows):
            chart.texts.append(
                Text(GANTT_LABEL - 8, TOP + ROW * i + ROW_BAR - 4, row.label, "end", "label")
            )
        return chart
    t0 = min(starts)
    t1 = max([r.end or now for r in rows if r.start is not None])
    seconds = max((t1 - t0).total_seconds(), 0.001)
    plot_w = width - GANTT_LABEL - RIGHT
    base = TOP + ROW * len(rows)

    def x_of(when: datetime) -> float:
        return GANTT_LABEL + plot_w * (when - t0).total_seconds() / seconds

    for i in range(GANTT_TICKS + 1):
        x = GANTT_LABEL + plot_w * i / GANTT_TICKS
        chart.lines.append(Line(x, TOP, x, base, "grid"))
        anchor = "start" if i == 0 else ("end" if i == GANTT_TICKS else "middle")
        chart.texts.append(Text(x, base + 16, "+" + _span(seconds * i / GANTT_TICKS), anchor))
    for i, row in enumerate(rows):
        y = TOP + ROW * i
        chart.texts.append(
            Text(GANTT_LABEL - 8, y + ROW_BAR - 4, _cut(row.label, 28), "end", "label")
        )
        if row.start is None:
            continue
        end = row.end or now
        x = x_of(row.start)
        w = max(x_of(end) - x, 2.0)  # an instant stage stays visible
        took = _span((end - row.start).total_seconds())
        chart.rects.append(
            Rect(x, y + 2, w, ROW_BAR, f"bar {row.status}", f"{row.label}: {row.status}, {took}")
        )
    return chart


def _span(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def day_range(last: date, days: int) -> list[date]:
    """``days`` consecutive days ending with ``last``."""
    return [last - timedelta(days=days - 1 - i) for i in range(days)]
