"""Builders for small landing zones in the contract's layout."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def event(event_id: str, occurred_at: str, workspace_id: int = 1, event_type: str = "contact.added",
          source: str = "contact_import", contact_id: int = 100, **extra: Any) -> dict[str, Any]:
    """A valid event with sensible defaults for each type; `extra` overrides any field."""
    body: dict[str, Any] = {
        "event_id": event_id, "event_type": event_type, "occurred_at": occurred_at,
        "workspace_id": workspace_id, "contact_id": contact_id, "contact_name": f"Contact {contact_id}",
        "source": source, "channel_id": None, "channel_name": None, "channel_type": None,
        "user_id": None, "user_name": None, "merged_contact_id": None,
    }
    if event_type == "contact.connected":
        body.update(channel_id=11, channel_name="WA", channel_type="whatsapp")
    if event_type in ("contact.deleted", "contact.merged") or source == "user":
        body.update(source="user", user_id=7, user_name="Susan")
    if event_type == "contact.merged":
        body.update(merged_contact_id=contact_id + 1)
    body.update(extra)
    return body


def write_landing(root: Path, workspaces: Iterable[tuple[int, str, str] | tuple[int, str, str, object]],
                  files: dict[str, Iterable[dict[str, Any] | str]]) -> Path:
    """`workspaces`: (id, name, time zone[, locale]); `files` maps 'YYYY-MM-DD/HH' (or
    'YYYY-MM-DD/HH/name.ndjson') to events or raw lines."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "workspaces.json").write_text(json.dumps(
        [{"workspace_id": w, "name": n, "timezone": tz, **({"locale": more[0]} if more else {})}
         for w, n, tz, *more in workspaces]))
    for where, lines in files.items():
        day, hour, *name = where.split("/")
        path = root / "events" / f"ingest_date={day}" / f"hour={hour}" / (name[0] if name else "part-0000.ndjson")
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as handle:
            for line in lines:
                handle.write((line if isinstance(line, str) else json.dumps(line, ensure_ascii=False)) + "\n")
    return root


def published(client: Any, bucket: str, key: str) -> bytes:
    """A published object's content as a browser sees it: gzip undone when the object says it is compressed."""
    import gzip

    answer = client.get_object(Bucket=bucket, Key=key)
    body: bytes = answer["Body"].read()
    return gzip.decompress(body) if answer.get("ContentEncoding") == "gzip" else body
