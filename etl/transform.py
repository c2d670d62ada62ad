"""Pure Polars transforms of the warehouse. No I/O here: LazyFrame in, LazyFrame out."""

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


def keep_first_arrival(events: pl.LazyFrame) -> pl.LazyFrame:
    """One row per event_id: the copy that arrived first (smallest arrival_key), whatever the run order."""
    return events.sort("arrival_key").unique(subset="event_id", keep="first", maintain_order=True)


def with_content_hash(events: pl.LazyFrame) -> pl.LazyFrame:
    """A hash of what the event says (not when it arrived), to tell a redelivery from a reused id."""
    return events.with_columns(content_hash=pl.struct(list(CONTENT_COLUMNS)).hash(seed=0))


def daily_aggregates(events: pl.LazyFrame) -> pl.LazyFrame:
    """Grain: one row per workspace × local date × event type × source × channel × user, with `events`."""
    return (
        events.group_by(list(DAILY_KEYS))
        .agg(events=pl.len().cast(pl.Int64))
        .sort(list(DAILY_KEYS), nulls_last=False)
    )


def storage_order(events: pl.LazyFrame) -> pl.LazyFrame:
    """The stable row order of a stored partition, so the same content gives the same bytes."""
    return events.sort("workspace_id", "occurred_at", "event_id")
