"""Publishing the rendered output to S3 with boto3: private, encrypted, typed, text compressed, many requests at
once, dated pages before indexes, and nothing sent again that the bucket already holds (the ledger)."""

from __future__ import annotations

import hashlib
import json
import logging
import mimetypes
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, TypeVar

from isal import igzip

from etl.progress import Progress
from etl.settings import DEFAULT_PUBLISH_CONCURRENCY, DEFAULT_S3_SSE
from etl.storage import Storage, check_key, encryption_args

log = logging.getLogger(__name__)
T = TypeVar("T")

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


def compressed(key: str) -> bool:
    """Text objects are stored gzip-compressed (pages ~7x, CSVs ~5.6x smaller) and served with
    `Content-Encoding: gzip`, which browsers and HTTP clients undo; anything else is stored as it is."""
    kind = content_type(key)
    return kind.startswith("text/") or kind.startswith("application/json")


GZIP_LEVEL = 1  # ISA-L's level 1: 4.8x smaller at ~540 MB/s a core, against zlib's 4.5x at 128 MB/s (level 1) and
# 5.5x at 45 MB/s (level 6): docs/performance.md, "Publish"
# How the stored bytes are made from the local file: part of a ledger entry, so that a change of encoding uploads
# everything once again.
ENCODING = f"gzip-isal{GZIP_LEVEL}"


def stored_bytes(key: str, data: bytes) -> bytes:
    """The object's body: deterministic gzip for text (no time or name in its header: equal pages give equal
    objects), the bytes themselves otherwise."""
    return igzip.compress(data, GZIP_LEVEL, mtime=0) if compressed(key) else data


# ---------------------------------------------------------------- the ledger: what the bucket holds, per report day

LEDGER = "_published"  # under the target prefix: one JSON object per report day, one for every other object
_DATED = re.compile(r"(?:^|/)\d+/(\d{4}-\d{2}-\d{2})/[^/]+$", re.ASCII)


def ledger_name(key: str) -> str:
    """The ledger that records `key`: its report day's (`day=YYYY-MM-DD`) for a dated page or download, the ops
    page's (`runs`: it changes every run) or the indexes'. A night touches two or three report days (time zones),
    so a publish reads and writes a few ledgers, whatever the length of the history."""
    m = _DATED.search(key)
    return f"day={m.group(1)}" if m else "runs" if key.startswith("_runs/") else "indexes"


def ledger_entry(key: str, data: bytes) -> str:
    """What a ledger records of an object: how it was stored and the SHA-256 of the local file."""
    return f"{ENCODING if compressed(key) else 'identity'}:{hashlib.sha256(data).hexdigest()}"


def read_ledgers(client: Any, target: S3Target, names: set[str]) -> dict[str, dict[str, str]]:
    ledgers = {}
    for name in sorted(names):
        try:
            body = client.get_object(Bucket=target.bucket, Key=target.key(f"{LEDGER}/{name}.json"))["Body"].read()
        except client.exceptions.NoSuchKey:
            body = b"{}"
        ledgers[name] = json.loads(body)
    return ledgers


def write_ledger(client: Any, target: S3Target, name: str, entries: dict[str, str], sse: str) -> None:
    client.put_object(Bucket=target.bucket, Key=target.key(f"{LEDGER}/{name}.json"),
                      Body=json.dumps(dict(sorted(entries.items())), indent=0).encode(),
                      ContentType="application/json; charset=utf-8", **encryption_args(sse))


# ---------------------------------------------------------------- upload

@dataclass
class Published:
    """What a publish did: objects uploaded and unchanged, bytes stored, S3 requests by operation (retries
    included), seconds."""

    uploaded: int = 0
    unchanged: int = 0
    bytes: int = 0
    requests: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {"uploaded": self.uploaded, "unchanged": self.unchanged, "bytes": self.bytes,
                "requests": dict(sorted(self.requests.items())), "seconds": round(self.seconds, 3)}


