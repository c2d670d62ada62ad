"""The auditors' archive: tamper detection, revisions for late events, idempotent re-runs, S3 create-only writes."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from etl.archive import ArchiveError, Lock, mirror, show, verify, write_archive
from etl.pipeline import run_etl
from etl.publish import content_type
from etl.render import RenderJob
from etl.render_jobs import render
from etl.storage import AlreadyExists, LocalStorage, S3Storage, s3_client
from etl.warehouse import WarehouseError, report_scope
from etl.windows import WINDOW_NAMES
from tests.helpers import event, write_landing

# Days that had ended in both zones when the last arrival day (2026-03-30) ended: only those are archived.
DAYS = [date(2026, 3, 26), date(2026, 3, 27), date(2026, 3, 28), date(2026, 3, 29)]


@pytest.fixture
def tiny_archive(tmp_path: Path, tiny_warehouse: Path) -> tuple[LocalStorage, LocalStorage]:
    warehouse, archive = LocalStorage(tiny_warehouse), LocalStorage(tmp_path / "archive")
    for day in DAYS:
        write_archive(warehouse, archive, report_scope(warehouse, None, day, None))
    return warehouse, archive


def problems_of(archive: LocalStorage) -> list[str]:
    return [f"{p.where}: {p.what}" for p in verify(archive)[0]]


def test_a_fresh_archive_verifies(tiny_archive: tuple[LocalStorage, LocalStorage]) -> None:
    _, archive = tiny_archive
    problems, counts = verify(archive)
    assert problems == []
    assert counts == {"workspaces": 2, "snapshots": 8, "files": 8 * 12}


def test_one_changed_byte_is_named(tiny_archive: tuple[LocalStorage, LocalStorage]) -> None:
    _, archive = tiny_archive
    path = archive.root / "1/2026-03-28/rev-1/contacts_added.csv"
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))
    assert problems_of(archive) == ["1/2026-03-28/rev-1/contacts_added.csv: content changed: SHA-256 differs "
                                    "from the manifest"]


def test_missing_and_extra_files_are_named(tiny_archive: tuple[LocalStorage, LocalStorage]) -> None:
    _, archive = tiny_archive
    (archive.root / "2/2026-03-29/rev-1/contacts_merged.parquet").unlink()
    (archive.root / "2/2026-03-29/rev-1/notes.txt").write_text("added later")
    assert sorted(problems_of(archive)) == [
        "2/2026-03-29/rev-1/contacts_merged.parquet: missing file named in the manifest",
        "2/2026-03-29/rev-1/notes.txt: extra file not named in the manifest",
    ]


def test_a_deleted_day_breaks_the_days_and_the_chain(tiny_archive: tuple[LocalStorage, LocalStorage]) -> None:
    _, archive = tiny_archive
    shutil.rmtree(archive.root / "1/2026-03-28")
    found = problems_of(archive)
    assert "1/2026-03-28: missing day: no snapshot between 2026-03-27 and 2026-03-29" in found
    assert any(p.startswith("1/2026-03-29/rev-1: chain") for p in found)


def test_an_edited_manifest_is_caught_even_with_its_hash_updated(tiny_archive: tuple[LocalStorage, LocalStorage]
                                                                 ) -> None:
    _, archive = tiny_archive
    folder = archive.root / "2/2026-03-28/rev-1"
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["contacts_added.csv"]["rows"] += 1
    (folder / "manifest.json").chmod(0o644)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    assert "2/2026-03-28/rev-1/manifest.json: manifest does not match manifest.sha256 (edited)" in problems_of(archive)
    import hashlib

    (folder / "manifest.sha256").chmod(0o644)
    (folder / "manifest.sha256").write_text(
        hashlib.sha256((folder / "manifest.json").read_bytes()).hexdigest() + "  manifest.json\n")
    found = problems_of(archive)
    assert any("2/2026-03-28/rev-1/contacts_added.csv" in p and "rows" in p for p in found)
    assert any(p.startswith("2/2026-03-29/rev-1: chain broken") for p in found)


def forge(folder: Path, manifest: Any) -> None:
    """Replace a snapshot's manifest and its hash file together, as a forger with write access would."""
    body = json.dumps(manifest, indent=1, ensure_ascii=False).encode()
    for name, data in (("manifest.json", body),
                       ("manifest.sha256", f"{hashlib.sha256(body).hexdigest()}  manifest.json\n".encode())):
        (folder / name).chmod(0o644)
        (folder / name).write_bytes(data)


