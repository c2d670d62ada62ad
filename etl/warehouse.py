"""The warehouse: its layout, and everything that reads it (the ETL writes it: `etl.pipeline`).

Layout (docs/warehouse.md):
  workspaces.parquet                                        the dimension as of the latest run
  events/local_date=YYYY-MM-DD/ingest_date=YYYY-MM-DD.parquet
                                   the events of a workspace-local day first delivered on an arrival day
  daily/local_date=YYYY-MM-DD/ingest_date=YYYY-MM-DD.parquet
                                   their daily aggregates (readers add up a day's files: `read_daily`)
  ids/ingest_date=YYYY-MM-DD.parquet                        every event_id an arrival day stored, with its local day
  quarantine/ingest_date=YYYY-MM-DD/part-0.parquet          rejected lines and files with their reason
  _runs/ingest_date=YYYY-MM-DD.json                         the run summary, written last
  _runs/nights.json                 each night's run id and last event, written before its summary: the freshness
                                    in one read (`read_view`), whatever the length of the history
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any

import polars as pl

from etl.contract import EVENT_SCHEMA
from etl.errors import InputError
from etl.i18n import DEFAULT_LOCALE
from etl.report import Freshness, Workspace, WorkspaceInputs, needed_days
from etl.storage import Storage, read_parquet
from etl.transform import DAILY_KEYS
from etl.windows import report_day_for

# A night's files carry its shard in their names when it was ingested in shards (`Shard.suffix`).
DAY_FILE = re.compile(r"^(events|daily)/local_date=(\d{4}-\d{2}-\d{2})/ingest_date=(\d{4}-\d{2}-\d{2})"
                      r"(-shard-\d+-of-\d+)?\.parquet$", re.ASCII)
_DATE_KEY = re.compile(r"local_date=(\d{4}-\d{2}-\d{2})/", re.ASCII)
IDS_FILE = re.compile(r"^ids/ingest_date=(\d{4}-\d{2}-\d{2})(-shard-\d+-of-\d+)?\.parquet$", re.ASCII)
RUN_FILE = re.compile(r"^_runs/ingest_date=(\d{4}-\d{2}-\d{2})\.json$", re.ASCII)
IDS_SCHEMA: dict[str, pl.DataType] = {"event_id": pl.String(), "local_date": pl.Date()}


class WarehouseError(InputError):
    """The warehouse cannot answer: the message says why and what to do."""


# ---------------------------------------------------------------- layout

@dataclass(frozen=True)
class Shard:
    """One of `count` ingest shards of a night (`CONTACTS_REPORT_INGEST_SHARDS`): the events whose `event_id`
    hashes to `number` (`etl.pipeline.shard_filter`), so that every copy of an event meets the others in one shard."""

    number: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.number < self.count:
            raise WarehouseError(f"shard {self.number}/{self.count}: give K/N with 0 <= K < N")

    @property
    def suffix(self) -> str:
        """What the shard's files add to the night's names: nothing for a night in one piece."""
        return "" if self.count == 1 else f"-shard-{self.number}-of-{self.count}"

    @classmethod
    def parse(cls, text: str) -> Shard:
        number, slash, count = text.partition("/")
        if not (slash and number.isdigit() and count.isdigit() and int(count) >= 1):
            raise WarehouseError(f"shard {text!r}: give K/N, e.g. 0/4 (shards are numbered from 0)")
        return cls(int(number), int(count))


def events_key(day: date, ingest_date: date, suffix: str = "") -> str:
    return f"events/local_date={day.isoformat()}/ingest_date={ingest_date.isoformat()}{suffix}.parquet"


def daily_key(day: date, ingest_date: date, suffix: str = "") -> str:
    return f"daily/local_date={day.isoformat()}/ingest_date={ingest_date.isoformat()}{suffix}.parquet"


def shard_summary_key(ingest_date: date, shard: Shard) -> str:
    """A shard's own summary, which the night's finishing step adds up (`etl.pipeline.finish_night`)."""
    return f"_runs/shards/ingest_date={ingest_date.isoformat()}/shard-{shard.number}-of-{shard.count}.json"


def shard_quarantine_key(ingest_date: date, shard: Shard) -> str:
    return f"_runs/shards/ingest_date={ingest_date.isoformat()}/shard-{shard.number}-of-{shard.count}.parquet"


def run_key(ingest_date: date) -> str:
    return f"_runs/ingest_date={ingest_date.isoformat()}.json"


NIGHTS_KEY = "_runs/nights.json"


def quarantine_key(ingest_date: date) -> str:
    return f"quarantine/ingest_date={ingest_date.isoformat()}/part-0.parquet"


def day_files(warehouse: Storage, folder: str, day: date) -> dict[str, str]:
    """arrival day (with its shard, if any: `2026-03-11-shard-0-of-2`) -> key, for the files of one local day in
    `events` or `daily`."""
    found = {}
    for key in warehouse.list(f"{folder}/local_date={day.isoformat()}"):
        if (m := DAY_FILE.match(key)) and m.group(1) == folder:
            found[m.group(3) + (m.group(4) or "")] = key
    return found


def read_daily(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """A day's (or days') aggregate files added up: one row per DAILY_KEYS."""
    return (pl.concat(frames, how="vertical").group_by(list(DAILY_KEYS)).agg(pl.col("events").sum())
            .sort(list(DAILY_KEYS), nulls_last=False))


def ids_key(ingest_date: date, suffix: str = "") -> str:
    return f"ids/ingest_date={ingest_date.isoformat()}{suffix}.parquet"


# ---------------------------------------------------------------- what the report reads

@dataclass(frozen=True)
class WarehouseView:
    workspaces: dict[int, Workspace]
    freshness: Freshness
    first_day: date | None


def read_view(warehouse: Storage) -> WarehouseView:
    """The workspaces, the freshness of the data and the first day with events: a few small reads (the dimension,
    the nights digest, the listings of `_runs` and `events`), whatever the length of the history."""
    if not warehouse.exists("workspaces.parquet"):
        raise WarehouseError(f"{warehouse.uri} has no workspaces.parquet: run `contacts-report etl` first")
    dim = read_parquet(warehouse, "workspaces.parquet")
    if "locale" not in dim.columns:  # a warehouse written before workspaces had languages
        dim = dim.with_columns(locale=pl.lit(DEFAULT_LOCALE))
    workspaces = {w: Workspace(w, n, tz, loc)
                  for w, n, tz, loc in dim.select("workspace_id", "name", "timezone", "locale").rows()}
    nights = read_nights(warehouse)
    latest = nights[max(nights)] if nights else None
    last_events = [n["last_event_at"] for n in nights.values() if n.get("last_event_at")]
    days = [date.fromisoformat(m.group(1)) for k in warehouse.list("events") if (m := _DATE_KEY.search(k))]
    freshness = Freshness(
        run_id=latest["run_id"] if latest else None,
        last_event_at=max(last_events) if last_events else None,
        latest_ingest_date=latest["ingest_date"] if latest else None,
        latest_report_day=None,
    )
    return WarehouseView(workspaces, freshness, min(days) if days else None)


def night_entry(summary: dict[str, Any]) -> dict[str, Any]:
    """What the nights digest keeps of a run summary."""
    return {k: summary.get(k) for k in ("ingest_date", "run_id", "last_event_at")}


def read_nights(warehouse: Storage) -> dict[str, dict[str, Any]]:
    """ingest date -> its `night_entry`, for every finished night: from the digest, and from the summaries of any
    night the digest does not name (a warehouse written before the digest, or two nights that updated it at once)."""
    finished = {m.group(1): k for k in warehouse.list("_runs") if (m := RUN_FILE.match(k))}
    digest = json.loads(warehouse.read_bytes(NIGHTS_KEY)) if warehouse.exists(NIGHTS_KEY) else {}
    nights = {night: entry for night, entry in digest.items() if night in finished}
    for night in sorted(set(finished) - set(nights)):
        nights[night] = night_entry(json.loads(warehouse.read_bytes(finished[night])))
    return nights


def record_night(warehouse: Storage, summary: dict[str, Any]) -> None:
    """Record a finished night: its entry in the nights digest, then its run summary, written last as ever. In that
    order the digest is never behind the files the night wrote: a crash between the two leaves the new entry, which
    counts once the re-run writes the summary (`read_nights` reads only finished nights, and the summaries of any
    night the digest misses)."""
    night = summary["ingest_date"]
    nights = read_nights(warehouse) | {night: night_entry(summary)}
    warehouse.write_bytes(NIGHTS_KEY, json.dumps(dict(sorted(nights.items())), indent=1).encode(), "application/json")
    warehouse.write_bytes(run_key(date.fromisoformat(night)), json.dumps(summary, indent=1).encode(),
                          "application/json")


@dataclass(frozen=True)
class ReportScope:
    """What a report step covers: the warehouse as read once (`view`) and, for each of its workspaces (in the
    order asked), the report day its pages or snapshots show."""

    view: WarehouseView
    days: dict[int, date]

    @property
    def workspaces(self) -> list[Workspace]:
        return [self.view.workspaces[w] for w in self.days]

    def narrowed(self, ids: Iterable[int]) -> ReportScope:
        """The same scope for some of its workspaces (a batch of a job)."""
        return ReportScope(self.view, {w: self.days[w] for w in ids})

    def in_language(self, locale: str | None) -> ReportScope:
        """The scope with its workspaces written in `locale` instead of their own (`render --locale`)."""
        if locale is None:
            return self
        workspaces = {w: replace(ws, locale=locale) if w in self.days else ws
                      for w, ws in self.view.workspaces.items()}
        return ReportScope(replace(self.view, workspaces=workspaces), self.days)


def report_scope(warehouse: Storage, ids: Sequence[int] | None, report_day: date | None, cutoff: datetime | None
                 ) -> ReportScope:
    """The scope of the workspaces `ids` (None: all, ascending) for `report_day`, or each one's last day that had
    ended at `cutoff` in its own time zone. Read once per step and passed on."""
    view = read_view(warehouse)
    ids = sorted(view.workspaces) if ids is None else list(ids)
    unknown = sorted(set(ids) - set(view.workspaces))
    if unknown:
        raise WarehouseError(f"workspaces {unknown} are not in {warehouse.uri}'s workspaces dimension; check the ids")
    return ReportScope(view, report_days(view, ids, report_day, cutoff) if ids else {})


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


ROWS_PER_GROUP = 1_000_000  # events a reader holds at once by default (docs/performance.md, "Render")


def load_inputs(warehouse: Storage, workspaces: Sequence[Workspace], days: dict[int, date],
                windows: tuple[str, ...], need_all_events: bool) -> dict[int, WorkspaceInputs]:
    """The workspaces' aggregates and events for their report days, all at once (small selections)."""
    groups = load_groups(DayFiles(warehouse), workspaces, days, windows, need_all_events, rows_per_group=None)
    return {w: inputs for group in groups for w, inputs in group.items()}


