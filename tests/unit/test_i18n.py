"""Languages: which locales a workspace may ask for, the catalogs' completeness, and numbers and dates as each
language writes them."""

from __future__ import annotations

import io
import logging
import re
from datetime import date
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from etl.i18n import CATALOGS, LocaleError, language, parse_locale
from etl.storage import LocalStorage, read_parquet
from etl.warehouse import read_view
from tests.conftest import plain_id
from tests.helpers import event, write_landing
from tests.unit.test_pipeline import etl

ROOT = Path(__file__).parents[2]
TRANSLATED = ("es", "pt_BR")  # complete catalogs (English is the source language)


@pytest.mark.parametrize(("tag", "canonical"), [
    ("en", "en"), ("es", "es"), ("es-MX", "es-MX"), ("es-mx", "es-MX"), ("ES-419", "es-419"), ("pt-BR", "pt-BR"),
    ("pt", "pt"), ("en-GB", "en-GB"), ("es-Latn-ES", "es-Latn-ES"),
])
def test_a_bcp47_tag_of_a_language_with_a_catalog_is_accepted_in_its_canonical_case(tag: str, canonical: str
                                                                                      ) -> None:
    assert parse_locale(tag) == canonical


@pytest.mark.parametrize(("tag", "why"), [
    ("es_MX", "is not a BCP 47 locale tag"), ("español", "is not a BCP 47 locale tag"), ("", "must be a BCP 47"),
    ("e", "is not a BCP 47"), ("es-", "is not a BCP 47"), ("es MX", "is not a BCP 47"), (12, "must be a BCP 47"),
    (None, "must be a BCP 47"), ("xx", "unknown locale"), ("en-ZZ", "unknown locale"), ("es-Cyrl", "unknown locale"),
    ("fr", "no translation"), ("pt-PT", "no translation"), ("de-DE", "no translation"),
], ids=plain_id)
def test_a_malformed_unknown_or_untranslated_locale_says_which_ones_work(tag: object, why: str) -> None:
    with pytest.raises(LocaleError, match=why) as caught:
        parse_locale(tag)
    assert "en, es (any region, e.g. es-MX) or pt-BR" in str(caught.value)


@pytest.mark.parametrize(("tag", "count", "change", "share", "day", "axis"), [
    ("en", "12,645", "+5.1%", "12.3%", "Nov 2, 2026", "1.25M"),
    ("es", "12.645", "+5,1\u00a0%", "12,3\u00a0%", "2 nov 2026", "1,25\u00a0M"),
    ("es-MX", "12,645", "+5.1%", "12.3%", "2 nov 2026", "1.25\u00a0M"),
    ("pt-BR", "12.645", "+5,1%", "12,3%", "2 de nov. de 2026", "1,25\u00a0mi"),
], ids=plain_id)
def test_numbers_percentages_and_dates_are_written_as_each_locale_writes_them(
        tag: str, count: str, change: str, share: str, day: str, axis: str) -> None:
    lang = language(tag)
    assert (lang.number(12_645), lang.change(5.1), lang.share(12.3), lang.date(date(2026, 11, 2)),
            lang.compact(1_250_000)) == (count, change, share, day, axis)
    assert lang.number(None) == "—" and lang.change(-5.1).startswith("-")


def _extracted() -> set[str]:
    """Every message of the templates and the code, extracted as `make messages` does."""
    method_map = [("etl/**.py", "python"), ("templates/**.j2", "jinja2")]
    options = {"templates/**.j2": {"extensions": "jinja2.ext.i18n", "trimmed": "true"}}
    keywords = {"N_": None, "_": None, "gettext": None, "ngettext": (1, 2)}
    return {m[2] if isinstance(m[2], str) else m[2][0]
            for m in extract_from_dir(str(ROOT), method_map, options, keywords)
            if m[0].startswith(("etl", "templates"))}


