"""Preset windows and report days, in the workspace's time zone."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from etl.windows import WINDOW_NAMES, end_of_night, report_day_for, window

R = date(2026, 3, 10)


@pytest.mark.parametrize(
    ("name", "start", "end"),
    [
        ("today", date(2026, 3, 10), date(2026, 3, 10)),
        ("yesterday", date(2026, 3, 9), date(2026, 3, 9)),
        ("last_7_days", date(2026, 3, 4), date(2026, 3, 10)),
        ("last_14_days", date(2026, 2, 25), date(2026, 3, 10)),
        ("last_30_days", date(2026, 2, 9), date(2026, 3, 10)),
        ("this_month", date(2026, 3, 1), date(2026, 3, 10)),
        ("last_month", date(2026, 2, 1), date(2026, 2, 28)),
    ],
)
def test_windows_are_inclusive_local_date_runs(name: str, start: date, end: date) -> None:
    w = window(name, R)
    assert (w.start, w.end) == (start, end)
    assert len(w.dates()) == w.days == (end - start).days + 1


def test_previous_period_is_equally_long_and_immediately_before() -> None:
    assert (window("last_7_days", R).previous().start, window("last_7_days", R).previous().end) == (
        date(2026, 2, 25), date(2026, 3, 3))
    this_month = window("this_month", R).previous()
    assert (this_month.start, this_month.end, this_month.days) == (date(2026, 2, 19), date(2026, 2, 28), 10)


def test_last_month_in_january_is_december_of_the_previous_year() -> None:
    w = window("last_month", date(2027, 1, 1))
    assert (w.start, w.end) == (date(2026, 12, 1), date(2026, 12, 31))


def test_unknown_window_is_refused() -> None:
    with pytest.raises(ValueError) as refused:
        window("last_8_days", R)
    assert str(refused.value) == ("unknown window 'last_8_days'; expected one of today, yesterday, last_7_days, "
                                  "last_14_days, last_30_days, this_month, last_month")  # what to type instead
    assert len(WINDOW_NAMES) == 7


@pytest.mark.parametrize(
    ("tz", "expected"),
    [
        ("UTC", date(2026, 3, 11)),
        ("Pacific/Kiritimati", date(2026, 3, 11)),  # +14: 12th 14:00 locally; the 11th has ended
        ("Pacific/Pago_Pago", date(2026, 3, 10)),  # -11: the 11th 13:00 locally; only the 10th has ended
        ("Asia/Kolkata", date(2026, 3, 11)),
        ("Pacific/Chatham", date(2026, 3, 11)),  # +13:45 in March (DST)
        ("America/New_York", date(2026, 3, 10)),
    ],
)
def test_report_day_is_the_last_local_day_fully_ended_at_the_cutoff(tz: str, expected: date) -> None:
    cutoff = datetime(2026, 3, 12, 0, 0, tzinfo=UTC)
    assert report_day_for(cutoff, tz) == expected


def test_a_cutoff_without_a_time_zone_is_refused_not_read_as_the_machines_local_time() -> None:
    with pytest.raises(ValueError, match=r"^instant must be timezone-aware$"):
        report_day_for(datetime(2026, 3, 12, 0, 30), "UTC")


def test_a_night_ends_at_midnight_utc_after_its_arrival_day() -> None:
    assert end_of_night(date(2026, 12, 31)) == datetime(2027, 1, 1, tzinfo=UTC)
    assert report_day_for(end_of_night(date(2026, 3, 10)), "Pacific/Kiritimati") == date(2026, 3, 10)  # +14: ended
    assert report_day_for(end_of_night(date(2026, 3, 10)), "Pacific/Pago_Pago") == date(2026, 3, 9)  # -11: not yet
