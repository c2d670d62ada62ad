"""Stage two of rendering: report models -> HTML pages, CSV downloads and index pages.

Output layout (mirrored to S3 by the publish step):
  {out}/index.html                                   all workspaces
  {out}/{workspace_id}/index.html                    report days, newest first, with their seven windows
  {out}/{workspace_id}/{report_day}/{window}.html    one page per preset window
  {out}/{workspace_id}/{report_day}/{window}.contacts_{kind}.csv   complete logs
  {out}/filtered/{filter-slug}/…                     filtered renders, same layout, never over the pages above
"""

from __future__ import annotations

import heapq
import io
import json
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from pathlib import Path
from typing import Any

import polars as pl
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from etl import charts
from etl.bidi import bdi, isolated
from etl.contract import SOURCE_LABELS, SOURCE_MEANINGS
from etl.errors import InputError
from etl.pipeline import read_daily
from etl.progress import Progress
from etl.report import (
    KINDS,
    NOT_APPLICABLE,
    Filters,
    Freshness,
    PreparedInputs,
    ReportPage,
    Workspace,
    WorkspaceInputs,
    build_page,
    filtered_inputs,
    needed_days,
    previous_and_next_day,
)
from etl.storage import BackgroundWrites, Storage, check_key, open_storage, read_parquet
from etl.windows import WINDOW_NAMES, WINDOW_TITLES, report_day_for

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
_DATE_KEY = re.compile(r"local_date=(\d{4}-\d{2}-\d{2})/", re.ASCII)
CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")
# A workspace's render work beyond its events, in events' worth: its seven pages, charts and files take ~0.3-0.5 s
# whatever its size, an event ~5 µs more (measured at 10 M: docs/performance.md, "Render").
WORKSPACE_COST = 75_000


class RenderError(InputError):
    """The render cannot proceed; the message says why."""


# ---------------------------------------------------------------- Jinja

def script_json(value: Any) -> Markup:
    """JSON safe inside <script>: '<', '>' and '&' escaped, so no name can close the element."""
    text = json.dumps(value, ensure_ascii=False, sort_keys=False, separators=(",", ":"))
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return Markup(text)


def _autoescape(name: str | None) -> bool:
    return not (name or "").endswith(".txt.j2")