@pytest.mark.parametrize("catalog", TRANSLATED)
def test_every_message_of_the_pages_and_e_mails_has_a_translation(catalog: str) -> None:
    """Complete and current: every message extracted from the templates and the code is in the catalog, translated
    in all its plural forms (none fuzzy), with the same placeholders; and the compiled catalog is the .po's."""
    po_path = CATALOGS / catalog / "LC_MESSAGES" / "messages.po"
    po = read_po(po_path.open("rb"))
    entries = {m.id[0] if isinstance(m.id, tuple) else m.id: m for m in po if m.id}
    assert sorted(_extracted() - set(entries)) == [], "messages missing from the catalog: run `make messages`"
    for msgid, message in entries.items():
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        assert all(strings) and not message.fuzzy, f"{catalog}: {msgid!r} has no translation"
        assert len(strings) == (po.num_plurals if message.pluralizable else 1), msgid
        for string in strings:
            assert sorted(re.findall(r"%\(\w+\)[sd]|%%", string)) == sorted(re.findall(r"%\(\w+\)[sd]|%%", msgid))
    compiled = io.BytesIO()
    write_mo(compiled, po)
    assert (po_path.with_suffix(".mo")).read_bytes() == compiled.getvalue(), "stale .mo: run `make catalogs`"


def test_the_spanish_words_are_respond_ios_own() -> None:
    _ = language("es").gettext
    words = ["Contacts overview", "Contacts added", "Contacts deleted", "Contacts merged", "Contacts connected",
             "Logs", "Today", "Yesterday", "Last 7 days", "Last 14 days", "Last 30 days", "This month", "Last month",
             "User", "Contact import", "Developer API", "Incoming message", "Echo message", "Zapier", "Broadcast",
             "Channel", "Source", "Contact", "The selected filters are not applicable here",
             "The selected filters have no applicable data"]
    assert [_(w) for w in words] == [
        "Resumen de contactos", "Contactos agregados", "Contactos eliminados", "Contactos fusionados",
        "Contactos conectados", "Registros", "Hoy", "Ayer", "Últimos 7 días", "Últimos 14 días", "Últimos 30 días",
        "Este mes", "El mes pasado", "Usuario", "Importación de contactos", "API de desarrollador",
        "Mensaje entrante", "Mensaje de eco", "Zapier", "Transmisión", "Canal", "Fuente", "Contacto",
        "Los filtros seleccionados no son aplicables aquí", "Los filtros seleccionados no tienen datos aplicables"]


def test_workspaces_json_carries_each_workspaces_locale_and_a_bad_one_names_its_workspace(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Default English; a tag stored in its canonical case; a malformed or unknown tag makes that workspace unusable
    (its events quarantined, as for a bad time zone) with an error that names it and the tag, the others proceed."""
    workspaces = [(1, "Plain", "Europe/Madrid"), (2, "Madrid", "Europe/Madrid", "es-es"),
                  (3, "Typo", "Europe/Madrid", "es_ES"), (4, "Klingon", "Europe/Madrid", "tlh"),
                  (5, "São Paulo", "America/Sao_Paulo", "pt-BR")]
    landing = write_landing(tmp_path / "landing", workspaces, {"2026-03-10/09": [
        event(f"e{w}", "2026-03-10T08:00:00Z", workspace_id=w) for w in range(1, 6)]})
    with caplog.at_level(logging.ERROR):
        [summary] = etl(landing, tmp_path / "wh", "2026-03-10")
    assert sorted(summary["workspaces_misconfigured"]) == ["3", "4"]
    assert summary["workspaces_misconfigured"]["3"].startswith("bad_locale:'es_ES' is not a BCP 47 locale tag")
    assert summary["workspaces_misconfigured"]["4"].startswith("bad_locale:unknown locale 'tlh'")
    assert summary["quarantined_by_reason"] == {"workspace_misconfigured": 2} and summary["events_valid"] == 3
    assert any("workspace 3" in r.getMessage() and "es_ES" in r.getMessage() for r in caplog.records)
    view = read_view(LocalStorage(tmp_path / "wh"))
    assert {w: ws.locale for w, ws in view.workspaces.items()} == {1: "en", 2: "es-ES", 5: "pt-BR"}


def test_a_warehouse_written_before_locales_reads_as_english(tmp_path: Path) -> None:
    landing = write_landing(tmp_path / "landing", [(1, "Old", "Europe/Madrid")],
                            {"2026-03-10/09": [event("a", "2026-03-10T08:00:00Z")]})
    etl(landing, tmp_path / "wh", "2026-03-10")
    warehouse = LocalStorage(tmp_path / "wh")
    old = read_parquet(warehouse, "workspaces.parquet").drop("locale")
    buffer = io.BytesIO()
    old.write_parquet(buffer)
    warehouse.write_bytes("workspaces.parquet", buffer.getvalue())
    assert read_view(warehouse).workspaces[1].locale == "en"
