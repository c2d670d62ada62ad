"""Landing files nobody here wrote: misconfigured zones, damaged gzip, links, bombs, names outside the layout.

Each class of input ends as a count with a reason in the run summary (and a quarantine row where a file was meant to
be read); the night goes on for everything else."""

from __future__ import annotations

import gzip
import json
import os
import random
import time
import zlib
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from etl.ingest import REFUSED_WHOLE, Admitted, admit, decompress
from etl.pipeline import run_etl
from etl.quality import problems
from etl.settings import DEFAULT_READ_LIMITS, ReadLimits, Thresholds
from etl.storage import LocalStorage, open_storage, read_parquet
from etl.warehouse import quarantine_key
from tests.conftest import plain_id
from tests.helpers import event, write_landing

DAY = "2026-03-10"
LINES = [event(f"e{i}", f"2026-03-10T{i % 24:02d}:00:00Z", contact_id=100 + i) for i in range(300)]


def ndjson(events: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(e) + "\n" for e in events).encode()


def run(landing: Path, warehouse: Path, limits: ReadLimits = DEFAULT_READ_LIMITS) -> dict[str, Any]:
    return run_etl(LocalStorage(landing), LocalStorage(warehouse), date.fromisoformat(DAY), limits=limits)


def quarantine(warehouse: Path) -> pl.DataFrame:
    return read_parquet(LocalStorage(warehouse), quarantine_key(date.fromisoformat(DAY)))


def assert_counts_add_up(summary: dict[str, Any]) -> None:
    """Every line read is stored, dropped or quarantined; every file listed is read (maybe in part), refused whole
    or skipped."""
    assert summary["lines_read"] == (summary["events_valid"] + summary["events_quarantined"]
                                     + summary["duplicates_dropped"])
    refused = [f for f, why in summary["files_damaged"].items() if why in REFUSED_WHOLE]
    assert summary["files_listed"] == summary["files_read"] + len(refused) + len(summary["files_skipped"])


# ---------------------------------------------------------------- 1. time zones

@pytest.mark.parametrize("zone", ["Factory", "Europe", "America", "posixrules", "right/UTC", "posix/Europe/Madrid",
                                  "Etc/GMT+14", "zone.tab", "Europe/Madrid ", "\ud800", "", 5, None], ids=plain_id)
def test_a_zone_either_engine_refuses_isolates_only_its_workspace(tmp_path: Path, zone: Any) -> None:
    landing = write_landing(tmp_path / "landing", [(1, "Good", "Asia/Kathmandu")], {f"{DAY}/09": [
        event("ok", "2026-03-10T08:00:00Z"), event("bad", "2026-03-10T08:00:00Z", workspace_id=2)]})
    dimension = json.loads((landing / "workspaces.json").read_text())
    dimension.append({"workspace_id": 2, "name": "Broken", "timezone": zone})
    (landing / "workspaces.json").write_text(json.dumps(dimension))
    summary = run(landing, tmp_path / "wh")
    assert summary["events_by_workspace"] == {"1": 1}
    assert summary["quarantined_by_reason"] == {"workspace_misconfigured": 1}
    assert list(summary["workspaces_misconfigured"]) == ["2"]


# ---------------------------------------------------------------- 2. damaged gzip

def test_a_gzip_whose_checksum_is_wrong_keeps_every_line_and_fails_the_gate(tmp_path: Path) -> None:
    data = bytearray(gzip.compress(ndjson(LINES)))
    data[-8] ^= 0xFF  # the CRC-32 of the trailer
    landing = write_landing(tmp_path / "landing", [(1, "M", "Europe/Madrid")], {})
    path = landing / f"events/ingest_date={DAY}/hour=09/part.ndjson.gz"
    path.parent.mkdir(parents=True)
    path.write_bytes(bytes(data))
    summary = run(landing, tmp_path / "wh")
    assert summary["events_valid"] == len(LINES)
    assert summary["files_damaged"] == {f"events/ingest_date={DAY}/hour=09/part.ndjson.gz": "gzip_checksum_mismatch"}
    assert quarantine(tmp_path / "wh").select("file", "line_no", "reason").rows() == [
        (f"ingest_date={DAY}/hour=09/part.ndjson.gz", None, "gzip_checksum_mismatch")]
    assert_counts_add_up(summary)
    found = problems(summary, [], Thresholds())
    assert any("could not be read whole" in p for p in found)
    assert not any("could not be read whole" in p for p in problems(summary, [], Thresholds(max_damaged_files=1)))


