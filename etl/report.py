"""Stage one of rendering: warehouse rows -> a typed report model (no HTML here).

Counts come from the daily aggregates (their grain carries channel, user and source, so those filters apply
directly); the contact filter and the logs need the events themselves.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import numpy as np
import polars as pl

from etl.contract import ADDED, ALLOWED_SOURCES, CONNECTED, DELETED, MERGED, SOURCE_LABELS, SOURCE_MEANINGS, SOURCES
from etl.i18n import N_, Language, language
from etl.transform import daily_aggregates
from etl.windows import WINDOW_NAMES, WINDOW_TITLES, Window, window

KINDS: tuple[str, ...] = ("added", "deleted", "merged", "connected")
OVERVIEW_KINDS: tuple[str, ...] = ("added", "deleted", "merged")
EVENT_TYPE_OF: dict[str, str] = {"added": ADDED, "deleted": DELETED, "merged": MERGED, "connected": CONNECTED}
KIND_TITLES: dict[str, str] = {"added": N_("Contacts added"), "deleted": N_("Contacts deleted"),
                               "merged": N_("Contacts merged"), "connected": N_("Contacts connected")}
LOG_TITLES: dict[str, str] = {"added": N_("Contacts added log"), "deleted": N_("Contacts deleted log"),
                              "merged": N_("Contacts merged log"), "connected": N_("Contacts connected log")}
NOT_APPLICABLE = N_("The selected filters are not applicable here")
NO_DATA_FILTERED = N_("The selected filters have no applicable data")
NO_DATA = N_("No contacts in this period")
FILTER_KEYS: tuple[str, ...] = ("channel", "user", "source", "contact")
FILTER_TITLES: dict[str, str] = {"channel": N_("Channel"), "user": N_("User"), "source": N_("Source"),
                                 "contact": N_("Contact")}


class FilterError(ValueError):
    """A --filter argument that cannot be used; the message says which forms are accepted."""


@dataclass(frozen=True)
class Filters:
    """Active filters, combined with AND. `channel` applies to added and connected only."""

    channel: int | None = None
    user: int | None = None
    source: str | None = None
    contact: str | None = None

    @classmethod
    def parse(cls, items: list[str] | None) -> Filters:
        values: dict[str, Any] = {}
        for item in items or []:
            key, sep, value = item.partition("=")
            if not sep or key not in FILTER_KEYS or not value:
                raise FilterError(f"bad filter {item!r}; use KEY=VALUE with KEY one of {', '.join(FILTER_KEYS)}")
            if key in values:
                raise FilterError(f"filter {key!r} given twice; each key may be used once")
            if key in ("channel", "user"):
                if not (value.isascii() and value.isdigit() and len(value) <= 19) or not 0 < int(value) < 2**63:
                    raise FilterError(f"{key} filter takes a numeric {key} id, not {value!r}")
                values[key] = int(value)
            elif key == "source":
                if value not in SOURCES:
                    raise FilterError(f"unknown source {value!r}; expected one of {', '.join(SOURCES)}")
                values[key] = value
            else:
                values[key] = value
        return cls(**values)

    def as_dict(self) -> dict[str, str]:
        return {k: str(v) for k in FILTER_KEYS if (v := getattr(self, k)) is not None}

    @property
    def active(self) -> bool:
        return bool(self.as_dict())

    def applies(self, kind: str) -> bool:
        return not (self.channel is not None and kind in ("deleted", "merged"))

    def slug(self) -> str:
        """A folder name for filtered renders: readable, path-safe and unique per filter set."""
        text = "__".join(f"{k}-{v}" for k, v in self.as_dict().items())
        safe = re.sub(r"[^A-Za-z0-9_-]+", "_", text)[:60].strip("_")  # never empty: it starts with a key
        return f"{safe}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"

    def rows_predicate(self, with_contact: bool) -> pl.Expr:
        """Rows kept by channel/user/source (and contact, on events). Channel only narrows added/connected."""
        keep = pl.lit(True)
        if self.channel is not None:
            keep &= ~pl.col("event_type").is_in([ADDED, CONNECTED]) | (pl.col("channel_id") == self.channel)
        if self.user is not None:
            keep &= pl.col("user_id") == self.user
        if self.source is not None:
            keep &= pl.col("source") == self.source
        if with_contact and self.contact is not None:
            keep &= _contact_matches(self.contact)
        return keep


def _contact_matches(needle: str) -> pl.Expr:
    by_name = pl.col("contact_name").str.to_lowercase().str.contains(needle.lower(), literal=True)
    if needle.isdigit():
        number = int(needle)
        return by_name | (pl.col("contact_id") == number) | (pl.col("merged_contact_id") == number)
    return by_name


@dataclass(frozen=True)
class Workspace:
    workspace_id: int
    name: str
    timezone: str
    locale: str = "en"  # BCP 47, checked by `etl.i18n.parse_locale`


@dataclass(frozen=True)
class Metric:
    kind: str
    title: str
    value: int | None
    previous: int | None
    lang: Language = field(default_factory=language, compare=False, repr=False)

    @property
    def change_pct(self) -> float | None:
        """respond.io's "% difference": (current − previous) / previous; undefined when previous is 0."""
        if self.value is None or self.previous is None or self.previous == 0:
            return None
        return round((self.value - self.previous) / self.previous * 100, 1)

    @property
    def change_text(self) -> str:
        return self._change(N_("new (none in the previous period)"), N_("%(change)s vs previous period"))

    @property
    def change_since_the_day_before(self) -> str:
        """The change as a one-day report (the e-mail) words it."""
        return self._change(N_("new (none the day before)"), N_("%(change)s vs the day before"))

    def _change(self, new: str, versus: str) -> str:
        _ = self.lang.gettext
        if self.value is None:
            return _("not applicable")
        if self.previous == 0:
            return _("no change") if self.value == 0 else _(new)
        pct = self.change_pct
        return _(versus) % {"change": self.lang.change(pct)} if pct else _("no change")


