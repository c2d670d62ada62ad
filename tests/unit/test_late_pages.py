"""Late events and the pages of past report days: a night re-renders the windows its late events changed (their
days or their previous period, for the "% difference"), within `late_pages_days` report days before tonight's,
and publishes them with its own pages."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from etl import nightly
from etl.render import RenderJob, render_batch
from etl.render_jobs import late_pages
from etl.report import Filters
from etl.settings import Settings
from etl.storage import LocalStorage
from etl.windows import WINDOW_NAMES, window, windows_showing
from tests.helpers import event, write_landing

D = date.fromisoformat


def test_a_late_day_re_renders_the_windows_that_show_it_or_compare_with_it() -> None:
    # Tonight is 03-11; 03-10's pages went out last night. A late event of 03-09 is in 03-10's "yesterday" and
    # in the period its "today" compares with; not in its "last month" (February) nor that month's previous.
    assert late_pages({1: [D("2026-03-09")]}, {1: D("2026-03-11")}, None, 1) == {
        (D("2026-03-10"), ("today", "yesterday", "last_7_days", "last_14_days", "last_30_days", "this_month")): [1]}
    # Across a month: 02-28 is in 03-02's "last month" and in the periods its "yesterday" (03-01) and "this month"
    # (03-01..02) compare with; not in its "today" nor that one's previous day.
    assert late_pages({1: [D("2026-02-28")]}, {1: D("2026-03-03")}, None, 1) == {
        (D("2026-03-02"), ("yesterday", "last_7_days", "last_14_days", "last_30_days", "this_month",
                            "last_month")): [1]}


@pytest.mark.parametrize("late", ["2026-01-20", "2026-02-27", "2026-03-04", "2026-03-09", "2026-03-10"])
@pytest.mark.parametrize("horizon", [0, 1, 3, 40])
def test_every_past_page_whose_numbers_hold_the_late_day_and_no_other(late: str, horizon: int) -> None:
    tonight = D("2026-03-11")
    pages = late_pages({7: [D(late)]}, {7: tonight}, D("2026-01-01"), horizon)
    expected = {}
    for back in range(1, horizon + 1):
        day = date.fromordinal(tonight.toordinal() - back)
        names = tuple(n for n in WINDOW_NAMES
                      if any(D(late) in w.dates() for w in (window(n, day), window(n, day).previous())))
        if names:
            expected[(day, names)] = [7]
    assert pages == expected
    assert all(day < tonight for day, _ in pages)  # tonight's pages are the night's own render


def test_no_past_page_before_the_warehouse_begins_nor_for_workspaces_without_late_events() -> None:
    report_days = {1: D("2026-03-11"), 2: D("2026-03-10"), 3: D("2026-03-11")}
    pages = late_pages({1: [D("2026-03-08")], 2: [D("2026-03-08")], 4: [D("2026-03-08")]}, report_days,
                       D("2026-03-09"), 5)
    assert sorted({day for day, _ in pages}) == [D("2026-03-09"), D("2026-03-10")]  # from the first day on
    assert {w for ids in pages.values() for w in ids} == {1, 2}  # 3 had none; 4 has no report day tonight
    assert (D("2026-03-09"), windows_showing(D("2026-03-08"), D("2026-03-09"))) in pages


def report_data(page: Path) -> dict[str, Any]:
    found = re.search(r'id="report-data"[^>]*>(.*?)</script>', page.read_text(encoding="utf-8"), re.S)
    assert found
    return dict(json.loads(found.group(1)))


@pytest.fixture
def two_nights(tmp_path: Path) -> Settings:
    """Night 03-10 reports 03-10 (UTC); night 03-11 brings 03-11's event and a late one of 03-10."""
    landing = write_landing(tmp_path / "landing", [(1, "Acme", "UTC")], {
        "2026-03-10/12": [event("a1", "2026-03-10T09:00:00Z")],
        "2026-03-11/12": [event("a2", "2026-03-11T09:00:00Z", contact_id=101),
                          event("late", "2026-03-10T15:00:00Z", contact_id=102)]})
    return Settings(landing=str(landing), warehouse=str(tmp_path / "wh"), out=str(tmp_path / "out"),
                    archive=str(tmp_path / "out/archive"))


def run(settings: Settings, night: str) -> dict[str, int]:
    nightly.ingest(settings, D(night))
    return nightly.render_workspaces(settings, D(night), [1])


