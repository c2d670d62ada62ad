"""The night as ops see it: what each task produces (Airflow assets), how long each task took (recorded by the task
itself), and the alerts when a task fails or the night misses its deadline. Plain Python; the DAG wires it.

  {warehouse}/_tasks/night=YYYY-MM-DD/<task>[.<map index>].json   {"task", "started_at", "finished_at", …}
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from etl.settings import Settings

if TYPE_CHECKING:
    from etl.storage import Storage

log = logging.getLogger(__name__)

# The night's tasks in their order (mapped ones once): what a late run reports as done or still to do.
NIGHT_TASKS: tuple[str, ...] = ("check_landing", "plan_shards", "ingest", "finish_ingest", "quality_gate",
                                "plan_render_batches", "render", "build_indexes", "publish", "archive", "send_emails",
                                "run_summary")


# What a night's ETL summary counts, as its record, its alerts and the ops page show them.
NIGHT_COUNTS: tuple[str, ...] = ("lines_read", "events_valid", "events_quarantined", "duplicates_dropped",
                                 "late_events")


def location_uri(location: str) -> str:
    """An asset URI for a storage location: `s3://…` as it is, a local folder as an absolute file:// URI (no I/O)."""
    if location.startswith("s3://"):
        return location.rstrip("/")
    return "file://" + os.path.abspath(location)


def night_assets(settings: Settings) -> dict[str, tuple[str, str]]:
    """What the night reads and produces, as (asset name, URI): names are fixed (other DAGs schedule on them),
    URIs say where the settings put the data."""
    return {
        "landing": ("contacts_report.landing", location_uri(settings.landing)),
        "warehouse": ("contacts_report.warehouse", location_uri(settings.warehouse)),
        "pages": ("contacts_report.pages", location_uri(settings.out)),
        # without a bucket nothing is published: the asset then names a place that stays empty
        "published": ("contacts_report.published", settings.s3_uri.rstrip("/") if settings.s3_uri
                      else location_uri(settings.out) + "/_not_published"),
        "archive": ("contacts_report.archive", location_uri(settings.archive)),
    }


# ---------------------------------------------------------------- task records

def _store(settings: Settings) -> Storage:
    from etl.storage import open_storage  # not when the DAG is parsed: it reads only `night_assets`

    return open_storage(settings.warehouse, sse=settings.s3_sse, identity=settings.s3_identity)


def deadline_key(night: date) -> str:
    """The mark the deadline alert leaves in the warehouse: the ops page shows the night as late."""
    return f"_deadlines/night={night.isoformat()}.json"


def _task_key(night: date, task: str, map_index: int | None = None) -> str:
    suffix = f".{map_index}" if map_index is not None and map_index >= 0 else ""
    return f"_tasks/night={night.isoformat()}/{task}{suffix}.json"


@contextmanager
def recording(settings: Settings, night: date, task: str, map_index: int | None = None) -> Iterator[None]:
    """Record the task's start, then its end and seconds (or its failure): the durations on the ops page, and what
    a late night's alert says is still running, come from these records, not from Airflow's database."""
    store, key = _store(settings), _task_key(night, task, map_index)
    started = datetime.now(UTC)
    record: dict[str, Any] = {"task": task, "map_index": map_index, "started_at": started.isoformat()}
    store.write_bytes(key, json.dumps(record).encode(), "application/json")
    try:
        yield
    except BaseException:
        record["failed_at"] = datetime.now(UTC).isoformat()
        store.write_bytes(key, json.dumps(record).encode(), "application/json")
        raise
    finished = datetime.now(UTC)
    record |= {"finished_at": finished.isoformat(), "seconds": round((finished - started).total_seconds(), 3)}
    store.write_bytes(key, json.dumps(record).encode(), "application/json")


def task_records(settings: Settings, night: date) -> list[dict[str, Any]]:
    store = _store(settings)
    return [json.loads(store.read_bytes(k)) for k in store.list(f"_tasks/night={night.isoformat()}")]


def task_seconds(records: list[dict[str, Any]]) -> dict[str, float]:
    """Each finished task's wall-clock seconds, a mapped task's from its first start to its last end."""
    spans: dict[str, tuple[datetime, datetime]] = {}
    for r in records:
        if "finished_at" not in r:
            continue
        start, end = datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["finished_at"])
        first, last = spans.get(r["task"], (start, end))
        spans[r["task"]] = (min(first, start), max(last, end))
    return {task: round((end - start).total_seconds(), 1) for task, (start, end) in spans.items()}


def progress(records: list[dict[str, Any]]) -> dict[str, list[str]]:
    """The night's tasks by state, from their records: done, running (started, not ended), failed, not started."""
    found: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        found.setdefault(r["task"], []).append(r)
    states: dict[str, list[str]] = {"done": [], "running": [], "failed": [], "not started": []}
    for task in NIGHT_TASKS:
        runs = found.get(task, [])
        if not runs:
            states["not started"].append(task)
        elif any("failed_at" in r for r in runs):
            states["failed"].append(task)
        elif all("finished_at" in r for r in runs):
            states["done"].append(task)
        else:
            states["running"].append(task)
    return states


