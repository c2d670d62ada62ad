"""Given/expect tests of the pure transforms, with the time zone traps the product must get right."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from etl.transform import daily_aggregates, with_local_time

WORKSPACES = pl.DataFrame(
    {
        "workspace_id": [1, 2, 3, 4, 5, 6],
        "name": ["NY", "Kiritimati", "Pago Pago", "Kolkata", "Chatham", "Madrid"],
        "timezone": ["America/New_York", "Pacific/Kiritimati", "Pacific/Pago_Pago", "Asia/Kolkata",
                     "Pacific/Chatham", "Europe/Madrid"],
    }
)


def local_dates(rows: list[tuple[int, str]]) -> list[date]:
    events = pl.DataFrame(
        {"workspace_id": [w for w, _ in rows],
         "occurred_at": [datetime.fromisoformat(t.replace("Z", "+00:00")) for _, t in rows]},
        schema={"workspace_id": pl.Int64, "occurred_at": pl.Datetime("us", "UTC")},
    ).with_row_index("order")
    out = with_local_time(events.lazy(), WORKSPACES).collect().sort("order")
    return out["local_date"].to_list()


@pytest.mark.parametrize(
    ("workspace", "utc", "expected"),
    [
        # New York, spring forward 2026-03-08 at 02:00 EST (07:00Z): before is EST (-5), after EDT (-4).
        (1, "2026-03-08T04:59:59Z", date(2026, 3, 7)),
        (1, "2026-03-08T05:00:00Z", date(2026, 3, 8)),  # exactly local midnight EST
        (1, "2026-03-09T03:59:59Z", date(2026, 3, 8)),  # 23:59:59 EDT
        (1, "2026-03-09T04:00:00Z", date(2026, 3, 9)),  # local midnight is now 04:00Z
        # New York, fall back 2026-11-01: the day has 25 hours.
        (1, "2026-11-01T04:00:00Z", date(2026, 11, 1)),
        (1, "2026-11-02T04:59:59Z", date(2026, 11, 1)),
        (1, "2026-11-02T05:00:00Z", date(2026, 11, 2)),
        # Kiritimati +14: 10:00Z is already the next day.
        (2, "2026-03-10T09:59:59Z", date(2026, 3, 10)),
        (2, "2026-03-10T10:00:00Z", date(2026, 3, 11)),
        # Pago Pago -11: 10:59Z is still the previous day.
        (3, "2026-03-10T10:59:59Z", date(2026, 3, 9)),
        (3, "2026-03-10T11:00:00Z", date(2026, 3, 10)),
        # Kolkata +05:30.
        (4, "2026-03-10T18:29:59Z", date(2026, 3, 10)),
        (4, "2026-03-10T18:30:00Z", date(2026, 3, 11)),
        # Chatham +13:45 in southern summer, +12:45 after 2026-04-05.
        (5, "2026-03-10T10:14:59Z", date(2026, 3, 10)),
        (5, "2026-03-10T10:15:00Z", date(2026, 3, 11)),
        (5, "2026-06-10T11:15:00Z", date(2026, 6, 11)),
        (5, "2026-06-10T11:14:59Z", date(2026, 6, 10)),
        # Madrid on its DST night 2026-03-29.
        (6, "2026-03-29T21:59:59Z", date(2026, 3, 29)),
        (6, "2026-03-29T22:00:00Z", date(2026, 3, 30)),
    ],
)
def test_local_date_follows_the_workspace_time_zone(workspace: int, utc: str, expected: date) -> None:
    assert local_dates([(workspace, utc)]) == [expected]


def test_mixed_time_zones_in_one_frame_keep_their_rows() -> None:
    rows = [(1, "2026-03-08T04:59:59Z"), (2, "2026-03-10T10:00:00Z"), (1, "2026-03-09T04:00:00Z"),
            (3, "2026-03-10T10:59:59Z")]
    assert local_dates(rows) == [date(2026, 3, 7), date(2026, 3, 11), date(2026, 3, 9), date(2026, 3, 9)]


def test_local_time_is_the_wall_clock_time() -> None:
    events = pl.DataFrame({"workspace_id": [4], "occurred_at": [datetime(2026, 3, 10, 18, 30, tzinfo=UTC)]},
                          schema={"workspace_id": pl.Int64, "occurred_at": pl.Datetime("us", "UTC")})
    out = with_local_time(events.lazy(), WORKSPACES).collect()
    assert out["local_ts"].to_list() == [datetime(2026, 3, 11, 0, 0)]


def test_without_any_usable_workspace_the_frame_is_empty_with_the_same_columns() -> None:
    """A night whose every workspace is misconfigured still writes typed (empty) files, not a crash."""
    events = pl.DataFrame({"workspace_id": [1, 9], "occurred_at": [datetime(2026, 3, 10, tzinfo=UTC)] * 2},
                          schema={"workspace_id": pl.Int64, "occurred_at": pl.Datetime("us", "UTC")})
    out = with_local_time(events.lazy(), WORKSPACES.clear()).collect()
    assert out.height == 0
    assert out.schema == {"workspace_id": pl.Int64, "occurred_at": pl.Datetime("us", "UTC"), "timezone": pl.String,
                          "local_ts": pl.Datetime("us"), "local_date": pl.Date}
    unknown = with_local_time(events.lazy(), WORKSPACES).collect()
    assert unknown["workspace_id"].to_list() == [1]  # a workspace missing from the dimension is dropped


def test_daily_aggregates_count_each_combination_once() -> None:
    d = date(2026, 3, 10)
    events = pl.DataFrame({
        "workspace_id": [1, 1, 1, 2],
        "local_date": [d, d, d, d],
        "event_type": ["contact.added", "contact.added", "contact.connected", "contact.added"],
        "source": ["user", "user", "incoming_message", "user"],
        "channel_id": [None, None, 11, None],
        "user_id": [7, 7, None, 8],
    }, schema_overrides={"channel_id": pl.Int64, "user_id": pl.Int64})
    expected = pl.DataFrame({
        "workspace_id": [1, 1, 2],
        "local_date": [d, d, d],
        "event_type": ["contact.added", "contact.connected", "contact.added"],
        "source": ["user", "incoming_message", "user"],
        "channel_id": [None, 11, None],
        "user_id": [7, None, 8],
        "events": [2, 1, 1],
    }, schema_overrides={"channel_id": pl.Int64, "user_id": pl.Int64})
    assert_frame_equal(daily_aggregates(events.lazy()).collect(), expected)


EXTREME_ZONES = ["Pacific/Kiritimati", "Pacific/Pago_Pago", "Asia/Kathmandu", "Australia/Lord_Howe",
                 "Pacific/Chatham", "America/St_Johns", "Europe/Madrid", "America/New_York", "UTC", "Asia/Kolkata"]


def test_offset_lookup_equals_zone_conversion_across_dst_transitions() -> None:
    """The 15-minute offset table gives the tz database's answer for every instant, including around each
    zone's DST changes (Lord Howe moves by 30 minutes, Chatham sits at +12:45/+13:45)."""
    from etl.transform import local_time_columns

    workspaces = pl.DataFrame({"workspace_id": list(range(1, 11)), "name": ["w"] * 10, "timezone": EXTREME_ZONES})
    start = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp()) * 1_000_000
    spans = [start, int(datetime(2026, 9, 20, tzinfo=UTC).timestamp()) * 1_000_000]  # spring and autumn changes
    rng = np.random.default_rng(3)
    micros = np.concatenate([s + rng.integers(0, 60 * 86_400_000_000, size=100_000) for s in spans])
    # and both sides of every quarter-hour edge, where transitions happen
    edges = np.concatenate([np.arange(s, s + 60 * 86_400_000_000, 15 * 60_000_000) for s in spans])
    micros = np.concatenate([micros, edges, edges - 1])
    events = pl.DataFrame({"workspace_id": rng.integers(1, 11, size=len(micros)),
                           "occurred_at": pl.Series(micros).cast(pl.Datetime("us", "UTC"))})
    looked_up = local_time_columns(events, workspaces)
    converted = with_local_time(events.with_row_index("row").lazy(), workspaces).collect().sort("row")
    assert looked_up["local_ts"].to_list() == converted["local_ts"].to_list()
    assert looked_up["local_date"].to_list() == converted["local_date"].to_list()