def test_a_late_event_updates_last_nights_pages_and_they_are_published_with_tonights(two_nights: Settings) -> None:
    out = Path(two_nights.out)
    assert run(two_nights, "2026-03-10")["late_pages"] == 0
    before = {p.name: p.read_bytes() for p in (out / "1/2026-03-10").iterdir()}
    assert report_data(out / "1/2026-03-10/today.html")["totals"]["added"] == 1

    assert run(two_nights, "2026-03-11") == {"pages": 7, "csv": 28, "filtered_pages": 0, "late_pages": 5}
    after = {p.name: p.read_bytes() for p in (out / "1/2026-03-10").iterdir()}
    changed = sorted({name.split(".")[0] for name in after if after[name] != before[name]})
    assert changed == ["last_14_days", "last_30_days", "last_7_days", "this_month", "today"]
    assert report_data(out / "1/2026-03-10/today.html")["totals"]["added"] == 2
    assert "Contact 102" in (out / "1/2026-03-10/today.contacts_added.csv").read_text(encoding="utf-8")

    keys = nightly.night_keys(two_nights, D("2026-03-11"))
    assert {k for k in keys if k.startswith("1/2026-03-10/")} == {
        f"1/2026-03-10/{name}" for name in after if name.split(".")[0] in changed}
    assert sum(k.startswith("1/2026-03-11/") and k.endswith(".html") for k in keys) == 7

    # Again: the same pages, byte for byte, and the same record.
    assert run(two_nights, "2026-03-11")["late_pages"] == 5
    assert {p.name: p.read_bytes() for p in (out / "1/2026-03-10").iterdir()} == after
    assert nightly.night_keys(two_nights, D("2026-03-11")) == keys


def test_late_pages_days_0_leaves_past_pages_as_they_were_published(two_nights: Settings) -> None:
    settings = replace(two_nights, late_pages_days=0)
    run(settings, "2026-03-10")
    before = {p.name: p.read_bytes() for p in (Path(settings.out) / "1/2026-03-10").iterdir()}
    assert run(settings, "2026-03-11")["late_pages"] == 0
    assert {p.name: p.read_bytes() for p in (Path(settings.out) / "1/2026-03-10").iterdir()} == before
    assert not [k for k in nightly.night_keys(settings, D("2026-03-11")) if k.startswith("1/2026-03-10/")]
    assert len(LocalStorage(settings.out).list("_rendered/cutoff=2026-03-12T000000Z")) == 1  # tonight's record


def test_the_setting_is_read_and_checked() -> None:
    assert Settings.from_env({}).late_pages_days == 1
    assert Settings.from_env({"CONTACTS_REPORT_LATE_PAGES_DAYS": "30"}).late_pages_days == 30
    with pytest.raises(Exception, match="CONTACTS_REPORT_LATE_PAGES_DAYS"):
        Settings.from_env({"CONTACTS_REPORT_LATE_PAGES_DAYS": "-1"})


