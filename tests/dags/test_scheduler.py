"""One run under a real scheduler: `airflow standalone` (API server, scheduler, DAG processor, triggerer;
LocalExecutor, SQLite) on loopback. The scheduler creates the latest night's run by itself; a manual trigger follows.
The deadline is one second after the night's end, so both runs are late from the start: the scheduler's deadline
alert must reach ops while they run, and each run must still succeed and record its assets."""

from __future__ import annotations

import contextlib
import email
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from email import policy
from pathlib import Path

import pytest

from etl.generate import GenerateOptions, generate
from etl.mail import SMTP_PLAIN
from etl.nightly import backfill
from etl.settings import Settings
from etl.storage import LocalStorage
from etl.windows import end_of_night, report_day_for
from tests.conftest import Inbox, _free_port
from tests.dags.conftest import REPO

BIN = Path(sys.executable).parent


def wait_for(query: str, db: Path, done: set[str], deadline: float, log: Path) -> tuple[str, ...]:
    """Poll the metadata DB until the row's first column is in `done` (a condition, not a fixed sleep)."""
    while time.monotonic() < deadline:
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
                row = conn.execute(query).fetchone()
        except sqlite3.OperationalError:  # not created or not migrated yet
            row = None
        if row and row[0] in done:
            return tuple(row)
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {query!r}; scheduler log tail:\n{log.read_text()[-4000:]}")


