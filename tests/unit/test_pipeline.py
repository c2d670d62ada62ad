"""The ETL of arrival days on real folders: quarantine, de-duplication, late events, idempotency."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import shutil
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from etl import ingest, pipeline
from etl.cli import main
from etl.contract import CONTENT_COLUMNS, QUARANTINE_SCHEMA
from etl.errors import EtlError
from etl.ingest import Batch, arrival_keys, landing_dates
from etl.pipeline import night_duplicates, night_summary, plan_night, run_etl
from etl.storage import LocalStorage, read_parquet
from etl.transform import storage_permutation
from etl.warehouse import day_files, quarantine_key, read_daily
from etl.workspaces import Workspaces, WorkspacesError
from tests.conftest import examples
from tests.helpers import event, write_landing
from tests.naive import naive_counts, naive_events

MADRID = [(1, "Madrid", "Europe/Madrid")]


def etl(landing: Path, warehouse: Path, *days: str) -> list[dict[str, Any]]:
    return [run_etl(LocalStorage(landing), LocalStorage(warehouse), date.fromisoformat(d)) for d in days]


def warehouse_state(warehouse: Path) -> dict[str, str]:
    """Every data file's digest and the nights digest (run summaries hold timings: compared separately)."""
    return {p.relative_to(warehouse).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted([*warehouse.rglob("*.parquet"), *warehouse.glob("_runs/nights.json")])}


def stored(warehouse: Path, day: str) -> pl.DataFrame:
    """Every stored event of one local day (its files of every arrival day), by workspace, time and id."""
    files = day_files(LocalStorage(warehouse), "events", date.fromisoformat(day))
    assert files, f"no events stored for {day}"
    frames = [read_parquet(LocalStorage(warehouse), key) for _, key in sorted(files.items())]
    return pl.concat(frames, how="vertical").sort("workspace_id", "occurred_at", "event_id")


def test_summary_counts_add_up_and_name_each_reason(tmp_path: Path) -> None:
    landing = write_landing(tmp_path / "landing", MADRID, {"2026-03-10/09": [
        event("a", "2026-03-10T08:00:00Z"),
        event("a", "2026-03-10T08:00:00Z"),  # redelivered within the day
        event("b", "2026-03-10T08:30:00Z", workspace_id=9),
        "{not json",
        "",
        event("c", "2026-03-10T09:00:00Z", event_type="contact.connected", source="broadcast"),
    ]})
    [summary] = etl(landing, tmp_path / "wh", "2026-03-10")
    assert summary["last_event_at"] == "2026-03-10T09:00:00Z"  # the freshness the pages show
    assert summary["run_id"] == "2026-03-10#" + summary["input_sha256"][:12]  # names the input it read
    assert json.loads((tmp_path / "wh/_runs/ingest_date=2026-03-10.json").read_bytes()) == summary
    assert summary["lines_read"] == 5
    assert summary["blank_lines"] == 1
    assert summary["events_valid"] == 2
    assert summary["duplicates_dropped"] == 1
    assert summary["quarantined_by_reason"] == {"invalid_json": 1, "unknown_workspace": 1}
    assert summary["lines_read"] == summary["events_valid"] + summary["events_quarantined"] + summary[
        "duplicates_dropped"]
    quarantine = read_parquet(LocalStorage(tmp_path / "wh"), quarantine_key(date(2026, 3, 10)))
    assert quarantine.select("line_no", "reason").rows() == [(3, "unknown_workspace"), (4, "invalid_json")]
    assert quarantine["raw"][1] == "{not json"
    stored_summary = json.loads((tmp_path / "wh/_runs/ingest_date=2026-03-10.json").read_text())
    assert stored_summary["events_valid"] == 2


def test_redelivery_in_a_later_partition_is_counted_once(tmp_path: Path) -> None:
    e = event("a", "2026-03-10T08:00:00Z")
    landing = write_landing(tmp_path / "landing", MADRID, {"2026-03-10/09": [e], "2026-03-12/01": [e]})
    first, second = etl(landing, tmp_path / "wh", "2026-03-10", "2026-03-12")
    assert (first["events_valid"], second["events_valid"], second["duplicates_dropped"]) == (1, 0, 1)
    assert stored(tmp_path / "wh", "2026-03-10")["arrival_key"].to_list() == [
        "ingest_date=2026-03-10/hour=09/part-0000.ndjson:000000001"]


def test_reused_event_id_with_other_content_is_quarantined_as_a_conflict(tmp_path: Path) -> None:
    landing = write_landing(tmp_path / "landing", MADRID, {
        "2026-03-10/09": [event("a", "2026-03-10T08:00:00Z", contact_name="Ana")],
        "2026-03-11/09": [event("a", "2026-03-10T08:00:00Z", contact_name="Someone else")],
    })
    _, second = etl(landing, tmp_path / "wh", "2026-03-10", "2026-03-11")
    assert second["quarantined_by_reason"] == {"conflicting_duplicate": 1}
    assert stored(tmp_path / "wh", "2026-03-10")["contact_name"].to_list() == ["Ana"]


def test_a_conflict_names_its_file_and_line_whatever_the_file_is_called(tmp_path: Path) -> None:
    """The quarantine row of a conflicting copy points at it, in a file whose name holds a colon too."""
    landing = write_landing(tmp_path / "landing", MADRID, {
        "2026-03-10/09": [event("a", "2026-03-10T08:00:00Z", contact_name="Ana")],
        "2026-03-10/10/batch:2.ndjson": [event("b", "2026-03-10T09:00:00Z"),
                                         event("a", "2026-03-10T08:00:00Z", contact_name="Someone else")],
    })
    [summary] = etl(landing, tmp_path / "wh", "2026-03-10")
    quarantine = read_parquet(LocalStorage(tmp_path / "wh"), quarantine_key(date(2026, 3, 10)))
    assert quarantine.select("file", "line_no", "reason", "event_id").rows() == [
        ("ingest_date=2026-03-10/hour=10/batch:2.ndjson", 2, "conflicting_duplicate", "a")]
    assert summary["landing_partitions"] == ["events/ingest_date=2026-03-10/hour=09",
                                             "events/ingest_date=2026-03-10/hour=10"]


