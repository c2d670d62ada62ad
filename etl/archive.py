"""The auditors' archive: immutable, verifiable snapshots of the four contact logs of each report day.

Layout under the archive root (a folder or s3://):
  {workspace_id}/{report_day}/rev-{n}/contacts_{kind}.{csv,parquet,html}
  {workspace_id}/{report_day}/rev-{n}/manifest.json     sizes, row counts, SHA-256 of every file; the hash chain
  {workspace_id}/{report_day}/rev-{n}/manifest.sha256   the manifest's own hash
  {workspace_id}/HEAD.json                              where the chain ends (a convenience; verify never trusts it)
  {workspace_id}/index.html                             days, revisions and hashes, for people
Snapshots are written create-only and never replaced: late events for a past day make rev-{n+1}.
"""

from __future__ import annotations

import functools
import hashlib
import io
import itertools
import json
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from importlib import metadata
from typing import Any

import polars as pl

from etl.csv_logs import log_csv
from etl.errors import InputError
from etl.publish import bounded, content_type
from etl.report import KINDS, Workspace, log_frames
from etl.settings import DEFAULT_PUBLISH_CONCURRENCY
from etl.storage import Storage
from etl.templating import environment
from etl.warehouse import ReportScope, WarehouseView, load_inputs
from etl.windows import report_day_for

log = logging.getLogger(__name__)

_REV = re.compile(r"^(\d+)/(\d{4}-\d{2}-\d{2})/rev-(\d+)/([^/]+)$", re.ASCII)
MANIFEST = "manifest.json"
MANIFEST_HASH = "manifest.sha256"


class ArchiveError(InputError):
    """The archive cannot be written as asked; the message says why and what to do."""


@functools.cache  # the installed package's metadata: ~1.5 ms a read, which every snapshot used to pay
def code_version() -> str:
    try:
        return metadata.version("contacts-report")
    except metadata.PackageNotFoundError:
        return "unknown"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Lock:
    """Object Lock retention for S3 archives (off unless both are set)."""

    mode: str | None = None  # "COMPLIANCE" or "GOVERNANCE"
    days: int = 0

    def retain_until(self) -> datetime | None:
        """Counted from the write (stores refuse a retain-until date in the past, which a backfilled old report
        day would give), rounded up to midnight UTC. A re-run never re-puts an existing object, so an object keeps
        the date of its first write."""
        if not self.mode or self.days <= 0:
            return None
        return datetime.combine(datetime.now(UTC).date() + timedelta(days=self.days + 1), time.min, UTC)


def snapshot_files(workspace: Workspace, day: date, revision: int, events: pl.DataFrame
                   ) -> dict[str, tuple[bytes, int]]:
    """name -> (bytes, rows) for the four logs of `day`, as CSV (formula-neutralised), Parquet and HTML."""
    files: dict[str, tuple[bytes, int]] = {}
    of_day = events.filter(pl.col("local_date") == day)
    template = environment(workspace.locale).get_template("archive_log.html.j2")
    frames = log_frames(of_day)  # the four logs in one pass (one each was four passes over the day's events)
    for kind in KINDS:
        frame = frames[kind].drop("local_date")
        name = f"contacts_{kind}"
        buffer = io.BytesIO()
        frame.write_parquet(buffer, compression="zstd", statistics=True)
        html = template.render(workspace=workspace, day=day, revision=revision, kind=kind, rows=tuple(frame.rows()),
                               columns=frame.columns)
        files[f"{name}.csv"] = (log_csv(frame), frame.height)
        files[f"{name}.parquet"] = (buffer.getvalue(), frame.height)
        files[f"{name}.html"] = (html.encode(), frame.height)
    return files


def revisions(archive: Storage, workspace_id: int, day: date) -> dict[int, set[str]]:
    """rev number -> file names present, for one workspace and day."""
    found: dict[int, set[str]] = {}
    for key in archive.list(f"{workspace_id}/{day.isoformat()}"):
        m = _REV.match(key)
        if m:
            found.setdefault(int(m.group(3)), set()).add(m.group(4))
    return found


def _head(archive: Storage, workspace_id: int) -> dict[str, Any]:
    key = f"{workspace_id}/HEAD.json"
    return json.loads(archive.read_bytes(key)) if archive.exists(key) else {"sequence": 0, "sha256": None}


