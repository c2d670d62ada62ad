"""The published JSON Schema and the validator agree on what a valid event is."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from etl.validate import Invalid, ValidationRules, validate_event
from tests.helpers import event

SCHEMA = json.loads((Path(__file__).parents[2] / "docs/schemas/event.schema.json").read_text())
RULES = ValidationRules(workspace_ids=frozenset({1}), ingest_date=date(2026, 3, 10))

CASES: list[dict[str, Any]] = [
    event("a", "2026-03-10T10:00:00Z"),
    event("b", "2026-03-10T10:00:00.5+05:45", event_type="contact.connected", source="broadcast"),
    event("c", "2026-03-10T10:00:00Z", event_type="contact.merged"),
    event("d", "2026-03-10T10:00:00Z", event_type="contact.deleted", contact_name=""),
    {**event("e", "2026-03-10T10:00:00Z", event_type="contact.connected", source="zapier"), "channel_id": None},
    {**event("f", "2026-03-10T10:00:00Z", event_type="contact.merged"), "merged_contact_id": None},
    {**event("g", "2026-03-10T10:00:00Z"), "source": "broadcast"},
    {**event("h", "2026-03-10T10:00:00Z"), "occurred_at": "2026-03-10T10:00:00"},
    {**event("i", "2026-03-10T10:00:00Z"), "contact_id": 0},
    {**event("j", "2026-03-10T10:00:00Z"), "workspace_id": "1"},
    {**event("k", "2026-03-10T10:00:00Z", source="user"), "user_id": None},
    {**event("l", "2026-03-10T10:00:00Z"), "channel_id": 4},
]


@pytest.mark.parametrize("body", CASES, ids=[c["event_id"] for c in CASES])
def test_schema_and_validator_agree(body: dict[str, Any]) -> None:
    schema_ok = jsonschema.Draft202012Validator(SCHEMA).is_valid(body)
    try:
        validate_event(body, RULES)
        validator_ok = True
    except Invalid:
        validator_ok = False
    assert schema_ok == validator_ok
