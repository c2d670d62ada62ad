"""The ETL of one arrival day: landing partition -> validated, de-duplicated events + daily aggregates, written
to the warehouse (its layout and readers: `etl.warehouse`).

A night writes the files named after its own arrival day. De-duplication looks the night's ids up in the other
arrival days' id indexes (an id may come back on another local day: the workspace changed time zone, or the id was
reused with another time), then reads only the events files that hold a match. A night processed after a later
one has that later night processed again (which rewrites the later night's files: they held copies this night
delivered first), so that any order of nights gives the same warehouse.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import polars as pl

from etl.contract import EVENT_SCHEMA, QUARANTINE_SCHEMA
from etl.errors import EtlError
from etl.ingest import (
    REFUSED_WHOLE,
    Batch,
    arrival_keys,
    check_arrival_day,
    landing_inventory,
    load_workspaces,
    read_partition,
    take_events,
)
from etl.progress import Progress
from etl.settings import DEFAULT_READ_LIMITS, ReadLimits
from etl.storage import Storage, read_parquet, write_parquet
from etl.transform import (
    daily_aggregates,
    local_time_columns,
    storage_permutation,
    with_content_hash,
)
from etl.validate import FUTURE_TOLERANCE, MAX_LINE_BYTES, ValidationRules
from etl.warehouse import (
    DAY_FILE,
    IDS_FILE,
    IDS_SCHEMA,
    RUN_FILE,
    Shard,
    daily_key,
    events_key,
    ids_key,
    quarantine_key,
    record_night,
    run_key,
    shard_quarantine_key,
    shard_summary_key,
)
from etl.windows import local_date
from etl.workspaces import Workspaces

log = logging.getLogger(__name__)

HISTORY_READERS = 4  # stored files listed and read at once by `against_history` (round trips on S3)
# Stored files decoded in one query (~4x faster than one by one) and held at once: this many, or this much Parquet,
# whichever comes first (a 10 M-event day's main file is ~12 MB by itself).
HISTORY_BATCH_FILES = 32
HISTORY_BATCH_BYTES = 8 * 1024 * 1024
SHARD_SEED = 0x5EED  # `shard_filter`: which shard keeps an event
WHOLE = Shard()  # a night in one piece
HASH_SCHEME = f"polars-{pl.__version__}-seed-{SHARD_SEED}"  # shards of a night must agree on it (`finish_night`)
STORED_COLUMNS = (*EVENT_SCHEMA, "timezone", "local_ts", "local_date")


def compacted(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with every column in one chunk, copied a column at a time (the caller must hold no other
    reference): later steps then never align chunks behind our back, which copied the whole night at once."""
    columns = []
    for name in list(frame.columns):
        columns.append(frame.drop_in_place(name).rechunk())
    return pl.DataFrame(columns)


def night_duplicates(night: pl.DataFrame) -> pl.DataFrame:
    """Rows (`row`) of the night that repeat an event_id an earlier arrival of the same night already
    delivered, flagged `conflict` when their content differs from that first copy (a reused id)."""
    ids = night.select("event_id", "arrival_rank").with_row_index("row")
    # Hashes first, then the ids themselves among the few candidates. Repeated hashes are found by sorting
    # them (0.2 s and 80 MB at 10 M rows, against 1.4 s and 500 MB for a hash table: `is_duplicated`).
    hashes = night.get_column("event_id").hash(seed=0)
    ordered = hashes.sort()
    repeated_hashes = ordered.filter(ordered == ordered.shift(1)).unique()
    candidates = ids.filter(hashes.is_in(repeated_hashes.implode()))
    repeated = candidates.filter(pl.col("event_id").is_duplicated())  # ~1 %: everything below is small
    first = repeated.sort("arrival_rank").unique("event_id", keep="first", maintain_order=True)
    lost = repeated.join(first.select("row"), on="row", how="anti")
    kept = _content_hashes(night[first["row"]])
    return _flag_conflicts(lost, night, kept)


def _content_hashes(events: pl.DataFrame) -> pl.DataFrame:
    """event_id -> `kept_hash`, the hash of what the kept copy of each event says."""
    return with_content_hash(events.lazy()).select("event_id", kept_hash="content_hash").collect()


