"""The report pages, parsed: numbers against independent counts, components, notices, safety, determinism."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections import Counter
from datetime import date
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from etl.csv_logs import neutralise
from etl.ingest import landing_dates
from etl.pipeline import run_etl
from etl.render import RenderError, RenderJob, job_scope, page_key
from etl.render_jobs import planned_batches, render
from etl.report import NO_DATA_FILTERED, NOT_APPLICABLE, FilterError, Filters
from etl.storage import LocalStorage, StorageError
from etl.windows import WINDOW_NAMES, window
from tests.conftest import copy_tiny_warehouse, shared
from tests.faults.proxy import FaultProxy
from tests.helpers import event, write_landing
from tests.naive import naive_counts, naive_events

HOSTILE = {
    "contact": "<img src=x onerror=alert(1)>",
    "script": "</script><script>alert('pwned')</script>",
    "formula": '=HYPERLINK("http://evil.example","x")',
    "math": "a$\\undefinedcmd$b cost $5 vs $6",
    "rtl": "\u202eevil\u202c",
    "crlf": "line\r\nbreak",
    "js": "javascript:alert(1)",
}


class Page(HTMLParser):
    """Collects what the tests look at: ids, elements by tag, the JSON block, links, text."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: list[str] = []
        self.tags: Counter[str] = Counter()
        self.links: list[str] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self.text: list[str] = []
        self._script: dict[str, str | None] | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        found = dict(attrs)
        if found.get("id"):
            self.ids.append(found["id"])
        if tag == "a" and found.get("href"):
            self.links.append(str(found["href"]))
        if tag == "script":
            self._script = found

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._script = None

    def handle_data(self, data: str) -> None:
        if self._script is not None:
            self.scripts.append((self._script, data))
        else:
            self.text.append(data)

    @property
    def data(self) -> dict[str, Any]:
        blocks = [body for attrs, body in self.scripts if attrs.get("id") == "report-data"]
        assert len(blocks) == 1
        return dict(json.loads(blocks[0]))


def open_page(path: Path) -> Page:
    return Page(path.read_text(encoding="utf-8"))


def build(landing: Path, root: Path) -> Path:
    warehouse = LocalStorage(root / "wh")
    for d in landing_dates(LocalStorage(landing)):
        run_etl(LocalStorage(landing), warehouse, d)
    return root / "wh"


def render_all(warehouse: Path, out: Path | str, report_day: date, workers: int = 1, filters: tuple[str, ...] = (),
               ids: tuple[int, ...] | None = None, page_log_rows: int = 500,
               rows_per_group: int = 1_000_000, locale: str | None = None) -> dict[str, int]:
    from etl.warehouse import read_view

    ids = ids or tuple(sorted(read_view(LocalStorage(warehouse)).workspaces))
    job = RenderJob(str(warehouse), str(out), ids, report_day, None, WINDOW_NAMES, filters, page_log_rows,
                    rows_per_group, locale=locale)
    return render(job, workers=workers)


@pytest.fixture(scope=shared)
def tiny_site(tmp_path_factory: pytest.TempPathFactory, tiny_warehouse_built: Path | None) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny-site")
    warehouse = copy_tiny_warehouse(root / "wh", tiny_warehouse_built)
    render_all(warehouse, root / "out", date(2026, 3, 30))
    render_all(warehouse, root / "out", date(2026, 3, 30), filters=("channel=11",), ids=(1,))
    return warehouse, root / "out"


def test_tiny_pages_carry_the_independent_numbers(tiny_site: tuple[Path, Path],
                                                  tiny_expected: dict[str, Any]) -> None:
    _, out = tiny_site
    for name, expected in tiny_expected["pages"].items():
        data = open_page(out / name).data
        assert {k: data[k] for k in expected} == expected, name
        assert data["window"] == name.split("/")[-1].removesuffix(".html")
        assert data["timezone"] in ("Europe/Madrid", "America/Lima")
        assert data["generated_from"]["latest_ingest_date"] == "2026-03-30"


def test_filtered_render_goes_to_its_own_folder_with_nulls_where_not_applicable(
        tiny_site: tuple[Path, Path], tiny_expected: dict[str, Any]) -> None:
    _, out = tiny_site
    [path] = list(out.glob("filtered/*/1/2026-03-30/last_30_days.html"))
    page = open_page(path)
    [expected] = tiny_expected["filtered"].values()
    assert {k: page.data[k] for k in expected} == expected
    assert page.data["filters"] == {"channel": "11"}
    text = " ".join(page.text)
    assert text.count(NOT_APPLICABLE) >= 4  # two cards and two logs
    assert page.data["logs"]["deleted"] is None and page.data["logs"]["connected"] == 9
    unfiltered = open_page(out / "1/2026-03-30/last_30_days.html").data
    assert unfiltered["totals"]["connected"] == 12 and unfiltered["filters"] == {}