def test_zone_offsets_are_each_zones_utc_offset_per_quarter_hour() -> None:
    from etl.transform import BUCKET_US, zone_offsets

    first = int(datetime(2026, 3, 29, 0, 45, tzinfo=UTC).timestamp() * 1_000_000) // BUCKET_US  # Madrid: +1 -> +2
    table, whole = zone_offsets(["Asia/Kolkata", "Europe/Madrid", "UTC"], first, first + 1)
    hour = 3_600_000_000
    assert table.to_list() == [5.5 * hour, 5.5 * hour, hour, 2 * hour, 0, 0]
    assert whole


def test_events_spanning_years_take_the_per_zone_conversion_with_the_same_result() -> None:
    """A night whose instants span more than the lookup table holds (years of quarter hours) converts zone by
    zone: the same local times, row for row."""
    from etl.transform import local_time_columns

    stamps = ["2001-01-01T12:00:00Z", "2026-03-29T01:30:00Z", "2026-03-08T07:00:00Z", "2026-11-01T05:59:59Z"]
    events = pl.DataFrame({"workspace_id": [6, 6, 1, 1],
                           "occurred_at": [datetime.fromisoformat(t.replace("Z", "+00:00")) for t in stamps]},
                          schema={"workspace_id": pl.Int64, "occurred_at": pl.Datetime("us", "UTC")})
    got = local_time_columns(events, WORKSPACES)
    assert got["local_ts"].to_list() == [datetime(2001, 1, 1, 13), datetime(2026, 3, 29, 3, 30),
                                         datetime(2026, 3, 8, 3), datetime(2026, 11, 1, 1, 59, 59)]
    assert got["tz_code"].to_list() == [2, 2, 0, 0]  # indexes into the sorted zone names


def test_aggregates_come_sorted_by_their_keys_nulls_first_or_in_the_order_of_their_first_event() -> None:
    d, e = date(2026, 3, 10), date(2026, 3, 11)
    keys = [(2, e, "contact.added", "user", None, 8), (1, d, "contact.connected", "incoming_message", 11, None),
            (1, d, "contact.connected", "incoming_message", None, None), (1, d, "contact.added", "user", None, 7),
            (1, d, "contact.added", "user", None, None)]
    keys += [(3, d, "contact.added", "user", None, user) for user in np.random.default_rng(5).permutation(2_000)]
    schema = [("workspace_id", pl.Int64), ("local_date", pl.Date), ("event_type", pl.String), ("source", pl.String),
              ("channel_id", pl.Int64), ("user_id", pl.Int64)]
    events = pl.DataFrame([k for k in keys * 2], schema=schema, orient="row")  # each key twice: counted once
    as_stored = daily_aggregates(events.lazy(), sorted_by_keys=False).collect()
    assert as_stored.rows() == [(*k, 2) for k in keys]
    nulls_first = sorted(keys, key=lambda k: tuple((v is not None, v) for v in k))
    assert daily_aggregates(events.lazy()).collect().rows() == [(*k, 2) for k in nulls_first]
