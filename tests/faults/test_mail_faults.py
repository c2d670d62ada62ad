"""E-mail when SMTP is down, and e-mail that carries hostile names."""

from __future__ import annotations

import email
import json
import re
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from datetime import date
from email import policy
from pathlib import Path
from typing import Any

import pytest

from etl.mail import SMTP_PLAIN, SmtpConfig
from etl.nightly import email as send_night_emails
from etl.ops import failure_message, notify
from etl.pipeline import run_etl
from etl.settings import Settings
from etl.storage import LocalStorage
from etl.windows import WINDOW_NAMES
from tests.conftest import Inbox, _free_port
from tests.helpers import event, write_landing

HOSTILE_WORKSPACE = "Evil\r\nBcc: victim@example.com <script>alert(1)</script> \u202eOverride"


@pytest.fixture
def night(tmp_path: Path) -> Settings:
    landing = write_landing(tmp_path / "landing", [(1, HOSTILE_WORKSPACE, "UTC"), (2, "Plain", "Asia/Kolkata")], {
        "2026-03-10/12": [event("a", "2026-03-10T10:00:00Z", contact_name="<img src=x onerror=alert(1)>"),
                          event("b", "2026-03-10T11:00:00Z", workspace_id=2)]})
    run_etl(LocalStorage(landing), LocalStorage(tmp_path / "wh"), date(2026, 3, 10))
    (tmp_path / "recipients.json").write_text(json.dumps({"1": ["a@example.com", "b@example.com"],
                                                          "2": ["c@example.com"]}))
    return Settings(landing=str(landing), warehouse=str(tmp_path / "wh"), out=str(tmp_path / "out"),
                    recipients_file=str(tmp_path / "recipients.json"))


def test_smtp_down_fails_the_step_and_a_retry_sends_each_recipient_once(night: Settings) -> None:
    from aiosmtpd.controller import Controller

    port = _free_port()
    with pytest.raises(ConnectionRefusedError):  # nothing listens: the task fails and Airflow retries it
        send_night_emails(night, date(2026, 3, 10), None, lambda: SmtpConfig("127.0.0.1", port, timeout=5))
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        first = send_night_emails(night, date(2026, 3, 10), None, lambda: SmtpConfig("127.0.0.1", port))
        again = send_night_emails(night, date(2026, 3, 10), None, lambda: SmtpConfig("127.0.0.1", port))
    finally:
        controller.stop()
    assert first == {"sent": 3, "failed": 0, "skipped": 0}
    assert again == {"sent": 0, "failed": 0, "skipped": 3}
    assert sorted(r for r, _ in inbox.messages) == ["a@example.com", "b@example.com", "c@example.com"]


def test_hostile_names_are_inert_in_subject_and_body(night: Settings, smtp_server: tuple[int, Inbox]) -> None:
    port, inbox = smtp_server
    send_night_emails(night, date(2026, 3, 10), None, lambda: SmtpConfig("127.0.0.1", port))
    raw = dict(inbox.messages)["a@example.com"]
    message = email.message_from_bytes(raw, policy=policy.default)
    assert "Bcc" not in message and "victim@example.com" not in message["To"]
    assert "\n" not in str(message["Subject"]) and "Evil Bcc: victim@example.com" in str(message["Subject"])
    assert "\u202e" not in str(message["Subject"])  # controls folded to spaces: the subject cannot turn
    html = message.get_body(("html",)).get_content()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<bdi>Evil" in html and "\u202eOverride</bdi>" in html  # the right-to-left override stays inside
    text = message.get_body(("plain",)).get_content()
    assert "Contacts added: 1" in text
    assert "\u2068Evil" in text and "\u202eOverride\u2069" in text
    assert sorted(r for r, _ in inbox.messages) == ["a@example.com", "b@example.com", "c@example.com"]


class TlsInbox(Inbox):
    """Keeps messages and whether each arrived over TLS."""

    def __init__(self) -> None:
        super().__init__()
        self.over_tls: list[bool] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.over_tls.append(session.ssl is not None)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def tls_smtp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, TlsInbox]]:
    """An SMTP server that refuses mail before STARTTLS, with a certificate the client trusts (SSL_CERT_FILE)."""
    from aiosmtpd.controller import Controller

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    inbox, port = TlsInbox(), _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True)
    controller.start()
    yield port, inbox
    controller.stop()


