"""Line-level validation of raw events against the contract.

Every input line ends as exactly one of: a valid event row, or a quarantine row with a reason.
The first failing rule names the reason, in a fixed order, so the same line always gets the same reason.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

from etl.contract import (
    ALLOWED_SOURCES,
    CONNECTED,
    EVENT_TYPES,
    ID_FIELDS,
    MERGED,
    REQUIRED_FIELDS,
    SOURCES,
    TEXT_FIELDS,
)
from etl.settings import FUTURE_TOLERANCE, MAX_LINE_BYTES  # the contract's defaults

# ASCII digits only (`\d` would take any script's digits) and the whole text (`$` would allow a final newline).
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EARLIEST_EVENT = datetime(2000, 1, 1, tzinfo=UTC)
_MAX_ID = 2**63 - 1


class Invalid(Exception):
    """A line that breaks the contract; `reason` is the quarantine reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_timestamp(text: str) -> int:
    """RFC 3339 with a mandatory offset -> microseconds since the epoch (UTC). Raises Invalid."""
    m = _RFC3339.fullmatch(text)
    if not m:
        raise Invalid("bad_timestamp")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    fraction, offset = m.group(7), m.group(8)
    micros = int((fraction or "0")[:6].ljust(6, "0"))
    if offset in ("Z", "z"):
        tz = UTC
    else:
        sign = -1 if offset[0] == "-" else 1
        hours, minutes = int(offset[1:3]), int(offset[4:6])
        if hours > 23 or minutes > 59:
            raise Invalid("bad_timestamp")
        tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        moment = datetime(year, month, day, hour, minute, second, micros, tzinfo=tz)
    except ValueError:  # e.g. 2026-02-30, hour 24, leap second 60
        raise Invalid("bad_timestamp") from None
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass
class ValidationRules:
    """What the validator needs to know besides the contract itself."""

    workspace_ids: frozenset[int]
    ingest_date: date
    future_tolerance: timedelta = FUTURE_TOLERANCE
    max_line_bytes: int = MAX_LINE_BYTES
    # Workspaces present in workspaces.json but unusable (e.g. unknown time zone).
    broken_workspaces: dict[int, str] = field(default_factory=dict)

    @property
    def latest_micros(self) -> int:
        """Events cannot happen after they arrive: the end of the arrival day plus a clock-skew allowance."""
        end = datetime.combine(self.ingest_date + timedelta(days=1), datetime.min.time(), UTC)
        return int((end + self.future_tolerance - _EPOCH) / timedelta(microseconds=1))


EARLIEST_MICROS = int((EARLIEST_EVENT - _EPOCH) / timedelta(microseconds=1))


def _check_id(event: dict[str, Any], name: str, required: bool) -> None:
    value = event.get(name)
    if value is None:
        if required:
            raise Invalid(f"missing_field:{name}")
        return
    if type(value) is not int:  # bool is an int subclass; floats and strings are not ids
        raise Invalid(f"bad_type:{name}")
    if not 0 < value <= _MAX_ID:
        raise Invalid(f"bad_value:{name}")


def _check_text(event: dict[str, Any], name: str) -> None:
    value = event.get(name)
    if value is None:
        return
    if not isinstance(value, str):
        raise Invalid(f"bad_type:{name}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate such as "\ud800": JSON can spell it, UTF-8 cannot store it
        raise Invalid(f"bad_value:{name}") from None


def validate_event(event: Any, rules: ValidationRules) -> tuple[Any, ...]:
    """Check one decoded JSON value; return the event's stored fields in EVENT_SCHEMA order (arrival excluded)."""
    if not isinstance(event, dict):
        raise Invalid("not_an_object")
    for name in REQUIRED_FIELDS:
        if event.get(name) is None:
            raise Invalid(f"missing_field:{name}")
    for name in TEXT_FIELDS:
        _check_text(event, name)
    for name in ID_FIELDS:
        _check_id(event, name, required=name in REQUIRED_FIELDS)
    if not event["event_id"].strip():
        raise Invalid("bad_value:event_id")
    event_type, source = event["event_type"], event["source"]
    if event_type not in EVENT_TYPES:
        raise Invalid("unknown_event_type")
    occurred = parse_timestamp(event["occurred_at"])
    if not EARLIEST_MICROS <= occurred <= rules.latest_micros:
        raise Invalid("timestamp_out_of_range")
    if source not in SOURCES:
        raise Invalid("unknown_source")
    if source not in ALLOWED_SOURCES[event_type]:
        raise Invalid("source_not_allowed")
    _check_conditional_fields(event, event_type, source)
    workspace_id = event["workspace_id"]
    if workspace_id in rules.broken_workspaces:
        raise Invalid("workspace_misconfigured")
    if workspace_id not in rules.workspace_ids:
        raise Invalid("unknown_workspace")
    return (
        event["event_id"],
        event_type,
        occurred,
        workspace_id,
        event["contact_id"],
        event["contact_name"],
        source,
        event.get("channel_id"),
        event.get("channel_name"),
        event.get("channel_type"),
        event.get("user_id"),
        event.get("user_name"),
        event.get("merged_contact_id"),
    )


def _check_conditional_fields(event: dict[str, Any], event_type: str, source: str) -> None:
    has_channel = event.get("channel_id") is not None
    if event_type == CONNECTED and not has_channel:
        raise Invalid("missing_field:channel_id")
    if has_channel:
        for name in ("channel_name", "channel_type"):
            if event.get(name) is None:
                raise Invalid(f"missing_field:{name}")
    if source == "user":
        for name in ("user_id", "user_name"):
            if event.get(name) is None:
                raise Invalid(f"missing_field:{name}")
    if event_type == MERGED:
        merged = event.get("merged_contact_id")
        if merged is None:
            raise Invalid("missing_field:merged_contact_id")
        if merged == event["contact_id"]:
            raise Invalid("bad_value:merged_contact_id")


def _first_value_wins(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A key given twice keeps its first value (RFC 8259 leaves it open; the fast path's decoder does this)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        out.setdefault(key, value)
    return out


def validate_line(raw: bytes, rules: ValidationRules) -> tuple[Any, ...]:
    """Decode and validate one raw NDJSON line (without its newline)."""
    if len(raw) > rules.max_line_bytes:
        raise Invalid("line_too_long")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid("invalid_utf8") from None
    try:
        event = json.loads(text, object_pairs_hook=_first_value_wins)
    except (ValueError, RecursionError):
        raise Invalid("invalid_json") from None
    return validate_event(event, rules)


def event_id_hint(raw: bytes) -> str | None:
    """Best-effort event_id of a quarantined line, so ops can trace it upstream."""
    m = re.search(rb'"event_id"\s*:\s*"([^"\\]{1,200})"', raw[:4096])
    return m.group(1).decode("utf-8", "replace") if m else None
