"""Pure Polars transforms of the warehouse's rows; no I/O here. Lazy where a caller composes them into one query
(`with_local_time`, `with_content_hash`, `daily_aggregates`), eager where the ETL needs the rows at once
(`local_time_columns`, `storage_permutation`, `zone_offsets`)."""

from __future__ import annotations

import polars as pl

from etl.contract import CONTENT_COLUMNS

DAILY_KEYS: tuple[str, ...] = ("workspace_id", "local_date", "event_type", "source", "channel_id", "user_id")


def with_local_time(events: pl.LazyFrame, workspaces: pl.DataFrame) -> pl.LazyFrame:
    """Add `local_ts` (naive wall-clock time) and `local_date` in each event's workspace time zone.

    Polars converts one time zone per column, so the frame is split by zone and put back together;
    DST, half-hour and 45-minute offsets and the ±14 h extremes are handled by the tz database.
    Events of workspaces missing from `workspaces` are dropped (the validator quarantines them first).
    """
    zoned = events.join(workspaces.lazy().select("workspace_id", "timezone"), on="workspace_id", how="inner")
    parts = [
        zoned.filter(pl.col("timezone") == tz).with_columns(
            local_ts=pl.col("occurred_at").dt.convert_time_zone(tz).dt.replace_time_zone(None)
        )
        for tz in sorted(set(workspaces["timezone"].to_list()))
    ]
    if not parts:  # no usable workspace: an empty frame with the same columns
        parts = [zoned.with_columns(local_ts=pl.col("occurred_at").dt.replace_time_zone(None)).clear()]
    return pl.concat(parts).with_columns(local_date=pl.col("local_ts").dt.date())


BUCKET_US = 15 * 60 * 1_000_000
MAX_LOOKUP_BUCKETS = 100_000  # ~3 years of quarter hours; a night spanning more converts zone by zone


def zone_offsets(zones: list[str], first_bucket: int, last_bucket: int) -> tuple[pl.Series, bool]:
    """UTC offsets (µs) of each zone at every 15-minute bucket in [first, last], zone-major, and whether each
    offset holds for its whole bucket (it does for every zone since 1970: transitions fall on quarter hours)."""
    buckets = pl.int_range(first_bucket, last_bucket + 1, dtype=pl.Int64, eager=True)
    offsets, whole = [], True
    for zone in zones:
        at = {edge: (buckets * BUCKET_US + edge).cast(pl.Datetime("us", "UTC")) for edge in (0, BUCKET_US - 1)}
        local = {edge: t.dt.convert_time_zone(zone).dt.replace_time_zone(None).cast(pl.Int64) - t.cast(pl.Int64)
                 for edge, t in at.items()}
        whole &= bool((local[0] == local[BUCKET_US - 1]).all())
        offsets.append(local[0])
    return pl.concat(offsets) if offsets else pl.Series(dtype=pl.Int64), whole


def local_time_columns(events: pl.DataFrame, workspaces: pl.DataFrame) -> pl.DataFrame:
    """`tz_code` (index into the sorted zone names), `local_ts` and `local_date` for each event, by looking up its
    zone's UTC offset for its 15-minute bucket: one gather instead of a time zone conversion per row.

    Every event's workspace must be in `workspaces` (the validator sees to it). Falls back to the per-zone
    conversion of `with_local_time` when the events span years (a huge table) or in the (never yet seen) case of
    an offset change inside a bucket.
    """
    zones = sorted(set(workspaces["timezone"].to_list()))
    code = workspaces["timezone"].replace_strict(zones, list(range(len(zones))), return_dtype=pl.Int64)
    tz_code = events["workspace_id"].replace_strict(workspaces["workspace_id"], code, return_dtype=pl.Int64)
    micros = events["occurred_at"].dt.epoch("us")
    bucket = micros // BUCKET_US
    if events.is_empty():
        local = micros.cast(pl.Datetime("us"))
    else:
        first, last = int(bucket.min()), int(bucket.max())  # type: ignore[arg-type]
        table, whole = zone_offsets(zones, first, last) if last - first < MAX_LOOKUP_BUCKETS else (None, False)
        if table is None or not whole:
            converted = with_local_time(events.select("workspace_id", "occurred_at").with_row_index("row").lazy(),
                                        workspaces).collect().sort("row")
            local = converted["local_ts"]
        else:
            local = (micros + table.gather(tz_code * (last - first + 1) + bucket - first)).cast(pl.Datetime("us"))
    return pl.DataFrame({"tz_code": tz_code, "local_ts": local}).with_columns(local_date=pl.col("local_ts").dt.date())


def with_content_hash(events: pl.LazyFrame) -> pl.LazyFrame:
    """A hash of what the event says (not when it arrived), to tell a redelivery from a reused id."""
    return events.with_columns(content_hash=pl.struct(list(CONTENT_COLUMNS)).hash(seed=0))


def daily_aggregates(events: pl.LazyFrame, sorted_by_keys: bool = True) -> pl.LazyFrame:
    """Grain: one row per workspace × local date × event type × source × channel × user, with `events`.

    `sorted_by_keys=False` keeps the groups in the order of their first event instead (deterministic for a
    deterministic input, and ~1/3 cheaper: the ETL writes a day's aggregates in its events' storage order).
    """
    grouped = events.group_by(list(DAILY_KEYS), maintain_order=not sorted_by_keys).agg(
        events=pl.len().cast(pl.Int64))
    return grouped.sort(list(DAILY_KEYS), nulls_last=False) if sorted_by_keys else grouped


def storage_permutation(rows: pl.DataFrame) -> pl.Series:
    """`row` of `rows` (workspace_id, occurred_at, arrival_rank, row) in the order of a stored events file:
    workspace, time, arrival (the same content always gives the same bytes).

    Workspace and time are packed into one integer when they fit, as they do for the rows of one local day
    (their instants lie within ~50 h): sorting by two integer columns is ~2× faster than by three.
    """
    micros, workspace = pl.col("occurred_at").dt.epoch("us"), pl.col("workspace_id")
    spans = rows.select(micros.max() - micros.min(), workspace.max() - workspace.min()).row(0)
    if rows.height and spans[0] < 2**40 and spans[1] < 2**22:
        packed = (workspace - workspace.min()) * 2**40 + (micros - micros.min())
        return rows.sort(packed, "arrival_rank").get_column("row")
    return rows.sort("workspace_id", "occurred_at", "arrival_rank").get_column("row")