@pytest.mark.parametrize(("edit", "problem"), [
    (lambda m: {**m, "files": [1]}, "`files` must map each file name to its bytes, rows and sha256"),
    (lambda m: {**m, "files": {"contacts_added.csv": {"bytes": "1", "rows": 1, "sha256": "0"}}},
     "`files` must map each file name to its bytes, rows and sha256"),
    (lambda m: {**m, "sequence": "1"}, "`sequence` must be a whole number and `previous_manifest_sha256` a hash or "
                                       "null"),
    (lambda m: {**m, "previous_manifest_sha256": 5}, "`sequence` must be a whole number and "
                                                     "`previous_manifest_sha256` a hash or null"),
    (lambda m: [m], "a JSON list, not an object"),
], ids=["files a list", "a size as text", "sequence as text", "previous hash a number", "a list"])
def test_a_manifest_of_the_wrong_shape_is_named_not_a_crash(tiny_archive: tuple[LocalStorage, LocalStorage],
                                                           edit: Any, problem: str) -> None:
    _, archive = tiny_archive
    folder = archive.root / f"1/{DAYS[1]}/rev-1"
    forge(folder, edit(json.loads((folder / "manifest.json").read_text())))
    assert any(p.startswith(f"1/{DAYS[1]}/rev-1/manifest.json: ") and problem in p for p in problems_of(archive))


def test_a_manifest_that_is_not_json_is_named(tiny_archive: tuple[LocalStorage, LocalStorage]) -> None:
    _, archive = tiny_archive
    folder = archive.root / f"1/{DAYS[1]}/rev-1"
    (folder / "manifest.json").chmod(0o644)
    (folder / "manifest.json").write_text("{not json")
    found = problems_of(archive)
    assert f"1/{DAYS[1]}/rev-1/manifest.json: manifest is not valid JSON" in found
    assert f"1/{DAYS[1]}/rev-1/manifest.json: manifest does not match manifest.sha256 (edited)" in found


def test_a_manifest_without_its_sequence_breaks_the_chain(tiny_archive: tuple[LocalStorage, LocalStorage]) -> None:
    _, archive = tiny_archive
    folder = archive.root / f"2/{DAYS[0]}/rev-1"
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["sequence"]
    forge(folder, manifest)
    assert (f"2/{DAYS[0]}/rev-1: chain: sequence 0 where 1 was expected (a snapshot is missing or was added)"
            in problems_of(archive))


def test_the_snapshot_says_what_an_auditor_needs_in_readable_utf8(tmp_path: Path, tiny_warehouse: Path) -> None:
    """The manifest names the workspace (as written, not as \\u escapes), its time zone, the day, the revision and
    the run; each HTML log names the revision it belongs to."""
    dimension = pl.read_parquet(tiny_warehouse / "workspaces.parquet")
    renamed = pl.when(pl.col("workspace_id") == 1).then(pl.lit("Tíny Ço 東京")).otherwise(pl.col("name"))
    dimension.with_columns(name=renamed).write_parquet(tiny_warehouse / "workspaces.parquet")
    archive = LocalStorage(tmp_path / "archive")
    warehouse = LocalStorage(tiny_warehouse)
    write_archive(warehouse, archive, report_scope(warehouse, [1], DAYS[-1], None))
    body = (archive.root / f"1/{DAYS[-1]}/rev-1/manifest.json").read_bytes()
    assert "Tíny Ço 東京".encode() in body
    manifest = json.loads(body)
    assert {k: manifest[k] for k in ("workspace_id", "workspace_name", "report_day", "timezone", "revision",
                                     "sequence", "previous_manifest_sha256", "supersedes")} == {
        "workspace_id": 1, "workspace_name": "Tíny Ço 東京", "report_day": DAYS[-1].isoformat(),
        "timezone": "Europe/Madrid", "revision": 1, "sequence": 1, "previous_manifest_sha256": None,
        "supersedes": None}
    assert manifest["run_id"].startswith("2026-03-30#")
    page = (archive.root / f"1/{DAYS[-1]}/rev-1/contacts_added.html").read_text()
    assert "· revision 1</title>" in page and "· revision 1 ·" in page


