"""The ops page: the last nights' table and their trends, marked where a night failed its gate or was late, with
the history filled with the CLI shown as such; legible in Chromium at 360 and 1,280 px."""

from __future__ import annotations

import json
import re
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from etl import nightly
from etl.ops import deadline_key, recording
from etl.settings import Settings
from etl.storage import LocalStorage
from tests.e2e.test_browser import _CHART_TEXTS, open_page
from tests.helpers import event, write_landing

NIGHTS = [date(2026, 3, 1) + timedelta(days=i) for i in range(6)]


@pytest.fixture(scope="module")
def ops_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six nights: three filled with the CLI, then a run record each for a good night, a late one and one the
    quality gate stopped."""
    root = tmp_path_factory.mktemp("ops")
    landing = write_landing(root / "landing", [(1, "Acme", "UTC")], {
        f"{night}/12": [event(f"{night}-{i}", f"{night}T09:0{i}:00Z", contact_id=i + 1) for i in range(n + 1)]
        + ["not json"] * (n % 2) for n, night in enumerate(NIGHTS)})
    settings = Settings(landing=str(landing), warehouse=str(root / "wh"), out=str(root / "out"))
    nightly.backfill(settings, until=NIGHTS[3])
    warehouse = LocalStorage(settings.warehouse)
    for night in NIGHTS[3:]:
        nightly.ingest(settings, night)
    for night in NIGHTS[3:5]:
        for task in ("check_landing", "ingest", "render"):
            with recording(settings, night, task):
                time.sleep(0.01)  # a task that takes a moment (not a synchronisation)
    warehouse.write_bytes(deadline_key(NIGHTS[4]), b"{}")
    for night in NIGHTS[3:5]:
        nightly.record_run(settings, night, {"pages": 7, "uploaded": 30, "published_bytes": 2_500_000, "sent": 2,
                                             "failed": 1, "run_type": "scheduled", "run_id": f"scheduled__{night}",
                                             "airflow_run_url": f"http://airflow.example/dags/x/runs/{night}"}, None)
    nightly.record_gate_failure(settings, NIGHTS[5], "night 2026-03-06 failed the data-quality gate: quarantine "
                                "ratio 0.33 > 0.05\nmore detail", {"run_type": "manual"}, None)
    return root / "out/_runs/index.html"


def rows(page: str) -> list[str]:
    body = page[page.index("<tbody>"):page.index("</tbody>")]
    return [re.sub(r"<[^>]+>", " ", row) for row in body.split("</tr>") if "<td>" in row]


def test_every_night_is_listed_with_how_it_ran_and_what_went_wrong(ops_page: Path) -> None:
    page = ops_page.read_text()
    listed = rows(page)
    assert [r.split()[0] for r in listed] == [str(n) for n in reversed(NIGHTS)]  # most recent first
    gate, late, good, *cli = listed
    assert "⚠ quality gate failed: night 2026-03-06 failed the data-quality gate" in gate and "more detail" not in gate
    assert "⚠ missed its deadline" in late and " ok " in good
    assert all("backfilled with the CLI" in r for r in cli)
    assert f'<a href="http://airflow.example/dags/x/runs/{NIGHTS[3]}">scheduled</a>' in page


def test_trends_show_each_series_with_its_numbers_and_the_gates_limit(ops_page: Path) -> None:
    page = ops_page.read_text()
    sections = re.findall(r'<section id="trend-([a-z]+)">', page)
    assert sections == ["lines", "shares", "late", "published", "tasks", "bytes", "mail"]
    lines = page[page.index('id="trend-lines"'):page.index('id="trend-shares"')]
    summary = json.loads((ops_page.parents[2] / "wh/_runs/ingest_date=2026-03-02.json").read_text())
    assert f"<td>2026-03-02</td><td class=\"num\">{summary['lines_read']:,}</td>" in lines
    shares = page[page.index('id="trend-shares"'):page.index('id="trend-late"')]
    assert "gate&#39;s quarantine limit (5 %)" in shares and "stroke-dasharray" in shares
    assert "<td>2026-03-06 ⚠</td>" in shares  # the marked nights in every table
    tasks = page[page.index('id="trend-tasks"'):page.index('id="trend-bytes"')]
    assert "check_landing" in tasks and "render" in tasks
    assert page.count("<svg") == 7 and page.count("<figcaption>") == 7


@pytest.mark.parametrize("width", [360, 1280])
def test_the_ops_page_reads_in_a_browser_on_a_phone_and_a_desktop(ops_page: Path, browser: Any, width: int) -> None:
    page, errors, requests = open_page(browser, ops_page.as_uri(), width)
    texts = page.evaluate(_CHART_TEXTS)
    overflow = page.evaluate("document.documentElement.scrollWidth")
    page.close()
    assert errors == [] and [r for r in requests if r != ops_page.as_uri()] == []
    assert texts and [(t["text"], round(t["px"], 1)) for t in texts if t["px"] < 10] == []
    assert overflow <= width + 1  # the wide table scrolls inside its own box
