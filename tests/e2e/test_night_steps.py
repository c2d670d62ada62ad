"""The night's steps as the DAG calls them, in one process and in order (no Airflow): what each step returns, what
it leaves behind, and what a second run of the night changes (nothing). The DAG tests run the same functions under
dag.test(); this one sees their values."""

from __future__ import annotations

import email
import json
from dataclasses import replace
from datetime import UTC, date, datetime
from email import policy
from pathlib import Path

import pytest

from etl import nightly
from etl.archive import verify
from etl.generate import GenerateOptions, generate
from etl.i18n import language
from etl.mail import SmtpConfig
from etl.render_jobs import late_pages
from etl.settings import Settings
from etl.storage import LocalStorage, S3Storage, s3_client
from etl.warehouse import read_view, report_days
from etl.windows import end_of_night
from tests.conftest import Inbox

NIGHT = date(2026, 3, 11)
BUCKET = "night-steps"


@pytest.fixture
def settings(tmp_path: Path, moto_server: str) -> Settings:
    data = tmp_path / "data"
    generate(LocalStorage(data / "landing"), GenerateOptions(start=date(2026, 3, 5), days=7, workspaces=3,
                                                             events_per_day=120, seed=5))
    (data / "recipients.json").write_text(json.dumps({"1": ["ana@example.com", "not an address"],
                                                      "3": ["eve@example.com"], "99": ["nobody@example.com"]}))
    s3_client().create_bucket(Bucket=BUCKET)
    return Settings(landing=str(data / "landing"), warehouse=str(data / "warehouse"), out=str(data / "out"),
                    archive=str(data / "out/archive"), s3_uri=f"s3://{BUCKET}/site",
                    recipients_file=str(data / "recipients.json"), render_batch_size=2, landing_wait_seconds=0)


def run_night(settings: Settings, smtp_port: int) -> dict[str, object]:
    client = s3_client()
    files = nightly.check_landing(settings, NIGHT)
    ingested = nightly.ingest(settings, NIGHT)
    checked = nightly.quality_gate(settings, NIGHT)
    batches = nightly.plan_batches(settings, NIGHT)
    rendered = [nightly.render_workspaces(settings, NIGHT, batch) for batch in batches]
    indexed = nightly.finalize_indexes(settings, NIGHT)
    published = nightly.publish(settings, NIGHT, client)
    archived = nightly.archive_night(settings, NIGHT, client)
    mailed = nightly.email(settings, NIGHT, client, lambda: SmtpConfig("127.0.0.1", smtp_port))
    stats = {"pages": sum(r["pages"] for r in rendered), **published, **mailed}
    record = nightly.record_run(settings, NIGHT, stats, client)
    return {"files": files, "ingested": ingested, "checked": checked, "batches": batches, "rendered": rendered,
            "indexed": indexed,
            "published": published, "archived": archived, "mailed": mailed, "record": record}