@pytest.mark.parametrize("damage", ["flip_in_stream", "truncate", "garbage_after", "bad_header", "second_member"])
def test_every_line_before_the_damage_is_read(damage: str) -> None:
    body = ndjson(LINES * 20)
    packed = gzip.compress(body)
    if damage == "flip_in_stream":  # a corrupt deflate block: zlib stops; nothing it produced before is lost
        data = packed[:len(packed) // 2] + bytes([packed[len(packed) // 2] ^ 0x55]) + packed[len(packed) // 2 + 1:]
        raw = zlib.decompressobj(31)
        produced = bytearray()
        for i in range(len(data)):  # the reference: zlib fed a byte at a time, until it refuses
            try:
                produced += raw.decompress(data[i:i + 1])
            except zlib.error:
                break
        text, problem = decompress(data)
        assert problem in ("corrupt_gzip", "gzip_checksum_mismatch") and bytes(produced).startswith(text[:-1])
        assert len(text) >= len(produced)
        return
    cases = {"truncate": (packed[:len(packed) * 2 // 3], "truncated_gzip"),
             "garbage_after": (packed + b"not gzip", "corrupt_gzip"),
             "bad_header": (b"\x1f\x8b\x09" + packed[3:], "corrupt_gzip"),
             "second_member": (packed + gzip.compress(b"tail\n")[:-3], "truncated_gzip")}
    data, reason = cases[damage]
    text, problem = decompress(data)
    assert problem == reason
    if damage == "bad_header":
        assert text == b""
    else:
        assert body.startswith(text[:len(body)]) and len(text) >= (len(body) * 2 // 3 if damage == "truncate"
                                                                    else len(body)) - 70_000


def gzip_member(body: bytes, extra: bytes | None = None, name: bytes | None = None, comment: bytes | None = None,
                header_crc: bool = False, text: bool = False) -> bytes:
    """One RFC 1952 member with the optional header fields a producer may write (Python's gzip writes only FNAME);
    `text` sets FTEXT, a hint with no field of its own."""
    flags = (0x04 if extra is not None else 0) | (0x08 if name is not None else 0) | (
        0x10 if comment is not None else 0) | (0x02 if header_crc else 0) | (0x01 if text else 0)
    header = b"\x1f\x8b\x08" + bytes([flags]) + b"\0\0\0\0\0\xff"
    if extra is not None:
        header += len(extra).to_bytes(2, "little") + extra
    for field in (name, comment):
        if field is not None:
            header += field + b"\0"
    if header_crc:
        header += (zlib.crc32(header) & 0xFFFF).to_bytes(2, "little")
    packer = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    stream = packer.compress(body) + packer.flush()
    return header + stream + zlib.crc32(body).to_bytes(4, "little") + (len(body) & 0xFFFFFFFF).to_bytes(4, "little")


@pytest.mark.parametrize("fields", [{}, {"extra": b"AP\x02\0hi"}, {"extra": b""}, {"name": b"part.ndjson"},
                                    {"comment": b"exported \xff"}, {"header_crc": True}, {"text": True},
                                    {"extra": b"xy", "name": b"a", "comment": b"b", "header_crc": True}])
def test_every_optional_gzip_header_field_is_skipped_exactly(fields: dict[str, Any]) -> None:
    body = ndjson(LINES[:50])
    data = gzip_member(body, **fields) + gzip_member(b"tail\n", **fields)
    assert gzip.decompress(data) == body + b"tail\n"  # the reference agrees the member is valid
    assert decompress(data) == (body + b"tail\n", None)


EVERY_FIELD = {"extra": b"0123456789", "name": b"name", "comment": b"comment"}


@pytest.mark.parametrize(("fields", "keep", "reason"), [
    (EVERY_FIELD, 11, "corrupt_gzip"),  # every optional field, cut in the extra field's length
    (EVERY_FIELD, 14, "corrupt_gzip"),  # … in the extra field
    (EVERY_FIELD, 24, "corrupt_gzip"),  # … in the name
    (EVERY_FIELD, 30, "corrupt_gzip"),  # … in the comment
    ({"extra": b"0123456789"}, 14, "corrupt_gzip"),  # the extra field alone, cut inside it
    ({"header_crc": True}, 11, "corrupt_gzip"),  # the header CRC alone, cut inside it
    ({"extra": b""}, 12, "truncated_gzip"),  # a whole header (empty extra field) and no deflate stream yet
    ({}, 10, "truncated_gzip"),  # the shortest whole header and nothing after it
    ({}, 9, "corrupt_gzip"),  # one byte short of a header
    ({}, 3, "corrupt_gzip"),  # the magic bytes and the method, nothing more
])
def test_a_member_cut_in_or_after_its_header_keeps_the_members_before_it(fields: dict[str, Any], keep: int,
                                                                        reason: str) -> None:
    first = gzip_member(b"first\n")
    assert decompress(first + gzip_member(b"second\n", **fields)[:keep]) == (b"first\n", reason)


@pytest.mark.parametrize(("tail", "reason"), [(b"\0", None), (b"\0" * 512, None),  # padding ends the stream
                                              (b"\0junk", "corrupt_gzip"), (b"\0\0\x1f\x8b", "corrupt_gzip")],
                         ids=plain_id)
def test_zero_padding_after_the_last_member_ends_the_stream_and_anything_else_is_damage(tail: bytes,
                                                                                       reason: str | None) -> None:
    body = ndjson(LINES[:20])
    assert decompress(gzip.compress(body) + tail) == (body, reason)


def test_a_broken_deflate_block_keeps_exactly_what_came_before_it() -> None:
    """More than one 64 KB read of compressed input before the damage: the failing read is retried a byte at a time,
    so the output is everything the stream held before the broken block, to the byte."""
    before = random.Random(7).randbytes(90_000).hex().encode() + b"\n"  # ~100 KB compressed
    packer = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    stream = packer.compress(before) + packer.flush(zlib.Z_FULL_FLUSH)  # the next block starts on a byte boundary
    broken = bytes([0b111])  # BFINAL=1, BTYPE=11: a reserved block type, which zlib refuses
    data = gzip_member(b"")[:10] + stream + broken + packer.compress(b"after\n") + packer.flush()
    assert len(stream) > 65_536
    assert decompress(data) == (before, "corrupt_gzip")


def test_the_size_bound_is_exact_and_reading_stops_just_past_it() -> None:
    body = b"x" * 10_000
    assert decompress(gzip.compress(body), max_bytes=10_000) == (body, None)
    text, problem = decompress(gzip.compress(body), max_bytes=9_999)
    assert problem == "too_large" and text == b"x" * 10_000  # one byte past the bound, not the whole member
    text, problem = decompress(gzip.compress(b"a" * 600) + gzip.compress(b"b" * 100_000), max_bytes=1_000)
    assert problem == "too_large" and text == b"a" * 600 + b"b" * 401  # the bound counts every member


def test_an_uncompressed_file_at_the_bounds_is_read_and_one_past_them_is_refused() -> None:
    limits = ReadLimits(max_file_bytes=1_000, max_file_lines=3)
    assert admit("a.ndjson", b"x" * 1_000, limits).problem is None
    assert admit("a.ndjson", b"x" * 1_001, limits).problem == "file_too_large"
    assert admit("a.ndjson", b"a\nb\nc", limits) == Admitted(b"a\nb\nc")  # three lines, the last unterminated
    assert admit("a.ndjson", b"a\nb\nc\n", limits) == Admitted(b"a\nb\nc\n")
    assert admit("a.ndjson", b"a\nb\nc\nd", limits).problem == "too_many_lines"
    assert admit("a.ndjson", b"a\nb\nc\nd\n", limits).problem == "too_many_lines"


# ---------------------------------------------------------------- 7. links

def test_links_in_the_landing_are_refused_counted_and_never_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret.env"
    secret.write_text("AWS_SECRET_ACCESS_KEY=hunter2-do-not-copy\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "part.ndjson").write_text(json.dumps(event("far", "2026-03-10T08:00:00Z")) + "\n")
    landing = write_landing(tmp_path / "landing", [(1, "M", "Europe/Madrid")], {f"{DAY}/09": [
        event("ok", "2026-03-10T08:00:00Z")]})
    hours = landing / f"events/ingest_date={DAY}"
    (hours / "hour=09/env.ndjson").symlink_to(secret)
    (hours / "hour=10").symlink_to(outside)  # a whole hour folder
    (hours / "hour=09/inside.ndjson").symlink_to(hours / "hour=09/part-0000.ndjson")
    summary = run(landing, tmp_path / "wh")
    assert summary["events_valid"] == 1
    assert summary["files_damaged"] == {f"events/ingest_date={DAY}/hour=09/env.ndjson": "symbolic_link",
                                        f"events/ingest_date={DAY}/hour=09/inside.ndjson": "symbolic_link"}
    assert summary["files_skipped"] == {f"events/ingest_date={DAY}/hour=10": "symbolic_link"}
    everything = b"".join(p.read_bytes() for p in (tmp_path / "wh").rglob("*") if p.is_file())
    assert b"hunter2" not in everything
    assert_counts_add_up(summary)


def test_a_link_inside_out_is_never_written_through(tmp_path: Path) -> None:
    from etl.storage import UnsafeLink

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "1").symlink_to(elsewhere)
    storage = open_storage(str(out))
    with pytest.raises(UnsafeLink, match="symbolic link"):
        storage.write_bytes("1/2026-03-10/today.html", b"<p>page</p>")
    with pytest.raises(UnsafeLink):
        storage.read_bytes("1/anything")
    assert list(elsewhere.iterdir()) == []


# ---------------------------------------------------------------- 8. bombs

def test_a_gzip_of_a_million_blank_lines_is_refused_quickly(tmp_path: Path) -> None:
    landing = write_landing(tmp_path / "landing", [(1, "M", "Europe/Madrid")], {f"{DAY}/09": [
        event("ok", "2026-03-10T08:00:00Z")]})
    bomb = gzip.compress(b"\n" * 1_000_000)
    assert len(bomb) < 2_000
    (landing / f"events/ingest_date={DAY}/hour=09/bomb.ndjson.gz").write_bytes(bomb)
    started = time.monotonic()
    summary = run(landing, tmp_path / "wh")
    assert time.monotonic() - started < 10  # it took ~34 s when every blank line was judged
    assert summary["files_damaged"] == {f"events/ingest_date={DAY}/hour=09/bomb.ndjson.gz":
                                        "expansion_ratio_exceeded"}
    assert summary["events_valid"] == 1 and summary["blank_lines"] == 0
    assert_counts_add_up(summary)


def test_bounds_on_lines_size_and_ratio_each_refuse_the_file_whole(tmp_path: Path) -> None:
    limits = ReadLimits(max_file_lines=50, max_file_bytes=200_000, max_expansion_ratio=100)
    assert admit("a.ndjson", ndjson(LINES[:50]), limits).text is not None
    assert admit("a.ndjson", ndjson(LINES[:51]), limits).problem == "too_many_lines"
    assert admit("a.ndjson", b"x" * 200_001, limits).problem == "file_too_large"
    assert admit("a.ndjson.gz", gzip.compress(os.urandom(150_000).hex().encode()), limits).problem == "file_too_large"
    assert admit("a.ndjson.gz", gzip.compress(b" " * 10_000_000), ReadLimits()).problem == "expansion_ratio_exceeded"
    ordinary = gzip.compress(ndjson(LINES))
    assert admit("a.ndjson.gz", ordinary, ReadLimits()).text == ndjson(LINES)


def test_a_file_over_the_size_bound_is_refused_without_being_read(tmp_path: Path) -> None:
    landing = write_landing(tmp_path / "landing", [(1, "M", "Europe/Madrid")], {f"{DAY}/09": [
        event("ok", "2026-03-10T08:00:00Z")], f"{DAY}/10/big.ndjson": LINES})
    summary = run(landing, tmp_path / "wh", ReadLimits(max_file_bytes=2_000))
    assert summary["files_damaged"] == {f"events/ingest_date={DAY}/hour=10/big.ndjson": "file_too_large"}
    assert summary["events_valid"] == 1
    assert_counts_add_up(summary)


def test_blank_lines_between_events_stay_cheap(tmp_path: Path) -> None:
    """Blank lines used to split every chunk down to the exact validator: a plain file of events each followed
    by blank lines is read on the fast path."""
    body = "\t\n" + "".join(json.dumps(e) + "\n\n  \n\t\n\r\n" for e in LINES * 30)  # space, tab, CR: blank
    landing = write_landing(tmp_path / "landing", [(1, "M", "Europe/Madrid")], {})
    path = landing / f"events/ingest_date={DAY}/hour=09/part.ndjson"
    path.parent.mkdir(parents=True)
    path.write_text(body)
    summary = run(landing, tmp_path / "wh")
    assert summary["blank_lines"] == 1 + 4 * len(LINES) * 30
    assert summary["lines_exact_path"] == 0
    assert summary["events_valid"] == len(LINES) and summary["duplicates_dropped"] == len(LINES) * 29
    assert_counts_add_up(summary)


def test_a_crlf_file_quarantines_its_bad_line_without_the_carriage_return(tmp_path: Path) -> None:
    landing = write_landing(tmp_path / "landing", [(1, "M", "Europe/Madrid")], {})
    path = landing / f"events/ingest_date={DAY}/hour=09/part.ndjson"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\r\n".join([json.dumps(LINES[0]).encode(), b"{not json", json.dumps(LINES[1]).encode(), b""]))
    summary = run(landing, tmp_path / "wh")
    assert (summary["events_valid"], summary["events_quarantined"]) == (2, 1)
    assert quarantine(tmp_path / "wh")["raw"].to_list() == ["{not json"]


# ---------------------------------------------------------------- 10. names outside the layout

OUTSIDE_THE_LAYOUT = {
    "hour=09/PART.NDJSON": "not_an_ndjson_name",
    "hour=09/part.json": "not_an_ndjson_name",
    "hour=09/part.ndjson.tmp": "not_an_ndjson_name",
    "hour=09/.tmp-part.ndjson": "temporary_or_hidden_name",
    "hour=09/.part.ndjson": "temporary_or_hidden_name",
    "hour=09/_SUCCESS": "marker_file",
    "hour=09/nested/part.ndjson": "not_in_an_hour_folder",
    "part.ndjson": "not_in_an_hour_folder",
    "hour=9/part.ndjson": "not_in_an_hour_folder",
    "hour=24/part.ndjson": "not_in_an_hour_folder",
    "HOUR=09/part.ndjson": "not_in_an_hour_folder",
}


def _landing_with_strays(root: Path) -> Path:
    landing = write_landing(root, [(1, "M", "Europe/Madrid")], {f"{DAY}/09": [event("ok", "2026-03-10T08:00:00Z")]})
    for name in OUTSIDE_THE_LAYOUT:
        path = landing / f"events/ingest_date={DAY}" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(ndjson([event(f"stray-{name}", "2026-03-10T08:00:00Z")]))
    return landing


def test_every_file_outside_the_layout_is_counted_with_its_reason(tmp_path: Path) -> None:
    summary = run(_landing_with_strays(tmp_path / "landing"), tmp_path / "wh")
    assert summary["events_valid"] == 1
    assert summary["files_skipped"] == {f"events/ingest_date={DAY}/{k}": v for k, v in OUTSIDE_THE_LAYOUT.items()}
    assert_counts_add_up(summary)


def test_local_and_s3_landings_skip_the_same_files(tmp_path: Path, s3_bucket: str) -> None:
    local = _landing_with_strays(tmp_path / "landing")
    s3 = open_storage(f"s3://{s3_bucket}/landing")
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        s3.write_bytes(path.relative_to(local).as_posix(), path.read_bytes())
    on_local = run(local, tmp_path / "wh-local")
    on_s3 = run_etl(s3, LocalStorage(tmp_path / "wh-s3"), date.fromisoformat(DAY))
    for name in ("files_skipped", "files_damaged", "events_valid", "lines_read", "input_sha256"):
        assert on_local[name] == on_s3[name], name


def test_only_strays_is_still_a_missing_night(tmp_path: Path) -> None:
    from etl.errors import EtlError

    landing = write_landing(tmp_path / "landing", [(1, "M", "Europe/Madrid")], {})
    folder = landing / f"events/ingest_date={DAY}/hour=09"
    folder.mkdir(parents=True)
    (folder / "part.NDJSON").write_bytes(ndjson(LINES))
    with pytest.raises(EtlError, match=r"part\.NDJSON"):
        run(landing, tmp_path / "wh")
    assert not os.path.exists(tmp_path / "wh" / "_runs")
