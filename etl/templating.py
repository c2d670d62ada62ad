"""The one Jinja environment every page, index, archive page and e-mail is rendered with."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from etl.bidi import bdi, isolated
from etl.report import ADDED_SOURCES_EXPLAINED, NOT_APPLICABLE, thousands
from etl.windows import WINDOW_NAMES, WINDOW_TITLES

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


def script_json(value: Any) -> Markup:
    """JSON safe inside <script>: '<', '>' and '&' escaped, so no name can close the element."""
    text = json.dumps(value, ensure_ascii=False, sort_keys=False, separators=(",", ":"))
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return Markup(text)


def _autoescape(name: str | None) -> bool:
    return not (name or "").endswith(".txt.j2")


@cache
def environment(templates: Path = TEMPLATES) -> Environment:
    """One environment: autoescape on for every template whatever its suffix (.html.j2 included), except the
    plain-text e-mail body, where HTML entities would be wrong (it is never parsed as markup)."""
    env = Environment(loader=FileSystemLoader(templates), autoescape=_autoescape, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["script_json"] = script_json
    env.filters["thousands"] = thousands
    env.filters["bdi"] = bdi  # user-provided text in HTML
    env.filters["isolate"] = isolated  # user-provided text where no markup goes (titles, attributes, plain text)
    env.globals.update(WINDOW_TITLES=WINDOW_TITLES, WINDOW_NAMES=WINDOW_NAMES,
                       added_sources_explained=ADDED_SOURCES_EXPLAINED, not_applicable=NOT_APPLICABLE)
    return env
