"""Report days and preset windows, in a workspace's time zone. Shared by the ETL, the renderer and the DAG."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from etl.i18n import N_

WINDOW_NAMES: tuple[str, ...] = (
    "today",
    "yesterday",
    "last_7_days",
    "last_14_days",
    "last_30_days",
    "this_month",
    "last_month",
)
WINDOW_TITLES: dict[str, str] = {
    "today": N_("Today"),
    "yesterday": N_("Yesterday"),
    "last_7_days": N_("Last 7 days"),
    "last_14_days": N_("Last 14 days"),
    "last_30_days": N_("Last 30 days"),
    "this_month": N_("This month"),
    "last_month": N_("Last month"),
}


# The days the product handles: events from 2000 on, and a margin before the calendar's end (a day + 1 is computed).
FIRST_DAY, LAST_DAY = date(2000, 1, 1), date(9998, 12, 31)


@dataclass(frozen=True)
class Window:
    """A run of local dates, both ends inclusive."""

    name: str
    start: date
    end: date

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def dates(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range(self.days)]

    def previous(self) -> Window:
        """The equally long run of days immediately before this window (for "% difference")."""
        return Window(f"previous_{self.name}", self.start - timedelta(days=self.days),
                      self.start - timedelta(days=1))


def window(name: str, report_day: date) -> Window:
    """The preset window `name` as it reads at the last instant of `report_day`."""
    r = report_day
    if name == "today":
        return Window(name, r, r)
    if name == "yesterday":
        return Window(name, r - timedelta(days=1), r - timedelta(days=1))
    if name.startswith("last_") and name.endswith("_days"):
        n = int(name[len("last_"):-len("_days")])
        if name in WINDOW_NAMES:
            return Window(name, r - timedelta(days=n - 1), r)
    if name == "this_month":
        return Window(name, r.replace(day=1), r)
    if name == "last_month":
        end = r.replace(day=1) - timedelta(days=1)
        return Window(name, end.replace(day=1), end)
    raise ValueError(f"unknown window {name!r}; expected one of {', '.join(WINDOW_NAMES)}")


def windows_showing(day: date, report_day: date) -> tuple[str, ...]:
    """The windows of `report_day` whose numbers `day` is part of: its days, or its previous period's (the
    "% difference")."""
    return tuple(name for name in WINDOW_NAMES
                 if (w := window(name, report_day)).previous().start <= day <= w.end)


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """The tz database's zone `name`, read once per process. ZoneInfo's own cache holds only the eight most recent
    zones for sure: over 1,000 workspaces in ~20 zones a night read zone files ~2,000 times (~0.3 s a night)."""
    return ZoneInfo(name)


def local_date(instant: datetime, timezone: str) -> date:
    if instant.tzinfo is None:
        raise ValueError("instant must be timezone-aware")
    return instant.astimezone(zone(timezone)).date()


def report_day_for(cutoff: datetime, timezone: str) -> date:
    """The last local day that had fully ended at `cutoff`: R = local_date(cutoff) - 1 day."""
    return local_date(cutoff, timezone) - timedelta(days=1)


def end_of_night(night: date) -> datetime:
    """The instant an arrival day ends (00:00 UTC the next day): its data are complete, and it is the cutoff whose
    report days the night publishes."""
    return datetime.combine(night + timedelta(days=1), datetime.min.time(), UTC)
