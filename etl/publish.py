"""Publishing the rendered output to S3 with boto3: private, encrypted, typed, dated pages before indexes."""

from __future__ import annotations

import hashlib
import logging
import mimetypes
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from etl.progress import Progress
from etl.settings import DEFAULT_S3_SSE
from etl.storage import Storage, check_key, encryption_args

log = logging.getLogger(__name__)

INDEX_CACHE = "public, max-age=300, must-revalidate"  # index pages change every night
DATED_CACHE = "public, max-age=86400"  # a dated page changes only when late events re-render its day
MULTIPART_THRESHOLD = 8 * 1024 * 1024


@dataclass(frozen=True)
class S3Target:
    bucket: str
    prefix: str

    @classmethod
    def parse(cls, uri: str) -> S3Target:
        if not uri.startswith("s3://") or not uri[5:].split("/", 1)[0]:
            raise ValueError(f"CONTACTS_REPORT_S3_URI must look like s3://bucket/prefix, not {uri!r}")
        bucket, _, prefix = uri[5:].partition("/")
        return cls(bucket, prefix.strip("/"))

    def key(self, relative: str) -> str:
        check_key(relative)
        return f"{self.prefix}/{relative}" if self.prefix else relative


CONTENT_TYPES: dict[str, str] = {
    ".html": "text/html; charset=utf-8",
    ".csv": "text/csv; charset=utf-8",
    ".json": "application/json; charset=utf-8",
    ".sha256": "text/plain; charset=utf-8",
    ".parquet": "application/vnd.apache.parquet",
}


def content_type(key: str) -> str:
    for suffix, value in CONTENT_TYPES.items():
        if key.endswith(suffix):
            return value
    return mimetypes.guess_type(key)[0] or "application/octet-stream"


def is_index(key: str) -> bool:
    return key.endswith("index.html") or key.endswith("index.json") or key.startswith("_runs/")


def upload(client: Any, target: S3Target, source: Storage, keys: Iterable[str], sse: str = DEFAULT_S3_SSE
           ) -> dict[str, int]:
    """Upload `keys` from `source` in a safe order: dated pages and downloads first, index pages last, so a reader
    never follows an index link to a missing page and a failed run leaves yesterday's indexes valid.
    Objects already present with the same bytes are skipped, so a re-run uploads nothing new."""
    ordered = sorted(set(keys), key=lambda k: (is_index(k), k.count("/") == 0, k))
    abort_orphan_uploads(client, target)
    existing = _existing_etags(client, target)
    uploaded = skipped = 0
    with Progress(len(ordered), "publishing", " files") as bar:
        for key in ordered:
            data = source.read_bytes(key)
            remote = target.key(key)
            if existing.get(remote) == hashlib.md5(data, usedforsecurity=False).hexdigest():
                skipped += 1
            else:
                _put(client, target.bucket, remote, data, key, sse)
                uploaded += 1
            bar.advance()
    log.info("published %d objects to s3://%s/%s (%d unchanged)", uploaded, target.bucket, target.prefix, skipped)
    return {"uploaded": uploaded, "unchanged": skipped}


def abort_orphan_uploads(client: Any, target: S3Target) -> int:
    """A worker killed mid-multipart leaves parts that cost money and are never visible; this run (the only
    publisher of the prefix: the DAG allows one active run) aborts them before uploading again."""
    prefix = f"{target.prefix}/" if target.prefix else ""
    aborted = 0
    for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=target.bucket, Prefix=prefix):
        for upload_ in page.get("Uploads", []):
            client.abort_multipart_upload(Bucket=target.bucket, Key=upload_["Key"], UploadId=upload_["UploadId"])
            aborted += 1
    if aborted:
        log.warning("aborted %d unfinished multipart uploads under s3://%s/%s", aborted, target.bucket, prefix)
    return aborted


def _existing_etags(client: Any, target: S3Target) -> dict[str, str]:
    prefix = f"{target.prefix}/" if target.prefix else ""
    etags: dict[str, str] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=target.bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            etags[item["Key"]] = item["ETag"].strip('"')
    return etags


def _put(client: Any, bucket: str, key: str, data: bytes, relative: str, sse: str) -> None:
    extra = {
        "ContentType": content_type(relative),
        "CacheControl": INDEX_CACHE if is_index(relative) else DATED_CACHE,
        **encryption_args(sse),
    }
    if len(data) >= MULTIPART_THRESHOLD:
        import io

        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_THRESHOLD)
        client.upload_fileobj(io.BytesIO(data), bucket, key, ExtraArgs=extra, Config=config)
    else:
        client.put_object(Bucket=bucket, Key=key, Body=data, **extra)


def link(client: Any, target: S3Target, relative: str, base_url: str | None, expires: int) -> str:
    """A public link under the CDN base URL, or a presigned GET valid for `expires` seconds (at most 7 days)."""
    if base_url:
        return f"{base_url.rstrip('/')}/{relative}"
    url: str = client.generate_presigned_url("get_object", Params={"Bucket": target.bucket,
                                                                   "Key": target.key(relative)},
                                             ExpiresIn=min(expires, 7 * 24 * 3600))
    return url