# A workspace's past report days to render again with its pages of tonight, each with the windows to render: the
# pages the night's late events changed (`etl.render_jobs.late_work`)
PastPages = dict[int, list[tuple[date, tuple[str, ...]]]]


def load_groups(files: DayFiles, workspaces: Sequence[Workspace], days: dict[int, date], windows: tuple[str, ...],
                need_all_events: bool, rows_per_group: int | None, past: PastPages | None = None
                ) -> Iterator[dict[int, WorkspaceInputs]]:
    """The workspaces' inputs, in order, a group at a time: each group's events add up to about
    `rows_per_group` (sizes from the daily aggregates), so that a worker holds one group's rows at a time whatever
    the batch's size. A workspace larger than the budget is a group of its own; None puts all in one group. The
    rows cover the `past` pages' windows too."""
    if not workspaces:
        return
    fact_start, event_start, end = _span(workspaces, days, windows, need_all_events, past)
    sizes = event_counts(files, workspaces, days, windows, need_all_events, past) if rows_per_group is not None else {}
    for group in _split(workspaces, sizes, rows_per_group):
        yield _load_group(files, group, fact_start, event_start, end)


def event_counts(files: DayFiles, workspaces: Sequence[Workspace], days: dict[int, date], windows: tuple[str, ...],
                 need_all_events: bool, past: PastPages | None = None) -> dict[int, int]:
    """workspace id -> the events its pages load (from the daily aggregates: small files)."""
    _, event_start, end = _span(workspaces, days, windows, need_all_events, past)
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
          need_all_events: bool, past: PastPages | None = None) -> tuple[date, date, date]:
    """(first aggregate day, first event day, last day) the workspaces' pages need, their `past` pages' included."""
    spans = [needed_days(days[w.workspace_id], windows) for w in workspaces]
    spans += [needed_days(day, names) for w in workspaces for day, names in (past or {}).get(w.workspace_id, [])]
    fact_start, event_start, end = min(s[0] for s in spans), min(s[1] for s in spans), max(s[2] for s in spans)
    return fact_start, fact_start if need_all_events else event_start, end


def _empty_events(sample: pl.DataFrame | None) -> pl.DataFrame:
    if sample is not None:
        return sample.clear()
    return pl.DataFrame(schema={**EVENT_SCHEMA, "timezone": pl.String, "local_ts": pl.Datetime("us"),
                                "local_date": pl.Date})


def report_days(view: WarehouseView, ids: Iterable[int], report_day: date | None, cutoff: datetime | None
                ) -> dict[int, date]:
    """workspace id -> the report day its pages show: `report_day` for all, or each one's last day that had
    ended, in its own time zone, at `cutoff`."""
    if report_day is not None:
        return dict.fromkeys(ids, report_day)
    if cutoff is None:
        raise WarehouseError("give --report-day or --cutoff")
    return {w: report_day_for(cutoff, view.workspaces[w].timezone) for w in ids}
