"""The report model on its own (stage one of rendering): a page built from a handful of events, no ETL, no HTML."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from etl.contract import CONTENT_COLUMNS, EVENT_SCHEMA
from etl.i18n import language
from etl.report import (
    ADDED_SOURCES_EXPLAINED,
    NO_DATA,
    NO_DATA_FILTERED,
    ChartNumbers,
    Filters,
    Freshness,
    PreparedInputs,
    ReportPage,
    Workspace,
    WorkspaceInputs,
    _display_rows,
    build_page,
    filtered_inputs,
    log_frames,
    thousands,
)
from etl.transform import daily_aggregates, with_local_time
from etl.windows import WINDOW_NAMES, window
from tests.helpers import event

KOLKATA = Workspace(1, "Acme", "Asia/Kolkata")  # UTC+05:30: 20:00 UTC is 01:30 the next day
FRESHNESS = Freshness("run-7", "2026-03-09T20:00:00.000000Z", "2026-03-10", date(2026, 3, 10))
EVENTS = [
    event("a-1", "2026-03-09T20:00:00Z", source="user", contact_id=1),  # 2026-03-10 locally
    event("a-2", "2026-03-05T10:00:00Z", contact_id=2),
    event("a-3", "2026-03-05T11:00:00Z", contact_id=3),
    event("a-0", "2026-03-01T10:00:00Z", contact_id=4),  # the previous period
    event("c-1", "2026-03-06T10:00:00Z", event_type="contact.connected", source="incoming_message", contact_id=5),
    *[event(f"c-{i}", f"2026-03-0{i}T10:00:00Z", event_type="contact.connected", source="incoming_message",
            contact_id=5 + i, channel_id=12, channel_name="TG", channel_type="telegram") for i in (7, 8)],
    event("d-1", "2026-03-08T10:00:00Z", event_type="contact.deleted", contact_id=2),
    *[event(f"d-{i}", f"2026-02-2{i}T10:00:00Z", event_type="contact.deleted", contact_id=20 + i) for i in (6, 7)],
]


def inputs_of(bodies: list[dict[str, Any]], workspace: Workspace = KOLKATA) -> WorkspaceInputs:
    """The warehouse's rows for `bodies`: events with their local time, and their daily aggregates."""
    schema = {name: EVENT_SCHEMA[name] for name in CONTENT_COLUMNS}
    frame = pl.DataFrame(bodies, schema={**schema, "occurred_at": pl.String()}).with_columns(
        pl.col("occurred_at").str.to_datetime(time_unit="us", time_zone="UTC"))
    zones = pl.DataFrame({"workspace_id": [workspace.workspace_id], "timezone": [workspace.timezone]})
    events = with_local_time(frame.lazy(), zones).drop("timezone").collect()
    return WorkspaceInputs(workspace, daily_aggregates(events.lazy()).collect(), events)


NO_FILTER = Filters()


def page(window: str = "last_7_days", filters: Filters = NO_FILTER, bodies: list[dict[str, Any]] = EVENTS,
         log_rows: int = 500) -> ReportPage:
    prepared = PreparedInputs.of(filtered_inputs(inputs_of(bodies), filters))
    return build_page(prepared, window, date(2026, 3, 10), filters, FRESHNESS, log_rows)


def test_the_page_summary_is_the_documented_block_with_the_counts_of_the_window_and_the_period_before() -> None:
    assert page().summary() == {
        "workspace_id": 1, "workspace_name": "Acme", "timezone": "Asia/Kolkata", "window": "last_7_days",
        "report_day": "2026-03-10", "start": "2026-03-04", "end": "2026-03-10", "filters": {},
        "totals": {"added": 3, "deleted": 1, "merged": 0, "connected": 3},
        "previous_period": {"added": 1, "deleted": 2, "merged": 0, "connected": 0},
        "added_by_source": {"user": 1, "contact_import": 2},
        "connected_by_channel": {"12": 2, "11": 1},
        "daily": [{"date": f"2026-03-{d:02}", "added": {5: 2, 10: 1}.get(d, 0), "deleted": int(d == 8), "merged": 0}
                  for d in range(4, 11)],
        "logs": {"added": 3, "deleted": 1, "merged": 0, "connected": 3},
        "generated_from": {"run_id": "run-7", "last_event_at": "2026-03-09T20:00:00.000000Z",
                           "latest_ingest_date": "2026-03-10"},
    }


def test_a_filtered_summary_names_its_filters_and_nulls_what_they_do_not_apply_to() -> None:
    summary = page(filters=Filters.parse(["channel=12"])).summary()
    assert summary["filters"] == {"channel": "12"}
    assert summary["totals"] == {"added": 0, "deleted": None, "merged": None, "connected": 2}
    assert summary["logs"] == {"added": 0, "deleted": None, "merged": None, "connected": 2}
    assert summary["daily"][4] == {"date": "2026-03-08", "added": 0, "deleted": None, "merged": None}


