"""The index pages: all workspaces, and each workspace's report days, from what is published under the output."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from datetime import date

from etl import manifests
from etl.storage import Storage
from etl.templating import environment
from etl.warehouse import WarehouseView
from etl.windows import WINDOW_NAMES

log = logging.getLogger(__name__)
_PAGE = re.compile(r"^(\d+)/(\d{4}-\d{2}-\d{2})/([a-z0-9_]+)\.html$", re.ASCII)


# Every unfiltered page under the output, kept beside the render records (never published): workspace -> report day
# -> the windows it has, as their positions in WINDOW_NAMES ("0123456")
KNOWN_PAGES = f"{manifests.FOLDER}/pages.json"


def _known_pages(out: Storage, rendered: Iterable[str] | None) -> dict[int, dict[str, set[str]]]:
    known: dict[int, dict[str, set[str]]] = {}
    keys: Iterable[str] | None = None
    if rendered is not None and out.exists(KNOWN_PAGES):
        try:
            for wid, days in json.loads(out.read_bytes(KNOWN_PAGES)).items():
                known[int(wid)] = {d: {WINDOW_NAMES[int(i)] for i in positions} for d, positions in days.items()}
            keys = rendered
        except (ValueError, TypeError, AttributeError, IndexError) as bad:  # edited by hand or by another version
            log.warning("%s/%s is unreadable (%s); rebuilding it from a listing of the output", out.uri, KNOWN_PAGES,
                        bad)
            known = {}
    if keys is None:
        keys = out.list()
    for key in keys:
        m = _PAGE.match(key)
        if m:
            known.setdefault(int(m.group(1)), {}).setdefault(m.group(2), set()).add(m.group(3))
    return known


def _encoded(known: dict[int, dict[str, set[str]]]) -> bytes:
    def positions(names: set[str]) -> str:
        return "".join(str(i) for i, name in enumerate(WINDOW_NAMES) if name in names)

    return json.dumps({str(w): {d: positions(names) for d, names in sorted(days.items())}
                       for w, days in sorted(known.items())}, separators=(",", ":")).encode()


def write_indexes(out: Storage, view: WarehouseView, rendered: Iterable[str] | None = None) -> None:
    """Index pages of every unfiltered page under `out`. The pages come from the record of those known so far
    (`KNOWN_PAGES`) and the keys tonight's renders wrote (`rendered`, from their records): two small reads, not a
    listing of all of history (~35 files a workspace a day; after a year millions of keys, or thousands of LIST
    requests on S3). Without `rendered`, or when the record is missing (the first night, or deleted to rebuild it
    after pages were removed by hand), they come from a listing of the whole output, and the record is rebuilt."""
    known = _known_pages(out, rendered)
    out.write_bytes(KNOWN_PAGES, _encoded(known), "application/json")  # first: a retry merges the same keys again
    found = {w: days for w, days in known.items() if w in view.workspaces}
    for wid, days in sorted(found.items()):
        rows = [(date.fromisoformat(d), [w for w in WINDOW_NAMES if w in days[d]]) for d in sorted(days, reverse=True)]
        workspace = view.workspaces[wid]
        html = environment(workspace.locale).get_template("workspace_index.html.j2").render(
            workspace=workspace, days=rows, freshness=view.freshness)
        out.write_bytes(f"{wid}/index.html", html.encode(), "text/html; charset=utf-8")
    # all workspaces, whatever their languages: in the default one
    listing = [(view.workspaces[w], date.fromisoformat(max(found[w])) if w in found else None)
               for w in sorted(view.workspaces)]
    html = environment().get_template("index.html.j2").render(workspaces=listing, freshness=view.freshness)
    out.write_bytes("index.html", html.encode(), "text/html; charset=utf-8")
    manifests.record_indexes(out, ["index.html", *(f"{wid}/index.html" for wid in sorted(found))])