@cache
def environment(templates: Path = TEMPLATES) -> Environment:
    """One environment: autoescape on for every template whatever its suffix (.html.j2 included), except the
    plain-text e-mail body, where HTML entities would be wrong (it is never parsed as markup)."""
    env = Environment(loader=FileSystemLoader(templates), autoescape=_autoescape, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["script_json"] = script_json
    env.filters["thousands"] = lambda n: "—" if n is None else f"{n:,}"
    env.filters["bdi"] = bdi  # user-provided text in HTML
    env.filters["isolate"] = isolated  # user-provided text where no markup goes (titles, attributes, plain text)
    env.globals.update(WINDOW_TITLES=WINDOW_TITLES, WINDOW_NAMES=WINDOW_NAMES, SOURCE_LABELS=SOURCE_LABELS,
                       source_meanings=SOURCE_MEANINGS, not_applicable=NOT_APPLICABLE)
    return env


# ---------------------------------------------------------------- safe names

def check_workspace_id(value: object) -> int:
    if type(value) is not int or value <= 0:
        raise RenderError(f"workspace id must be a positive integer, not {value!r}")
    return value


def page_key(workspace_id: int, report_day: date, window_name: str, filters: Filters) -> str:
    if window_name not in WINDOW_NAMES:
        raise RenderError(f"unknown window {window_name!r}")
    base = f"{check_workspace_id(workspace_id)}/{report_day.isoformat()}/{window_name}.html"
    return check_key(f"filtered/{filters.slug()}/{base}" if filters.active else base)


# ---------------------------------------------------------------- CSV

def neutralise(cell: str) -> str:
    """OWASP CSV injection guidance: a cell a spreadsheet would run as a formula starts with a quote."""
    return "'" + cell if cell.startswith(CSV_FORMULA_START) else cell


CSV_COLUMNS: tuple[str, ...] = ("timestamp_local", "timestamp_utc", "contact_id", "contact_name", "source",
                                "user_id", "user_name", "channel_id", "channel_name", "channel_type",
                                "merged_contact_id", "event_id")


def _neutralised(column: str) -> pl.Expr:
    """`neutralise` as an expression: the same rule, vectorised (logs of large workspaces run to millions)."""
    text = pl.col(column).cast(pl.String)
    return (pl.when(text.str.contains(_FORMULA_START)).then(pl.lit("'") + text).otherwise(text)
            .fill_null("").alias(column))


_FORMULA_START = "^[" + re.escape("".join(CSV_FORMULA_START)) + "]"
_CSV_CELLS = tuple(_neutralised(c) for c in CSV_COLUMNS)  # built once: a workspace writes 28 CSV files


def log_csv(frame: pl.DataFrame) -> bytes:
    """RFC 4180 (CRLF, every field quoted), UTF-8 with a BOM so spreadsheets pick the encoding."""
    out = io.BytesIO()
    out.write("\ufeff".encode())
    frame.select(_CSV_CELLS).write_csv(out, quote_style="always", line_terminator="\r\n")
    return out.getvalue()


# ---------------------------------------------------------------- warehouse reads

@dataclass(frozen=True)
class WarehouseView:
    workspaces: dict[int, Workspace]
    freshness: Freshness
    first_day: date | None
    runs: tuple[dict[str, Any], ...]


def read_view(warehouse: Storage) -> WarehouseView:
    if not warehouse.exists("workspaces.parquet"):
        raise RenderError(f"{warehouse.uri} has no workspaces.parquet: run `contacts-report etl` first")
    dim = read_parquet(warehouse, "workspaces.parquet")
    workspaces = {w: Workspace(w, n, tz) for w, n, tz in dim.select("workspace_id", "name", "timezone").rows()}
    runs = tuple(json.loads(warehouse.read_bytes(k)) for k in warehouse.list("_runs") if k.endswith(".json"))
    runs = tuple(sorted(runs, key=lambda r: r["ingest_date"]))
    latest = runs[-1] if runs else None
    last_events = [r["last_event_at"] for r in runs if r.get("last_event_at")]
    days = [date.fromisoformat(m.group(1)) for k in warehouse.list("events") if (m := _DATE_KEY.search(k))]
    freshness = Freshness(
        run_id=latest["run_id"] if latest else None,
        last_event_at=max(last_events) if last_events else None,
        latest_ingest_date=latest["ingest_date"] if latest else None,
        latest_report_day=None,
    )
    return WarehouseView(workspaces, freshness, min(days) if days else None, runs)


class DayFiles:
    """A warehouse's day files for one render batch: listed once and each fetched once (compressed Parquet is
    a fraction of the decoded rows), so that the batch can be loaded a group of workspaces at a time."""

    def __init__(self, warehouse: Storage) -> None:
        self.warehouse = warehouse
        self._keys: dict[str, list[tuple[date, str]]] = {}
        self._bytes: dict[str, bytes] = {}

    def read(self, folder: str, start: date, end: date, ids: Sequence[int]) -> pl.DataFrame | None:
        rows = self.scan(folder, start, end, ids)
        if rows is None:
            return None
        # A day has one file per arrival day: events simply stack, aggregates add up.
        return read_daily([rows.collect()]) if folder == "daily" else rows.collect()

    def scan(self, folder: str, start: date, end: date, ids: Sequence[int]) -> pl.LazyFrame | None:
        """The rows of the workspaces `ids` in the folder's files of days start..end, as one query (None: no files).
        Filtered as the files are decoded: a file read whole and then filtered would keep its whole text alive
        behind the selected rows (string views share their buffers), which held every day of every workspace in
        memory for a large one (loading 2.4 M events at 10 M: 2.7 GB, now 1.0 GB)."""
        if folder not in self._keys:
            self._keys[folder] = [(date.fromisoformat(m.group(1)), k) for k in self.warehouse.list(folder)
                                  if (m := _DATE_KEY.search(k))]
        keys = [k for day, k in self._keys[folder] if start <= day <= end]
        if not keys:
            return None
        wanted = pl.col("workspace_id").is_in(list(ids))
        return pl.concat([pl.scan_parquet(io.BytesIO(self._fetch(k))).filter(wanted) for k in keys], how="vertical")

    def _fetch(self, key: str) -> bytes:
        if key not in self._bytes:
            self._bytes[key] = self.warehouse.read_bytes(key)
        return self._bytes[key]


EMPTY_FACTS = pl.DataFrame(schema={"workspace_id": pl.Int64, "local_date": pl.Date, "event_type": pl.String,
                                   "source": pl.String, "channel_id": pl.Int64, "user_id": pl.Int64,
                                   "events": pl.Int64})


def load_inputs(warehouse: Storage, workspaces: Sequence[Workspace], days: dict[int, date],
                windows: tuple[str, ...], need_all_events: bool) -> dict[int, WorkspaceInputs]:
    """The workspaces' aggregates and events for their report days, all at once (small selections)."""
    groups = load_groups(DayFiles(warehouse), workspaces, days, windows, need_all_events, rows_per_group=None)
    return {w: inputs for group in groups for w, inputs in group.items()}


def load_groups(files: DayFiles, workspaces: Sequence[Workspace], days: dict[int, date], windows: tuple[str, ...],
                need_all_events: bool, rows_per_group: int | None) -> Iterator[dict[int, WorkspaceInputs]]:
    """The workspaces' inputs, in order, a group at a time: each group's events add up to about
    `rows_per_group` (sizes from the daily aggregates), so that a worker holds one group's rows at a time whatever
    the batch's size. A workspace larger than the budget is a group of its own; None puts all in one group."""
    fact_start, event_start, end = _span(workspaces, days, windows, need_all_events)
    sizes = event_counts(files, workspaces, days, windows, need_all_events) if rows_per_group is not None else {}
    for group in _split(workspaces, sizes, rows_per_group):
        yield _load_group(files, group, fact_start, event_start, end)


def event_counts(files: DayFiles, workspaces: Sequence[Workspace], days: dict[int, date], windows: tuple[str, ...],
                 need_all_events: bool) -> dict[int, int]:
    """workspace id -> the events its pages load (from the daily aggregates: small files)."""
    _, event_start, end = _span(workspaces, days, windows, need_all_events)
    counted = files.scan("daily", event_start, end, [w.workspace_id for w in workspaces])
    if counted is None:
        return {}
    return dict(counted.group_by("workspace_id").agg(pl.col("events").sum()).collect().rows())


def _load_group(files: DayFiles, group: list[Workspace], fact_start: date, event_start: date, end: date
                ) -> dict[int, WorkspaceInputs]:
    # A function of its own: a generator's locals would keep the group's whole events frame alive next to its
    # per-workspace parts while the group renders.
    ids = [w.workspace_id for w in group]
    facts_by = _by_workspace(files.read("daily", fact_start, end, ids))
    events = files.read("events", event_start, end, ids)
    events_by, empty_events = _by_workspace(events), _empty_events(events)
    return {w.workspace_id: WorkspaceInputs(w, facts_by.get(w.workspace_id, EMPTY_FACTS),
                                            events_by.get(w.workspace_id, empty_events)) for w in group}


def _split(workspaces: Sequence[Workspace], sizes: dict[int, int], budget: int | None) -> list[list[Workspace]]:
    groups: list[list[Workspace]] = [[]]
    held = 0
    for workspace in workspaces:
        size = sizes.get(workspace.workspace_id, 0)
        if budget is not None and groups[-1] and held + size > budget:
            groups.append([])
            held = 0
        groups[-1].append(workspace)
        held += size
    return groups


def _by_workspace(frame: pl.DataFrame | None) -> dict[int, pl.DataFrame]:
    if frame is None or frame.is_empty():
        return {}
    if frame["workspace_id"].n_unique() == 1:  # a large workspace is a group of its own: no copy of its rows
        return {frame["workspace_id"][0]: frame}
    return {key[0]: part for key, part in frame.partition_by("workspace_id", as_dict=True).items()}


def _span(workspaces: Sequence[Workspace], days: dict[int, date], windows: tuple[str, ...],
          need_all_events: bool) -> tuple[date, date, date]:
    """(first aggregate day, first event day, last day) the workspaces' pages need."""
    spans = [needed_days(days[w.workspace_id], windows) for w in workspaces]
    fact_start, event_start, end = min(s[0] for s in spans), min(s[1] for s in spans), max(s[2] for s in spans)
    return fact_start, fact_start if need_all_events else event_start, end


def _empty_events(sample: pl.DataFrame | None) -> pl.DataFrame:
    if sample is not None:
        return sample.clear()
    from etl.contract import EVENT_SCHEMA

    return pl.DataFrame(schema={**EVENT_SCHEMA, "timezone": pl.String, "local_ts": pl.Datetime("us"),
                                "local_date": pl.Date})


# ---------------------------------------------------------------- pages

def _charts(page: ReportPage) -> dict[str, charts.Chart]:
    """Inline SVG per chart; charts without data are not drawn (the page shows a notice instead)."""
    out: dict[str, charts.Chart] = {}
    days = page.window.dates()
    applicable = [k for k in ("added", "deleted", "merged") if page.filters.applies(k)]
    if page.notices.get("overview") is None:
        out["overview"] = charts.grouped_daily_bars(
            days, {k: [getattr(r, k) or 0 for r in page.daily] for k in applicable}, "chart-overview")
    if page.added_by_source:
        labels = [s.label for s in page.added_by_source]
        if len(days) > 1:
            out["added_bar"] = charts.stacked_daily_bars(
                days, {s.label: page.added_by_source_daily[s.key] for s in page.added_by_source}, "chart-added-bar")
        else:
            out["added_bar"] = charts.category_bars(labels, [s.count for s in page.added_by_source], "chart-added-bar")
        out["added_pie"] = charts.pie(labels, [s.count for s in page.added_by_source], "chart-added-pie")
    if page.connected_by_channel:
        labels = [f"{s.label} ({s.detail})" for s in page.connected_by_channel]
        counts = [s.count for s in page.connected_by_channel]
        out["connected_bar"] = charts.category_bars(labels, counts, "chart-connected-bar")
        out["connected_pie"] = charts.pie(labels, counts, "chart-connected-pie")
    return out


def render_page(page: ReportPage, prev_day: date | None, next_day: date | None) -> str:
    template = environment().get_template("report.html.j2")
    # Matplotlib escaped every text node of the SVG; the legends are plain text that Jinja escapes.
    svgs = {k: {"svg": Markup(c.svg), "legend": c.legend} for k, c in _charts(page).items()}
    root = "../../" + ("../../" if page.filters.active else "")
    return template.render(page=page, summary=page.summary(), charts=svgs, prev_day=prev_day, next_day=next_day,
                           root=root, kinds=KINDS)


@dataclass(frozen=True)
class RenderJob:
    warehouse_uri: str
    out_uri: str
    workspace_ids: tuple[int, ...]
    report_day: date | None
    cutoff: datetime | None
    windows: tuple[str, ...]
    filters: tuple[str, ...]
    page_log_rows: int = 500
    rows_per_group: int = 1_000_000  # events a worker holds at once (docs/performance.md, "Render")


def report_days(view: WarehouseView, ids: Iterable[int], report_day: date | None, cutoff: datetime | None
                ) -> dict[int, date]:
    if report_day is not None:
        return dict.fromkeys(ids, report_day)
    if cutoff is None:
        raise RenderError("give --report-day or --cutoff")
    return {w: report_day_for(cutoff, view.workspaces[w].timezone) for w in ids}


@dataclass(frozen=True)
class _Scope:
    """What a job's workspaces are: checked against the warehouse, with their report days and filters."""

    warehouse: Storage
    view: WarehouseView
    filters: Filters
    workspaces: list[Workspace]
    days: dict[int, date]

    @classmethod
    def of(cls, job: RenderJob) -> _Scope:
        warehouse = open_storage(job.warehouse_uri)
        filters = Filters.parse(list(job.filters))
        view = read_view(warehouse)
        unknown = [w for w in job.workspace_ids if w not in view.workspaces]
        if unknown:
            raise RenderError(f"workspaces {unknown} are not in the warehouse's workspaces dimension")
        workspaces = [view.workspaces[w] for w in job.workspace_ids]
        days = report_days(view, job.workspace_ids, job.report_day, job.cutoff) if workspaces else {}
        return cls(warehouse, view, filters, workspaces, days)

    @property
    def need_all_events(self) -> bool:
        return self.filters.contact is not None


def render_batch(job: RenderJob) -> dict[str, int]:
    """Render every page of the job's workspaces; the DAG maps this over workspace batches."""
    scope = _Scope.of(job)
    if not scope.workspaces:
        return {"pages": 0, "csv": 0}
    counts = {"pages": 0, "csv": 0}
    groups = load_groups(DayFiles(scope.warehouse), scope.workspaces, scope.days, job.windows, scope.need_all_events,
                         job.rows_per_group)
    with (BackgroundWrites(open_storage(job.out_uri)) as out,
          Progress(len(scope.workspaces) * len(job.windows), "rendering", " pages") as bar):
        for group in groups:
            for workspace_id in list(group):  # popped: a rendered workspace's rows are freed at once
                _render_workspace(job, out, scope.view, scope.filters, scope.days[workspace_id],
                                  group.pop(workspace_id), counts, bar)
    return counts


def _render_workspace(job: RenderJob, out: BackgroundWrites, view: WarehouseView, filters: Filters, day: date,
                      inputs: WorkspaceInputs, counts: dict[str, int], bar: Progress) -> None:
    """A workspace's pages for every window of the job, with their CSV logs."""
    workspace = inputs.workspace
    latest = (report_day_for(_end_of(view.freshness.latest_ingest_date), workspace.timezone)
              if view.freshness.latest_ingest_date else None)
    freshness = Freshness(view.freshness.run_id, view.freshness.last_event_at,
                          view.freshness.latest_ingest_date, latest)
    prev_day, next_day = previous_and_next_day(day, freshness, view.first_day)
    prepared = PreparedInputs.of(filtered_inputs(inputs, filters))
    del inputs  # the caller holds no other reference: the events go before the pages are built
    for name in job.windows:
        page = build_page(prepared, name, day, filters, freshness, job.page_log_rows)
        key = page_key(workspace.workspace_id, day, name, filters)
        out.write_bytes(key, render_page(page, prev_day, next_day).encode(), "text/html; charset=utf-8")
        counts["pages"] += 1
        for table in page.logs.values():
            if table.csv_name is not None and table.frame is not None:
                out.write_bytes(key.rsplit("/", 1)[0] + "/" + table.csv_name, log_csv(table.frame),
                                "text/csv; charset=utf-8")
                counts["csv"] += 1
        bar.advance()


def _end_of(ingest_date: str) -> datetime:
    from datetime import UTC, timedelta

    return datetime.combine(date.fromisoformat(ingest_date) + timedelta(days=1), datetime.min.time(), UTC)


def balanced_batches(ids: Sequence[int], sizes: dict[int, int], count: int) -> list[tuple[int, ...]]:
    """`ids` in `count` batches of about equal render work, the batch with the most work first (parallel tasks
    start in that order). Work is a workspace's events (`sizes`) plus WORKSPACE_COST; each workspace, largest
    first, joins the batch with the least work so far (longest-processing-time-first scheduling): sizes are very
    skewed, and one large workspace can be a batch's whole share. Each batch lists its ids in ascending order."""
    count = max(1, min(count, len(ids)))
    members: list[list[int]] = [[] for _ in range(count)]
    loads = [(0, index) for index in range(count)]  # a heap of (work so far, batch)
    for workspace_id in sorted(ids, key=lambda w: (-sizes.get(w, 0), w)):
        work, index = heapq.heappop(loads)
        members[index].append(workspace_id)
        heapq.heappush(loads, (work + sizes.get(workspace_id, 0) + WORKSPACE_COST, index))
    totals = {index: total for total, index in loads}
    return [tuple(sorted(members[index])) for index in sorted(range(count), key=lambda i: (-totals[i], i))]


def planned_batches(job: RenderJob, count: int) -> list[tuple[int, ...]]:
    """The job's workspaces in `count` batches of about equal work (`balanced_batches`), sized from the warehouse's
    daily aggregates over the days the job's pages load."""
    if count <= 1 or len(job.workspace_ids) <= 1:
        return balanced_batches(job.workspace_ids, {}, count)
    scope = _Scope.of(job)
    sizes = event_counts(DayFiles(scope.warehouse), scope.workspaces, scope.days, job.windows, scope.need_all_events)
    return balanced_batches(job.workspace_ids, sizes, count)


def render(job: RenderJob, workers: int = 1) -> dict[str, int]:
    """Render in `workers` processes (spawned: Polars and forking do not mix), then the index pages."""
    parts = planned_batches(job, workers)
    jobs = [RenderJob(**{**job.__dict__, "workspace_ids": part}) for part in parts]
    if len(jobs) <= 1:
        results = [render_batch(j) for j in jobs]
    else:
        import multiprocessing

        with ProcessPoolExecutor(max_workers=len(jobs), mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(render_batch, jobs))
    totals = {"pages": sum(r["pages"] for r in results), "csv": sum(r["csv"] for r in results)}
    view = read_view(open_storage(job.warehouse_uri))
    write_indexes(open_storage(job.out_uri), view)
    return totals


# ---------------------------------------------------------------- index pages

_PAGE = re.compile(r"^(\d+)/(\d{4}-\d{2}-\d{2})/([a-z0-9_]+)\.html$", re.ASCII)


def write_indexes(out: Storage, view: WarehouseView) -> None:
    """Index pages from what is actually published under `out` (unfiltered pages only)."""
    found: dict[int, dict[str, set[str]]] = {}
    for key in out.list():
        m = _PAGE.match(key)
        if m and int(m.group(1)) in view.workspaces:
            found.setdefault(int(m.group(1)), {}).setdefault(m.group(2), set()).add(m.group(3))
    env = environment()
    for wid, days in sorted(found.items()):
        rows = [(d, [w for w in WINDOW_NAMES if w in days[d]]) for d in sorted(days, reverse=True)]
        html = env.get_template("workspace_index.html.j2").render(workspace=view.workspaces[wid], days=rows,
                                                                  freshness=view.freshness)
        out.write_bytes(f"{wid}/index.html", html.encode(), "text/html; charset=utf-8")
    listing = [(view.workspaces[w], max(found[w]) if w in found else None) for w in sorted(view.workspaces)]
    html = env.get_template("index.html.j2").render(workspaces=listing, freshness=view.freshness)
    out.write_bytes("index.html", html.encode(), "text/html; charset=utf-8")
