"""A real browser (Debian's Chromium, driven by Playwright) opens the pages from disk, as a stakeholder would."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import copy_tiny_warehouse, plain_id
from tests.e2e.test_pages import build, render_all

ARTIFACTS = Path(__file__).parents[2] / "test-artifacts"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, tiny_warehouse_built: Path | None) -> Path:
    root = tmp_path_factory.mktemp("browser-site")
    render_all(copy_tiny_warehouse(root / "wh", tiny_warehouse_built), root / "out", date(2026, 3, 30))
    return root / "out"


@pytest.fixture(scope="module")
def spanish_site(tmp_path_factory: pytest.TempPathFactory, tiny_warehouse_built: Path | None) -> Path:
    """The same pages in Spanish, whose words and numbers run longer (1,25 M, 160 mil, Últimos 30 días)."""
    root = tmp_path_factory.mktemp("browser-site-es")
    render_all(copy_tiny_warehouse(root / "wh", tiny_warehouse_built), root / "out", date(2026, 3, 30), locale="es")
    return root / "out"


def site_of(request: pytest.FixtureRequest, locale: str) -> Path:
    return Path(request.getfixturevalue("spanish_site" if locale == "es" else "site"))


def open_page(browser: Any, url: str, width: int) -> tuple[Any, list[str], list[str]]:
    page = browser.new_page(viewport={"width": width, "height": 900})
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("request", lambda req: requests.append(req.url))
    page.goto(url)
    page.wait_for_load_state("load")
    return page, errors, requests


@pytest.mark.parametrize("locale", ["en", "es"])
@pytest.mark.parametrize("width", [1280, 360])
def test_page_opens_cleanly_from_disk_on_desktop_and_phone(browser: Any, request: pytest.FixtureRequest, width: int,
                                                           locale: str) -> None:
    site = site_of(request, locale)
    url = (site / "1/2026-03-30/last_30_days.html").as_uri()
    page, errors, requests = open_page(browser, url, width)
    assert errors == []
    assert [r for r in requests if r != url] == []  # nothing fetched from anywhere, not even from disk
    charts = page.locator("svg.chart-svg")
    assert charts.count() == 5
    for i in range(charts.count()):
        box = charts.nth(i).bounding_box()
        assert box and box["width"] > 200 and box["height"] > 50
        assert box["width"] <= width
    # Nothing wider than a phone screen outside the horizontally scrolling tables.
    overflow = page.evaluate("document.documentElement.scrollWidth")
    assert overflow <= width + 1
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"last_30_days-{locale}-{width}.png"), full_page=True)
    page.close()


def test_log_search_box_narrows_the_rows(browser: Any, site: Path) -> None:
    page, errors, _ = open_page(browser, (site / "1/2026-03-30/last_30_days.html").as_uri(), 1280)
    rows = page.locator("#table-added tbody tr")
    total = rows.count()
    assert total > 3
    box = page.locator('input[data-table="table-added"]')
    assert box.is_visible()
    box.fill("ana")
    visible = [rows.nth(i).inner_text() for i in range(total) if rows.nth(i).is_visible()]
    assert 0 < len(visible) < total
    assert all("ana" in text.lower() for text in visible)
    box.fill("")
    assert sum(rows.nth(i).is_visible() for i in range(total)) == total
    assert errors == []


def test_page_works_with_scripts_off(browser: Any, site: Path) -> None:
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto((site / "1/2026-03-30/last_7_days.html").as_uri())
    assert page.locator("#table-added tbody tr").count() > 0
    assert not page.locator(".log-search").first.is_visible()  # no dead search box without scripts
    assert page.locator("svg.chart-svg").count() >= 3
    context.close()


# Each chart text's rendered font size (CSS px), its box, and its chart's index: the SVG scales with the page,
# so a label's size on screen is its font size times the SVG's scale.
_CHART_TEXTS = """() => [...document.querySelectorAll('svg.chart-svg')].flatMap((svg, chart) => {
  const scale = svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
  return [...svg.querySelectorAll('text')].map(t => {
    const box = t.getBoundingClientRect();
    return {chart, text: t.textContent, px: parseFloat(getComputedStyle(t).fontSize) * scale,
            left: box.left, right: box.right, top: box.top, bottom: box.bottom};
  });
})"""


def _stress_page(site: Path, folder: Path, locale: str) -> Path:
    """A page with the site's own style and charts at their most crowded: 31 days, six- and seven-digit counts, and
    category names at the length the charts keep."""
    from etl import charts
    from etl.i18n import language

    lang = language(locale)
    days = [date(2026, 1, 1) + timedelta(days=i) for i in range(31)]
    big = [240_000 + 997 * i for i in range(31)]
    names = ["Incoming message", "A channel with a long name", "WhatsApp Business – Support", "x" * 40]
    drawn = [charts.grouped_daily_bars(days, {"added": big, "deleted": big[::-1], "merged": big}, "g", lang=lang),
             charts.stacked_daily_bars(days, {n: big for n in names}, "s", lang),
             charts.category_bars(names, [1_234_567, 345_678, 9_999, 1], "c", lang)]
    style = (site / "1/2026-03-30/last_30_days.html").read_text().split("</style>")[0]
    page = folder / "stress.html"
    page.write_text(style + "</style></head><body><main>" + "".join(f"<figure>{c.svg}</figure>" for c in drawn)
                    + "</main></body></html>")
    return page


@pytest.mark.parametrize("locale", ["en", "es"])
@pytest.mark.parametrize("width", [360, 412, 1280])
def test_chart_labels_are_legible_on_phones_and_do_not_collide(browser: Any, request: pytest.FixtureRequest,
                                                                 tmp_path: Path, width: int, locale: str) -> None:
    site = site_of(request, locale)
    for url in ((site / "1/2026-03-30/last_30_days.html").as_uri(), _stress_page(site, tmp_path, locale).as_uri()):
        page, errors, _ = open_page(browser, url, width)
        texts = page.evaluate(_CHART_TEXTS)
        page.close()
        assert errors == [] and texts
        small = [(t["text"], round(t["px"], 1)) for t in texts if t["px"] < 10]
        assert small == [], f"chart labels below 10 px at {width} px wide"
        outside = [t["text"] for t in texts if t["left"] < 0 or t["right"] > width]
        assert outside == [], f"chart labels cut off at {width} px wide"
        collisions = [(a["text"], b["text"]) for i, a in enumerate(texts) for b in texts[i + 1:]
                      if a["chart"] == b["chart"] and a["left"] < b["right"] and b["left"] < a["right"]
                      and a["top"] < b["bottom"] and b["top"] < a["bottom"]]
        assert collisions == [], f"chart labels overlap at {width} px wide"


# A right-to-left override left open in user text: without isolation it reverses everything after it on the line.
RLO = "\u202e"
HOSTILE_NAMES = {"workspace": f"Acme {RLO}Ltd", "channel": f"WA {RLO}shop\u2069\u2069", "contact": f"{RLO}Ana"}


@pytest.fixture(scope="module")
def bidi_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.helpers import event, write_landing

    root = tmp_path_factory.mktemp("bidi-site")
    day = "2026-03-11"
    landing = write_landing(root / "landing", [(1, HOSTILE_NAMES["workspace"], "UTC")], {f"{day}/09": [
        event("a", f"{day}T08:00:00Z", contact_name=HOSTILE_NAMES["contact"]),
        event("c", f"{day}T08:30:00Z", event_type="contact.connected", source="broadcast",
              channel_name=HOSTILE_NAMES["channel"]),
    ]})
    render_all(build(landing, root), root / "out", date(2026, 3, 11))
    return root / "out"


# The x position of each character of the first text node after `after` within the element `selector`.
_POSITIONS = """([selector, after]) => {
  const walker = document.createTreeWalker(document.querySelector(selector), NodeFilter.SHOW_TEXT);
  let node;
  while ((node = walker.nextNode()) && !node.data.includes(after)) {}
  const start = node.data.indexOf(after), xs = [];
  for (let k = start; k < node.data.length; k++) {
    if (node.data[k] === " ") continue;
    const range = document.createRange();
    range.setStart(node, k); range.setEnd(node, k + 1);
    xs.push(range.getBoundingClientRect().left);
  }
  return xs;
}"""


@pytest.mark.parametrize(("page_name", "selector", "after"), [
    ("1/2026-03-11/today.html", "header.top p.meta:nth-of-type(2)", "(workspace 1)"),
    ("1/2026-03-11/today.html", "header.top p.meta", "› Reports › Contacts"),
    ("1/2026-03-11/today.html", "#connected ul.legend li", "—"),
    ("index.html", "tbody tr td", "#1"),
    ("1/index.html", "header.top", "Workspace 1"),
], ids=plain_id)
def test_an_open_right_to_left_override_does_not_turn_the_text_after_it(browser: Any, bidi_site: Path,
                                                                       page_name: str, selector: str,
                                                                       after: str) -> None:
    page, errors, _ = open_page(browser, (bidi_site / page_name).as_uri(), 1280)
    assert errors == []
    xs = page.evaluate(_POSITIONS, [selector, after])
    assert len(xs) >= 2
    assert xs == sorted(xs), f"text after the user's name runs right to left: {xs}"
    title = page.title()
    assert title.count("\u2068") == title.count("\u2069") >= ("Acme" in title)  # the name isolated in the title
    page.close()


def test_pages_and_downloads_stored_compressed_open_from_s3_as_they_are_on_disk(browser: Any, site: Path,
                                                                               s3_bucket: str) -> None:
    """Published text is stored gzip-compressed with Content-Encoding: gzip: a page and a CSV download opened from
    the loopback S3 through presigned links give the browser exactly the bytes of the local files."""
    from etl.publish import S3Target, link, upload
    from etl.storage import LocalStorage, s3_client

    client, target, out = s3_client(), S3Target(s3_bucket, "site"), LocalStorage(site)
    day = [k for k in out.list("1/2026-03-30")]
    assert upload(client, target, out, [*day, "1/index.html", "index.html"])["uploaded"] == len(day) + 2
    page_key, csv_key = "1/2026-03-30/last_30_days.html", "1/2026-03-30/last_30_days.contacts_added.csv"
    assert client.head_object(Bucket=s3_bucket, Key=target.key(page_key))["ContentEncoding"] == "gzip"
    page = browser.new_page(viewport={"width": 360, "height": 900})
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    answer = page.goto(link(client, target, page_key, None, 3600))
    assert answer.headers["content-encoding"] == "gzip"  # the browser got it compressed and undid it
    assert answer.body() == (site / page_key).read_bytes() and errors == []
    assert page.locator("svg.chart-svg").count() == 5
    with page.expect_download() as download:  # a CSV link downloads, as it does from disk
        page.evaluate("url => { const a = document.createElement('a'); a.href = url; a.download = ''; "
                      "document.body.append(a); a.click(); }", link(client, target, csv_key, None, 3600))
    assert Path(download.value.path()).read_bytes() == (site / csv_key).read_bytes()
    page.close()
