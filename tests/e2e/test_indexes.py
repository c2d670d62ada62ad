"""The index pages come from a record of the pages known so far plus what tonight's renders recorded, not from a
listing of all of history: the same pages as a listing gives, whatever the order of the nights, with re-runs,
filtered renders and a rebuilt record."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from etl import manifests
from etl.indexes import KNOWN_PAGES, write_indexes
from etl.render import RenderJob
from etl.render_jobs import render
from etl.storage import LocalStorage
from etl.warehouse import read_view
from etl.windows import WINDOW_NAMES
from tests.conftest import copy_tiny_warehouse


class Listed(LocalStorage):
    """The output, remembering the prefixes it was listed under."""

    prefixes: list[str]

    def list(self, prefix: str = "", everything: bool = False) -> list[str]:
        self.prefixes.append(prefix)
        return super().list(prefix, everything)


def index_pages(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in [out / "index.html", *out.glob("*/index.html")]}


def test_index_pages_from_the_record_are_those_a_listing_gives(tmp_path: Path,
                                                               tiny_warehouse_built: Path | None) -> None:
    warehouse = copy_tiny_warehouse(tmp_path / "wh", tiny_warehouse_built)
    out = tmp_path / "out"
    view = read_view(LocalStorage(warehouse))
    ids = tuple(sorted(view.workspaces))
    # nights out of order, one day again, a workspace alone, some windows only, a filtered render
    for day, workspaces, windows, filters in [
            (date(2026, 3, 28), ids, WINDOW_NAMES, ()), (date(2026, 3, 30), ids[:1], WINDOW_NAMES, ()),
            (date(2026, 3, 20), ids, ("today", "last_month"), ()), (date(2026, 3, 28), ids, WINDOW_NAMES, ()),
            (date(2026, 3, 29), ids[:1], WINDOW_NAMES, ("channel=11",)), (date(2026, 3, 30), ids, WINDOW_NAMES, ())]:
        render(RenderJob(str(warehouse), str(out), workspaces, day, None, windows, filters), workers=1)
        from_record = index_pages(out), (out / KNOWN_PAGES).read_bytes()

        listed = Listed(out)
        listed.prefixes = []
        write_indexes(listed, view, manifests.rendered(listed, manifests.tag(None, day)))
        assert "" not in listed.prefixes  # only the night's records were listed
        assert (index_pages(out), (out / KNOWN_PAGES).read_bytes()) == from_record

        write_indexes(LocalStorage(out), view)  # from a listing of everything
        assert (index_pages(out), (out / KNOWN_PAGES).read_bytes()) == from_record

    workspace_index = (out / f"{ids[0]}/index.html").read_text()
    for day in ("2026-03-20", "2026-03-28", "2026-03-30"):
        assert f"{day}/today.html" in workspace_index
    assert "2026-03-29" not in workspace_index  # only a filtered page that day
    assert "2026-03-20/last_7_days.html" not in workspace_index  # not rendered that day


def test_a_missing_record_is_rebuilt_from_a_listing(tmp_path: Path, tiny_warehouse_built: Path | None) -> None:
    warehouse = copy_tiny_warehouse(tmp_path / "wh", tiny_warehouse_built)
    out = tmp_path / "out"
    view = read_view(LocalStorage(warehouse))
    ids = tuple(sorted(view.workspaces))
    for day in (date(2026, 3, 29), date(2026, 3, 30)):
        render(RenderJob(str(warehouse), str(out), ids, day, None, WINDOW_NAMES, ()), workers=1)
    before = index_pages(out), (out / KNOWN_PAGES).read_bytes()
    (out / KNOWN_PAGES).unlink()  # what an operator does after removing pages by hand
    listed = Listed(out)
    listed.prefixes = []
    write_indexes(listed, view, manifests.rendered(listed, manifests.tag(None, date(2026, 3, 30))))
    assert "" in listed.prefixes
    assert (index_pages(out), (out / KNOWN_PAGES).read_bytes()) == before


@pytest.mark.parametrize("record", [b"", b"{not json", b"[]", b'{"1": {"2026-03-30": "9"}}', b'{"x": {}}',
                                    b'{"1": 5}'])
def test_an_unreadable_record_is_rebuilt_not_fatal(tmp_path: Path, tiny_warehouse_built: Path | None,
                                                   record: bytes) -> None:
    warehouse = copy_tiny_warehouse(tmp_path / "wh", tiny_warehouse_built)
    out = tmp_path / "out"
    view = read_view(LocalStorage(warehouse))
    day = date(2026, 3, 30)
    render(RenderJob(str(warehouse), str(out), tuple(sorted(view.workspaces)), day, None, WINDOW_NAMES, ()), workers=1)
    before = index_pages(out), (out / KNOWN_PAGES).read_bytes()
    (out / KNOWN_PAGES).write_bytes(record)
    write_indexes(LocalStorage(out), view, manifests.rendered(LocalStorage(out), manifests.tag(None, day)))
    assert (index_pages(out), (out / KNOWN_PAGES).read_bytes()) == before
