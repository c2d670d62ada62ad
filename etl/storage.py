"""Storage behind one small interface: a local folder or an ``s3://bucket/prefix``.

Keys are always relative, '/'-separated, and validated before they become a path or an object key,
so nothing is ever written outside the root. Writes are atomic: a reader sees the old object or the new
one, never half of one (local: write a temporary file and rename; S3: a PUT is atomic).
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import polars as pl

from etl.settings import DEFAULT_S3_SSE, S3Identity

log = logging.getLogger(__name__)


READ_ATTEMPTS = 4


class StorageError(Exception):
    """Storage could not be read or written; the message says what and where."""


def check_key(key: str) -> str:
    """Reject keys that could escape the root ('..', absolute, empty parts, encoded dots, NUL)."""
    parts = key.split("/")
    lowered = key.lower()
    if (
        not key
        or key.startswith("/")
        or "\\" in key
        or "\x00" in key
        or "%2e" in lowered
        or "%2f" in lowered
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise StorageError(f"refusing unsafe storage key {key!r}")
    return key


class Storage(Protocol):
    @property
    def uri(self) -> str: ...

    def read_bytes(self, key: str) -> bytes: ...
    def write_bytes(self, key: str, data: bytes | memoryview, content_type: str = "application/octet-stream"
                    ) -> None: ...
    def write_new(self, key: str, data: bytes, content_type: str = "application/octet-stream",
                  retain_until: datetime | None = None, lock_mode: str | None = None) -> None: ...
    def exists(self, key: str) -> bool: ...
    def size(self, key: str) -> int:
        """The object's size in bytes, without reading it."""
        ...

    def list(self, prefix: str = "", everything: bool = False) -> list[str]:
        """Keys under `prefix`, sorted. Temporary names (`is_temporary`) and, locally, symbolic links are left out
        unless `everything` (then both storages list the same keys for the same content)."""
        ...
    def delete(self, key: str) -> None: ...


class StorageUnavailable(StorageError):
    """The storage did not answer in full after the retries (an outage, not a wrong argument)."""


class UnsafeLink(StorageError):
    """A key whose path goes through a symbolic link: never followed (it could lead out of the root)."""


TEMPORARY_PREFIX = ".tmp-"


def is_temporary(key: str) -> bool:
    """A writer's temporary name (ours while a local write is in flight, or another tool's)."""
    return key.rsplit("/", 1)[-1].startswith(TEMPORARY_PREFIX)


class AlreadyExists(StorageError):
    """A create-only write met an object with different bytes: an immutable snapshot would have been replaced."""


def _same_bytes_or_raise(where: str, existing: bytes, data: bytes) -> None:
    if hashlib.sha256(existing).digest() != hashlib.sha256(data).digest():
        raise AlreadyExists(f"{where} already exists with other content; immutable objects are never replaced")


