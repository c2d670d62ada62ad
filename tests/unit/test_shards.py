"""Ingest in shards (`CONTACTS_REPORT_INGEST_SHARDS`): each shard keeps the events whose event_id hashes to it and
writes only its own files; `finish_night` adds the shards up. 1, 2 and 4 shards, in order or not, give the same
events, aggregates, quarantine, counts and pages; a missing shard stops the finish; a re-run converges."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from etl.errors import EtlError
from etl.generate import GenerateOptions, generate
from etl.ingest import landing_dates
from etl.pipeline import finish_night, run_etl
from etl.render import RenderJob
from etl.render_jobs import render
from etl.storage import LocalStorage
from etl.warehouse import Shard, WarehouseError, quarantine_key, read_daily, run_key
from etl.windows import WINDOW_NAMES
from tests.helpers import event, write_landing

COUNTS = ("lines_read", "events_valid", "events_quarantined", "quarantined_by_reason", "duplicates_dropped",
          "late_events", "days_touched", "events_by_workspace", "late_days_by_workspace", "blank_lines",
          "input_sha256", "files_read", "last_event_at")


def night(landing: Path, warehouse: Path, day: date, shards: int) -> dict[str, Any]:
    land, wh = LocalStorage(landing), LocalStorage(warehouse)
    if shards == 1:
        return run_etl(land, wh, day)
    for number in reversed(range(shards)):  # any order
        run_etl(land, wh, day, shard=Shard(number, shards))
    return finish_night(land, wh, day, shards)


def content(warehouse: Path) -> dict[str, Any]:
    """What readers see: every day's events (all files added up, in one order) and aggregates, the quarantines and
    the nights' counts; not how the files are split."""
    events, daily = {}, {}
    for day in sorted({p.parent.name for p in (warehouse / "events").glob("*/*.parquet")}):
        events[day] = pl.concat([pl.read_parquet(p) for p in sorted((warehouse / "events" / day).glob("*.parquet"))]
                                ).sort("event_id", "arrival_key")
        daily[day] = read_daily([pl.read_parquet(p) for p in sorted((warehouse / "daily" / day).glob("*.parquet"))])
    nights = sorted(p.name for p in (warehouse / "_runs").glob("ingest_date=*.json"))
    summaries = {n: {k: json.loads((warehouse / "_runs" / n).read_text())[k] for k in COUNTS} for n in nights}
    quarantine = {n: pl.read_parquet(warehouse / quarantine_key(date.fromisoformat(n[12:22])))
                  for n in nights}
    ids = pl.concat([pl.read_parquet(p) for p in sorted((warehouse / "ids").glob("*.parquet"))]).sort("event_id")
    return {"events": events, "daily": daily, "summaries": summaries, "quarantine": quarantine, "ids": ids}


def same(left: dict[str, Any], right: dict[str, Any]) -> None:
    assert left["summaries"] == right["summaries"]
    for kind in ("events", "daily", "quarantine"):
        assert left[kind].keys() == right[kind].keys(), kind
        for key, frame in left[kind].items():
            assert frame.equals(right[kind][key]), (kind, key)
    assert left["ids"].equals(right["ids"])