def write_workspace(archive: Storage, workspace: Workspace, day: date, events: pl.DataFrame, run_id: str | None,
                    lock: Lock) -> str:
    """Write the day's snapshot if it is new or changed; returns "written", "unchanged" or "revised".

    A revision is complete once its manifest.sha256 exists (written after every file and the manifest); a re-run
    after a crash completes the same folder instead of skipping or duplicating it, and moves HEAD forward if the
    crash came between the hash and HEAD."""
    wid = workspace.workspace_id
    existing = revisions(archive, wid, day)
    complete = sorted(n for n, names in existing.items() if MANIFEST_HASH in names)
    latest = complete[-1] if complete else 0
    previous: dict[str, Any] | None = None
    if latest:
        previous = json.loads(archive.read_bytes(f"{wid}/{day.isoformat()}/rev-{latest}/{MANIFEST}"))
        probe = snapshot_files(workspace, day, latest, events)
        if {n: sha256(b) for n, (b, _) in probe.items()} == {n: f["sha256"] for n, f in previous["files"].items()}:
            _advance_head(archive, wid, previous, f"{wid}/{day.isoformat()}/rev-{latest}/{MANIFEST}")
            return "unchanged"
    revision = latest + 1
    files = snapshot_files(workspace, day, revision, events)
    folder = f"{wid}/{day.isoformat()}/rev-{revision}"
    retain = lock.retain_until()
    for name, (data, _) in sorted(files.items()):
        archive.write_new(f"{folder}/{name}", data, content_type(name), retain, lock.mode)
    body = _written_manifest(archive, folder, files)
    if body is None:
        head = _head(archive, wid)
        of_day = events.filter(pl.col("local_date") == day)
        manifest = {
            "workspace_id": wid,
            "workspace_name": workspace.name,
            "report_day": day.isoformat(),
            "timezone": workspace.timezone,
            "revision": revision,
            "sequence": head["sequence"] + 1,
            "previous_manifest_sha256": head["sha256"],
            "supersedes": f"rev-{latest}" if latest else None,
            "change": _change(previous, files) if previous else None,
            "run_id": run_id,
            "code_version": code_version(),
            "landing_partitions": sorted({k.rsplit("/", 1)[0] for k in of_day["arrival_key"].to_list()}),
            "files": {name: {"bytes": len(data), "rows": rows, "sha256": sha256(data)}
                      for name, (data, rows) in sorted(files.items())},
        }
        body = json.dumps(manifest, indent=1, ensure_ascii=False).encode()
        archive.write_new(f"{folder}/{MANIFEST}", body, content_type(MANIFEST), retain, lock.mode)
    digest = sha256(body)
    hash_line = f"{digest}  {MANIFEST}\n".encode()
    archive.write_new(f"{folder}/{MANIFEST_HASH}", hash_line, content_type(MANIFEST_HASH), retain, lock.mode)
    _advance_head(archive, wid, json.loads(body), f"{folder}/{MANIFEST}")
    return "revised" if latest else "written"


def _written_manifest(archive: Storage, folder: str, files: dict[str, tuple[bytes, int]]) -> bytes | None:
    """The manifest an interrupted run already wrote for exactly these files (kept as it is: it is create-only and
    its sequence and previous hash were right when written), or None."""
    key = f"{folder}/{MANIFEST}"
    if not archive.exists(key):
        return None
    body = archive.read_bytes(key)
    written = {n: f["sha256"] for n, f in json.loads(body)["files"].items()}
    return body if written == {n: sha256(b) for n, (b, _) in files.items()} else None


def _advance_head(archive: Storage, wid: int, manifest: dict[str, Any], key: str) -> None:
    """Point HEAD at `manifest` unless HEAD is already there or further on."""
    if _head(archive, wid)["sequence"] >= manifest["sequence"]:
        return
    digest = sha256(archive.read_bytes(key))
    archive.write_bytes(f"{wid}/HEAD.json", json.dumps({"sequence": manifest["sequence"], "sha256": digest,
                                                        "manifest": key}).encode())


def _change(previous: dict[str, Any], files: dict[str, tuple[bytes, int]]) -> dict[str, Any]:
    added = {k: files[f"contacts_{k}.csv"][1] - previous["files"][f"contacts_{k}.csv"]["rows"] for k in KINDS}
    return {"reason": "late events changed the day after its last snapshot", "rows_added": added}


