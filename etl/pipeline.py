"""The ETL of one arrival day: landing partition -> validated, de-duplicated events + daily aggregates.

Warehouse layout (docs/warehouse.md):
  workspaces.parquet                                  the dimension as of the latest run
  events/local_date=YYYY-MM-DD/part-0.parquet         de-duplicated events, by workspace-local date
  daily/local_date=YYYY-MM-DD/part-0.parquet          daily aggregates (grain in etl.transform)
  quarantine/ingest_date=YYYY-MM-DD/part-0.parquet    rejected lines with their reason
  _runs/ingest_date=YYYY-MM-DD.json                   the run summary, written last
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import polars as pl

from etl.contract import EVENT_SCHEMA, QUARANTINE_SCHEMA
from etl.progress import Progress
from etl.storage import Storage, read_parquet, write_parquet
from etl.transform import (
    daily_aggregates,
    keep_first_arrival,
    storage_order,
    with_content_hash,
    with_local_time,
)
from etl.validate import Invalid, ValidationRules, event_id_hint, validate_line
from etl.windows import local_date
from etl.workspaces import Workspaces, parse_workspaces

log = logging.getLogger(__name__)

_LANDING_FILE = re.compile(r"^events/ingest_date=(\d{4}-\d{2}-\d{2})/hour=(\d{2})/([^/]+\.ndjson(?:\.gz)?)$")
_VALIDATED_COLUMNS = tuple(c for c in EVENT_SCHEMA if c not in ("ingest_date", "arrival_key"))


class EtlError(Exception):
    """The night cannot be processed; the message says what is wrong and what to do."""


def events_key(day: date) -> str:
    return f"events/local_date={day.isoformat()}/part-0.parquet"


def daily_key(day: date) -> str:
    return f"daily/local_date={day.isoformat()}/part-0.parquet"


def run_key(ingest_date: date) -> str:
    return f"_runs/ingest_date={ingest_date.isoformat()}.json"


def quarantine_key(ingest_date: date) -> str:
    return f"quarantine/ingest_date={ingest_date.isoformat()}/part-0.parquet"


@dataclass
class Batch:
    """What reading one landing partition produced."""

    rows: list[tuple[Any, ...]] = field(default_factory=list)
    arrival_keys: list[str] = field(default_factory=list)
    quarantine: list[tuple[Any, ...]] = field(default_factory=list)
    lines_read: int = 0
    blank_lines: int = 0
    files: list[str] = field(default_factory=list)
    damaged_files: list[str] = field(default_factory=list)
    input_digest: Any = field(default_factory=hashlib.sha256)


def landing_dates(landing: Storage) -> list[date]:
    """Every arrival day present in the landing zone, oldest first."""
    days = {m.group(1) for k in landing.list("events") if (m := _LANDING_FILE.match(k))}
    return sorted(date.fromisoformat(d) for d in days)


def load_workspaces(landing: Storage) -> Workspaces:
    try:
        data = landing.read_bytes("workspaces.json")
    except FileNotFoundError:
        raise EtlError(
            f"{landing.uri}/workspaces.json is missing: the landing zone must provide the workspaces "
            "dimension (see docs/contract.md) before a night can be processed"
        ) from None
    return parse_workspaces(data, f"{landing.uri}/workspaces.json")


def _decompress(data: bytes) -> tuple[bytes, bool]:
    """gunzip every member; on damage keep what was readable and say so."""
    out, rest = bytearray(), data
    while rest.strip(b"\0"):
        member = zlib.decompressobj(wbits=31)
        try:
            out += member.decompress(rest)
        except zlib.error:
            return bytes(out), True
        if not member.eof:
            return bytes(out), True
        rest = member.unused_data
    return bytes(out), False


def read_partition(landing: Storage, ingest_date: date, rules: ValidationRules) -> Batch:
    """Validate every line of the arrival day's files; each line ends valid or quarantined."""
    prefix = f"events/ingest_date={ingest_date.isoformat()}"
    keys = [k for k in landing.list(prefix) if _LANDING_FILE.match(k)]
    if not keys:
        raise EtlError(
            f"no landing files for ingest_date={ingest_date} under {landing.uri}/{prefix}/: the feed has "
            "not delivered this night (or delivered it elsewhere). Refusing to report zero contacts; "
            "re-run the night once the partition is complete."
        )
    batch = Batch()
    with Progress(len(keys), "reading", " files") as bar:
        for key in keys:
            _read_file(landing, key, rules, batch)
            bar.advance()
    return batch


