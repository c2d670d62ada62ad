"""The nightly e-mail as a stakeholder receives it: in the workspace's language, with the day's picture inline,
unsubscribe headers, and the filters each recipient asked for."""

from __future__ import annotations

import email
import json
import re
import struct
from datetime import date, timedelta
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from etl import nightly
from etl.mail import SmtpConfig
from etl.pipeline import run_etl
from etl.report import Filters
from etl.settings import Settings
from etl.storage import LocalStorage
from etl.windows import WINDOW_NAMES
from tests.conftest import Inbox
from tests.helpers import event, write_landing

NIGHT = date(2026, 3, 10)
CHANNEL_FILTER = {"channel": "12"}


def events_of_fortnight() -> list[dict[str, object]]:
    """Each day of the last 14: added contacts on channel 11 and 12, a deletion every other day."""
    found: list[dict[str, object]] = []
    for back in range(14):
        day = NIGHT - timedelta(days=back)
        found += [event(f"a-{back}-{i}", f"{day}T09:0{i}:00Z", source="incoming_message", channel_id=11 + i % 2,
                        channel_name="WA", channel_type="whatsapp", contact_id=100 * back + i + 1)
                  for i in range(back % 3 + 1)]
        if back % 2:
            found.append(event(f"d-{back}", f"{day}T10:00:00Z", event_type="contact.deleted", contact_id=back + 1))
    return found


@pytest.fixture
def night(tmp_path: Path) -> Settings:
    landing = write_landing(tmp_path / "landing", [(1, "Acme España", "Europe/Madrid", "es"),
                                                   (2, "Plain", "UTC")],
                            {f"{NIGHT}/12": events_of_fortnight()})
    run_etl(LocalStorage(landing), LocalStorage(tmp_path / "wh"), NIGHT)
    (tmp_path / "recipients.json").write_text(json.dumps({
        "1": ["ana@example.com", {"to": "bea@example.com", "filters": CHANNEL_FILTER},
              {"to": "carl@example.com", "filters": {"channel": "twelve"}}, {"to": "dan@example.com"}],
        "2": ["eve@example.com"]}))
    settings = Settings(landing=str(landing), warehouse=str(tmp_path / "wh"), out=str(tmp_path / "out"),
                        recipients_file=str(tmp_path / "recipients.json"), ops_email="ops@example.com",
                        mail_from="reports@example.com")
    assert nightly.render_workspaces(settings, NIGHT, [1, 2])["filtered_pages"] == 7  # bea's filter, workspace 1
    return settings


def received(inbox: Inbox, address: str) -> EmailMessage:
    raw = dict(inbox.messages)[address]
    message = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_an_e_mail_shows_the_day_in_the_workspaces_language_with_an_inline_chart(
        night: Settings, smtp_server: tuple[int, Inbox]) -> None:
    port, inbox = smtp_server
    assert nightly.email(night, NIGHT, None, lambda: SmtpConfig("127.0.0.1", port)) == {
        "sent": 4, "failed": 1, "skipped": 0}
    message = received(inbox, "ana@example.com")
    assert str(message["Subject"]) == "Informe de contactos · Acme España · 10 mar 2026"
    assert message["List-Id"] == "Informe de contactos 1 <1.contacts-report.example.com>"
    assert message["List-Unsubscribe"] == ("<mailto:ops@example.com?subject=unsubscribe%20ana%40example.com%20"
                                           "from%20workspace%201>")
    text = message.get_body(("plain",)).get_content()
    assert "Contactos agregados: 1 (" in text and "Páginas del informe:" in text
    html_part = message.get_body(("html",))
    html = html_part.get_content()
    assert '<html lang="es">' in html and 'width="600"' in html and "Resumen" not in html
    image = re.search(r'<img src="cid:([^"]+)" width="568" alt="([^"]+)"', html)
    assert image, "the chart is an inline image with a text alternative"
    assert image.group(2) == ("Contactos por día, del 25 feb 2026 al 10 mar 2026: agregados 27, eliminados 7, "
                              "fusionados 0")
    legend = re.search(r'<img src="cid:[^>]+>\s*<p[^>]*>(.*?)</p>', html, re.S)
    assert legend, "the chart's legend is text under the image: it wraps on a phone, in any language"
    assert re.findall(r'<span style="color: (#\w+)"[^>]*>&#9632;</span> ([^<]+)</span>', legend.group(1)) == [
        ("#0072B2", "Agregados"), ("#D55E00", "Eliminados"), ("#009E73", "Fusionados")]
    [png] = [part for part in message.walk() if part.get_content_type() == "image/png"]
    assert png["Content-ID"] == f"<{image.group(1)}>" and png.get_content_disposition() == "inline"
    data = png.get_content()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", data[16:24]) == (1200, 480)  # 2x for phones
    english = received(inbox, "eve@example.com")
    assert str(english["Subject"]) == "Contacts report · Plain · Mar 10, 2026"
    assert "Contacts added:" in english.get_body(("plain",)).get_content()


