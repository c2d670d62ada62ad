"""The warehouse's readers on the pinned example: what the pages and the archive are told about it."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from etl.pipeline import run_etl
from etl.report import Filters, Freshness, PreparedInputs, build_page
from etl.storage import LocalStorage, read_parquet
from etl.transform import DAILY_KEYS
from etl.warehouse import NIGHTS_KEY, DayFiles, load_inputs, read_view
from tests.helpers import event, write_landing


def test_the_view_names_the_latest_run_the_freshest_event_and_the_first_day(tiny_warehouse: Path) -> None:
    runs = [json.loads(p.read_text()) for p in sorted((tiny_warehouse / "_runs").glob("ingest_date=*.json"))]
    days = sorted(date.fromisoformat(p.name.split("=")[1]) for p in (tiny_warehouse / "events").iterdir())
    view = read_view(LocalStorage(tiny_warehouse))
    latest = max(runs, key=lambda r: r["ingest_date"])
    assert view.freshness == Freshness(run_id=latest["run_id"],
                                       last_event_at=max(r["last_event_at"] for r in runs if r["last_event_at"]),
                                       latest_ingest_date="2026-03-30", latest_report_day=None)
    assert view.first_day == days[0]
    assert {w: (ws.name, ws.timezone) for w, ws in view.workspaces.items()} == {
        1: ("Tiny Co", "Europe/Madrid"), 2: ("Lima Ventas", "America/Lima")}


class CountingStorage(LocalStorage):
    """A local warehouse that counts the objects read."""

    reads: list[str]

    def read_bytes(self, key: str) -> bytes:
        self.reads.append(key)
        return super().read_bytes(key)


def test_the_view_reads_the_same_few_objects_whatever_the_length_of_the_history(tiny_warehouse: Path) -> None:
    """Every task of a night reads the view: it must not read every run summary ever written (a year of nights is
    365 requests per task on S3). The nights digest holds what the view needs; a night it misses (a warehouse
    written before it, or two nights that updated it at once) is read from its summary and gives the same view."""
    warehouse = CountingStorage(tiny_warehouse)
    warehouse.reads = []
    view = read_view(warehouse)
    assert sorted(warehouse.reads) == [NIGHTS_KEY, "workspaces.parquet"]
    nights = json.loads((tiny_warehouse / NIGHTS_KEY).read_text())
    assert sorted(nights) == sorted(p.name[len("ingest_date="):-5] for p in (tiny_warehouse / "_runs").glob("i*"))
    for missing in ([max(nights)], list(nights)):  # one night lost in a race; a warehouse from before the digest
        (tiny_warehouse / NIGHTS_KEY).write_text(json.dumps({k: v for k, v in nights.items() if k not in missing}))
        warehouse.reads = []
        assert read_view(warehouse) == view
        assert sorted(warehouse.reads) == sorted([NIGHTS_KEY, "workspaces.parquet",
                                                  *(f"_runs/ingest_date={night}.json" for night in missing)])
    (tiny_warehouse / NIGHTS_KEY).unlink()
    assert read_view(warehouse) == view
    (tiny_warehouse / "_runs" / f"ingest_date={max(nights)}.json").unlink()  # a night re-run, not finished yet
    (tiny_warehouse / NIGHTS_KEY).write_text(json.dumps(nights))
    assert read_view(warehouse).freshness.latest_ingest_date == sorted(nights)[-2]


def test_a_re_run_replaces_its_night_in_the_digest(tmp_path: Path) -> None:
    landing = write_landing(tmp_path / "landing", [(1, "W", "UTC")],
                            {"2026-03-10/09": [event("a", "2026-03-10T08:00:00Z")],
                             "2026-03-11/09": [event("b", "2026-03-11T07:00:00Z")]})
    warehouse = LocalStorage(tmp_path / "wh")
    for day in (date(2026, 3, 11), date(2026, 3, 10)):  # out of order: the later night is the latest
        run_etl(LocalStorage(landing), warehouse, day)
    assert read_view(warehouse).freshness.last_event_at == "2026-03-11T07:00:00Z"
    (landing / "events/ingest_date=2026-03-11/hour=09/part-0.ndjson").write_text(
        json.dumps(event("b", "2026-03-10T23:00:00Z")) + "\n")  # re-delivered with an earlier time
    summary = run_etl(LocalStorage(landing), warehouse, date(2026, 3, 11))
    nights = json.loads(warehouse.read_bytes(NIGHTS_KEY))
    assert nights["2026-03-11"] == {"ingest_date": "2026-03-11", "run_id": summary["run_id"],
                                    "last_event_at": "2026-03-10T23:00:00Z"}
    assert read_view(warehouse).freshness == Freshness(summary["run_id"], "2026-03-10T23:00:00Z", "2026-03-11", None)


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


class FailingSummary(LocalStorage):
    """A warehouse whose next run summary write fails, as a night killed between its last two writes."""

    def write_bytes(self, key: str, data: bytes | memoryview, content_type: str = "application/octet-stream"
                    ) -> None:
        if key.startswith("_runs/ingest_date="):
            raise OSError("killed")
        super().write_bytes(key, data, content_type)


def test_a_night_killed_before_its_summary_counts_once_its_re_run_finishes(tmp_path: Path) -> None:
    landing = write_landing(tmp_path / "landing", [(1, "W", "UTC")],
                            {"2026-03-10/09": [event("a", "2026-03-10T08:00:00Z")],
                             "2026-03-11/09": [event("b", "2026-03-11T07:00:00Z")]})
    run_etl(LocalStorage(landing), LocalStorage(tmp_path / "wh"), date(2026, 3, 10))
    before = read_view(LocalStorage(tmp_path / "wh")).freshness
    with pytest.raises(OSError, match="killed"):
        run_etl(LocalStorage(landing), FailingSummary(tmp_path / "wh"), date(2026, 3, 11))
    assert read_view(LocalStorage(tmp_path / "wh")).freshness == before  # not finished: not counted
    summary = run_etl(LocalStorage(landing), LocalStorage(tmp_path / "wh"), date(2026, 3, 11))
    assert read_view(LocalStorage(tmp_path / "wh")).freshness == Freshness(summary["run_id"], "2026-03-11T07:00:00Z",
                                                                           "2026-03-11", None)
