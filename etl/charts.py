"""Matplotlib charts as inline SVG: deterministic bytes, unique ids per chart, user text kept as inert text.

* No date and no metadata written, no hashed ids (no clip paths): the same data gives the same bytes in any process.
* Labels are <text> elements written here, escaped (`html.escape`): Matplotlib measured every label again for
  each chart (its metrics cache is keyed by the renderer, and each SVG is a new renderer), ~a fifth of the render.
  `text.parse_math` stays off should Matplotlib ever draw text here: "cost $5 vs $6" must stay text.
* Every id in a chart gets the chart's own prefix, because several charts share one HTML page.

Speed (docs/performance.md, "Render"): a chart is a handful of paths placed in points (one SVG unit each), drawn
straight into Matplotlib's SVG renderer (`_Canvas`) — no Axes, whose ticks, spines and layout cost ~10 ms before
anything is drawn, and no Figure or `savefig` either (~2/3 of what was left; the bytes are the same). A series of
bars is one compound path, gridlines are one path, and legends are HTML next to the chart (they wrap on a phone
and cost nothing to draw). Nice tick values still come from Matplotlib's locator.
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol

import matplotlib as mpl
import numpy as np
from matplotlib.backends.backend_svg import RendererSVG
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure  # pyplot is never imported: no global figure state, no GUI backend
from matplotlib.patches import PathPatch
from matplotlib.path import Path
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import Affine2D, IdentityTransform

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

_SIZE = re.compile(r'<svg([^>]*?) width="[^"]+" height="[^"]+"')
# No <metadata> block: its RDF namespaces are not allowed in SVG inside HTML
_NO_METADATA: dict[str, Any] = {"Date": None, "Creator": None, "Format": None, "Type": None}
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


class _Surface(Protocol):
    """Where `_rectangles` and `_lines` draw: an SVG canvas, or the Figure of the e-mail's PNG."""

    def fill(self, path: Path, colour: str, edge: str | None = None) -> None: ...

    def stroke(self, path: Path, colour: str, width: float, dash: tuple[float, float] | None = None) -> None: ...


class _Canvas:
    """A chart being drawn straight into Matplotlib's SVG renderer, without a Figure: each shape is one
    `RendererSVG.draw_path` with the graphics context a Patch would set up, in a group named as a Figure's
    `savefig` would name it (`figure_1`, `patch_N`), prefixed with the chart's namespace. The same bytes as drawing
    PathPatches on a Figure and saving it, at a fraction of the cost (`savefig`'s layout, artist and canvas
    machinery was ~2/3 of a chart). The labels are written as SVG text by `to_svg`."""

    def __init__(self, width: float, height: float, namespace: str) -> None:
        # the page size as `print_svg` works it out from a Figure of these inches at 72 dpi: the same floats
        self.width = width / POINTS_PER_INCH * POINTS_PER_INCH
        self.height = height / POINTS_PER_INCH * POINTS_PER_INCH
        self.namespace = namespace
        self.labels: list[str] = []
        self._buffer = io.StringIO()
        self._renderer = RendererSVG(self.width, self.height, self._buffer, metadata=_NO_METADATA)
        self._renderer.open_group("figure", f"{namespace}-figure_1")
        self._patches = 0
        self.fill(Path.unit_rectangle().transformed(Affine2D().scale(self.width, self.height)), "white")

    def _draw(self, path: Path, face: str | None, edge: str | None, width: float,
              dash: tuple[float, float] | None) -> None:
        self._patches += 1
        renderer = self._renderer
        renderer.open_group("patch", f"{self.namespace}-patch_{self._patches}")
        gc = renderer.new_gc()  # as `Patch._draw_paths_with_artist_properties` sets it up
        gc.set_linewidth(width if edge else 0)
        gc.set_capstyle("butt")
        gc.set_joinstyle("miter")
        gc.set_foreground(edge or (0.0, 0.0, 0.0, 0.0))
        gc.set_dashes(0, [d * width for d in dash] if edge and dash else None)  # dashes scale with the width
        renderer.draw_path(gc, path, _PIXELS, to_rgba(face) if face else None)
        gc.restore()
        renderer.close_group("patch")

    def fill(self, path: Path, colour: str, edge: str | None = None) -> None:
        self._draw(path, colour, edge, 1.0, None)

    def stroke(self, path: Path, colour: str, width: float, dash: tuple[float, float] | None = None) -> None:
        self._draw(path, None, colour, width, dash)

    def text(self, x: float, y: float, text: str, anchor: str = "start", centred: bool = False) -> None:
        """A label at (x, y) points from the bottom left: y is its baseline, or its middle if `centred`;
        `anchor` (start, middle, end) is where x falls on it."""
        baseline = self.height - y + (_CENTRE_TO_BASELINE if centred else 0.0)
        self.labels.append(f'<text x="{_number(x)}" y="{_number(baseline)}" text-anchor="{anchor}">'
                           f"{html.escape(text, quote=False)}</text>")

    def svg(self) -> str:
        """The SVG document as Matplotlib wrote it, from `<svg`."""
        self._renderer.close_group("figure")
        self._renderer.finalize()
        svg = self._buffer.getvalue()
        return svg[svg.index("<svg"):]


