"""Languages: a workspace's locale (BCP 47) -> its gettext catalog and Babel's number and date formats.

Catalogs live in `etl/locale/<id>/LC_MESSAGES/messages.po` and are compiled to `.mo` by `make install`
(`pybabel compile`); messages are extracted from the templates and from the code (`N_` marks the code's), see
docs/report.md, "Languages". English is the source language and needs no catalog.
"""

from __future__ import annotations

import datetime as dt
import gettext
import re
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_skeleton
from babel.numbers import format_compact_decimal, format_decimal, format_percent

from etl.errors import InputError

CATALOGS = Path(__file__).resolve().parent / "locale"
DOMAIN = "messages"
DEFAULT_LOCALE = "en"
# Languages with a catalog (English is the source): the language, and the regions it may be written for (None:
# any region Babel knows).
SUPPORTED: dict[str, frozenset[str] | None] = {"en": None, "es": None, "pt": frozenset({"BR"})}
CATALOG_OF: dict[str, str] = {"es": "es", "pt": "pt_BR"}
_BCP47 = re.compile(r"^([a-z]{2,3})(?:-([A-Z][a-z]{3}))?(?:-([A-Z]{2}|[0-9]{3}))?$")


def N_(message: str) -> str:  # gettext's conventional name for "translate later"
    """Marks a message for extraction; it is translated where it is shown."""
    return message


class LocaleError(InputError):
    """A locale the product cannot write in; the message says which ones it can."""


def parse_locale(tag: object) -> str:
    """The BCP 47 tag in its canonical case (`es-mx` -> `es-MX`), or LocaleError saying what is wrong."""
    supported = "en, es (any region, e.g. es-MX) or pt-BR"
    if not isinstance(tag, str) or not tag:
        raise LocaleError(f"locale must be a BCP 47 tag such as {supported}, not {tag!r}")
    parts = tag.split("-")
    canonical = "-".join([parts[0].lower(), *(p.title() if len(p) == 4 else p.upper() for p in parts[1:])])
    m = _BCP47.fullmatch(canonical)
    if m is None:
        raise LocaleError(f"{tag!r} is not a BCP 47 locale tag; write it like {supported}")
    language, script, region = m.groups()
    try:
        babel = Locale.parse(canonical, sep="-")
    except (UnknownLocaleError, ValueError):
        raise LocaleError(f"unknown locale {tag!r}; supported: {supported}") from None
    if (region and babel.territory != region) or script not in (None, "Latn"):  # every catalog is in Latin script
        raise LocaleError(f"unknown locale {tag!r} (no such region or script for {language}); supported: {supported}")
    if language not in SUPPORTED or not ((regions := SUPPORTED[language]) is None or region in (None, *regions)):
        raise LocaleError(f"no translation for {tag!r}; supported: {supported}")
    return canonical


@dataclass(frozen=True)
class Language:
    """What a page needs to speak one locale: translations and formats. Build it with `language(tag)`."""

    tag: str
    locale: Locale
    translations: gettext.NullTranslations

    def gettext(self, message: str) -> str:
        return self.translations.gettext(message)

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        return self.translations.ngettext(singular, plural, n)

    def number(self, value: int | None) -> str:
        """A count: 12,645 in English, 12.645 in Spanish; a dash where the figure does not apply."""
        return "—" if value is None else _decimal(value, self.tag)

    def share(self, percent: float) -> str:
        """A share of a whole, one decimal: 12.3% / 12,3 %."""
        return _percent(percent / 100, self.tag, signed=False)

    def change(self, percent: float) -> str:
        """A signed change, one decimal: +5.1% / +5,1 %."""
        return _percent(percent / 100, self.tag, signed=True)

    def compact(self, value: int) -> str:
        """An axis value in a few characters: 9,500 · 160K · 1.25M (the tables hold the exact numbers)."""
        return self.number(value) if value < 10_000 else _compact(value, self.tag)

    def date(self, day: dt.date) -> str:
        """A day in prose: Nov 2, 2026 / 2 nov 2026."""
        return _date(day, "medium", self.tag)

    def weekday_date(self, day: dt.date) -> str:
        """A day with its weekday: Mon, Nov 2, 2026 / lun, 2 nov 2026."""
        return _date(day, "yMMMEd", self.tag)

    def day_month(self, day: dt.date) -> str:
        """A chart's day label: Nov 2 / 2 nov."""
        return _date(day, "MMMd", self.tag)


@lru_cache(maxsize=64)
def _babel_locale(tag: str) -> Locale:
    return Locale.parse(tag, sep="-")


@lru_cache(maxsize=65536)  # pages repeat the same small counts thousands of times a night
def _decimal(value: int, tag: str) -> str:
    return format_decimal(value, locale=_babel_locale(tag))


@lru_cache(maxsize=65536)
def _percent(ratio: float, tag: str, signed: bool) -> str:
    return format_percent(ratio, format=_percent_pattern(tag, signed), locale=_babel_locale(tag))


@lru_cache(maxsize=64)
def _percent_pattern(tag: str, signed: bool) -> str:
    """The locale's percent pattern with one decimal (#,##0 % -> #,##0.0 %), with a plus sign when `signed`."""
    pattern = _babel_locale(tag).percent_formats[None].pattern.split(";")[0]
    pattern = re.sub(r"0(?=[^0#,.]*$)", "0.0", pattern, count=1)
    return f"+{pattern};-{pattern}" if signed else pattern


@lru_cache(maxsize=4096)
def _compact(value: int, tag: str) -> str:
    return format_compact_decimal(value, locale=_babel_locale(tag), fraction_digits=2)


@lru_cache(maxsize=65536)
def _date(day: dt.date, form: str, tag: str) -> str:
    locale = _babel_locale(tag)
    return format_date(day, form, locale=locale) if form in ("short", "medium", "long", "full") else (
        format_skeleton(form, day, locale=locale))


@cache
def language(tag: str = DEFAULT_LOCALE) -> Language:
    """The Language of a tag `parse_locale` accepted; its catalog read once per process."""
    tag = parse_locale(tag)
    locale = _babel_locale(tag)
    catalog = CATALOG_OF.get(locale.language)
    if catalog is None:
        return Language(tag, locale, gettext.NullTranslations())
    compiled = CATALOGS / catalog / "LC_MESSAGES" / f"{DOMAIN}.mo"
    if not compiled.exists():
        raise LocaleError(f"the {catalog} catalog is not compiled ({compiled} is missing): run `make install`, "
                          "which compiles the catalogs with `pybabel compile -d etl/locale`")
    with compiled.open("rb") as file:
        return Language(tag, locale, gettext.GNUTranslations(file))

