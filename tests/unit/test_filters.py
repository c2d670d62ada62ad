"""The report filters on their own: which rows each keeps, how they are parsed, and the folder a filtered render
goes to."""

from __future__ import annotations

import hashlib
import re

import polars as pl
import pytest

from etl.contract import ADDED, CONNECTED, DELETED, MERGED
from etl.report import FilterError, Filters

ROWS = pl.DataFrame({
    "event_type": [ADDED, ADDED, CONNECTED, DELETED, MERGED, CONNECTED],
    "channel_id": [11, None, 12, None, None, 11],
    "user_id": [7, None, 7, 8, 7, None],
    "source": ["user", "contact_import", "incoming_message", "user", "user", "broadcast"],
    "contact_id": [1, 2, 3, 4, 5, 6],
    "merged_contact_id": [None, None, None, None, 60, None],
    "contact_name": ["Ana", "ANAÏS", "Bo", "bob", "Cy", "Dee"],
})


def kept(items: list[str], with_contact: bool = True) -> list[int]:
    predicate = Filters.parse(items).rows_predicate(with_contact)
    return ROWS.filter(predicate)["contact_id"].to_list()


@pytest.mark.parametrize(("items", "expected"), [
    ([], [1, 2, 3, 4, 5, 6]),
    (["channel=11"], [1, 4, 5, 6]),  # narrows added and connected only: deleted and merged have no channel
    (["user=7"], [1, 3, 5]),
    (["source=user"], [1, 4, 5]),
    (["contact=ana"], [1, 2]),  # part of a name, any case
    (["contact=BO"], [3, 4]),
    (["contact=60"], [5]),  # the merged contact's id
    (["contact=3"], [3]),  # an id matches exactly, not as a part of "30"
    (["contact=a.a"], []),  # the text itself, not a pattern
    (["contact=("], []),
    (["channel=11", "user=7"], [1, 5]),  # filters combine with AND, each with all that come before it
    (["user=7", "contact=cy"], [5]),
    (["user=8", "source=user"], [4]),
    (["user=8", "contact=cy"], []),
    (["source=broadcast", "contact=cy"], []),
])
def test_each_filter_keeps_exactly_its_rows(items: list[str], expected: list[int]) -> None:
    assert kept(items) == expected


def test_the_contact_filter_applies_only_where_rows_carry_contacts() -> None:
    assert kept(["contact=ana"], with_contact=False) == [1, 2, 3, 4, 5, 6]  # aggregates have no contact


@pytest.mark.parametrize(("value", "accepted"), [
    ("9223372036854775807", True), ("0000000000000000001", True), ("200", True),  # up to 2**63 - 1, 19 digits
    ("9223372036854775808", False), ("00000000000000000001", False),
])
def test_ids_fit_a_64_bit_column(value: str, accepted: bool) -> None:
    if accepted:
        assert Filters.parse([f"user={value}"]).user == int(value)
    else:
        with pytest.raises(FilterError, match=r"^user filter takes a numeric user id, not "):
            Filters.parse([f"user={value}"])


def test_an_unknown_source_is_refused_naming_every_source() -> None:
    with pytest.raises(FilterError, match=r"^unknown source 'fax'; expected one of user, contact_import, "
                                          r"developer_api, incoming_message, echo_message, zapier, broadcast$"):
        Filters.parse(["source=fax"])


def test_a_value_may_hold_the_equals_sign() -> None:
    assert Filters.parse(["contact=a=b"]).contact == "a=b"


def test_a_malformed_filter_names_every_key() -> None:
    with pytest.raises(FilterError, match=r"^bad filter 'channel'; use KEY=VALUE with KEY one of channel, user, "
                                          r"source, contact$"):
        Filters.parse(["channel"])


@pytest.mark.parametrize(("items", "message"), [
    (["channel"], "use KEY=VALUE"), (["colour=red"], "use KEY=VALUE"), (["user="], "use KEY=VALUE"),
    (["user=7", "user=8"], "given twice"), (["channel=abc"], "numeric channel id"), (["user=0"], "numeric user id"),
    (["user=-3"], "numeric user id"), (["channel=٣"], "numeric channel id"), (["channel=" + "9" * 20], "numeric"),
    (["source=fax"], "unknown source"),
])
def test_unusable_filters_are_refused_saying_what_is_accepted(items: list[str], message: str) -> None:
    with pytest.raises(FilterError, match=message):
        Filters.parse(items)


def test_channel_filters_make_deleted_and_merged_not_applicable() -> None:
    channel = Filters.parse(["channel=11"])
    assert [k for k in ("added", "deleted", "merged", "connected") if channel.applies(k)] == ["added", "connected"]
    assert all(Filters.parse(["user=7"]).applies(k) for k in ("added", "deleted", "merged", "connected"))
    assert not Filters().active and Filters.parse(["source=user"]).active


@pytest.mark.parametrize("items", [["channel=11"], ["contact=../../etc"], ["contact=a/b c"], ["contact=////"],
                                   ["contact=" + "x" * 200], ["user=7", "source=user", "contact=Ana Lía"]])
def test_the_folder_of_a_filtered_render_is_path_safe_short_and_stable(items: list[str]) -> None:
    slug = Filters.parse(items).slug()
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,60}-[0-9a-f]{8}", slug), slug
    assert not slug.startswith(("_", "-")) and Filters.parse(items).slug() == slug
    readable = slug.rsplit("-", 1)[0]
    assert readable.split("__")[0].split("-")[0] in ("channel", "contact", "user")


def test_different_filters_never_share_a_folder() -> None:
    sets = [["channel=1"], ["channel=11"], ["contact=a/b"], ["contact=a_b"], ["contact=a b"], ["user=1"],
            ["contact=x" + "y" * 100], ["contact=x" + "y" * 101], ["contact=////"], ["contact=...."]]
    assert len({Filters.parse(s).slug() for s in sets}) == len(sets)


@pytest.mark.parametrize(("items", "readable"), [
    (["channel=11", "user=7"], "channel-11__user-7"),  # keys in a fixed order, joined by a double underscore
    (["contact=a/b c"], "contact-a_b_c"),  # a run of unsafe characters is one underscore
    (["contact=x/"], "contact-x"),  # no underscore at either end
    (["contact=////"], "contact-"),
    (["contact=aX"], "contact-aX"),
])
def test_the_folder_of_a_filtered_render_reads_as_its_filters(items: list[str], readable: str) -> None:
    text = "__".join(f"{k}-{v}" for k, v in Filters.parse(items).as_dict().items())
    assert Filters.parse(items).slug() == f"{readable}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"