def _flag_conflicts(lost: pl.DataFrame, night: pl.DataFrame, kept: pl.DataFrame, on: list[str] | None = None
                    ) -> pl.DataFrame:
    """`conflict` for each lost row (`row`, `event_id`): its content differs from the kept copy's
    (`kept`: the `on` keys, event_id by default, and kept_hash). Only the few rows involved are hashed."""
    lost_hash = with_content_hash(night[lost["row"]].lazy()).select("content_hash").collect()["content_hash"]
    kept_hash = lost.join(kept, on=on or ["event_id"], how="left", maintain_order="left")["kept_hash"]
    return lost.select("row", "event_id").with_columns(conflict=(lost_hash != kept_hash).fill_null(True))


def _batches(warehouse: Storage, stored: list[tuple[date, str, str]], pool: ThreadPoolExecutor
             ) -> Iterator[list[tuple[date, str, bytes]]]:
    """The `stored` files ((arrival day, shard suffix, key)) fetched HISTORY_READERS at a time and handed out in
    batches of HISTORY_BATCH_FILES files or HISTORY_BATCH_BYTES, whichever comes first: small files go many to a
    query, and a night whose history is big holds no more than a batch of it at once."""
    batch: list[tuple[date, str, bytes]] = []
    size = 0
    for first in range(0, len(stored), HISTORY_READERS):
        window = stored[first:first + HISTORY_READERS]
        for (arrival, suffix, _), data in zip(window, pool.map(warehouse.read_bytes, [k for *_, k in window]),
                                              strict=True):
            batch.append((arrival, suffix, data))
            size += len(data)
            if len(batch) >= HISTORY_BATCH_FILES or size >= HISTORY_BATCH_BYTES:
                yield batch
                batch, size = [], 0
    if batch:
        yield batch


def _first_open_days(workspaces: pl.DataFrame, ingest_date: date) -> pl.DataFrame:
    """Per workspace, the first local day not yet reported by the previous night (cutoff = arrival day's
    00:00 UTC). An event before that day changes a report already published: a late event."""
    start = datetime.combine(ingest_date, datetime.min.time(), UTC)
    return workspaces.select(
        "workspace_id",
        first_open_day=pl.Series(
            [local_date(start, tz) for tz in workspaces["timezone"].to_list()], dtype=pl.Date()
        ),
    )


# ---------------------------------------------------------------- the id index

IDS_ROW_GROUP = 64 * 1024  # rows per row group: the statistics of ids sorted by value let a lookup skip most groups


def id_index(events: pl.DataFrame) -> pl.DataFrame:
    """An arrival day's index: the event_id and local day of every event it stored, sorted by event_id."""
    # lazily: the streaming engine sorts 10 M ids in ~2.8 s, the eager (in-memory) sort took ~7.9 s
    return events.lazy().select(*IDS_SCHEMA).sort("event_id").collect()


def write_id_index(warehouse: Storage, ingest_date: date, index: pl.DataFrame, suffix: str = "") -> None:
    buffer = io.BytesIO()
    index.write_parquet(buffer, compression="zstd", compression_level=1, statistics=True,
                        row_group_size=IDS_ROW_GROUP)
    warehouse.write_bytes(ids_key(ingest_date, suffix), buffer.getvalue(),
                          content_type="application/vnd.apache.parquet")


def indexed_arrivals(warehouse: Storage) -> list[tuple[date, str, str]]:
    """Every id index: (arrival day, shard suffix, key), one per shard of a night ingested in shards; builds the
    index of any finished night that has none (a warehouse written before the index existed: its events files are
    read once)."""
    indexes = sorted((date.fromisoformat(m.group(1)), m.group(2) or "", k) for k in warehouse.list("ids")
                     if (m := IDS_FILE.match(k)))
    found = {arrival: key for arrival, _, key in indexes}
    finished = {date.fromisoformat(m.group(1)) for k in warehouse.list("_runs") if (m := RUN_FILE.match(k))}
    missing = sorted(finished - set(found))
    if missing:
        log.warning("building the id index of %d arrival days written before it existed", len(missing))
        names = {d.isoformat() for d in missing}
        files: dict[date, list[str]] = {}
        for key in warehouse.list("events"):
            if (m := DAY_FILE.match(key)) and m.group(3) in names:
                files.setdefault(date.fromisoformat(m.group(3)), []).append(key)
        for arrival in missing:
            frames = [read_parquet(warehouse, k, columns=list(IDS_SCHEMA)) for k in files.get(arrival, [])]
            write_id_index(warehouse, arrival, id_index(pl.concat([pl.DataFrame(schema=IDS_SCHEMA), *frames])))
            indexes.append((arrival, "", ids_key(arrival)))
    return sorted(indexes)