def test_a_recipient_with_filters_gets_the_filtered_numbers_and_pages_and_a_bad_filter_stops_only_its_own(
        night: Settings, smtp_server: tuple[int, Inbox]) -> None:
    port, inbox = smtp_server
    nightly.email(night, NIGHT, None, lambda: SmtpConfig("127.0.0.1", port))
    assert sorted(r for r, _ in inbox.messages) == ["ana@example.com", "bea@example.com", "dan@example.com",
                                                    "eve@example.com"]
    ledger = json.loads(LocalStorage(night.warehouse).read_bytes(f"_mail/night={NIGHT}.json"))
    assert ledger["1:carl@example.com?channel=twelve"].startswith(
        "invalid filters: channel filter takes a numeric channel id, not 'twelve'")
    assert ledger["1:bea@example.com?channel=12"] == ledger["1:ana@example.com"] == "sent"
    unfiltered = received(inbox, "ana@example.com").get_body(("plain",)).get_content()
    filtered = received(inbox, "bea@example.com").get_body(("plain",)).get_content()
    added = re.compile(r"Contactos agregados: (\d+)")
    assert (int(added.findall(unfiltered)[0]), int(added.findall(filtered)[0])) == (1, 0)  # the day's one is on 11
    assert "Contactos eliminados: —" in filtered and "Filtrado por Canal = “\u206812\u2069”" in filtered
    slug = Filters.parse(["channel=12"]).slug()
    links = re.findall(r": (/\S+\.html)", filtered)
    assert links[:7] == [f"{night.out}/filtered/{slug}/1/{NIGHT}/{w}.html" for w in WINDOW_NAMES]
    assert all(Path(link).exists() for link in links[:7])
    page = Path(links[0]).read_text()
    assert '"filters":{"channel":"12"}' in page and '<html lang="es">' in page


def test_a_re_run_after_every_e_mail_went_out_sends_nothing_and_draws_no_chart(
        night: Settings, smtp_server: tuple[int, Inbox], monkeypatch: pytest.MonkeyPatch) -> None:
    """A re-run of the e-mail task (a retry after a later task failed) costs nothing: at 1,000 workspaces the
    charts alone took 35-70 s."""
    from etl import charts

    drawn: list[int] = []
    real = charts.trend_png

    def counted(*args: Any, **kwargs: Any) -> bytes:
        drawn.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(charts, "trend_png", counted)
    port, inbox = smtp_server
    assert nightly.email(night, NIGHT, None, lambda: SmtpConfig("127.0.0.1", port))["sent"] == 4
    assert len(drawn) == 3  # workspace 1 unfiltered and filtered, workspace 2
    drawn.clear()
    assert nightly.email(night, NIGHT, None, lambda: SmtpConfig("127.0.0.1", port)) == {
        "sent": 0, "failed": 1, "skipped": 4}
    assert drawn == [1] and len(inbox.messages) == 4  # only workspace 1's, for the invalid filter still counted


@pytest.mark.parametrize("series", [
    {"added": [0] * 14, "deleted": [0] * 14, "merged": [0] * 14},  # a quiet fortnight
    {"added": [2_400_000] * 13 + [1_250_000]},  # one series (a filter that applies to added only), huge numbers
    {},  # no series applies
    {"added": [3], "deleted": [1], "merged": [0]},  # one day
], ids=["all zero", "one series, millions", "none", "one day"])
def test_the_e_mail_chart_is_drawn_for_any_fortnight(series: dict[str, list[int]]) -> None:
    from etl.charts import trend_png
    from etl.i18n import language

    days = [NIGHT - timedelta(days=13 - i) for i in range(max((len(v) for v in series.values()), default=14))]
    data = trend_png(days, series, language("es"))
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", data[16:24]) == (1200, 480)
    assert trend_png(days, series, language("es")) == data  # deterministic bytes
