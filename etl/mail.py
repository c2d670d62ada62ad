"""The nightly e-mail: one multipart message (text + HTML) per recipient of each workspace."""

from __future__ import annotations

import logging
import re
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr, make_msgid

from etl.report import ReportPage
from etl.templating import environment

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    user: str | None = None
    password: str | None = None
    starttls: bool = False
    timeout: float = 30.0


@dataclass(frozen=True)
class Link:
    title: str
    url: str


_ADDRESS = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")


def valid_address(address: str) -> bool:
    """A plain addr-spec only: no display names, angle brackets, spaces or line breaks (nothing that could smuggle
    a second recipient or an SMTP command)."""
    return len(address) <= 254 and _ADDRESS.fullmatch(address) is not None


def one_line(text: str, limit: int = 120) -> str:
    """Header-safe: CR/LF and other controls folded to spaces (no header injection), length capped."""
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text)
    cleaned = " ".join(cleaned.split())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def build_message(page: ReportPage, links: list[Link], index: Link, sender: str, recipient: str,
                  presigned: bool) -> EmailMessage:
    env = environment()
    context = {"page": page, "links": links, "index": index, "presigned": presigned}
    message = EmailMessage()
    message["Subject"] = one_line(f"Contacts report · {page.workspace.name} · {page.report_day.isoformat()}")
    message["From"] = formataddr(("Contacts report", sender))
    message["To"] = recipient
    message["Message-ID"] = make_msgid(domain="contacts-report.invalid")
    message.set_content(env.get_template("email.txt.j2").render(**context))
    message.add_alternative(env.get_template("email.html.j2").render(**context), subtype="html")
    return message


def send(config: SmtpConfig, messages: list[EmailMessage]) -> dict[str, str]:
    """Send each message on one connection; a refused recipient never stops the others.
    Returns recipient -> "sent" or the error."""
    results: dict[str, str] = {}
    with smtplib.SMTP(config.host, config.port, timeout=config.timeout) as smtp:
        if config.starttls:
            smtp.starttls(context=ssl.create_default_context())
        if config.user:
            smtp.login(config.user, config.password or "")
        for message in messages:
            recipient = str(message["To"])
            try:
                smtp.send_message(message)
                results[recipient] = "sent"
            except (smtplib.SMTPException, OSError) as err:
                log.error("mail to %s refused: %s", recipient, err)
                results[recipient] = f"refused: {type(err).__name__}"
    return results