def test_an_open_day_or_an_unknown_workspace_is_refused_with_what_to_do(tmp_path: Path, tiny_warehouse: Path
                                                                        ) -> None:
    warehouse, archive = LocalStorage(tiny_warehouse), LocalStorage(tmp_path / "archive")
    with pytest.raises(ArchiveError, match=re.escape(
            "report day 2026-03-30 of workspace 2 (and 0 more) had not ended when the warehouse's latest arrival day "
            "2026-03-30 ended (2026-03-31T00:00Z): snapshots are immutable, so only finished days are archived; "
            "archive it after a later night")):
        write_archive(warehouse, archive, report_scope(warehouse, None, date(2026, 3, 30), None))
    with pytest.raises(WarehouseError, match=re.escape(f"workspaces [99] are not in {warehouse.uri}'s workspaces "
                                                       "dimension; check the ids")):
        write_archive(warehouse, archive, report_scope(warehouse, [1, 99], DAYS[-1], None))
    assert not archive.root.exists() or not any(archive.root.iterdir())  # nothing half-written


@pytest.mark.parametrize(("lock", "days"), [(Lock(), None), (Lock("COMPLIANCE", 0), None), (Lock(None, 30), None),
                                            (Lock("GOVERNANCE", 2), 3)], ids=str)
def test_retention_needs_both_a_mode_and_days(lock: Lock, days: int | None) -> None:
    """Counted from the write, rounded up to the next midnight UTC, whatever the report day."""
    until = lock.retain_until()
    assert until == (None if days is None else
                     datetime.combine(datetime.now(UTC).date() + timedelta(days=days), time.min, UTC))


def test_a_snapshot_written_straight_to_s3_is_locked_whole(tiny_warehouse: Path, moto_server: str) -> None:
    """Every object of a snapshot (files, manifest, its hash) carries the lock, not only the files."""
    client = s3_client()
    client.create_bucket(Bucket="audit-direct", ObjectLockEnabledForBucket=True)
    remote = S3Storage("audit-direct", "archive", client)
    warehouse = LocalStorage(tiny_warehouse)
    write_archive(warehouse, remote, report_scope(warehouse, [1], DAYS[-1], None), Lock("GOVERNANCE", 30))
    keys = [k for k in remote.list(f"1/{DAYS[-1]}/rev-1")]
    assert len(keys) == 14 and {"manifest.json", "manifest.sha256"} <= {k.rsplit("/", 1)[1] for k in keys}
    for key in keys:
        head = client.head_object(Bucket="audit-direct", Key=f"archive/{key}")
        assert (head.get("ObjectLockMode"), head["ContentType"]) == ("GOVERNANCE", content_type(key)), key
    index = client.head_object(Bucket="audit-direct", Key="archive/1/index.html")  # opened in a browser
    assert index["ContentType"] == "text/html; charset=utf-8"