@dataclass(frozen=True)
class HistoryCheck:
    """What the other arrival days already hold of a night's kept rows."""

    lost: pl.DataFrame  # rows (`row`, `event_id`, `conflict`) an earlier arrival day already delivered
    later: dict[date, set[str]]  # later arrival day -> the ids it holds (a night run out of order)


def against_history(warehouse: Storage, kept: pl.Expr, night: pl.DataFrame, ingest_date: date) -> HistoryCheck:
    """Look the night's rows that `kept` selects (an expression of their `row`) up in every other arrival day's id
    index, whatever local day holds them (a workspace may have changed its time zone; a reused id may carry
    another time). The indexes are read in batches (`_batches`), a query each; only the events files that hold
    a match are read, to tell a redelivery from a conflicting reuse of the id."""
    rows = night.lazy().select("event_id").with_row_index("row").filter(kept).collect()
    ids = rows.lazy().select("event_id")
    indexes = [index for index in indexed_arrivals(warehouse) if index[0] != ingest_date]
    parts = [pl.DataFrame(schema={**IDS_SCHEMA, "arrival": pl.Date(), "shard": pl.String()})]
    with ThreadPoolExecutor(HISTORY_READERS) as pool:
        for files in _batches(warehouse, indexes, pool):  # a semi-join: ~2x faster than `is_in` here
            parts.append(pl.concat([pl.scan_parquet(io.BytesIO(data)).with_columns(
                arrival=pl.lit(arrival, dtype=pl.Date()), shard=pl.lit(suffix, dtype=pl.String()))
                for arrival, suffix, data in files]).join(ids, on="event_id", how="semi").collect())
    matches = pl.concat(parts).sort("arrival", "event_id")
    earlier = matches.filter(pl.col("arrival") < ingest_date).unique("event_id", keep="first", maintain_order=True)
    later = {arrival: set(group["event_id"].to_list())
             for (arrival,), group in matches.filter(pl.col("arrival") > ingest_date).group_by("arrival")}
    lost = earlier.join(rows, on="event_id")
    holders = [events_key(day, arrival, suffix) for day, arrival, suffix in lost.select(
        "local_date", "arrival", "shard").unique().sort("local_date", "arrival", "shard").iter_rows()]
    kept_hashes = pl.DataFrame(schema={"event_id": pl.String(), "kept_hash": pl.UInt64()})
    if holders:  # the copies already stored, read in one query from the files that hold some
        with ThreadPoolExecutor(HISTORY_READERS) as pool:
            stored = [pl.scan_parquet(io.BytesIO(data)) for data in pool.map(warehouse.read_bytes, holders)]
        copies = pl.concat(stored, how="vertical").join(lost.lazy().select("event_id"), on="event_id", how="semi")
        kept_hashes = with_content_hash(copies).select("event_id", kept_hash="content_hash").collect()
    return HistoryCheck(_flag_conflicts(lost.select("row", "event_id"), night, kept_hashes), later)


@dataclass(frozen=True)
class NightPlan:
    """What a night writes, decided from its rows and from what the other arrival days hold (`plan_night`)."""

    kept: pl.DataFrame  # the rows kept (`row`, `local_date`, `workspace_id`, `occurred_at`)
    by_day: pl.DataFrame  # their `row`s grouped by local day, in the order of `days`
    days: pl.DataFrame  # each local day the night writes, with its number of rows (`local_date`, `len`)
    stale: frozenset[date]  # days an earlier run of this night wrote to and this run does not: their files go
    quarantine: pl.DataFrame  # the night's quarantine, conflicting duplicates included, in file and line order
    duplicates: int  # copies dropped: the id was delivered before with the same content
    late_events: int  # kept events of local days the previous night already reported
    late_days: dict[int, list[date]]  # workspace -> the reported local days its late events changed, ascending

    @property
    def touched(self) -> list[date]:
        return sorted(self.days["local_date"].to_list())