class _FigureSurface:
    """The e-mail chart's Figure, drawn as PathPatches (the PNG needs Matplotlib's text too)."""

    def __init__(self, fig: Figure) -> None:
        self.fig = fig

    def fill(self, path: Path, colour: str, edge: str | None = None) -> None:
        self.fig.add_artist(PathPatch(path, facecolor=colour, edgecolor=edge or "none", transform=_PIXELS))

    def stroke(self, path: Path, colour: str, width: float, dash: tuple[float, float] | None = None) -> None:
        self.fig.add_artist(PathPatch(path, fill=False, edgecolor=colour, linewidth=width,
                                      linestyle=(0, dash) if dash else "solid", transform=_PIXELS))


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


def to_svg(canvas: _Canvas, css_class: str = "chart-svg") -> str:
    """The chart as an inline <svg> element; its ids all start with the canvas's namespace."""
    svg = canvas.svg()
    if canvas.labels:
        labels = "\n   ".join(canvas.labels)
        svg = svg.replace("\n</svg>", f'\n <g style="{_LABEL_STYLE}">\n   {labels}\n </g>\n</svg>', 1)
    return _SIZE.sub(rf'<svg\1 class="{css_class}" aria-hidden="true"', svg, count=1)


def _bars_path(boxes: np.ndarray) -> Path:
    """Rectangles (rows of x0, y0, x1, y1) as one compound path: one <path>, where a bar each costs ~1 ms."""
    vertices = boxes[:, [0, 1, 0, 3, 2, 3, 2, 1, 0, 1]].reshape(-1, 2)  # (x0, y0) (x0, y1) (x1, y1) (x1, y0) (x0, y0)
    codes = np.tile([Path.MOVETO, Path.LINETO, Path.LINETO, Path.LINETO, Path.CLOSEPOLY], len(boxes))
    return Path(vertices, codes)


def _rectangles(surface: _Surface, boxes: np.ndarray, colour: str) -> None:
    """Rectangles in points (`_bars_path`) filled with `colour`, the empty ones left out."""
    boxes = boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]
    if len(boxes):
        surface.fill(_bars_path(boxes), colour)


def _lines(surface: _Surface, segments: Sequence[tuple[float, float, float, float]], colour: str, width: float,
           dash: tuple[float, float] | None = None) -> None:
    vertices = np.array(segments, dtype=float).reshape(-1, 2)
    codes = np.tile([Path.MOVETO, Path.LINETO], len(segments))
    surface.stroke(Path(vertices, codes), colour, width, dash)


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
    _lines(canvas, [(plot.left, plot.bottom + t * scale, right, plot.bottom + t * scale) for t in ticks[1:]],
           GRID, 0.6)
    _lines(canvas, [(plot.left, plot.bottom, right, plot.bottom)], BASELINE, 0.8)
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
        canvas, plot = _Canvas(*DAILY_SIZE, namespace), DAILY_PLOT
        top = max((max(v, default=0) for v in series.values()), default=0)
        scale = _daily_frame(canvas, plot, days, max(top, limit or 0), lang)
        if limit is not None:
            y = plot.bottom + limit * scale
            _lines(canvas, [(plot.left, y, plot.left + plot.width, y)], INK, 1.2, dash=(4, 3))
        slot = plot.width / len(days)
        width = min(slot * 0.8 / max(len(series), 1), 40.0)  # one day must not fill the chart with slabs
        starts = plot.left + np.arange(len(days)) * slot + (slot - width * len(series)) / 2
        legend = []
        for i, (kind, values) in enumerate(series.items()):
            colour = KIND_COLOURS.get(kind, PALETTE[i % len(PALETTE)])
            x0 = starts + i * width
            heights = np.asarray(values, dtype=float) * scale
            _rectangles(canvas, np.stack([x0, np.full_like(x0, plot.bottom), x0 + width, plot.bottom + heights], 1),
                        colour)
            legend.append((colour, (labels or {}).get(kind, kind.capitalize())))
        return Chart(to_svg(canvas), tuple(legend))


