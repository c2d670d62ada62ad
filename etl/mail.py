"""The nightly e-mail: one multipart message (text + HTML) per recipient of each workspace."""

from __future__ import annotations

import logging
import re
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr, make_msgid
from urllib.parse import quote

from etl.report import ReportPage
from etl.templating import environment

log = logging.getLogger(__name__)

# The `smtp_default` connection's fields for a loopback server without TLS (the demo's and the tests'): the SMTP
# provider's notifier, which sends the ops alerts, starts SSL and STARTTLS unless its extras say not to.
SMTP_PLAIN: dict[str, object] = {"extra": {"disable_ssl": True, "disable_tls": True}}


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


@dataclass(frozen=True)
class Recipient:
    """One address of a workspace's recipients, with the filters its report is rendered with (as `--filter` takes
    them: "channel=12"); `problem` says why no message can be built for it."""

    address: str
    filters: tuple[str, ...] = ()
    problem: str | None = None

    def entry(self, workspace_id: int) -> str:
        """Its line in the night's ledger (an address may get the unfiltered and a filtered report)."""
        return f"{workspace_id}:{self.address}" + (f"?{'&'.join(self.filters)}" if self.filters else "")


def parse_recipients(raw: object) -> dict[int, list[Recipient]]:
    """`{"<workspace_id>": ["a@x", {"to": "b@x", "filters": {"channel": "12"}}]}`. A malformed entry becomes a
    Recipient with a `problem` naming it (reported, never stopping the other e-mails); a file that is not such an
    object at all is an error."""
    from etl.report import FilterError, Filters

    if not isinstance(raw, dict) or not all(isinstance(v, list) and k.isdigit() for k, v in raw.items()):
        raise ValueError('the recipients file must be a JSON object {"<workspace_id>": ["address" or '
                         '{"to": "address", "filters": {"channel": "12"}}, …]}')
    recipients: dict[int, list[Recipient]] = {}
    for workspace, entries in raw.items():
        found = recipients.setdefault(int(workspace), [])
        for item in entries:
            if isinstance(item, str):
                found.append(Recipient(item))
                continue
            to = item.get("to") if isinstance(item, dict) else None
            given = item.get("filters", {}) if isinstance(item, dict) else None
            if not isinstance(to, str) or not isinstance(given, dict):
                found.append(Recipient(one_line(str(item), 80), (), 'not an address or {"to": …, "filters": {…}}'))
                continue
            filters = tuple(sorted(f"{k}={v}" for k, v in given.items()))
            try:
                Filters.parse(list(filters))
            except FilterError as err:
                log.error("workspace %s: the filters of %s are invalid (%s); not sent", workspace, to, err)
                found.append(Recipient(to, filters, f"invalid filters: {err}"))
                continue
            found.append(Recipient(to, filters))
    return recipients


@dataclass(frozen=True)
class MailReport:
    """What one e-mail shows: the report day as a one-day page, and a chart of the last 14 days (PNG)."""

    page: ReportPage
    chart_png: bytes
    chart_alt: str
    chart_legend: tuple[tuple[str, str], ...]  # (colour, series name), shown as text beside the image


def mail_report(page: ReportPage, fortnight: ReportPage) -> MailReport:
    """The e-mail's content from the "today" and "last_14_days" pages of the same workspace and filters."""
    from etl.charts import trend_colour, trend_png
    from etl.report import OVERVIEW_SERIES

    lang = page.lang
    kinds = [k for k in OVERVIEW_SERIES if fortnight.filters.applies(k)]
    series: dict[str, Sequence[int]] = {k: [getattr(r, k) or 0 for r in fortnight.daily] for k in kinds}
    labels = {k: lang.gettext(OVERVIEW_SERIES[k]) for k in kinds}
    png = trend_png([r.day for r in fortnight.daily], series, lang)
    totals = ", ".join(f"{labels[k].lower()} {lang.number(sum(v))}" for k, v in series.items())
    alt = lang.gettext("Contacts per day, %(start)s to %(end)s: %(totals)s") % {
        "start": lang.date(fortnight.window.start), "end": lang.date(fortnight.window.end), "totals": totals}
    return MailReport(page, png, alt, tuple((trend_colour(k, i), labels[k]) for i, k in enumerate(kinds)))


def build_message(report: MailReport, links: list[Link], index: Link, sender: str, recipient: str,
                  presigned: bool, ops_address: str) -> EmailMessage:
    """A multipart message in the workspace's language: plain text, and HTML with the trend chart inline (PNG:
    mail clients do not show SVG); List-Id and List-Unsubscribe (a mailto to ops, who keep the recipients file)."""
    page = report.page
    env, lang = environment(page.workspace.locale), page.lang
    _ = lang.gettext
    chart_id = make_msgid(domain="contacts-report.invalid")
    context = {"page": page, "links": links, "index": index, "presigned": presigned,
               "chart_cid": chart_id[1:-1], "chart_alt": report.chart_alt, "chart_legend": report.chart_legend}
    workspace_id = page.workspace.workspace_id
    message = EmailMessage()
    message["Subject"] = one_line(_("Contacts report · %(workspace)s · %(day)s") % {
        "workspace": page.workspace.name, "day": lang.date(page.report_day)})
    message["From"] = formataddr((_("Contacts report"), sender))
    message["To"] = recipient
    message["Message-ID"] = make_msgid(domain="contacts-report.invalid")
    domain = sender.rpartition("@")[2] or "localhost"
    message["List-Id"] = f"{_('Contacts report')} {workspace_id} <{workspace_id}.contacts-report.{domain}>"
    subject = quote(f"unsubscribe {recipient} from workspace {workspace_id}")
    message["List-Unsubscribe"] = f"<mailto:{ops_address}?subject={subject}>"
    message.set_content(env.get_template("email.txt.j2").render(**context))
    message.add_alternative(env.get_template("email.html.j2").render(**context), subtype="html")
    html_part = message.get_body(("html",))
    assert html_part is not None  # just added
    html_part.add_related(report.chart_png, "image", "png", cid=chart_id, filename="contacts.png",
                          disposition="inline")
    return message


def send(config: SmtpConfig, messages: list[EmailMessage]) -> list[str]:
    """Send each message on one connection; a refused recipient never stops the others.
    Returns, message by message, "sent" or the error."""
    results: list[str] = []
    with smtplib.SMTP(config.host, config.port, timeout=config.timeout) as smtp:
        if config.starttls:
            smtp.starttls(context=ssl.create_default_context())
        if config.user:
            smtp.login(config.user, config.password or "")
        for message in messages:
            try:
                smtp.send_message(message)
                results.append("sent")
            except (smtplib.SMTPException, OSError) as err:
                log.error("mail to %s refused: %s", message["To"], err)
                results.append(f"refused: {type(err).__name__}")
    return results
