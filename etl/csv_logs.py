"""The logs as CSV downloads: RFC 4180, UTF-8 with a BOM, every cell a spreadsheet would run as a formula
neutralised (pages' downloads and archive snapshots alike)."""

from __future__ import annotations

import functools
import io
import logging
import re
from dataclasses import dataclass

import numpy as np
import polars as pl

log = logging.getLogger(__name__)

CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")


def neutralise(cell: str) -> str:
    """OWASP CSV injection guidance: a cell a spreadsheet would run as a formula starts with a quote."""
    return "'" + cell if cell.startswith(CSV_FORMULA_START) else cell


CSV_COLUMNS: tuple[str, ...] = ("timestamp_local", "timestamp_utc", "contact_id", "contact_name", "source",
                                "user_id", "user_name", "channel_id", "channel_name", "channel_type",
                                "merged_contact_id", "event_id")


def _neutralised(column: str, integer: bool) -> pl.Expr:
    """`neutralise` as an expression: the same rule, vectorised (logs of large workspaces run to millions). An
    integer's text starts with a formula character only when it is negative ("-"): its sign decides, ~a third of the
    cost of matching the text (measured on a million-row log)."""
    text = pl.col(column).cast(pl.String)
    risky = pl.col(column) < 0 if integer else text.str.contains(_FORMULA_START)
    return pl.when(risky).then(pl.lit("'") + text).otherwise(text).fill_null("").alias(column)


_FORMULA_START = "^[" + re.escape("".join(CSV_FORMULA_START)) + "]"


@functools.cache  # a workspace writes 28 CSV files, all with one schema
def _cells(integers: tuple[bool, ...]) -> tuple[pl.Expr, ...]:
    return tuple(_neutralised(c, integer) for c, integer in zip(CSV_COLUMNS, integers, strict=True))


def log_csv(frame: pl.DataFrame) -> bytes:
    """RFC 4180 (CRLF, every field quoted), UTF-8 with a BOM so spreadsheets pick the encoding."""
    return _written(_cells_of(frame))


def _cells_of(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select(_cells(tuple(frame.schema[c].is_integer() for c in CSV_COLUMNS)))


def _written(cells: pl.DataFrame) -> bytes:
    out = io.BytesIO()
    out.write(BOM)
    cells.write_csv(out, quote_style="always", line_terminator="\r\n")
    return out.getvalue()


BOM = "\ufeff".encode()
# Bytes of the header line, and of a row beyond its cells' text: two quotes a cell, the commas, CRLF
_HEADER_BYTES = len(BOM) + sum(len(c.encode()) + 2 for c in CSV_COLUMNS) + len(CSV_COLUMNS) - 1 + 2
_ROW_FRAMING = 2 * len(CSV_COLUMNS) + len(CSV_COLUMNS) - 1 + 2


@dataclass(frozen=True)
class LogCsv:
    """A log's CSV, and where each of its rows ends: the CSV of its first k rows is `data[:ends[k]]`. The windows
    that end on the report day (today, the last 7 / 14 / 30 days, this month) show the newest rows of the same log,
    so their CSVs are the first rows of the longest one's: formatted once instead of five times."""

    data: bytes
    ends: np.ndarray  # ends[k]: the header and the first k rows, in bytes

    def first(self, rows: int) -> bytes | memoryview:
        """The CSV of the first `rows` rows: a view of `data`, not a copy (the longest windows' logs run to tens of
        megabytes, and copying them was ~8 % of a large workspace's render)."""
        return self.data if rows == len(self.ends) - 1 else memoryview(self.data)[: int(self.ends[rows])]


def log_csv_rows(frame: pl.DataFrame) -> LogCsv | None:
    """`log_csv(frame)` with the end of each row, worked out from the cells' lengths and checked against the bytes
    written: None if they disagree (the caller then formats each part itself)."""
    cells = _cells_of(frame)
    data = _written(cells)
    widths = cells.select(pl.sum_horizontal(  # a cell's bytes, plus one for each quote doubled inside it
        pl.col(c).str.len_bytes().cast(pl.Int64) + pl.col(c).str.count_matches('"', literal=True).cast(pl.Int64)
        for c in CSV_COLUMNS) + _ROW_FRAMING).to_series().to_numpy()
    ends = np.concatenate([[0], np.cumsum(widths, dtype=np.int64)]) + _HEADER_BYTES
    written = np.frombuffer(data, dtype=np.uint8)
    rows_end_with_crlf = not len(widths) or (bool((written[ends[1:] - 1] == 10).all())
                                             and bool((written[ends[1:] - 2] == 13).all())
                                             and bool((written[ends[:-1]] == ord('"')).all()))
    if ends[-1] != len(data) or not rows_end_with_crlf:
        log.warning("CSV row ends did not match the bytes written (%d rows); formatting each window's log itself",
                    len(widths))
        return None
    return LogCsv(data, ends)