def test_late_event_updates_its_own_past_day(tmp_path: Path) -> None:
    landing = write_landing(tmp_path / "landing", MADRID, {
        "2026-03-10/09": [event("a", "2026-03-10T08:00:00Z")],
        "2026-03-13/09": [event("late", "2026-03-10T09:00:00Z"), event("b", "2026-03-13T08:00:00Z")],
    })
    etl(landing, tmp_path / "wh", "2026-03-10")
    [summary] = etl(landing, tmp_path / "wh", "2026-03-13")
    assert summary["late_events"] == 1
    assert summary["days_touched"] == ["2026-03-10", "2026-03-13"]
    wh = LocalStorage(tmp_path / "wh")
    daily = read_daily([read_parquet(wh, k) for k in day_files(wh, "daily", date(2026, 3, 10)).values()])
    assert daily["events"].sum() == 2


def test_rerunning_a_night_changes_nothing(tmp_path: Path, tiny_landing: Path) -> None:
    days = [d.isoformat() for d in landing_dates(LocalStorage(tiny_landing))]
    etl(tiny_landing, tmp_path / "wh", *days)
    before = warehouse_state(tmp_path / "wh")
    again = etl(tiny_landing, tmp_path / "wh", days[5], days[12], days[-1])
    assert warehouse_state(tmp_path / "wh") == before
    assert all(s["duplicates_dropped"] == 0 for s in again if s["ingest_date"] != "2026-03-09")


def test_days_out_of_order_give_the_same_warehouse(tmp_path: Path, tiny_landing: Path) -> None:
    days = [d.isoformat() for d in landing_dates(LocalStorage(tiny_landing))]
    etl(tiny_landing, tmp_path / "in_order", *days)
    etl(tiny_landing, tmp_path / "reversed", *reversed(days))
    assert warehouse_state(tmp_path / "reversed") == warehouse_state(tmp_path / "in_order")


def test_workspace_without_events_is_still_in_the_dimension(tmp_path: Path) -> None:
    landing = write_landing(tmp_path / "landing", [*MADRID, (2, "Quiet", "Asia/Kathmandu")],
                            {"2026-03-10/09": [event("a", "2026-03-10T08:00:00Z")]})
    etl(landing, tmp_path / "wh", "2026-03-10")
    dimension = read_parquet(LocalStorage(tmp_path / "wh"), "workspaces.parquet")
    assert dimension["workspace_id"].to_list() == [1, 2]


def test_unknown_time_zone_isolates_that_workspace(tmp_path: Path) -> None:
    landing = write_landing(tmp_path / "landing", [*MADRID, (2, "Broken", "Mars/Olympus_Mons")], {
        "2026-03-10/09": [event("a", "2026-03-10T08:00:00Z"), event("b", "2026-03-10T08:00:00Z", workspace_id=2)]})
    [summary] = etl(landing, tmp_path / "wh", "2026-03-10")
    assert summary["workspaces_misconfigured"] == {"2": "unknown_timezone:Mars/Olympus_Mons"}
    assert summary["quarantined_by_reason"] == {"workspace_misconfigured": 1}
    assert summary["events_valid"] == 1


def test_missing_partition_fails_loudly_instead_of_reporting_zero(tmp_path: Path) -> None:
    landing = write_landing(tmp_path / "landing", MADRID, {"2026-03-10/09": [event("a", "2026-03-10T08:00:00Z")]})
    where = f"{LocalStorage(landing).uri}/events/ingest_date=2026-03-11/"
    with pytest.raises(EtlError, match=rf"^no landing files for ingest_date=2026-03-11 under {re.escape(where)}: the "
                                       "feed has not delivered this night .*Refusing to report zero"):
        etl(landing, tmp_path / "wh", "2026-03-11")
    assert not (tmp_path / "wh" / "_runs").exists()
    (landing / "events/ingest_date=2026-03-11").mkdir()
    (landing / "events/ingest_date=2026-03-11/notes.txt").write_text("not an events file")
    with pytest.raises(EtlError, match=re.escape(f"{where} (skipped, not in the layout: ['events/ingest_date="
                                                 "2026-03-11/notes.txt']): the feed")):
        etl(landing, tmp_path / "wh", "2026-03-11")


def test_missing_workspaces_file_fails_with_what_to_do(tmp_path: Path) -> None:
    landing = write_landing(tmp_path / "landing", MADRID, {"2026-03-10/09": [event("a", "2026-03-10T08:00:00Z")]})
    (landing / "workspaces.json").unlink()
    with pytest.raises(EtlError, match=r"workspaces\.json is missing"):
        etl(landing, tmp_path / "wh", "2026-03-10")


def test_lines_are_counted_across_decoding_groups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A large night is decoded a group of files at a time: every group's lines and blank lines add up."""
    landing = write_landing(tmp_path / "landing", MADRID, {
        f"2026-03-10/{hour:02d}": [event(f"e{hour}", f"2026-03-10T{hour:02d}:00:00Z"), "", "{broken"]
        for hour in (8, 9, 10)})
    monkeypatch.setattr(ingest, "DECODE_BYTES", 1)  # each file a group of its own
    [summary] = etl(landing, tmp_path / "wh", "2026-03-10")
    assert (summary["lines_read"], summary["blank_lines"], summary["events_valid"]) == (6, 3, 3)
    assert summary["quarantined_by_reason"] == {"invalid_json": 3}


