"""Stage two of rendering: report models -> HTML pages and CSV downloads, one batch of workspaces at a time
(`etl.render_jobs` splits a job into batches; `etl.indexes` writes the index pages).

Output layout (mirrored to S3 by the publish step):
  {out}/index.html                                   all workspaces
  {out}/{workspace_id}/index.html                    report days, newest first, with their seven windows
  {out}/{workspace_id}/{report_day}/{window}.html    one page per preset window
  {out}/{workspace_id}/{report_day}/{window}.contacts_{kind}.csv   complete logs
  {out}/filtered/{filter-slug}/…                     filtered renders, same layout, never over the pages above
  {out}/_rendered/…                                  what each render wrote, for publishing (`etl.manifests`)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime

from markupsafe import Markup

from etl import charts, manifests
from etl.csv_logs import LogCsv, log_csv, log_csv_rows
from etl.errors import InputError
from etl.progress import Progress
from etl.report import (
    KINDS,
    OVERVIEW_SERIES,
    Filters,
    Freshness,
    PreparedInputs,
    ReportPage,
    WorkspaceInputs,
    build_page,
    filtered_inputs,
    previous_and_next_day,
)
from etl.settings import DEFAULT_S3_SSE, S3Identity
from etl.storage import BackgroundWrites, Storage, check_key, open_storage
from etl.templating import environment
from etl.warehouse import (
    ROWS_PER_GROUP,
    DayFiles,
    PastPages,
    ReportScope,
    WarehouseView,
    load_groups,
    report_scope,
)
from etl.windows import WINDOW_NAMES, end_of_night, report_day_for, window

log = logging.getLogger(__name__)


class RenderError(InputError):
    """The render cannot proceed; the message says why."""


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


# ---------------------------------------------------------------- pages

def _charts(page: ReportPage) -> dict[str, charts.Chart]:
    """Inline SVG per chart; charts without data are not drawn (the page shows a notice instead)."""
    out: dict[str, charts.Chart] = {}
    lang, days = page.lang, page.window.dates()
    applicable = [k for k in ("added", "deleted", "merged") if page.filters.applies(k)]
    if page.notices.get("overview") is None:
        out["overview"] = charts.grouped_daily_bars(
            days, {k: [getattr(r, k) or 0 for r in page.daily] for k in applicable}, "chart-overview",
            {k: lang.gettext(OVERVIEW_SERIES[k]) for k in applicable}, lang)
    if page.added_by_source:
        labels = [s.label for s in page.added_by_source]
        if len(days) > 1:
            out["added_bar"] = charts.stacked_daily_bars(
                days, {s.label: page.added_by_source_daily[s.key] for s in page.added_by_source}, "chart-added-bar",
                lang)
        else:
            out["added_bar"] = charts.category_bars(labels, [s.count for s in page.added_by_source], "chart-added-bar",
                                                    lang)
        out["added_pie"] = charts.pie(labels, [s.count for s in page.added_by_source], "chart-added-pie", lang)
    if page.connected_by_channel:
        labels = [f"{s.label} ({s.detail})" for s in page.connected_by_channel]
        counts = [s.count for s in page.connected_by_channel]
        out["connected_bar"] = charts.category_bars(labels, counts, "chart-connected-bar", lang)
        out["connected_pie"] = charts.pie(labels, counts, "chart-connected-pie", lang)
    return out


def render_page(page: ReportPage, prev_day: date | None, next_day: date | None) -> str:
    template = environment(page.workspace.locale).get_template("report.html.j2")
    # Matplotlib escaped every text node of the SVG; the legends are plain text that Jinja escapes.
    svgs = {k: {"svg": Markup(c.svg), "legend": c.legend} for k, c in _charts(page).items()}
    root = "../../" + ("../../" if page.filters.active else "")
    return template.render(page=page, summary=page.summary(), charts=svgs, numbers=page.chart_numbers(),
                           prev_day=prev_day, next_day=next_day, root=root, kinds=KINDS)


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
    rows_per_group: int = ROWS_PER_GROUP  # events a worker holds at once
    sse: str = DEFAULT_S3_SSE  # encryption of the pages written to S3 (`Settings.s3_sse`)
    s3: S3Identity = field(default_factory=S3Identity)  # who the warehouse reads and page writes on S3 are signed as
    locale: str | None = None  # the pages' language for this job, instead of each workspace's own (`--locale`)

    def warehouse(self) -> Storage:
        return open_storage(self.warehouse_uri, identity=self.s3)

    def output(self) -> Storage:
        return open_storage(self.out_uri, sse=self.sse, identity=self.s3)


def job_scope(job: RenderJob) -> ReportScope:
    """The job's workspaces checked against the warehouse, with their report days: read once per job and handed
    to each batch (`render_batch`) and to the index pages."""
    return report_scope(job.warehouse(), job.workspace_ids, job.report_day, job.cutoff).in_language(job.locale)


def render_batch(job: RenderJob, scope: ReportScope | None = None, past: PastPages | None = None) -> dict[str, int]:
    """Render every page of the job's workspaces (of `scope`, the job's own when None: a mapped DAG task reads
    it itself); the DAG maps this over workspace batches. The `past` pages of those workspaces are rendered from
    the same rows (read once: ~half the cost of a late page was reading its workspace again) and recorded with the
    job's pages, so that publish uploads them together; they are counted as `late_pages` and `late_csv`."""
    filters = Filters.parse(list(job.filters))
    scope = job_scope(job) if scope is None else scope.narrowed(job.workspace_ids).in_language(job.locale)
    counts = {"pages": 0, "csv": 0, "late_pages": 0, "late_csv": 0}
    if not scope.days:
        return counts
    past = {w: days for w, days in (past or {}).items() if w in scope.days}
    groups = load_groups(DayFiles(job.warehouse()), scope.workspaces, scope.days, job.windows,
                         filters.contact is not None, job.rows_per_group, past)
    out = job.output()
    written: dict[int, dict[date | None, tuple[tuple[str, ...], list[str]]]] = {}
    pages = len(scope.days) * len(job.windows) + sum(len(names) for days in past.values() for _, names in days)
    with (BackgroundWrites(out) as background, Progress(pages, "rendering", " pages") as bar):
        for group in groups:
            for workspace_id in list(group):  # popped: a rendered workspace's rows are freed at once
                written[workspace_id] = _render_workspace(job, background, scope.view, filters,
                                                          scope.days[workspace_id], past.get(workspace_id, []),
                                                          group.pop(workspace_id), counts, bar)
    for workspace_id, by_day in written.items():  # once every file is in place: a record never names a missing one
        for day, (windows, keys) in by_day.items():
            if day is None:
                manifests.record(out, manifests.tag(job.cutoff, job.report_day), workspace_id, windows, job.filters,
                                 keys)
            else:  # beside the night's own records of the same workspace: the report day tells them apart
                manifests.record(out, manifests.tag(job.cutoff, None), workspace_id, windows, job.filters, keys, day)
    return counts