def test_shares_are_percent_of_the_breakdown_with_one_decimal() -> None:
    built = page()
    assert [(s.key, s.label, s.count, s.share_pct) for s in built.added_by_source] == [
        ("user", "User", 1, 33.3), ("contact_import", "Contact import", 2, 66.7)]
    assert [(s.key, s.label, s.detail, s.share_pct) for s in built.connected_by_channel] == [
        ("12", "TG", "telegram", 66.7), ("11", "WA", "whatsapp", 33.3)]
    assert page(window="today").added_by_source[0].share_pct == 100.0


@pytest.mark.parametrize(("kind", "text", "pct"), [
    ("added", "+200.0% vs previous period", 200.0),
    ("deleted", "-50.0% vs previous period", -50.0),
    ("merged", "no change", None),
    ("connected", "new (none in the previous period)", None),
])
def test_each_metric_compares_with_the_period_before(kind: str, text: str, pct: float | None) -> None:
    metric = page().metrics[kind]
    assert (metric.change_text, metric.change_pct) == (text, pct)


def test_logs_list_the_window_newest_first_with_local_and_utc_times() -> None:
    added = page().logs["added"]
    assert added.rows == (
        ("2026-03-10 01:30:00", "1", "Contact 1", "User", "Susan"),
        ("2026-03-05 16:30:00", "3", "Contact 3", "Contact import", ""),
        ("2026-03-05 15:30:00", "2", "Contact 2", "Contact import", ""))
    assert added.frame is not None
    assert added.frame["timestamp_utc"].to_list() == [
        "2026-03-09T20:00:00.000000Z", "2026-03-05T11:00:00.000000Z", "2026-03-05T10:00:00.000000Z"]
    same_time = [event(f"s-{i}", "2026-03-09T20:00:00Z", contact_id=i) for i in (3, 1, 2)]
    assert [r[1] for r in page(bodies=same_time).logs["added"].rows] == ["1", "2", "3"]  # ties: by event id


def test_a_channel_shows_the_name_and_type_of_its_latest_event() -> None:
    def connected(event_id: str, at: str, **channel: Any) -> dict[str, Any]:
        return event(event_id, at, event_type="contact.connected", source="incoming_message", **channel)

    bodies = [connected("c-1", "2026-03-09T10:00:00Z", channel_name="WA new", channel_type="whatsapp"),
              connected("c-2", "2026-03-06T10:00:00Z", channel_name="WA old", channel_type="sms"),  # by time
              connected("c-4", "2026-03-08T10:00:00Z", channel_id=12, channel_name="TG b", channel_type="telegram"),
              connected("c-3", "2026-03-08T10:00:00Z", channel_id=12, channel_name="TG a", channel_type="telegram"),
              connected("c-5", "2026-03-08T10:00:00Z", channel_id=13, channel_name=None, channel_type=None)]
    assert [(s.key, s.label, s.detail) for s in page(bodies=bodies).connected_by_channel] == [
        ("11", "WA new", "whatsapp"), ("12", "TG b", "telegram"), ("13", "", "")]


def test_a_filter_other_than_contact_counts_from_the_aggregates_which_reach_the_previous_period() -> None:
    whole = inputs_of(EVENTS)  # as the warehouse gives them: events of the window only, aggregates of both periods
    inputs = WorkspaceInputs(KOLKATA, whole.facts, whole.events.filter(pl.col("local_date") >= date(2026, 3, 4)))
    filters = Filters.parse(["user=7"])
    built = build_page(PreparedInputs.of(filtered_inputs(inputs, filters)), "last_7_days", date(2026, 3, 10), filters,
                       FRESHNESS, 500)
    assert {k: (m.value, m.previous) for k, m in built.metrics.items()} == {
        "added": (1, 0), "deleted": (1, 2), "merged": (0, 0), "connected": (0, 0)}


def test_each_log_links_its_csv_unless_the_filters_do_not_apply_and_sources_get_a_daily_series() -> None:
    assert {k: log.csv_name for k, log in page().logs.items()} == {
        k: f"last_7_days.contacts_{k}.csv" for k in ("added", "deleted", "merged", "connected")}
    assert {k: log.csv_name for k, log in page(filters=Filters.parse(["channel=11"])).logs.items()} == {
        "added": "last_7_days.contacts_added.csv", "deleted": None, "merged": None,
        "connected": "last_7_days.contacts_connected.csv"}
    assert page().added_by_source_daily == {"user": (0, 0, 0, 0, 0, 0, 1), "contact_import": (0, 2, 0, 0, 0, 0, 0)}