def test_two_swapped_days_are_named(tiny_archive: tuple[LocalStorage, LocalStorage]) -> None:
    _, archive = tiny_archive
    one, two = archive.root / "1/2026-03-28", archive.root / "1/2026-03-29"
    one.rename(archive.root / "1/swap")
    two.rename(one)
    (archive.root / "1/swap").rename(two)
    found = problems_of(archive)
    assert "1/2026-03-28/rev-1: manifest describes 1/2026-03-29/rev-1: moved or swapped" in found
    assert "1/2026-03-29/rev-1: manifest describes 1/2026-03-28/rev-1: moved or swapped" in found


def test_a_revision_without_its_manifest_or_its_hash_is_named(tiny_archive: tuple[LocalStorage, LocalStorage]) -> None:
    _, archive = tiny_archive
    (archive.root / "2/2026-03-27/rev-1/manifest.json").unlink()
    (archive.root / "1/2026-03-27/rev-1/manifest.sha256").unlink()
    found = problems_of(archive)
    assert "2/2026-03-27/rev-1: missing manifest.json (incomplete or damaged snapshot)" in found
    assert "1/2026-03-27/rev-1: missing manifest.sha256" in found


def test_a_missing_earlier_revision_is_named(tiny_archive: tuple[LocalStorage, LocalStorage]) -> None:
    _, archive = tiny_archive
    (archive.root / "1/2026-03-28/rev-1").rename(archive.root / "1/2026-03-28/rev-2")
    assert "1/2026-03-28/rev-1: missing: rev-2 exists without its predecessor" in problems_of(archive)
    assert verify(archive)[1]["snapshots"] == 8  # the revision after the gap is still checked


def test_a_range_checks_its_first_and_last_day_and_nothing_outside(tiny_archive: tuple[LocalStorage, LocalStorage]
                                                                   ) -> None:
    _, archive = tiny_archive
    for day in DAYS:
        path = archive.root / f"1/{day}/rev-1/contacts_added.csv"
        path.chmod(0o644)
        path.write_bytes(path.read_bytes() + b"x")
    found = sorted({p.where for p in verify(archive, None, DAYS[1], DAYS[2])[0]})
    assert found == [f"1/{DAYS[1]}/rev-1/contacts_added.csv", f"1/{DAYS[2]}/rev-1/contacts_added.csv"]


def test_verify_checks_the_workspaces_asked_and_goes_past_a_folder_named_after_no_day(
        tiny_archive: tuple[LocalStorage, LocalStorage]) -> None:
    _, archive = tiny_archive
    path = archive.root / f"1/{DAYS[0]}/rev-1/contacts_added.csv"
    path.chmod(0o644)
    path.write_bytes(path.read_bytes() + b"x")
    assert verify(archive, [2]) == ([], {"workspaces": 1, "snapshots": 4, "files": 4 * 12})
    assert {p.where for p in verify(archive, [1])[0]} == {f"1/{DAYS[0]}/rev-1/contacts_added.csv"}
    path.write_bytes(path.read_bytes()[:-1])
    shutil.copytree(archive.root / f"1/{DAYS[0]}", archive.root / "1/2026-02-30")  # sorts first
    problems, counts = verify(archive)
    assert [f"{p.where}: {p.what}" for p in problems] == [
        f"1/2026-02-30/rev-1/{name}: not a snapshot: the folder name is not a calendar date"
        for name in sorted(p.name for p in (archive.root / "1/2026-02-30/rev-1").iterdir())]
    assert counts == {"workspaces": 2, "snapshots": 8, "files": 8 * 12}


