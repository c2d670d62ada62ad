"""Every kind of page the product writes, checked by tools nobody here wrote: the W3C Nu HTML Checker (vnu.jar, the
validator.w3.org engine) and axe-core (WCAG 2.1 A and AA rules plus best practices) in headless Chromium at 360 and
1,280 px. Both come from npm (`make install`, package-lock.json); Java from Debian (`make system-deps`).

Known false positives allowed below: none so far. An exception is added only with its reason next to it.
"""

from __future__ import annotations

import base64
import json
import subprocess
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from etl import nightly
from etl.archive import write_archive
from etl.mail import Link, build_message, mail_report
from etl.report import Filters, Freshness, PreparedInputs, build_page, filtered_inputs
from etl.settings import Settings
from etl.storage import LocalStorage
from etl.warehouse import load_inputs, report_scope
from tests.conftest import copy_tiny_warehouse
from tests.e2e.test_browser import open_page
from tests.e2e.test_pages import render_all

REPO = Path(__file__).parents[2]
VNU = REPO / "node_modules/vnu-jar/build/dist/vnu.jar"
AXE = REPO / "node_modules/axe-core/axe.min.js"
DAY = date(2026, 3, 30)
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]
# (rule id, why it is a false positive here): none yet
KNOWN_FALSE_POSITIVES: dict[str, str] = {}


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory, tiny_warehouse_built: Path | None) -> dict[str, Path]:
    """One file of every kind: the seven windows, a filtered page, a Spanish page, the index pages, the ops page,
    the archive's index and log pages, and the e-mail's HTML part."""
    root = tmp_path_factory.mktemp("checkers")
    warehouse = copy_tiny_warehouse(root / "wh", tiny_warehouse_built)
    out = root / "out"
    render_all(warehouse, out, DAY)
    render_all(warehouse, out, DAY, filters=("channel=12",), ids=(1,))
    render_all(warehouse, root / "es", DAY, ids=(1,), locale="es")
    settings = Settings(warehouse=str(warehouse), out=str(out), archive=str(root / "archive"))
    nightly.write_ops_page(settings, None)
    store = LocalStorage(warehouse)
    write_archive(store, LocalStorage(root / "archive"), report_scope(store, [1], DAY - timedelta(days=1), None))
    found = {f"window-{w.stem}": w for w in sorted((out / f"1/{DAY}").glob("*.html"))}
    found |= {
        "filtered": next((out / "filtered").glob(f"*/1/{DAY}/last_30_days.html")),
        "spanish": root / f"es/1/{DAY}/last_7_days.html",
        "spanish-index": root / "es/1/index.html",
        "index": out / "index.html",
        "workspace-index": out / "1/index.html",
        "ops": out / "_runs/index.html",
        "archive-index": root / "archive/1/index.html",
        "archive-log": next((root / "archive/1").glob("*/rev-1/contacts_added.html")),
        "email": _email_html(store, root / "email.html"),
    }
    return found


def _email_html(warehouse: LocalStorage, target: Path) -> Path:
    scope = report_scope(warehouse, [1], DAY, None)
    inputs = load_inputs(warehouse, scope.workspaces, scope.days, ("today", "last_14_days"), need_all_events=False)
    prepared = PreparedInputs.of(filtered_inputs(inputs[1], Filters()))
    freshness = Freshness(None, None, None, None)
    report = mail_report(*(build_page(prepared, w, DAY, Filters(), freshness, 0) for w in ("today", "last_14_days")))
    message = build_message(report, [Link("Today", "https://r.example/1/today.html")],
                            Link("All report days", "https://r.example/1/index.html"), "r@example.com",
                            "a@example.com", presigned=True, ops_address="ops@example.com")
    html = message.get_body(("html",)).get_content()
    [chart] = [part for part in message.walk() if part.get_content_type() == "image/png"]
    inline = "data:image/png;base64," + base64.b64encode(chart.get_content()).decode()  # as a mail client shows it
    target.write_text(html.replace(f"cid:{str(chart['Content-ID'])[1:-1]}", inline))
    return target


def test_the_nu_html_checker_finds_no_error_on_any_kind_of_page(pages: dict[str, Path]) -> None:
    assert VNU.exists(), "vnu.jar is missing: `make install` installs the checkers from npm"
    result = subprocess.run(["java", "-jar", str(VNU), "--format", "json", "--exit-zero-always",
                             *map(str, pages.values())], capture_output=True, text=True, check=True, timeout=300)
    messages = json.loads(result.stderr)["messages"]
    kinds = {str(path.resolve()): kind for kind, path in pages.items()}
    errors = [(kinds.get(m["url"].removeprefix("file:"), m["url"]), m.get("lastLine"), m["message"])
              for m in messages if m["type"] == "error"]
    assert errors == []


@pytest.mark.parametrize("width", [360, 1280])
def test_axe_core_finds_no_violation_on_any_kind_of_page(pages: dict[str, Path], browser: Any, width: int) -> None:
    assert AXE.exists(), "axe-core is missing: `make install` installs the checkers from npm"
    source = AXE.read_text()
    found = {}
    for kind, path in pages.items():
        page, errors, _ = open_page(browser, path.as_uri(), width)
        page.evaluate(source)  # through the debugging protocol: the pages' CSP allows no script from elsewhere
        result = page.evaluate("tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", AXE_TAGS)
        page.close()
        violations = [(v["id"], v["impact"], len(v["nodes"]), v["nodes"][0]["target"])
                      for v in result["violations"] if v["id"] not in KNOWN_FALSE_POSITIVES]
        if violations or errors:
            found[kind] = violations + errors
    assert found == {}