def plan_night(night: pl.DataFrame, lost: pl.DataFrame, rejected: list[tuple[Any, ...]], files: list[str],
               previous_days: set[date], first_open_days: pl.DataFrame, ingest_date: date) -> NightPlan:
    """The night's plan, no I/O: `night` (its rows with `local_date`, `workspace_id`, `occurred_at` and
    `arrival_rank`), `lost` (rows `row`, `event_id`, `conflict` that repeat an earlier copy, within the night or
    from an earlier arrival day), the lines the reader `rejected`, the `files` read (arrival ranks index them), the
    days an earlier run of this night wrote, and each workspace's first day not yet reported (`_first_open_days`)."""
    # What is kept, as row numbers grouped by local day; each day is put in storage order (workspace, time,
    # arrival) by its own writer, and its wide rows are gathered once.
    kept = (night.select("local_date", "workspace_id", "occurred_at").with_row_index("row")
            .filter(~pl.col("row").is_in(lost["row"].implode())))
    by_day = kept.select("row", "local_date").sort("local_date", maintain_order=True)
    days = by_day.group_by("local_date", maintain_order=True).len()
    conflicts = lost.filter(pl.col("conflict"))
    conflict_keys = arrival_keys(night[conflicts["row"]]["arrival_rank"], files)
    quarantine = list(rejected)
    for event_id, arrival_key in zip(conflicts["event_id"], conflict_keys, strict=True):
        file, _, line = arrival_key.rpartition(":")
        quarantine.append((ingest_date, file, int(line), "conflicting_duplicate", event_id, None))
    first_open_day = pl.col("workspace_id").replace_strict(first_open_days["workspace_id"],
                                                           first_open_days["first_open_day"])
    late = kept.lazy().filter(pl.col("local_date") < first_open_day).select("workspace_id", "local_date")
    late_days: dict[int, list[date]] = {}
    for workspace_id, day in late.unique().sort("workspace_id", "local_date").collect().iter_rows():
        late_days.setdefault(workspace_id, []).append(day)
    return NightPlan(
        kept=kept, by_day=by_day, days=days,
        stale=frozenset(previous_days - set(days["local_date"].to_list())),
        quarantine=pl.DataFrame(quarantine, schema=QUARANTINE_SCHEMA, orient="row").sort("file", "line_no",
                                                                                         nulls_last=False),
        duplicates=lost.height - conflicts.height,
        late_events=kept.select((pl.col("local_date") < first_open_day).sum()).item(),  # no join materialised
        late_days=late_days,
    )


def night_summary(plan: NightPlan, batch: Batch, workspaces: Workspaces, ingest_date: date, seconds: float
                  ) -> dict[str, Any]:
    """The run summary (docs/warehouse.md): what was read, kept, dropped and quarantined, and why."""
    line_reasons = Counter(r for r in plan.quarantine.filter(pl.col("line_no").is_not_null())["reason"])
    return {
        "ingest_date": ingest_date.isoformat(),
        "run_id": f"{ingest_date.isoformat()}#{batch.input_digest.hexdigest()[:12]}",
        "lines_read": batch.lines_read,
        "events_valid": plan.kept.height,
        "events_quarantined": sum(line_reasons.values()),
        "quarantined_by_reason": dict(sorted(line_reasons.items())),
        "duplicates_dropped": plan.duplicates,
        "late_events": plan.late_events,
        "late_days_by_workspace": {str(w): [d.isoformat() for d in days] for w, days in plan.late_days.items()},
        "days_touched": [d.isoformat() for d in plan.touched],
        "events_by_workspace": {str(w): n for w, n in
                                plan.kept.group_by("workspace_id").len().sort("workspace_id").rows()},
        "blank_lines": batch.blank_lines,
        "lines_exact_path": batch.exact_lines,
        "files_listed": len(batch.files) + len(batch.skipped_files) + sum(
            1 for reason in batch.damaged_files.values() if reason in REFUSED_WHOLE),
        "files_read": len(batch.files),
        "files_damaged": dict(sorted(batch.damaged_files.items())),
        "files_skipped": dict(sorted(batch.skipped_files.items())),
        "workspaces_misconfigured": {str(k): v for k, v in sorted(workspaces.broken.items())},
        "landing_partitions": sorted({k.rsplit("/", 1)[0] for k in batch.files}),
        "input_sha256": batch.input_digest.hexdigest(),
        "last_event_at": _last_event_at(plan.kept),
        "seconds": round(seconds, 3),
    }