@dataclass(frozen=True)
class Slice:
    """One source or channel of a breakdown."""

    key: str
    label: str
    detail: str
    count: int
    share_pct: float


@dataclass(frozen=True)
class LogTable:
    kind: str
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    total: int | None
    csv_name: str | None
    notice: str | None
    # Every row of the log (the CSV download); not part of the page model's identity.
    frame: pl.DataFrame | None = field(default=None, compare=False, repr=False)


def thousands(number: int | None) -> str:
    """A count as the English pages show it: thousands separated by commas; a dash where the figure does not apply."""
    return language().number(number)


def added_sources_explained(lang: Language) -> tuple[tuple[str, str], ...]:
    """The sources a contact can be added from, in the contract's order, with what each means (the page explains
    them)."""
    return tuple((lang.gettext(SOURCE_LABELS[s]), lang.gettext(SOURCE_MEANINGS[s]))
                 for s in SOURCES if s in ALLOWED_SOURCES[ADDED])


ADDED_SOURCES_EXPLAINED = added_sources_explained(language())


@dataclass(frozen=True)
class ChartNumbers:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class DailyRow:
    day: date
    added: int | None
    deleted: int | None
    merged: int | None


@dataclass(frozen=True)
class Freshness:
    run_id: str | None
    last_event_at: str | None
    latest_ingest_date: str | None
    latest_report_day: date | None


