"""The index pages: all workspaces, and each workspace's report days, from what is published under the output."""

from __future__ import annotations

import re
from datetime import date

from etl import manifests
from etl.storage import Storage
from etl.templating import environment
from etl.warehouse import WarehouseView
from etl.windows import WINDOW_NAMES

_PAGE = re.compile(r"^(\d+)/(\d{4}-\d{2}-\d{2})/([a-z0-9_]+)\.html$", re.ASCII)


def write_indexes(out: Storage, view: WarehouseView) -> None:
    """Index pages from what is actually published under `out` (unfiltered pages only)."""
    found: dict[int, dict[str, set[str]]] = {}
    for key in out.list():
        m = _PAGE.match(key)
        if m and int(m.group(1)) in view.workspaces:
            found.setdefault(int(m.group(1)), {}).setdefault(m.group(2), set()).add(m.group(3))
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