def write_archive(warehouse: Storage, archive: Storage, scope: ReportScope, lock: Lock = Lock()) -> dict[str, int]:
    """Snapshot each workspace of `scope` on its report day (`etl.warehouse.report_scope`, as `render`). Only days
    that had fully ended when the warehouse's latest arrival day ended: a snapshot is immutable, so a day still open
    would be frozen incomplete."""
    _refuse_open_days(scope.view, scope.days)
    inputs = load_inputs(warehouse, scope.workspaces, scope.days, ("today",), need_all_events=False)
    outcome: dict[str, int] = {"written": 0, "revised": 0, "unchanged": 0}
    for workspace in scope.workspaces:
        result = write_workspace(archive, workspace, scope.days[workspace.workspace_id],
                                 inputs[workspace.workspace_id].events, scope.view.freshness.run_id, lock)
        outcome[result] += 1
        write_index(archive, workspace)
    log.info("archive %s: %s", archive.uri, outcome)
    return outcome


def _refuse_open_days(view: WarehouseView, days: dict[int, date]) -> None:
    if view.freshness.latest_ingest_date is None:
        raise ArchiveError("the warehouse has no finished night (no run summary): run `contacts-report etl` first")
    data_end = datetime.combine(date.fromisoformat(view.freshness.latest_ingest_date) + timedelta(days=1),
                                datetime.min.time(), UTC)
    open_days = {w: d for w, d in sorted(days.items()) if d > report_day_for(data_end, view.workspaces[w].timezone)}
    if open_days:
        first = next(iter(open_days.items()))
        raise ArchiveError(
            f"report day {first[1]} of workspace {first[0]} (and {len(open_days) - 1} more) had not ended when the "
            f"warehouse's latest arrival day {view.freshness.latest_ingest_date} ended ({data_end:%Y-%m-%dT%H:%MZ}):"
            " snapshots are immutable, so only finished days are archived; archive it after a later night")


def write_index(archive: Storage, workspace: Workspace) -> None:
    rows = []
    for key in archive.list(str(workspace.workspace_id)):
        m = _REV.match(key)
        if m and m.group(4) == MANIFEST_HASH:
            digest = archive.read_bytes(key).decode().split()[0]
            rows.append((m.group(2), int(m.group(3)), digest, key.rsplit("/", 1)[0]))
    rows.sort(key=lambda r: (r[0], r[1]), reverse=True)
    html = environment(workspace.locale).get_template("archive_index.html.j2").render(workspace=workspace, rows=rows,
                                                                                       kinds=KINDS)
    archive.write_bytes(f"{workspace.workspace_id}/index.html", html.encode(), "text/html; charset=utf-8")


# ---------------------------------------------------------------- verify

@dataclass(frozen=True)
class Problem:
    where: str
    what: str


def verify(archive: Storage, workspace_ids: list[int] | None = None, start: date | None = None,
           end: date | None = None) -> tuple[list[Problem], dict[str, int]]:
    """Recompute every hash and count; check revisions, days and the chain. Returns (problems, counts)."""
    tree: dict[int, dict[date, dict[int, set[str]]]] = {}
    problems: list[Problem] = []
    for key in archive.list():
        m = _REV.match(key)
        if not m:
            continue
        try:
            wid, day = int(m.group(1)), date.fromisoformat(m.group(2))
        except ValueError:
            problems.append(Problem(key, "not a snapshot: the folder name is not a calendar date"))
            continue
        if workspace_ids and wid not in workspace_ids:
            continue
        tree.setdefault(wid, {}).setdefault(day, {}).setdefault(int(m.group(3)), set()).add(m.group(4))
    counts = {"workspaces": len(tree), "snapshots": 0, "files": 0}
    archive_uri = archive.uri
    archive = _OriginalVersions.wrap(archive, problems)
    for wid, days in sorted(tree.items()):
        chain: list[tuple[int, str, str | None, str]] = []
        for day, revs in sorted(days.items()):
            in_range = (start is None or day >= start) and (end is None or day <= end)
            for rev in range(1, max(revs) + 1):
                where = f"{wid}/{day}/rev-{rev}"
                if rev not in revs:
                    problems.append(Problem(where, f"missing: rev-{rev + 1} exists without its predecessor"))
                    continue
                try:
                    entry = _check_revision(archive, wid, day, rev, revs[rev], problems, counts,
                                            check_files=in_range)
                except _Malformed as err:
                    problems.append(Problem(f"{where}/{MANIFEST}", f"manifest is malformed: {err}"))
                    entry = None
                if entry:
                    chain.append(entry)
        problems += _check_days(wid, sorted(days))
        problems += _check_chain(wid, chain)
    checked_days = [d for days in tree.values() for d in days
                    if (start is None or d >= start) and (end is None or d <= end)]
    if not checked_days:
        scope = f" of workspaces {sorted(workspace_ids)}" if workspace_ids else ""
        span = f" between {start or 'the first day'} and {end or 'the last day'}" if start or end else ""
        problems.append(Problem(archive_uri, f"no snapshots{scope}{span} found: a wrong path or an empty archive "
                                             "verifies nothing"))
    return problems, counts


