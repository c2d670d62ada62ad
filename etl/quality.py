"""The data-quality gate between the ETL and the render: stop the night loudly rather than publish a wrong report."""

from __future__ import annotations

import json
import statistics
from datetime import date, timedelta
from typing import Any

from etl.settings import Thresholds
from etl.storage import Storage
from etl.warehouse import run_key

SCHEMA_DRIFT_PREFIXES = ("bad_type:", "missing_field:", "unknown_event_type", "not_an_object", "unknown_source")


class QualityError(Exception):
    """The night's data failed the gate; the message lists every problem."""


def _previous_summaries(warehouse: Storage, night: date, nights: int) -> list[dict[str, Any]]:
    found = []
    for back in range(1, nights + 1):
        key = run_key(night - timedelta(days=back))
        if warehouse.exists(key):
            found.append(json.loads(warehouse.read_bytes(key)))
    return found


def problems(summary: dict[str, Any], history: list[dict[str, Any]], limits: Thresholds) -> list[str]:
    """Every reason the night is not fit to publish (empty when it is)."""
    found = []
    lines = summary["lines_read"]
    if lines == 0:
        return ["the arrival partition holds no events: refusing to publish a report of zero contacts"]
    damaged = summary.get("files_damaged", {})
    if len(damaged) > limits.max_damaged_files:
        found.append(f"{len(damaged)} landing file(s) could not be read whole (limit {limits.max_damaged_files}): "
                     f"{damaged}; ask the feed to re-deliver them, then re-run the night")
    ratio = summary["events_quarantined"] / lines
    if ratio > limits.max_quarantine_ratio:
        found.append(f"{ratio:.1%} of lines were quarantined (limit {limits.max_quarantine_ratio:.1%}); "
                     f"reasons: {summary['quarantined_by_reason']}")
    drift = sum(n for reason, n in summary["quarantined_by_reason"].items()
                if reason.startswith(SCHEMA_DRIFT_PREFIXES)) / lines
    if drift > limits.max_schema_drift_ratio:
        found.append(f"schema drift: {drift:.1%} of lines have missing fields, wrong types or unknown values "
                     f"(limit {limits.max_schema_drift_ratio:.1%}); check the feed's contract")
    for workspace, baseline in _baselines(history, limits).items():
        tonight = summary.get("events_by_workspace", {}).get(workspace, 0)
        if tonight < limits.min_volume_ratio * baseline:
            found.append(f"workspace {workspace}: volume collapsed to {tonight} events (the previous nights' median "
                         f"is {baseline:.0f}; the gate asks for at least {limits.min_volume_ratio:.0%} of it)")
    return found


def _baselines(history: list[dict[str, Any]], limits: Thresholds) -> dict[str, float]:
    per_workspace: dict[str, list[int]] = {}
    for past in history:
        for workspace, n in past.get("events_by_workspace", {}).items():
            per_workspace.setdefault(workspace, []).append(n)
    medians = {w: statistics.median(v + [0] * (len(history) - len(v))) for w, v in per_workspace.items()}
    return {w: m for w, m in medians.items() if m >= limits.volume_floor}


def gate(warehouse: Storage, night: date, limits: Thresholds) -> dict[str, Any]:
    """Raise QualityError listing every problem of the night's ETL summary; return the checked numbers."""
    summary = json.loads(warehouse.read_bytes(run_key(night)))
    history = _previous_summaries(warehouse, night, limits.baseline_nights)
    found = problems(summary, history, limits)
    if found:
        raise QualityError(f"night {night} failed the data-quality gate:\n  - " + "\n  - ".join(found))
    return {"night": night.isoformat(), "lines_read": summary["lines_read"], "baseline_nights": len(history)}
