"""The vectorised reader against the exact validator: the same lines kept, the same reasons, the same rows.

The fast path may only accept lines the exact validator accepts, with the same values; everything else it must
hand over. These tests mutate valid events in every way the contract cares about, bury the mutants among plain
valid lines (so the fast path really runs: it judges chunks of more than a few lines), and demand that both
paths give identical batches.
"""

from __future__ import annotations

import itertools
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from typing import Any
from unittest.mock import patch

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from etl import ingest
from etl.contract import ALLOWED_SOURCES, EVENT_TYPES, SOURCES
from etl.ingest import (
    _PLAIN_TIMESTAMP,
    DECODE_THREADS,
    Batch,
    LandingFile,
    _timestamp_micros,
    events_frame,
    judge_group,
    start_decoding,
)
from etl.validate import EARLIEST_MICROS, ValidationRules, parse_timestamp
from tests.conftest import examples, plain_id
from tests.helpers import event

RULES = ValidationRules(workspace_ids=frozenset({1, 2, 3}), ingest_date=date(2026, 3, 10),
                        broken_workspaces={3: "unknown_timezone:Mars/Olympus"}, max_line_bytes=4_000)
FIELDS = ("event_id", "event_type", "occurred_at", "workspace_id", "contact_id", "contact_name", "source",
          "channel_id", "channel_name", "channel_type", "user_id", "user_name", "merged_contact_id")
WRONG_VALUES: list[Any] = [None, 0, -1, 1, 1.0, 1.5, 5.0, 2**63, 2**64, True, False, "", " ", "x", "1", "5", "null",
                           "\u0000", "\ud800", [], [1], [None], {}, {"a": 1}, {"a": None}, "contact.added", "user",
                           "2026-03-10T10:00:00Z"]
TIMESTAMPS = ["2026-03-10T10:00:00Z", "2026-03-10t10:00:00z", "2026-03-10 10:00:00Z", "2026-03-10T10:00:00",
              "2026-03-10T10:00:00.1234567Z", "2026-03-10T10:00:00.123456+05:45", "2026-03-10T10:00:00+24:00",
              "2026-03-10T10:00:60Z", "2026-02-29T10:00:00Z", "2026-03-10T24:00:00Z", "1999-12-31T23:59:59Z",
              "2026-03-11T00:59:59.999999Z", "2026-03-11T01:00:00.000001Z", "2026-03-10T10:00:00-00:30",
              "2026-03-09T23:30:00-14:00", "+2026-03-10T10:00:00Z", "2026-3-10T10:00:00Z", "2026-03-10T10:00:00.Z",
              "٢٠٢٦-٠٣-١٠T10:00:00Z", "２０２６-03-10T10:00:00Z", "2026-03-10T10:00:00Z\n", "2026-03-10T10:00:00.１Z"]


def valid_line(i: int) -> str:
    kinds = [("contact.added", "contact_import"), ("contact.connected", "broadcast"), ("contact.deleted", "user"),
             ("contact.merged", "user"), ("contact.added", "incoming_message")]
    kind, source = kinds[i % len(kinds)]
    body = event(f"ok-{i}", f"2026-03-10T{i % 24:02d}:{i % 60:02d}:00.{i:06d}Z", workspace_id=1 + i % 2,
                 event_type=kind, source=source, contact_id=1000 + i, contact_name=f"Name {i} <b>&")
    if kind == "contact.added" and source == "incoming_message":
        body.update(channel_id=5, channel_name="WA", channel_type="whatsapp")
    return json.dumps(body, separators=(",", ":") if i % 3 else (", ", ": "), ensure_ascii=bool(i % 2))