@pytest.fixture
def standalone(tmp_path: Path, smtp_server: tuple[int, Inbox]) -> Iterator[tuple[Path, Path, dict[str, str]]]:
    today = datetime.now(UTC).date()
    data = tmp_path / "data"
    generate(LocalStorage(data / "landing"), GenerateOptions(start=today - timedelta(days=4), days=4, workspaces=3,
                                                             events_per_day=150, seed=3))
    port = _free_port()
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIRFLOW_HOME": str(tmp_path / "home"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__TRIGGERER__CAPACITY": "10",
        "CONTACTS_REPORT_LANDING": str(data / "landing"),
        "CONTACTS_REPORT_WAREHOUSE": str(data / "warehouse"),
        "CONTACTS_REPORT_OUT": str(data / "out"),
        "CONTACTS_REPORT_LANDING_WAIT_SECONDS": "0",
        "CONTACTS_REPORT_RENDER_BATCH_SIZE": "1",
        "CONTACTS_REPORT_MAX_QUARANTINE_RATIO": "0.5",
        "CONTACTS_REPORT_MAX_SCHEMA_DRIFT_RATIO": "0.5",
        "NO_PROGRESS": "1",
        "CONTACTS_REPORT_DEADLINE": "1s",
        "CONTACTS_REPORT_OPS_EMAIL": "ops@example.com",
        "AIRFLOW_CONN_SMTP_DEFAULT": json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": smtp_server[0],
                                                 **SMTP_PLAIN}),
    }
    env.pop("AIRFLOW_CONN_AWS_DEFAULT", None)
    backfill(Settings(landing=env["CONTACTS_REPORT_LANDING"], warehouse=env["CONTACTS_REPORT_WAREHOUSE"]),
             until=today - timedelta(days=1))
    log = tmp_path / "standalone.log"
    with log.open("wb") as sink:
        process = subprocess.Popen([str(BIN / "airflow"), "standalone"], env=env, stdout=sink,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield tmp_path / "home/airflow.db", log, env
    finally:
        started = descendants(process.pid)  # the scheduler runs in a session of its own, its workers under it
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        for pid in started | descendants(*started):  # what outlived SIGTERM (it did: the scheduler and its workers)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def descendants(*roots: int) -> set[int]:
    """Every process below `roots` (from /proc's parent links)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def test_scheduled_and_triggered_runs_succeed_under_the_scheduler(standalone: tuple[Path, Path, dict[str, str]],
                                                                  smtp_server: tuple[int, Inbox]) -> None:
    db, log, env = standalone
    today = datetime.now(UTC).date()
    deadline = time.monotonic() + 300
    state, _, logical, interval_start, run_id = wait_for(
        "select state, run_type, logical_date, data_interval_start, run_id from dag_run "
        "where dag_id = 'contacts_report_nightly' and run_type = 'scheduled'", db, {"success", "failed"}, deadline, log)
    assert state == "success", log.read_text()[-4000:]
    # A scheduled run's logical date is its interval's start: the night that just ended.
    assert logical.startswith(str(today - timedelta(days=1))) and logical == interval_start
    warehouse = Path(env["CONTACTS_REPORT_WAREHOUSE"])
    assert (warehouse / f"_runs/ingest_date={today - timedelta(days=1)}.json").is_file()
    with sqlite3.connect(db) as conn:
        mapped = conn.execute("select count(*) from task_instance where run_id = ? and task_id = 'render' "
                              "and map_index >= 0 and state = 'success'", (run_id,)).fetchone()[0]
    assert mapped == 3  # three workspaces, one per batch: the renders really were mapped
    assets_carry_the_nights_counts(db, run_id, warehouse, today - timedelta(days=1))
    late_night_was_alerted(smtp_server[1], today - timedelta(days=1), deadline, log)

    night = today - timedelta(days=2)
    trigger = subprocess.run([str(BIN / "airflow"), "dags", "trigger", "contacts_report_nightly", "--logical-date",
                              f"{night}T00:00:00+00:00"], env=env, capture_output=True, text=True, check=False)
    assert trigger.returncode == 0, trigger.stderr[-2000:]
    state, *_ = wait_for("select state from dag_run where dag_id = 'contacts_report_nightly' "
                         "and run_type = 'manual'", db, {"success", "failed"}, deadline, log)
    assert state == "success", log.read_text()[-4000:]
    # The triggered night's own pages: each workspace's report day at that night's cutoff, which the scheduled
    # night (one later) never renders, whatever the zone.
    workspaces = json.loads((Path(env["CONTACTS_REPORT_LANDING"]) / "workspaces.json").read_text())
    for ws in workspaces:
        day = report_day_for(end_of_night(night), ws["timezone"])
        assert day != report_day_for(end_of_night(night + timedelta(days=1)), ws["timezone"])
        assert (Path(env["CONTACTS_REPORT_OUT"]) / f"{ws['workspace_id']}/{day}/today.html").is_file(), ws


def assets_carry_the_nights_counts(db: Path, run_id: str, warehouse: Path, night: date) -> None:
    """Each producing task's asset event, with the counts the night's own records hold."""
    with sqlite3.connect(db) as conn:
        events = {name: json.loads(extra or "{}") for name, extra in conn.execute(
            "select a.name, e.extra from asset_event e join asset a on a.id = e.asset_id where e.source_run_id = ?",
            (run_id,))}
    assert sorted(events) == ["contacts_report.archive", "contacts_report.pages", "contacts_report.published",
                              "contacts_report.warehouse"]
    summary = json.loads((warehouse / f"_runs/ingest_date={night}.json").read_text())
    ingested = events["contacts_report.warehouse"]
    assert {k: ingested[k] for k in ("lines_read", "events_valid", "events_quarantined", "late_events")} == {
        k: summary[k] for k in ("lines_read", "events_valid", "events_quarantined", "late_events")}
    assert events["contacts_report.pages"]["pages"] == 21 and events["contacts_report.pages"]["workspaces"] == 3
    assert events["contacts_report.archive"]["written"] + events["contacts_report.archive"]["unchanged"] == 3
    assert events["contacts_report.published"] == {"uploaded": 0, "unchanged": 0}  # no bucket in this run
    record = json.loads((warehouse / f"_tasks/night={night}/finish_ingest.json").read_text())
    assert record["seconds"] >= 0 and record["finished_at"] > record["started_at"]  # recorded by the task itself


def late_night_was_alerted(inbox: Inbox, night: date, deadline: float, log: Path) -> None:
    """The deadline alert (Airflow's, run by the scheduler through the executor) names the night and the tasks."""
    subject = f"[contacts-report] night {night} is late"
    while time.monotonic() < deadline:
        found = [raw for _, raw in inbox.messages if subject.encode() in raw]
        if found:
            break
        time.sleep(1)
    else:
        raise AssertionError(f"no deadline alert for {night}; scheduler log tail:\n{log.read_text()[-4000:]}")
    message = email.message_from_bytes(found[0], policy=policy.default)
    body = message.get_body(("html",)).get_content()
    assert str(message["To"]) == "ops@example.com" and "has not finished" in body
    assert "<li>running:" in body and "<li>not started:" in body and "run_summary" in body
