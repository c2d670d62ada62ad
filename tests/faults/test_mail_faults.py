"""E-mail when SMTP is down, and e-mail that carries hostile names."""

from __future__ import annotations

import email
import json
from datetime import date
from email import policy
from pathlib import Path

import pytest

from etl.mail import SmtpConfig
from etl.nightly import email as send_night_emails
from etl.pipeline import run_etl
from etl.settings import Settings
from etl.storage import LocalStorage
from tests.conftest import _free_port
from tests.dags.conftest import Inbox
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


def test_hostile_names_are_inert_in_subject_and_body(night: Settings) -> None:
    from aiosmtpd.controller import Controller

    inbox, port = Inbox(), _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        send_night_emails(night, date(2026, 3, 10), None, lambda: SmtpConfig("127.0.0.1", port))
    finally:
        controller.stop()
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
