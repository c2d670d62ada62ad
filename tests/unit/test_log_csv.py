"""The vectorised CSV writer against the standard library's, cell for cell, on hostile values."""

from __future__ import annotations

import csv
import io

import polars as pl

from etl.csv_logs import CSV_COLUMNS, log_csv, log_csv_rows, neutralise

HOSTILE = ["=1+2", 'a"b', "line\nbreak", "\tx", "-5", "@SUM(A1)", "é ünï 👋", "", None, "plain", "+x", "\r\n",
           "a,b", "'q", "=HYPERLINK(\"http://x\")"]


def reference_csv(frame: pl.DataFrame) -> bytes:
    """RFC 4180 via the csv module, one Python call per cell: the slow, obviously right version."""
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for row in frame.select(CSV_COLUMNS).iter_rows():
        writer.writerow(["" if v is None else neutralise(str(v)) for v in row])
    return ("\ufeff" + out.getvalue()).encode("utf-8")


def log_of(values: list[str | None]) -> pl.DataFrame:
    n = len(values)
    return pl.DataFrame({
        "timestamp_local": ["2026-01-01 10:00:00"] * n, "timestamp_utc": ["2026-01-01T10:00:00.000000Z"] * n,
        "contact_id": list(range(1, n + 1)), "contact_name": values, "source": ["user"] * n,
        "user_id": [None if i % 2 else i + 1 for i in range(n)], "user_name": values[::-1],
        "channel_id": [3] * n, "channel_name": values, "channel_type": ["sms"] * n,
        "merged_contact_id": [None] * n, "event_id": [f"{v}-{i}" for i, v in enumerate(values)],
    })


def test_vectorised_csv_is_byte_identical_to_the_csv_module() -> None:
    frame = log_of(HOSTILE)
    assert log_csv(frame) == reference_csv(frame)
    assert log_csv(frame.clear()) == reference_csv(frame.clear())


def test_no_cell_a_spreadsheet_would_run_as_a_formula() -> None:
    rows = list(csv.reader(io.StringIO(log_csv(log_of(HOSTILE)).decode("utf-8-sig"), newline="")))
    assert rows[0] == list(CSV_COLUMNS) and len(rows) == len(HOSTILE) + 1
    assert not [cell for row in rows[1:] for cell in row if cell[:1] in ("=", "+", "-", "@", "\t", "\r", "\n")]


def test_integer_columns_are_neutralised_by_their_sign_like_their_text() -> None:
    """Ids are judged by sign (cheaper than matching their text): a negative id's text starts with "-", which a
    spreadsheet reads as a formula, so it is quoted exactly as the text rule would; 0 and positives are not."""
    frame = log_of(["a", "b", "c", "d"]).with_columns(
        contact_id=pl.Series([-1, 0, 7, -(2**63)]), merged_contact_id=pl.Series([None, -12, 3, 0]))
    assert log_csv(frame) == reference_csv(frame)
    rows = list(csv.reader(io.StringIO(log_csv(frame).decode("utf-8-sig"), newline="")))
    assert [r[2] for r in rows[1:]] == ["'-1", "0", "7", f"'{-(2**63)}"]


def test_the_first_rows_of_a_log_csv_are_the_csv_of_those_rows() -> None:
    """The windows ending on the report day take their CSV from the longest one's (`LogCsv.first`): for every prefix
    of a log with hostile text (quotes doubled, line breaks and CR inside cells, formulas, emoji) the bytes are those
    of the prefix formatted on its own."""
    frame = log_of(HOSTILE * 3)
    whole = log_csv_rows(frame)
    assert whole is not None and whole.data == log_csv(frame)
    prefixes = range(frame.height + 1)
    assert [whole.first(k) for k in prefixes] == [log_csv(frame.head(k)) for k in prefixes]
    empty = log_csv_rows(frame.clear())
    assert empty is not None and empty.first(0) == log_csv(frame.clear())
