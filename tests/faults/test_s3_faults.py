"""Storage faults on the wire (a fault-injecting proxy in front of moto's S3 server): the final state must equal
one clean run — same keys, same bytes, no duplicates — or the step must fail loudly."""

from __future__ import annotations

import gzip
import random
import threading
from datetime import date
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from etl.archive import mirror, verify, write_archive
from etl.cli import EXIT_STORAGE, EXIT_USAGE, main
from etl.ingest import landing_dates
from etl.pipeline import run_etl
from etl.publish import S3Target, upload
from etl.storage import LocalStorage, S3Storage, StorageError, client_config
from etl.warehouse import report_scope
from tests.conftest import TINY
from tests.faults.proxy import FaultProxy
from tests.helpers import published as content_of

BUCKET = "faults"


def client_via(proxy: FaultProxy, **overrides: Any) -> Any:
    config = client_config().merge(Config(**overrides)) if overrides else client_config()
    return boto3.client("s3", endpoint_url=proxy.url, config=config)


@pytest.fixture
def site(tmp_path: Path) -> tuple[LocalStorage, list[str]]:
    out = LocalStorage(tmp_path / "out")
    keys = [f"{w}/2026-03-10/{name}.html" for w in (1, 2) for name in ("today", "yesterday", "last_7_days")]
    keys += ["1/index.html", "2/index.html", "index.html"]
    for key in keys:
        out.write_bytes(key, f"<p>{key}</p>".encode() * 50)
    return out, keys


def published(client: Any) -> dict[str, bytes]:
    """Every published page as a browser sees it (the publisher's ledgers left out)."""
    keys = [o["Key"] for p in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
            for o in p.get("Contents", []) if "/_published/" not in o["Key"]]
    return {k: content_of(client, BUCKET, k) for k in keys}


def test_throttling_errors_and_resets_are_retried_to_the_clean_state(proxy: FaultProxy, site: Any,
                                                                    moto_server: str) -> None:
    out, keys = site
    direct = boto3.client("s3", endpoint_url=moto_server, config=client_config())
    direct.create_bucket(Bucket=BUCKET)
    proxy.add("PUT", "today.html", "503", times=2)
    proxy.add("PUT", "index.html", "reset", times=1)
    proxy.add("PUT", "yesterday.html", "500", times=1)
    proxy.add("GET", "_published/", "503", times=1)  # reading a ledger
    result = upload(client_via(proxy), S3Target(BUCKET, "site"), out, keys)
    assert (result["uploaded"], result["unchanged"]) == (len(keys), 0)
    assert {a for _, _, a in proxy.seen} >= {"503", "500", "reset", "pass"}
    assert published(direct) == {f"site/{k}": out.read_bytes(k) for k in keys}


def test_more_failures_than_the_retry_budget_fail_clearly_and_a_rerun_converges(proxy: FaultProxy, site: Any,
                                                                               moto_server: str) -> None:
    out, keys = site
    direct = boto3.client("s3", endpoint_url=moto_server, config=client_config())
    direct.create_bucket(Bucket=BUCKET)
    proxy.add("PUT", "2/2026-03-10/today.html", "503", times=6)  # the whole budget: total_max_attempts = 6
    with pytest.raises(ClientError, match="SlowDown"):
        upload(client_via(proxy), S3Target(BUCKET, "site"), out, keys)
    before = published(direct)
    assert not any(k.endswith("index.html") for k in before)  # indexes go last: none published yet
    assert 0 < len(before) < len(keys)
    again = upload(client_via(proxy), S3Target(BUCKET, "site"), out, keys)  # the Airflow retry
    # the retry sends exactly what the failed run did not publish, and leaves the rest alone
    assert (again["uploaded"], again["unchanged"]) == (len(keys) - len(before), len(before))
    assert published(direct) == {f"site/{k}": out.read_bytes(k) for k in keys}


@pytest.fixture
def to_mirror(tmp_path: Path, moto_server: str) -> tuple[LocalStorage, Any]:
    """The tiny landing's archive of 2026-03-29 (two workspaces, 14 snapshot objects each) and a client straight to
    an empty versioned bucket (no proxy), to see what the mirror left there."""
    warehouse, archive = LocalStorage(tmp_path / "wh"), LocalStorage(tmp_path / "archive")
    for d in landing_dates(LocalStorage(TINY / "landing")):
        run_etl(LocalStorage(TINY / "landing"), warehouse, d)
    write_archive(warehouse, archive, report_scope(warehouse, None, date(2026, 3, 29), None))
    direct = boto3.client("s3", endpoint_url=moto_server, config=client_config())
    direct.create_bucket(Bucket=BUCKET)
    direct.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    return archive, direct