def _read_file(landing: Storage, key: str, rules: ValidationRules, batch: Batch) -> None:
    try:
        data = landing.read_bytes(key)
    except OSError as err:
        raise EtlError(f"cannot read landing file {landing.uri}/{key}: {err}") from err
    batch.input_digest.update(f"{key}\0{hashlib.sha256(data).hexdigest()}\n".encode())
    batch.files.append(key)
    relative = key[len("events/"):]
    if key.endswith(".gz"):
        data, damaged = _decompress(data)
        if damaged:
            batch.damaged_files.append(key)
            batch.quarantine.append((rules.ingest_date, relative, None, "truncated_gzip", None, None))
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for number, raw in enumerate(lines, start=1):
        raw = raw.removesuffix(b"\r")
        if not raw.strip():
            batch.blank_lines += 1
            continue
        batch.lines_read += 1
        try:
            row = validate_line(raw, rules)
        except Invalid as bad:
            shown = raw[:10_000].decode("utf-8", "replace")
            batch.quarantine.append((rules.ingest_date, relative, number, bad.reason, event_id_hint(raw), shown))
            continue
        batch.rows.append(row)
        batch.arrival_keys.append(f"{relative}:{number:09d}")


def batch_events(batch: Batch, ingest_date: date) -> pl.DataFrame:
    schema = {c: EVENT_SCHEMA[c] for c in _VALIDATED_COLUMNS}
    raw_schema = {**schema, "occurred_at": pl.Int64()}
    frame = pl.DataFrame(batch.rows, schema=raw_schema, orient="row")
    return frame.with_columns(
        occurred_at=pl.col("occurred_at").cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
        ingest_date=pl.lit(ingest_date, dtype=pl.Date()),
        arrival_key=pl.Series(batch.arrival_keys, dtype=pl.String()),
    )