@dataclass(frozen=True)
class ReportPage:
    """Everything a window page shows, ready for the template: it formats nothing but the numbers the model hands
    it as text (`thousands`) and builds no rows of its own."""

    workspace: Workspace
    window: Window
    report_day: date
    filters: Filters
    metrics: dict[str, Metric]
    daily: tuple[DailyRow, ...]
    added_by_source: tuple[Slice, ...]
    added_by_source_daily: dict[str, tuple[int, ...]]
    connected_by_channel: tuple[Slice, ...]
    logs: dict[str, LogTable]
    freshness: Freshness
    notices: dict[str, str | None] = field(default_factory=dict)

    @property
    def lang(self) -> Language:
        return language(self.workspace.locale)

    @property
    def title(self) -> str:
        return self.lang.gettext(WINDOW_TITLES[self.window.name])

    def chart_numbers(self) -> dict[str, ChartNumbers]:
        """The table of numbers beside each chart (its text alternative), as the page shows them."""
        lang, _ = self.lang, self.lang.gettext

        def shares(headers: tuple[str, ...], slices: tuple[Slice, ...], label: Any) -> ChartNumbers:
            return ChartNumbers(headers, tuple((label(s), lang.number(s.count), lang.share(s.share_pct))
                                               for s in slices))

        daily = tuple((lang.date(r.day), lang.number(r.added), lang.number(r.deleted), lang.number(r.merged))
                      for r in self.daily)
        return {
            "overview": ChartNumbers((_("Date"), *(_(t) for t in OVERVIEW_SERIES.values())), daily),
            "added": shares((_("Source"), _("Contacts"), _("Share")), self.added_by_source, lambda s: s.label),
            "connected": shares((_("Channel"), _("Contacts"), _("Share")), self.connected_by_channel,
                                lambda s: f"{s.label} ({s.detail})"),
        }

    def summary(self) -> dict[str, Any]:
        """The machine-readable block embedded in the page (the issue's contract)."""
        return {
            "workspace_id": self.workspace.workspace_id,
            "workspace_name": self.workspace.name,
            "timezone": self.workspace.timezone,
            "window": self.window.name,
            "report_day": self.report_day.isoformat(),
            "start": self.window.start.isoformat(),
            "end": self.window.end.isoformat(),
            "filters": self.filters.as_dict(),
            "totals": {k: self.metrics[k].value for k in KINDS},
            "previous_period": {k: self.metrics[k].previous for k in KINDS},
            "added_by_source": {s.key: s.count for s in self.added_by_source},
            "connected_by_channel": {s.key: s.count for s in self.connected_by_channel},
            "daily": [{"date": r.day.isoformat(), "added": r.added, "deleted": r.deleted, "merged": r.merged}
                      for r in self.daily],
            "logs": {k: self.logs[k].total for k in KINDS},
            "generated_from": {"run_id": self.freshness.run_id, "last_event_at": self.freshness.last_event_at,
                               "latest_ingest_date": self.freshness.latest_ingest_date},
        }


def _share(count: int, total: int) -> float:
    return round(count / total * 100, 1) if total else 0.0


def channel_names(events: pl.DataFrame) -> dict[int, tuple[str, str]]:
    """channel_id -> (name, type) as last seen; a deleted channel keeps the name its events carry."""
    latest = (events.select("channel_id", "channel_name", "channel_type", "occurred_at", "event_id")
              .filter(pl.col("channel_id").is_not_null())
              .sort("occurred_at", "event_id")
              .group_by("channel_id").agg(pl.col("channel_name").last(), pl.col("channel_type").last()))
    return {cid: (name or "", ctype or "") for cid, name, ctype in latest.rows()}


LOG_COLUMNS: dict[str, tuple[str, ...]] = {
    "added": (N_("Timestamp"), N_("Contact ID"), N_("Contact name"), N_("Source"), N_("User")),
    "connected": (N_("Timestamp"), N_("Contact ID"), N_("Contact name"), N_("Source"), N_("User"), N_("Channel")),
    "deleted": (N_("Timestamp"), N_("Contact ID"), N_("Contact name"), N_("Source"), N_("User")),
    "merged": (N_("Timestamp"), N_("Primary contact ID"), N_("Contact name after merge"), N_("Source"), N_("User"),
               N_("Merged contact ID")),
}
# The overview's series: the legend of its chart and the columns of its numbers.
OVERVIEW_SERIES: dict[str, str] = {"added": N_("Added"), "deleted": N_("Deleted"), "merged": N_("Merged")}


