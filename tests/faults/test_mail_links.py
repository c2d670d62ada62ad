"""Every link a reader can follow from an e-mailed page works, against an S3 that checks signatures (Ceph's RADOS
Gateway): with presigned links (the shared copies of `etl.share`), and through a base URL served by a plain HTTP
front. The e-mailed pages are opened in Chromium."""

from __future__ import annotations

import email
import gzip
import json
import re
import threading
import urllib.error
import urllib.request
from dataclasses import replace
from datetime import date, timedelta
from email import policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import boto3
import pytest

from etl import nightly
from etl.mail import SmtpConfig
from etl.pipeline import run_etl
from etl.settings import S3Identity, Settings
from etl.share import SHARE, expire_shares, share_key
from etl.storage import LocalStorage, client_config
from tests.conftest import Inbox
from tests.faults.test_rgw import KMS, fresh_bucket
from tests.helpers import event, write_landing

pytestmark = pytest.mark.rgw
NIGHT = date(2026, 3, 10)
NIGHTS = [NIGHT - timedelta(days=1), NIGHT]


@pytest.fixture
def published(rgw: tuple[str, str, str], tmp_path: Path) -> tuple[Settings, Any]:
    """Two nights rendered and published to a private RGW bucket; a Spanish workspace whose recipients are one
    unfiltered and one filtered by channel."""
    endpoint, key, secret = rgw
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key, aws_secret_access_key=secret,
                          region_name="us-east-1", config=client_config())
    bucket = fresh_bucket(client, "mail-links")
    landing = write_landing(tmp_path / "landing", [(1, "Acme <España> & Co", "Europe/Madrid", "es")], {
        f"{night}/12": [event(f"{night}-{kind}", f"{night}T09:00:00Z", event_type=kind, contact_id=n,
                              **({"source": "incoming_message", "channel_id": 12, "channel_name": "WA",
                                  "channel_type": "whatsapp"} if kind != "contact.deleted" else {}))
                        for n, kind in enumerate(("contact.added", "contact.connected", "contact.deleted"), 1)]
        for night in NIGHTS})
    (tmp_path / "recipients.json").write_text(json.dumps(
        {"1": ["ana@example.com", {"to": "bea@example.com", "filters": {"channel": "12"}}]}))
    settings = Settings(landing=str(landing), warehouse=str(tmp_path / "wh"), out=str(tmp_path / "out"),
                        s3_uri=f"s3://{bucket}/site", s3_sse=KMS, recipients_file=str(tmp_path / "recipients.json"),
                        s3_identity=S3Identity(key, secret, region="us-east-1", endpoint_url=endpoint),
                        presign_seconds=3600)
    for night in NIGHTS:
        run_etl(LocalStorage(landing), LocalStorage(settings.warehouse), night)
        nightly.render_workspaces(settings, night, [1])
        nightly.finalize_indexes(settings)
        nightly.publish(settings, night, client)
    return settings, client


def mailed_links(settings: Settings, client: Any, smtp_server: tuple[int, Inbox]) -> dict[str, list[str]]:
    """recipient -> the links of the HTML part of the night's e-mail."""
    port, inbox = smtp_server
    assert nightly.email(settings, NIGHT, client, lambda: SmtpConfig("127.0.0.1", port))["sent"] == 2
    found = {}
    for recipient, raw in inbox.messages:
        html = email.message_from_bytes(raw, policy=policy.default).get_body(("html",)).get_content()
        found[recipient] = re.findall(r'<a href="([^"]+)"', html.replace("&amp;", "&"))
    return found


