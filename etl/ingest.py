"""Reading an arrival day's landing partition (its layout, the workspaces file, every file of the night): a
vectorised fast path, with the exact validator as the judge.

Every line ends as exactly one of: a valid event row, a quarantine row with a reason, or a blank line.
`etl.validate` is the contract's reference implementation (one line at a time, ~20 k lines/s). This module gets
the same answer at Polars speed for the lines that are plainly valid, and hands every other line to it:

1. A chunk (~8 MB of the day's files: one file as it is, or several joined) is decoded by Polars with a strict
   schema: free-text fields as Binary (anything but a JSON string decodes to null), ids as Int64 (anything but an
   integer in range decodes to null); the event type, source and timestamp as String (a number or bool there
   becomes text that fails its rule in step 2). Blank lines, which Polars skips, are located and numbered apart; a
   decoding error splits the chunk in two, down to a few lines, which go to the exact validator. The `null`, `:`,
   `"` and bracket tokens of the raw text must be what the decoded rows explain (`_rows_not_adding_up`), over the
   chunk or else line by line: the lines that do not add up go to the exact validator.
2. Every rule of the contract is checked as one Polars expression over the decoded rows. Rows that fail any rule,
   or that the fast path cannot judge (unusual timestamp spellings, NUL characters, ...), are re-read by the
   exact validator, which gives the reason. The fast path only ever *accepts*; it never names a reason.

`tests/unit/test_ingest.py` runs both paths over hostile input and demands identical results.
"""

from __future__ import annotations

import hashlib
import logging
import re
import struct
import zlib
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from typing import Any

import numpy as np
import polars as pl

from etl.contract import (
    ALLOWED_SOURCES,
    CONNECTED,
    EVENT_SCHEMA,
    EVENT_TYPES,
    MERGED,
    REQUIRED_FIELDS,
    SOURCES,
    TEXT_FIELDS,
)
from etl.errors import EtlError
from etl.progress import Progress
from etl.settings import ReadLimits
from etl.storage import Storage, UnsafeLink
from etl.validate import EARLIEST_MICROS, Invalid, ValidationRules, event_id_hint, validate_line
from etl.windows import FIRST_DAY, LAST_DAY
from etl.workspaces import Workspaces, WorkspacesError, parse_workspaces

log = logging.getLogger(__name__)

FREE_TEXT_FIELDS = ("event_id", "contact_name", "channel_name", "channel_type", "user_name")
VALIDATED_COLUMNS = tuple(c for c in EVENT_SCHEMA if c not in ("ingest_date", "arrival_key"))
# Text that must match an enumeration or the timestamp pattern: decoded as String, where a number or bool is written
# as text (objects and arrays too, but their brackets fail the token counts), which then fails its rule. ~1 CPU-s
# less per 10 M lines than Binary plus a cast.
SHAPED_TEXT_FIELDS = ("event_type", "occurred_at", "source")
_DECODE_SCHEMA: dict[str, Any] = {
    c: pl.String() if c in SHAPED_TEXT_FIELDS else pl.Binary() if c in TEXT_FIELDS else pl.Int64()
    for c in VALIDATED_COLUMNS}
