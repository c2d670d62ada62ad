"""The contract pinned by examples: the shared tiny landing zone, a generated one, and S3 storage."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from etl.generate import TIMEZONES, GenerateOptions, generate
from etl.ingest import landing_dates
from etl.pipeline import run_etl
from etl.storage import LocalStorage, open_storage
from etl.windows import window
from tests.naive import naive_counts, naive_events

CLI = [sys.executable, "-m", "etl.cli"]
KINDS = ("added", "deleted", "merged", "connected")


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, check=False)


def window_numbers(daily: pl.DataFrame, workspace: int, start: date, end: date) -> dict[str, Any]:
    rows = daily.filter((pl.col("workspace_id") == workspace) & pl.col("local_date").is_between(start, end))
    totals = {k: int(rows.filter(pl.col("event_type") == f"contact.{k}")["events"].sum()) for k in KINDS}
    by_source = rows.filter(pl.col("event_type") == "contact.added").group_by("source").agg(pl.col("events").sum())
    by_channel = rows.filter(pl.col("event_type") == "contact.connected").group_by("channel_id").agg(
        pl.col("events").sum())
    return {"totals": totals, "added_by_source": dict(by_source.rows()),
            "connected_by_channel": {str(c): n for c, n in by_channel.rows()}}


@pytest.mark.other_process  # the CLI in a subprocess: under mutation it runs unmutated code
def test_tiny_example_matches_the_independent_count(tmp_path: Path, tiny_landing: Path,
                                                    tiny_expected: dict[str, Any]) -> None:
    result = run_cli("etl", "--landing", str(tiny_landing), "--warehouse", str(tmp_path / "wh"), "--all")
    assert result.returncode == 0, result.stderr
    summaries = [json.loads(line) for line in result.stdout.splitlines()]
    totals = {k: sum(s[k] for s in summaries) for k in tiny_expected["etl_totals_over_all_arrival_days"]}
    assert totals == tiny_expected["etl_totals_over_all_arrival_days"]

    daily = pl.concat([pl.read_parquet(p) for p in sorted((tmp_path / "wh").glob("daily/*/*.parquet"))])
    report_day = date.fromisoformat(tiny_expected["report_day"])
    for page, expected in tiny_expected["pages"].items():
        workspace, _, name = page.removesuffix(".html").split("/")
        w = window(name, report_day)
        got = window_numbers(daily, int(workspace), w.start, w.end)
        assert (w.start.isoformat(), w.end.isoformat()) == (expected["start"], expected["end"]), page
        assert got["totals"] == expected["totals"], page
        assert got["added_by_source"] == expected["added_by_source"], page
        assert got["connected_by_channel"] == expected["connected_by_channel"], page
        previous = w.previous()
        assert window_numbers(daily, int(workspace), previous.start, previous.end)["totals"] == expected[
            "previous_period"], page
        for day in expected["daily"]:
            d = date.fromisoformat(day["date"])
            one = window_numbers(daily, int(workspace), d, d)["totals"]
            assert {k: one[k] for k in ("added", "deleted", "merged")} == {k: day[k] for k in
                                                                          ("added", "deleted", "merged")}


def test_generated_landing_matches_a_naive_count_in_every_time_zone(tmp_path: Path) -> None:
    landing = LocalStorage(tmp_path / "landing")
    options = GenerateOptions(start=date(2026, 10, 20), days=16, workspaces=len(TIMEZONES), events_per_day=600,
                              seed=11)
    generate(landing, options)
    warehouse = LocalStorage(tmp_path / "wh")
    summaries = [run_etl(landing, warehouse, d) for d in landing_dates(landing)]
    assert sum(s["duplicates_dropped"] for s in summaries) > 0
    assert sum(s["late_events"] for s in summaries) > 0
    assert sum(s["events_quarantined"] for s in summaries) == options.malformed_lines

    daily = pl.concat([pl.read_parquet(p) for p in sorted((tmp_path / "wh").glob("daily/*/*.parquet"))])
    reference = naive_events(tmp_path / "landing")
    assert int(daily["events"].sum()) == len(reference) == sum(s["events_valid"] for s in summaries)
    checked_zones = set()
    for workspace, tz in enumerate(TIMEZONES, start=1):
        for offset in range(-1, options.days + 1):
            day = options.start + timedelta(days=offset)
            expected = naive_counts(reference, workspace, day, day)
            got = window_numbers(daily, workspace, day, day)["totals"]
            assert {k: v for k, v in got.items() if v} == dict(expected), (tz, day)
        checked_zones.add(tz)
    assert len(checked_zones) == 20


def test_generator_is_deterministic_by_seed_and_hostile(tmp_path: Path) -> None:
    options = GenerateOptions(start=date(2026, 3, 1), days=3, workspaces=5, events_per_day=300, seed=3)
    generate(LocalStorage(tmp_path / "a"), options)
    generate(LocalStorage(tmp_path / "b"), options)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files_a == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files_a)
    text = "".join((tmp_path / "a" / f).read_text() for f in files_a if f.suffix == ".ndjson")
    for needle in ("<img src=x onerror=alert(1)>", "=HYPERLINK", "\u202e", "🦄", "+05:30", "-11:00",
                   "contact.merged", "contact.deleted", "broadcast", "zapier", '"contact_name":""'):
        assert needle in text, needle


@pytest.mark.other_process  # the CLI in a subprocess: under mutation it runs unmutated code
def test_every_command_has_help() -> None:
    for command in ([], ["generate"], ["etl"], ["render"], ["archive"], ["archive", "write"], ["archive", "verify"],
                    ["archive", "show"]):
        result = run_cli(*command, "--help")
        assert result.returncode == 0 and "usage: contacts-report" in result.stdout, command
        assert "exit codes:" in result.stdout, command


@pytest.mark.other_process  # the CLI in a subprocess: under mutation it runs unmutated code
def test_cli_errors_say_what_is_wrong(tmp_path: Path) -> None:
    (tmp_path / "landing").mkdir()
    (tmp_path / "landing/workspaces.json").write_text("[]")
    missing = run_cli("etl", "--landing", str(tmp_path / "landing"), "--warehouse", str(tmp_path / "wh"),
                      "--ingest-date", "2026-03-10")
    assert missing.returncode == 1 and "no landing files for ingest_date=2026-03-10" in missing.stderr
    bad_date = run_cli("etl", "--ingest-date", "2026-13-01")
    assert bad_date.returncode == 2 and "is not a date; use YYYY-MM-DD" in bad_date.stderr
    bad_uri = run_cli("etl", "--landing", "ftp://x", "--ingest-date", "2026-03-10")
    assert bad_uri.returncode == 2 and "unsupported storage URI" in bad_uri.stderr


@pytest.mark.usefixtures("moto_server")
def test_landing_and_warehouse_on_s3(tmp_path: Path, tiny_landing: Path, s3_bucket: str,
                                     tiny_expected: dict[str, Any]) -> None:
    landing, warehouse = open_storage(f"s3://{s3_bucket}/landing"), open_storage(f"s3://{s3_bucket}/wh")
    for path in sorted(tiny_landing.rglob("*")):
        if path.is_file():
            landing.write_bytes(path.relative_to(tiny_landing).as_posix(), path.read_bytes())
    summaries = [run_etl(landing, warehouse, d) for d in landing_dates(landing)]
    assert Counter({k: sum(s[k] for s in summaries) for k in ("lines_read", "events_valid")}) == Counter(
        {k: tiny_expected["etl_totals_over_all_arrival_days"][k] for k in ("lines_read", "events_valid")})
    keys = warehouse.list("events")
    assert keys and all(k.startswith("events/local_date=") for k in keys)
    local = LocalStorage(tmp_path / "wh")
    for d in landing_dates(LocalStorage(tiny_landing)):
        run_etl(LocalStorage(tiny_landing), local, d)
    assert {k: warehouse.read_bytes(k) for k in keys} == {k: local.read_bytes(k) for k in local.list("events")}