def test_the_night_step_by_step_and_again(settings: Settings, smtp_server: tuple[int, Inbox]) -> None:
    port, inbox = smtp_server
    assert nightly.backfill(settings, NIGHT) == 6  # the arrival days before the night
    first = run_night(settings, port)
    warehouse = LocalStorage(settings.warehouse)
    summary = json.loads(warehouse.read_bytes(f"_runs/ingest_date={NIGHT}.json"))

    assert first["files"] == len(LocalStorage(settings.landing).list(f"events/ingest_date={NIGHT}"))
    assert first["ingested"] == {k: summary[k] for k in ("ingest_date", "run_id", "lines_read", "events_valid",
                                                          "events_quarantined", "duplicates_dropped",
                                                          "late_events")} | {
        "days_touched": len(summary["days_touched"])}
    assert first["checked"] == {"night": NIGHT.isoformat(), "lines_read": summary["lines_read"],
                                "baseline_nights": 6}
    assert sorted(w for batch in first["batches"] for w in batch) == [1, 2, 3]  # type: ignore[attr-defined]
    assert len(first["batches"]) == 2  # type: ignore[arg-type]  # three workspaces, two per batch
    one_each = nightly.plan_batches(replace(settings, render_batch_size=1), NIGHT)
    assert sorted(one_each) == [[1], [2], [3]]
    assert first["indexed"] == 3

    # What was published: each workspace's report day (7 pages and their CSVs), then the index pages.
    out = LocalStorage(settings.out)
    view = read_view(warehouse)
    days = report_days(view, view.workspaces, None, end_of_night(NIGHT))
    keys = nightly.night_keys(settings, NIGHT)
    assert keys[-4:] == ["index.html", "1/index.html", "2/index.html", "3/index.html"]
    # ... and the pages of last night's report days that the night's late events changed
    late = late_pages({int(w): [date.fromisoformat(d) for d in ds]
                               for w, ds in summary["late_days_by_workspace"].items()}, days, view.first_day, 1)
    assert summary["late_events"] and late  # the generator delivers some events late
    assert sum(r["late_pages"] for r in first["rendered"]) == sum(len(n) * len(ws) for (_, n), ws in late.items())
    assert {k.rsplit("/", 1)[0] for k in keys[:-4]} == {f"{w}/{d}" for w, d in days.items()} | {
        f"{w}/{d}" for (d, _), ws in late.items() for w in ws}
    assert sum(k.endswith(".html") for k in keys[:-4]) == 3 * 7 + sum(len(n) * len(ws) for (_, n), ws in late.items())
    published = first["published"]
    assert isinstance(published, dict) and (published["uploaded"], published["unchanged"]) == (len(keys), 0)
    stored = [o for page in s3_client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="site/")
              for o in page.get("Contents", []) if not o["Key"].startswith(("site/archive/", "site/_"))]
    assert published["published_bytes"] == sum(o["Size"] for o in stored)  # compressed: less than the files
    assert published["published_bytes"] < sum(len(out.read_bytes(k)) for k in keys) / 3
    assert published["publish_requests"] >= len(keys)

    # The archive: one snapshot per workspace's report day, mirrored to the bucket; both verify.
    assert first["archived"] == {"written": 3, "revised": 0, "unchanged": 0, "mirrored": 3 * 14}
    assert verify(LocalStorage(settings.archive))[0] == []
    assert verify(S3Storage(BUCKET, "site/archive", s3_client()))[0] == []

    # Mail: the valid addresses of known workspaces get one message; an invalid address and one of a workspace the
    # warehouse does not know are counted as failed.
    assert first["mailed"] == {"sent": 2, "failed": 2, "skipped": 0}
    assert sorted(r for r, _ in inbox.messages) == ["ana@example.com", "eve@example.com"]
    ledger = json.loads(warehouse.read_bytes(f"_mail/night={NIGHT}.json"))
    assert ledger == {"1:ana@example.com": "sent", "1:not an address": "invalid address",
                      "3:eve@example.com": "sent", "99:nobody@example.com": "unknown workspace"}
    message = email.message_from_bytes(dict(inbox.messages)["eve@example.com"], policy=policy.default)
    assert f"· {language().date(days[3])}" in str(message["Subject"])  # as English writes a day

    # The ops record: the ETL's counts and the steps' stats, on the ops page and in runs.json.
    record = first["record"]
    assert isinstance(record, dict)
    assert record["night"] == NIGHT.isoformat() and record["lines_read"] == summary["lines_read"]
    assert (record["pages"], record["sent"], record["failed"]) == (21, 2, 2)
    assert json.loads(out.read_bytes("_runs/runs.json"))[0] == record
    assert NIGHT.isoformat() in out.read_bytes("_runs/index.html").decode()

    # The same night again: nothing new is uploaded, archived or mailed.
    again = run_night(settings, port)
    assert again["published"]["uploaded"] == 0 and again["published"]["unchanged"] == len(keys)  # type: ignore[index]
    assert again["archived"] == {"written": 0, "revised": 0, "unchanged": 3, "mirrored": 3 * 14}
    assert again["mailed"] == {"sent": 0, "failed": 2, "skipped": 2}
    assert len(inbox.messages) == 2


