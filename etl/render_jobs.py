"""A render job over many workspaces: split into batches of about equal work, rendered in worker processes, then
the index pages. The DAG maps the same batches over tasks (`etl.nightly`)."""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

from etl.indexes import write_indexes
from etl.render import RenderJob, job_scope, render_batch
from etl.report import Filters
from etl.storage import open_storage
from etl.warehouse import DayFiles, ReportScope, event_counts

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
    sizes = event_counts(DayFiles(open_storage(job.warehouse_uri)), scope.workspaces, scope.days, job.windows,
                         need_all_events)
    return balanced_batches(job.workspace_ids, sizes, count)


def render(job: RenderJob, workers: int = 1, scope: ReportScope | None = None) -> dict[str, int]:
    """Render in `workers` processes (spawned: Polars and forking do not mix), then the index pages; the job's
    scope (`job_scope`, read here when not given) is read once and handed to each batch."""
    scope = job_scope(job) if scope is None else scope
    parts = planned_batches(job, workers, scope)
    jobs = [RenderJob(**{**job.__dict__, "workspace_ids": part}) for part in parts]
    if len(jobs) <= 1:
        results = [render_batch(j, scope) for j in jobs]
    else:
        import multiprocessing

        with ProcessPoolExecutor(max_workers=len(jobs), mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(render_batch, jobs, [scope] * len(jobs)))
    totals = {"pages": sum(r["pages"] for r in results), "csv": sum(r["csv"] for r in results)}
    write_indexes(open_storage(job.out_uri, sse=job.sse), scope.view)
    return totals
