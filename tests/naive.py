"""An independent, deliberately plain reference: count a landing zone with json + zoneinfo, no Polars."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from etl.contract import ALLOWED_SOURCES


def _plausible(e: Any, workspaces: dict[int, str]) -> bool:
    try:
        return (
            isinstance(e, dict)
            and e.get("workspace_id") in workspaces
            and e["source"] in ALLOWED_SOURCES.get(e["event_type"], ())
            and isinstance(e["event_id"], str)
            and re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+(Z|[+-]\d\d:\d\d)", e["occurred_at"]) is not None
        )
    except (KeyError, TypeError):
        return False


def naive_events(landing: Path) -> list[dict[str, Any]]:
    """First arrival of every event_id, with its local date, in arrival order."""
    workspaces = {w["workspace_id"]: w["timezone"] for w in json.loads((landing / "workspaces.json").read_text())}
    seen: set[str] = set()
    out = []
    for path in sorted((landing / "events").glob("ingest_date=*/hour=*/*.ndjson")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if not _plausible(e, workspaces) or e["event_id"] in seen:
                continue
            seen.add(e["event_id"])
            moment = datetime.fromisoformat(e["occurred_at"].replace("Z", "+00:00"))
            e["local_date"] = moment.astimezone(ZoneInfo(workspaces[e["workspace_id"]])).date()
            out.append(e)
    return out


def naive_counts(events: list[dict[str, Any]], workspace_id: int, start: date, end: date) -> Counter[str]:
    return Counter(e["event_type"].removeprefix("contact.") for e in events
                   if e["workspace_id"] == workspace_id and start <= e["local_date"] <= end)