def test_a_night_without_recipients_or_bucket_publishes_and_mails_nothing(settings: Settings) -> None:
    local_only = replace(settings, s3_uri=None, recipients_file=None)
    nightly.backfill(local_only, date(2026, 3, 12))
    assert nightly.publish(local_only, NIGHT, s3_client()) == {"uploaded": 0, "unchanged": 0}
    assert nightly.email(local_only, NIGHT, None, lambda: pytest.fail("no SMTP connection without recipients")) == {
        "sent": 0, "failed": 0, "skipped": 0}
    assert "mirrored" not in nightly.archive_night(local_only, NIGHT, None)
    assert s3_client().list_objects_v2(Bucket=BUCKET).get("KeyCount", 0) == 0


def test_the_archive_step_locks_the_mirrored_snapshots_as_the_settings_say(settings: Settings) -> None:
    client = s3_client()
    client.create_bucket(Bucket="audit", ObjectLockEnabledForBucket=True)
    locked = replace(settings, s3_uri="s3://audit/site", archive="s3://audit/archive", archive_lock_mode="GOVERNANCE",
                     archive_lock_days=3)  # the archive itself on the bucket, and mirrored under the site
    nightly.backfill(locked, date(2026, 3, 12))
    archived = nightly.archive_night(locked, NIGHT, client)
    listed = client.list_objects_v2(Bucket="audit")["Contents"]
    keys = [o["Key"] for o in listed if "/rev-" in o["Key"]]  # the snapshots (each workspace's HEAD is mutable)
    assert archived["mirrored"] == len(keys) // 2 > 0
    assert {k.split("/")[0] for k in keys} == {"archive", "site"}
    for key in (keys[0], keys[-1]):
        stored = client.head_object(Bucket="audit", Key=key)
        assert stored["ObjectLockMode"] == "GOVERNANCE"
        assert (stored["ObjectLockRetainUntilDate"].date() - datetime.now(UTC).date()).days in (3, 4)


def test_a_night_without_a_bucket_mails_links_to_the_local_pages_past_an_unknown_workspace(
        settings: Settings, smtp_server: tuple[int, Inbox], tmp_path: Path) -> None:
    port, inbox = smtp_server
    recipients = tmp_path / "recipients.json"
    recipients.write_text(json.dumps({"0": ["zed@example.com"],  # not in the warehouse
                                      "1": ["not an address", "nor this", "ana@example.com"]}))
    local = replace(settings, s3_uri=None, recipients_file=str(recipients), out=str(tmp_path / "pagesX"))
    nightly.backfill(local, date(2026, 3, 12))
    assert nightly.email(local, NIGHT, None, lambda: SmtpConfig("127.0.0.1", port)) == {
        "sent": 1, "failed": 3, "skipped": 0}
    [(to, raw)] = inbox.messages
    body = email.message_from_bytes(raw, policy=policy.default).get_body(("plain",))
    assert body is not None
    text = body.get_content()
    view = read_view(LocalStorage(local.warehouse))
    day = report_days(view, [1], None, end_of_night(NIGHT))[1]
    assert to == "ana@example.com"
    assert f"{tmp_path}/pagesX/1/{day}/today.html" in text
    assert f"All report days: {tmp_path}/pagesX/1/index.html" in text
    assert "signed" not in text  # plain paths: nothing expires


def test_a_night_with_no_valid_address_never_connects_to_the_mail_server(settings: Settings, tmp_path: Path) -> None:
    recipients = tmp_path / "recipients.json"
    recipients.write_text(json.dumps({"1": ["not an address"]}))
    local = replace(settings, s3_uri=None, recipients_file=str(recipients))
    nightly.backfill(local, date(2026, 3, 12))
    assert nightly.email(local, NIGHT, None, lambda: pytest.fail("no SMTP connection without a valid address")) == {
        "sent": 0, "failed": 1, "skipped": 0}
