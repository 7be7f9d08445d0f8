"""Geometry of the UI's server-rendered SVG charts (``plugins/ui/charts.py``): no Airflow."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from airflow_workflow_engine.plugins.ui import charts
from airflow_workflow_engine.plugins.ui.charts import GanttRow

SVG = "{http://www.w3.org/2000/svg}"
D1, D2, D3 = date(2026, 1, 1), date(2026, 1, 2), date(2026, 1, 3)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, 1.0), (0.0003, 0.0005), (0.001, 0.001), (0.0011, 0.002), (2.1, 2.5), (7, 10), (10, 10)],
)
def test_nice_ceiling(value: float, expected: float) -> None:
    assert charts.nice_ceiling(value) == pytest.approx(expected)


def test_stacked_bars_stack_each_day_to_its_total_on_a_nice_axis() -> None:
    values = {
        (D1, "gpt"): Decimal("0.001"),
        (D1, "gemini"): Decimal("0.0005"),
        (D3, "gpt"): Decimal("0.002"),
        (date(2025, 12, 1), "gpt"): Decimal("9"),  # outside the range: ignored
    }
    chart = charts.stacked_bars([D1, D2, D3], values)
    plot_h = charts.HEIGHT - charts.TOP - charts.BOTTOM
    base = charts.TOP + plot_h
    # The axis tops at 0.002 (the biggest day), the biggest series is stacked first.
    assert chart.legend == [("gpt", "series-0"), ("gemini", "series-1")]
    d1_gpt, d1_gemini, d3_gpt = chart.rects
    assert d1_gpt.css == "series-0" and d1_gemini.css == "series-1"
    assert d1_gpt.height == pytest.approx(plot_h / 2)
    assert d1_gpt.y + d1_gpt.height == pytest.approx(base)
    assert d1_gemini.height == pytest.approx(plot_h / 4)
    assert d1_gemini.y + d1_gemini.height == pytest.approx(d1_gpt.y)  # on top of it
    assert d3_gpt.height == pytest.approx(plot_h) and d3_gpt.y == pytest.approx(charts.TOP)
    # Day 2 has no bar but keeps its slot: bars are one slot apart, inside the plot.
    slot = (charts.WIDTH - charts.LEFT - charts.RIGHT) / 3
    assert d3_gpt.x - d1_gpt.x == pytest.approx(2 * slot)
    assert d1_gpt.x > charts.LEFT and d3_gpt.x + d3_gpt.width < charts.WIDTH - charts.RIGHT
    assert d1_gpt.title == "2026-01-01 · gpt: $0.001"
    assert [t.text for t in chart.texts if t.anchor == "end"] == [
        "$0", "$0.0005", "$0.001", "$0.0015", "$0.002"
    ]  # fmt: skip
    assert [t.text for t in chart.texts if t.anchor == "middle"] == ["01-01", "01-02", "01-03"]


def test_stacked_bars_group_the_smallest_series_as_other() -> None:
    values = {(D1, f"m{i}"): Decimal(100 - i) for i in range(12)}
    chart = charts.stacked_bars([D1], values)
    names = [name for name, _ in chart.legend]
    assert names == [f"m{i}" for i in range(7)] + [charts.OTHER]
    assert chart.legend[-1] == (charts.OTHER, "series-other")
    other = chart.rects[-1]
    assert other.title.endswith(f": ${sum(100 - i for i in range(7, 12))}")
    # The stack still adds up to the day's total.
    total = sum(r.height for r in chart.rects)
    top = charts.nice_ceiling(sum(100 - i for i in range(12)))
    plot_h = charts.HEIGHT - charts.TOP - charts.BOTTOM
    assert total == pytest.approx(plot_h * sum(100 - i for i in range(12)) / top)


def test_stacked_bars_without_spend_draw_an_axis_and_no_bars() -> None:
    chart = charts.stacked_bars(charts.day_range(D3, 7), {})
    assert chart.rects == [] and chart.legend == []
    assert len([t for t in chart.texts if t.anchor == "middle"]) == 7
    assert charts.day_range(D3, 3) == [D1, D2, D3]
    # 90 days get at most ~12 labels.
    many = charts.stacked_bars(charts.day_range(D3, 90), {})
    assert len([t for t in many.texts if t.anchor == "middle"]) <= 12


def test_gantt_places_each_stage_on_a_shared_time_axis() -> None:
    t0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
    rows = [
        GanttRow("extract", t0, t0 + timedelta(seconds=10), "COMPLETED"),
        GanttRow("summarize", t0 + timedelta(seconds=10), t0 + timedelta(seconds=40), "FAILED"),
        GanttRow("classify", t0 + timedelta(seconds=40), None, "RUNNING"),
        GanttRow("publish", None, None, "PENDING"),
    ]
    chart = charts.gantt(rows, now=t0 + timedelta(seconds=100))
    plot_w = charts.WIDTH - charts.GANTT_LABEL - charts.RIGHT
    extract, summarize, classify = chart.rects  # a stage not started has no bar
    assert extract.x == pytest.approx(charts.GANTT_LABEL)
    assert extract.width == pytest.approx(plot_w * 0.1)
    assert summarize.x == pytest.approx(charts.GANTT_LABEL + plot_w * 0.1)
    assert summarize.width == pytest.approx(plot_w * 0.3)
    # A running stage lasts until now, the end of the axis.
    assert classify.x + classify.width == pytest.approx(charts.WIDTH - charts.RIGHT)
    assert [r.css for r in chart.rects] == ["bar COMPLETED", "bar FAILED", "bar RUNNING"]
    assert [r.y for r in chart.rects] == sorted(r.y for r in chart.rects)
    assert summarize.title == "summarize: FAILED, 30.0s"
    labels = [t.text for t in chart.texts if t.css == "label"]
    assert labels == ["extract", "summarize", "classify", "publish"]
    ticks = [t.text for t in chart.texts if t.css == ""]
    assert ticks[0] == "+0ms" and ticks[-1] == "+1.7m"


def test_gantt_keeps_an_instant_stage_visible() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    chart = charts.gantt([GanttRow("a", t0, t0, "COMPLETED")], now=t0)
    [bar] = chart.rects
    assert bar.width == 2.0


def test_svg_is_well_formed_and_escapes_text() -> None:
    chart = charts.stacked_bars([D1], {(D1, "<script>&"): Decimal("0.5")}, label='a "b"')
    markup = chart.svg("spend-chart")
    root = ET.fromstring(markup)
    assert root.tag == f"{SVG}svg" and root.get("id") == "spend-chart"
    assert root.get("aria-label") == 'a "b"'
    [rect] = root.iter(f"{SVG}rect")
    assert rect.findtext(f"{SVG}title") == "2026-01-01 · <script>&: $0.5"
    assert "<script>" not in markup
    assert root.get("viewBox") == "0 0 960 260"