def shard_filter(shard: Shard) -> pl.Expr | None:
    """The rows of `shard`: those whose `event_id` hashes to its number (every copy of an event, however its
    workspace or time differ, in one shard). Polars' hash is stable within a version: `finish_night` refuses shards
    hashed by different versions."""
    if shard.count == 1:
        return None
    return pl.col("event_id").hash(seed=SHARD_SEED) % shard.count == shard.number


def run_etl(landing: Storage, warehouse: Storage, ingest_date: date,
            future_tolerance: timedelta = FUTURE_TOLERANCE, max_line_bytes: int = MAX_LINE_BYTES,
            exact_only: bool = False, limits: ReadLimits = DEFAULT_READ_LIMITS, shard: Shard = WHOLE
            ) -> dict[str, Any]:
    """Process one arrival day end to end and return its run summary (also stored in the warehouse): read the
    landing and what the warehouse holds of the night's ids, plan (`plan_night`), write.

    With `shard` one of several, only that shard's events are kept and written (files named after the shard), the
    reader's quarantine goes with shard 0, and the summary is the shard's own: `finish_night` adds the shards up
    into the night's summary and quarantine. `exact_only` sends every line through the exact validator (the
    reference the fast path is tested against).
    """
    started = time.monotonic()
    check_arrival_day(ingest_date)
    workspaces = load_workspaces(landing)
    rules = ValidationRules(workspace_ids=workspaces.ids, ingest_date=ingest_date, future_tolerance=future_tolerance,
                            max_line_bytes=max_line_bytes, broken_workspaces=workspaces.broken)
    batch = read_partition(landing, ingest_date, rules, exact_only, limits, keep=shard_filter(shard))
    night = compacted(take_events(batch))
    night = night.hstack(local_time_columns(night.select("workspace_id", "occurred_at"), workspaces.frame))
    lost_in_night = night_duplicates(night)
    history = against_history(warehouse, ~pl.col("row").is_in(lost_in_night["row"].implode()), night, ingest_date)
    previous = _previous_summary(warehouse, ingest_date, shard)
    plan = plan_night(night, pl.concat([lost_in_night, history.lost], how="vertical"),
                      batch.quarantine if shard.number == 0 else [], batch.files,
                      {date.fromisoformat(d) for d in previous.get("days_touched", [])},
                      _first_open_days(workspaces.frame, ingest_date), ingest_date)

    write_night(warehouse, ingest_date, night, plan, batch.files, sorted(set(workspaces.frame["timezone"])),
                shard.suffix)
    write_parquet(warehouse, "workspaces.parquet", workspaces.frame)
    options = {"future_tolerance": future_tolerance, "max_line_bytes": max_line_bytes, "exact_only": exact_only,
               "limits": limits}
    summary = night_summary(plan, batch, workspaces, ingest_date, time.monotonic() - started)
    if shard.count > 1:  # the finishing step adds the shards up and processes later nights again, once
        write_parquet(warehouse, shard_quarantine_key(ingest_date, shard), plan.quarantine)
        summary |= {"shard": [shard.number, shard.count], "hash_scheme": HASH_SCHEME,
                    "later": {d.isoformat(): sorted(ids) for d, ids in sorted(history.later.items())}}
        warehouse.write_bytes(shard_summary_key(ingest_date, shard), json.dumps(summary, indent=1).encode(),
                              "application/json")
        return summary
    write_parquet(warehouse, quarantine_key(ingest_date), plan.quarantine)
    if previous.get("shards", 1) != 1:  # the night was ingested in shards before: their files go
        _drop_other_layouts(warehouse, ingest_date, set(previous.get("days_touched", [])) | set(
            summary["days_touched"]), shard.count)
    if history.later:  # nights processed out of order: they kept copies of events this night delivered first
        _rerun_later(landing, warehouse, history.later, options)
    record_night(warehouse, summary)
    log.info("ingest_date=%s: %d lines, %d valid, %d quarantined, %d duplicates, %d days touched",
             ingest_date, summary["lines_read"], summary["events_valid"], summary["events_quarantined"],
             summary["duplicates_dropped"], len(plan.touched))
    return summary


