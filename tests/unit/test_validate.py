"""Every quarantine reason, given a line and the reason it must get."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from etl.settings import Settings
from etl.validate import Invalid, ValidationRules, event_id_hint, parse_timestamp, validate_line
from tests.conftest import examples, plain_id
from tests.helpers import event

RULES = ValidationRules(workspace_ids=frozenset({1, 2}), ingest_date=date(2026, 3, 10),
                        broken_workspaces={3: "unknown_timezone:Mars/Olympus"})


def reason(line: bytes | dict[str, Any]) -> str:
    raw = line if isinstance(line, bytes) else json.dumps(line).encode()
    with pytest.raises(Invalid) as caught:
        validate_line(raw, RULES)
    return caught.value.reason


def without(body: dict[str, Any], field: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != field}


OK = event("e1", "2026-03-10T10:00:00Z")


def test_valid_event_keeps_every_field_and_converts_time_to_utc_micros() -> None:
    row = validate_line(json.dumps(event("e1", "2026-03-10T15:30:00.123456789+05:30", contact_name="<b>x</b>",
                                         extra_field="ignored")).encode(), RULES)
    assert row[0] == "e1"
    assert row[2] == parse_timestamp("2026-03-10T10:00:00.123456Z")
    assert row[5] == "<b>x</b>"


def test_absent_nullable_fields_are_nulls() -> None:
    body = {k: v for k, v in OK.items() if v is not None}
    assert validate_line(json.dumps(body).encode(), RULES)[7:] == (None,) * 6


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b'{"event_id": "x", ', "invalid_json"),
        (b"\xff\xfe{}", "invalid_utf8"),
        (b"[1, 2]", "not_an_object"),
        (b"null", "not_an_object"),
        (without(OK, "event_id"), "missing_field:event_id"),
        ({**OK, "contact_name": None}, "missing_field:contact_name"),
        ({**OK, "workspace_id": "1"}, "bad_type:workspace_id"),
        ({**OK, "workspace_id": True}, "bad_type:workspace_id"),
        ({**OK, "contact_id": 1.5}, "bad_type:contact_id"),
        ({**OK, "contact_name": 5}, "bad_type:contact_name"),
        ({**OK, "contact_id": 0}, "bad_value:contact_id"),
        ({**OK, "workspace_id": -4}, "bad_value:workspace_id"),
        ({**OK, "contact_id": 2**64}, "bad_value:contact_id"),
        ({**OK, "event_id": "  "}, "bad_value:event_id"),
        ({**OK, "event_type": "contact.exploded"}, "unknown_event_type"),
        ({**OK, "occurred_at": "2026-03-10 10:00:00"}, "bad_timestamp"),
        ({**OK, "occurred_at": "2026-03-10T10:00:00"}, "bad_timestamp"),
        ({**OK, "occurred_at": "2026-02-30T10:00:00Z"}, "bad_timestamp"),
        ({**OK, "occurred_at": "2026-03-10T10:00:60Z"}, "bad_timestamp"),
        ({**OK, "occurred_at": "2026-03-10T10:00:00+24:00"}, "bad_timestamp"),
        ({**OK, "occurred_at": "1999-12-31T23:59:59Z"}, "timestamp_out_of_range"),
        ({**OK, "occurred_at": "2026-03-11T01:00:01Z"}, "timestamp_out_of_range"),
        ({**OK, "source": "carrier_pigeon"}, "unknown_source"),
        ({**OK, "source": "broadcast"}, "source_not_allowed"),
        ({**event("e", "2026-03-10T10:00:00Z", event_type="contact.deleted"), "source": "zapier"},
         "source_not_allowed"),
        (event("e", "2026-03-10T10:00:00Z", event_type="contact.connected", source="zapier", channel_id=None),
         "missing_field:channel_id"),
        (event("e", "2026-03-10T10:00:00Z", channel_id=5, channel_name="x"), "missing_field:channel_type"),
        ({**event("e", "2026-03-10T10:00:00Z", source="user"), "user_name": None}, "missing_field:user_name"),
        ({**event("e", "2026-03-10T10:00:00Z", event_type="contact.merged"), "merged_contact_id": None},
         "missing_field:merged_contact_id"),
        (event("e", "2026-03-10T10:00:00Z", event_type="contact.merged", merged_contact_id=100),
         "bad_value:merged_contact_id"),
        ({**OK, "workspace_id": 77}, "unknown_workspace"),
        ({**OK, "workspace_id": 3}, "workspace_misconfigured"),
    ],
    ids=plain_id,
)
def test_each_broken_line_gets_its_reason(line: bytes | dict[str, Any], expected: str) -> None:
    assert reason(line) == expected


def test_a_line_over_the_size_limit_is_quarantined_without_parsing() -> None:
    huge = json.dumps({**OK, "contact_name": "x" * 2_000_000}).encode()
    assert reason(huge) == "line_too_long"


def test_the_default_line_limit_is_the_documented_million_bytes() -> None:
    """docs/contract.md: a line of up to 1,000,000 bytes (newline not counted) is read; one byte more is not."""
    rules = ValidationRules(workspace_ids=frozenset({1}), ingest_date=date(2026, 3, 10))
    padding = 1_000_000 - len(json.dumps({**OK, "contact_name": ""}).encode())
    at_limit = json.dumps({**OK, "contact_name": "x" * padding}).encode()
    assert len(at_limit) == 1_000_000
    assert "x" * padding in validate_line(at_limit, rules)
    with pytest.raises(Invalid, match="line_too_long"):
        validate_line(at_limit + b" ", rules)
    assert Settings().max_line_bytes == rules.max_line_bytes  # one default for the CLI, the DAG and the library


def test_timestamp_up_to_the_clock_skew_allowance_is_accepted() -> None:
    validate_line(json.dumps({**OK, "occurred_at": "2026-03-11T00:59:59Z"}).encode(), RULES)


# The reasons docs/contract.md lists for a line, and those that name a field.
DOCUMENTED_REASONS = {"line_too_long", "invalid_utf8", "invalid_json", "not_an_object", "unknown_event_type",
                      "bad_timestamp", "timestamp_out_of_range", "unknown_source", "source_not_allowed",
                      "workspace_misconfigured", "unknown_workspace"}
FIELD_REASONS = {"missing_field", "bad_type", "bad_value"}


def test_the_documented_reasons_are_the_contracts_own() -> None:
    contract = (Path(__file__).parents[2] / "docs/contract.md").read_text()
    for reason in DOCUMENTED_REASONS | {f"{r}:<f>" for r in FIELD_REASONS}:
        assert f"`{reason}`" in contract, reason


@settings(max_examples=examples(300), deadline=None)
@given(st.one_of(
    st.binary(max_size=300),
    st.dictionaries(st.sampled_from(list(OK)), st.one_of(st.none(), st.integers(), st.text(max_size=20),
                                                         st.booleans(), st.floats())).map(
        lambda d: json.dumps({**OK, **d}).encode()),
))
@example(json.dumps({**OK, "contact_name": "\ud800"}).encode())  # a lone surrogate: valid JSON, not storable
@example(json.dumps(OK).replace('"contact_id"', '"contact_id": "7", "contact_id"', 1).encode())  # a key given twice
@example(b'{"event_id": "x"' + b', "a": [' * 5_000 + b"]" * 5_000 + b"}")  # nesting deeper than json.loads goes
def test_any_input_is_either_valid_or_quarantined_with_a_reason(raw: bytes) -> None:
    try:
        row = validate_line(raw, RULES)
    except Invalid as bad:
        assert bad.reason in DOCUMENTED_REASONS or bad.reason.split(":")[0] in FIELD_REASONS, bad.reason
        if ":" in bad.reason:
            assert bad.reason.split(":", 1)[1] in OK  # the field named is one of the contract's
    else:
        assert isinstance(row[0], str) and row[3] in RULES.workspace_ids


# Every spelling RFC 3339 does not allow, though a permissive parser would: digits of other scripts (which `\d`
# and int() accept), a line break or other whitespace inside the string, a sign on the year, a comma for the dot.
NOT_RFC3339 = [
    "2026-03-10T10:00:00+05:60",  # an offset's minutes stop at 59
    "2026-03-10T10:00:00+24:00",
    "٢٠٢٦-٠٣-١٠T10:00:00Z",  # Arabic-Indic digits
    "２０２６-03-10T10:00:00Z",  # fullwidth
    "2026-03-10T१०:00:00Z",  # Devanagari
    "2026-03-10T10:00:00.１２Z",
    "2026-03-10T10:00:00+0５:30",
    "2026-03-10T10:00:00Z\n",
    "2026-03-10T10:00:00Z\r",
    "\n2026-03-10T10:00:00Z",
    " 2026-03-10T10:00:00Z",
    "2026-03-10T10:00:00Z ",
    "2026-03-10T10:00:00\nZ",
    "2026-03-10T10:00:00,5Z",
    "+2026-03-10T10:00:00Z",
]


@pytest.mark.parametrize("stamp", NOT_RFC3339, ids=plain_id)
def test_timestamps_outside_rfc3339_are_quarantined(stamp: str) -> None:
    assert reason({**OK, "occurred_at": stamp}) == "bad_timestamp"
    with pytest.raises(Invalid):
        parse_timestamp(stamp)


def test_the_end_of_the_arrival_day_plus_one_hour_is_the_last_instant_accepted() -> None:
    validate_line(json.dumps({**OK, "occurred_at": "2026-03-11T01:00:00Z"}).encode(), RULES)
    validate_line(json.dumps({**OK, "occurred_at": "2026-03-11T02:59:59.999999+02:00"}).encode(), RULES)
    for late in ("2026-03-11T01:00:00.000001Z", "2026-03-11T03:00:01+02:00", "2026-03-10T20:00:01-05:00"):
        assert reason({**OK, "occurred_at": late}) == "timestamp_out_of_range", late
    validate_line(json.dumps({**OK, "occurred_at": "2000-01-01T00:00:00Z"}).encode(), RULES)
    assert reason({**OK, "occurred_at": "1999-12-31T23:59:59.999999Z"}) == "timestamp_out_of_range"


@pytest.mark.parametrize(("faults", "expected"), [
    # each line breaks several rules: the first in the documented order names it
    ({"event_id": None, "event_type": "contact.exploded", "workspace_id": 99}, "missing_field:event_id"),
    ({"contact_name": 5, "contact_id": "7", "source": "fax"}, "bad_type:contact_name"),
    ({"contact_id": "7", "event_id": " ", "event_type": "contact.exploded"}, "bad_type:contact_id"),
    ({"event_id": " ", "event_type": "contact.exploded", "occurred_at": "yesterday"}, "bad_value:event_id"),
    ({"event_type": "contact.exploded", "occurred_at": "yesterday", "source": "fax"}, "unknown_event_type"),
    ({"occurred_at": "yesterday", "source": "fax", "workspace_id": 99}, "bad_timestamp"),
    ({"occurred_at": "1999-01-01T00:00:00Z", "source": "fax", "workspace_id": 99}, "timestamp_out_of_range"),
    ({"source": "fax", "workspace_id": 99}, "unknown_source"),
    ({"source": "broadcast", "workspace_id": 99}, "source_not_allowed"),
    ({"channel_id": 5, "workspace_id": 99}, "missing_field:channel_name"),
    ({"workspace_id": 3}, "workspace_misconfigured"),
    ({"workspace_id": 99}, "unknown_workspace"),
])
def test_the_first_failing_rule_names_the_line(faults: dict[str, Any], expected: str) -> None:
    assert reason({**OK, **faults}) == expected


def test_the_rare_inputs_the_property_test_is_pinned_to() -> None:
    """Named here too, so that a change to their reason is seen whatever hypothesis draws."""
    assert reason({**OK, "contact_name": "\ud800"}) == "bad_value:contact_name"
    assert reason(json.dumps(OK).replace('"contact_id"', '"contact_id": "7", "contact_id"', 1).encode()) == \
        "bad_type:contact_id"  # the first value of a key given twice counts
    assert reason(b'{"event_id": "x"' + b', "a": [' * 5_000 + b"]" * 5_000 + b"}") == "invalid_json"


def test_a_quarantined_line_names_its_event_id_when_it_can() -> None:
    """Ops trace a rejected line upstream by its event_id: found in the line's first 4 KB, quoted, up to 200
    characters, and never a reason to fail (bytes that are not UTF-8 become U+FFFD)."""
    assert event_id_hint(b'{"event_id": "ev-1", "occurred_at": 5') == "ev-1"
    assert event_id_hint(b'{"event_id":"caf\xe9"}') == "caf\ufffd"
    assert event_id_hint(b'{"event_id": 17}') is None and event_id_hint(b"not json") is None
    assert event_id_hint(b'{"event_id": "' + b"x" * 201 + b'"}') is None
    padding = b" " * (4096 - len(b'{"event_id": "ev"'))
    assert event_id_hint(b"{" + padding + b'"event_id": "ev"}') == "ev"  # its closing quote is byte 4,096
    assert event_id_hint(b"{ " + padding + b'"event_id": "ev"}') is None  # one byte further: not searched


def test_a_refusal_reads_as_its_reason() -> None:
    """What a log or a traceback shows of a refused line is the same reason the quarantine records."""
    with pytest.raises(Invalid) as refused:
        validate_line(b'{"event_id": "e"}', RULES)
    assert str(refused.value) == refused.value.reason == "missing_field:event_type"


def test_the_last_accepted_id_and_line_length_are_inclusive() -> None:
    """Ids up to 2**63 − 1 (a signed 64-bit column) and lines up to max_line_bytes are accepted; one more is not."""
    assert validate_line(json.dumps(event("e", "2026-03-10T08:00:00Z", contact_id=2**63 - 1)).encode(), RULES)
    with pytest.raises(Invalid, match="bad_value:contact_id"):
        validate_line(json.dumps(event("e", "2026-03-10T08:00:00Z", contact_id=2**63)).encode(), RULES)
    line = json.dumps(event("e", "2026-03-10T08:00:00Z")).encode()
    exact = replace(RULES, max_line_bytes=len(line))
    assert validate_line(line, exact)
    with pytest.raises(Invalid, match="line_too_long"):
        validate_line(line + b" ", exact)


def test_an_offset_may_reach_23_59() -> None:
    utc = parse_timestamp("2026-03-10T10:00:00Z")
    assert parse_timestamp("2026-03-10T10:00:00+05:59") == utc - (5 * 60 + 59) * 60_000_000
    assert parse_timestamp("2026-03-10T10:00:00-23:59") == utc + (23 * 60 + 59) * 60_000_000