def test_every_component_is_present_and_every_id_unique(tiny_site: tuple[Path, Path]) -> None:
    _, out = tiny_site
    for path in sorted(out.glob("[0-9]*/2026-03-30/*.html")):
        page = open_page(path)
        duplicates = [i for i, n in Counter(page.ids).items() if n > 1]
        assert not duplicates, (path, duplicates[:5])
        for section in ("overview", "added", "connected", "logs", "log-added", "log-connected", "log-deleted",
                        "log-merged", "card-added", "card-deleted", "card-merged", "report-data"):
            assert section in page.ids, (path, section)
        links = [link for link in page.links if not link.startswith("#")]
        for name in WINDOW_NAMES:
            if name != path.stem:
                assert f"{name}.html" in links
    data = open_page(out / "1/2026-03-30/last_30_days.html")
    assert data.tags["svg"] == 5  # overview, added bar + pie, connected bar + pie


def test_logs_match_the_json_counts_and_the_csv_is_complete(tiny_site: tuple[Path, Path],
                                                           tiny_expected: dict[str, Any]) -> None:
    _, out = tiny_site
    folder = out / "1/2026-03-30"
    data = open_page(folder / "last_30_days.html").data
    independent = tiny_expected["pages"]["1/2026-03-30/last_30_days.html"]["totals"]
    for kind in ("added", "connected", "deleted", "merged"):
        raw = (folder / f"last_30_days.contacts_{kind}.csv").read_bytes()
        assert raw.startswith("\ufeff".encode())
        rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
        assert rows[0][:4] == ["timestamp_local", "timestamp_utc", "contact_id", "contact_name"]
        assert len(rows) - 1 == data["logs"][kind] == independent[kind]  # the independent count, not the frame's
        assert [r[0] for r in rows[1:]] == sorted((r[0] for r in rows[1:]), reverse=True)  # newest first
        for row in rows[1:]:
            assert not row[3].startswith(("=", "+", "-", "@")), row


def test_notice_when_filters_leave_no_data(tiny_site: tuple[Path, Path], tmp_path: Path) -> None:
    warehouse, _ = tiny_site
    render_all(warehouse, tmp_path, date(2026, 3, 30), filters=("source=zapier", "user=101"), ids=(1,))
    [path] = list(tmp_path.glob("filtered/*/1/2026-03-30/today.html"))
    page = open_page(path)
    assert page.data["totals"] == {"added": 0, "deleted": 0, "merged": 0, "connected": 0}
    assert " ".join(page.text).count(NO_DATA_FILTERED) >= 6
    assert page.tags["svg"] == 0


@pytest.mark.other_process
def test_same_warehouse_gives_byte_identical_output_with_one_or_two_workers(tiny_site: tuple[Path, Path],
                                                                            tmp_path: Path) -> None:
    warehouse, _ = tiny_site
    render_all(warehouse, tmp_path / "one", date(2026, 3, 30), workers=1)
    render_all(warehouse, tmp_path / "two", date(2026, 3, 30), workers=2)
    # A worker loads its workspaces a group at a time; one workspace per group must not change a byte either.
    render_all(warehouse, tmp_path / "grouped", date(2026, 3, 30), workers=1, rows_per_group=1)

    one = digests(tmp_path / "one")
    assert one == digests(tmp_path / "two") == digests(tmp_path / "grouped")
    assert len([k for k in one if k.endswith(".html")]) == 2 * 7 + 3  # pages + three index pages


def test_parallel_workers_get_batches_sized_by_the_events_their_pages_load(tiny_site: tuple[Path, Path]) -> None:
    import polars as pl

    from etl.warehouse import DayFiles, event_counts, read_view

    warehouse, _ = tiny_site
    day = date(2026, 3, 30)  # its windows reach back to January: every stored event up to the day counts
    stored = (pl.scan_parquet(warehouse / "events" / "**" / "*.parquet")
              .filter(pl.col("local_date") <= day).group_by("workspace_id").len().collect())
    view = read_view(LocalStorage(warehouse))
    workspaces = [view.workspaces[w] for w in (1, 2)]
    counted = event_counts(DayFiles(LocalStorage(warehouse)), workspaces, {1: day, 2: day}, WINDOW_NAMES, False)
    assert counted == dict(stored.rows())

    job = RenderJob(str(warehouse), "unused", (2, 1), day, None, WINDOW_NAMES, ())
    busier = max(counted, key=counted.__getitem__)
    scope = job_scope(job)
    assert planned_batches(job, 2, scope) == [(busier,), (3 - busier,)]  # the batch with more work starts first
    assert planned_batches(job, 1, scope) == [(1, 2)]