@dataclass(frozen=True)
class LocalStorage:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))  # accept a str as well

    @property
    def uri(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        """The key's path, refusing any symbolic link between the root and it (the root itself may be one): a link
        could send a read or a write outside the root."""
        path = self.root / check_key(key)
        step = self.root
        for part in key.split("/"):
            step = step / part
            if step.is_symlink():
                raise UnsafeLink(f"refusing to follow the symbolic link {step} (inside {self.root}): links are "
                                 "never followed; replace it with the file or folder itself")
        return path

    def read_bytes(self, key: str) -> bytes:
        path = self._path(key)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))  # a link made since the check: refused too
        with os.fdopen(fd, "rb") as handle:
            return handle.read()

    def write_bytes(self, key: str, data: bytes | memoryview, content_type: str = "application/octet-stream"
                    ) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.name)
        try:
            os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide published pages from a web server
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def write_new(self, key: str, data: bytes, content_type: str = "application/octet-stream",
                  retain_until: datetime | None = None, lock_mode: str | None = None) -> None:
        """Create-only: a hard link publishes the complete file atomically and fails if the name exists.
        Re-writing identical bytes (a re-run) succeeds; other bytes raise AlreadyExists."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.name)
        try:
            os.fchmod(fd, 0o444)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                _same_bytes_or_raise(str(path), path.read_bytes(), data)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def list(self, prefix: str = "", everything: bool = False) -> list[str]:
        prefix = prefix.strip("/")
        base = self.root / prefix if prefix else self.root
        linked = [p for p in [base, *base.parents] if self.root in p.parents and p.is_symlink()]
        if linked:  # the prefix itself goes through a link: listed as that one entry, never entered
            return [linked[-1].relative_to(self.root).as_posix()] if everything else []
        keys = []
        for folder, dirs, files in os.walk(base):  # links to folders are listed, not entered
            for name in [*files, *(d for d in dirs if os.path.islink(os.path.join(folder, d)))]:
                path = os.path.join(folder, name)
                if everything or not (name.startswith(TEMPORARY_PREFIX) or os.path.islink(path)):
                    keys.append(Path(path).relative_to(self.root).as_posix())
        return sorted(keys)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


@dataclass(frozen=True)
class S3Storage:
    bucket: str
    prefix: str
    client: Any
    sse: str = DEFAULT_S3_SSE  # how every object written is encrypted (`encryption_args`)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def read_bytes(self, key: str) -> bytes:
        """GET the whole object. botocore retries failed requests but not a body cut short mid-stream, so a
        short or broken body is fetched again (a few times) rather than parsed half-read."""
        from botocore.exceptions import (
            ConnectionClosedError,
            IncompleteReadError,
            ReadTimeoutError,
            ResponseStreamingError,
        )

        for attempt in range(1, READ_ATTEMPTS + 1):
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
                data: bytes = response["Body"].read()
            except self.client.exceptions.NoSuchKey:
                raise FileNotFoundError(f"{self.uri}/{key}") from None
            except (IncompleteReadError, ResponseStreamingError, ReadTimeoutError, ConnectionClosedError) as err:
                log.warning("reading %s/%s broke off (%s); attempt %d of %d", self.uri, key, err, attempt,
                            READ_ATTEMPTS)
                continue
            if len(data) == response.get("ContentLength", len(data)):
                return data
            log.warning("reading %s/%s gave %d of %s bytes; attempt %d of %d", self.uri, key, len(data),
                        response.get("ContentLength"), attempt, READ_ATTEMPTS)
        raise StorageUnavailable(f"could not read {self.uri}/{key} completely after {READ_ATTEMPTS} attempts")

    def write_bytes(self, key: str, data: bytes | memoryview, content_type: str = "application/octet-stream"
                    ) -> None:
        self.client.put_object(
            Bucket=self.bucket,
            Key=self._key(key),
            Body=bytes(data),  # a memoryview (a slice of a larger CSV) as bytes; bytes themselves are not copied
            ContentType=content_type,
            **encryption_args(self.sse),
        )

    def write_new(self, key: str, data: bytes, content_type: str = "application/octet-stream",
                  retain_until: datetime | None = None, lock_mode: str | None = None) -> None:
        """Create-only PUT (If-None-Match: *). Some stores (Ceph RGW 16.2 with Object Lock) accept such a put as a
        new version instead of answering 412, so look first; a 412 or an existing object with the same bytes is
        our own earlier write (a re-run, or a reply lost in transit) and counts as success."""
        full = self._key(key)
        if self.exists(key):
            _same_bytes_or_raise(f"{self.uri}/{key}", self.read_bytes(key), data)
            return
        # Content-MD5: the store rejects a body damaged in transit, and Object Lock puts require it.
        md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
        extra: dict[str, Any] = {"ContentType": content_type, "IfNoneMatch": "*", "ContentMD5": md5,
                                 **encryption_args(self.sse)}
        if retain_until is not None and lock_mode:
            extra.update(ObjectLockMode=lock_mode, ObjectLockRetainUntilDate=retain_until)
        try:
            self.client.put_object(Bucket=self.bucket, Key=full, Body=data, **extra)
        except self.client.exceptions.ClientError as err:
            if err.response.get("Error", {}).get("Code") not in ("PreconditionFailed", "412"):
                raise
            _same_bytes_or_raise(f"{self.uri}/{key}", self.read_bytes(key), data)

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except self.client.exceptions.ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def size(self, key: str) -> int:
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"])
        except self.client.exceptions.ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise FileNotFoundError(f"{self.uri}/{key}") from None
            raise

    def versions(self, prefix: str = "") -> dict[str, list[str]]:
        """key -> version ids, oldest first, for keys with more than one version (empty when unversioned)."""
        full = self._key(prefix) if prefix else (f"{self.prefix}/" if self.prefix else "")
        skip = len(self.prefix) + 1 if self.prefix else 0
        found: dict[str, list[tuple[Any, str]]] = {}
        for page in self.client.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=full):
            for item in page.get("Versions", []):
                found.setdefault(item["Key"][skip:], []).append((item["LastModified"], item["VersionId"]))
        return {k: [v for _, v in sorted(vs)] for k, vs in found.items() if len(vs) > 1}

    def read_version(self, key: str, version_id: str) -> bytes:
        body = self.client.get_object(Bucket=self.bucket, Key=self._key(key), VersionId=version_id)["Body"]
        data: bytes = body.read()
        return data

    def _iter_keys(self, prefix: str) -> Iterator[str]:
        full = self._key(prefix) if prefix else (f"{self.prefix}/" if self.prefix else "")
        skip = len(self.prefix) + 1 if self.prefix else 0
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            for item in page.get("Contents", []):
                yield item["Key"][skip:]

    def list(self, prefix: str = "", everything: bool = False) -> list[str]:
        return sorted(k for k in self._iter_keys(prefix.rstrip("/")) if everything or not is_temporary(k))

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))


def encryption_args(spec: str) -> dict[str, str]:
    """The PUT arguments of a server-side encryption setting (`Settings.s3_sse`, CONTACTS_REPORT_S3_SSE):
    "AES256" (SSE-S3, the default), "aws:kms" or "aws:kms:KEY-ID" (SSE-KMS), or "none" (the bucket's default
    encryption applies)."""
    if spec.lower() in ("", "none"):
        return {}
    if spec.startswith("aws:kms"):
        key = spec[len("aws:kms"):].lstrip(":")
        return {"ServerSideEncryption": "aws:kms", **({"SSEKMSKeyId": key} if key else {})}
    return {"ServerSideEncryption": spec}


def client_config() -> Any:
    """botocore settings for every S3 client: standard-mode retries with a deliberate budget (6 attempts in all),
    bounded timeouts, SigV4 (presigned links then carry X-Amz-Expires, at most 7 days), and connections enough for
    a concurrent publish (botocore keeps 10)."""
    from botocore.config import Config

    return Config(retries={"mode": "standard", "total_max_attempts": 6}, connect_timeout=10, read_timeout=60,
                  signature_version="s3v4", max_pool_connections=64)


def s3_client(identity: S3Identity | None = None) -> Any:
    """A boto3 S3 client signed as `identity` says, the standard credential chain (AWS_ENDPOINT_URL included)
    supplying whatever it leaves out."""
    import boto3

    return boto3.client("s3", config=client_config(), **(identity.client_args() if identity else {}))


def open_storage(uri: str, client: Any = None, sse: str = DEFAULT_S3_SSE, identity: S3Identity | None = None
                 ) -> Storage:
    """`s3://bucket/prefix` (objects written encrypted as `sse` says, requests signed as `identity` unless a
    `client` is given) or a local folder path."""
    if uri.startswith("s3://"):
        bucket, _, prefix = uri[len("s3://"):].partition("/")
        if not bucket:
            raise StorageError(f"no bucket in {uri!r}; expected s3://bucket/prefix")
        return S3Storage(bucket=bucket, prefix=prefix.strip("/"), client=client or s3_client(identity), sse=sse)
    if "://" in uri:
        raise StorageError(f"unsupported storage URI {uri!r}; use a local path or s3://bucket/prefix")
    return LocalStorage(Path(uri))


def read_parquet(storage: Storage, key: str, columns: list[str] | None = None) -> pl.DataFrame:
    return pl.read_parquet(io.BytesIO(storage.read_bytes(key)), columns=columns)


def write_parquet(storage: Storage, key: str, frame: pl.DataFrame) -> None:
    buffer = io.BytesIO()
    frame.write_parquet(buffer, compression="zstd", compression_level=1, statistics=True)  # level 1: ~25 % faster
    # than the default for ~10 % more bytes
    storage.write_bytes(key, buffer.getvalue(), content_type="application/vnd.apache.parquet")


class BackgroundWrites:
    """`write_bytes` handed to a few threads, so that the caller goes on with its next file while one is written,
    synced and renamed (local: the `fsync` of each small file was ~10 % of a small workspace's render time) or
    uploaded. At most `max_pending` bytes wait at once. Use it as a context manager: leaving waits for every write,
    and the first failure is raised there, or by the next `write_bytes` call once it has happened."""

    def __init__(self, storage: Storage, threads: int = 2, max_pending: int = 64 * 1024 * 1024) -> None:
        self.storage, self.max_pending = storage, max_pending
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="write")
        self._room = threading.Condition()
        self._pending = 0
        self._failure: BaseException | None = None

    def __enter__(self) -> BackgroundWrites:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._pool.shutdown(wait=True)
        if exc_type is None:  # else the caller's own exception is the one to see
            self._raise_failure()

    def write_bytes(self, key: str, data: bytes | memoryview, content_type: str = "application/octet-stream"
                    ) -> None:
        self._raise_failure()
        with self._room:  # a file larger than the limit still goes, alone
            self._room.wait_for(lambda: self._pending == 0 or self._pending + len(data) <= self.max_pending)
            self._pending += len(data)
        self._pool.submit(self._write, key, data, content_type)

    def _write(self, key: str, data: bytes | memoryview, content_type: str) -> None:
        try:
            self.storage.write_bytes(key, data, content_type)
        except BaseException as failure:
            self._failure = self._failure or failure
        finally:
            with self._room:
                self._pending -= len(data)
                self._room.notify_all()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure
