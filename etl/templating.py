"""The one Jinja environment every page, index, archive page and e-mail is rendered with."""

from __future__ import annotations

import json
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup, escape

from etl.bidi import bdi, isolated
from etl.i18n import DEFAULT_LOCALE, language
from etl.report import FILTER_TITLES, KIND_TITLES, LOG_TITLES, NOT_APPLICABLE, added_sources_explained
from etl.windows import WINDOW_NAMES, WINDOW_TITLES

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


def script_json(value: Any) -> Markup:
    """JSON safe inside <script>: '<', '>' and '&' escaped, so no name can close the element."""
    text = json.dumps(value, ensure_ascii=False, sort_keys=False, separators=(",", ":"))
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return Markup(text)


# What Jinja's autoescape (markupsafe.escape) makes of the five characters it escapes, as one translation table
_CELL_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&#34;", "'": "&#39;"})
# Separators of the cells and rows of a table while it is escaped in one piece; no text of ours holds them
_CELL, _ROW = "\x1f", "\x1e"


@lru_cache(maxsize=8)  # the windows ending on the report day often show the same rows (`PreparedInputs.shown_rows`)
def table_rows(rows: tuple[tuple[Any, ...], ...], row_start: str = "<tr>", none: str = "None") -> Markup:
    """Table body rows, every cell escaped exactly as autoescape would (`{{ cell }}`, a None shown as `none`): a
    page's four logs show up to 2,000 rows of ~6 cells, and escaping them one Jinja expression at a time was ~a fifth
    of the render. The table is escaped as one text with separators (markupsafe's C escape, ~3.5x faster than a
    cell at a time); should any cell hold a separator (counted), or a row no cell, it is escaped a cell at a time."""
    if not rows:
        return Markup("")
    cells = [[none if cell is None else str(cell) for cell in row] for row in rows]
    text = _ROW.join([_CELL.join(row) for row in cells])
    if (any(not row for row in rows) or text.count(_ROW) != len(rows) - 1
            or text.count(_CELL) != sum(len(row) - 1 for row in rows)):
        return Markup("".join([row_start + "".join([f"<td>{cell.translate(_CELL_ESCAPES)}</td>" for cell in row])
                               + "</tr>\n" for row in cells]))
    body = str(escape(text)).replace(_CELL, "</td><td>").replace(_ROW, f"</td></tr>\n{row_start}<td>")
    return Markup(f"{row_start}<td>{body}</td></tr>\n")


def _autoescape(name: str | None) -> bool:
    return not (name or "").endswith(".txt.j2")


@cache
def environment(locale: str = DEFAULT_LOCALE, templates: Path = TEMPLATES) -> Environment:
    """One environment per language: autoescape on for every template whatever its suffix (.html.j2 included),
    except the plain-text e-mail body, where HTML entities would be wrong (it is never parsed as markup); the
    language's catalog installed for `_()` and `{% trans %}` (new style: placeholders are escaped too), its number
    and date formats as filters."""
    lang = language(locale)
    env = Environment(loader=FileSystemLoader(templates), autoescape=_autoescape, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, extensions=["jinja2.ext.i18n"])
    env.install_gettext_translations(lang.translations, newstyle=True)  # type: ignore[attr-defined]
    env.filters["script_json"] = script_json
    env.filters["table_rows"] = table_rows
    env.filters["thousands"] = lang.number
    env.filters["date"] = lang.date
    env.filters["weekday_date"] = lang.weekday_date
    env.filters["bdi"] = bdi  # user-provided text in HTML
    env.filters["isolate"] = isolated  # user-provided text where no markup goes (titles, attributes, plain text)
    env.globals.update(WINDOW_NAMES=WINDOW_NAMES, lang=lang,
                       WINDOW_TITLES={name: lang.gettext(title) for name, title in WINDOW_TITLES.items()},
                       added_sources_explained=added_sources_explained(lang),
                       not_applicable=lang.gettext(NOT_APPLICABLE),
                       filter_names={key: lang.gettext(title) for key, title in FILTER_TITLES.items()},
                       kind_names={kind: lang.gettext(title) for kind, title in KIND_TITLES.items()},
                       log_titles={kind: lang.gettext(title) for kind, title in LOG_TITLES.items()})
    return env