def test_a_write_applied_but_unanswered_is_not_duplicated(proxy: FaultProxy,
                                                         to_mirror: tuple[LocalStorage, Any]) -> None:
    archive, direct = to_mirror
    proxy.add("PUT", "manifest.json", "apply_then_drop", times=2)  # the retry then meets our own object: 412
    remote = S3Storage(BUCKET, "archive", client_via(proxy))
    assert mirror(archive, remote, {1: date(2026, 3, 29), 2: date(2026, 3, 29)}) == 28
    assert [a for _, p, a in proxy.seen if "manifest.json" in p].count("apply_then_drop") == 2
    versions = direct.list_object_versions(Bucket=BUCKET).get("Versions", [])
    assert len(versions) == len({v["Key"] for v in versions}) == 28 + 2 * 2  # one version each (+ HEAD, index)
    assert verify(S3Storage(BUCKET, "archive", direct))[0] == []


def test_a_mirror_failing_mid_way_names_no_missing_object_and_its_re_run_completes_it(
        proxy: FaultProxy, to_mirror: tuple[LocalStorage, Any]) -> None:
    """Many writes in flight and one snapshot file failing past every retry: the mirror stops before any manifest
    (a reader of the remote copy finds files without manifests, never a manifest naming a missing file); the re-run
    writes what is missing, once each."""
    archive, direct = to_mirror
    proxy.add("PUT", "1/2026-03-29/rev-1/contacts_merged.parquet", "500", times=6)  # every attempt fails
    remote = S3Storage(BUCKET, "archive", client_via(proxy))
    days = {1: date(2026, 3, 29), 2: date(2026, 3, 29)}
    with pytest.raises(ClientError):
        mirror(archive, remote, days, concurrency=8)
    stored = {o["Key"] for p in direct.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
              for o in p.get("Contents", [])}
    assert stored and not [k for k in stored if k.endswith(("manifest.json", "manifest.sha256", "HEAD.json"))]
    assert "archive/1/2026-03-29/rev-1/contacts_merged.parquet" not in stored

    assert mirror(archive, remote, days, concurrency=8) == 28
    versions = direct.list_object_versions(Bucket=BUCKET).get("Versions", [])
    assert len(versions) == len({v["Key"] for v in versions}) == 28 + 2 * 2  # one version each (+ HEAD, index)
    assert verify(S3Storage(BUCKET, "archive", direct))[0] == []


def test_a_truncated_body_while_reading_landing_files_is_read_again(proxy: FaultProxy, tmp_path: Path,
                                                                    tiny_expected: dict[str, Any],
                                                                    moto_server: str) -> None:
    direct = boto3.client("s3", endpoint_url=moto_server, config=client_config())
    direct.create_bucket(Bucket=BUCKET)
    for path in sorted((TINY / "landing").rglob("*")):
        if path.is_file():
            direct.put_object(Bucket=BUCKET, Key=f"landing/{path.relative_to(TINY / 'landing').as_posix()}",
                              Body=path.read_bytes())
    proxy.add("GET", "2026-03-09/hour%3D17/part", "truncate", times=2)  # keys arrive URL-encoded
    proxy.add("GET", "workspaces.json", "reset", times=1)
    landing = S3Storage(BUCKET, "landing", client_via(proxy))
    summaries = [run_etl(landing, LocalStorage(tmp_path / "wh"), d) for d in landing_dates(landing)]
    assert [a for _, _, a in proxy.seen].count("truncate") == 2
    totals = {k: sum(s[k] for s in summaries) for k in tiny_expected["etl_totals_over_all_arrival_days"]}
    assert totals == tiny_expected["etl_totals_over_all_arrival_days"]


def test_a_body_that_never_arrives_whole_fails_loudly(proxy: FaultProxy, moto_server: str) -> None:
    direct = boto3.client("s3", endpoint_url=moto_server, config=client_config())
    direct.create_bucket(Bucket=BUCKET)
    direct.put_object(Bucket=BUCKET, Key="landing/workspaces.json", Body=b"[]" * 1000)
    proxy.add("GET", "workspaces.json", "truncate", times=10)
    with pytest.raises(StorageError, match=r"could not read .* completely"):
        S3Storage(BUCKET, "landing", client_via(proxy)).read_bytes("workspaces.json")


