"""The nightly steps without Airflow: the quality gate, the landing wait, the publish order."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from etl.errors import EtlError
from etl.mail import mail_report, parse_recipients
from etl.nightly import backfill, check_landing, ingest, night_of, plan_emails, quality_gate, record_run
from etl.publish import S3Target, upload
from etl.quality import QualityError, problems
from etl.settings import Settings, Thresholds
from etl.storage import LocalStorage, s3_client
from etl.warehouse import run_key
from tests.conftest import plain_id
from tests.helpers import event, published, write_landing

LIMITS = Thresholds(max_quarantine_ratio=0.05, max_schema_drift_ratio=0.01, min_volume_ratio=0.2, volume_floor=50)


def night(lines: int, quarantined: dict[str, int] | None = None, by_workspace: dict[str, int] | None = None
          ) -> dict[str, Any]:
    reasons = quarantined or {}
    return {"lines_read": lines, "events_quarantined": sum(reasons.values()), "quarantined_by_reason": reasons,
            "events_by_workspace": by_workspace or {}}


def test_a_clean_night_passes_the_gate() -> None:
    history = [night(1000, by_workspace={"1": 600, "2": 400}) for _ in range(7)]
    assert problems(night(1000, {"invalid_json": 3}, {"1": 590, "2": 410}), history, LIMITS) == []


def test_gate_names_each_problem() -> None:
    history = [night(1000, by_workspace={"1": 600, "2": 400}) for _ in range(7)]
    found = problems(night(1000, {"bad_type:workspace_id": 80}, {"1": 600, "2": 20}), history, LIMITS)
    assert len(found) == 3
    assert "8.0% of lines were quarantined" in found[0]
    assert found[1].startswith("schema drift")
    assert found[2] == ("workspace 2: volume collapsed to 20 events (the previous nights' median is 400; the gate "
                        "asks for at least 20% of it)")
    assert Settings().thresholds == Thresholds()  # the settings' defaults are the gate's


def test_an_empty_night_never_passes() -> None:
    assert "refusing to publish a report of zero contacts" in problems(night(0), [], LIMITS)[0]


def test_small_workspaces_do_not_trip_the_volume_check() -> None:
    history = [night(100, by_workspace={"1": 10}) for _ in range(7)]
    assert problems(night(100, by_workspace={}), history, LIMITS) == []


RELAXED = {"max_quarantine_ratio": 0.5, "max_schema_drift_ratio": 0.5, "max_damaged_files": 1}
# Either of these alone turns the volume check off for the night below (15 events after a median of 100).
VOLUME_RELAXED = {"min_volume_ratio": 0.1, "volume_floor": 1_000}
PROBLEM = {"max_quarantine_ratio": "of lines were quarantined", "max_schema_drift_ratio": "schema drift",
           "max_damaged_files": "could not be read whole", "volume": "volume collapsed"}


def gate_with(tmp_path: Path, relaxed: dict[str, Any]) -> str | None:
    """The gate over a night that trips every check, with `relaxed` thresholds: None if it passes, else the
    problems."""
    warehouse = LocalStorage(tmp_path / "wh")
    tonight = date(2026, 3, 10)
    for back in (1, 2, 3):
        warehouse.write_bytes(run_key(tonight - timedelta(days=back)), json.dumps(
            night(100, by_workspace={"1": 100})).encode())
    warehouse.write_bytes(run_key(tonight), json.dumps(
        night(100, {"bad_type:contact_id": 10}, {"1": 15}) | {"files_damaged": {"x.ndjson.gz": "corrupt_gzip"}}
    ).encode())
    try:
        quality_gate(replace(Settings(warehouse=str(tmp_path / "wh")), **relaxed), tonight)
    except QualityError as failed:
        return str(failed)
    return None


@pytest.mark.parametrize("volume", list(VOLUME_RELAXED))
def test_the_gate_takes_every_threshold_from_the_settings(tmp_path: Path, volume: str) -> None:
    assert gate_with(tmp_path, RELAXED | {volume: VOLUME_RELAXED[volume]}) is None


@pytest.mark.parametrize("kept", [*RELAXED, "volume"])
def test_a_threshold_left_at_its_default_fails_the_night_with_its_own_problem(tmp_path: Path, kept: str) -> None:
    relaxed = {k: v for k, v in RELAXED.items() if k != kept} | ({} if kept == "volume" else
                                                                 {"min_volume_ratio": 0.1})
    found = gate_with(tmp_path, relaxed)
    assert found is not None and PROBLEM[kept] in found and found.count("\n  - ") == 1


class FakeClock:
    """Time that passes only when the code under test sleeps: polling is tested without waiting."""

    def __init__(self, on_sleep: Any = None) -> None:
        self.now, self.naps, self.on_sleep = 0.0, [], on_sleep

    def sleep(self, seconds: float) -> None:
        self.naps.append(seconds)
        self.now += seconds
        if self.on_sleep:
            self.on_sleep(len(self.naps))

    def monotonic(self) -> float:
        return self.now


def test_landing_wait_polls_until_the_deadline_then_fails(tmp_path: Path) -> None:
    landing = write_landing(tmp_path / "landing", [(1, "W", "UTC")],
                            {"2026-03-10/01": [event("a", "2026-03-10T00:10:00Z")]})
    settings = Settings(landing=str(landing), landing_wait_seconds=900, landing_poll_seconds=300)
    assert check_landing(settings, date(2026, 3, 10)) == 1  # delivered: no waiting
    clock = FakeClock()
    with pytest.raises(EtlError, match="after waiting 900s") as failed:
        check_landing(settings, date(2026, 3, 11), sleep=clock.sleep, clock=clock.monotonic)
    assert str(failed.value).endswith("Re-run the night once the feed has delivered.")  # what to do
    assert clock.naps == [300, 300, 300]  # polled every 300 s until the deadline, then failed


def test_landing_wait_returns_as_soon_as_the_feed_delivers(tmp_path: Path) -> None:
    landing = write_landing(tmp_path / "landing", [(1, "W", "UTC")], {})
    settings = Settings(landing=str(landing), landing_wait_seconds=3600, landing_poll_seconds=300)

    def deliver(naps: int) -> None:
        if naps == 2:
            write_landing(landing, [(1, "W", "UTC")], {"2026-03-11/01": [event("a", "2026-03-11T00:10:00Z")],
                                                       "2026-03-11/02": [event("b", "2026-03-11T01:10:00Z")]})

    clock = FakeClock(deliver)
    assert check_landing(settings, date(2026, 3, 11), sleep=clock.sleep, clock=clock.monotonic) == 2
    assert clock.naps == [300, 300]


def fake_site(out: LocalStorage, days: list[str], workspaces: tuple[int, ...] = (1, 2, 3)) -> dict[str, list[str]]:
    """Pages, CSVs and indexes of report days under `out`: report day -> its dated keys (and "indexes")."""
    nights: dict[str, list[str]] = {}
    for day in days:
        nights[day] = [f"{w}/{day}/{name}" for w in workspaces for name in
                       ("today.html", "last_7_days.html", "today.contacts_added.csv")]
        for key in nights[day]:
            out.write_bytes(key, f"<p>{key}</p>".encode() * 40)
    nights["indexes"] = ["index.html", *(f"{w}/index.html" for w in workspaces), "_runs/index.html"]
    for key in nights["indexes"]:
        out.write_bytes(key, f"<p>{key}</p>".encode())
    return nights


def counted_requests(client: Any) -> Counter[str]:
    counts: Counter[str] = Counter()
    client.meta.events.register("before-send.s3", lambda event_name, **_: counts.update([event_name.split(".")[-1]]))
    return counts


def test_a_re_run_uploads_nothing_and_a_changed_page_goes_up_alone(tmp_path: Path, s3_bucket: str) -> None:
    out = LocalStorage(tmp_path)
    site = fake_site(out, ["2026-03-10"])
    keys = [*site["2026-03-10"], *site["indexes"]]
    client, target = s3_client(), S3Target.parse(f"s3://{s3_bucket}/site")
    first = upload(client, target, out, keys)
    assert (first["uploaded"], first["unchanged"]) == (len(keys), 0)
    assert first["requests"]["PutObject"] == len(keys) + 3  # and the ledgers: the report day's, indexes', ops page'
    requests = counted_requests(client)
    again = upload(client, target, out, keys)
    assert (again["uploaded"], again["unchanged"], again["bytes"]) == (0, len(keys), 0)
    assert "PutObject" not in requests and again["requests"] == dict(requests)
    out.write_bytes("2/2026-03-10/today.html", b"<p>late events changed it</p>")
    third = upload(client, target, out, keys)
    assert (third["uploaded"], third["unchanged"]) == (1, len(keys) - 1)
    assert published(client, s3_bucket, "site/2/2026-03-10/today.html") == b"<p>late events changed it</p>"


def test_the_requests_of_a_night_do_not_grow_with_the_history(tmp_path: Path, s3_bucket: str) -> None:
    """A night reads the few ledgers of its report days, never a listing of the prefix: publishing the same night
    into a bucket holding 20 earlier nights costs the same requests as into an empty one."""
    out = LocalStorage(tmp_path)
    days = [f"2026-03-{d:02d}" for d in range(1, 22)]
    site = fake_site(out, days)
    client = s3_client()
    for day in days[:-1]:
        upload(client, S3Target(s3_bucket, "busy"), out, [*site[day], *site["indexes"]])
    out.write_bytes("index.html", b"<p>tonight's index</p>")
    busy = upload(client, S3Target(s3_bucket, "busy"), out, [*site[days[-1]], *site["indexes"]])
    empty = upload(client, S3Target(s3_bucket, "empty"), out, [*site[days[-1]], *site["indexes"]])
    assert busy["requests"] == {"GetObject": 3, "ListMultipartUploads": 1, "PutObject": 9 + 1 + 1 + 1}
    assert empty["requests"]["GetObject"] == busy["requests"]["GetObject"]
    assert not {"ListObjectsV2", "HeadObject"} & set(busy["requests"])
    assert empty["uploaded"] == 9 + len(site["indexes"]) and busy["uploaded"] == 9 + 1  # the indexes but one were
    # already there, unchanged


@pytest.mark.parametrize("key", ["1/2026-03-10/today.html", "1/2026-03-10/today.contacts_added.csv",
                                 "_runs/runs.json", "1/2026-03-10/manifest.sha256"])
def test_text_is_stored_compressed_deterministically_and_other_bytes_as_they_are(tmp_path: Path, s3_bucket: str,
                                                                                key: str) -> None:
    out = LocalStorage(tmp_path)
    text = ("<td>Ana María</td>" * 400).encode()
    out.write_bytes(key, text)
    out.write_bytes("1/2026-03-10/chart.png", text)
    client = s3_client()
    for prefix in ("a", "b"):
        upload(client, S3Target(s3_bucket, prefix), out, [key, "1/2026-03-10/chart.png"])
    head = client.head_object(Bucket=s3_bucket, Key=f"a/{key}")
    assert head["ContentEncoding"] == "gzip" and head["ContentLength"] < len(text) / 10
    assert published(client, s3_bucket, f"a/{key}") == text and (tmp_path / key).read_bytes() == text  # local: plain
    stored = [client.get_object(Bucket=s3_bucket, Key=f"{p}/{key}")["Body"].read() for p in ("a", "b")]
    assert stored[0] == stored[1] and stored[0][4:8] == b"\0\0\0\0"  # no time in the gzip header
    png = client.head_object(Bucket=s3_bucket, Key="a/1/2026-03-10/chart.png")
    assert "ContentEncoding" not in png and png["ContentLength"] == len(text)


@pytest.mark.parametrize(("environment", "encryption"), [({}, b"AES256"), ({"CONTACTS_REPORT_S3_SSE": "none"}, None),
                                                      ({"CONTACTS_REPORT_S3_SSE": " aws:kms "}, b"aws:kms")],
                         ids=["default", "none", "kms"])
def test_published_objects_carry_the_documented_cache_and_encryption(tmp_path: Path, s3_bucket: str,
                                                                     environment: dict[str, str],
                                                                     encryption: bytes | None) -> None:
    """README: a 5-minute cache for index pages, a day for dated ones; AES256 unless CONTACTS_REPORT_S3_SSE says
    otherwise (`none`: the bucket's own default applies)."""
    sse = Settings.from_env(environment).s3_sse
    out = LocalStorage(tmp_path)
    keys = ["1/2026-03-10/today.html", "1/2026-03-10/today.contacts_added.csv", "1/index.html", "index.html"]
    for key in keys:
        out.write_bytes(key, key.encode())
    client = s3_client()
    sent: dict[str, Any] = {}
    client.meta.events.register("before-send.s3.PutObject",
                                lambda request, **_: sent.update({request.url.split("/site/")[1]: request.headers}))
    upload(client, S3Target.parse(f"s3://{s3_bucket}/site"), out, keys, sse)
    for key in keys:
        head = client.head_object(Bucket=s3_bucket, Key=f"site/{key}")
        max_age = int(head["CacheControl"].split("max-age=")[1].split(",")[0])
        assert max_age == (300 if key.endswith("index.html") else 86_400), key
        assert sent[key].get("x-amz-server-side-encryption") == encryption, key


def test_the_ops_record_times_the_night_and_the_runs_page_lists_the_last_60_nights_newest_first(
        tmp_path: Path) -> None:
    warehouse = LocalStorage(tmp_path / "wh")
    summary = {"lines_read": 5, "events_valid": 4, "events_quarantined": 1, "duplicates_dropped": 0, "late_events": 0}
    first = date(2026, 1, 1)
    for n in range(64):
        day = (first + timedelta(days=n)).isoformat()
        warehouse.write_bytes(f"_nightly/night={day}.json", json.dumps(
            {"night": day, "finished_at": f"{day}T03:00:00+00:00", "seconds": 60, **summary}).encode())
    tonight = first + timedelta(days=64)
    warehouse.write_bytes(run_key(tonight), json.dumps(summary).encode())
    started = (datetime.now(UTC) - timedelta(seconds=90)).isoformat()
    record = record_run(Settings(warehouse=str(tmp_path / "wh"), out=str(tmp_path / "out")), tonight,
                        {"started_at": started, "pages": 3}, None)
    assert 90 <= record["seconds"] <= 150 and (record["pages"], record["lines_read"]) == (3, 5)
    assert json.loads(warehouse.read_bytes(f"_nightly/night={tonight}.json")) == record
    runs = json.loads((tmp_path / "out/_runs/runs.json").read_text())
    assert [r["night"] for r in runs] == [(tonight - timedelta(days=n)).isoformat() for n in range(60)]
    assert tonight.isoformat() in (tmp_path / "out/_runs/index.html").read_text()


def test_a_run_with_neither_date_is_refused_with_what_it_needs() -> None:
    with pytest.raises(ValueError, match=r"^a run needs a logical date or a run_after time to know its night$"):
        night_of(None, None)


def test_the_ingest_step_takes_the_line_and_file_bounds_from_the_settings(tmp_path: Path) -> None:
    lines = [event("a", "2026-03-10T08:00:00Z"), event("b", "2026-03-10T08:30:00Z", contact_name="x" * 3_000)]
    landing = write_landing(tmp_path / "landing", [(1, "M", "UTC")], {"2026-03-10/09": lines})
    settings = Settings(landing=str(landing), warehouse=str(tmp_path / "wh"))
    summary = ingest(replace(settings, max_line_bytes=2_000), date(2026, 3, 10))
    assert (summary["lines_read"], summary["events_valid"], summary["events_quarantined"]) == (2, 1, 1)
    summary = ingest(replace(settings, max_file_lines=1), date(2026, 3, 10))
    assert (summary["lines_read"], summary["events_valid"]) == (0, 0)  # the file is refused whole, unread
    for bounded, valid in ((replace(settings, max_line_bytes=2_000), 1), (replace(settings, max_file_lines=1), 0)):
        assert backfill(bounded, until=date(2026, 3, 11)) == 1  # the demo's history obeys the same settings
        assert json.loads(LocalStorage(tmp_path / "wh").read_bytes(run_key(date(2026, 3, 10))))["events_valid"] == valid


def test_the_ops_page_is_written_typed_and_published_with_the_night(tmp_path: Path, s3_bucket: str) -> None:
    """The ops page rendered straight to S3 carries its content types; with a publish target it is uploaded too."""
    night_ = date(2026, 3, 10)
    LocalStorage(tmp_path / "wh").write_bytes(run_key(night_), json.dumps(
        {"lines_read": 1, "events_valid": 1, "events_quarantined": 0, "duplicates_dropped": 0, "late_events": 0}
    ).encode())
    client = s3_client()
    settings = Settings(warehouse=str(tmp_path / "wh"), out=f"s3://{s3_bucket}/rendered",
                        s3_uri=f"s3://{s3_bucket}/site")
    record_run(settings, night_, {}, client)
    for prefix in ("rendered", "site"):
        for key, kind in (("_runs/index.html", "text/html; charset=utf-8"), ("_runs/runs.json", "application/json")):
            sent = client.head_object(Bucket=s3_bucket, Key=f"{prefix}/{key}")["ContentType"]
            assert sent.startswith(kind), (prefix, key, sent)


def test_the_email_plan_is_built_without_storage_or_smtp() -> None:
    """Who gets a message, who is skipped (already sent), who cannot get one (invalid address, a workspace the
    warehouse does not know), and the links each message carries: one pure step before any delivery."""
    from tests.unit.test_report_model import page

    report = mail_report(page(window="today"), page(window="last_14_days"))
    ledger = {"1:old@example.com": "sent"}
    recipients = parse_recipients({"1": ["old@example.com", "new@example.com", "not an address",
                                         {"to": "new@example.com", "filters": {"colour": "red"}}],
                                   "9": ["x@example.com"]})
    plan = plan_emails(recipients, {(1, ()): report}, ledger, lambda key: f"https://r.example/{key}",
                       "from@example.com", presigned=False)
    assert [(entry, str(message["To"])) for entry, message in plan.messages] == [
        ("1:new@example.com", "new@example.com")]
    bad_filter = "1:new@example.com?colour=red"
    assert plan.ledger == {"1:old@example.com": "sent", "1:not an address": "invalid address",
                           bad_filter: plan.ledger[bad_filter], "9:x@example.com": "unknown workspace"}
    assert plan.ledger[bad_filter].startswith("invalid filters: bad filter 'colour=red'")
    assert (plan.skipped, plan.invalid) == (1, 3)
    assert ledger == {"1:old@example.com": "sent"}  # the caller's ledger is left as it was
    text = plan.messages[0][1].get_body(("plain",)).get_content()
    assert "https://r.example/1/2026-03-10/today.html" in text and "https://r.example/1/index.html" in text


@pytest.mark.parametrize(("entry", "problem"), [
    (42, 'not an address or {"to": …, "filters": {…}}'),
    ({"filters": {"channel": "12"}}, 'not an address or {"to": …, "filters": {…}}'),
    ({"to": ["a@example.com"]}, 'not an address or {"to": …, "filters": {…}}'),
    ({"to": "a@example.com", "filters": ["channel=12"]}, 'not an address or {"to": …, "filters": {…}}'),
    ({"to": "a@example.com", "filters": {"colour": "red"}}, "invalid filters: bad filter 'colour=red'"),
    ({"to": "a@example.com", "filters": {"channel": "0"}}, "invalid filters: channel filter takes a numeric"),
    ({"to": "a@example.com", "filters": {"source": "fax"}}, "invalid filters: unknown source 'fax'"),
    ({"to": "a@example.com", "filters": {"contact": ""}}, "invalid filters: bad filter 'contact='"),
    ({"to": "a@example.com", "filters": {"user": "７"}}, "invalid filters: user filter takes a numeric"),
], ids=plain_id)
def test_a_recipient_that_cannot_be_used_is_named_with_why_and_the_others_stay(entry: object, problem: str) -> None:
    found = parse_recipients({"5": ["ok@example.com", entry, {"to": "b@example.com", "filters": {"user": 7}}]})
    ok, bad, filtered = found[5]
    assert (ok.address, ok.problem, filtered.filters, filtered.problem) == ("ok@example.com", None, ("user=7",), None)
    assert bad.problem is not None and bad.problem.startswith(problem)


@pytest.mark.parametrize("text", ['["a@example.com"]', '{"five": ["a@example.com"]}', '{"5": "a@example.com"}',
                                  "{not json", '"\\ud800"'], ids=plain_id)
def test_a_recipients_file_of_the_wrong_shape_is_an_error_naming_the_file(tmp_path: Path, text: str) -> None:
    from etl.nightly import _recipients

    path = tmp_path / "recipients.json"
    path.write_text(text)
    with pytest.raises(EtlError, match=re.escape(str(path))):
        _recipients(Settings(recipients_file=str(path)))