# ---------------------------------------------------------------- alerts (sent through the SMTP provider's notifier)

def night_counts(summary: dict[str, Any]) -> dict[str, Any]:
    """The counts of a night's ETL summary that its record, its alerts and the ops page show."""
    return {k: summary[k] for k in NIGHT_COUNTS if k in summary}


def _counts_so_far(settings: Settings, night: date) -> dict[str, Any]:
    from etl.warehouse import run_key  # not when the DAG is parsed (Polars)

    store = _store(settings)
    return night_counts(json.loads(store.read_bytes(run_key(night)))) if store.exists(run_key(night)) else {}


def failure_message(settings: Settings, night: date, task: str, log_url: str | None, error: str
                    ) -> tuple[str, str]:
    """(subject, HTML) of a failed task's alert: the task, the night, the log, the exception's last line and the
    run's counts so far."""
    from html import escape

    last_line = next((line for line in reversed(error.strip().splitlines()) if line.strip()), "") or "(none)"
    counts = _counts_so_far(settings, night)
    subject = f"[contacts-report] {task} failed for night {night}"
    rows = "".join(f"<tr><td>{escape(k)}</td><td>{v:,}</td></tr>" for k, v in counts.items())
    body = (f"<p>The nightly contacts report failed.</p><p>Task: <b>{escape(task)}</b><br>Night: {night}<br>"
            f"Log: {_link(log_url)}<br>Error: <code>{escape(last_line[:500])}</code></p>"
            + (f"<p>Counts so far:</p><table>{rows}</table>" if rows else "<p>No counts yet: the ingest had not "
                                                                          "finished.</p>"))
    return subject, body


def deadline_message(settings: Settings, night: date, deadline: datetime, run_id: str, states: dict[str, list[str]]
                     ) -> tuple[str, str]:
    from html import escape

    subject = f"[contacts-report] night {night} is late: not finished by {deadline:%Y-%m-%d %H:%M} UTC"
    lines = "".join(f"<li>{escape(state)}: {escape(', '.join(tasks) or '—')}</li>" for state, tasks in states.items())
    counts = _counts_so_far(settings, night)
    body = (f"<p>The e-mails of night {night} were due by {deadline:%Y-%m-%d %H:%M} UTC "
            f"(CONTACTS_REPORT_DEADLINE after the night's end) and the run {escape(run_id)} has not finished.</p>"
            f"<ul>{lines}</ul>"
            + (f"<p>Counts so far: {escape(json.dumps(counts))}</p>" if counts else ""))
    return subject, body


def _link(url: str | None) -> str:
    from html import escape

    return f'<a href="{escape(url)}">{escape(url)}</a>' if url else "see the Airflow UI"


def html_to_text(html: str) -> str:
    """An alert's words for the log."""
    from html import unescape

    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def notify(settings: Settings, subject: str, html: str, context: dict[str, Any]) -> bool:
    """Send an alert to CONTACTS_REPORT_OPS_EMAIL through the SMTP provider's notifier (connection
    `smtp_default`); log it in any case. Never raises: an alert that fails must not hide what it reports."""
    log.error("%s: %s", subject, html_to_text(html))
    if not settings.ops_email:
        return False
    try:
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        SmtpNotifier(to=settings.ops_email, from_email=settings.mail_from, subject=subject,
                     html_content=html).notify(context)  # type: ignore[arg-type]  # the callback's context
    except Exception:  # best effort: the failure or the lateness is already in Airflow's records and logs
        log.exception("could not e-mail ops at %s", settings.ops_email)
        return False
    return True


def deadline_missed(context: dict[str, Any], **_: Any) -> None:
    """The deadline alert's callback (Airflow runs it when a run has not finished by the deadline): names the night
    and what is still running. Backfilled nights are past their deadline by nature: not alerted."""
    run = context.get("dag_run", {})
    deadline = context.get("deadline", {}).get("deadline_time")
    if run.get("run_type") == "backfill":
        log.info("night of run %s is past its deadline, as backfills are: no alert", run.get("run_id"))
        return
    logical = run.get("logical_date") or run.get("run_after")
    night = datetime.fromisoformat(str(logical).replace("Z", "+00:00")).astimezone(UTC).date()
    if not run.get("logical_date"):
        night -= timedelta(days=1)  # a manual run without a logical date processes the last ended day
    due = datetime.fromisoformat(str(deadline).replace("Z", "+00:00")) if deadline else datetime.now(UTC)
    settings = Settings.from_env()
    _store(settings).write_bytes(deadline_key(night), json.dumps({"deadline": due.isoformat(),
                                                                  "run_id": run.get("run_id")}).encode())
    states = progress(task_records(settings, night))
    subject, html = deadline_message(settings, night, due.astimezone(UTC), str(run.get("run_id")), states)
    notify(settings, subject, html, context)