def log_frames(events: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """Every kind's log over all of `events`, newest first, with every column the page, the CSV and the archive
    need, and `local_date` kept so that each window takes its slice: the formatting is done once per workspace, not
    once per window (the seven windows overlap)."""
    return {kind: _log_rows(events, kind) for kind in KINDS}


# What a log is made of: the two timestamps are formatted, the rest kept as they are.
_LOG_SOURCE_COLUMNS = ("local_ts", "occurred_at", "contact_id", "contact_name", "source", "user_id", "user_name",
                       "channel_id", "channel_name", "channel_type", "merged_contact_id", "event_id", "local_date")


def _log_rows(events: pl.DataFrame, kind: str) -> pl.DataFrame:
    # The order from the sort keys alone, then one gather of the columns a log needs: filtering and sorting whole
    # rows copied every stored column twice.
    order = (events.select("event_type", "occurred_at", "event_id").with_row_index("row")
             .filter(pl.col("event_type") == EVENT_TYPE_OF[kind])
             .sort(["occurred_at", "event_id"], descending=[True, False])["row"])
    rows = events.select(_LOG_SOURCE_COLUMNS)[order]
    return rows.select(
        pl.col("local_ts").dt.strftime("%Y-%m-%d %H:%M:%S").alias("timestamp_local"),
        pl.col("occurred_at").dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").alias("timestamp_utc"),
        *_LOG_SOURCE_COLUMNS[2:],
    )


def _display_rows(frame: pl.DataFrame, kind: str, limit: int, lang: Language) -> tuple[tuple[str, ...], ...]:
    labels = {s: lang.gettext(label) for s, label in SOURCE_LABELS.items()}
    head = frame.head(limit)  # column lists, zipped: a dict per row (`iter_rows(named=True)`) cost 3x more
    out = []
    for stamp, contact, name, source, user_name, channel, channel_type, merged in zip(*(head[c].to_list() for c in (
            "timestamp_local", "contact_id", "contact_name", "source", "user_name", "channel_name", "channel_type",
            "merged_contact_id")), strict=True):
        # The added log names the user only for contacts a user added.
        user = (user_name or "") if kind != "added" or source == "user" else ""
        row = [stamp, str(contact), name, labels[source], user]
        if kind == "connected":
            row.append(f"{channel} ({channel_type})")
        if kind == "merged":
            row.append(str(merged))
        out.append(tuple(row))
    return tuple(out)


@dataclass(frozen=True)
class WorkspaceInputs:
    """One workspace's rows for a report day: aggregates over every window and previous period, events over
    every window (and over everything when the contact filter needs them)."""

    workspace: Workspace
    facts: pl.DataFrame
    events: pl.DataFrame


def needed_days(report_day: date, windows: tuple[str, ...] = WINDOW_NAMES) -> tuple[date, date, date]:
    """(earliest day any previous period needs, earliest day any window shows, report day)."""
    spans = [window(name, report_day) for name in windows]
    return min(w.previous().start for w in spans), min(w.start for w in spans), report_day


def filtered_inputs(inputs: WorkspaceInputs, filters: Filters) -> WorkspaceInputs:
    if not filters.active:
        return inputs
    events = inputs.events.filter(filters.rows_predicate(with_contact=True))
    if filters.contact is not None:
        facts = daily_aggregates(events.lazy()).collect()
    else:
        facts = inputs.facts.filter(filters.rows_predicate(with_contact=False))
    return WorkspaceInputs(inputs.workspace, facts, events)


@dataclass(frozen=True)
class DayCounts:
    """A workspace's aggregates as plain dicts keyed by day, built once per workspace: each of its pages then
    adds up a few dozen days in Python instead of running ~170 small Polars queries (docs/performance.md)."""

    by_kind: dict[tuple[str, date], int]
    added_by_source: dict[tuple[str, date], int]
    connected_by_channel: dict[tuple[int, date], int]

    @classmethod
    def of(cls, facts: pl.DataFrame) -> DayCounts:
        def summed(frame: pl.DataFrame, key: str) -> dict[Any, int]:
            rows = frame.group_by(key, "local_date").agg(pl.col("events").sum()).rows()
            return {(k, d): int(n) for k, d, n in rows}

        return cls(summed(facts, "event_type"),
                   summed(facts.filter(pl.col("event_type") == ADDED), "source"),
                   summed(facts.filter(pl.col("event_type") == CONNECTED), "channel_id"))

    def total(self, kind: str, days: list[date]) -> int:
        event_type = EVENT_TYPE_OF[kind]
        return sum(self.by_kind.get((event_type, d), 0) for d in days)

    @staticmethod
    def per_key(counts: dict[tuple[Any, date], int], start: date, end: date) -> dict[Any, int]:
        out: dict[Any, int] = {}
        for (key, day), n in counts.items():
            if start <= day <= end:
                out[key] = out.get(key, 0) + n
        return out


@dataclass(frozen=True)
class PreparedInputs:
    """What every window of one (filtered) workspace shares: day counts, channel names and formatted logs. It
    holds no events: the caller can free them once the logs are formatted (they are as large)."""

    workspace: Workspace
    counts: DayCounts
    channels: dict[int, tuple[str, str]]
    logs: dict[str, pl.DataFrame]
    # Per log: newest day first, so that a window's rows are the newest rows up to its last day (`shown_rows`); a
    # workspace that changed its time zone can have a log out of day order
    in_day_order: dict[str, bool] = field(default_factory=dict)
    _shown: dict[tuple[str, date, int, int], tuple[tuple[str, ...], ...]] = field(default_factory=dict, repr=False)
    # Per log in day order: the log without `local_date`, and its days as numbers, negated (ascending)
    _sliceable: dict[str, tuple[pl.DataFrame, np.ndarray]] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, inputs: WorkspaceInputs) -> PreparedInputs:
        events = inputs.events
        logs = log_frames(events)
        return cls(inputs.workspace, DayCounts.of(inputs.facts), channel_names(events), logs,
                   {kind: frame["local_date"].is_sorted(descending=True) for kind, frame in logs.items()})

    def window_log(self, kind: str, start: date, end: date) -> pl.DataFrame:
        """Log `kind` over the days `start`..`end`, without `local_date`. A log in day order gives a slice (no copy:
        filtering each window copied every column of the log's largest part seven times a workspace)."""
        log = self.logs[kind]
        if not self.in_day_order.get(kind):
            return log.filter(pl.col("local_date").is_between(start, end)).drop("local_date")
        if kind not in self._sliceable:
            self._sliceable[kind] = (log.drop("local_date"),
                                     -log["local_date"].to_physical().to_numpy().astype(np.int64))
        rows, days = self._sliceable[kind]
        first = int(np.searchsorted(days, -_day_number(end), side="left"))  # the first row of `end` or before
        after = int(np.searchsorted(days, -_day_number(start), side="right"))  # the first row before `start`
        return rows.slice(first, max(after - first, 0))

    def shown_rows(self, kind: str, frame: pl.DataFrame, last_day: date, limit: int, lang: Language
                   ) -> tuple[tuple[str, ...], ...]:
        """The rows a page shows of `frame`, a window of log `kind` ending on `last_day`. In a log in day order
        they are its newest `limit` rows up to that day, whatever day the window starts, as long as it holds that
        many: the windows ending on the report day share one tuple (built once, and the page template escapes it
        once: `templating.table_rows`)."""
        if not self.in_day_order.get(kind):
            return _display_rows(frame, kind, limit, lang)
        key = (kind, last_day, min(limit, frame.height), limit)
        if key not in self._shown:
            self._shown[key] = _display_rows(frame, kind, limit, lang)
        return self._shown[key]


