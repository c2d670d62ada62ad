"""The pages' charts, read back from their SVG: bars and wedges in proportion to the numbers, ids that cannot clash
on a page, inert user text, and the same bytes in any process."""

from __future__ import annotations

import math
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import date, timedelta

import matplotlib as mpl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etl import charts

SVG = "{http://www.w3.org/2000/svg}"
DAYS = [date(2026, 3, 1) + timedelta(days=i) for i in range(14)]


def _paths(svg: str) -> list[tuple[str, list[list[tuple[float, float]]]]]:
    """Each <path>'s style and its subpaths as lists of points (SVG coordinates, y down)."""
    out = []
    for path in ET.fromstring(svg).iter(f"{SVG}path"):
        subpaths: list[list[tuple[float, float]]] = []
        for command, numbers in re.findall(r"([MLCz])([^MLCz]*)", path.get("d", "")):
            values = [float(v) for v in numbers.split()]
            if command == "M":
                subpaths.append([])
            points = list(zip(values[0::2], values[1::2], strict=True))
            subpaths[-1].extend(points[-1:] if command == "C" else points)  # a curve: its end point
        out.append((path.get("style", ""), subpaths))
    return out


def _filled(svg: str, colour: str) -> list[list[tuple[float, float]]]:
    def fill(style: str) -> str:  # SVG's default fill, black, is left out
        return next((p.split(":")[1].strip() for p in style.split(";") if p.strip().startswith("fill:")), "#000000")
    return [sub for style, subs in _paths(svg) if fill(style) == colour.lower() for sub in subs]


def _heights(svg: str, colour: str) -> list[float]:
    return [max(y for _, y in box) - min(y for _, y in box) for box in _filled(svg, colour)]


counts = st.lists(st.integers(0, 10**7), min_size=len(DAYS), max_size=len(DAYS))


@settings(max_examples=60, deadline=None)
@given(added=counts, deleted=counts)
def test_daily_bars_are_in_proportion_to_the_numbers(added: list[int], deleted: list[int]) -> None:
    chart = charts.grouped_daily_bars(DAYS, {"added": added, "deleted": deleted}, "t")
    bars = []
    for kind, values in (("added", added), ("deleted", deleted)):
        heights = _heights(chart.svg, charts.KIND_COLOURS[kind])
        drawn = [v for v in values if v]
        assert len(heights) == len(drawn)  # a zero draws nothing, every other day one bar
        bars += zip(drawn, heights, strict=True)
    if bars:
        top, tallest = max(bars)
        assert charts.DAILY_PLOT.height / 2 <= tallest <= charts.DAILY_PLOT.height + 1e-6  # nice ticks: >= half
        for value, height in bars:  # coordinates have six decimals
            assert height == pytest.approx(value / top * tallest, abs=2e-6)


def test_stacked_bars_add_up_per_day() -> None:
    series = {"whatsapp": [3, 0, 5] + [1] * 11, "import": [1, 2, 0] + [0] * 11}
    chart = charts.stacked_daily_bars(DAYS, series, "s")
    first, second = (_heights(chart.svg, charts.PALETTE[i]) for i in range(2))
    # day 1: 3 and 1 stacked, day 2: only 2 of import, day 3: only 5 of whatsapp; the scale is the same for both
    unit = first[0] / 3
    assert second[0] == pytest.approx(unit)
    assert second[1] == pytest.approx(2 * unit)
    assert first[1] == pytest.approx(5 * unit)


def test_threshold_is_a_dashed_line_at_its_value() -> None:
    chart = charts.grouped_daily_bars(DAYS, {"added": [10] * len(DAYS)}, "q", limit=5.0)
    bar = _heights(chart.svg, charts.KIND_COLOURS["added"])[0]
    dashed = [subs for style, subs in _paths(chart.svg) if "stroke-dasharray" in style]
    assert len(dashed) == 1
    (start, end), = dashed[0]
    assert start[1] == end[1] and end[0] - start[0] == pytest.approx(charts.DAILY_PLOT.width)
    baseline = charts.DAILY_SIZE[1] - charts.DAILY_PLOT.bottom
    assert baseline - start[1] == pytest.approx(bar / 2)


def _angle(point: tuple[float, float], centre: float) -> float:
    """Degrees counter-clockwise from three o'clock, for SVG coordinates (y down)."""
    return math.degrees(math.atan2(centre - point[1], point[0] - centre)) % 360


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=8).filter(any))
def test_pie_wedges_sweep_each_share(values: list[int]) -> None:
    chart = charts.pie([f"c{i}" for i in range(len(values))], values, "p")
    centre, total = 80.0, sum(values)
    for i, value in enumerate(values):
        wedges = _filled(chart.svg, charts.PALETTE[i % len(charts.PALETTE)])
        if value == 0:
            assert wedges == []
            continue
        arc = [p for sub in wedges for p in sub if math.dist(p, (centre, centre)) > 1]  # less the centre
        assert all(math.dist(p, (centre, centre)) == pytest.approx(77, abs=1e-3) for p in arc)
        sweep = (_angle(arc[-1], centre) - _angle(arc[0], centre)) % 360  # an arc from its first angle up
        share = 360 * value / total
        assert sweep == pytest.approx(share % 360, abs=1e-3) or share == pytest.approx(360)


def test_ids_carry_the_namespace_and_user_text_stays_text() -> None:
    names = ['<img src=x onerror="alert(1)">', "cost $5 vs $6", "A & B"]
    drawn = [charts.category_bars(names, [3, 2, 1], "chart-a"), charts.pie(names, [3, 2, 1], "chart-b"),
             charts.grouped_daily_bars(DAYS, {"added": [1] * 14}, "chart-c", limit=0.5),
             charts.stacked_daily_bars(DAYS, {n: [1] * 14 for n in names}, "chart-d")]
    seen: set[str] = set()
    for chart, namespace in zip(drawn, ("chart-a", "chart-b", "chart-c", "chart-d"), strict=True):
        root = ET.fromstring(chart.svg)  # well-formed on its own
        ids = [e.get("id") for e in root.iter() if e.get("id")]
        assert ids and all(i.startswith(namespace + "-") for i in ids)
        assert not seen & set(ids) and len(set(ids)) == len(ids)
        seen |= set(ids)
        assert root.find(f"{SVG}metadata") is None and root.get("width") is None  # scales with the page
        assert {e.tag.removeprefix(SVG) for e in root.iter()} <= {"svg", "defs", "style", "g", "path", "text"}
    texts = " ".join("".join(t.itertext()) for t in ET.fromstring(drawn[0].svg).iter(f"{SVG}text"))
    assert all(name[:20] in texts for name in names)  # as text, dollars included (no mathtext)


def test_drawing_leaves_matplotlib_settings_as_they_were() -> None:
    before = dict(mpl.rcParams)
    charts.pie(["a", "b"], [1, 2], "x")
    charts.grouped_daily_bars(DAYS, {"added": [1] * 14}, "y", limit=1)
    assert dict(mpl.rcParams) == before


DRAW = """
from datetime import date, timedelta
from etl import charts
days = [date(2026, 3, 1) + timedelta(days=i) for i in range(30)]
series = {"added": [i * 37 % 101 for i in range(30)], "merged": [i % 3 for i in range(30)]}
print(charts.grouped_daily_bars(days, series, "g", limit=20).svg + charts.pie(["x", "y"], [2, 5], "p").svg
      + charts.stacked_daily_bars(days, {"a": series["added"]}, "s").svg + charts.category_bars(["x"], [2], "c").svg)
"""


def test_same_numbers_give_the_same_bytes_in_any_process() -> None:
    runs = {subprocess.run([sys.executable, "-c", DRAW], capture_output=True, text=True, check=True).stdout
            for _ in range(2)}
    assert len(runs) == 1
    local = {}  # and in this process, whatever was drawn before
    exec(DRAW.replace("print(", "out = ("), local)
    assert local["out"] + "\n" in runs
