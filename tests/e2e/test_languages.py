"""The same report in Spanish and Brazilian Portuguese: every word on the page in the workspace's language, and
nothing a machine reads (the report-data block, CSV names and bytes, file names) changed by it."""

from __future__ import annotations

import html
import json
import re
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest

from etl.cli import main
from etl.render import RenderJob
from etl.render_jobs import render
from etl.windows import WINDOW_NAMES
from tests.conftest import copy_tiny_warehouse
from tests.e2e.test_pages import render_all

DAY = date(2026, 3, 30)
# English a translated page must not show (user data aside: the tiny example's names are not English words)
ENGLISH = ["Contacts", "Report day", "Today", "Yesterday", "Last 7 days", "This month", "Download", "previous period",
           "newest first", "Numbers of this chart", "time zone", "Logs", "What each source means", "Incoming message",
           "All workspaces", "Filtered by", "not applicable"]


def visible_text(page: str) -> str:
    """What a reader sees: text outside tags, scripts and styles, SVG labels included (bidi isolates, which
    surround user text, taken out)."""
    page = re.sub(r"<(script|style)\b.*?</\1>", " ", page, flags=re.S)
    return re.sub(r"[\u2066-\u2069]", "", html.unescape(re.sub(r"[ \t\r\n]+", " ", re.sub(r"<[^>]+>", " ", page))))


def report_data(page: str) -> dict[str, object]:
    found = re.search(r'id="report-data"[^>]*>(.*?)</script>', page, re.S)
    assert found
    return dict(json.loads(found.group(1)))


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory, tiny_warehouse_built: Path | None) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("languages")
    warehouse = copy_tiny_warehouse(root / "wh", tiny_warehouse_built)
    render_all(warehouse, root / "en", DAY)
    render_all(warehouse, root / "en", DAY, filters=("channel=12",))
    for locale in ("es", "pt-BR"):
        job = RenderJob(str(warehouse), str(root / locale), (1, 2), DAY, None, WINDOW_NAMES, (), locale=locale)
        render(job)
        render(replace(job, filters=("channel=12",)))
    return {name: root / name for name in ("en", "es", "pt-BR")}


def files(site: Path) -> dict[str, bytes]:
    return {str(p.relative_to(site)): p.read_bytes() for p in sorted(site.rglob("*"))
            if p.is_file() and not p.relative_to(site).parts[0].startswith("_")}


@pytest.mark.parametrize("locale", ["es", "pt-BR"])
def test_a_translated_site_has_the_same_files_data_and_downloads(sites: dict[str, Path], locale: str) -> None:
    english, translated = files(sites["en"]), files(sites[locale])  # the translated sites: workspaces 1 and 2
    assert sorted(translated) == sorted(k for k in english if re.match(r"(filtered/[^/]+/)?([12]/|index)", k))
    for name, data in translated.items():
        if name.endswith(".csv"):
            assert data == english[name], name  # column names, labels and bytes are the machines' contract
        elif name.endswith(".html") and "index" not in name:
            page = data.decode()
            assert f'<html lang="{locale}">' in page
            assert report_data(page) == report_data(english[name].decode()), name


@pytest.mark.parametrize(("locale", "words"), [
    ("es", ["Resumen de contactos", "Contactos agregados", "Contactos eliminados", "Contactos fusionados",
            "Contactos conectados", "Registros", "Hoy", "Ayer", "Últimos 7 días", "Últimos 14 días",
            "Últimos 30 días", "Este mes", "El mes pasado", "Descargar el registro completo (CSV)",
            "Día del informe: 30 mar 2026"]),
    ("pt-BR", ["Resumo de contatos", "Contatos adicionados", "Contatos excluídos", "Contatos mesclados", "Registros",
               "Hoje", "Ontem", "Últimos 7 dias", "Este mês", "Mês passado", "Dia do relatório: 30 de mar. de 2026"]),
])
def test_every_word_of_a_page_is_in_the_workspaces_language(sites: dict[str, Path], locale: str,
                                                             words: list[str]) -> None:
    for window in WINDOW_NAMES:
        text = visible_text((sites[locale] / f"1/{DAY}/{window}.html").read_text())
        assert [w for w in words if w not in text] == [], window
        assert [w for w in ENGLISH if re.search(rf"\b{re.escape(w)}\b", text)] == [], window
    index = visible_text((sites[locale] / "1/index.html").read_text())
    assert [w for w in ENGLISH if re.search(rf"\b{re.escape(w)}\b", index)] == []


def test_a_filtered_spanish_page_says_its_notices_in_spanish(sites: dict[str, Path]) -> None:
    folder = next((sites["es"] / "filtered").iterdir())
    text = visible_text((folder / f"1/{DAY}/last_30_days.html").read_text())
    assert re.search(r"Filtrado por Canal = “ ?12 ?” · informe sin filtros", text)
    assert text.count("Los filtros seleccionados no son aplicables aquí") >= 4  # two cards, two logs


def test_numbers_and_dates_on_a_spanish_page_are_written_the_spanish_way(sites: dict[str, Path]) -> None:
    page = (sites["es"] / f"1/{DAY}/last_30_days.html").read_text()
    data = report_data(page)
    text = visible_text(page)
    assert re.search(r"[+-]\d+,\d\u00a0% frente al período anterior", text)  # +5,1 %
    assert "<td>1 mar 2026</td>" in page  # the chart's numbers by day (log timestamps stay ISO, as in the CSV)
    totals = data["totals"]
    assert isinstance(totals, dict)
    assert f'<div class="value">{totals["added"]}</div>' in page


def test_render_locale_overrides_the_workspaces_for_one_run_and_refuses_an_unknown_one(
        tmp_path: Path, tiny_warehouse: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "out"
    assert main(["render", "--warehouse", str(tiny_warehouse), "--out", str(out), "--report-day", str(DAY),
                 "--workspace", "1", "--window", "today", "--locale", "es-mx"]) == 0
    assert '<html lang="es-MX">' in (out / f"1/{DAY}/today.html").read_text()
    assert '<html lang="es-MX">' in (out / "1/index.html").read_text()
    assert '<html lang="en">' in (out / "index.html").read_text()  # all workspaces: the default language
    assert main(["render", "--warehouse", str(tiny_warehouse), "--out", str(out), "--report-day", str(DAY),
                 "--locale", "klingon"]) == 2
    assert "'klingon' is not a BCP 47 locale tag; write it like en, es" in caplog.text