def fetched(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            body = answer.read()
            return answer.status, gzip.decompress(body) if answer.headers["Content-Encoding"] == "gzip" else body
    except urllib.error.HTTPError as err:
        return err.code, b""


def without_links(page: bytes) -> str:
    return re.sub(r' href="[^"]*"', "", page.decode())


def follow_every_link(browser: Any, url: str, local_key: Any, out: Path) -> int:
    """Open `url` in Chromium, then every link on it: each answers 200 with the content of the local file it
    stands for (`local_key(url)`: its output key). Returns how many links were followed."""
    page = browser.new_page(viewport={"width": 360, "height": 800})
    answer = page.goto(url)
    assert answer is not None and answer.status == 200, url
    assert page.evaluate("document.documentElement.lang") == "es"
    hrefs = page.evaluate("[...document.querySelectorAll('a[href]')].map(a => a.href)")
    dead = page.evaluate("[...document.querySelectorAll('a:not([href])')].map(a => a.textContent)")
    page.close()
    for href in hrefs:
        status, body = fetched(href)
        key = local_key(href)
        assert status == 200, (key, status)
        expected = (out / key).read_bytes()
        if key.endswith(".html"):  # a shared copy differs from the published page only in its links
            assert without_links(body) == without_links(expected), key
        else:
            assert body == expected, key
    assert all(text.strip() for text in dead)  # links taken out keep their words
    return len(hrefs)


def test_presigned_e_mail_links_and_every_link_on_their_pages_work_against_a_signature_checking_s3(
        published: tuple[Settings, Any], smtp_server: tuple[int, Inbox], browser: Any) -> None:
    settings, client = published
    out = Path(settings.out)
    bucket = settings.s3_uri[5:].split("/")[0] if settings.s3_uri else ""
    local_before = {p: p.read_bytes() for p in out.rglob("*.html")}
    links = mailed_links(settings, client, smtp_server)

    def local_key(url: str) -> str:
        path = unquote(urlsplit(url).path).removeprefix(f"/{bucket}/site/")
        return re.sub(rf"^{SHARE}/night=[\d-]+/", "", path)

    followed = 0
    for recipient, urls in links.items():
        assert len(urls) == 8 and all("X-Amz-Signature=" in u for u in urls), recipient
        for url in urls:
            assert f"/{SHARE}/night={NIGHT}/" in unquote(url)
            followed += follow_every_link(browser, url, local_key, out)
    assert followed > 100
    filtered = links["bea@example.com"][0]
    assert "/filtered/" in filtered and "/1/2026-03-10/today.html" in filtered
    # The published pages are the local ones, byte for byte: only the shared copies carry signed links.
    assert {p: p.read_bytes() for p in out.rglob("*.html")} == local_before
    original = client.get_object(Bucket=bucket, Key="site/1/2026-03-10/today.html")["Body"].read()
    assert gzip.decompress(original) == (out / "1/2026-03-10/today.html").read_bytes()
    # A signature checked: the same link without it is refused.
    assert fetched(links["ana@example.com"][0].split("?")[0])[0] == 403
    # Shared copies outlive every signature on them by a day, then go.
    target_night = NIGHT + timedelta(days=9)
    from etl.publish import S3Target

    assert expire_shares(client, S3Target(bucket, "site"), NIGHT + timedelta(days=8)) == 0
    gone = expire_shares(client, S3Target(bucket, "site"), target_night)
    assert gone >= 2 * 14 + 1 and client.list_objects_v2(Bucket=bucket, Prefix=f"site/{share_key(NIGHT, '')}"
                                                          )["KeyCount"] == 0


class _Front(BaseHTTPRequestHandler):
    """A plain HTTP front: serves the bucket's objects as they are stored (gzip and all)."""

    client: Any
    bucket: str

    def do_GET(self) -> None:  # the standard library's name
        key = "site/" + unquote(urlsplit(self.path).path).lstrip("/")
        try:
            found = self.client.get_object(Bucket=self.bucket, Key=key)
        except self.client.exceptions.NoSuchKey:
            self.send_error(404)
            return
        body = found["Body"].read()
        self.send_response(200)
        self.send_header("Content-Type", found["ContentType"])
        if found.get("ContentEncoding"):
            self.send_header("Content-Encoding", found["ContentEncoding"])
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


def test_base_url_e_mail_links_and_every_link_on_their_pages_work_through_a_plain_front(
        published: tuple[Settings, Any], smtp_server: tuple[int, Inbox], browser: Any) -> None:
    settings, client = published
    bucket = settings.s3_uri[5:].split("/")[0] if settings.s3_uri else ""
    handler = type("Front", (_Front,), {"client": client, "bucket": bucket})
    front = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=front.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{front.server_address[1]}/"
    try:
        links = mailed_links(replace(settings, base_url=base), client, smtp_server)
        followed = sum(follow_every_link(browser, url, lambda u: unquote(urlsplit(u).path).lstrip("/"),
                                         Path(settings.out))
                       for urls in links.values() for url in urls)
    finally:
        front.shutdown()
    assert all(u.startswith(base) and "X-Amz" not in u for urls in links.values() for u in urls)
    assert followed > 100
    assert client.list_objects_v2(Bucket=bucket, Prefix=f"site/{SHARE}/")["KeyCount"] == 0  # nothing shared
