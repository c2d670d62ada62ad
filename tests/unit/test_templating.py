"""The log tables' rows are written without a Jinja expression per cell: the same bytes as autoescape, for any text."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2 import Environment

from etl.templating import environment, table_rows

HOSTILE_CELLS = ("<script>alert(1)</script>", "a & b", '"quoted"', "it's", "{{ 7*7 }}", "é ünï 👋", "\u202eevil",
                 "", "line\nbreak", "&amp; already", 12345, None)


LOOP = Environment(autoescape=True, trim_blocks=True).from_string(
    "{% for row in rows %}<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>\n{% endfor %}")


def test_rows_are_escaped_exactly_as_autoescape_would() -> None:
    rows = (HOSTILE_CELLS[:6], HOSTILE_CELLS[6:], ())
    assert str(table_rows(rows)) == LOOP.render(rows=rows)
    assert "<script>" not in table_rows(rows) and "&lt;script&gt;" in table_rows(rows)


# Any text, the separators the table is escaped with included (a name may hold any character)
cells = st.one_of(st.text(alphabet=st.sampled_from("ab<>&\"'\x1e\x1f\n é👋")), st.integers(), st.none())


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(cells, max_size=7).map(tuple), max_size=12).map(tuple))
def test_any_rows_are_escaped_exactly_as_autoescape_would(rows: tuple[tuple[Any, ...], ...]) -> None:
    assert str(table_rows(rows)) == LOOP.render(rows=rows)


def test_every_language_has_the_filter() -> None:
    for locale in ("en", "es", "pt-BR"):
        assert environment(locale).from_string("{{ rows | table_rows }}").render(rows=(("<b>",),)) == (
            "<tr><td>&lt;b&gt;</td></tr>\n")


ARCHIVE_LOOP = Environment(autoescape=True, trim_blocks=True).from_string(
    '{% for row in rows %}<tr class="row">{% for cell in row %}<td>{{ "" if cell is none else cell }}</td>{% endfor %}'
    "</tr>\n{% endfor %}")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(cells, max_size=7).map(tuple), max_size=12).map(tuple))
def test_archive_rows_show_a_missing_value_as_blank(rows: tuple[tuple[Any, ...], ...]) -> None:
    assert str(table_rows(rows, '<tr class="row">', "")) == ARCHIVE_LOOP.render(rows=rows)