class _OriginalVersions:
    """On a versioned S3 bucket, a snapshot object may have been given a new version (Ceph RGW 16.2 accepts a
    conditional put that way on Object Lock buckets). Verification reads the original — the version the manifest
    was written against — and names every object that has more than one version."""

    def __init__(self, archive: Any, versions: dict[str, list[str]]) -> None:
        self.archive, self.versions = archive, versions

    @classmethod
    def wrap(cls, archive: Storage, problems: list[Problem]) -> Any:
        from etl.storage import S3Storage

        if not isinstance(archive, S3Storage):
            return archive
        versions = {k: v for k, v in archive.versions().items() if _REV.match(k)}
        for key, ids in sorted(versions.items()):
            problems.append(Problem(key, f"{len(ids)} versions: the object was written again after its snapshot; "
                                         "checked the original version"))
        return cls(archive, versions)

    def read_bytes(self, key: str) -> bytes:
        if key in self.versions:
            data: bytes = self.archive.read_version(key, self.versions[key][0])
            return data
        return bytes(self.archive.read_bytes(key))


def _check_revision(archive: Any, wid: int, day: date, rev: int, names: set[str], problems: list[Problem],
                    counts: dict[str, int], check_files: bool) -> tuple[int, str, str | None, str] | None:
    folder = f"{wid}/{day.isoformat()}/rev-{rev}"
    if MANIFEST not in names:
        problems.append(Problem(folder, "missing manifest.json (incomplete or damaged snapshot)"))
        return None
    body = archive.read_bytes(f"{folder}/{MANIFEST}")
    digest = sha256(body)
    if MANIFEST_HASH not in names:
        problems.append(Problem(folder, "missing manifest.sha256"))
    elif archive.read_bytes(f"{folder}/{MANIFEST_HASH}").decode().split()[:1] != [digest]:
        problems.append(Problem(f"{folder}/{MANIFEST}", "manifest does not match manifest.sha256 (edited)"))
    try:
        manifest = json.loads(body)
    except (ValueError, RecursionError):
        problems.append(Problem(f"{folder}/{MANIFEST}", "manifest is not valid JSON"))
        return None
    _check_shape(manifest)
    if (manifest.get("workspace_id"), manifest.get("report_day"), manifest.get("revision")) != (
            wid, day.isoformat(), rev):
        described = f"{manifest.get('workspace_id')}/{manifest.get('report_day')}/rev-{manifest.get('revision')}"
        problems.append(Problem(folder, f"manifest describes {described}: moved or swapped"))
    counts["snapshots"] += 1
    listed = set(manifest.get("files", {}))
    for extra in sorted(names - listed - {MANIFEST, MANIFEST_HASH}):
        problems.append(Problem(f"{folder}/{extra}", "extra file not named in the manifest"))
    if check_files:
        for name, expected in sorted(manifest.get("files", {}).items()):
            problems += _check_file(archive, f"{folder}/{name}", name in names, expected)
            counts["files"] += 1
    return int(manifest.get("sequence", 0)), digest, manifest.get("previous_manifest_sha256"), folder


class _Malformed(Exception):
    """A manifest that is JSON but not of the manifest's shape."""


def _check_shape(manifest: Any) -> None:
    """Raise _Malformed unless `manifest` has the fields verification reads, each of its type."""
    if not isinstance(manifest, dict):
        raise _Malformed(f"a JSON {type(manifest).__name__}, not an object")
    files = manifest.get("files", {})
    if not isinstance(files, dict) or not all(
            isinstance(e, dict) and type(e.get("bytes")) is int and type(e.get("rows")) is int
            and isinstance(e.get("sha256"), str) for e in files.values()):
        raise _Malformed("`files` must map each file name to its bytes, rows and sha256")
    if type(manifest.get("sequence", 0)) is not int or not isinstance(manifest.get("previous_manifest_sha256"),
                                                                        str | None):
        raise _Malformed("`sequence` must be a whole number and `previous_manifest_sha256` a hash or null")