def test_starttls_is_used_when_configured_and_mail_is_refused_without_it(night: Settings,
                                                                         tls_smtp: tuple[int, TlsInbox]) -> None:
    port, inbox = tls_smtp
    plain = send_night_emails(night, date(2026, 3, 10), None, lambda: SmtpConfig("127.0.0.1", port))
    assert plain == {"sent": 0, "failed": 3, "skipped": 0} and inbox.messages == []
    secure = send_night_emails(night, date(2026, 3, 10), None, lambda: SmtpConfig("127.0.0.1", port, starttls=True))
    assert secure == {"sent": 3, "failed": 0, "skipped": 0}
    assert len(inbox.messages) == 3 and inbox.over_tls == [True, True, True]


def test_links_use_the_base_url_when_set_and_say_nothing_of_signatures(night: Settings,
                                                                       smtp_server: tuple[int, Inbox]) -> None:
    port, inbox = smtp_server
    settings = replace(night, s3_uri="s3://reports/site", base_url="https://reports.example.com/r/")
    send_night_emails(settings, date(2026, 3, 10), None, lambda: SmtpConfig("127.0.0.1", port))
    message = email.message_from_bytes(dict(inbox.messages)["c@example.com"], policy=policy.default)
    text = message.get_body(("plain",)).get_content()
    links = re.findall(r"https?://\S+", text)
    assert links == [*(f"https://reports.example.com/r/2/2026-03-10/{w}.html" for w in WINDOW_NAMES),
                     "https://reports.example.com/r/2/index.html"]
    assert "stop working" not in text  # the signed-link warning is for presigned links only


def test_ops_alert_names_the_task_the_night_the_log_the_error_and_the_counts_so_far(
        night: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sent through the SMTP provider's notifier (connection `smtp_default`); never raises, also when SMTP is down
    or no ops address is set."""
    from aiosmtpd.controller import Controller

    error = "Traceback (most recent call last):\n  ...\nQualityError: night 2026-03-10 failed the data-quality gate\n"
    inbox, port = Inbox(), _free_port()
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", json.dumps({"conn_type": "smtp", "host": "127.0.0.1",
                                                                "port": port, **SMTP_PLAIN}))
    ops = replace(night, ops_email="ops@example.com", mail_from="reports@example.com")
    subject, html = failure_message(ops, date(2026, 3, 10), "quality_gate",
                                    "http://airflow.example/log?task=quality_gate&try=1", error)
    assert not notify(ops, subject, html, {})  # SMTP down: logged, not raised
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        assert not notify(night, subject, html, {})  # no ops address: logged only
        assert notify(ops, subject, html, {})
    finally:
        controller.stop()
    [(recipient, raw)] = inbox.messages
    message = email.message_from_bytes(raw, policy=policy.default)
    assert (recipient, str(message["From"])) == ("ops@example.com", "reports@example.com")
    assert str(message["Subject"]) == "[contacts-report] quality_gate failed for night 2026-03-10"
    body = message.get_body(("html",)).get_content()
    assert "Task: <b>quality_gate</b>" in body and "Night: 2026-03-10" in body
    assert 'href="http://airflow.example/log?task=quality_gate&amp;try=1"' in body
    assert "<code>QualityError: night 2026-03-10 failed the data-quality gate</code>" in body  # the last line
    assert "<tr><td>lines_read</td><td>2</td></tr>" in body  # the night's counts, as far as the run got


def test_ops_alert_before_the_ingest_and_without_a_log_link_says_so(night: Settings) -> None:
    subject, html = failure_message(replace(night, warehouse=night.warehouse + "-empty"), date(2026, 3, 10),
                                    "check_landing", None, "E" * 600 + "\n\n")
    assert "Log: see the Airflow UI" in html and f"<code>{'E' * 500}</code>" in html
    assert "No counts yet" in html and subject.endswith("check_landing failed for night 2026-03-10")


def test_without_a_bucket_links_point_at_the_rendered_files(night: Settings, smtp_server: tuple[int, Inbox]) -> None:
    """No S3 (a local run): the links are the pages' paths under CONTACTS_REPORT_OUT, a trailing slash or not."""
    port, inbox = smtp_server
    send_night_emails(replace(night, out=night.out + "/"), date(2026, 3, 10), None,
                      lambda: SmtpConfig("127.0.0.1", port))
    message = email.message_from_bytes(dict(inbox.messages)["c@example.com"], policy=policy.default)
    text = message.get_body(("plain",)).get_content()
    lines = [line.strip() for line in text.splitlines()]
    assert f"Today: {night.out}/2/2026-03-10/today.html" in lines
    assert f"All report days: {night.out}/2/index.html" in lines