def test_the_render_command_with_a_cutoff_renders_the_late_pages_as_the_nightly_does(
        two_nights: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from etl.cli import main

    run(two_nights, "2026-03-10")
    run(two_nights, "2026-03-11")
    nightly_out = Path(two_nights.out)
    by_hand = tmp_path / "by-hand"
    render = ["render", "--warehouse", two_nights.warehouse, "--out", str(by_hand), "--cutoff", "2026-03-12T00:00Z",
              "--workers", "2"]
    assert main(render) == 0
    assert json.loads(capsys.readouterr().out)["late_pages"] == 5
    for name in ("today", "last_7_days", "this_month"):  # what the nightly re-rendered, byte for byte
        page = f"1/2026-03-10/{name}.html"
        assert (by_hand / page).read_bytes() == (nightly_out / page).read_bytes()
    assert not (by_hand / "1/2026-03-10/yesterday.html").exists()  # not changed by the late event
    assert main([*render, "--late-pages-days", "0", "--out", str(tmp_path / "none")]) == 0
    assert json.loads(capsys.readouterr().out)["late_pages"] == 0
    assert not (tmp_path / "none/1/2026-03-10").exists()


def test_a_late_event_updates_the_filtered_pages_a_recipient_reads_too(two_nights: Settings, tmp_path: Path) -> None:
    recipients = tmp_path / "recipients.json"
    recipients.write_text(json.dumps({"1": [{"to": "a@example.com", "filters": {"source": "contact_import"}}]}))
    settings = replace(two_nights, recipients_file=str(recipients))
    folder = Path(settings.out) / f"filtered/{Filters.parse(['source=contact_import']).slug()}/1/2026-03-10"
    assert run(settings, "2026-03-10")["filtered_pages"] == 7
    assert report_data(folder / "today.html")["totals"]["added"] == 1
    assert run(settings, "2026-03-11") == {"pages": 7, "csv": 28, "filtered_pages": 7, "late_pages": 10}
    assert report_data(folder / "today.html")["totals"]["added"] == 2
    keys = nightly.night_keys(settings, D("2026-03-11"))
    assert f"{folder.relative_to(settings.out)}/today.html" in keys


def test_past_pages_rendered_with_tonights_rows_equal_a_render_of_their_own_day(tmp_path: Path) -> None:
    """The past pages a night renders from the rows it read for tonight's are the pages a render of their own report
    day gives, byte for byte: in zones from -11 to +14 and +5:30, over a month's end (the "Last month" of 03-31
    compares February with January, which tonight's own pages do not read), with filtered pages only for the
    workspace whose recipient asked for them."""
    zones = {1: "UTC", 2: "Pacific/Kiritimati", 3: "Pacific/Pago_Pago", 4: "Asia/Kolkata"}
    history = [event(f"h{w}-{d}", f"{d}T{h:02d}:30:00Z", workspace_id=w, contact_id=100 + n,
                     **({"event_type": "contact.connected"} if n % 3 == 0 else {}))
               for w in zones for n, (d, h) in enumerate([("2026-01-10", 3), ("2026-01-20", 23), ("2026-02-14", 11),
                                                          ("2026-03-01", 0), ("2026-03-29", 22), ("2026-03-30", 9),
                                                          ("2026-03-31", 12)])]
    late = [event(f"late{w}-{d}", f"{d}T{h:02d}:00:00Z", workspace_id=w, contact_id=900 + w)
            for w, d, h in [(1, "2026-03-31", 20), (2, "2026-03-30", 1), (3, "2026-03-29", 18),
                            (4, "2026-01-15", 6), (1, "2026-03-29", 10), (2, "2026-02-02", 2)]]
    landing = write_landing(tmp_path / "landing", [(w, f"W{w}", tz) for w, tz in zones.items()], {
        "2026-03-31/12": history,
        "2026-04-01/12": [event(f"t{w}", "2026-04-01T10:00:00Z", workspace_id=w) for w in zones] + late})
    recipients = tmp_path / "recipients.json"
    recipients.write_text(json.dumps({"1": [{"to": "a@example.com", "filters": {"source": "contact_import"}}],
                                      "2": ["b@example.com"]}))
    settings = Settings(landing=str(landing), warehouse=str(tmp_path / "wh"), out=str(tmp_path / "out"),
                        archive=str(tmp_path / "archive"), recipients_file=str(recipients), late_pages_days=3)
    rendered: dict[str, int] = {}
    for night in ("2026-03-31", "2026-04-01"):
        nightly.ingest(settings, D(night))
        for workspace in zones:  # a batch each: no other workspace's report day widens the rows read
            late = nightly.render_workspaces(settings, D(night), [workspace])["late_pages"]
            rendered[night] = rendered.get(night, 0) + late

    tonight = nightly.night_scope(settings, D("2026-04-01")).days
    past: dict[tuple[str, int, date], set[str]] = {}
    for key in nightly.night_keys(settings, D("2026-04-01")):
        parts = key.split("/")
        if parts[0] == "filtered":
            slug, parts = parts[1], parts[2:]
        else:
            slug = ""
        if len(parts) == 3 and D(parts[1]) != tonight[int(parts[0])]:
            past.setdefault((slug, int(parts[0]), D(parts[1])), set()).add(key)
    assert {w for _, w, _ in past} == set(zones)  # every workspace had a late event within 3 report days
    assert {w for slug, w, _ in past if slug} == {1}  # filtered pages only where a recipient asked
    assert rendered["2026-04-01"] == sum(k.endswith(".html") for keys in past.values() for k in keys)
    assert any(k.endswith("/last_month.html") for keys in past.values() for k in keys)  # a January late event

    out, by_day = Path(settings.out), tmp_path / "by-day"
    for (slug, workspace, day), keys in past.items():
        filters = ("source=contact_import",) if slug else ()
        assert not slug or Filters.parse(list(filters)).slug() == slug
        render_batch(RenderJob(settings.warehouse, str(by_day), (workspace,), day, None, WINDOW_NAMES, filters))
        for key in keys:
            assert (out / key).read_bytes() == (by_day / key).read_bytes(), key