def mutants() -> st.SearchStrategy[str]:
    base = st.integers(0, 9).map(lambda i: json.loads(valid_line(i)))

    def set_field(body: dict[str, Any], name: str, value: Any) -> str:
        return json.dumps({**body, name: value})

    def drop_field(body: dict[str, Any], name: str) -> str:
        return json.dumps({k: v for k, v in body.items() if k != name})

    def raw_edit(body: dict[str, Any], how: int) -> str:
        text = json.dumps(body)
        return [text[:-1], text + "x", "[" + text + "]", text.replace('"event_id"', '"event_id": "dup", "event_id"'),
                text.replace("{", '{"extra": {"source": null}, ', 1), "  " + text + "\t", text.replace(": ", ":"),
                text + "\r", "null", "5", '"text"', text.replace('"contact_name": "', '"contact_name": "\\u0000'),
                # a key given twice whose first value has the wrong type, beside unknown fields
                text.replace("{", '{"user_id": "7", ', 1), text.replace("{", '{"channel_id": 5.0, "x": null, ', 1),
                text.replace("{", '{"merged_contact_id": "null", "y": 1, ', 1),
                text.replace("{", '{"user_id": [null], ', 1), text.replace("{", '{"extra": "a:b\\"null", ', 1),
                # tokens spelt with escapes inside text
                text.replace('"contact_name": "', '"contact_name": "\\u006eull \\u003a \\u0022 \\u007b'),
                text.replace('"contact_name": "', '"contact_name": "x\\": null, \\"'),
                text.replace('"user_id": null', '"user_id": "nu\\u006cl"')][how]

    return st.one_of(
        st.builds(set_field, base, st.sampled_from(FIELDS), st.sampled_from(WRONG_VALUES)),
        st.builds(set_field, base, st.just("occurred_at"), st.sampled_from(TIMESTAMPS)),
        st.builds(drop_field, base, st.sampled_from(FIELDS)),
        st.builds(raw_edit, base, st.integers(0, 19)),
        st.sampled_from(["", "   ", "\r", "{", "{}", "\x00", "x" * 5_000]),
        st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
    )


def read_files(files: list[LandingFile], rules: ValidationRules, batch: Batch, exact_only: bool = False) -> None:
    """Every line of some in-memory landing files into `batch`, as a night reads a group of files."""
    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        judge_group(start_decoding(files, rules, pool, exact_only).result(), rules, batch)