def _render_workspace(job: RenderJob, out: BackgroundWrites, view: WarehouseView, filters: Filters, day: date,
                      past: list[tuple[date, tuple[str, ...]]], inputs: WorkspaceInputs, counts: dict[str, int],
                      bar: Progress) -> dict[date | None, tuple[tuple[str, ...], list[str]]]:
    """A workspace's pages for every window of the job, with their CSV logs, then those of its `past` report days;
    returns the windows and keys written by report day (None: the job's own)."""
    workspace = inputs.workspace
    latest = (report_day_for(end_of_night(date.fromisoformat(view.freshness.latest_ingest_date)), workspace.timezone)
              if view.freshness.latest_ingest_date else None)
    freshness = Freshness(view.freshness.run_id, view.freshness.last_event_at,
                          view.freshness.latest_ingest_date, latest)
    prepared = PreparedInputs.of(filtered_inputs(inputs, filters))
    del inputs  # the caller holds no other reference: the events go before the pages are built
    written: dict[date | None, tuple[tuple[str, ...], list[str]]] = {}
    for report_day, windows, late in [(day, job.windows, False), *((d, w, True) for d, w in past)]:
        keys = _render_day(job, out, view, filters, freshness, prepared, workspace.workspace_id, report_day, windows,
                           bar)
        written[report_day if late else None] = (windows, keys)
        counts["late_pages" if late else "pages"] += sum(k.endswith(".html") for k in keys)
        counts["late_csv" if late else "csv"] += sum(k.endswith(".csv") for k in keys)
    return written


def _render_day(job: RenderJob, out: BackgroundWrites, view: WarehouseView, filters: Filters, freshness: Freshness,
                prepared: PreparedInputs, workspace_id: int, day: date, windows: tuple[str, ...], bar: Progress
                ) -> list[str]:
    """The pages of `windows` ending on report day `day`, with their CSV logs; returns the keys written."""
    written: list[str] = []
    prev_day, next_day = previous_and_next_day(day, freshness, view.first_day)
    # The windows ending on the report day, longest first: their logs are the first rows of the longest's, whose
    # CSVs are formatted once (`LogCsv`) while they render; a log out of day order (a workspace that changed its
    # time zone) is formatted window by window
    nested = sorted((n for n in windows if window(n, day).end == day), key=lambda n: window(n, day).start)
    longest: dict[str, LogCsv | None] = {}
    for name in [*nested, *(n for n in windows if n not in nested)]:
        page = build_page(prepared, name, day, filters, freshness, job.page_log_rows)
        key = page_key(workspace_id, day, name, filters)
        out.write_bytes(key, render_page(page, prev_day, next_day).encode(), "text/html; charset=utf-8")
        written.append(key)
        for kind, table in page.logs.items():
            if table.csv_name is None or table.frame is None:
                continue
            if nested and name == nested[0] and prepared.in_day_order[kind]:
                longest[kind] = log_csv_rows(table.frame)
            shared = longest.get(kind) if name in nested else None
            csv_key = key.rsplit("/", 1)[0] + "/" + table.csv_name
            out.write_bytes(csv_key, log_csv(table.frame) if shared is None else shared.first(table.frame.height),
                            "text/csv; charset=utf-8")
            written.append(csv_key)
        if nested and name == nested[-1]:
            longest.clear()
        bar.advance()
    return written