@pytest.fixture(scope="module")
def landing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated nights (duplicates, late events, malformed lines) and one more arrival day holding an event_id
    reused by another workspace and a redelivery of it."""
    root = tmp_path_factory.mktemp("landing")
    generate(LocalStorage(root), GenerateOptions(start=date(2026, 3, 1), days=6, workspaces=7, events_per_day=150,
                                                 seed=11))
    workspaces = (root / "workspaces.json").read_text()
    write_landing(root, [], {"2026-03-07/01/reuse.ndjson": [
        event("reused", "2026-03-06T10:00:00Z", workspace_id=1),
        event("reused", "2026-03-06T10:00:00Z", workspace_id=2, contact_id=555),  # the id reused: a conflict
        event("reused", "2026-03-06T10:00:00Z", workspace_id=1)]})  # a redelivery of the first
    (root / "workspaces.json").write_text(workspaces)
    return root


@pytest.fixture(scope="module")
def reference(landing: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    warehouse = tmp_path_factory.mktemp("whole")
    for day in landing_dates(LocalStorage(landing)):
        night(landing, warehouse, day, 1)
    return content(warehouse)


@pytest.mark.parametrize("shards", [2, 4])
def test_shards_store_what_one_process_stores(landing: Path, reference: dict[str, Any], shards: int,
                                              tmp_path: Path) -> None:
    for day in landing_dates(LocalStorage(landing)):
        night(landing, tmp_path, day, shards)
    found = content(tmp_path)
    same(found, reference)
    reused = json.loads((tmp_path / run_key(date(2026, 3, 7))).read_text())
    assert reused["quarantined_by_reason"].get("conflicting_duplicate") == 1 and reused["shards"] == shards
    split = [p.name for p in (tmp_path / "events").glob("*/*.parquet")]
    assert split and all("-shard-" in name for name in split)  # every file is one shard's


def test_nights_out_of_order_in_shards_converge(landing: Path, reference: dict[str, Any], tmp_path: Path) -> None:
    for day in reversed(landing_dates(LocalStorage(landing))):
        night(landing, tmp_path, day, 2)
    found = content(tmp_path)
    assert found["events"].keys() == reference["events"].keys()
    for day, frame in reference["events"].items():
        assert found["events"][day].equals(frame), day
    for day, frame in reference["daily"].items():
        assert found["daily"][day].equals(frame), day


def test_a_missing_shard_stops_the_finish_and_its_re_run_converges(landing: Path, reference: dict[str, Any],
                                                                   tmp_path: Path) -> None:
    days = landing_dates(LocalStorage(landing))
    for day in days[:-1]:
        night(landing, tmp_path, day, 2)
    land, wh = LocalStorage(landing), LocalStorage(tmp_path)
    run_etl(land, wh, days[-1], shard=Shard(0, 2))  # shard 1 was killed before it finished
    with pytest.raises(EtlError, match=r"shard 1/2 .* has not finished.*--shard 1/2"):
        finish_night(land, wh, days[-1], 2)
    run_etl(land, wh, days[-1], shard=Shard(1, 2))
    run_etl(land, wh, days[-1], shard=Shard(1, 2))  # twice: a retry of a task that had finished
    finish_night(land, wh, days[-1], 2)
    same(content(tmp_path), reference)


@pytest.mark.parametrize(("before", "after"), [(1, 4), (4, 1), (2, 4)])
def test_a_night_run_again_in_another_number_of_shards_leaves_no_file_of_the_other(
        landing: Path, reference: dict[str, Any], tmp_path: Path, before: int, after: int) -> None:
    days = landing_dates(LocalStorage(landing))
    for day in days:
        night(landing, tmp_path, day, before)
    for day in days:
        night(landing, tmp_path, day, after)
    same(content(tmp_path), reference)
    names = {p.name for folder in ("events", "daily") for p in (tmp_path / folder).glob("*/*.parquet")}
    names |= {p.name for p in (tmp_path / "ids").glob("*.parquet")}
    assert all(("-shard-" in n) == (after > 1) for n in names)
    assert all(f"-of-{after}." in n for n in names if "-shard-" in n)


def test_pages_are_byte_identical_whatever_the_shards(landing: Path, tmp_path: Path) -> None:
    pages = {}
    for shards in (1, 2):
        warehouse, out = tmp_path / f"wh{shards}", tmp_path / f"out{shards}"
        for day in landing_dates(LocalStorage(landing)):
            night(landing, warehouse, day, shards)
        render(RenderJob(str(warehouse), str(out), tuple(range(1, 8)), date(2026, 3, 6), None, WINDOW_NAMES, ()))
        pages[shards] = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*")
                         if p.is_file() and "_rendered" not in p.parts}
    assert len(pages[1]) > 7 * 7 and pages[1] == pages[2]


def test_a_shard_is_k_of_n() -> None:
    assert Shard.parse("1/4") == Shard(1, 4) and Shard(1, 4).suffix == "-shard-1-of-4" and Shard().suffix == ""
    for wrong in ("4/4", "1", "a/b", "-1/2", "0/0"):
        with pytest.raises(WarehouseError, match="K/N"):
            Shard.parse(wrong)


def test_the_etl_command_runs_shards_and_finishes_the_nights(landing: Path, reference: dict[str, Any],
                                                             tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             caplog: pytest.LogCaptureFixture) -> None:
    from etl.cli import EXIT_FAILED, EXIT_USAGE, main

    etl = ["etl", "--landing", str(landing), "--warehouse", str(tmp_path), "--all"]
    assert main([*etl, "--shard", "1/2"]) == 0
    assert main([*etl, "--finish", "2"]) == EXIT_FAILED  # shard 0 has not run
    assert "shard 0/2 of ingest_date=2026-03-01 has not finished" in caplog.text
    assert main([*etl, "--shard", "0/2"]) == 0
    capsys.readouterr()
    assert main([*etl, "--finish", "2"]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [s["shards"] for s in printed] == [2] * len(landing_dates(LocalStorage(landing)))
    same(content(tmp_path), reference)
    for wrong, says in ((["--shard", "2/2"], "K/N"), (["--finish", "1"], "nothing to finish")):
        with pytest.raises(SystemExit) as refused:
            main([*etl, *wrong])
        assert refused.value.code == EXIT_USAGE
        assert says in capsys.readouterr().err