def test_a_user_without_a_name_shows_as_blank() -> None:
    nameless = [event("a", "2026-03-09T20:00:00Z", source="user", user_name=None)]
    assert page(bodies=nameless).logs["added"].rows[0][4] == ""


def test_the_overview_notice_looks_at_added_deleted_and_merged_only() -> None:
    assert page(window="today").notices["overview"] is None  # one contact added, none connected
    only_connected = [event("c", "2026-03-09T20:00:00Z", event_type="contact.connected", source="incoming_message")]
    assert page(window="today", bodies=only_connected).notices == {
        "added_by_source": NO_DATA, "connected_by_channel": None, "overview": NO_DATA}
    assert page(window="today", bodies=only_connected, filters=Filters.parse(["user=7"])).notices == {
        "added_by_source": NO_DATA_FILTERED, "connected_by_channel": NO_DATA_FILTERED, "overview": NO_DATA_FILTERED}


def test_channels_with_as_many_connections_go_by_id() -> None:
    bodies = [event(f"c-{cid}", "2026-03-09T20:00:00Z", event_type="contact.connected", source="incoming_message",
                    channel_id=cid) for cid in (13, 9, 12, 11, 10)]
    assert [s.key for s in page(bodies=bodies).connected_by_channel] == ["9", "10", "11", "12", "13"]


def test_each_log_is_its_kind_newest_first() -> None:
    logs = log_frames(inputs_of(EVENTS).events)
    assert sorted(logs) == ["added", "connected", "deleted", "merged"]
    assert logs["deleted"]["contact_id"].to_list() == [2, 27, 26]


def test_each_chart_comes_with_its_numbers_as_the_page_shows_them() -> None:
    """The table beside each chart (its text alternative) is built by the model: counts with thousands separators,
    a dash where a filter makes a figure not apply, shares with one decimal, channels with their type."""
    numbers = page(filters=Filters.parse(["channel=12"])).chart_numbers()
    assert numbers["overview"].headers == ("Date", "Added", "Deleted", "Merged")
    assert numbers["overview"].rows[4] == ("Mar 8, 2026", "0", "—", "—")  # dates as the page's language writes them
    assert numbers["connected"] == ChartNumbers(("Channel", "Contacts", "Share"), (("TG (telegram)", "2", "100.0%"),))
    unfiltered = page().chart_numbers()
    assert unfiltered["overview"].rows[4] == ("Mar 8, 2026", "0", "1", "0")
    assert unfiltered["added"] == ChartNumbers(("Source", "Contacts", "Share"),
                                               (("User", "1", "33.3%"), ("Contact import", "2", "66.7%")))
    assert thousands(12_645) == "12,645" and thousands(None) == "—"


def test_the_page_explains_every_source_a_contact_can_be_added_from_in_the_contracts_order() -> None:
    assert [label for label, _ in ADDED_SOURCES_EXPLAINED] == [
        "User", "Contact import", "Developer API", "Incoming message", "Echo message", "Zapier"]
    assert all(meaning.endswith(".") for _, meaning in ADDED_SOURCES_EXPLAINED)


# Every window of a report day, and the ones before it: their logs are slices of the workspace's log, and the windows
# ending on the same day share their shown rows. A random log, in day order or not (a time-zone change), must give
# every window exactly what filtering the log by its days gives.
@settings(max_examples=40, deadline=None)
@given(hours=st.lists(st.integers(0, 24 * 70), min_size=0, max_size=60), limit=st.sampled_from([1, 3, 500]),
       zone_moved=st.booleans())
def test_each_window_shows_what_filtering_the_log_by_its_days_gives(hours: list[int], limit: int,
                                                                   zone_moved: bool) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    bodies = [event(f"e-{i}", (start + timedelta(hours=h)).strftime("%Y-%m-%dT%H:%M:%SZ"), contact_id=i)
              for i, h in enumerate(hours)]
    inputs = inputs_of(bodies)
    if zone_moved:  # the first half of the events kept the local dates of another zone: out of day order
        half = inputs.events.height // 2
        moved = inputs.events["local_date"].to_list()
        moved[:half] = [d + timedelta(days=2) for d in moved[:half]]
        events = inputs.events.with_columns(local_date=pl.Series(moved))
        inputs = WorkspaceInputs(inputs.workspace, inputs.facts, events)
    prepared = PreparedInputs.of(inputs)
    lang = language("en")
    for report_day in (date(2026, 3, 10), date(2026, 2, 28), date(2026, 1, 3)):
        for name in WINDOW_NAMES:
            span = window(name, report_day)
            expected = (prepared.logs["added"].filter(pl.col("local_date").is_between(span.start, span.end))
                        .drop("local_date"))
            got = prepared.window_log("added", span.start, span.end)
            assert_frame_equal(got, expected)
            assert prepared.shown_rows("added", got, span.end, limit, lang) == _display_rows(expected, "added", limit,
                                                                                              lang)