def read_both(data: bytes) -> tuple[Batch, Batch]:
    fast, exact = Batch(), Batch()
    # Split in three files: line numbers and arrival keys must come out per file.
    cuts = [0, *sorted({data.find(b"\n", len(data) // 3) + 1, data.find(b"\n", 2 * len(data) // 3) + 1} - {0}),
            len(data)]
    files = [LandingFile(f"ingest_date=2026-03-10/hour=10/part-{i}.ndjson", i, data[a:b])
             for i, (a, b) in enumerate(itertools.pairwise(cuts))]
    read_files(files, RULES, fast)
    read_files(files, RULES, exact, exact_only=True)
    assert exact.exact_lines == exact.lines_read  # the reference really is the exact validator, line by line
    return fast, exact


def assert_same(fast: Batch, exact: Batch) -> None:
    assert fast.quarantine == exact.quarantine
    assert (fast.lines_read, fast.blank_lines) == (exact.lines_read, exact.blank_lines)
    a, b = events_frame(fast).sort("arrival_rank"), events_frame(exact).sort("arrival_rank")
    assert a.to_dicts() == b.to_dicts()


def as_file(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")


# Chunk sizes against the ~20 KB files of `read_both`: chunks cut within files, each file a chunk of its own
# (not copied), and the real size (the files joined into one chunk).
CHUNK_SIZES = (4_096, 32_768, ingest.CHUNK_BYTES)


def hidden_by_escapes(escapes: str, user_id: Any) -> str:
    """A line whose wrong-typed user_id is offset, in the fast path's token counts, by tokens its contact name
    spells with JSON escapes: only the escapes' look-up sends it to the exact validator."""
    text = json.dumps({**json.loads(valid_line(0)), "user_id": user_id})
    return text.replace('"contact_name": "', '"contact_name": "' + escapes)


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bad=st.lists(st.tuples(st.integers(0, 199), mutants()), max_size=6), chunk_bytes=st.sampled_from(CHUNK_SIZES))
@example(bad=[(5, hidden_by_escapes("\\u0022\\u0022", "null"))], chunk_bytes=CHUNK_SIZES[-1])
@example(bad=[(5, hidden_by_escapes("\\u007b", [None])), (90, hidden_by_escapes("\\u005B", [None]))],
         chunk_bytes=CHUNK_SIZES[0])
@example(bad=[(3, json.dumps({**json.loads(valid_line(0)), "source": "null"})),  # a token inside a shaped value
              (4, json.dumps({**json.loads(valid_line(1)), "user_id": True}))], chunk_bytes=CHUNK_SIZES[-1])
@example(bad=[(5, json.dumps({**json.loads(valid_line(2)), "contact_id": 0})),  # ids are positive: 0 is the edge
              (9, json.dumps({**json.loads(valid_line(3)), "workspace_id": 0}))], chunk_bytes=CHUNK_SIZES[-1])
def test_fast_path_agrees_with_the_exact_validator(bad: list[tuple[int, str]], chunk_bytes: int) -> None:
    lines = [valid_line(i) for i in range(200)]
    for position, line in bad:
        lines.insert(position, line)
    with patch.object(ingest, "CHUNK_BYTES", chunk_bytes):
        fast, exact = read_both(as_file(lines))
    assert_same(fast, exact)
    assert fast.exact_lines <= 40 * len(bad) + 1  # plain lines stay on the fast path


@pytest.mark.parametrize("data", [b"\\u\n", b"\\u}\n", b'{"a": 1}\n\\u}\n', b'{"a": "\\u12"}\n'], ids=plain_id)
def test_an_escape_cut_short_at_the_end_of_a_file_is_judged_like_any_bad_line(data: bytes) -> None:
    fast, exact = read_both(data)
    assert_same(fast, exact)
    assert exact.lines_read == data.count(b"\n") and len(exact.quarantine) == exact.lines_read


def test_a_failing_chunk_whose_last_line_is_its_longer_half_is_split_before_that_line() -> None:
    """A chunk Polars cannot decode is split in two at a line end; when no line ends in its second half (one long
    last line), the cut falls before that line. Every line ends decoded or with the exact validator, and the
    bisection stays bounded (a cut at either end would hand back the same chunk for ever)."""
    short = [valid_line(i) for i in range(40)]
    text = as_file([*short, "{" + "x" * 30_000])  # more than half the chunk
    attempts = []

    def counted(chunk: ingest.Chunk, max_line_bytes: int) -> Any:
        attempts.append(chunk[1:])
        assert len(attempts) < 100, f"the bisection does not end: {attempts[-5:]}"
        return real(chunk, max_line_bytes)

    real = ingest._attempt
    with patch.object(ingest, "_attempt", counted):
        frames, exact = ingest.decode_chunk((text, 1, 41), max_line_bytes=50_000)
    decoded = [n for _, frame in frames for n in frame["line_no"]]
    assert 41 in exact and len(decoded) >= 20  # the first half decodes; the long line's part goes exact whole
    assert sorted(decoded + exact) == list(range(1, 42))


@pytest.mark.parametrize("sizes", [(250, 250), (1_050, 30, 480), (60, 60, 60), (10,) * 25, (100, 100)])
def test_chunks_are_cut_at_line_ends_about_a_chunk_long(sizes: tuple[int, ...]) -> None:
    """Files (pieces of 10-byte lines) become chunks of at least CHUNK_BYTES each (the last may be shorter) that
    end at a line end, in order, spanning files, with their first line's number and their line count."""
    pieces = [b"".join(b"%09d\n" % (start + n) for n in range(size // 10))
              for start, size in zip(itertools.accumulate((0, *(s // 10 for s in sizes))), sizes, strict=False)]
    ends = [np.flatnonzero(np.frombuffer(piece, dtype=np.uint8) == 10) for piece in pieces]
    with patch.object(ingest, "CHUNK_BYTES", 100):
        chunks = ingest._chunks(pieces, ends)
    assert b"".join(bytes(text) for text, _, _ in chunks) == b"".join(pieces)
    assert all(100 <= len(text) < 110 or (25 <= len(text) <= 100 and text in pieces) for text, _, _ in chunks[:-1])
    first = 1
    for text, first_line, lines in chunks:
        assert bytes(text).endswith(b"\n") and (first_line, lines) == (first, bytes(text).count(b"\n"))
        assert int(bytes(text)[:9]) == first_line - 1  # each line holds its own number, from 0
        first += lines


@pytest.mark.parametrize(("text", "limit", "fits"), [
    (b"\n" + b"a\n" * 10, 4, True),  # a first line that is empty (a newline at offset 0) is short
    (b"a\n" * 10, 4, True),
    (b"abcd\n" * 10, 4, False),  # 5 bytes a line, newline included
    (b"x" * 9 + b"\n", 4, False),
    (b"x" * 4, 4, True),  # no longer than the limit in all
], ids=plain_id)
def test_longest_line_fits_finds_the_line_over_the_limit(text: bytes, limit: int, fits: bool) -> None:
    assert ingest._longest_line_fits(text, limit) is fits


def test_clean_files_never_touch_the_exact_validator() -> None:
    fast, exact = read_both(as_file([valid_line(i) for i in range(500)]))
    assert_same(fast, exact)
    assert fast.exact_lines == 0 and fast.lines_read == 500


def test_a_wrong_type_sends_only_its_own_line_to_the_exact_validator() -> None:
    """A number where text belongs decodes to null without a `null` token: the chunk's counts disagree, and only
    the lines that do not add up are judged by the exact validator, at every chunk size (the chunk used to be
    bisected down to 32 lines, decoding it again at every split)."""
    lines = [valid_line(i) for i in range(300)]
    for n in (10, 150, 290):
        lines[n] = json.dumps({**json.loads(valid_line(n)), "contact_name": n})
    for chunk_bytes in CHUNK_SIZES:
        with patch.object(ingest, "CHUNK_BYTES", chunk_bytes):
            fast, exact = read_both(as_file(lines))
        assert_same(fast, exact)
        assert fast.exact_lines == 3
        assert [(q[3], q[4]) for q in fast.quarantine] == [("bad_type:contact_name", f"ok-{n}") for n in (10, 150, 290)]


def test_a_producer_that_leaves_out_optional_fields_is_judged_exactly() -> None:
    """Optional fields left out instead of written as null make every line's token counts disagree: every line
    goes to the exact validator (docs/performance.md), including chunks of which no line stays on the fast path."""
    lines = [json.dumps({k: v for k, v in json.loads(valid_line(i)).items() if v is not None}) for i in range(300)]
    for chunk_bytes in CHUNK_SIZES:
        with patch.object(ingest, "CHUNK_BYTES", chunk_bytes):
            fast, exact = read_both(as_file(lines))
        assert_same(fast, exact)
        assert fast.exact_lines == 300 and fast.quarantine == []


def test_free_text_that_spells_json_tokens_stays_on_the_fast_path() -> None:
    """Names holding `null`, braces, brackets and quotes are ordinary text: counted inside the decoded strings,
    they neither break the token check nor send the chunk to the exact validator."""
    names = ["null", "{Ann}", "[Bob]", 'O"Neil {null} [x]', "a Static(1)", "nullnull{[", "x\\u0000y"]
    lines = [valid_line(i) for i in range(200)]
    for i, name in enumerate(names):
        body = json.loads(valid_line(i))
        lines[i * 20] = json.dumps({**body, "contact_name": name, "user_name": name if body.get("user_id") else None})
    fast, exact = read_both(as_file(lines))
    assert_same(fast, exact)
    assert fast.exact_lines == 0 and fast.quarantine == []
    stored = set(events_frame(fast)["contact_name"].to_list())
    assert set(names) <= stored


def test_every_event_type_and_source_pair() -> None:
    """Allowed pairs are kept and the others quarantined, as the exact validator does, with every source name the
    contract knows plus one it does not."""
    lines = [valid_line(i) for i in range(100)]
    for t, kind in enumerate(EVENT_TYPES):
        for s, source in enumerate((*SOURCES, "fax")):
            body = json.loads(valid_line(2))  # a user's deletion: no channel, a user
            body.update(event_id=f"pair-{t}-{s}", event_type=kind, source=source, merged_contact_id=7, channel_id=5,
                        channel_name="WA", channel_type="whatsapp")
            lines.insert(t * 10 + s, json.dumps(body))
    fast, exact = read_both(as_file(lines))
    assert_same(fast, exact)
    kept = {tuple(r) for r in events_frame(fast).filter(pl.col("event_id").str.starts_with("pair-"))
            .select("event_type", "source").rows()}
    assert kept == {(kind, source) for kind, sources in ALLOWED_SOURCES.items() for source in sources}


def test_crlf_and_a_missing_final_newline() -> None:
    data = "\r\n".join(valid_line(i) for i in range(100)).encode()
    fast, exact = read_both(data)
    assert_same(fast, exact)
    assert fast.exact_lines == 0


OPTIONAL_IDS = ("channel_id", "user_id", "merged_contact_id")
MISTYPED_IDS: list[Any] = ["5", 5.0, 2**64, "null", True, [None], {"x": None}]


@pytest.mark.parametrize("wrong", MISTYPED_IDS, ids=plain_id)
@pytest.mark.parametrize("name", OPTIONAL_IDS)
def test_a_mistyped_optional_id_is_quarantined_whatever_else_its_chunk_holds(name: str, wrong: Any) -> None:
    """The decoder reads a mistyped id as null. An unknown field set to null on another line of the chunk, or on
    the same line, or the same key given twice, must not make that look like an explicit null: the fast path
    may only accept what the exact validator accepts."""
    body = json.loads(valid_line(1))  # a broadcast connection: channel set, no user, no merge
    lines = [valid_line(i) for i in range(100)]
    lines[10] = json.dumps({**body, "event_id": "bad-alone", name: wrong})
    lines[20] = json.dumps({**json.loads(valid_line(20)), "extra": None})  # another line's unknown null
    lines[30] = json.dumps({**body, "event_id": "bad-with-null", name: wrong, "extra": None, "more": None})
    lines[40] = json.dumps({**body, "event_id": "bad-twice"}).replace("{", f'{{"{name}": {json.dumps(wrong)}, ', 1)
    lines[50] = json.dumps({**json.loads(valid_line(50)), "note": "null"}, separators=(",", ":"))
    for chunk_bytes in CHUNK_SIZES:
        with patch.object(ingest, "CHUNK_BYTES", chunk_bytes):
            fast, exact = read_both(as_file(lines))
        assert_same(fast, exact)
        quarantined = {q[4] for q in fast.quarantine}
        assert {"bad-alone", "bad-with-null", "bad-twice"} <= quarantined, quarantined


def test_explicit_nulls_in_either_spelling_stay_on_the_fast_path() -> None:
    """Optional fields written as `"f":null` or `"f": null` are the plain case: no line goes to the exact path."""
    lines = [json.dumps(json.loads(valid_line(i)), separators=(",", ":") if i % 2 else (", ", ": "))
             for i in range(300)]
    fast, exact = read_both(as_file(lines))
    assert_same(fast, exact)
    assert fast.exact_lines == 0 and fast.quarantine == []


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(st.tuples(st.integers(EARLIEST_MICROS // 1_000_000, 4_102_444_800),  # 1970…2100
                          st.integers(0, 6), st.integers(0, 999_999),
                          st.one_of(st.just(None), st.integers(-(23 * 60 + 59), 23 * 60 + 59))),
                min_size=1, max_size=50))
def test_fast_timestamp_parse_agrees_with_the_exact_one(stamps: list[tuple[int, int, int, int | None]]) -> None:
    """Every spelling the fast path's pattern admits: any instant, 0–6 fraction digits, Z or any offset."""
    texts = []
    for seconds, digits, fraction, offset in stamps:
        local = datetime.fromtimestamp(seconds, UTC) + timedelta(minutes=offset or 0)
        text = local.strftime("%Y-%m-%dT%H:%M:%S")
        if digits:
            text += "." + f"{fraction:06d}"[:digits]
        if offset is None:
            text += "Z"
        else:
            sign = "-" if offset < 0 else "+"
            text += f"{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"
        texts.append(text)
    frame = pl.DataFrame({"occurred_at": texts})
    assert frame.select(pl.col("occurred_at").str.contains(_PLAIN_TIMESTAMP)).to_series().all()
    fast = frame.select(_timestamp_micros()).to_series().to_list()
    assert fast == [parse_timestamp(t) for t in texts]