def test_the_command_line_tells_an_outage_from_a_wrong_argument(proxy: FaultProxy, moto_server: str, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """Exit 3 when the storage fails after the retries (try again later), naming the endpoint to check; 2 for a
    storage argument that can never work (fix it): ops and schedulers act differently on each."""
    direct = boto3.client("s3", endpoint_url=moto_server, config=client_config())
    direct.create_bucket(Bucket=BUCKET)
    direct.put_object(Bucket=BUCKET, Key="landing/workspaces.json", Body=b"[]" * 1000)
    proxy.add("GET", "workspaces.json", "truncate", times=10)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    etl = ["etl", "--warehouse", str(tmp_path / "wh"), "--ingest-date", "2026-03-10", "--landing"]
    assert main([*etl, f"s3://{BUCKET}/landing"]) == EXIT_STORAGE
    assert f"check the storage (AWS_ENDPOINT_URL: {proxy.url}) and run again" in caplog.text
    assert main([*etl, "s3:///landing"]) == EXIT_USAGE  # no bucket
    assert main([*etl, "ftp://host/landing"]) == EXIT_USAGE


def test_a_reply_slower_than_the_read_timeout_is_retried(proxy: FaultProxy, moto_server: str) -> None:
    direct = boto3.client("s3", endpoint_url=moto_server, config=client_config())
    direct.create_bucket(Bucket=BUCKET)
    direct.put_object(Bucket=BUCKET, Key="x/slow.json", Body=b"{}")
    proxy.add("GET", "slow.json", "delay", times=1, delay=2.5)
    storage = S3Storage(BUCKET, "x", client_via(proxy, read_timeout=1, connect_timeout=1))
    assert storage.read_bytes("slow.json") == b"{}"
    assert [a for _, p, a in proxy.seen if "slow.json" in p] == ["delay", "pass"]


def test_faults_on_get_and_on_multipart_parts_are_retried(proxy: FaultProxy, tmp_path: Path, moto_server: str
                                                          ) -> None:
    direct = boto3.client("s3", endpoint_url=moto_server, config=client_config())
    direct.create_bucket(Bucket=BUCKET)
    out = LocalStorage(tmp_path)
    big = random.Random(5).randbytes(9 * 1024 * 1024)  # incompressible: over the 8 MB multipart threshold, two parts
    out.write_bytes("1/2026-03-10/last_30_days.contacts_added.csv", big)
    proxy.add("PUT", "partNumber=2", "503", times=2)
    proxy.add("PUT", "partNumber=1", "reset", times=1)
    upload(client_via(proxy), S3Target(BUCKET, "site"), out, out.list())
    assert {a for m, p, a in proxy.seen if "partNumber" in p} == {"503", "reset", "pass"}
    proxy.add("GET", "last_30_days", "503", times=2)
    assert gzip.decompress(S3Storage(BUCKET, "site", client_via(proxy)).read_bytes(
        "1/2026-03-10/last_30_days.contacts_added.csv")) == big  # stored compressed (Content-Encoding: gzip)
    assert direct.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_publishing_keeps_many_requests_in_flight_and_every_dated_object_before_the_first_index(
        proxy: FaultProxy, tmp_path: Path, moto_server: str) -> None:
    """Through an S3 answering each PUT 50 ms late, a publish keeps up to `concurrency` uploads in flight (never
    more), and no index page starts before every dated page and download is stored: a reader of an index never
    follows a link to a page that is not there yet. A PUT that fails is retried in its own thread."""
    direct = boto3.client("s3", endpoint_url=moto_server, config=client_config())
    direct.create_bucket(Bucket=BUCKET)
    out = LocalStorage(tmp_path)
    dated = [f"{w}/2026-03-{d}/{name}" for w in range(1, 6) for d in (10, 11)
             for name in ("today.html", "yesterday.html", "today.contacts_added.csv", "today.contacts_merged.csv")]
    indexes = ["index.html", *(f"{w}/index.html" for w in range(1, 6)), "_runs/index.html", "_runs/runs.json"]
    for key in [*dated, *indexes]:
        out.write_bytes(key, key.encode() * 100)
    proxy.add("PUT", "yesterday", "503", times=3)
    proxy.add("PUT", "/", "delay", times=10**6, delay=0.05)
    client = client_via(proxy)
    lock, events, flying = threading.Lock(), [], [0, 0]  # (started or stored, key); [in flight, most at once]

    def started(params: dict[str, Any], **_: Any) -> None:
        with lock:
            events.append(("started", params["Key"]))
            flying[0] += 1
            flying[1] = max(flying)

    def stored(params: dict[str, Any], **_: Any) -> None:
        with lock:
            events.append(("stored", params["Key"]))
            flying[0] -= 1

    client.meta.events.register("provide-client-params.s3.PutObject", started)
    client.meta.events.register("after-call.s3.PutObject",
                                lambda context, **_: stored({"Key": context["key"]}))
    client.meta.events.register("before-parameter-build.s3.PutObject",
                                lambda params, context, **_: context.update(key=params["Key"]))
    summary = upload(client, S3Target(BUCKET, "site"), out, [*indexes, *dated], concurrency=8)
    assert (summary["uploaded"], summary["unchanged"]) == (len(dated) + len(indexes), 0)
    assert summary["requests"]["PutObject"] == len(dated) + len(indexes) + 3 + 4  # 3 retried; 4 ledgers (2 days)
    assert 4 <= flying[1] <= 8, flying
    first_index = min(i for i, (what, key) in enumerate(events)
                      if what == "started" and key.removeprefix("site/") in indexes)
    stored_before = {key.removeprefix("site/") for what, key in events[:first_index] if what == "stored"}
    assert set(dated) <= stored_before
    for key in [*dated, *indexes]:
        assert content_of(direct, BUCKET, f"site/{key}") == key.encode() * 100