def stacked_daily_bars(days: Sequence[date], series: Mapping[str, Sequence[float]], namespace: str,
                       lang: Language | None = None) -> Chart:
    """One bar per day, stacked by category (sources)."""
    with _styled():
        canvas, plot = _Canvas(*DAILY_SIZE, namespace), DAILY_PLOT
        totals = np.sum([np.asarray(v, dtype=float) for v in series.values()], axis=0) if series else [0.0]
        scale = _daily_frame(canvas, plot, days, float(np.max(totals)), lang or language())
        slot = plot.width / len(days)
        x0 = plot.left + np.arange(len(days)) * slot + slot * 0.125
        bottom = np.full(len(days), float(plot.bottom))
        legend = []
        for i, (label, values) in enumerate(series.items()):
            colour = PALETTE[i % len(PALETTE)]
            top = bottom + np.asarray(values, dtype=float) * scale
            _rectangles(canvas, np.stack([x0, bottom, x0 + slot * 0.75, top], 1), colour)
            legend.append((colour, label))
            bottom = top
        return Chart(to_svg(canvas), tuple(legend))


def category_bars(labels: Sequence[str], values: Sequence[int], namespace: str, lang: Language | None = None
                  ) -> Chart:
    """Horizontal bars, one per category in the given order (largest first): each category's name on a line of its
    own above its bar (a name beside the bar left too little room on a phone), its count after the bar."""
    lang = lang or language()
    with _styled():
        row, pad = 46.0, 6.0  # per category: the name, the bar, a gap (room for a phone's larger font)
        height = len(labels) * row + 2 * pad
        canvas = _Canvas(DAILY_SIZE[0], height, namespace)
        left, width = 6.0, 400.0  # the count after the longest bar still fits at the phone font size
        longest = max(values, default=0) or 1
        for i, (label, value) in enumerate(zip(labels, values, strict=True)):
            top = height - pad - i * row
            end = left + width * value / longest
            # placed by baselines, as in `_daily_frame`
            canvas.text(left, top - 15, isolated(_short(label)))
            _rectangles(canvas, np.array([[left, top - 40, max(end, left + 1), top - 24]]),
                        PALETTE[i % len(PALETTE)])
            canvas.text(max(end, left + 1) + 4, top - 36, lang.number(value))
        return Chart(to_svg(canvas))


def pie(labels: Sequence[str], values: Sequence[int], namespace: str, lang: Language | None = None) -> Chart:
    """Share of each category; the legend beside it gives percentage and number."""
    lang = lang or language()
    total = sum(values) or 1
    size = 160.0
    with _styled():
        canvas = _Canvas(size, size, namespace)
        angle = 90.0  # clockwise from twelve o'clock, like the bar chart's order
        legend = []
        for i, (label, value) in enumerate(zip(labels, values, strict=True)):
            colour = PALETTE[i % len(PALETTE)]
            sweep = 360.0 * value / total
            if sweep > 0:
                canvas.fill(_wedge(size / 2, size / 2 - 3, angle - sweep, angle), colour, edge="white")
            angle -= sweep
            share = lang.share(round(value / total * 100, 1))
            legend.append((colour, f"{isolated(label)} — {share} ({lang.number(value)})"))  # HTML wraps: no cut
        return Chart(to_svg(canvas, "chart-svg chart-pie"), tuple(legend))


def _wedge(centre: float, radius: float, theta1: float, theta2: float) -> Path:
    """The path of `matplotlib.patches.Wedge((centre, centre), radius, theta1, theta2)`, without the artist."""
    if abs((theta2 - theta1) - 360) <= 1e-12:
        theta1, theta2, connector = 0, 360, Path.MOVETO
    else:
        connector = Path.LINETO
    arc = Path.arc(theta1, theta2)
    vertices = np.concatenate([arc.vertices, [(0, 0), (0, 0)]])
    codes = np.concatenate([np.asarray(arc.codes), [connector, Path.CLOSEPOLY]])
    return Path(vertices * radius + centre, codes)


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
        surface = _FigureSurface(fig)
        _lines(surface, [(plot.left, plot.bottom + t * scale, right, plot.bottom + t * scale) for t in ticks[1:]],
               GRID, 0.6)
        slot = plot.width / max(len(days), 1)
        bar = 0.8 * slot / max(len(series), 1)
        starts = plot.left + (np.arange(len(days)) + 0.1) * slot
        for i, (kind, values) in enumerate(series.items()):
            left = starts + i * bar
            heights = np.asarray(values, dtype=float) * scale
            bars = np.stack([left, np.full(len(days), plot.bottom), left + bar, plot.bottom + heights], 1)
            _rectangles(surface, bars, trend_colour(kind, i))
        _lines(surface, [(plot.left, plot.bottom, right, plot.bottom)], INK, 0.8)
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
