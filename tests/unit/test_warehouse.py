"""The warehouse's readers on the pinned example: what the pages and the archive are told about it."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import polars as pl

from etl.report import Filters, Freshness, PreparedInputs, build_page
from etl.storage import LocalStorage, read_parquet
from etl.transform import DAILY_KEYS
from etl.warehouse import DayFiles, load_inputs, read_view


def test_the_view_names_the_latest_run_the_freshest_event_and_the_first_day(tiny_warehouse: Path) -> None:
    runs = [json.loads(p.read_text()) for p in sorted((tiny_warehouse / "_runs").glob("*.json"))]
    days = sorted(date.fromisoformat(p.name.split("=")[1]) for p in (tiny_warehouse / "events").iterdir())
    view = read_view(LocalStorage(tiny_warehouse))
    latest = max(runs, key=lambda r: r["ingest_date"])
    assert view.freshness == Freshness(run_id=latest["run_id"],
                                       last_event_at=max(r["last_event_at"] for r in runs if r["last_event_at"]),
                                       latest_ingest_date="2026-03-30", latest_report_day=None)
    assert view.first_day == days[0]
    assert {w: (ws.name, ws.timezone) for w, ws in view.workspaces.items()} == {
        1: ("Tiny Co", "Europe/Madrid"), 2: ("Lima Ventas", "America/Lima")}


def test_a_days_aggregates_are_its_files_added_up(tiny_warehouse: Path) -> None:
    """A local day has one aggregates file per arrival day that delivered to it; readers see one row per key."""
    warehouse = LocalStorage(tiny_warehouse)
    files = {}
    for path in sorted((tiny_warehouse / "daily").rglob("*.parquet")):
        files.setdefault(path.parent.name, []).append(path)
    day, paths = max(files.items(), key=lambda item: len(item[1]))
    assert len(paths) > 1  # the example has late events: some day was delivered to on several nights
    stored = pl.concat([read_parquet(warehouse, p.relative_to(tiny_warehouse).as_posix()) for p in paths])
    first = date.fromisoformat(day.split("=")[1])
    read = DayFiles(warehouse).read("daily", first, first, [1, 2])
    assert read is not None and not read.select(DAILY_KEYS).is_duplicated().any()
    expected = stored.group_by(list(DAILY_KEYS)).agg(pl.col("events").sum()).sort(list(DAILY_KEYS), nulls_last=False)
    assert read.to_dicts() == expected.to_dicts()


def test_a_day_before_any_data_loads_empty_inputs_a_page_can_be_built_from(tiny_warehouse: Path) -> None:
    warehouse = LocalStorage(tiny_warehouse)
    view = read_view(warehouse)
    day = date(2020, 1, 1)
    inputs = load_inputs(warehouse, [view.workspaces[1]], {1: day}, ("today",), need_all_events=True)[1]
    assert inputs.events.is_empty() and inputs.facts.is_empty()
    assert inputs.events.schema["local_date"] == pl.Date and inputs.events.schema["local_ts"] == pl.Datetime("us")
    page = build_page(PreparedInputs.of(inputs), "today", day, Filters(), view.freshness, page_log_rows=10)
    assert page.summary()["workspace_id"] == 1
