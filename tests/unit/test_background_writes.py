"""Writes handed to threads (the renderer's pages and CSV logs): every file lands whole, and a failed write is
never lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from etl.storage import BackgroundWrites, LocalStorage, StorageError


def test_every_write_lands_with_its_bytes_when_the_block_ends(tmp_path: Path) -> None:
    files = {f"{n % 7}/page-{n}.html": (f"page {n} " * (n * 50)).encode() for n in range(200)}
    with BackgroundWrites(LocalStorage(tmp_path), max_pending=64 * 1024) as out:
        for key, data in files.items():
            out.write_bytes(key, data, "text/html; charset=utf-8")

    assert {p.relative_to(tmp_path).as_posix(): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == files


def test_a_failed_write_is_raised_when_the_block_ends(tmp_path: Path) -> None:
    with (pytest.raises(StorageError, match=r"unsafe storage key '\.\./escape\.html'"),
          BackgroundWrites(LocalStorage(tmp_path)) as out):
        out.write_bytes("ok.html", b"fine")
        out.write_bytes("../escape.html", b"never written")
    assert (tmp_path / "ok.html").read_bytes() == b"fine"
    assert not (tmp_path.parent / "escape.html").exists()


def test_the_callers_own_error_is_not_replaced_by_a_failed_write(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="the caller's"), BackgroundWrites(LocalStorage(tmp_path)) as out:
        out.write_bytes("../escape.html", b"never written")
        raise KeyError("the caller's")