def _day_number(day: date) -> int:
    """A date as Polars stores it: days since 1970-01-01."""
    return (day - _EPOCH).days


_EPOCH = date(1970, 1, 1)


def build_page(prepared: PreparedInputs, window_name: str, report_day: date, filters: Filters,
               freshness: Freshness, page_log_rows: int = 500) -> ReportPage:
    """The model of one page. The inputs must already be filtered (see `filtered_inputs`)."""
    counts, lang = prepared.counts, language(prepared.workspace.locale)
    _ = lang.gettext
    span = window(window_name, report_day)
    days, previous_days = span.dates(), span.previous().dates()
    metrics = {
        kind: Metric(kind, _(KIND_TITLES[kind]),
                     counts.total(kind, days) if filters.applies(kind) else None,
                     counts.total(kind, previous_days) if filters.applies(kind) else None, lang)
        for kind in KINDS
    }
    daily = tuple(
        DailyRow(d, *(counts.total(k, [d]) if filters.applies(k) else None for k in OVERVIEW_KINDS))
        for d in days
    )
    logs = {}
    for kind in KINDS:
        frame = prepared.window_log(kind, span.start, span.end) if filters.applies(kind) else None
        logs[kind] = LogTable(
            kind=kind, title=_(LOG_TITLES[kind]), columns=tuple(_(c) for c in LOG_COLUMNS[kind]),
            rows=() if frame is None else prepared.shown_rows(kind, frame, span.end, page_log_rows, lang),
            total=None if frame is None else frame.height,
            csv_name=None if frame is None else f"{window_name}.contacts_{kind}.csv",
            notice=_notice(filters, kind, frame, lang),
            frame=frame,
        )
    added_total = metrics["added"].value or 0
    by_source = DayCounts.per_key(counts.added_by_source, span.start, span.end)
    added_by_source = tuple(
        Slice(s, _(SOURCE_LABELS[s]), _(SOURCE_MEANINGS[s]), by_source[s], _share(by_source[s], added_total))
        for s in SOURCES if by_source.get(s)
    )
    added_by_source_daily = {
        s.key: tuple(counts.added_by_source.get((s.key, d), 0) for d in days) for s in added_by_source
    }
    names = prepared.channels
    connected_total = metrics["connected"].value or 0
    by_channel = sorted(((cid, n) for cid, n in DayCounts.per_key(counts.connected_by_channel, span.start,
                                                                   span.end).items() if n),
                        key=lambda item: (-item[1], item[0]))
    connected_by_channel = tuple(
        Slice(str(cid), names[cid][0] if cid in names else _("Channel %(id)s") % {"id": cid},
              names[cid][1] if cid in names else _("unknown"), n, _share(n, connected_total))
        for cid, n in by_channel
    )
    notices = {
        "added_by_source": _component_notice(filters, "added", bool(added_by_source), lang),
        "connected_by_channel": _component_notice(filters, "connected", bool(connected_by_channel), lang),
        "overview": None if any((m.value or 0) for m in metrics.values() if m.kind != "connected") else (
            _(NO_DATA_FILTERED if filters.active else NO_DATA)),
    }
    return ReportPage(prepared.workspace, span, report_day, filters, metrics, daily, added_by_source,
                      added_by_source_daily, connected_by_channel, logs, freshness, notices)


def _component_notice(filters: Filters, kind: str, has_rows: bool, lang: Language) -> str | None:
    if not filters.applies(kind):
        return lang.gettext(NOT_APPLICABLE)
    if has_rows:
        return None
    return lang.gettext(NO_DATA_FILTERED if filters.active else NO_DATA)


def _notice(filters: Filters, kind: str, frame: pl.DataFrame | None, lang: Language) -> str | None:
    return _component_notice(filters, kind, frame is not None and frame.height > 0, lang)


def previous_and_next_day(report_day: date, freshness: Freshness, earliest: date | None
                          ) -> tuple[date | None, date | None]:
    prev_day = report_day - timedelta(days=1)
    next_day = report_day + timedelta(days=1)
    return (prev_day if earliest is not None and prev_day >= earliest else None,
            next_day if freshness.latest_report_day and next_day <= freshness.latest_report_day else None)
