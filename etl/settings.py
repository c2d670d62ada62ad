"""Typed, frozen settings, built once from the environment (or arguments) and passed down: the only reader of
`os.environ` (boto3 reads its own credential chain itself)."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from etl.errors import InputError

# The contract's defaults (docs/contract.md; settings can change both): a line's size in bytes without its newline,
# and how far past the end of its arrival day an event may be stamped (producers' clocks drift). Here, not in
# etl.validate, so that reading the settings imports no Polars (the DAG reads them when it is parsed).
MAX_LINE_BYTES = 1_000_000
FUTURE_TOLERANCE = timedelta(hours=1)

DEFAULT_DATA = Path("data")
# Server-side encryption of every S3 object written: "AES256" (SSE-S3), "aws:kms" or "aws:kms:KEY-ID" (SSE-KMS; Ceph
# RGW 16.2 supports only this), or "none" (the bucket's default encryption applies). `etl.storage.encryption_args`.
DEFAULT_S3_SSE = "AES256"
DEFAULT_LATE_PAGES_DAYS = 1  # yesterday's pages, the ones last night's e-mail links to
DEFAULT_PUBLISH_CONCURRENCY = 16  # S3 requests in flight while publishing: docs/performance.md, "Publish"


def parse_duration(name: str, text: str | None) -> timedelta | None:
    """A duration setting: `90s`, `45m`, `6h` or `1d`; unset or empty: None."""
    if not text:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", text)
    if m is None:
        raise InputError(f"{name}={text!r} is not a duration; write one such as 90s, 45m, 6h or 1d")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[m.group(2)]
    return timedelta(**{unit: int(m.group(1))})


def worker_hostname() -> str:
    """Airflow's `[core] hostname_callable` for several workers on one machine (`make demo-cluster`): the name in
    CONTACTS_REPORT_WORKER_NAME, the machine's otherwise."""
    return os.environ.get("CONTACTS_REPORT_WORKER_NAME") or socket.getfqdn()


@dataclass(frozen=True)
class S3Identity:
    """Who every S3 request of a run is signed as, and where it goes: given explicitly (the DAG fills it from the
    Airflow connection `aws_default`), or all None for boto3's standard chain (environment, profile, instance role;
    `AWS_ENDPOINT_URL`). One value for every storage, upload and link of a run, handed to worker processes too."""

    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    region: str | None = None
    endpoint_url: str | None = None

    def client_args(self) -> dict[str, str]:
        """boto3.client keyword arguments: only those given, so that the standard chain supplies the others."""
        given = {"aws_access_key_id": self.access_key_id, "aws_secret_access_key": self.secret_access_key,
                 "aws_session_token": self.session_token, "region_name": self.region,
                 "endpoint_url": self.endpoint_url}
        return {k: v for k, v in given.items() if v}


@dataclass(frozen=True)
class ReadLimits:
    """Bounds on one landing file, so that no file can take the night's time or memory (docs/contract.md)."""

    max_file_lines: int = 10_000_000
    max_file_bytes: int = 1024**3  # after decompression
    max_expansion_ratio: int = 100  # decompressed / compressed bytes of a gzip file ...
    expansion_floor: int = 64 * 1024  # ... though a small file may always expand to this much


DEFAULT_READ_LIMITS = ReadLimits()


@dataclass(frozen=True)
class Thresholds:
    """The data-quality gate (`etl.quality`): the nightly run fails loudly past any of these."""

    max_quarantine_ratio: float = 0.05
    max_schema_drift_ratio: float = 0.01
    min_volume_ratio: float = 0.2  # of a workspace's median over the baseline nights ...
    volume_floor: int = 50  # ... for workspaces whose median is at least this many events
    max_damaged_files: int = 0  # landing files not read whole (damaged gzip, past a bound, a link)
    baseline_nights: int = 7


DEFAULT_THRESHOLDS = Thresholds()


