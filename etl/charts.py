"""Matplotlib charts as inline SVG: deterministic bytes, unique ids per chart, user text kept as inert text.

* `svg.hashsalt` fixed and `metadata={'Date': None}`: the same data gives the same bytes in any process.
* Labels are <text> elements written here, escaped (`html.escape`): Matplotlib measured every label again for
  each chart (its metrics cache is keyed by the renderer, and each SVG is a new renderer), ~a fifth of the render.
  `text.parse_math` stays off should Matplotlib ever draw text here: "cost $5 vs $6" must stay text.
* Every id in a chart gets the chart's own prefix, because several charts share one HTML page.

Speed (docs/performance.md, "Render"): a chart is a bare Figure with a handful of artists placed in points
(dpi 72, so one display unit is one SVG unit) — no Axes, whose ticks, spines and layout cost ~10 ms before
anything is drawn. A series of bars is one compound path, gridlines are one path, and legends are HTML next to
the chart (they wrap on a phone and cost nothing to draw). Nice tick values still come from Matplotlib's locator.
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import matplotlib as mpl
import numpy as np
from matplotlib.figure import Figure  # pyplot is never imported: no global figure state, no GUI backend
from matplotlib.patches import PathPatch, Wedge
from matplotlib.path import Path
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import IdentityTransform

from etl.bidi import isolated
from etl.i18n import Language, language

# Okabe–Ito: distinguishable with the common colour-vision deficiencies.
PALETTE: tuple[str, ...] = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
KIND_COLOURS: dict[str, str] = {"added": "#0072B2", "deleted": "#D55E00", "merged": "#009E73"}
GRID, BASELINE, INK = "#dddddd", "#888888", "#333333"
POINTS_PER_INCH = 72

FONT_POINTS = 9
STYLE: dict[Any, Any] = {  # Any: Matplotlib types rc keys as a Literal union
    "svg.hashsalt": "contacts-report",
    "svg.fonttype": "none",
    "text.parse_math": False,
    "text.usetex": False,
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],
    "font.size": FONT_POINTS,
    "path.simplify": True,
}

_ID = re.compile(r'\bid="([^"]+)"')
_ID_OR_REF = re.compile(r'(\bid="|url\(#|href="#)([^")]+)')
_PIXELS = IdentityTransform()  # display units; at dpi 72 these are the SVG's points


@dataclass(frozen=True)
class Chart:
    """An inline SVG and the legend the page shows beside it: (colour, text) pairs."""

    svg: str
    legend: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Plot:
    """The plotting rectangle of a canvas, in points from the bottom-left corner."""

    left: float
    bottom: float
    width: float
    height: float


# How far below a label's vertical centre its baseline lies, in points: what Matplotlib's `va="center"` gave for
# digits in DejaVu Sans at 9 points.
_CENTRE_TO_BASELINE = 2.34
_LABEL_STYLE = f"font-size: {FONT_POINTS}px; font-family: 'DejaVu Sans', sans-serif; fill: {INK}"


@dataclass
class _Canvas:
    """A chart being drawn: Matplotlib draws the shapes, the labels are written as SVG text by `to_svg`."""

    fig: Figure
    height: float
    labels: list[str] = field(default_factory=list)

    def text(self, x: float, y: float, text: str, anchor: str = "start", centred: bool = False) -> None:
        """A label at (x, y) points from the bottom left: y is its baseline, or its middle if `centred`;
        `anchor` (start, middle, end) is where x falls on it."""
        baseline = self.height - y + (_CENTRE_TO_BASELINE if centred else 0.0)
        self.labels.append(f'<text x="{_number(x)}" y="{_number(baseline)}" text-anchor="{anchor}">'
                           f"{html.escape(text, quote=False)}</text>")


def _number(value: float) -> str:
    """A coordinate as Matplotlib's SVG writer spells one: up to six decimals, no trailing zeros."""
    return f"{value:f}".rstrip("0").rstrip(".")


@contextmanager
def _styled() -> Iterator[None]:
    """STYLE while one chart is drawn, and the previous values back afterwards: what `mpl.rc_context(STYLE)` does,
    without copying and validating all ~300 parameters twice (~10 % of a small workspace's render time)."""
    saved = {key: mpl.rcParams[key] for key in STYLE}
    mpl.rcParams.update(STYLE)
    try:
        yield
    finally:
        mpl.rcParams.update(saved)


def _canvas(width: float, height: float) -> _Canvas:
    fig = Figure(figsize=(width / POINTS_PER_INCH, height / POINTS_PER_INCH), dpi=POINTS_PER_INCH)
    return _Canvas(fig, height)


def to_svg(canvas: _Canvas, namespace: str, css_class: str = "chart-svg") -> str:
    """The chart as an inline <svg> element whose ids all start with `namespace`. Call it inside `_styled()`
    (every chart function does)."""
    buffer = io.StringIO()
    mpl.rcParams["svg.hashsalt"] = namespace  # restored when the chart's `_styled()` exits
    canvas.fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg"):]
    # Matplotlib's RDF <metadata> block (dc:, cc:, rdf: namespaces) is not allowed in SVG inside HTML
    svg = re.sub(r"\s*<metadata>.*?</metadata>", "", svg, count=1, flags=re.S)
    if canvas.labels:
        labels = "\n   ".join(canvas.labels)
        svg = svg.replace("\n</svg>", f'\n <g style="{_LABEL_STYLE}">\n   {labels}\n </g>\n</svg>', 1)
    ids = set(_ID.findall(svg))
    svg = _ID_OR_REF.sub(lambda m: f"{m.group(1)}{namespace}-{m.group(2)}" if m.group(2) in ids else m.group(0), svg)
    svg = re.sub(r'<svg([^>]*?) width="[^"]+" height="[^"]+"', rf'<svg\1 class="{css_class}" aria-hidden="true"',
                 svg, count=1)
    return svg


def _bars_path(boxes: np.ndarray, colour: str) -> PathPatch:
    """Rectangles (rows of x0, y0, x1, y1) as one filled compound path: one artist, one <path>, where a bar each
    costs Matplotlib ~1 ms to add and draw."""
    x0, y0, x1, y1 = boxes.T
    vertices = np.stack([np.stack([x0, y0], 1), np.stack([x0, y1], 1), np.stack([x1, y1], 1),
                         np.stack([x1, y0], 1), np.stack([x0, y0], 1)], 1).reshape(-1, 2)
    codes = np.tile([Path.MOVETO, Path.LINETO, Path.LINETO, Path.LINETO, Path.CLOSEPOLY], len(boxes))
    return PathPatch(Path(vertices, codes), facecolor=colour, edgecolor="none")


def _rectangles(fig: Figure, boxes: np.ndarray, colour: str) -> None:
    """Rectangles in points (`_bars_path`), the empty ones left out."""
    boxes = boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]
    if len(boxes):
        patch = _bars_path(boxes, colour)
        patch.set_transform(_PIXELS)
        fig.add_artist(patch)


def _lines(fig: Figure, segments: Sequence[tuple[float, float, float, float]], colour: str, width: float) -> None:
    vertices = np.array(segments, dtype=float).reshape(-1, 2)
    codes = np.tile([Path.MOVETO, Path.LINETO], len(segments))
    fig.add_artist(PathPatch(Path(vertices, codes), fill=False, edgecolor=colour, linewidth=width,
                             transform=_PIXELS))


def _value_axis(top: float, bins: int = 4) -> list[int]:
    """Whole-number ticks from 0 to at least `top`: Matplotlib's own choice of nice numbers."""
    ticks = MaxNLocator(nbins=bins, integer=True).tick_values(0, max(top, 1))
    return [int(t) for t in ticks if t >= 0]