CHUNK_BYTES = 8 * 1024 * 1024  # one Polars decode; a line it cannot decode costs a bisection of its chunk
# Chunks decoded at once: one more than the cores here, so that one chunk's numpy and Python steps run while
# others are in Polars (2 → 3 threads: reading 10 M lines 23 s → 20 s; 4 was no better).
DECODE_THREADS = 3
_SMALLEST_CHUNK = 32  # lines; a failing chunk this small goes to the exact validator whole
# The one timestamp spelling the fast path parses itself; any other valid RFC 3339 form takes the exact path.
# ASCII digits only: the regex engine's `\d` is Unicode-aware.
_PLAIN_TIMESTAMP = (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"
                    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$")


# The decoder's rendering of an integer beyond 64 bits in a text field (a wrong type the token counts cannot see),
# and NUL (also what the decoder makes of a lone surrogate): free text holding either is left to the exact
# validator. Other text fields holding them fail the rules anyway.
_BIG_INTEGER_PREFIX = "Static("
_NUL = "\x00"
# Free text that needs a closer look: a token `_rows_not_adding_up` counts, or one of the values above.
_TOKENS = ("null", "{", "[", '"')
_RARE_TEXT = (*_TOKENS, ":", _NUL, _BIG_INTEGER_PREFIX)


@dataclass
class Batch:
    """What reading one arrival day produced."""

    valid: list[pl.DataFrame] = field(default_factory=list)
    quarantine: list[tuple[Any, ...]] = field(default_factory=list)
    lines_read: int = 0
    blank_lines: int = 0
    exact_lines: int = 0  # lines judged by the exact validator (for the run summary and the benchmark)
    files: list[str] = field(default_factory=list)  # the files read (arrival ranks index this list)
    damaged_files: dict[str, str] = field(default_factory=dict)  # file -> why it was not read whole
    skipped_files: dict[str, str] = field(default_factory=dict)  # key -> why it is not a landing file
    input_digest: Any = field(default_factory=hashlib.sha256)
    keep: pl.Expr | None = None  # the valid rows kept (an ingest shard's); all when None


# File-level reasons for a landing file refused whole (not read); the other file-level reasons (a damaged gzip) mark
# a file read in part.
REFUSED_WHOLE = frozenset({"file_too_large", "expansion_ratio_exceeded", "too_many_lines", "symbolic_link"})


@dataclass(frozen=True)
class Admitted:
    """A landing file as it can be read: its text (None when the file is refused whole) and the damage or bound
    that stopped the read, if any (a file-level quarantine reason)."""

    text: bytes | None
    problem: str | None = None


def admit(name: str, raw: bytes, limits: ReadLimits) -> Admitted:
    """Decompress (`.gz`) and bound one landing file. A damaged gzip keeps every line that could be read; a file past
    a bound is refused whole, read no further than the bound (memory stays bounded)."""
    if name.endswith(".gz"):
        cap = min(limits.max_file_bytes, max(limits.expansion_floor, limits.max_expansion_ratio * len(raw)))
        text, problem = decompress(raw, cap)
        if problem == "too_large":
            return Admitted(None, "file_too_large" if cap == limits.max_file_bytes else "expansion_ratio_exceeded")
    else:
        text, problem = raw, ("file_too_large" if len(raw) > limits.max_file_bytes else None)
        if problem:
            return Admitted(None, problem)
    lines = text.count(b"\n") + (1 if text and not text.endswith(b"\n") else 0)
    if lines > limits.max_file_lines:
        return Admitted(None, "too_many_lines")
    return Admitted(text, problem)


_INFLATE_BLOCK = 64 * 1024


def decompress(data: bytes, max_bytes: int = 2**62) -> tuple[bytes, str | None]:
    """gunzip every member (RFC 1952) -> (what could be read, None or what went wrong): `truncated_gzip` (the data
    ends early), `corrupt_gzip` (a bad header or deflate stream: everything before the damage is kept),
    `gzip_checksum_mismatch` (a member's CRC-32 or length trailer disagrees: all of it was read), or `too_large`
    (more than `max_bytes` would come out: reading stops there)."""
    out = bytearray()
    problem: str | None = None
    pos = 0
    # members follow one another; trailing zero padding ends the stream (counted only once a zero byte is met)
    while pos < len(data) and (data[pos] != 0 or data.count(b"\0", pos) < len(data) - pos):
        body = _gzip_header_end(data, pos)
        if body is None:
            return bytes(out), "corrupt_gzip"
        first = len(out)
        end, failure = _inflate(data, body, out, max_bytes)
        if end is None:
            return bytes(out), failure
        if len(data) - end < 8:
            return bytes(out), "truncated_gzip"
        crc, size = struct.unpack_from("<II", data, end)
        with memoryview(out) as written:
            if crc != zlib.crc32(written[first:]) or size != (len(out) - first) & 0xFFFFFFFF:
                problem = problem or "gzip_checksum_mismatch"
        pos = end + 8
    return bytes(out), problem


def _gzip_header_end(data: bytes, pos: int) -> int | None:
    """Where the deflate stream of the gzip member at `pos` starts (None if there is no valid header)."""
    if data[pos:pos + 3] != b"\x1f\x8b\x08" or len(data) - pos < 10:
        return None
    flags, at = data[pos + 3], pos + 10
    if flags & 0x04:  # FEXTRA
        if len(data) - at < 2:
            return None
        at += 2 + int.from_bytes(data[at:at + 2], "little")
    for flag in (0x08, 0x10):  # FNAME, FCOMMENT: zero-terminated
        if flags & flag:
            end = data.find(b"\0", at)
            if end < 0:
                return None
            at = end + 1
    at += 2 if flags & 0x02 else 0  # FHCRC
    return at if at <= len(data) else None


def _inflate(data: bytes, start: int, out: bytearray, max_bytes: int) -> tuple[int | None, str | None]:
    """Inflate the raw deflate stream at data[start:] into `out` -> (the offset just past it, None), or (None,
    the problem). Fed in blocks; a block that fails is fed again a byte at a time from the state before it, so
    that every byte zlib could produce before the damage is kept."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    view = memoryview(data)
    pos, step, careful_until = start, _INFLATE_BLOCK, start
    while pos < len(data):
        block = view[pos:pos + step]
        saved, kept = inflater.copy(), len(out)
        try:
            pending: bytes | memoryview = block
            while pending and not inflater.eof:
                out += inflater.decompress(pending, max(1, max_bytes - len(out) + 1))
                if len(out) > max_bytes:
                    return None, "too_large"
                pending = inflater.unconsumed_tail
        except zlib.error:
            if step == 1:
                return None, "corrupt_gzip"
            del out[kept:]
            inflater, step, careful_until = saved, 1, pos + len(block)
            continue
        if inflater.eof:
            return pos + len(block) - len(inflater.unused_data), None
        pos += len(block)
        if step == 1 and pos >= careful_until:
            step = _INFLATE_BLOCK
    return None, "truncated_gzip"


# ---------------------------------------------------------------- step 1: decoding chunks

def _null_tokens(view: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Where b"null" starts in a byte array, as (shift, a match per 32-bit word from that shift): four aligned
    32-bit comparisons instead of byte-wise scanning."""
    token = int.from_bytes(b"null", "little")
    return [(shift, view[shift: shift + (len(view) - shift) // 4 * 4].view("<u4") == token) for shift in range(4)]


def _openings(view: np.ndarray) -> np.ndarray:
    """Where `{` and `[` are in a byte array, in one pass: setting bit 0x20 maps `[` (0x5B) onto `{` (0x7B) and no
    other byte onto it; done in place, it is ~2x cheaper than looking for each."""
    folded = np.bitwise_or(view, np.uint8(0x20))
    return np.equal(folded, np.uint8(ord("{")), out=folded.view(bool))


# JSON escapes of the characters the token counts look for (`"`, `:`, `{`, `[`, and the letters of `null`): decoded
# text then holds a token its raw line does not spell (see `_rows_not_adding_up`).
_ESCAPE_TAILS = (b"u0022", b"u003a", b"u003A", b"u007b", b"u007B", b"u005b", b"u005B", b"u006e", b"u006E", b"u0075",
                 b"u006c", b"u006C")


def _escaped_tokens(view: np.ndarray) -> np.ndarray:
    """Offsets of the escapes in _ESCAPE_TAILS (backslashes are rare, so only their neighbours are looked at)."""
    slashes = np.flatnonzero(view[:max(len(view) - 5, 0)] == ord("\\"))
    slashes = slashes[view[slashes + 1] == ord("u")]
    if not len(slashes):
        return slashes
    following = np.stack([view[slashes + k] for k in range(1, 6)], axis=1).copy().view("S5")[:, 0]
    return slashes[np.isin(following, np.array(_ESCAPE_TAILS, "S5"))]


class _LineEnds:
    """Where a chunk's lines end, found only when asked (a chunk whose totals agree never asks)."""

    def __init__(self, view: np.ndarray) -> None:
        self.view = view

    @cached_property
    def offsets(self) -> np.ndarray:
        return np.flatnonzero(self.view == ord("\n"))


def _rows_not_adding_up(chunk: np.ndarray, newlines: _LineEnds, row_lines: np.ndarray, frame: pl.DataFrame,
                        positions: pl.Series, inside: pl.DataFrame) -> np.ndarray:
    """The rows (one per line) whose line holds a JSON token its decoded row does not explain; they go to the exact
    validator. Four tokens are counted: `null` (a field that decoded to null, or text inside a decoded value),
    `:` (one per field of the contract, or text), `"` (two per key and per text value, or text) and `{`/`[` (the
    line's own object, or text).

    A number or bool of the wrong type decodes to null without a `null` token (one `null` short); a string of the
    wrong type adds two quotes; an object or array a bracket. A field left out is one `null`, one `:` and two
    quotes short; an unknown field or a key given twice is one `:` and two quotes over, plus its value's tokens.
    So on a line whose four counts agree, quotes minus twice the colons (never negative) show no stray string,
    brackets no nested value, and then the colons say that extra keys and missing fields are as many, so the
    `null` tokens of the extra keys, at most one each, make up for the missing fields and leave no room for a
    wrong-typed value. The same argument holds for a chunk's totals, provided no line can be short of a token
    some other way: no required field decoded null (such rows fail the rules anyway) and no text spelling a
    token with an escape (`\\u003a`). Otherwise the counts are compared line by line, and lines holding such an
    escape are suspect.

    `inside` holds the tokens inside the text of the rows at `positions` (see `_rare_rows`); `row_lines` each
    row's line (`newlines`: where the lines end)."""
    expected = frame.select(
        nulls=pl.sum_horizontal(pl.col(c).is_null() for c in frame.columns),
        colons=len(VALIDATED_COLUMNS) + pl.sum_horizontal(
            pl.col(c).str.count_matches(":", literal=True).fill_null(0) for c in SHAPED_TEXT_FIELDS),
        quotes=2 * len(VALIDATED_COLUMNS) + 2 * pl.sum_horizontal(pl.col(c).is_not_null() for c in TEXT_FIELDS),
        opens=pl.lit(1, pl.Int64),
        missing_key=pl.any_horizontal(pl.col(c).is_null() for c in REQUIRED_FIELDS),
    )
    counts = {name: expected[name].to_numpy().astype(np.int64) for name in ("nulls", "colons", "quotes", "opens")}
    rows = positions.to_numpy()
    for name, values in counts.items():
        values[rows] += inside[name].to_numpy()
    null_tokens = _null_tokens(chunk)
    found = {"colons": chunk == ord(":"), "quotes": chunk == ord('"'), "opens": _openings(chunk)}
    escaped = _escaped_tokens(chunk)
    if (not len(escaped) and not expected["missing_key"].any()
            and sum(int(np.count_nonzero(matches)) for _, matches in null_tokens) == counts["nulls"].sum()
            and all(int(np.count_nonzero(found[name])) == counts[name].sum() for name in found)):
        return np.empty(0, np.int64)

    def per_row(offsets: np.ndarray) -> np.ndarray:
        """How many of `offsets` fall on each row's line."""
        ends = newlines.offsets
        return np.bincount(np.searchsorted(ends, offsets), minlength=len(ends))[row_lines]

    found_at = {name: np.flatnonzero(where) for name, where in found.items()}
    found_at["nulls"] = np.concatenate([np.flatnonzero(matches) * 4 + shift for shift, matches in null_tokens])
    suspect = per_row(escaped) > 0
    for name, values in counts.items():
        suspect |= per_row(found_at[name]) != values
    return np.flatnonzero(suspect)


def _rare_rows(frame: pl.DataFrame) -> pl.Series:
    """Positions of the rows whose text holds a token `_rows_not_adding_up` counts (`null`, `{`, `[`, `"`, and `:` in
    free text) or an odd value (`_BIG_INTEGER_PREFIX`, NUL): one multi-pattern (Aho-Corasick) scan per column, ~15 %
    cheaper than a regex of the same alternatives."""
    rare = pl.any_horizontal(
        *(pl.col(c).str.contains_any(list(_RARE_TEXT)) for c in FREE_TEXT_FIELDS),
        *(pl.col(c).str.contains_any(list(_TOKENS)) for c in SHAPED_TEXT_FIELDS))
    return frame.select(rare.fill_null(False).arg_true()).to_series()


def _inside_texts(rare: pl.DataFrame) -> pl.DataFrame:
    """`nulls` (`null` tokens), `opens` (`{` and `[`) and `quotes` inside the decoded text values of each `rare` row,
    and `colons` inside its free text (the colons of the other text fields are counted for every row)."""
    def count(token: str, fields: tuple[str, ...] = TEXT_FIELDS) -> pl.Expr:
        return pl.sum_horizontal(pl.col(c).str.count_matches(token, literal=True).fill_null(0)
                                 for c in fields).cast(pl.Int64)

    return rare.select(nulls=count("null"), opens=count("{") + count("["), quotes=count('"'),
                       colons=count(":", FREE_TEXT_FIELDS))


def _odd(rare: pl.DataFrame) -> pl.Series:
    """Which `rare` rows hold free text the exact validator must judge."""
    return rare.select(pl.any_horizontal(
        pl.col(c).str.starts_with(_BIG_INTEGER_PREFIX) | pl.col(c).str.contains(_NUL, literal=True)
        for c in FREE_TEXT_FIELDS).fill_null(False)).to_series()


@dataclass(frozen=True)
class _Decoded:
    frame: pl.DataFrame  # the chunk's rows, text as String
    odd: pl.Series  # positions of the rows only the exact validator may judge
    row_lines: np.ndarray  # each row's line in the chunk (0-based)
    blank: np.ndarray  # the chunk's blank lines (0-based), which Polars skips


def _blank_lines(view: np.ndarray, newlines: np.ndarray) -> np.ndarray:
    """Lines holding nothing but JSON whitespace (space, tab, CR): Polars skips them."""
    filled = np.cumsum(~np.isin(view, np.array([9, 10, 13, 32], np.uint8)))
    per_line = np.diff(np.concatenate([[0], filled[newlines]]))
    return np.flatnonzero(per_line == 0)


def _decode(chunk: bytes, lines: int) -> _Decoded | None:
    """The chunk decoded with one row per non-blank line (it has `lines`), or None. Rows whose line holds a JSON
    token the decode does not explain are among the odd ones."""
    try:
        frame = pl.read_ndjson(chunk, schema=_DECODE_SCHEMA, ignore_errors=True).with_columns(
            pl.col(name).cast(pl.String) for name in TEXT_FIELDS if name not in SHAPED_TEXT_FIELDS)
    except pl.exceptions.PolarsError:
        return None
    view = np.frombuffer(chunk, np.uint8)
    newlines = _LineEnds(view)
    blank = np.empty(0, np.int64)
    if frame.height != lines:  # blank lines are skipped by Polars: rows are the other lines, if that is all
        blank = _blank_lines(view, newlines.offsets)
        if frame.height != lines - len(blank):
            return None
    row_lines = np.setdiff1d(np.arange(lines), blank, assume_unique=True) if len(blank) else np.arange(lines)
    positions = _rare_rows(frame)
    rare = frame[positions]
    inside = _inside_texts(rare)
    odd = positions.filter(_odd(rare)).to_numpy()
    suspect = _rows_not_adding_up(view, newlines, row_lines, frame, positions, inside)
    return _Decoded(frame, pl.Series(np.union1d(odd, suspect)), row_lines, blank)


def _longest_line_fits(data: bytes, limit: int) -> bool:
    """True only if no line is longer than `limit` bytes: every window of limit/2 bytes holds a newline (a cheap,
    cautious test: a text it refuses is split and its lines judged one by one, with the same outcome)."""
    step = max(1, limit // 2)
    return len(data) <= limit or all(data.find(b"\n", i, i + step) >= 0 for i in range(0, len(data) - step, step))


# A chunk: (text ending with a newline, global number of its first line, its number of lines).
Chunk = tuple[bytes, int, int]


def _attempt(chunk: Chunk, max_line_bytes: int) -> _Decoded | None:
    """`_decode` of one chunk, unless a line is over the size limit (the exact validator names those)."""
    text, _, lines = chunk
    return _decode(text, lines) if _longest_line_fits(text, max_line_bytes) else None


def decode_chunk(chunk: Chunk, max_line_bytes: int) -> tuple[list[tuple[int, pl.DataFrame]], list[int]]:
    """(the chunk's decoded rows with a global `line_no`, each part with its first line number; line numbers the
    exact validator must read).

    A chunk Polars cannot decode with one row per line (a syntax error, a blank line, a line over the size limit)
    is split in two, and so on down to a few lines, which go to the exact validator whole. The parts are tried here
    one after the other: such chunks are rare (a few per night), and the pool's other threads keep the cores busy.
    """
    frames: list[tuple[int, pl.DataFrame]] = []
    exact: list[int] = []
    pending = [chunk]
    while pending:
        text, first, lines = part = pending.pop()
        decoded = _attempt(part, max_line_bytes)
        if decoded is not None:
            frames.append((first, _numbered(decoded, first, exact)))
        elif lines <= _SMALLEST_CHUNK:
            exact.extend(range(first, first + lines))
        else:
            middle = text.find(b"\n", len(text) // 2, len(text) - 1)
            cut = (middle if middle >= 0 else text.rfind(b"\n", 0, len(text) // 2)) + 1
            head = text.count(b"\n", 0, cut)
            pending += [(text[cut:], first + head, lines - head), (text[:cut], first, head)]
    return frames, exact


def _numbered(decoded: _Decoded, first: int, exact: list[int]) -> pl.DataFrame:
    """A decoded chunk with `line_no`, its `odd` rows and blank lines moved to `exact` (which counts blank lines)."""
    frame, odd = decoded.frame, decoded.odd
    frame = frame.with_columns(line_no=pl.Series(decoded.row_lines + first, dtype=pl.Int64))
    exact.extend((decoded.blank + first).tolist())
    if len(odd):
        exact.extend((decoded.row_lines[odd.to_numpy()] + first).tolist())
        frame = frame.filter(~pl.int_range(pl.len()).is_in(odd.implode()))
    return frame


def _chunks(pieces: list[bytes], ends: list[np.ndarray]) -> list[Chunk]:
    """The files' text (each piece ends with a newline; `ends`: its newline offsets) cut at line ends into
    chunks of about CHUNK_BYTES, each copied once from the pieces; a file of a quarter chunk up to a chunk is a
    chunk by itself, not copied at all (−0.8 CPU-s at 10 M lines, and less memory)."""
    chunks: list[Chunk] = []
    parts: list[memoryview] = []
    size, lines, first = 0, 0, 1
    for piece, piece_ends in zip(pieces, ends, strict=True):
        if not parts and CHUNK_BYTES // 4 <= len(piece) <= CHUNK_BYTES:
            chunks.append((piece, first, len(piece_ends)))
            first += len(piece_ends)
            continue
        start, line = 0, 0  # offset and index of the piece's first line not yet in a chunk
        while line < len(piece_ends):
            # the line holding the chunk's last wanted byte ends it (or the piece's last line does)
            last = min(int(np.searchsorted(piece_ends, start + CHUNK_BYTES - size - 1)), len(piece_ends) - 1)
            end = int(piece_ends[last]) + 1
            parts.append(memoryview(piece)[start:end])
            size, lines, start, line = size + end - start, lines + last + 1 - line, end, last + 1
            if size >= CHUNK_BYTES:
                chunks.append((b"".join(parts), first, lines))
                parts, size, lines, first = [], 0, 0, first + lines
    if parts:
        chunks.append((b"".join(parts), first, lines))
    return chunks


# ---------------------------------------------------------------- step 2: the rules as one expression

def _timestamp_micros() -> pl.Expr:
    """`_PLAIN_TIMESTAMP` text -> microseconds since the epoch (UTC); null where the calendar says no.

    chrono's RFC 3339 reader (`%+`) accepts more spellings than `_PLAIN_TIMESTAMP`; rows that do not match the
    pattern fail the rules anyway and take the exact path, so only the pattern's spellings matter here. It is
    ~1.6x faster than slicing the text into its parts (which this replaced; the ingest tests compare both paths).
    No cache: almost every instant is unique, and hashing them made the parse ~15 % slower.
    """
    return (pl.col("occurred_at").str.to_datetime("%+", time_unit="us", time_zone="UTC", strict=False, cache=False)
            .dt.epoch("us"))


def _source_allowed() -> pl.Expr:
    """The source is one the event type allows (null if either is): string comparisons against the shorter of
    each type's allowed and disallowed lists, ~2x faster than looking up "type|source" strings."""
    checks = []
    for event_type, allowed in ALLOWED_SOURCES.items():
        disallowed = [s for s in SOURCES if s not in allowed]
        if len(disallowed) <= len(allowed):
            fits = ~pl.any_horizontal(pl.col("source") == s for s in disallowed) if disallowed else pl.lit(True)
        else:
            fits = pl.any_horizontal(pl.col("source") == s for s in sorted(allowed))
        checks.append((pl.col("event_type") != event_type) | fits)
    return pl.all_horizontal(checks)


def fast_rules(rules: ValidationRules) -> pl.Expr:
    """True where a row certainly passes every rule of `etl.validate.validate_event`."""
    c = pl.col
    usable = sorted(rules.workspace_ids - set(rules.broken_workspaces))
    checks = [c(name).is_not_null() for name in REQUIRED_FIELDS]
    checks += [c(name) > 0 for name in ("workspace_id", "contact_id")]
    checks += [c(name).is_null() | (c(name) > 0) for name in ("channel_id", "user_id", "merged_contact_id")]
    checks += [
        c("event_id").str.contains("[0-9A-Za-z]"),  # certainly not blank, whatever Python calls whitespace
        c("event_type").is_in(EVENT_TYPES),
        c("source").is_in(SOURCES),
        _source_allowed(),
        c("occurred_at").str.contains(_PLAIN_TIMESTAMP),
        c("occurred_micros").is_between(EARLIEST_MICROS, rules.latest_micros),
        (c("event_type") != CONNECTED) | c("channel_id").is_not_null(),
        c("channel_id").is_null() | (c("channel_name").is_not_null() & c("channel_type").is_not_null()),
        (c("source") != "user") | (c("user_id").is_not_null() & c("user_name").is_not_null()),
        (c("event_type") != MERGED) | (c("merged_contact_id").is_not_null()
                                       & (c("merged_contact_id") != c("contact_id"))),
        c("workspace_id").is_in(usable),
    ]
    return pl.all_horizontal(checks).fill_null(False)


def judge(decoded: pl.DataFrame, rules: ValidationRules) -> pl.DataFrame:
    """Decoded rows -> typed rows with `passed` (the fast path accepts them) and `line_no`."""
    return (
        decoded.lazy()
        .with_columns(occurred_micros=_timestamp_micros())
        .with_columns(passed=fast_rules(rules))
        .with_columns(occurred_at=pl.col("occurred_micros").cast(pl.Datetime("us", "UTC")))
        .drop("occurred_micros")
        .collect()
    )


# ---------------------------------------------------------------- one file, one day

@dataclass(frozen=True)
class LandingFile:
    relative: str  # the key under events/, as arrival keys name it
    rank: int  # position in the arrival day's sorted keys: arrival order across files
    data: bytes  # decompressed


@dataclass(frozen=True)
class DecodedGroup:
    """Some landing files decoded as one text: the fast path's rows and the lines left to the exact validator."""

    lines: _Lines
    frames: list[pl.DataFrame]  # decoded rows with a global `line_no`
    exact: list[int]  # global line numbers


@dataclass(frozen=True)
class DecodingGroup:
    """Some landing files whose chunks a pool is decoding."""

    lines: _Lines
    chunks: list[Future[tuple[list[tuple[int, pl.DataFrame]], list[int]]]]
    exact: list[int]  # global line numbers

    def result(self) -> DecodedGroup:
        """Wait for the chunks; their rows in line order."""
        frames, exact = [], list(self.exact)
        for chunk in self.chunks:
            decoded, left = chunk.result()
            frames += decoded
            exact += left
        return DecodedGroup(self.lines, [frame for _, frame in sorted(frames, key=lambda f: f[0])], sorted(exact))


def start_decoding(files: list[LandingFile], rules: ValidationRules, pool: Executor, exact_only: bool
                   ) -> DecodingGroup:
    """Cut some landing files (a file without a final newline gets one) into chunks and hand them to `pool`.
    Chunks span files, which keeps Polars' per-call cost off small files. One pool serves every group of a night
    (`etl.pipeline.read_partition`): a thread takes the next chunk as soon as it is free, whichever group it is
    from. Touches no batch. `exact_only` leaves every line to the exact validator."""
    pieces = [f.data if not f.data or f.data.endswith(b"\n") else f.data + b"\n" for f in files]
    ends = [np.flatnonzero(np.frombuffer(p, np.uint8) == ord("\n")) for p in pieces]
    lines = _Lines(pieces, ends, files)
    if exact_only:
        return DecodingGroup(lines, [], list(range(1, int(lines.firsts[-1]))))
    return DecodingGroup(lines, [pool.submit(decode_chunk, chunk, rules.max_line_bytes)
                                 for chunk in _chunks(pieces, ends)], [])


def judge_group(group: DecodedGroup, rules: ValidationRules, batch: Batch) -> None:
    """Every line of a decoded group into `batch`: valid rows or quarantine rows.

    Valid rows carry `arrival_rank`: the file's rank × 2³² + the line number, the arrival order as an integer
    (`arrival_keys` spells it out).
    """
    judged = [judge(pl.concat(group.frames, how="vertical", rechunk=True), rules)] if group.frames else []
    passed = [f.filter(pl.col("passed")).select(*VALIDATED_COLUMNS, "line_no") for f in judged]
    exact = sorted(group.exact + [n for f in judged for n in f.filter(~pl.col("passed"))["line_no"].to_list()])
    rows, numbers, blank = _judge_exactly(group.lines, exact, rules, batch)
    batch.lines_read += sum(f.height for f in passed) + len(exact) - blank
    batch.blank_lines += blank
    batch.exact_lines += len(exact) - blank
    if rows:
        slow = pl.DataFrame(rows, schema={**{c: EVENT_SCHEMA[c] for c in VALIDATED_COLUMNS},
                                          "occurred_at": pl.Int64()}, orient="row")
        passed.append(slow.with_columns(occurred_at=pl.col("occurred_at").cast(pl.Datetime("us", "UTC")),
                                        line_no=pl.Series(numbers, dtype=pl.Int64())))
    if passed:
        kept = group.lines.with_arrival(pl.concat(passed, how="vertical"))
        if batch.keep is not None:  # text copied out: a filtered string column still holds all the group's text
            kept = kept.filter(batch.keep)
            kept = kept.with_columns(pl.concat_str([pl.col(c), pl.lit("")]) for c, t in kept.schema.items()
                                     if t == pl.String)
        batch.valid.append(kept)


class _Lines:
    """Global line numbers of some files read as one text -> (file, line in that file), and the raw lines."""

    def __init__(self, pieces: list[bytes], ends: list[np.ndarray], files: list[LandingFile]) -> None:
        self.pieces, self.ends, self.files = pieces, ends, files
        self.firsts = np.cumsum([1] + [len(e) for e in ends])  # the first global line number of each file

    def _index(self, number: int) -> int:
        return int(np.searchsorted(self.firsts, number, side="right")) - 1

    def locate(self, number: int) -> tuple[LandingFile, int]:
        index = self._index(number)
        return self.files[index], number - int(self.firsts[index]) + 1

    def raw(self, number: int) -> bytes:
        index = self._index(number)
        ends, line = self.ends[index], number - int(self.firsts[index])
        start = int(ends[line - 1]) + 1 if line > 0 else 0
        return self.pieces[index][start:int(ends[line])].removesuffix(b"\r")

    def with_arrival(self, frame: pl.DataFrame) -> pl.DataFrame:
        """`line_no` (global) -> `arrival_key` and `arrival_rank`."""
        index = pl.Series(self.firsts[:-1]).search_sorted(frame["line_no"], side="right") - 1
        local = frame["line_no"] - pl.Series(self.firsts[:-1]).gather(index) + 1
        ranks = pl.Series([f.rank for f in self.files], dtype=pl.Int64()).gather(index)
        return frame.with_columns(arrival_rank=(ranks * 2**32) + local).drop("line_no")


def _judge_exactly(lines: _Lines, numbers: list[int], rules: ValidationRules, batch: Batch
                   ) -> tuple[list[tuple[Any, ...]], list[int], int]:
    """The exact validator over the given lines: (valid rows, their line numbers, blank lines seen)."""
    rows, kept, blank = [], [], 0
    for number in numbers:
        raw = lines.raw(number)
        if not raw.strip():
            blank += 1
            continue
        try:
            rows.append(validate_line(raw, rules))
            kept.append(number)
        except Invalid as bad:
            file, line = lines.locate(number)
            shown = raw[:10_000].decode("utf-8", "replace")
            batch.quarantine.append((rules.ingest_date, file.relative, line, bad.reason, event_id_hint(raw), shown))
    return rows, kept, blank


def events_frame(batch: Batch) -> pl.DataFrame:
    """The day's valid rows (VALIDATED_COLUMNS + `arrival_rank`), in no particular order, not copied."""
    if not batch.valid:
        return pl.DataFrame(schema={**{c: EVENT_SCHEMA[c] for c in VALIDATED_COLUMNS}, "arrival_rank": pl.Int64()})
    return pl.concat(batch.valid, how="vertical", rechunk=False)


def take_events(batch: Batch) -> pl.DataFrame:
    """`events_frame`, handed over: the batch keeps no reference, so the caller holds the night's only copy."""
    frame = events_frame(batch)
    batch.valid.clear()
    return frame


def arrival_keys(ranks: pl.Series, files: list[str]) -> pl.Series:
    """`arrival_rank` -> the stored `arrival_key`: the landing file under events/ and the line, `…:000000042`."""
    names = pl.Series([f.removeprefix("events/") + ":" for f in files], dtype=pl.String())
    lines = ranks % 2**32
    last = int(lines.max() or 0)  # type: ignore[arg-type]
    if last <= max(len(ranks), 1 << 16):
        # every line number's label up to the last, looked up: ~2.5x cheaper than formatting each row
        labels = pl.int_range(0, last + 1, eager=True).cast(pl.String).str.pad_start(9, "0").gather(lines)
    else:  # a few rows with huge line numbers: a table that long would cost more than it saves
        labels = lines.cast(pl.String).str.pad_start(9, "0")
    return pl.select(pl.concat_str(pl.lit(names.gather(ranks // 2**32)), pl.lit(labels))).to_series()


# ---------------------------------------------------------------- the landing zone: its layout, a night's partition

_LANDING_FILE = re.compile(r"^events/ingest_date=(\d{4}-\d{2}-\d{2})/hour=(\d{2})/([^/]+\.ndjson(?:\.gz)?)$", re.ASCII)
DECODE_BYTES = 64 * 1024 * 1024  # landing text per group (three groups are in flight): bounds memory


def landing_dates(landing: Storage) -> list[date]:
    """Every arrival day present in the landing zone, oldest first."""
    names = {m.group(1) for k in landing.list("events") if (m := _LANDING_FILE.match(k))}
    days = []
    for name in sorted(names):
        try:
            days.append(check_arrival_day(date.fromisoformat(name)))
        except ValueError:
            raise EtlError(f"landing partition events/ingest_date={name} is not a calendar date: rename or remove "
                           "it, then re-run") from None
    return days


def check_arrival_day(day: date) -> date:
    """The day, if the ETL can process it (its end plus the clock-skew allowance must be a representable instant)."""
    if not FIRST_DAY <= day <= LAST_DAY:
        raise EtlError(f"arrival day {day} is out of range: the ETL processes {FIRST_DAY} to "
                       f"{LAST_DAY}")
    return day


def load_workspaces(landing: Storage) -> Workspaces:
    try:
        data = landing.read_bytes("workspaces.json")
    except FileNotFoundError:
        raise EtlError(
            f"{landing.uri}/workspaces.json is missing: the landing zone must provide the workspaces "
            "dimension (see docs/contract.md) before a night can be processed"
        ) from None
    except OSError as err:  # a folder, no permission
        raise WorkspacesError(f"{landing.uri}/workspaces.json cannot be read ({err.strerror or err}); it must be "
                              "a JSON file (see docs/contract.md)") from None
    return parse_workspaces(data, f"{landing.uri}/workspaces.json")


_HOUR_FOLDER = re.compile(r"^hour=(?:[01]\d|2[0-3])$", re.ASCII)


def landing_inventory(landing: Storage, ingest_date: date) -> tuple[list[str], dict[str, str]]:
    """Every key of an arrival day's partition, sorted into (files to read, {file skipped: why}). Both storages list
    the same keys for the same content (temporary names and links included), so they skip the same files."""
    prefix = f"events/ingest_date={ingest_date.isoformat()}"
    to_read, skipped = [], {}
    for key in landing.list(prefix, everything=True):
        parts = key[len(prefix):].lstrip("/").split("/")
        name = parts[-1]
        if len(parts) == 1 and (not parts[0] or _HOUR_FOLDER.match(parts[0])):
            skipped[key] = "symbolic_link"  # a folder listed as an entry: only a link is
        elif name.startswith("."):  # `.tmp-…` while a writer is at work, or hidden
            skipped[key] = "temporary_or_hidden_name"
        elif name.startswith("_"):  # `_SUCCESS` and the like
            skipped[key] = "marker_file"
        elif _LANDING_FILE.match(key) and _HOUR_FOLDER.match(parts[0]):
            to_read.append(key)
        elif len(parts) != 2 or not _HOUR_FOLDER.match(parts[0]):
            skipped[key] = "not_in_an_hour_folder"
        else:
            skipped[key] = "not_an_ndjson_name"
    return to_read, skipped


def read_partition(landing: Storage, ingest_date: date, rules: ValidationRules, exact_only: bool,
                   limits: ReadLimits, keep: pl.Expr | None = None) -> Batch:
    """Validate every line of the arrival day's files; each line ends valid or quarantined, and each file read,
    refused whole, or skipped (not in the layout), with its reason. With `keep` (an ingest shard's filter), only the
    valid rows it selects are kept, group by group: the others are never all held at once."""
    prefix = f"events/ingest_date={ingest_date.isoformat()}"
    keys, skipped = landing_inventory(landing, ingest_date)
    if not keys:
        also = f" (skipped, not in the layout: {sorted(skipped)[:5]})" if skipped else ""
        raise EtlError(
            f"no landing files for ingest_date={ingest_date} under {landing.uri}/{prefix}/{also}: the feed has "
            "not delivered this night (or delivered it elsewhere). Refusing to report zero contacts; "
            "re-run the night once the partition is complete."
        )
    batch = Batch(skipped_files=skipped, keep=keep)
    group: list[LandingFile] = []
    group_bytes = 0
    # Three steps overlap: this thread reads, hashes and cuts a group's files into chunks, a pool of threads decodes
    # chunks without pause (the next group's as soon as a thread is free), and this thread then judges the group
    # before (file reads, gunzip, SHA-256, numpy and Polars release the GIL). Only this thread adds to the batch.
    with Progress(len(keys), "reading", " files") as bar, ThreadPoolExecutor(DECODE_THREADS) as pool:
        decoding: DecodingGroup | None = None

        def decode_next(files: list[LandingFile]) -> None:
            nonlocal decoding
            previous, decoding = decoding, start_decoding(files, rules, pool, exact_only)
            if previous is not None:
                judge_group(previous.result(), rules, batch)

        for key in keys:
            relative = key[len("events/"):]
            try:
                if landing.size(key) > limits.max_file_bytes:  # refused unread: memory stays bounded
                    raw, admitted = b"", Admitted(None, "file_too_large")
                else:
                    raw = landing.read_bytes(key)
                    admitted = admit(key, raw, limits)
            except UnsafeLink:
                raw, admitted = b"", Admitted(None, "symbolic_link")
            except OSError as err:
                raise EtlError(f"cannot read landing file {landing.uri}/{key}: {err}") from err
            batch.input_digest.update(f"{key}\0{hashlib.sha256(raw).hexdigest()}\n".encode())
            bar.advance()
            if admitted.problem:
                batch.damaged_files[key] = admitted.problem
                batch.quarantine.append((ingest_date, relative, None, admitted.problem, None, None))
            if admitted.text is None:
                continue
            batch.files.append(key)
            group.append(LandingFile(relative, len(batch.files) - 1, admitted.text))
            group_bytes += len(admitted.text)
            if group_bytes >= DECODE_BYTES:
                decode_next(group)
                group, group_bytes = [], 0
        if group:
            decode_next(group)
        if decoding is not None:
            judge_group(decoding.result(), rules, batch)
    return batch
