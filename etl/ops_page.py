"""The ops page `_runs/index.html`: the last 60 nights as a table, and their trends as small charts, each with its
numbers in a table (the report pages' chart code and accessibility rules). In English: it is for ops.

A night's row comes from its run record (`_nightly/night=…json`, written by the run's last task, or by a failed
quality gate), or, for history filled with the CLI (`contacts-report etl`, `backfill`), from the ETL summary alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Any

from markupsafe import Markup

from etl import charts
from etl.i18n import language
from etl.ops import NIGHT_TASKS, night_counts
from etl.report import ChartNumbers
from etl.settings import Thresholds

NIGHTS_SHOWN = 60
_SUMMARY = re.compile(r"^_runs/ingest_date=(\d{4}-\d{2}-\d{2})\.json$")


@dataclass(frozen=True)
class Trend:
    """One chart of the page: its inline SVG and legend, caption and numbers."""

    key: str
    caption: str
    chart: dict[str, Any]
    numbers: ChartNumbers


def nights_shown(records: list[dict[str, Any]], summaries: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The last NIGHTS_SHOWN nights, oldest first: each run record, and for a night with only an ETL summary (filled
    with the CLI) a row made from it, marked `kind: "cli"`."""
    by_night = {r["night"]: {"kind": r.get("run_type") or "scheduled", **r} for r in records}
    for night, summary in summaries.items():
        by_night.setdefault(night, {"night": night, "kind": "cli", **night_counts(summary)})
    return [by_night[n] for n in sorted(by_night)[-NIGHTS_SHOWN:]]


def summary_nights(keys: list[str]) -> list[str]:
    """The nights whose ETL summaries `keys` (a listing of `_runs`) hold."""
    return [m.group(1) for k in keys if (m := _SUMMARY.match(k))]


def status(row: dict[str, Any]) -> str:
    """What went wrong with a night, in words ("" when nothing did)."""
    problems = [f"quality gate failed: {row['gate_failed']}"] if row.get("gate_failed") else []
    if row.get("deadline_missed"):
        problems.append("missed its deadline")
    return "; ".join(problems)


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,}"


def _share(part: Any, whole: Any) -> float:
    return round(100 * (part or 0) / whole, 2) if whole else 0.0


def trends(rows: list[dict[str, Any]], thresholds: Thresholds) -> list[Trend]:
    """The page's charts over `rows` (oldest first)."""
    lang = language()
    days = [date.fromisoformat(r["night"]) for r in rows]
    labels = [r["night"] + (" ⚠" if status(r) else "") for r in rows]

    def column(key: str, scale: float = 1) -> list[float]:
        return [round((r.get(key) or 0) / scale, 2) for r in rows]

    def numbers(headers: tuple[str, ...], series: list[list[float]]) -> ChartNumbers:
        return ChartNumbers(("Night", *headers), tuple(
            (label, *(_number(values[i]) for values in series)) for i, label in enumerate(labels)))

    def grouped(key: str, caption: str, series: dict[str, list[float]], limit: float | None = None) -> Trend:
        drawn = charts.grouped_daily_bars(days, series, f"ops-{key}", {k: k for k in series}, lang, limit=limit)
        return Trend(key, caption, {"svg": Markup(drawn.svg), "legend": drawn.legend},  # escaped by charts
                     numbers(tuple(series), list(series.values())))

    limit = thresholds.max_quarantine_ratio * 100
    shares = {"quarantined %": [_share(r.get("events_quarantined"), r.get("lines_read")) for r in rows],
              "duplicates %": [_share(r.get("duplicates_dropped"), r.get("lines_read")) for r in rows]}
    tasks = [t for t in NIGHT_TASKS if any(t in (r.get("task_seconds") or {}) for r in rows)]
    seconds = {t: [float((r.get("task_seconds") or {}).get(t, 0)) for r in rows] for t in tasks}
    found = [
        grouped("lines", "Lines read and valid events per night", {"lines read": column("lines_read"),
                                                                   "valid": column("events_valid")}),
        grouped("shares", f"Quarantined and duplicate lines, % of lines read; the dashed line is the gate's "
                          f"quarantine limit ({limit:g} %)", shares, limit=limit),
        grouped("late", "Late events per night", {"late events": column("late_events")}),
        grouped("published", "Pages rendered and objects published per night",
                {"pages": column("pages"), "objects": column("uploaded")}),
        grouped("bytes", "Megabytes published per night", {"MB": column("published_bytes", 1e6)}),
        grouped("mail", "E-mails sent and failed per night", {"sent": column("sent"), "failed": column("failed")}),
    ]
    if tasks:
        drawn = charts.stacked_daily_bars(days, seconds, "ops-tasks", lang)
        found.insert(4, Trend("tasks", "Seconds each task took, per night (recorded by the tasks)",
                              {"svg": Markup(drawn.svg), "legend": drawn.legend},
                              numbers(tuple(tasks), list(seconds.values()))))
    return found