@dataclass(frozen=True)
class Settings:
    landing: str = str(DEFAULT_DATA / "landing")
    warehouse: str = str(DEFAULT_DATA / "warehouse")
    out: str = "reports_out"
    archive: str = "reports_out/archive"
    archive_lock_mode: str | None = None  # COMPLIANCE or GOVERNANCE, for an S3 bucket with Object Lock
    archive_lock_days: int = 0
    s3_uri: str | None = None
    s3_sse: str = DEFAULT_S3_SSE
    base_url: str | None = None
    recipients_file: str | None = None
    mail_from: str = "contacts-report@localhost"
    ops_email: str | None = None
    # Validation
    future_tolerance: timedelta = FUTURE_TOLERANCE
    max_line_bytes: int = MAX_LINE_BYTES
    # Bounds on one landing file (a file past one is quarantined whole: docs/contract.md)
    max_file_lines: int = DEFAULT_READ_LIMITS.max_file_lines
    max_file_bytes: int = DEFAULT_READ_LIMITS.max_file_bytes
    max_expansion_ratio: int = DEFAULT_READ_LIMITS.max_expansion_ratio
    # Data-quality gate (`Thresholds`)
    max_quarantine_ratio: float = DEFAULT_THRESHOLDS.max_quarantine_ratio
    min_volume_ratio: float = DEFAULT_THRESHOLDS.min_volume_ratio
    volume_floor: int = DEFAULT_THRESHOLDS.volume_floor
    max_schema_drift_ratio: float = DEFAULT_THRESHOLDS.max_schema_drift_ratio
    max_damaged_files: int = DEFAULT_THRESHOLDS.max_damaged_files
    # How long the nightly run waits for a late feed before failing
    landing_wait_seconds: int = 3600
    landing_poll_seconds: int = 300
    # Rendering and links
    # Ingest tasks a night is split into (each keeps the events whose event_id hashes to it): docs/warehouse.md
    ingest_shards: int = 1
    render_batch_size: int = 50
    # How many past report days a night's late events re-render (0: none): docs/report.md, "Late events"
    late_pages_days: int = DEFAULT_LATE_PAGES_DAYS
    presign_seconds: int = 7 * 24 * 3600  # SigV4's maximum
    publish_concurrency: int = DEFAULT_PUBLISH_CONCURRENCY
    # The command line's terminal: progress bars unless CI, an Airflow task or NO_PROGRESS says nobody watches
    progress: bool = True
    # Where boto3 sends S3 requests (its own standard variable, read by boto3 itself): named in error messages
    aws_endpoint_url: str | None = None
    # Who S3 requests are signed as (the DAG: the `aws_default` connection); the standard chain when not given
    s3_identity: S3Identity = field(default_factory=S3Identity)
    # How long after the night's end its e-mails must be out, or ops are alerted (None: no deadline)
    deadline: timedelta | None = None

    @property
    def read_limits(self) -> ReadLimits:
        return ReadLimits(max_file_lines=self.max_file_lines, max_file_bytes=self.max_file_bytes,
                          max_expansion_ratio=self.max_expansion_ratio)

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(max_quarantine_ratio=self.max_quarantine_ratio,
                          max_schema_drift_ratio=self.max_schema_drift_ratio, min_volume_ratio=self.min_volume_ratio,
                          volume_floor=self.volume_floor, max_damaged_files=self.max_damaged_files)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if env is None else env
        base = cls()

        def number(name: str, default: Any, kind: type = int, least: float = 0) -> Any:
            """A numeric setting: a clear error, not a traceback, for a value that is not one."""
            text = env.get(name)
            if text is None:
                return default
            try:
                value = kind(text)
            except ValueError:
                raise InputError(f"{name}={text!r} is not a {'whole ' if kind is int else ''}number; fix or unset "
                                 "it") from None
            if value < least:
                raise InputError(f"{name}={text!r} must be at least {least}")
            return value

        values: dict[str, Any] = {
            "landing": env.get("CONTACTS_REPORT_LANDING", base.landing),
            "warehouse": env.get("CONTACTS_REPORT_WAREHOUSE", base.warehouse),
            "out": env.get("CONTACTS_REPORT_OUT", base.out),
            "archive": env.get("CONTACTS_REPORT_ARCHIVE",
                               f"{env.get('CONTACTS_REPORT_OUT', base.out).rstrip('/')}/archive"),
            "archive_lock_mode": env.get("CONTACTS_REPORT_ARCHIVE_LOCK_MODE") or None,
            "archive_lock_days": number("CONTACTS_REPORT_ARCHIVE_LOCK_DAYS", 0),
            "s3_uri": env.get("CONTACTS_REPORT_S3_URI") or None,
            "s3_sse": env.get("CONTACTS_REPORT_S3_SSE", base.s3_sse).strip(),
            "base_url": env.get("CONTACTS_REPORT_BASE_URL") or None,
            "recipients_file": env.get("CONTACTS_REPORT_RECIPIENTS") or None,
            "mail_from": env.get("CONTACTS_REPORT_MAIL_FROM", base.mail_from),
            "ops_email": env.get("CONTACTS_REPORT_OPS_EMAIL") or None,
            "max_quarantine_ratio": number("CONTACTS_REPORT_MAX_QUARANTINE_RATIO", base.max_quarantine_ratio, float),
            "max_schema_drift_ratio": number("CONTACTS_REPORT_MAX_SCHEMA_DRIFT_RATIO", base.max_schema_drift_ratio,
                                             float),
            "min_volume_ratio": number("CONTACTS_REPORT_MIN_VOLUME_RATIO", base.min_volume_ratio, float),
            "max_damaged_files": number("CONTACTS_REPORT_MAX_DAMAGED_FILES", base.max_damaged_files),
            "max_line_bytes": number("CONTACTS_REPORT_MAX_LINE_BYTES", base.max_line_bytes),
            "max_file_lines": number("CONTACTS_REPORT_MAX_FILE_LINES", base.max_file_lines),
            "max_file_bytes": number("CONTACTS_REPORT_MAX_FILE_BYTES", base.max_file_bytes),
            "max_expansion_ratio": number("CONTACTS_REPORT_MAX_EXPANSION_RATIO", base.max_expansion_ratio, least=1),
            "landing_wait_seconds": number("CONTACTS_REPORT_LANDING_WAIT_SECONDS", base.landing_wait_seconds),
            "ingest_shards": number("CONTACTS_REPORT_INGEST_SHARDS", base.ingest_shards, least=1),
            "render_batch_size": number("CONTACTS_REPORT_RENDER_BATCH_SIZE", base.render_batch_size, least=1),
            "late_pages_days": number("CONTACTS_REPORT_LATE_PAGES_DAYS", base.late_pages_days),
            "publish_concurrency": number("CONTACTS_REPORT_PUBLISH_CONCURRENCY", base.publish_concurrency, least=1),
            "progress": not any(env.get(name) for name in ("CI", "AIRFLOW_CTX_DAG_ID", "NO_PROGRESS")),
            "aws_endpoint_url": env.get("AWS_ENDPOINT_URL") or None,
            "deadline": parse_duration("CONTACTS_REPORT_DEADLINE", env.get("CONTACTS_REPORT_DEADLINE")),
        }
        settings = cls(**values)
        return replace(settings, **{k: v for k, v in overrides.items() if v is not None})