def _day_labels(days: Sequence[date], lang: Language) -> list[tuple[int, str]]:
    """At most ~6 labelled days: they stay apart at the larger font a phone gets (templates/base.html.j2), and
    fewer labels are cheaper to draw."""
    step = max(1, -(-len(days) // 6))
    return [(i, lang.day_month(days[i])) for i in range(0, len(days), step)]


def _daily_frame(canvas: _Canvas, plot: Plot, days: Sequence[date], top: float, lang: Language) -> float:
    """Gridlines, value labels and day labels; returns points per unit of value."""
    ticks = _value_axis(top)
    scale = plot.height / ticks[-1]
    right = plot.left + plot.width
    _lines(canvas.fig, [(plot.left, plot.bottom + t * scale, right, plot.bottom + t * scale) for t in ticks[1:]],
           GRID, 0.6)
    _lines(canvas.fig, [(plot.left, plot.bottom, right, plot.bottom)], BASELINE, 0.8)
    for t in ticks[1:]:  # the baseline needs no "0", which would touch the first day's label
        # in a few characters (9,500 · 160K · 1.25M) so that it fits the margin at a phone's font size
        canvas.text(plot.left - 4, plot.bottom + t * scale, lang.compact(t), anchor="end", centred=True)
    slot = plot.width / len(days)
    for i, label in _day_labels(days, lang):
        # baselines, not tops: a phone's larger font (templates/base.html.j2) grows up from the baseline
        canvas.text(plot.left + (i + 0.5) * slot, plot.bottom - 17, label, anchor="middle")
    return scale


DAILY_SIZE = (518.0, 191.0)
DAILY_PLOT = Plot(left=46, bottom=24, width=464, height=158)  # room below for day labels at the phone font size


def grouped_daily_bars(days: Sequence[date], series: Mapping[str, Sequence[float]], namespace: str,
                       labels: dict[str, str] | None = None, lang: Language | None = None,
                       limit: float | None = None) -> Chart:
    """Added vs deleted vs merged per day, side by side; `labels` names each series in the legend; `limit` draws a
    dashed line at that value (a threshold)."""
    lang = lang or language()
    with _styled():
        canvas, plot = _canvas(*DAILY_SIZE), DAILY_PLOT
        top = max((max(v, default=0) for v in series.values()), default=0)
        scale = _daily_frame(canvas, plot, days, max(top, limit or 0), lang)
        if limit is not None:
            y = plot.bottom + limit * scale
            canvas.fig.add_artist(PathPatch(Path([(plot.left, y), (plot.left + plot.width, y)]), fill=False,
                                            edgecolor=INK, linewidth=1.2, linestyle=(0, (4, 3)), transform=_PIXELS))
        slot = plot.width / len(days)
        width = min(slot * 0.8 / max(len(series), 1), 40.0)  # one day must not fill the chart with slabs
        starts = plot.left + np.arange(len(days)) * slot + (slot - width * len(series)) / 2
        legend = []
        for i, (kind, values) in enumerate(series.items()):
            colour = KIND_COLOURS.get(kind, PALETTE[i % len(PALETTE)])
            x0 = starts + i * width
            heights = np.asarray(values, dtype=float) * scale
            _rectangles(canvas.fig,
                        np.stack([x0, np.full_like(x0, plot.bottom), x0 + width, plot.bottom + heights], 1), colour)
            legend.append((colour, (labels or {}).get(kind, kind.capitalize())))
        return Chart(to_svg(canvas, namespace), tuple(legend))


def stacked_daily_bars(days: Sequence[date], series: Mapping[str, Sequence[float]], namespace: str,
                       lang: Language | None = None) -> Chart:
    """One bar per day, stacked by category (sources)."""
    with _styled():
        canvas, plot = _canvas(*DAILY_SIZE), DAILY_PLOT
        totals = np.sum([np.asarray(v, dtype=float) for v in series.values()], axis=0) if series else [0.0]
        scale = _daily_frame(canvas, plot, days, float(np.max(totals)), lang or language())
        slot = plot.width / len(days)
        x0 = plot.left + np.arange(len(days)) * slot + slot * 0.125
        bottom = np.full(len(days), float(plot.bottom))
        legend = []
        for i, (label, values) in enumerate(series.items()):
            colour = PALETTE[i % len(PALETTE)]
            top = bottom + np.asarray(values, dtype=float) * scale
            _rectangles(canvas.fig, np.stack([x0, bottom, x0 + slot * 0.75, top], 1), colour)
            legend.append((colour, label))
            bottom = top
        return Chart(to_svg(canvas, namespace), tuple(legend))


def category_bars(labels: Sequence[str], values: Sequence[int], namespace: str, lang: Language | None = None
                  ) -> Chart:
    """Horizontal bars, one per category in the given order (largest first): each category's name on a line of its
    own above its bar (a name beside the bar left too little room on a phone), its count after the bar."""
    lang = lang or language()
    with _styled():
        row, pad = 46.0, 6.0  # per category: the name, the bar, a gap (room for a phone's larger font)
        height = len(labels) * row + 2 * pad
        canvas = _canvas(DAILY_SIZE[0], height)
        left, width = 6.0, 400.0  # the count after the longest bar still fits at the phone font size
        longest = max(values, default=0) or 1
        for i, (label, value) in enumerate(zip(labels, values, strict=True)):
            top = height - pad - i * row
            end = left + width * value / longest
            # placed by baselines, as in `_daily_frame`
            canvas.text(left, top - 15, isolated(_short(label)))
            _rectangles(canvas.fig, np.array([[left, top - 40, max(end, left + 1), top - 24]]),
                        PALETTE[i % len(PALETTE)])
            canvas.text(max(end, left + 1) + 4, top - 36, lang.number(value))
        return Chart(to_svg(canvas, namespace))


def pie(labels: Sequence[str], values: Sequence[int], namespace: str, lang: Language | None = None) -> Chart:
    """Share of each category; the legend beside it gives percentage and number."""
    lang = lang or language()
    total = sum(values) or 1
    size = 160.0
    with _styled():
        canvas = _canvas(size, size)
        angle = 90.0  # clockwise from twelve o'clock, like the bar chart's order
        legend = []
        for i, (label, value) in enumerate(zip(labels, values, strict=True)):
            colour = PALETTE[i % len(PALETTE)]
            sweep = 360.0 * value / total
            if sweep > 0:
                canvas.fig.add_artist(Wedge((size / 2, size / 2), size / 2 - 3, angle - sweep, angle,
                                            facecolor=colour, edgecolor="white", linewidth=1, transform=_PIXELS))
            angle -= sweep
            share = lang.share(round(value / total * 100, 1))
            legend.append((colour, f"{isolated(label)} — {share} ({lang.number(value)})"))  # HTML wraps: no cut
        return Chart(to_svg(canvas, namespace, "chart-svg chart-pie"), tuple(legend))


def _short(text: str, limit: int = 28) -> str:
    text = " ".join(text.split())  # CR/LF and tabs in names would break the layout, not the markup
    return text if len(text) <= limit else text[: limit - 1] + "…"


def trend_colour(kind: str, index: int) -> str:
    """The colour of the e-mail chart's series `kind`, the `index`-th drawn."""
    return KIND_COLOURS.get(kind, PALETTE[index % len(PALETTE)])


TREND_PIXELS = (1200, 480)
TREND_PLOT = Plot(left=150, bottom=64, width=1030, height=380)  # in pixels: room for the labels at 14 points


def trend_png(days: Sequence[date], series: dict[str, Sequence[int]], lang: Language) -> bytes:
    """The e-mail's chart: added / deleted / merged per day as a PNG (mail clients show no SVG), 1,200 × 480 px shown
    at 568 px wide or less: its 14-point labels stay ~11 px on a 360 px phone. Drawn like the pages' charts, in
    pixels on a bare Figure (no Axes: ~35 ms a chart less). The legend is the e-mail's text (`trend_colour`): it
    wraps on a phone in any language, where three labels in the image did not fit its width. Deterministic bytes
    (no software or date chunk)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    width_px, height_px = TREND_PIXELS
    plot, dpi = TREND_PLOT, 200
    with _styled():
        fig = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
        FigureCanvasAgg(fig)
        ticks = _value_axis(max((max(v, default=0) for v in series.values()), default=0), bins=3)
        scale = plot.height / ticks[-1]
        right = plot.left + plot.width
        _lines(fig, [(plot.left, plot.bottom + t * scale, right, plot.bottom + t * scale) for t in ticks[1:]],
               GRID, 0.6)
        slot = plot.width / max(len(days), 1)
        bar = 0.8 * slot / max(len(series), 1)
        starts = plot.left + (np.arange(len(days)) + 0.1) * slot
        for i, (kind, values) in enumerate(series.items()):
            left = starts + i * bar
            heights = np.asarray(values, dtype=float) * scale
            _rectangles(fig, np.stack([left, np.full(len(days), plot.bottom), left + bar, plot.bottom + heights], 1),
                        trend_colour(kind, i))
        _lines(fig, [(plot.left, plot.bottom, right, plot.bottom)], INK, 0.8)
        label: dict[str, Any] = {"fontsize": TREND_FONT_POINTS, "color": INK, "transform": _PIXELS}
        for t in ticks[1:]:  # the baseline needs no "0", which would touch the first day's label
            fig.text(plot.left - 14, plot.bottom + t * scale, lang.compact(t), ha="right", va="center", **label)
        for i in range(0, len(days), max(1, -(-len(days) // 4))):
            fig.text(plot.left + (i + 0.5) * slot, plot.bottom - 12, lang.day_month(days[i]), ha="center", va="top",
                     **label)
        buffer = io.BytesIO()
        # zlib level 1: half the encoding time of the default 6 for ~8 KB more of a flat-coloured image
        fig.savefig(buffer, format="png", metadata={"Software": None}, pil_kwargs={"compress_level": 1})
        return buffer.getvalue()


TREND_FONT_POINTS = 14