def _check_file(archive: Any, key: str, present: bool, expected: dict[str, Any]) -> list[Problem]:
    if not present:
        return [Problem(key, "missing file named in the manifest")]
    data = archive.read_bytes(key)
    found = []
    if len(data) != expected["bytes"]:
        found.append(Problem(key, f"size {len(data)} bytes, manifest says {expected['bytes']}"))
    if sha256(data) != expected["sha256"]:
        found.append(Problem(key, "content changed: SHA-256 differs from the manifest"))
    elif _rows(key, data) != expected["rows"]:
        found.append(Problem(key, f"{_rows(key, data)} rows, manifest says {expected['rows']}"))
    return found


def _rows(key: str, data: bytes) -> int:
    if key.endswith(".parquet"):
        return pl.read_parquet(io.BytesIO(data)).height
    if key.endswith(".csv"):
        import csv

        return max(0, len(list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))) - 1)
    return len(re.findall(rb"<tr class=\"row\">", data))


def _check_days(wid: int, days: list[date]) -> list[Problem]:
    found = []
    for first, second in itertools.pairwise(days):
        gap = (second - first).days
        for missing in range(1, gap):
            found.append(Problem(f"{wid}/{first + timedelta(days=missing)}", "missing day: no snapshot between "
                                                                             f"{first} and {second}"))
    return found


def _check_chain(wid: int, chain: list[tuple[int, str, str | None, str]]) -> list[Problem]:
    found = []
    ordered = sorted(chain)
    for position, (sequence, _, previous, folder) in enumerate(ordered):
        if sequence != position + 1:
            found.append(Problem(folder, f"chain: sequence {sequence} where {position + 1} was expected "
                                         "(a snapshot is missing or was added)"))
        expected = ordered[position - 1][1] if position else None
        if previous != expected:
            found.append(Problem(folder, "chain broken: previous_manifest_sha256 does not match the manifest "
                                         "written before it"))
    return found


def show(archive: Storage, workspace_id: int, day: date, revision: int | None) -> dict[str, Any]:
    revs = revisions(archive, workspace_id, day)
    complete = sorted(n for n, names in revs.items() if MANIFEST_HASH in names)
    if not complete:
        raise FileNotFoundError(f"no snapshot of workspace {workspace_id} for {day} under {archive.uri}")
    rev = revision or complete[-1]
    folder = f"{workspace_id}/{day.isoformat()}/rev-{rev}"
    manifest = json.loads(archive.read_bytes(f"{folder}/{MANIFEST}"))
    return {"location": f"{archive.uri.rstrip('/')}/{folder}/", "revisions": complete, "manifest": manifest}


def mirror(source: Storage, target: Storage, workspace_days: dict[int, date], lock: Lock = Lock(),
           concurrency: int = DEFAULT_PUBLISH_CONCURRENCY) -> int:
    """Copy the nights' snapshots to another store (S3) create-only, then the mutable HEAD and index pages,
    `concurrency` objects at a time (one at a time, with a look before each create-only write, a night took ~30,000
    serial requests at 1,000 workspaces: ~10 minutes against a real S3), in waves so that no object ever names a
    missing one: every snapshot file, then the manifests, then their hashes, then HEAD and the index pages. A failure
    stops before the next wave. Returns how many snapshot objects were copied (already present identical ones count
    as copied)."""
    snapshots = [key for wid, day in sorted(workspace_days.items()) for key in source.list(f"{wid}/{day.isoformat()}")]
    waves = [[k for k in snapshots if not k.endswith((f"/{MANIFEST}", f"/{MANIFEST_HASH}"))],
             [k for k in snapshots if k.endswith(f"/{MANIFEST}")],
             [k for k in snapshots if k.endswith(f"/{MANIFEST_HASH}")]]
    mutable = [key for wid in sorted(workspace_days) for key in (f"{wid}/HEAD.json", f"{wid}/index.html")
               if source.exists(key)]
    retain = lock.retain_until()

    def create(key: str) -> None:
        target.write_new(key, source.read_bytes(key), content_type(key), retain, lock.mode)

    def overwrite(key: str) -> None:
        target.write_bytes(key, source.read_bytes(key), content_type(key))

    with ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="mirror") as pool:
        for keys, write in [*((wave, create) for wave in waves), (mutable, overwrite)]:
            for done in bounded(pool, write, keys, max(1, concurrency)):
                done.result()
    return len(snapshots)
