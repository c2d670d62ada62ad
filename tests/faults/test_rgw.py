"""The faithful S3 tier: Ceph's RADOS Gateway (a production S3 implementation) on loopback. It checks signatures,
presigned-link expiry, conditional writes, Object Lock and Content-MD5 — which moto does not."""

from __future__ import annotations

import base64
import gzip
import hashlib
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from etl.archive import Lock, mirror, verify, write_archive
from etl.ingest import landing_dates
from etl.pipeline import run_etl
from etl.publish import S3Target, link, upload
from etl.storage import AlreadyExists, LocalStorage, S3Storage, client_config
from etl.warehouse import report_scope
from tests.conftest import TINY
from tests.faults.proxy import FaultProxy

pytestmark = pytest.mark.rgw
KMS = "aws:kms:testkey-1"  # the encryption setting: Ceph 16.2 has SSE-KMS, not SSE-S3


@pytest.fixture
def client(rgw: tuple[str, str, str]) -> Iterator[Any]:
    endpoint, key, secret = rgw
    yield boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key, aws_secret_access_key=secret,
                       region_name="us-east-1", config=client_config())


def fresh_bucket(client: Any, name: str, locked: bool = False) -> str:
    bucket = f"{name}-{time.monotonic_ns() % 10**9}"
    client.create_bucket(Bucket=bucket, **({"ObjectLockEnabledForBucket": True} if locked else {}))
    return bucket


def test_published_pages_are_encrypted_typed_and_presigned_links_expire(client: Any, tmp_path: Path) -> None:
    out = LocalStorage(tmp_path)
    out.write_bytes("1/2026-03-10/today.html", b"<p>today</p>")
    out.write_bytes("index.html", b"<p>index</p>")
    bucket = fresh_bucket(client, "site")
    target = S3Target(bucket, "reports")
    assert upload(client, target, out, out.list(), KMS)["uploaded"] == 2
    head = client.head_object(Bucket=bucket, Key="reports/1/2026-03-10/today.html")
    assert head["ServerSideEncryption"] == "aws:kms" and head["ContentType"] == "text/html; charset=utf-8"
    grants = client.get_object_acl(Bucket=bucket, Key="reports/index.html")["Grants"]
    assert all("URI" not in g["Grantee"] for g in grants)  # private: no AllUsers / AuthenticatedUsers
    url = link(client, target, "1/2026-03-10/today.html", None, expires=1)
    answer = urllib.request.urlopen(url)  # RGW checked the SigV4 signature
    assert answer.headers["Content-Encoding"] == "gzip" and gzip.decompress(answer.read()) == b"<p>today</p>"
    tampered = url.replace("today.html", "index.html")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(tampered)
    assert refused.value.code == 403
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # wait for the 1-second link to lapse (the behaviour under test)
        try:
            urllib.request.urlopen(url)
        except urllib.error.HTTPError as expired:
            assert expired.code == 403
            break
        time.sleep(0.5)
    else:
        raise AssertionError("an expired presigned link still downloaded the page")


def test_create_only_writes_on_a_plain_bucket(client: Any) -> None:
    bucket = fresh_bucket(client, "plain")
    remote = S3Storage(bucket, "archive", client, KMS)
    remote.write_new("1/a.csv", b"one")
    remote.write_new("1/a.csv", b"one")  # a re-run: our own object, same bytes
    with pytest.raises(AlreadyExists):
        remote.write_new("1/a.csv", b"two")
    with pytest.raises(ClientError) as refused:  # the store itself refuses a second conditional put
        client.put_object(Bucket=bucket, Key="archive/1/a.csv", Body=b"two", IfNoneMatch="*")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert remote.read_bytes("1/a.csv") == b"one"


def test_object_lock_bucket_keeps_the_snapshot_and_verify_reads_the_original(client: Any, tmp_path: Path) -> None:
    warehouse, archive = LocalStorage(tmp_path / "wh"), LocalStorage(tmp_path / "archive")
    for d in landing_dates(LocalStorage(TINY / "landing")):
        run_etl(LocalStorage(TINY / "landing"), warehouse, d)
    write_archive(warehouse, archive, report_scope(warehouse, None, date(2026, 3, 29), None))
    bucket = fresh_bucket(client, "audit", locked=True)
    remote = S3Storage(bucket, "archive", client, KMS)
    lock = Lock("COMPLIANCE", 1)
    assert mirror(archive, remote, {1: date(2026, 3, 29), 2: date(2026, 3, 29)}, lock) == 28
    key = "archive/1/2026-03-29/rev-1/contacts_added.csv"
    head = client.head_object(Bucket=bucket, Key=key)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    # A re-run finds the night's objects (a look before each write) and writes no second version of any
    assert mirror(archive, remote, {1: date(2026, 3, 29), 2: date(2026, 3, 29)}, lock) == 28
    versions = [v["Key"] for v in client.list_object_versions(Bucket=bucket, Prefix="archive/")["Versions"]
                if "/rev-" in v["Key"]]
    assert len(versions) == len(set(versions)) == 28  # (HEAD and the index pages are rewritten: new versions)
    # RGW 16.2 accepts a conditional put on an Object Lock bucket as a new version: the writer looks first.
    with pytest.raises(AlreadyExists):
        remote.write_new("1/2026-03-29/rev-1/contacts_added.csv", b"forged")
    client.put_object(Bucket=bucket, Key=key, Body=b"forged", IfNoneMatch="*")  # what a careless writer gets
    found = [f"{p.where}: {p.what}" for p in verify(remote)[0]]
    assert found == ["1/2026-03-29/rev-1/contacts_added.csv: 2 versions: the object was written again after its "
                     "snapshot; checked the original version"]
    original = client.list_object_versions(Bucket=bucket, Prefix=key)["Versions"]
    oldest = min(original, key=lambda v: v["LastModified"])
    with pytest.raises(ClientError):  # COMPLIANCE: not even the owner may delete the locked version
        client.delete_object(Bucket=bucket, Key=key, VersionId=oldest["VersionId"])


def test_a_body_damaged_in_transit_is_rejected_not_stored(client: Any, rgw: tuple[str, str, str]) -> None:
    endpoint, key, secret = rgw
    bucket = fresh_bucket(client, "md5")
    proxy = FaultProxy(endpoint).start()
    try:
        proxy.add("PUT", "damaged.csv", "corrupt", times=10)
        via = boto3.client("s3", endpoint_url=proxy.url, aws_access_key_id=key, aws_secret_access_key=secret,
                           region_name="us-east-1", config=client_config())
        with pytest.raises(ClientError) as refused:
            S3Storage(bucket, "archive", via, KMS).write_new("damaged.csv", b"contact_id,name\r\n1,Ana\r\n")
        assert refused.value.response["Error"]["Code"] in ("BadDigest", "XAmzContentSHA256Mismatch")
    finally:
        proxy.stop()
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    digest = base64.b64encode(hashlib.md5(b"other", usedforsecurity=False).digest()).decode()
    with pytest.raises(ClientError, match="BadDigest"):
        client.put_object(Bucket=bucket, Key="direct.csv", Body=b"abc", ContentMD5=digest)
