"""A render job over many workspaces: split into batches of about equal work, rendered in worker processes, then
the index pages. The DAG maps the same batches over tasks (`etl.nightly`)."""

from __future__ import annotations

import heapq
import json
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, date, timedelta

from etl import manifests
from etl.indexes import write_indexes
from etl.render import RenderJob, job_scope, render_batch
from etl.report import Filters
from etl.storage import Storage
from etl.warehouse import DayFiles, PastPages, ReportScope, event_counts, run_key
from etl.windows import WINDOW_NAMES, windows_showing

# A workspace's render work beyond its events, in events' worth: its seven pages, charts and files take ~0.3-0.5 s
# whatever its size, an event ~5 µs more (measured at 10 M: docs/performance.md, "Render").
WORKSPACE_COST = 75_000


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


def planned_batches(job: RenderJob, count: int, scope: ReportScope) -> list[tuple[int, ...]]:
    """The job's workspaces in `count` batches of about equal work (`balanced_batches`), sized from the warehouse's
    daily aggregates over the days the job's pages load (`scope`: the job's, `job_scope`)."""
    if count <= 1 or len(job.workspace_ids) <= 1:
        return balanced_batches(job.workspace_ids, {}, count)
    need_all_events = Filters.parse(list(job.filters)).contact is not None
    sizes = event_counts(DayFiles(job.warehouse()), scope.workspaces, scope.days, job.windows,
                         need_all_events)
    return balanced_batches(job.workspace_ids, sizes, count)


def render(job: RenderJob, workers: int = 1, scope: ReportScope | None = None, late_pages_days: int = 0
           ) -> dict[str, int]:
    """Render in `workers` processes (spawned: Polars and forking do not mix), then the index pages; the job's
    scope (`job_scope`, read here when not given) is read once and handed to each batch. With a cutoff, each batch
    also renders the past pages the night's late events changed, within `late_pages_days` report days
    (`late_work`), from the rows it reads for tonight's."""
    scope = job_scope(job) if scope is None else scope.in_language(job.locale)
    past = late_work(job.warehouse(), job, scope, late_pages_days)
    parts = [RenderJob(**{**job.__dict__, "workspace_ids": part}) for part in planned_batches(job, workers, scope)]
    pasts = [{w: past[w] for w in part.workspace_ids if w in past} for part in parts]
    if workers <= 1 or len(parts) <= 1:
        results = [render_batch(part, scope, work) for part, work in zip(parts, pasts, strict=True)]
    else:
        import multiprocessing

        with ProcessPoolExecutor(max_workers=min(workers, len(parts)),
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(render_batch, parts, [scope] * len(parts), pasts))
    totals = {"pages": sum(r["pages"] for r in results), "csv": sum(r["csv"] + r["late_csv"] for r in results),
              "late_pages": sum(r["late_pages"] for r in results)}
    out = job.output()
    write_indexes(out, scope.view, manifests.rendered(out, manifests.tag(job.cutoff, job.report_day)))
    return totals


def late_pages(late_days: dict[int, list[date]], report_days: dict[int, date], first_day: date | None,
               horizon: int) -> dict[tuple[date, tuple[str, ...]], list[int]]:
    """(past report day, its windows to render again) -> workspaces, for the late events of a night: each
    workspace's `horizon` report days before tonight's (`report_days`; none before the warehouse's `first_day`),
    and of those only the windows whose days or previous period hold a late day (`late_days`)."""
    pages: dict[tuple[date, tuple[str, ...]], list[int]] = {}
    for workspace_id, tonight in report_days.items():
        days = late_days.get(workspace_id, [])
        for back in range(1, horizon + 1 if days else 1):
            report_day = tonight - timedelta(days=back)
            if first_day is not None and report_day < first_day:
                break
            shown = {name for day in days for name in windows_showing(day, report_day)}
            if shown:
                windows = tuple(name for name in WINDOW_NAMES if name in shown)
                pages.setdefault((report_day, windows), []).append(workspace_id)
    return dict(sorted(pages.items()))


def late_days(warehouse: Storage, night: date) -> dict[int, list[date]]:
    """workspace -> the reported days the night's late events changed, from its run summary (none in a summary
    written before it listed them, or before the night ran)."""
    summary = json.loads(warehouse.read_bytes(run_key(night))) if warehouse.exists(run_key(night)) else {}
    return {int(w): [date.fromisoformat(d) for d in days]
            for w, days in summary.get("late_days_by_workspace", {}).items()}


def late_work(warehouse: Storage, job: RenderJob, scope: ReportScope, horizon: int) -> PastPages:
    """workspace -> the past report days (and their windows, of the job's) that the late events of the night ending
    at `job.cutoff` changed (`late_pages`, from the night's run summary), for the workspaces of `scope`; none for a
    render by report day."""
    if job.cutoff is None or horizon <= 0:
        return {}
    night = (job.cutoff.astimezone(UTC) - timedelta(microseconds=1)).date()  # the arrival day the cutoff ends
    work: PastPages = {}
    for (day, windows), ids in late_pages(late_days(warehouse, night), scope.days, scope.view.first_day,
                                          horizon).items():
        chosen = tuple(name for name in windows if name in job.windows)
        for workspace_id in ids if chosen else ():
            work.setdefault(workspace_id, []).append((day, chosen))
    return work