def test_a_range_or_selection_with_no_snapshot_is_a_problem_not_a_pass(
        tiny_archive: tuple[LocalStorage, LocalStorage], tmp_path: Path) -> None:
    _, archive = tiny_archive
    assert verify(archive, None, DAYS[0], DAYS[0])[0] == [] and verify(archive, None, DAYS[-1], DAYS[-1])[0] == []
    after = date(2026, 4, 1)
    assert problems_of_range(archive, None, after, None) == [
        f"{archive.uri}: no snapshots between {after} and the last day found: a wrong path or an empty archive "
        "verifies nothing"]
    before = date(2026, 3, 1)
    assert problems_of_range(archive, None, None, before) == [
        f"{archive.uri}: no snapshots between the first day and {before} found: a wrong path or an empty archive "
        "verifies nothing"]
    assert problems_of_range(archive, [9], None, None) == [
        f"{archive.uri}: no snapshots of workspaces [9] found: a wrong path or an empty archive verifies nothing"]
    empty = LocalStorage(tmp_path / "empty")
    assert problems_of_range(empty, None, None, None) == [
        f"{empty.uri}: no snapshots found: a wrong path or an empty archive verifies nothing"]


def problems_of_range(archive: LocalStorage, ids: list[int] | None, start: date | None, end: date | None
                      ) -> list[str]:
    return [f"{p.where}: {p.what}" for p in verify(archive, ids, start, end)[0]]


def test_the_first_manifest_must_start_the_chain(tiny_archive: tuple[LocalStorage, LocalStorage]) -> None:
    """A forged predecessor for the first snapshot (hash file updated too) is named: the chain starts at null."""
    _, archive = tiny_archive
    folder = archive.root / f"2/{DAYS[0]}/rev-1"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["previous_manifest_sha256"] is None and manifest["sequence"] == 1
    manifest["previous_manifest_sha256"] = "0" * 64
    forge(folder, manifest)
    found = problems_of(archive)
    assert (f"2/{DAYS[0]}/rev-1: chain broken: previous_manifest_sha256 does not match the manifest written before"
            " it") in found


@pytest.mark.parametrize("concurrency", [1, 16])
def test_the_mirror_writes_every_file_before_the_manifest_that_names_it(
        tiny_archive: tuple[LocalStorage, LocalStorage], moto_server: str, concurrency: int) -> None:
    """A reader of the remote copy never finds a manifest (or its hash) naming an object not there yet, nor HEAD
    naming a manifest not there yet: with many writes in flight, each starts only after those it names completed."""
    _, archive = tiny_archive
    client = s3_client()
    client.create_bucket(Bucket=f"ordered{concurrency}")
    events: list[tuple[str, str]] = []

    class Watched(S3Storage):
        def write_new(self, key: str, *args: Any, **kwargs: Any) -> None:
            events.append(("start", key))
            super().write_new(key, *args, **kwargs)
            events.append(("done", key))

        def write_bytes(self, key: str, *args: Any, **kwargs: Any) -> None:
            events.append(("start", key))
            super().write_bytes(key, *args, **kwargs)
            events.append(("done", key))

    remote = Watched(f"ordered{concurrency}", "archive", client)
    requests: list[str] = []
    client.meta.events.register("before-send.s3", lambda event_name, **_: requests.append(event_name.split(".")[-1]))
    assert mirror(archive, remote, {1: DAYS[0], 2: DAYS[0]}, concurrency=concurrency) == 2 * 14
    # A look before each create-only write (RGW, docs/archive.md), nothing listed: bounded whatever the history
    assert sorted(set(requests)) == ["HeadObject", "PutObject"] and requests.count("HeadObject") == 2 * 14
    started = {key: events.index(("start", key)) for what, key in events if what == "start"}
    done = {key: events.index(("done", key)) for what, key in events if what == "done"}
    assert set(started) == set(done) and len(done) == 2 * 14 + 4  # and HEAD and the index page of each
    for key in done:
        folder, name = key.rsplit("/", 1)
        if name == "manifest.json":
            named = [k for k in done if k.startswith(folder + "/") and not k.endswith(("manifest.json", ".sha256"))]
        elif name == "manifest.sha256":
            named = [f"{folder}/manifest.json"]
        elif name == "HEAD.json":
            named = [k for k in done if k.startswith(folder + "/") and k.endswith("manifest.sha256")]
        else:
            continue
        assert len(named) >= 1 and all(done[k] < started[key] for k in named), key
    assert remote.read_bytes(f"1/{DAYS[0]}/rev-1/manifest.json") == archive.read_bytes(
        f"1/{DAYS[0]}/rev-1/manifest.json")