def finish_night(landing: Storage, warehouse: Storage, ingest_date: date, count: int,
                 options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The night's summary and quarantine from its `count` shards (`run_etl` with a `Shard` each), exactly once:
    the sums of their counts, their quarantines in file and line order; then files of an earlier layout of the night
    (another number of shards) are deleted and later nights that kept copies of this night's events are processed
    again. Refuses while a shard is missing or read other input than the others."""
    started = time.monotonic()
    parts = []
    for number in range(count):
        key = shard_summary_key(ingest_date, Shard(number, count))
        if not warehouse.exists(key):
            raise EtlError(f"shard {number}/{count} of ingest_date={ingest_date} has not finished ({warehouse.uri}/"
                           f"{key} is missing): run `contacts-report etl --ingest-date {ingest_date} --shard "
                           f"{number}/{count}`, then finish the night again")
        parts.append(json.loads(warehouse.read_bytes(key)))
    first = parts[0]
    for number, part in enumerate(parts):
        if (part["input_sha256"], part["hash_scheme"]) != (first["input_sha256"], first["hash_scheme"]):
            raise EtlError(f"shard {number}/{count} of ingest_date={ingest_date} read other landing files or "
                           "hashed with another version than shard 0: run every shard of the night again")
    quarantine = pl.concat([read_parquet(warehouse, shard_quarantine_key(ingest_date, Shard(n, count)))
                            for n in range(count)]).sort("file", "line_no", nulls_last=False)
    previous = _previous_summary(warehouse, ingest_date, WHOLE)
    summary = {**first, **{k: sum(p[k] for p in parts) for k in (
        "events_valid", "events_quarantined", "duplicates_dropped", "late_events")}}
    summary["quarantined_by_reason"] = _added_up(p["quarantined_by_reason"] for p in parts)
    summary["events_by_workspace"] = {str(w): n for w, n in sorted(
        (int(w), n) for w, n in _added_up(p["events_by_workspace"] for p in parts).items())}
    summary["days_touched"] = sorted({d for p in parts for d in p["days_touched"]})
    summary["late_days_by_workspace"] = {str(w): sorted({d for p in parts for d in p["late_days_by_workspace"].get(
        str(w), [])}) for w in sorted({int(w) for p in parts for w in p["late_days_by_workspace"]})}
    summary["last_event_at"] = max((p["last_event_at"] for p in parts if p["last_event_at"]), default=None)
    summary["seconds"] = round(max(p["seconds"] for p in parts) + time.monotonic() - started, 3)
    later = {date.fromisoformat(d): set(ids) for p in parts for d, ids in p["later"].items()}
    for key in ("shard", "later", "hash_scheme"):
        summary.pop(key)
    summary["shards"] = count
    write_parquet(warehouse, quarantine_key(ingest_date), quarantine)
    _drop_other_layouts(warehouse, ingest_date, set(previous.get("days_touched", [])) | set(summary["days_touched"]),
                        count)
    if later:
        _rerun_later(landing, warehouse, later, options or {})
    record_night(warehouse, summary)
    return summary


def _added_up(counts: Iterable[dict[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for part in counts:
        total.update(part)
    return dict(sorted(total.items()))


def _previous_summary(warehouse: Storage, ingest_date: date, shard: Shard) -> dict[str, Any]:
    """What the last run of this night (of this shard, for a shard) recorded: {} before the first."""
    key = run_key(ingest_date) if shard.count == 1 else shard_summary_key(ingest_date, shard)
    return dict(json.loads(warehouse.read_bytes(key))) if warehouse.exists(key) else {}


def _drop_other_layouts(warehouse: Storage, ingest_date: date, days: set[str], count: int) -> None:
    """Delete the files of this night written in another number of shards than `count`, on `days` (what the night
    touched before and now) and in `ids/`: readers add every file of a day up."""
    keep = {Shard(n, count).suffix for n in range(count)}
    for folder in [*(f"{kind}/local_date={day}" for day in sorted(days) for kind in ("events", "daily")), "ids"]:
        for key in warehouse.list(folder):
            if (found := DAY_FILE.match(key) or IDS_FILE.match(key)) is None:
                continue
            arrival, suffix = found.groups()[-2:]  # both patterns end with the arrival day and the shard suffix
            if arrival == ingest_date.isoformat() and (suffix or "") not in keep:
                warehouse.delete(key)


def write_night(warehouse: Storage, ingest_date: date, night: pl.DataFrame, plan: NightPlan, files: list[str],
                zones: list[str], suffix: str = "") -> None:
    """Write what the plan decided: each day's events and aggregates (two days at a time: gathering and Parquet
    encoding release the GIL, and a day is ~1/30 of the night), the stale days' files deleted, the id index and
    the quarantine. The run summary comes after, from the caller."""
    starts = [0, *plan.days["len"].cum_sum().to_list()]

    def write(position: int) -> None:
        numbers = plan.by_day["row"].slice(starts[position], starts[position + 1] - starts[position])
        ordered = storage_permutation(night.select("workspace_id", "occurred_at", "arrival_rank")[numbers]
                                      .with_columns(row=numbers))
        day = plan.days["local_date"][position]
        _write_day(warehouse, day, ingest_date, _stored_rows(night[ordered], ingest_date, files, zones), suffix)

    with Progress(plan.days.height + len(plan.stale), "writing", " days") as bar, \
            ThreadPoolExecutor(max_workers=1) as aside:
        # the id index (a sort of every kept id) beside the days: ~4 s at 10 M that would otherwise come after them
        index = aside.submit(lambda: write_id_index(warehouse, ingest_date,
                                                    id_index(night.select(*IDS_SCHEMA)[plan.kept["row"]]), suffix))
        with ThreadPoolExecutor(max_workers=2) as pool:
            for _ in pool.map(write, range(plan.days.height)):
                bar.advance()
        for day in sorted(plan.stale):
            _write_day(warehouse, day, ingest_date, None, suffix)
            bar.advance()
        index.result()


def _rerun_later(landing: Storage, warehouse: Storage, later: dict[date, set[str]], options: dict[str, Any]) -> None:
    """Process again, oldest first, the later arrival days that kept copies of events an earlier night has just
    delivered: each then drops them or quarantines them as conflicts, exactly as if the nights had run in order
    (and re-runs the nights after it that it affects in turn). Without its landing partition a later night can only
    have the copies taken out of its files (its summary and quarantine are left as they were)."""
    for arrival, ids in sorted(later.items()):
        if landing_inventory(landing, arrival)[0]:
            log.warning("arrival day %s kept %d events an earlier arrival day delivered first: processing it again",
                        arrival, len(ids))
            run_etl(landing, warehouse, arrival, **options)
            continue
        log.error("arrival day %s kept %d events an earlier arrival day delivered first, and its landing partition "
                  "is gone: taking the copies out of its files; re-deliver it and re-run it to mend its summary",
                  arrival, len(ids))
        for _, suffix, key in [index for index in indexed_arrivals(warehouse) if index[0] == arrival]:
            index = read_parquet(warehouse, key)
            for day in sorted(set(index.filter(pl.col("event_id").is_in(sorted(ids)))["local_date"].to_list())):
                stored = read_parquet(warehouse, events_key(day, arrival, suffix))
                _write_day(warehouse, day, arrival, stored.filter(~pl.col("event_id").is_in(sorted(ids))), suffix)
            write_id_index(warehouse, arrival, index.filter(~pl.col("event_id").is_in(sorted(ids))), suffix)


def _last_event_at(events: pl.DataFrame) -> str | None:
    if events.is_empty():
        return None
    latest: datetime = events["occurred_at"].max()  # type: ignore[assignment]
    return latest.isoformat().replace("+00:00", "Z")


def _stored_rows(rows: pl.DataFrame, ingest_date: date, files: list[str], zones: list[str]) -> pl.DataFrame:
    """Gathered night rows -> the stored event schema (arrival key and zone name spelt out only now)."""
    return rows.with_columns(
        ingest_date=pl.lit(ingest_date, dtype=pl.Date()),
        arrival_key=arrival_keys(rows["arrival_rank"], files),
        timezone=pl.lit(pl.Series(zones, dtype=pl.String())).gather(pl.col("tz_code")),
    ).select(STORED_COLUMNS)


def _write_day(warehouse: Storage, day: date, arrival: date, rows: pl.DataFrame | None, suffix: str = "") -> None:
    """Replace one (local day, arrival day[, shard]) file and its aggregates; no rows means no files."""
    if rows is None or rows.is_empty():
        warehouse.delete(events_key(day, arrival, suffix))
        warehouse.delete(daily_key(day, arrival, suffix))
        return
    write_parquet(warehouse, events_key(day, arrival, suffix), rows)
    write_parquet(warehouse, daily_key(day, arrival, suffix),
                  daily_aggregates(rows.lazy(), sorted_by_keys=False).collect())
