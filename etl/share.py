"""Shared copies of the pages an e-mail links to, for presigned links into a private bucket.

A presigned URL signs one object: the relative links of a published page (the other windows, the CSVs, the previous
day, the workspace index) would answer AccessDenied. So, before a night's e-mails go out with presigned links, each
mailed workspace's pages are copied to `_share/night=YYYY-MM-DD/…` with every link rewritten: a link to another page
of the share set becomes a presigned link to its shared copy, a link to a download a presigned link to the published
file, and a link to a page outside the set (an older day, the list of all workspaces) stops being a link (its text
stays). All are signed for as long as the e-mail's own links. The share set of a workspace: its report day's and the
day before's seven windows, unfiltered and with each filter set its recipients asked for, and its index. The
published pages stay byte-identical to the local ones; shared copies older than any signature are deleted.
"""

from __future__ import annotations

import functools
import html
import logging
import posixpath
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from typing import Any

from etl.publish import S3Target, bounded, link, put_object, stored_bytes
from etl.settings import DEFAULT_PUBLISH_CONCURRENCY
from etl.storage import Storage

log = logging.getLogger(__name__)

SHARE = "_share"
_HREF = re.compile(r' href="([^"]*)"')
_NIGHT = re.compile(r"night=(\d{4}-\d{2}-\d{2})/$")
MAX_SIGNATURE_DAYS = 7  # SigV4's longest presigned URL


def share_key(night: date, key: str) -> str:
    """Where the shared copy of the output key `key` is, for the e-mails of `night`."""
    return f"{SHARE}/night={night.isoformat()}/{key}"


def rewrite_links(page: str, key: str, shared: set[str], sign: Callable[[str], str],
                  sign_shared: Callable[[str], str]) -> str:
    """`page` (at output key `key`) with each relative link made absolute and signed, or taken out (see above).
    Our pages write every href double-quoted and escaped, and user text can never spell one (Jinja escapes `"`)."""
    folder = posixpath.dirname(key)

    def one(m: re.Match[str]) -> str:
        href = html.unescape(m.group(1))
        if not href or href.startswith(("#", "mailto:")) or "://" in href:
            return m.group(0)
        target = posixpath.normpath(posixpath.join(folder, href))
        if target in shared:
            return f' href="{html.escape(sign_shared(target))}"'
        if not target.endswith(".html") and not target.startswith(".."):
            return f' href="{html.escape(sign(target))}"'
        return ""  # an <a> without href: its text stays, as a placeholder, not a broken link

    return _HREF.sub(one, page)


def share_night(client: Any, target: S3Target, out: Storage, night: date,
                share_sets: list[list[str]], expires: int, sse: str,
                concurrency: int = DEFAULT_PUBLISH_CONCURRENCY) -> int:
    """Upload the shared copies of each workspace's share set (`share_sets`: the output keys of its pages, of which
    those that exist are shared; `etl.nightly.share_set`); returns how many. Older shares are deleted first."""
    expire_shares(client, target, night)

    @functools.cache  # a key is linked from up to ~15 pages of its workspace: signed once (~0.16 ms a signature)
    def sign(key: str) -> str:
        return link(client, target, key, None, expires)

    def sign_shared(key: str) -> str:
        return sign(share_key(night, key))

    existing = [[k for k in dict.fromkeys(keys) if out.exists(k)] for keys in share_sets]
    jobs = [(key, set(keys)) for keys in existing for key in keys]

    def one(job: tuple[str, set[str]]) -> None:
        key, shared = job
        page = rewrite_links(out.read_bytes(key).decode("utf-8"), key, shared, sign, sign_shared)
        put_object(client, target.bucket, target.key(share_key(night, key)), stored_bytes(key, page.encode()), key, sse)

    with ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="share") as pool:
        for done in bounded(pool, one, jobs, max(1, concurrency)):
            done.result()
    log.info("shared %d pages of %d workspaces for the e-mails of %s", len(jobs), len(share_sets), night)
    return len(jobs)


def expire_shares(client: Any, target: S3Target, night: date) -> int:
    """Delete the shared copies of nights whose signatures have all expired (a LIST of the share folders, one per
    night kept: bounded whatever the history); returns how many objects went."""
    root = target.key(SHARE) + "/"
    oldest_kept = night - timedelta(days=MAX_SIGNATURE_DAYS + 1)
    deleted = 0
    folders = [p["Prefix"] for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=target.bucket, Prefix=root, Delimiter="/") for p in page.get("CommonPrefixes", [])]
    for folder in folders:
        m = _NIGHT.search(folder)
        if not m or date.fromisoformat(m.group(1)) >= oldest_kept:
            continue
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=target.bucket, Prefix=folder):
            objects = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if objects:
                client.delete_objects(Bucket=target.bucket, Delete={"Objects": objects, "Quiet": True})
                deleted += len(objects)
    return deleted