def test_late_events_make_a_new_revision_and_leave_the_old_one_untouched(tmp_path: Path) -> None:
    first = event("a", "2026-03-10T08:00:00Z")
    late = event("late", "2026-03-10T09:00:00Z", contact_id=7)
    landing = write_landing(tmp_path / "landing", [(1, "W", "UTC")],
                            {"2026-03-10/09": [first], "2026-03-12/09": [late]})
    warehouse, archive = LocalStorage(tmp_path / "wh"), LocalStorage(tmp_path / "archive")
    run_etl(LocalStorage(landing), warehouse, date(2026, 3, 10))

    def snapshot() -> dict[str, int]:
        return write_archive(warehouse, archive, report_scope(warehouse, None, date(2026, 3, 10), None))

    assert snapshot() == {"written": 1, "revised": 0, "unchanged": 0}
    before = {p.name: p.read_bytes() for p in (archive.root / "1/2026-03-10/rev-1").iterdir()}
    assert snapshot()["unchanged"] == 1  # a re-run
    run_etl(LocalStorage(landing), warehouse, date(2026, 3, 12))
    assert snapshot()["revised"] == 1
    assert {p.name: p.read_bytes() for p in (archive.root / "1/2026-03-10/rev-1").iterdir()} == before
    manifest = json.loads((archive.root / "1/2026-03-10/rev-2/manifest.json").read_text())
    assert manifest["supersedes"] == "rev-1"
    assert manifest["change"] == {"reason": "late events changed the day after its last snapshot",
                                  "rows_added": {"added": 1, "deleted": 0, "merged": 0, "connected": 0}}
    assert manifest["landing_partitions"] == ["ingest_date=2026-03-10/hour=09", "ingest_date=2026-03-12/hour=09"]
    assert verify(archive)[0] == []


