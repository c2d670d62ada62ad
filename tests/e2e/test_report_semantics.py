"""What a stakeholder reads on a page, one rule at a time: the sign and wording of "% difference", whose name the
logs show, how the contact filter matches, when the day-to-day links appear, which name a renamed channel shows.
Each test builds a landing made for its rule, runs the real ETL and render, and reads the HTML."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest

from tests.conftest import shared
from tests.e2e.test_pages import build, render_all
from tests.helpers import event, write_landing

DAY1, DAY2 = "2026-03-09", "2026-03-10"


ON_DAY1 = "Mar 9, 2026"  # DAY1 as the English pages write a day


def card_change(html: str, kind: str) -> tuple[str, str]:
    """(css classes, text) of a metric card's change line."""
    card = html[html.index(f'id="card-{kind}"'):]
    m = re.search(r'<div class="(change[^"]*)">([^<]*)</div>', card)
    assert m, kind
    return m.group(1), m.group(2)


def table_rows(html: str, kind: str) -> list[list[str]]:
    table = html[html.index(f'id="table-{kind}"'):]
    table = table[table.index("<tbody>"): table.index("</tbody>")]
    return [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", table, re.S)]


@pytest.fixture(scope=shared)
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("semantics")
    day1 = [
        event("a-1", f"{DAY1}T08:00:00Z", contact_id=21), event("a-2", f"{DAY1}T08:01:00Z", contact_id=22),
        *[event(f"d-{i}", f"{DAY1}T09:0{i}:00Z", event_type="contact.deleted", contact_id=30 + i) for i in range(4)],
        event("c-1", f"{DAY1}T10:00:00Z", event_type="contact.connected", source="incoming_message", contact_id=40,
              channel_name="Old name"),
    ]
    day2 = [
        event("a-3", f"{DAY2}T08:00:00Z", source="user", contact_id=1, contact_name="alice Smith",
              user_name="Susan"),
        event("a-4", f"{DAY2}T08:01:00Z", contact_id=2, contact_name="Bob", user_id=8, user_name="Importer"),
        event("a-5", f"{DAY2}T08:02:00Z", contact_id=3, contact_name="ALICIA"),
        event("d-9", f"{DAY2}T09:00:00Z", event_type="contact.deleted", contact_id=39, user_name="Remover"),
        event("m-1", f"{DAY2}T10:00:00Z", event_type="contact.merged", contact_id=5, merged_contact_id=6),
        event("m-2", f"{DAY2}T10:01:00Z", event_type="contact.merged", contact_id=9, merged_contact_id=10),
        event("c-2", f"{DAY2}T11:00:00Z", event_type="contact.connected", source="incoming_message", contact_id=41,
              channel_name="New name"),
    ]
    landing = write_landing(root / "landing", [(1, "W", "UTC")], {f"{DAY1}/12": day1, f"{DAY2}/12": day2})
    warehouse = build(landing, root)
    for day in (date(2026, 3, 9), date(2026, 3, 10)):
        render_all(warehouse, root / "out", day)
    render_all(warehouse, root / "out", date(2026, 3, 10), filters=("contact=ALI",))
    render_all(warehouse, root / "out", date(2026, 3, 10), filters=("contact=6",))
    return root / "out"


def page(site: Path, day: str, window: str = "today") -> str:
    return (site / f"1/{day}/{window}.html").read_text(encoding="utf-8")


def test_percent_difference_is_signed_current_against_previous(site: Path) -> None:
    html = page(site, DAY2)
    assert card_change(html, "added") == ("change up", f"+50.0% vs previous period (2 in {ON_DAY1} – {ON_DAY1})")
    assert card_change(html, "deleted") == ("change down", f"-75.0% vs previous period (4 in {ON_DAY1} – {ON_DAY1})")


def test_a_count_after_an_empty_period_is_new_and_nothing_after_nothing_is_no_change(site: Path) -> None:
    assert card_change(page(site, DAY2), "merged") == ("change", f"new (none in the previous period) (0 in {ON_DAY1}"
                                                                 f" – {ON_DAY1})")
    assert card_change(page(site, DAY1), "merged")[1].startswith("no change (0 in Mar 8, 2026")
    # Two days against the two before them: 5 added against 0 is new, not a percentage.
    assert card_change(page(site, DAY2, "last_7_days"), "added")[1].startswith("new (none in the previous period)")


def test_the_added_log_names_the_user_only_for_contacts_a_user_added(site: Path) -> None:
    added = {row[1]: row for row in table_rows(page(site, DAY2), "added")}
    assert added["1"][3:] == ["User", "Susan"]
    assert added["2"][3] != "User" and added["2"][4] == ""  # an import names no user, even one the event carries
    deleted = table_rows(page(site, DAY2), "deleted")
    assert deleted[0][1:] == ["39", "Contact 39", "User", "Remover"]


def test_logs_carry_their_own_columns(site: Path) -> None:
    html = page(site, DAY2)
    assert table_rows(html, "connected")[0][-1] == "New name (whatsapp)"
    assert [row[-1] for row in table_rows(html, "merged")] == ["10", "6"]  # newest first


def test_a_renamed_channel_shows_its_latest_name(site: Path) -> None:
    html = page(site, DAY2, "last_7_days")
    assert "New name (whatsapp)" in html and "Old name" not in html.split('id="log-connected"')[0]
    logs = table_rows(html, "connected")
    assert [row[-1] for row in logs] == ["New name (whatsapp)", "Old name (whatsapp)"]  # each row as it happened


def test_the_contact_filter_ignores_case_and_matches_ids_of_either_merged_contact(site: Path) -> None:
    [by_name] = site.glob(f"filtered/contact-ALI-*/1/{DAY2}/today.html")
    names = sorted(row[2] for row in table_rows(by_name.read_text(encoding="utf-8"), "added"))
    assert names == ["ALICIA", "alice Smith"]
    [by_id] = site.glob(f"filtered/contact-6-*/1/{DAY2}/today.html")
    assert [row[1] for row in table_rows(by_id.read_text(encoding="utf-8"), "merged")] == ["5"]


def test_day_links_appear_only_towards_days_with_data(site: Path) -> None:
    first, last = page(site, DAY1), page(site, DAY2)
    assert 'rel="prev"' not in first  # nothing before the warehouse's first day
    assert f'<a href="../{DAY2}/today.html" rel="next">' in first
    assert f'<a href="../{DAY1}/today.html" rel="prev">' in last
    assert 'rel="next"' not in last  # the latest report day has no next