def test_a_workspaces_file_that_is_a_folder_says_what_it_must_be(tmp_path: Path) -> None:
    landing = write_landing(tmp_path / "landing", MADRID, {"2026-03-10/09": [event("a", "2026-03-10T08:00:00Z")]})
    (landing / "workspaces.json").unlink()
    (landing / "workspaces.json").mkdir()
    with pytest.raises(WorkspacesError, match=r"workspaces\.json cannot be read \(.+\); it must be a JSON file"):
        etl(landing, tmp_path / "wh", "2026-03-10")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_night_shows_its_progress_on_a_terminal_and_nothing_elsewhere(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """People at a terminal see what a long night is doing (files read, days written); CI, Airflow logs and
    NO_PROGRESS do not (a progress bar there is noise, redrawn lines as garbage), nor does library code that the
    command line did not start."""
    landing = write_landing(tmp_path / "landing", MADRID, {"2026-03-10/09": [event("a", "2026-03-10T08:00:00Z")],
                                                           "2026-03-10/10": [event("b", "2026-03-09T20:00:00Z")]})
    for name in ("CI", "AIRFLOW_CTX_DAG_ID", "NO_PROGRESS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("etl.progress._wanted", False)  # restored after the test: main() turns it on
    warehouse = tmp_path / "wh"

    def night_at_a_terminal() -> list[str]:
        monkeypatch.setattr("sys.stderr", terminal := Terminal())
        assert main(["etl", "--landing", str(landing), "--warehouse", str(warehouse),
                     "--ingest-date", "2026-03-10"]) == 0
        return terminal.getvalue().replace("\r", "\n").splitlines()

    lines = night_at_a_terminal()
    assert any(re.match(r"reading +\[#{30}\] 2/2 files ", line) for line in lines), lines
    assert any(re.match(r"writing +\[#{30}\] 2/2 days ", line) for line in lines), lines
    (landing / "events/ingest_date=2026-03-10/hour=10").rename(tmp_path / "withdrawn")
    lines = night_at_a_terminal()  # a re-run: one day written, one day it no longer delivers to
    assert any(re.match(r"writing +\[#{30}\] 2/2 days ", line) for line in lines), lines
    for name in ("CI", "AIRFLOW_CTX_DAG_ID", "NO_PROGRESS"):
        monkeypatch.setenv(name, "1")
        assert not any("[#" in line for line in night_at_a_terminal()), name
        monkeypatch.delenv(name)
    monkeypatch.setattr("etl.progress._wanted", False)
    monkeypatch.setattr("sys.stderr", library := Terminal())
    etl(landing, warehouse, "2026-03-10")  # run_etl called by other code (a DAG task, a test)
    assert "[#" not in library.getvalue()


def test_gzip_files_are_read_and_a_truncated_one_keeps_its_readable_lines(tmp_path: Path) -> None:
    landing = write_landing(tmp_path / "landing", MADRID, {})
    folder = landing / "events/ingest_date=2026-03-10/hour=09"
    folder.mkdir(parents=True)
    def lines(prefix: str) -> bytes:
        return "".join(json.dumps(event(f"{prefix}{i}", "2026-03-10T08:00:00Z", contact_id=i + 1)) + "\n"
                       for i in range(400)).encode()

    (folder / "good.ndjson.gz").write_bytes(gzip.compress(lines("good")[:20_000]) + gzip.compress(
        lines("good")[20_000:]))  # two gzip members
    damaged = gzip.compress(lines("damaged"))
    (folder / "damaged.ndjson.gz").write_bytes(damaged[: len(damaged) // 2])
    [summary] = etl(landing, tmp_path / "wh", "2026-03-10")
    assert summary["files_damaged"] == {"events/ingest_date=2026-03-10/hour=09/damaged.ndjson.gz": "truncated_gzip"}
    assert 400 < summary["events_valid"] < 800
    assert summary["lines_read"] == summary["events_valid"] + summary["events_quarantined"]
    quarantine = read_parquet(LocalStorage(tmp_path / "wh"), quarantine_key(date(2026, 3, 10)))
    assert "truncated_gzip" in quarantine["reason"].to_list()


ZONES = ["America/New_York", "Pacific/Kiritimati", "Pacific/Pago_Pago", "Asia/Kolkata", "Pacific/Chatham"]
EVENT_TYPES = ["contact.added", "contact.connected", "contact.deleted", "contact.merged"]


@st.composite
def landing_zones(draw: st.DrawFn) -> list[tuple[str, dict[str, Any]]]:
    """Events around DST changes and local midnights, with redeliveries and late arrivals."""
    events = []
    for i in range(draw(st.integers(1, 40))):
        minutes = draw(st.integers(0, 4 * 24 * 60))  # 2026-03-07 .. 2026-03-10, NY springs forward on the 8th
        seconds = draw(st.sampled_from([0, 59]))
        moment = datetime(2026, 3, 7, tzinfo=UTC) + timedelta(minutes=minutes, seconds=seconds)
        delay_days = draw(st.sampled_from([0, 0, 0, 1, 3]))
        arrival = (moment + timedelta(days=delay_days, minutes=1)).date()
        body = event(f"e{i}", moment.isoformat().replace("+00:00", "Z"), workspace_id=draw(st.integers(1, 5)),
                     event_type=draw(st.sampled_from(EVENT_TYPES)), source="user", contact_id=i + 1)
        events.append((arrival.isoformat(), body))
        if draw(st.booleans()) and draw(st.booleans()):
            events.append(((moment + timedelta(days=draw(st.integers(0, 2)), minutes=2)).date().isoformat(), body))
        if draw(st.integers(0, 5)) == 0:  # the id reused with another time, often on another local day
            shift = timedelta(hours=draw(st.sampled_from([-30, -5, 5, 30])))
            other = {**body, "occurred_at": (moment + shift).isoformat().replace("+00:00", "Z")}
            events.append(((max(moment, moment + shift) + timedelta(days=draw(st.integers(0, 2)), minutes=3))
                           .date().isoformat(), other))
    return events


@settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(zone=landing_zones(), order_seed=st.randoms())
def test_daily_aggregates_equal_a_naive_count_in_any_order(tmp_path: Path, zone: list[tuple[str, dict[str, Any]]],
                                                           order_seed: Any) -> None:
    root = Path(tempfile.mkdtemp(dir=tmp_path))  # one folder per example: hypothesis repeats random values
    files: dict[str, list[dict[str, Any]]] = {}
    for arrival, body in zone:
        files.setdefault(f"{arrival}/12", []).append(body)
    landing = write_landing(root / "landing", [(i + 1, f"W{i}", tz) for i, tz in enumerate(ZONES)], files)
    days = sorted({a for a, _ in zone})
    order_seed.shuffle(days)
    etl(landing, root / "wh", *days)
    order_seed.shuffle(days)
    etl(landing, root / "wh", *days[: len(days) // 2 + 1])  # re-runs, in another order, must not change a thing
    files = sorted((root / "wh").glob("daily/*/*.parquet"))
    daily = pl.concat([pl.read_parquet(p) for p in files]) if files else pl.DataFrame()
    got = Counter() if daily.is_empty() else Counter({
        (w, d, t.removeprefix("contact.")): n
        for w, d, t, n in daily.group_by("workspace_id", "local_date", "event_type").agg(pl.col("events").sum()).rows()
    })
    reference = naive_events(landing)
    expected: Counter[tuple[int, date, str]] = Counter()
    for workspace, day in {(e["workspace_id"], e["local_date"]) for e in reference}:
        for kind, n in naive_counts(reference, workspace, day, day).items():
            expected[(workspace, day, kind)] = n
    assert got == expected
    assert sum(got.values()) == len(reference)
    shutil.rmtree(root)


JUNK = st.one_of(
    st.binary(max_size=120).filter(lambda b: b"\n" not in b and b"\r" not in b),
    st.text(max_size=80).filter(lambda t: "\n" not in t and "\r" not in t and "\x85" not in t).map(str.encode),
    st.builds(lambda i, ts, ws: json.dumps(event(f"j{i}", ts, workspace_id=ws)).encode(),
              st.integers(0, 5), st.sampled_from(["2026-03-10T10:00:00Z", "2026-03-10T10:00:00", "yesterday"]),
              st.sampled_from([1, 2, -1])),
)


@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(JUNK, min_size=1, max_size=30))
def test_every_junk_line_is_stored_dropped_as_a_duplicate_or_quarantined(tmp_path: Path, lines: list[bytes]) -> None:
    root = Path(tempfile.mkdtemp(dir=tmp_path))  # one folder per example, even when examples repeat
    folder = root / "landing/events/ingest_date=2026-03-10/hour=12"
    folder.mkdir(parents=True)
    (root / "landing/workspaces.json").write_text(json.dumps([{"workspace_id": 1, "name": "W", "timezone": "UTC"}]))
    (folder / "part-0000.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    [summary] = etl(root / "landing", root / "wh", "2026-03-10")
    non_blank = sum(1 for line in lines if line.strip())
    assert summary["lines_read"] == non_blank
    assert summary["lines_read"] == summary["events_valid"] + summary["events_quarantined"] + summary[
        "duplicates_dropped"]
    quarantine = read_parquet(LocalStorage(root / "wh"), quarantine_key(date(2026, 3, 10)))
    assert quarantine.height == summary["events_quarantined"]
    shutil.rmtree(root)


def test_the_night_keeps_the_earliest_copy_whatever_the_row_order() -> None:
    """Within one night, the first arrival (smallest arrival_rank: file, then line) of each event_id is kept;
    a later copy that says something else is a conflict, not a redelivery."""
    night = pl.DataFrame({
        "event_id": ["a", "b", "a", "a"],
        "arrival_rank": [(2 << 32) + 1, (0 << 32) + 2, (1 << 32) + 1, (0 << 32) + 9],
        "contact_name": ["Ana", "Bo", "Ana", "Ana B."],
    }).with_columns(pl.lit(None).alias(c) for c in CONTENT_COLUMNS if c not in ("event_id", "contact_name"))
    for order in ([0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]):
        shuffled = night[order]
        lost = night_duplicates(shuffled)
        kept = shuffled.with_row_index("row").join(lost.select("row"), on="row", how="anti").sort("event_id")
        assert kept["arrival_rank"].to_list() == [(0 << 32) + 9, (0 << 32) + 2]
        # both later copies say "Ana"; the first said "Ana B."
        assert sorted(zip(shuffled[lost["row"]]["contact_name"], lost["conflict"], strict=True)) == [
            ("Ana", True), ("Ana", True)]


@settings(max_examples=examples(60), deadline=None)
@given(st.lists(st.tuples(st.sampled_from([1, 2, 7, 2**21, 2**40]),
                          st.sampled_from([0, 1, 999_999, 3_600 * 10**6, 2**41]),
                          st.integers(0, 2**40)), max_size=200, unique_by=lambda row: row[2]))
@example([(2, 1, 0), (2, 0, 1), (1, 0, 2)])  # workspace, then time, to the microsecond
@example([(1, 20 * 86_400_000_000, 0), (2, 0, 1)])  # 20 days apart: too far for the packed key
@example([(1, 2**40, 1), (2, 0, 0)])  # exactly the packed key's time span
@example([(1, 2**40 - 1, 1), (2, 0, 0)])  # just inside it
@example([(2**22 + 1, 0, 0), (1, 5, 1)])  # workspaces too far apart for the packed key
@example([(2**23 + 1, 0, 0), (1, 5, 1)])  # so far apart that packing would overflow 64 bits
@example([(2**22 + 1, 0, 0), (2**22 - 1, 5, 1)])  # packed from the smallest workspace, not from 0
@example([(1, 5, 2), (1, 5, 0), (1, 5, 1)])  # one instant: by arrival
def test_storage_permutation_is_workspace_time_arrival_order(rows: list[tuple[int, int, int]]) -> None:
    """The packed two-key sort (rows of one day) and the three-key fallback (spans too wide to pack) both give
    exactly the storage order, ties on workspace and instant broken by arrival (unique, as in a night)."""
    frame = pl.DataFrame(rows, schema={"workspace_id": pl.Int64, "micros": pl.Int64, "arrival_rank": pl.Int64},
                         orient="row").with_row_index("row")
    frame = frame.with_columns(occurred_at=pl.col("micros").cast(pl.Datetime("us", "UTC")))
    expected = frame.sort("workspace_id", "occurred_at", "arrival_rank")["row"]
    assert storage_permutation(frame.select("workspace_id", "occurred_at", "arrival_rank", "row")).equals(expected)


@settings(max_examples=examples(60), deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.sampled_from([0, 1, 9, 42, 70_000, 999_999_999, 2**32 - 1])),
                max_size=50))
def test_arrival_keys_name_the_file_and_the_zero_padded_line(rows: list[tuple[int, int]]) -> None:
    """Both ways of spelling line numbers (a looked-up table of labels, and formatting each row when a line
    number is too large for a table) give `file:line` with the line padded to nine digits."""
    files = ["events/ingest_date=2026-03-10/hour=00/a.ndjson", "events/ingest_date=2026-03-10/hour=07/b.ndjson.gz",
             "events/ingest_date=2026-03-10/hour=23/c.ndjson"]
    ranks = pl.Series([(file << 32) + line for file, line in rows], dtype=pl.Int64)
    expected = [f"{files[file].removeprefix('events/')}:{line:09d}" for file, line in rows]
    assert arrival_keys(ranks, files).to_list() == expected


@pytest.mark.parametrize(("most_files", "most_bytes", "sizes"), [
    (2, 10**9, [2, 2, 2, 1]),  # at most two files ...
    (10**9, 20, [2, 2, 2, 1]),  # ... or 20 bytes: the batch that reaches the bound is handed out
    (10**9, 21, [3, 3, 1]),
])
def test_history_is_read_in_bounded_batches_each_file_once_in_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, most_files: int, most_bytes: int, sizes: list[int]) -> None:
    warehouse = LocalStorage(tmp_path)
    stored = [(date(2026, 3, 10 + n), "", f"ids/{n}.parquet") for n in range(7)]
    for n, (*_, key) in enumerate(stored):
        warehouse.write_bytes(key, bytes([n]) * 10)
    monkeypatch.setattr(pipeline, "HISTORY_READERS", 2)
    monkeypatch.setattr(pipeline, "HISTORY_BATCH_FILES", most_files)
    monkeypatch.setattr(pipeline, "HISTORY_BATCH_BYTES", most_bytes)
    with ThreadPoolExecutor(2) as pool:
        batches = list(pipeline._batches(warehouse, stored, pool))
    assert [len(b) for b in batches] == sizes
    assert [(day, data) for b in batches for day, _, data in b] == [
        (day, bytes([n]) * 10) for n, (day, *_) in enumerate(stored)]


def test_stored_events_carry_their_workspace_zone_and_wall_clock(tmp_path: Path) -> None:
    landing = write_landing(tmp_path / "landing", [*MADRID, (2, "Kolkata", "Asia/Kolkata")], {"2026-03-10/09": [
        event("m", "2026-03-10T08:00:00Z"), event("k", "2026-03-10T08:00:00Z", workspace_id=2)]})
    etl(landing, tmp_path / "wh", "2026-03-10")
    rows = stored(tmp_path / "wh", "2026-03-10").select("event_id", "timezone", "local_ts").rows()
    assert rows == [("m", "Europe/Madrid", datetime(2026, 3, 10, 9, 0)),
                    ("k", "Asia/Kolkata", datetime(2026, 3, 10, 13, 30))]


def test_stored_files_read_one_at_a_time_give_the_same_night(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The history check reads the id indexes in batches; where a batch ends must not matter, for the copies an
    earlier arrival day holds (dropped, or quarantined as conflicts) and for those a later one holds (that night
    is processed again)."""
    deliveries: dict[str, list[dict[str, Any]]] = {}
    for n in range(4):  # events of four local days, each delivered again (once with other content) later on
        first = event(f"e{n}", f"2026-03-1{n}T08:00:00Z", contact_name="Ana")
        deliveries[f"2026-03-1{n}/09"] = [first, event(f"r{n}", f"2026-03-1{n}T09:00:00Z")]
        deliveries[f"2026-03-1{n + 1}/10"] = [first, event(f"r{n}", f"2026-03-1{n}T09:00:00Z", contact_name="Bo")]
    landing = write_landing(tmp_path / "landing", MADRID, deliveries)
    days = [d.isoformat() for d in landing_dates(LocalStorage(landing))]
    nights = [*reversed(days), *days]  # later arrivals stored first, then every night again in order

    batched = etl(landing, tmp_path / "batched", *nights)
    monkeypatch.setattr(pipeline, "HISTORY_BATCH_FILES", 1)
    one_by_one = etl(landing, tmp_path / "one_by_one", *nights)
    in_order = etl(landing, tmp_path / "in_order", *days)
    assert warehouse_state(tmp_path / "one_by_one") == warehouse_state(tmp_path / "batched")
    assert warehouse_state(tmp_path / "batched") == warehouse_state(tmp_path / "in_order")
    assert without_timing(one_by_one) == without_timing(batched)
    assert without_timing(batched[len(days):]) == without_timing(in_order)
    assert [s["duplicates_dropped"] for s in in_order] == [0, 1, 1, 1, 1]
    assert [s["quarantined_by_reason"] for s in in_order] == [{}] + [{"conflicting_duplicate": 1}] * 4


def without_timing(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in s.items() if k != "seconds"} for s in summaries]


# ---------------------------------------------------------------- one event, one row, wherever its copies land

def test_a_redelivery_after_the_workspace_changed_time_zone_is_counted_once(tmp_path: Path) -> None:
    """23:30 UTC is 2026-03-10 in UTC but 2026-03-11 in Tokyo: the copy lands on another local day."""
    e = event("a", "2026-03-10T23:30:00Z")
    landing = write_landing(tmp_path / "landing", [(1, "W", "UTC")], {"2026-03-10/23": [e]})
    etl(landing, tmp_path / "wh", "2026-03-10")
    write_landing(landing, [(1, "W", "Asia/Tokyo")], {"2026-03-12/01": [e, event("b", "2026-03-11T23:30:00Z")]})
    [second] = etl(landing, tmp_path / "wh", "2026-03-12")
    assert (second["events_valid"], second["duplicates_dropped"]) == (1, 1)
    wh = LocalStorage(tmp_path / "wh")
    days = {d: sum(read_parquet(wh, k)["events"].sum() for k in day_files(wh, "daily", d).values())
            for d in (date(2026, 3, 10), date(2026, 3, 11), date(2026, 3, 12))}
    assert days == {date(2026, 3, 10): 1, date(2026, 3, 11): 0, date(2026, 3, 12): 1}


@pytest.mark.parametrize("later", ["2026-03-12T08:00:00Z", "2026-03-09T20:00:00Z", "2026-03-10T08:00:00.000001Z"])
def test_an_id_back_with_another_time_is_a_conflict_wherever_it_lands(tmp_path: Path, later: str) -> None:
    landing = write_landing(tmp_path / "landing", MADRID, {
        "2026-03-10/09": [event("a", "2026-03-10T08:00:00Z")],
        "2026-03-13/09": [event("a", later)],
    })
    _, second = etl(landing, tmp_path / "wh", "2026-03-10", "2026-03-13")
    assert second["quarantined_by_reason"] == {"conflicting_duplicate": 1}
    assert second["events_valid"] == 0
    assert stored(tmp_path / "wh", "2026-03-10")["occurred_at"].dt.to_string("%H:%M").to_list() == ["08:00"]


CROSSING = {  # copies and reuses of ids across local days and arrival days, the first arrival always on 03-10
    "2026-03-10/09": [event("a", "2026-03-10T08:00:00Z"), event("b", "2026-03-10T09:00:00Z"),
                      event("c", "2026-03-10T22:30:00Z")],
    "2026-03-11/09": [event("a", "2026-03-11T08:00:00Z"), event("b", "2026-03-10T09:00:00Z"),
                      event("d", "2026-03-11T07:00:00Z")],
    "2026-03-12/09": [event("c", "2026-03-10T22:30:00Z", contact_name="Changed"), event("d", "2026-03-11T07:00:00Z"),
                      event("a", "2026-03-10T08:00:00Z")],
    "2026-03-14/09": [event("b", "2026-03-13T09:00:00Z"), event("e", "2026-03-14T09:00:00Z")],
}


@pytest.mark.parametrize("order", [(3, 2, 1, 0), (1, 3, 0, 2), (2, 0, 3, 1), (0, 2, 1, 3, 0, 3)])
def test_any_order_of_nights_converges_quarantine_included(tmp_path: Path, order: tuple[int, ...]) -> None:
    landing = write_landing(tmp_path / "landing", MADRID, CROSSING)
    days = [d.isoformat() for d in landing_dates(LocalStorage(landing))]
    in_order = etl(landing, tmp_path / "in_order", *days)
    etl(landing, tmp_path / "shuffled", *(days[i] for i in order))
    assert warehouse_state(tmp_path / "shuffled") == warehouse_state(tmp_path / "in_order")
    runs = [json.loads((tmp_path / f"shuffled/_runs/ingest_date={d}.json").read_text()) for d in days]
    assert without_timing(runs) == without_timing(in_order)
    assert [s["quarantined_by_reason"] for s in in_order] == [{}] + [{"conflicting_duplicate": 1}] * 3
    assert [s["duplicates_dropped"] for s in in_order] == [0, 1, 2, 0]
    assert sum(s["events_valid"] for s in in_order) == 5  # a, b, c, d, e


def test_a_later_night_whose_landing_is_gone_still_loses_its_copies(tmp_path: Path) -> None:
    e, own = event("a", "2026-03-10T08:00:00Z"), event("b", "2026-03-10T09:00:00Z", contact_id=2)
    landing = write_landing(tmp_path / "landing", MADRID, {"2026-03-10/09": [e], "2026-03-11/09": [e, own]})
    etl(landing, tmp_path / "wh", "2026-03-11")
    shutil.rmtree(landing / "events/ingest_date=2026-03-11")
    etl(landing, tmp_path / "wh", "2026-03-10")
    kept = stored(tmp_path / "wh", "2026-03-10")
    assert kept.select("event_id", "ingest_date").rows() == [("a", date(2026, 3, 10)), ("b", date(2026, 3, 11))]
    later_ids = pl.read_parquet(tmp_path / "wh/ids/ingest_date=2026-03-11.parquet")["event_id"].to_list()
    assert later_ids == ["b"]  # the index of what the later night keeps, for the nights after it


def test_a_later_night_processed_again_keeps_the_options_it_ran_with(tmp_path: Path) -> None:
    e, long = event("a", "2026-03-10T08:00:00Z"), event("b", "2026-03-10T09:00:00Z", contact_name="x" * 400)
    landing = write_landing(tmp_path / "landing", MADRID, {"2026-03-10/09": [e], "2026-03-11/09": [e, long]})
    warehouse = LocalStorage(tmp_path / "wh")
    for night in ("2026-03-11", "2026-03-10"):  # the earlier night second: the later one runs again
        run_etl(LocalStorage(landing), warehouse, date.fromisoformat(night), max_line_bytes=400)
    assert stored(tmp_path / "wh", "2026-03-10")["event_id"].to_list() == ["a"]
    quarantined = read_parquet(warehouse, quarantine_key(date(2026, 3, 11)))
    assert quarantined["reason"].to_list() == ["line_too_long"]


def test_a_night_whose_run_record_names_no_days_runs_again(tmp_path: Path) -> None:
    """A run record without `days_touched` (as written before the field existed): a re-run trusts the files."""
    landing = write_landing(tmp_path / "landing", MADRID, {"2026-03-10/09": [event("a", "2026-03-10T08:00:00Z")]})
    etl(landing, tmp_path / "wh", "2026-03-10")
    record = tmp_path / "wh/_runs/ingest_date=2026-03-10.json"
    record.write_text(json.dumps({k: v for k, v in json.loads(record.read_text()).items() if k != "days_touched"}))
    [again] = etl(landing, tmp_path / "wh", "2026-03-10")
    assert again["days_touched"] == ["2026-03-10"]
    assert stored(tmp_path / "wh", "2026-03-10")["event_id"].to_list() == ["a"]


def test_an_arrival_partition_named_after_no_day_is_refused_with_what_to_do(tmp_path: Path) -> None:
    landing = write_landing(tmp_path / "landing", MADRID, {"2026-03-10/09": [event("a", "2026-03-10T08:00:00Z")]})
    (landing / "events/ingest_date=2026-03-10").rename(landing / "events/ingest_date=2026-02-30")
    with pytest.raises(EtlError, match=r"^landing partition events/ingest_date=2026-02-30 is not a calendar date: "
                                       r"rename or remove it, then re-run$"):
        landing_dates(LocalStorage(landing))


def test_aggregate_files_add_up_to_one_row_per_key_in_key_order_nulls_first() -> None:
    def daily(*rows: tuple[str, int | None, int | None, int]) -> pl.DataFrame:
        return pl.DataFrame([(1, date(2026, 3, 10), "contact.added", *row) for row in rows],
                            schema=["workspace_id", "local_date", "event_type", "source", "channel_id", "user_id",
                                    "events"], orient="row")

    summed = read_daily([daily(("user", None, 7, 2), ("api", 11, None, 1)), daily(("user", None, 7, 3))])
    assert summed.select("source", "channel_id", "user_id", "events").rows() == [
        ("api", 11, None, 1), ("user", None, 7, 5)]
    summed = read_daily([daily(("user", 12, 7, 1), ("user", None, 7, 1), ("user", 12, None, 4))])
    assert summed.select("channel_id", "user_id").rows() == [(None, 7), (12, None), (12, 7)]


def test_a_warehouse_without_the_id_index_gets_one_and_still_deduplicates(tmp_path: Path) -> None:
    e = event("a", "2026-03-10T23:30:00Z")
    landing = write_landing(tmp_path / "landing", [(1, "W", "UTC")], {"2026-03-10/23": [e]})
    etl(landing, tmp_path / "wh", "2026-03-10")
    shutil.rmtree(tmp_path / "wh/ids")  # as a warehouse written before the index existed
    write_landing(landing, [(1, "W", "Asia/Tokyo")], {"2026-03-12/01": [e]})
    [second] = etl(landing, tmp_path / "wh", "2026-03-12")
    assert second["duplicates_dropped"] == 1
    assert (tmp_path / "wh/ids/ingest_date=2026-03-10.parquet").exists()


def test_an_empty_night_without_the_id_index_gets_an_empty_one(tmp_path: Path) -> None:
    landing = write_landing(tmp_path / "landing", MADRID, {"2026-03-10/09": ["{not json"],
                                                           "2026-03-11/09": [event("a", "2026-03-11T08:00:00Z")]})
    etl(landing, tmp_path / "wh", "2026-03-10")
    shutil.rmtree(tmp_path / "wh/ids")  # as a warehouse written before the index existed
    [second] = etl(landing, tmp_path / "wh", "2026-03-11")
    assert second["events_valid"] == 1
    assert pl.read_parquet(tmp_path / "wh/ids/ingest_date=2026-03-10.parquet").height == 0


@pytest.mark.parametrize("change", [{"channel_id": 12}, {"channel_name": "WA 2"}, {"channel_type": "telegram"},
                                    {"user_id": 8}, {"user_name": "Ana"}, {"contact_id": 101},
                                    {"merged_contact_id": None}, {"workspace_id": 2}])
def test_a_reuse_that_differs_in_any_one_field_is_a_conflict(tmp_path: Path, change: dict[str, Any]) -> None:
    first = event("a", "2026-03-10T08:00:00Z", event_type="contact.connected", source="user")
    again = {**first, **change}
    if change == {"merged_contact_id": None}:  # a merge whose merged contact differs
        first = event("a", "2026-03-10T08:00:00Z", event_type="contact.merged")
        again = {**first, "merged_contact_id": first["merged_contact_id"] + 5}
    landing = write_landing(tmp_path / "landing", [*MADRID, (2, "Other", "Europe/Madrid")],
                            {"2026-03-10/09": [first], "2026-03-11/09": [again]})
    _, second = etl(landing, tmp_path / "wh", "2026-03-10", "2026-03-11")
    assert second["quarantined_by_reason"] == {"conflicting_duplicate": 1}
    assert second["duplicates_dropped"] == 0


def test_a_rerun_deletes_the_days_its_night_no_longer_delivers_to(tmp_path: Path) -> None:
    landing = write_landing(tmp_path / "landing", MADRID, {"2026-03-12/09": [
        event("late", "2026-03-10T08:00:00Z"), event("b", "2026-03-12T08:00:00Z")]})
    [first] = etl(landing, tmp_path / "wh", "2026-03-12")
    assert first["days_touched"] == ["2026-03-10", "2026-03-12"]
    shutil.rmtree(landing / "events/ingest_date=2026-03-12")  # the feed re-delivers the night without the late event
    write_landing(landing, MADRID, {"2026-03-12/09": [event("b", "2026-03-12T08:00:00Z")]})
    [again] = etl(landing, tmp_path / "wh", "2026-03-12")
    assert again["days_touched"] == ["2026-03-12"]
    wh = LocalStorage(tmp_path / "wh")
    assert day_files(wh, "events", date(2026, 3, 10)) == {} and day_files(wh, "daily", date(2026, 3, 10)) == {}
    assert list(day_files(wh, "events", date(2026, 3, 12))) == ["2026-03-12"]


# ---------------------------------------------------------------- the night's plan: small frames, no storage

FILES = ["events/ingest_date=2026-03-10/hour=09/a.ndjson", "events/ingest_date=2026-03-10/hour=10/b.ndjson"]


def small_night(rows: list[tuple[int, str, str, int, int]]) -> pl.DataFrame:
    """Night rows (workspace, occurred_at, local day, file index, line) as the plan reads them."""
    return pl.DataFrame(
        {"workspace_id": [r[0] for r in rows],
         "occurred_at": [datetime.fromisoformat(r[1]) for r in rows],
         "local_date": [date.fromisoformat(r[2]) for r in rows],
         "arrival_rank": [r[3] * 2**32 + r[4] for r in rows]},
        schema={"workspace_id": pl.Int64, "occurred_at": pl.Datetime("us", "UTC"), "local_date": pl.Date,
                "arrival_rank": pl.UInt64})


def lost_rows(*rows: tuple[int, str, bool]) -> pl.DataFrame:
    return pl.DataFrame([{"row": r, "event_id": e, "conflict": c} for r, e, c in rows],
                        schema={"row": pl.UInt32, "event_id": pl.String, "conflict": pl.Boolean})


def test_the_plan_keeps_the_first_copies_groups_them_by_day_and_quarantines_conflicts() -> None:
    night = small_night([(1, "2026-03-10T08:00:00+00:00", "2026-03-10", 0, 1),
                         (2, "2026-03-09T23:30:00+00:00", "2026-03-10", 0, 2),
                         (1, "2026-03-09T08:00:00+00:00", "2026-03-09", 1, 7),
                         (1, "2026-03-10T09:00:00+00:00", "2026-03-10", 1, 8),
                         (2, "2026-03-08T09:00:00+00:00", "2026-03-08", 1, 12)])
    rejected = [(date(2026, 3, 10), "ingest_date=2026-03-10/hour=10/b.ndjson", 3, "bad_json", None, "{"),
                (date(2026, 3, 10), "ingest_date=2026-03-10/hour=11/c.ndjson.gz", None, "truncated_gzip", None,
                 None)]
    opens = pl.DataFrame({"workspace_id": [1, 2], "first_open_day": [date(2026, 3, 10), date(2026, 3, 9)]})
    plan = plan_night(night, lost_rows((3, "dup", False), (4, "reused", True)), rejected, FILES,
                      {date(2026, 3, 7), date(2026, 3, 8)}, opens, date(2026, 3, 10))
    assert plan.kept["row"].to_list() == [0, 1, 2]  # rows 3 and 4 repeat earlier copies
    assert plan.days.rows() == [(date(2026, 3, 9), 1), (date(2026, 3, 10), 2)]
    assert plan.by_day.rows() == [(2, date(2026, 3, 9)), (0, date(2026, 3, 10)), (1, date(2026, 3, 10))]
    assert plan.touched == [date(2026, 3, 9), date(2026, 3, 10)]
    assert plan.stale == {date(2026, 3, 7), date(2026, 3, 8)}  # 03-08's only row was lost this time
    assert plan.duplicates == 1
    assert plan.late_events == 1  # workspace 1's 03-09 (reported); workspace 2's 03-10 row is not late
    assert plan.quarantine.select("file", "line_no", "reason", "event_id").rows() == [
        ("ingest_date=2026-03-10/hour=10/b.ndjson", 3, "bad_json", None),
        ("ingest_date=2026-03-10/hour=10/b.ndjson", 12, "conflicting_duplicate", "reused"),
        ("ingest_date=2026-03-10/hour=11/c.ndjson.gz", None, "truncated_gzip", None)]
    assert len(rejected) == 2  # the reader's list is not changed

    batch = Batch(lines_read=9, files=list(FILES), damaged_files={"hour=11/c.ndjson.gz": "truncated_gzip"})
    summary = night_summary(plan, batch, Workspaces(pl.DataFrame(), {3: "unknown time zone"}), date(2026, 3, 10),
                            1.23456)
    assert summary["workspaces_misconfigured"] == {"3": "unknown time zone"}
    assert summary["events_valid"] == 3 and summary["duplicates_dropped"] == 1 and summary["late_events"] == 1
    assert summary["events_quarantined"] == 2  # lines only: a damaged file is counted under files_damaged
    assert summary["quarantined_by_reason"] == {"bad_json": 1, "conflicting_duplicate": 1}
    assert summary["days_touched"] == ["2026-03-09", "2026-03-10"]
    assert summary["events_by_workspace"] == {"1": 2, "2": 1}
    assert summary["last_event_at"] == "2026-03-10T08:00:00Z" and summary["seconds"] == 1.235
    assert summary["landing_partitions"] == ["events/ingest_date=2026-03-10/hour=09",
                                             "events/ingest_date=2026-03-10/hour=10"]


def test_a_plan_with_nothing_kept_writes_no_day_and_deletes_what_an_earlier_run_wrote() -> None:
    night = small_night([(1, "2026-03-10T08:00:00+00:00", "2026-03-10", 0, 1)])
    opens = pl.DataFrame({"workspace_id": [1], "first_open_day": [date(2026, 3, 10)]})
    plan = plan_night(night, lost_rows((0, "a", False)), [], FILES, {date(2026, 3, 10)}, opens, date(2026, 3, 10))
    assert plan.kept.is_empty() and plan.days.is_empty() and plan.touched == []
    assert plan.stale == {date(2026, 3, 10)} and plan.duplicates == 1 and plan.late_events == 0
    assert plan.quarantine.is_empty() and plan.quarantine.schema == pl.Schema(QUARANTINE_SCHEMA)
