"""What a render wrote: `{out}/_rendered/`, the record publish works from (never a listing of the whole output).

  _rendered/cutoff=YYYY-MM-DDTHHMMSSZ/<workspace>-<pages>.json   the keys a render wrote for a workspace
  _rendered/report-day=YYYY-MM-DD/<workspace>-<pages>.json       ... for a report day given to all workspaces
  _rendered/indexes.json                                         the index pages written last

<pages> is a digest of the windows and filters rendered (and of the report day, for the past days a night's late
events re-rendered): a re-render of the same pages replaces its record, another
selection (a filtered render) adds one, and how the workspaces were split into batches or processes changes
nothing (the output stays byte-identical). Nothing under `_rendered/` is published.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from datetime import UTC, date, datetime

from etl.storage import Storage

FOLDER = "_rendered"
INDEXES = f"{FOLDER}/indexes.json"
_WORKSPACE = re.compile(r"^(?:filtered/[^/]+/)?(\d+)/", re.ASCII)


def tag(cutoff: datetime | None, report_day: date | None) -> str:
    """The record's folder: the cutoff when one decided the report days, the report day otherwise."""
    if cutoff is not None:
        return f"cutoff={cutoff.astimezone(UTC).strftime('%Y-%m-%dT%H%M%SZ')}"
    if report_day is None:
        raise ValueError("a render has a cutoff or a report day")
    return f"report-day={report_day.isoformat()}"


def tag_of(cutoff: str) -> str:
    """`tag` of a cutoff written as an ISO instant (`2026-03-12T00:00Z`)."""
    return tag(datetime.fromisoformat(cutoff.replace("Z", "+00:00")), None)


def record(out: Storage, folder_tag: str, workspace_id: int, windows: Iterable[str], filters: Iterable[str],
           keys: Iterable[str], report_day: date | None = None) -> None:
    """Record the keys a render wrote for one workspace's `windows` under `filters` (of `report_day`, when the
    folder holds more than one report day of a workspace: a night's re-render of past days)."""
    selection = [list(windows), sorted(filters), *([report_day.isoformat()] if report_day else [])]
    pages = hashlib.sha256(json.dumps(selection).encode()).hexdigest()[:12]
    out.write_bytes(f"{FOLDER}/{folder_tag}/{workspace_id}-{pages}.json", json.dumps({"keys": sorted(set(keys))}
                                                                                       ).encode(), "application/json")


def record_indexes(out: Storage, keys: Iterable[str]) -> None:
    out.write_bytes(INDEXES, json.dumps({"keys": list(dict.fromkeys(keys))}).encode(), "application/json")


def rendered(out: Storage, folder_tag: str, workspaces: set[int] | None = None) -> list[str]:
    """The keys the renders of `folder_tag` wrote, sorted, then the index pages (of `workspaces` only, when given)."""
    dated: set[str] = set()
    for name in out.list(f"{FOLDER}/{folder_tag}"):
        dated.update(json.loads(out.read_bytes(name))["keys"])
    indexes = json.loads(out.read_bytes(INDEXES))["keys"] if out.exists(INDEXES) else []
    return [k for k in [*sorted(dated), *indexes]
            if workspaces is None or workspace_of(k) in workspaces or k == "index.html"]


def workspace_of(key: str) -> int | None:
    """The workspace whose folder holds `key` (a filtered render's too); None for the top-level pages."""
    m = _WORKSPACE.match(key)
    return int(m.group(1)) if m else None