def upload(client: Any, target: S3Target, source: Storage, keys: Iterable[str], sse: str = DEFAULT_S3_SSE,
           concurrency: int = DEFAULT_PUBLISH_CONCURRENCY, verify: bool = False) -> dict[str, Any]:
    """Upload `keys` from `source`, `concurrency` requests at a time, in a safe order: every dated page and download
    before the first index page, so a reader never follows an index link to a missing page and a failed run leaves
    yesterday's indexes valid. An object the ledger records with the same bytes is skipped, so a re-run uploads
    nothing new; `verify` also lists the prefix and uploads what is missing from the bucket whatever the ledger says
    (`publish --all`: a repair, proportional to the bucket). Returns `Published.summary()`."""
    started, stats = time.monotonic(), Published()
    ordered = sorted(set(keys), key=lambda k: (is_index(k), k.count("/") == 0, k))
    count = _count_requests(stats.requests)
    client.meta.events.register("before-send.s3", count)
    try:
        abort_orphan_uploads(client, target)
        ledgers = read_ledgers(client, target, {ledger_name(k) for k in ordered})
        present = _listed(client, target) if verify else None
        with Progress(len(ordered), "publishing", " files") as bar:
            for phase in ([k for k in ordered if not is_index(k)], [k for k in ordered if is_index(k)]):
                _upload_phase(client, target, source, phase, ledgers, present, sse, concurrency, stats, bar)
    finally:
        client.meta.events.unregister("before-send.s3", count)
    stats.seconds = time.monotonic() - started
    log.info("published %d objects (%d bytes) to s3://%s/%s, %d unchanged, in %.1f s", stats.uploaded, stats.bytes,
             target.bucket, target.prefix, stats.unchanged, stats.seconds)
    return stats.summary()


def _upload_phase(client: Any, target: S3Target, source: Storage, keys: list[str],
                  ledgers: dict[str, dict[str, str]], present: set[str] | None, sse: str, concurrency: int,
                  stats: Published, bar: Progress) -> None:
    """Upload `keys` with at most `concurrency` files read and in flight at once (bounded memory), then record them
    in their ledgers — also when some failed: what did go up is not sent again by the re-run."""
    done: dict[str, str] = {}
    lock = threading.Lock()

    def one(key: str) -> None:
        data = source.read_bytes(key)
        entry = ledger_entry(key, data)
        if ledgers[ledger_name(key)].get(key) == entry and (present is None or target.key(key) in present):
            with lock:
                stats.unchanged += 1
            return
        body = stored_bytes(key, data)
        del data
        put_object(client, target.bucket, target.key(key), body, key, sse)
        with lock:
            stats.uploaded += 1
            stats.bytes += len(body)
            done[key] = entry

    try:
        with ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="publish") as pool:
            for result in bounded(pool, one, keys, max(1, concurrency)):
                result.result()
                bar.advance()
    finally:
        for name in sorted({ledger_name(k) for k in done}):
            ledgers[name].update({k: v for k, v in done.items() if ledger_name(k) == name})
            write_ledger(client, target, name, ledgers[name], sse)


def bounded(pool: ThreadPoolExecutor, work: Callable[[T], None], keys: Iterable[T], limit: int
            ) -> Iterator[Future[None]]:
    """Futures of `work` over `keys`, in completion order, never more than `limit` submitted and unfinished."""
    pending: set[Future[None]] = set()
    for key in keys:
        if len(pending) >= limit:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            yield from finished
        pending.add(pool.submit(work, key))
    while pending:
        finished, pending = wait(pending, return_when=FIRST_COMPLETED)
        yield from finished


def _count_requests(counts: Counter[str]) -> Callable[..., None]:
    lock = threading.Lock()

    def count(event_name: str, **_: Any) -> None:
        with lock:
            counts[event_name.rsplit(".", 1)[-1]] += 1

    return count


def _listed(client: Any, target: S3Target) -> set[str]:
    prefix = f"{target.prefix}/" if target.prefix else ""
    return {item["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=target.bucket,
                                                                                     Prefix=prefix)
            for item in page.get("Contents", [])}


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


def put_object(client: Any, bucket: str, key: str, data: bytes, relative: str, sse: str) -> None:
    extra = {
        "ContentType": content_type(relative),
        "CacheControl": INDEX_CACHE if is_index(relative) else DATED_CACHE,
        **({"ContentEncoding": "gzip"} if compressed(relative) else {}),
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
