"""Typed, frozen settings, built once from the environment (or arguments) and passed down."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

DEFAULT_DATA = Path("data")


@dataclass(frozen=True)
class Settings:
    landing: str = str(DEFAULT_DATA / "landing")
    warehouse: str = str(DEFAULT_DATA / "warehouse")
    out: str = "reports_out"
    s3_uri: str | None = None
    base_url: str | None = None
    recipients_file: str | None = None
    mail_from: str = "contacts-report@localhost"
    ops_email: str | None = None
    # Validation
    future_tolerance: timedelta = timedelta(hours=1)
    max_line_bytes: int = 1_000_000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if env is None else env
        base = cls()
        values: dict[str, Any] = {
            "landing": env.get("CONTACTS_REPORT_LANDING", base.landing),
            "warehouse": env.get("CONTACTS_REPORT_WAREHOUSE", base.warehouse),
            "out": env.get("CONTACTS_REPORT_OUT", base.out),
            "s3_uri": env.get("CONTACTS_REPORT_S3_URI") or None,
            "base_url": env.get("CONTACTS_REPORT_BASE_URL") or None,
            "recipients_file": env.get("CONTACTS_REPORT_RECIPIENTS") or None,
            "mail_from": env.get("CONTACTS_REPORT_MAIL_FROM", base.mail_from),
            "ops_email": env.get("CONTACTS_REPORT_OPS_EMAIL") or None,
        }
        settings = cls(**values)
        return replace(settings, **{k: v for k, v in overrides.items() if v is not None})