def snapshot_state(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("crash", ["before the manifest's hash", "before HEAD moved"])
def test_a_night_interrupted_inside_a_snapshot_is_completed_by_the_rerun(tmp_path: Path, tiny_warehouse: Path,
                                                                        crash: str) -> None:
    """A crash between the last two writes of a snapshot: the re-run completes that revision (same bytes as an
    uninterrupted run, HEAD and chain right for the next day), never skips it or adds a rev-2."""
    warehouse = LocalStorage(tiny_warehouse)
    clean, crashed = LocalStorage(tmp_path / "clean"), LocalStorage(tmp_path / "crashed")
    for day in DAYS[:2]:
        write_archive(warehouse, clean, report_scope(warehouse, None, day, None))
    write_archive(warehouse, crashed, report_scope(warehouse, None, DAYS[0], None))
    head_before = (crashed.root / "1/HEAD.json").read_bytes()
    write_archive(warehouse, crashed, report_scope(warehouse, [1], DAYS[1], None))
    (crashed.root / "1/HEAD.json").write_bytes(head_before)  # HEAD is written last: the crash undoes it
    if crash == "before the manifest's hash":
        (crashed.root / f"1/{DAYS[1]}/rev-1/manifest.sha256").unlink()
    outcome = write_archive(warehouse, crashed, report_scope(warehouse, None, DAYS[1], None))
    assert outcome["revised"] == 0
    assert snapshot_state(crashed.root) == snapshot_state(clean.root)
    for day in DAYS[2:]:
        write_archive(warehouse, clean, report_scope(warehouse, None, day, None))
        write_archive(warehouse, crashed, report_scope(warehouse, None, day, None))
    assert snapshot_state(crashed.root) == snapshot_state(clean.root)
    assert verify(crashed)[0] == []


def test_archived_rows_equal_the_report_logs_of_the_day(tiny_archive: tuple[LocalStorage, LocalStorage],
                                                        tmp_path: Path) -> None:
    warehouse, archive = tiny_archive
    render(RenderJob(str(warehouse.root), str(tmp_path / "out"), (1, 2), date(2026, 3, 29), None, WINDOW_NAMES, ()))
    for workspace in (1, 2):
        for kind in ("added", "connected", "deleted", "merged"):
            page_csv = (tmp_path / f"out/{workspace}/2026-03-29/today.contacts_{kind}.csv").read_bytes()
            assert (archive.root / f"{workspace}/2026-03-29/rev-1/contacts_{kind}.csv").read_bytes() == page_csv
    pages = [p.read_text() for p in archive.root.rglob("*.html")]
    assert not any("<b>bold</b>" in page for page in pages)
    assert any("&lt;b&gt;bold&lt;/b&gt;" in page for page in pages)
    assert any("\"'=1+1\"" in p.read_text(encoding="utf-8-sig") for p in archive.root.rglob("*.csv"))


@pytest.mark.other_process
def test_cli_verify_and_show(tiny_archive: tuple[LocalStorage, LocalStorage]) -> None:
    _, archive = tiny_archive
    cli = [sys.executable, "-m", "etl.cli", "archive"]
    ok = subprocess.run([*cli, "verify", "--archive", str(archive.root)], capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and ok.stdout.strip().splitlines()[-1].startswith("OK: 8 snapshots")
    shown = subprocess.run([*cli, "show", "--archive", str(archive.root), "--workspace", "2", "--day", "2026-03-29"],
                           capture_output=True, text=True, check=True)
    assert json.loads(shown.stdout)["manifest"]["files"]["contacts_added.csv"]["sha256"]
    (archive.root / "2/2026-03-29/rev-1/contacts_added.csv").unlink()
    bad = subprocess.run([*cli, "verify", "--archive", str(archive.root), "--json"], capture_output=True, text=True,
                         check=False)
    assert bad.returncode == 1 and json.loads(bad.stdout)["problems"][0]["where"].endswith("contacts_added.csv")


def test_s3_writes_are_create_only_with_retention(tiny_archive: tuple[LocalStorage, LocalStorage],
                                                  moto_server: str) -> None:
    _, archive = tiny_archive
    client = s3_client()
    client.create_bucket(Bucket="audit", ObjectLockEnabledForBucket=True)
    sent: list[dict[str, str]] = []
    client.meta.events.register("before-send.s3.PutObject", lambda request, **_: sent.append(dict(request.headers)))
    remote = S3Storage("audit", "archive", client)
    lock = Lock("COMPLIANCE", 365)
    copied = sum(mirror(archive, remote, {1: day, 2: day}, lock) for day in DAYS)  # night by night, as the DAG does
    assert copied == 4 * 2 * 14
    snapshot_puts = [h for h in sent if "If-None-Match" in h]
    assert len(snapshot_puts) == copied
    assert all(h["If-None-Match"] == b"*" and h["x-amz-object-lock-mode"] == b"COMPLIANCE" and "Content-MD5" in h
               for h in snapshot_puts)
    stored = client.head_object(Bucket="audit", Key="archive/1/2026-03-29/rev-1/manifest.json")
    assert stored["ObjectLockMode"] == "COMPLIANCE"
    retain_days = (stored["ObjectLockRetainUntilDate"].date() - datetime.now(UTC).date()).days
    assert 365 <= retain_days <= 366  # counted from the write: a past report day still gets a future date
    assert stored["ServerSideEncryption"] == "AES256"
    assert mirror(archive, remote, {1: date(2026, 3, 29)}, lock) == 14  # a re-run: identical objects are fine
    with pytest.raises(AlreadyExists):
        remote.write_new("1/2026-03-29/rev-1/contacts_added.csv", b"forged")
    assert verify(remote) == ([], {"workspaces": 2, "snapshots": 8, "files": 8 * 12})
    for key in ("archive/1/HEAD.json", "archive/1/index.html"):  # the mutable objects, typed as the local ones
        assert client.head_object(Bucket="audit", Key=key)["ContentType"] == content_type(key)
    assert remote.read_bytes("1/2026-03-29/rev-1/contacts_added.csv") == archive.read_bytes(
        "1/2026-03-29/rev-1/contacts_added.csv")


def test_verify_reads_the_original_version_and_names_a_second_one(tiny_archive: tuple[LocalStorage, LocalStorage],
                                                                  moto_server: str) -> None:
    _, archive = tiny_archive
    client = s3_client()
    client.create_bucket(Bucket="versioned")
    client.put_bucket_versioning(Bucket="versioned", VersioningConfiguration={"Status": "Enabled"})
    remote = S3Storage("versioned", "archive", client)
    for day in DAYS:
        mirror(archive, remote, {1: day, 2: day})
    assert verify(remote)[0] == []
    # What Ceph RGW 16.2 does on an Object Lock bucket: the second write becomes a new version.
    client.put_object(Bucket="versioned", Key="archive/1/2026-03-28/rev-1/contacts_added.csv", Body=b"forged")
    found = [f"{p.where}: {p.what}" for p in verify(remote)[0]]
    assert found == ["1/2026-03-28/rev-1/contacts_added.csv: 2 versions: the object was written again after its "
                     "snapshot; checked the original version"]


def test_show_gives_the_latest_complete_revision_or_the_one_asked(tiny_archive: tuple[LocalStorage, LocalStorage]
                                                                  ) -> None:
    _, archive = tiny_archive
    day = archive.root / "2/2026-03-29"
    shutil.copytree(day / "rev-1", day / "rev-3")  # a complete later revision ...
    shutil.copytree(day / "rev-1", day / "rev-4")
    (day / "rev-4/manifest.sha256").unlink()  # ... and an incomplete one, never shown
    shown = show(archive, 2, date(2026, 3, 29), None)
    assert shown["location"] == f"{archive.uri.rstrip('/')}/2/2026-03-29/rev-3/"
    assert shown["revisions"] == [1, 3]
    assert shown["manifest"] == json.loads((day / "rev-3/manifest.json").read_text())
    assert show(archive, 2, date(2026, 3, 29), 1)["location"].endswith("/2/2026-03-29/rev-1/")
    with pytest.raises(FileNotFoundError, match=rf"^no snapshot of workspace 2 for 2026-03-30 under "
                                                rf"{re.escape(archive.uri)}$"):
        show(archive, 2, date(2026, 3, 30), None)


def test_a_spanish_workspaces_archive_pages_are_in_spanish_and_its_data_files_are_not(
        tmp_path: Path, tiny_warehouse: Path) -> None:
    """The locale changes the pages an auditor reads, never the CSV and Parquet files they hash and load."""
    warehouse = LocalStorage(tiny_warehouse)
    scope = report_scope(warehouse, [1], DAYS[-1], None)
    english, spanish = LocalStorage(tmp_path / "en"), LocalStorage(tmp_path / "es")
    write_archive(warehouse, english, scope)
    write_archive(warehouse, spanish, scope.in_language("es"))
    folder = f"1/{DAYS[-1]}/rev-1"
    page = spanish.read_bytes(f"{folder}/contacts_added.html").decode()
    assert '<html lang="es">' in page and "Registro de contactos agregados · <time" in page
    assert "revisión 1" in page and "Archivo de" in page
    index = spanish.read_bytes("1/index.html").decode()
    assert "Cada instantánea es inmutable" in index and "<code>contacts-report archive verify</code>" in index
    for name in ("contacts_added.csv", "contacts_added.parquet", "contacts_merged.csv"):
        assert spanish.read_bytes(f"{folder}/{name}") == english.read_bytes(f"{folder}/{name}")
    assert verify(spanish)[0] == []
