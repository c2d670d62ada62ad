"""Keys are checked before they become a path or an object key: nothing is ever read or written outside the root."""

from __future__ import annotations

from pathlib import Path

import pytest

from etl.storage import LocalStorage, StorageError, check_key
from tests.conftest import plain_id

UNSAFE = ["", "/etc/passwd", "a//b", "a/./b", "a/../b", "..", "a/..", "a\\b", "a\x00b", "%2e%2e/b", "a/%2E%2E/b",
          "%2e/b", "a%2fb", "a%2F..%2Fb", "a/%2e%2E"]


@pytest.mark.parametrize("key", UNSAFE, ids=plain_id)
def test_unsafe_keys_are_refused_by_every_operation(tmp_path: Path, key: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    storage = LocalStorage(root)
    with pytest.raises(StorageError):
        check_key(key)
    for operation in (lambda: storage.write_bytes(key, b"x"), lambda: storage.read_bytes(key),
                      lambda: storage.exists(key), lambda: storage.delete(key), lambda: storage.size(key)):
        with pytest.raises(StorageError):
            operation()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("key", ["a.b/c", "2026-03-10/today.html", "a/b%20c", "..a/b", "a/b.."], ids=plain_id)
def test_ordinary_keys_with_dots_and_escapes_are_fine(tmp_path: Path, key: str) -> None:
    storage = LocalStorage(tmp_path)
    storage.write_bytes(key, b"x")
    assert storage.read_bytes(key) == b"x" and storage.list() == [key]