def split_duplicates(candidates: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(kept, lost): one kept row per event_id (first arrival); each lost row flagged `conflict` when it
    says something different from the kept copy (a reused id rather than a redelivery)."""
    hashed = with_content_hash(candidates.lazy())
    kept = keep_first_arrival(hashed).collect()
    lost = (
        hashed.join(kept.lazy().select("arrival_key"), on="arrival_key", how="anti")
        .join(kept.lazy().select("event_id", kept_hash="content_hash"), on="event_id", how="left")
        .with_columns(conflict=pl.col("content_hash") != pl.col("kept_hash"))
        .drop("kept_hash")
        .collect()
    )
    return kept.drop("content_hash"), lost.drop("content_hash")


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


def _previous_days_touched(warehouse: Storage, ingest_date: date) -> set[date]:
    try:
        summary = json.loads(warehouse.read_bytes(run_key(ingest_date)))
    except FileNotFoundError:
        return set()
    return {date.fromisoformat(d) for d in summary.get("days_touched", [])}


def merge_day(existing: pl.DataFrame | None, incoming: pl.DataFrame, ingest_date: date
              ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The day's partition after this arrival day: earlier copies from this same arrival day are replaced
    (re-runs converge), then one row per event_id by first arrival. Returns (partition, lost rows)."""
    parts = [incoming.with_columns(origin=pl.lit("new"))]
    if existing is not None:
        parts.insert(0, existing.filter(pl.col("ingest_date") != ingest_date).with_columns(origin=pl.lit("old")))
    kept, lost = split_duplicates(pl.concat(parts, how="vertical"))
    partition = storage_order(kept.drop("origin").lazy()).collect()
    return partition, lost


def run_etl(landing: Storage, warehouse: Storage, ingest_date: date,
            future_tolerance: timedelta = timedelta(hours=1), max_line_bytes: int = 1_000_000) -> dict[str, Any]:
    """Process one arrival day end to end and return its run summary (also stored in the warehouse)."""
    started = time.monotonic()
    workspaces = load_workspaces(landing)
    rules = ValidationRules(
        workspace_ids=workspaces.ids,
        ingest_date=ingest_date,
        future_tolerance=future_tolerance,
        max_line_bytes=max_line_bytes,
        broken_workspaces=workspaces.broken,
    )
    batch = read_partition(landing, ingest_date, rules)
    arrived = with_local_time(batch_events(batch, ingest_date).lazy(), workspaces.frame).collect()
    night_kept, night_lost = split_duplicates(arrived)

    touched = set(night_kept["local_date"].unique().to_list()) | _previous_days_touched(warehouse, ingest_date)
    lost_parts, displaced = [night_lost], 0
    with Progress(len(touched), "merging", " days") as bar:
        for day in sorted(touched):
            existing = read_parquet(warehouse, events_key(day)) if warehouse.exists(events_key(day)) else None
            partition, lost = merge_day(existing, night_kept.filter(pl.col("local_date") == day), ingest_date)
            lost_parts.append(lost.filter(pl.col("origin") == "new").drop("origin"))
            displaced += lost.filter(pl.col("origin") == "old").height
            _write_day(warehouse, day, partition)
            bar.advance()

    lost_all = pl.concat(lost_parts, how="vertical")
    conflicts = lost_all.filter(pl.col("conflict"))
    for row in conflicts.iter_rows(named=True):
        file, _, line = row["arrival_key"].rpartition(":")
        batch.quarantine.append((ingest_date, file, int(line), "conflicting_duplicate", row["event_id"], None))
    quarantine = pl.DataFrame(batch.quarantine, schema=QUARANTINE_SCHEMA, orient="row")
    write_parquet(warehouse, quarantine_key(ingest_date), quarantine.sort("file", "line_no", nulls_last=False))
    write_parquet(warehouse, "workspaces.parquet", workspaces.frame)

    kept_new = night_kept.join(lost_all.select("arrival_key"), on="arrival_key", how="anti")
    late = kept_new.join(_first_open_days(workspaces.frame, ingest_date), on="workspace_id").filter(
        pl.col("local_date") < pl.col("first_open_day")
    )
    line_reasons = Counter(r[3] for r in batch.quarantine if r[2] is not None)
    if displaced:
        log.warning("%d copies from later arrival days were replaced by earlier arrivals of the same events",
                    displaced)
    summary: dict[str, Any] = {
        "ingest_date": ingest_date.isoformat(),
        "run_id": f"{ingest_date.isoformat()}#{batch.input_digest.hexdigest()[:12]}",
        "lines_read": batch.lines_read,
        "events_valid": kept_new.height,
        "events_quarantined": sum(line_reasons.values()),
        "quarantined_by_reason": dict(sorted(line_reasons.items())),
        "duplicates_dropped": lost_all.height - conflicts.height,
        "late_events": late.height,
        "days_touched": [d.isoformat() for d in sorted(touched)],
        "events_by_workspace": {str(w): n for w, n in
                                kept_new.group_by("workspace_id").len().sort("workspace_id").rows()},
        "blank_lines": batch.blank_lines,
        "files_read": len(batch.files),
        "files_damaged": batch.damaged_files,
        "displaced_later_copies": displaced,
        "workspaces_misconfigured": {str(k): v for k, v in sorted(workspaces.broken.items())},
        "landing_partitions": sorted({k.rsplit("/", 1)[0] for k in batch.files}),
        "input_sha256": batch.input_digest.hexdigest(),
        "last_event_at": _last_event_at(night_kept),
        "seconds": round(time.monotonic() - started, 3),
    }
    warehouse.write_bytes(run_key(ingest_date), json.dumps(summary, indent=1).encode(), "application/json")
    log.info("ingest_date=%s: %d lines, %d valid, %d quarantined, %d duplicates, %d days touched",
             ingest_date, summary["lines_read"], summary["events_valid"], summary["events_quarantined"],
             summary["duplicates_dropped"], len(touched))
    return summary


def _last_event_at(events: pl.DataFrame) -> str | None:
    if events.is_empty():
        return None
    latest: datetime = events["occurred_at"].max()  # type: ignore[assignment]
    return latest.isoformat().replace("+00:00", "Z")


def _write_day(warehouse: Storage, day: date, partition: pl.DataFrame) -> None:
    """Replace the day's events and aggregates; a day left empty loses its files."""
    if partition.is_empty():
        warehouse.delete(events_key(day))
        warehouse.delete(daily_key(day))
        return
    write_parquet(warehouse, events_key(day), partition)
    write_parquet(warehouse, daily_key(day), daily_aggregates(partition.lazy()).collect())