@pytest.mark.other_process
def test_pages_rendered_straight_to_s3_are_the_local_pages(tiny_site: tuple[Path, Path], s3_bucket: str,
                                                           tmp_path: Path) -> None:
    from etl.storage import s3_client

    warehouse, _ = tiny_site
    render_all(warehouse, tmp_path / "local", date(2026, 3, 30), workers=2)
    render_all(warehouse, f"s3://{s3_bucket}/pages", date(2026, 3, 30), workers=2)

    client = s3_client()
    listed = client.list_objects_v2(Bucket=s3_bucket, Prefix="pages/")["Contents"]
    remote = {o["Key"].removeprefix("pages/"): client.get_object(Bucket=s3_bucket, Key=o["Key"]) for o in listed}
    local = digests(tmp_path / "local")
    assert {k: hashlib.sha256(o["Body"].read()).hexdigest() for k, o in remote.items()} == local
    assert {o["ServerSideEncryption"] for o in remote.values()} == {"AES256"}
    assert remote["1/2026-03-30/today.html"]["ContentType"] == "text/html; charset=utf-8"


@pytest.mark.other_process
def test_index_pages_on_s3_list_every_night_and_only_the_first_night_lists_the_bucket(
        tiny_site: tuple[Path, Path], proxy: FaultProxy, moto_server: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Night after night straight to S3: the index pages are the local ones (every report day listed). Only the first
    night (no record of known pages yet) lists the output; every night lists its own render records, nothing else."""
    from urllib.parse import parse_qs, urlsplit

    from etl.storage import s3_client

    warehouse, _ = tiny_site
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    s3_client().create_bucket(Bucket="nights")
    listings = []
    for day in (date(2026, 3, 28), date(2026, 3, 30), date(2026, 3, 29)):  # a night re-rendered out of order
        render_all(warehouse, tmp_path / "local", day)
        sent = len(proxy.seen)
        render_all(warehouse, "s3://nights/pages", day)
        listings.append([parse_qs(urlsplit(path).query)["prefix"][0] for method, path, _ in proxy.seen[sent:]
                         if method == "GET" and "list-type" in path])
    own = [f"pages/_rendered/report-day={day}" for day in ("2026-03-28", "2026-03-30", "2026-03-29")]
    assert listings == [[own[0], "pages/"], [own[1]], [own[2]]]

    client = s3_client()  # still through the proxy: it only counts
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket="nights", Prefix="pages/")
            for o in page.get("Contents", [])]
    remote = {k.removeprefix("pages/"): hashlib.sha256(client.get_object(Bucket="nights", Key=k)["Body"].read())
              .hexdigest() for k in keys}
    assert remote == digests(tmp_path / "local")
    workspace_index = open_page(tmp_path / "local/1/index.html").links
    assert {link.split("/")[0] for link in workspace_index} >= {"2026-03-28", "2026-03-29", "2026-03-30"}


def digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_index_pages_link_only_to_pages_that_exist(tiny_site: tuple[Path, Path]) -> None:
    _, out = tiny_site
    for index in [out / "index.html", out / "1/index.html", out / "2/index.html"]:
        links = open_page(index).links
        assert links
        for link in links:
            assert (index.parent / link).resolve().is_file(), (index, link)


def test_hostile_names_render_as_inert_text_everywhere(tmp_path: Path) -> None:
    names = list(HOSTILE.values())
    events = []
    for i, name in enumerate(names):
        events.append(event(f"a{i}", "2026-03-10T10:00:00Z", contact_id=i + 1, contact_name=name,
                            source="incoming_message", channel_id=50 + i, channel_name=name, channel_type="sms"))
        events.append(event(f"c{i}", "2026-03-10T11:00:00Z", event_type="contact.connected", source="user",
                            contact_id=i + 1, contact_name=name, channel_id=50 + i, channel_name=name,
                            channel_type="<b>t</b>", user_name=name))
    landing = write_landing(tmp_path / "landing", [(1, HOSTILE["script"] + " & Co", "UTC")],
                            {"2026-03-10/12": events})
    warehouse = build(landing, tmp_path)
    render_all(warehouse, tmp_path / "out", date(2026, 3, 10))
    html = (tmp_path / "out/1/2026-03-10/today.html").read_text()
    page = Page(html)
    assert page.tags["img"] == 0
    assert page.tags["script"] == 2  # the JSON block and the log search, nothing injected
    assert "<img src=x" not in html and "</script><script>alert" not in html
    data = page.data
    assert data["workspace_name"] == HOSTILE["script"] + " & Co"
    assert data["totals"]["added"] == len(names)
    text = " ".join(page.text)
    assert HOSTILE["contact"] in text and HOSTILE["formula"] in text
    svg_text = re.findall(r"<text[^>]*>([^<]*)</text>", html)
    assert any("&lt;img src=x" in t for t in svg_text)  # channel names in the charts, escaped
    assert any("a$\\undefinedcmd$b" in t for t in svg_text)  # mathtext off: dollars stay text
    added_csv = (tmp_path / "out/1/2026-03-10/today.contacts_added.csv").read_text(encoding="utf-8-sig")
    assert "'=HYPERLINK" in added_csv


def test_filters_and_names_are_validated_before_any_path_is_built() -> None:
    for bad in (["channel=x"], ["colour=red"], ["source=fax"], ["user=1", "user=2"], ["contact="]):
        with pytest.raises(FilterError):
            Filters.parse(bad)
    with pytest.raises(RenderError):
        page_key(0, date(2026, 3, 1), "today", Filters())
    with pytest.raises(RenderError):
        page_key(1, date(2026, 3, 1), "../today", Filters())
    slug = Filters.parse(["contact=../../etc/passwd"]).slug()
    assert "/" not in slug and ".." not in slug
    with pytest.raises(StorageError):
        LocalStorage(Path("/tmp")).write_bytes("a/../../b", b"")
    assert neutralise("-2+3") == "'-2+3" and neutralise("Ana") == "Ana" and neutralise("@x") == "'@x"


def test_long_logs_show_the_newest_rows_and_link_the_complete_csv(tmp_path: Path) -> None:
    events = [event(f"e{i}", f"2026-03-10T10:{i // 60:02d}:{i % 60:02d}Z", contact_id=i + 1) for i in range(30)]
    landing = write_landing(tmp_path / "landing", [(1, "W", "UTC")], {"2026-03-10/12": events})
    warehouse = build(landing, tmp_path)
    render_all(warehouse, tmp_path / "out", date(2026, 3, 10), page_log_rows=10)
    html = (tmp_path / "out/1/2026-03-10/today.html").read_text()
    table = html[html.index('id="table-added"'):]
    table = table[: table.index("</table>")]
    assert table.count("<tr>") == 11  # header + the newest 10
    assert "2026-03-10 10:00:29" in table and "2026-03-10 10:00:00" not in table
    assert "showing the newest 10" in html
    rows = (tmp_path / "out/1/2026-03-10/today.contacts_added.csv").read_text(encoding="utf-8-sig").splitlines()
    assert len(rows) == 31


@pytest.mark.other_process
def test_generated_pages_match_a_naive_count(tmp_path: Path) -> None:
    from etl.generate import GenerateOptions, generate

    landing = tmp_path / "landing"
    generate(LocalStorage(landing), GenerateOptions(start=date(2026, 2, 20), days=40, workspaces=6,
                                                    events_per_day=150, seed=5))
    warehouse = build(landing, tmp_path)
    report_day = date(2026, 3, 29)
    render_all(warehouse, tmp_path / "out", report_day, workers=2)
    reference = naive_events(landing)
    for workspace in range(1, 7):
        for name in WINDOW_NAMES:
            data = open_page(tmp_path / f"out/{workspace}/{report_day}/{name}.html").data
            span = window(name, report_day)
            counts = naive_counts(reference, workspace, span.start, span.end)
            assert data["totals"] == {k: counts.get(k, 0) for k in ("added", "deleted", "merged", "connected")}
            previous = span.previous()
            prev_counts = naive_counts(reference, workspace, previous.start, previous.end)
            assert data["previous_period"] == {k: prev_counts.get(k, 0)
                                               for k in ("added", "deleted", "merged", "connected")}
            assert sum(d["added"] for d in data["daily"]) == data["totals"]["added"]
            assert sum(data["added_by_source"].values()) == data["totals"]["added"]
            assert sum(data["connected_by_channel"].values()) == data["totals"]["connected"]
