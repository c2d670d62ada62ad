"""The nightly DAG with real parts: dag.test(), a moto S3 server and an aiosmtpd server on loopback."""

from __future__ import annotations

import email
import email.policy
import gzip
import json
import re
import subprocess
import sys
import urllib.request
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from etl.generate import GenerateOptions, generate
from etl.nightly import backfill, night_of
from etl.render_jobs import late_pages
from etl.settings import Settings
from etl.storage import LocalStorage, s3_client
from etl.warehouse import read_view, report_days
from etl.windows import WINDOW_NAMES, end_of_night
from tests.dags.conftest import REPO, SECRET, dag_env, run_dag
from tests.helpers import published

NIGHT = "2026-03-11"
BUCKET = "reports-bucket"


@pytest.mark.other_process
def test_dag_file_parses_fast_with_no_connection_lookups() -> None:
    probe = f"""
import time, importlib.util
import airflow.sdk
from airflow.sdk import BaseHook
calls = []
BaseHook.get_connection = classmethod(lambda cls, conn_id: calls.append(conn_id))
started = time.monotonic()
spec = importlib.util.spec_from_file_location("d", {str(REPO / "dags/contacts_report_nightly.py")!r})
module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
elapsed = time.monotonic() - started
import sys
heavy = [m for m in ("polars", "matplotlib", "boto3", "etl.pipeline") if m in sys.modules]
dag = module.contacts_report_nightly()
tasks = {{t.task_id: t for t in dag.tasks}}
print(repr(dict(elapsed=elapsed, calls=calls, heavy=heavy, tags=sorted(dag.tags), doc=bool(dag.doc_md),
                owners={{t.owner for t in tasks.values()}}, retries={{k: t.retries for k, t in tasks.items()}},
                tasks=sorted(tasks), upstream={{k: sorted(t.upstream_task_ids) for k, t in tasks.items()}})))
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO)
    found = eval(result.stdout.strip().splitlines()[-1])  # our own repr, printed just above
    assert found["elapsed"] < 1.0
    assert found["calls"] == [] and found["heavy"] == []
    assert found["tags"] == ["contacts-report", "nightly", "reports"] and found["doc"]
    assert found["owners"] == {"contacts-report"}
    assert found["tasks"] == ["archive", "build_indexes", "check_landing", "finish_ingest", "ingest",
                              "plan_render_batches", "plan_shards", "publish", "quality_gate", "render",
                              "run_summary", "send_emails"]
    for network_task in ("check_landing", "ingest", "finish_ingest", "quality_gate", "render", "publish", "archive",
                         "send_emails", "run_summary"):
        assert found["retries"][network_task] >= 3
    # The archive reads the warehouse only: it starts after the gate, beside the render; the e-mails wait for the
    # published pages (their links) and not for the archive; the summary waits for everything.
    assert found["upstream"]["ingest"] == ["plan_shards"] and found["upstream"]["finish_ingest"] == ["ingest"]
    assert found["upstream"]["quality_gate"] == ["finish_ingest"]
    assert found["upstream"]["archive"] == ["quality_gate"]
    assert found["upstream"]["send_emails"] == ["publish"] and found["upstream"]["publish"] == ["build_indexes"]
    assert found["upstream"]["run_summary"] == ["archive", "build_indexes", "check_landing", "publish",
                                                "send_emails"]


@pytest.mark.parametrize(
    ("logical_date", "run_after", "expected"),
    [
        (datetime(2026, 3, 11, tzinfo=UTC), datetime(2026, 3, 12, 0, 5, tzinfo=UTC), date(2026, 3, 11)),  # scheduled
        (datetime(2026, 3, 11, tzinfo=UTC), datetime(2026, 3, 11, tzinfo=UTC), date(2026, 3, 11)),  # dags test
        (datetime(2026, 3, 11, 9, 30, tzinfo=UTC), datetime(2026, 3, 20, tzinfo=UTC), date(2026, 3, 11)),  # trigger
        (None, datetime(2026, 3, 12, 3, 0, tzinfo=UTC), date(2026, 3, 11)),  # manual run, evening of the 11th in LA
    ],
)
@pytest.mark.parametrize("machine_zone", ["UTC", "Pacific/Kiritimati", "America/Los_Angeles"])
def test_every_kind_of_run_agrees_on_its_night(logical_date: datetime | None, run_after: datetime,
                                              expected: date, machine_zone: str, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    """Whatever the worker's own time zone (+14 h, −8 h), and whatever zone Airflow hands the dates in."""
    import time

    monkeypatch.setenv("TZ", machine_zone)
    time.tzset()
    try:
        for given in {logical_date, logical_date and logical_date.astimezone(timezone(timedelta(hours=-11)))}:
            night = night_of(given, run_after.astimezone(timezone(timedelta(hours=13))))
            assert night == expected
            assert end_of_night(night) == datetime(2026, 3, 12, tzinfo=UTC)
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.fixture
def nightly_data(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    generate(LocalStorage(data / "landing"), GenerateOptions(start=date(2026, 2, 25), days=15, workspaces=4,
                                                             events_per_day=200, seed=21))
    backfill(Settings(landing=str(data / "landing"), warehouse=str(data / "warehouse")), until=date(2026, 3, 11))
    (data / "recipients.json").write_text(json.dumps({"1": ["ana@example.com", "luis@example.com"],
                                                      "3": ["<b>x</b>@example.com"]}))
    return data


def publishing_env(airflow_home: Path, moto_server: str, smtp_port: int, data: Path, **settings: str
                   ) -> tuple[Any, dict[str, str]]:
    """A fresh bucket to publish to, and the DAG's environment pointing at it and at the recipients file."""
    client = s3_client()
    client.create_bucket(Bucket=BUCKET)
    env = dag_env(airflow_home, moto_server, smtp_port, data, CONTACTS_REPORT_S3_URI=f"s3://{BUCKET}/site",
                  CONTACTS_REPORT_RECIPIENTS=str(data / "recipients.json"), **settings)
    return client, env


def test_nightly_run_publishes_pages_and_mails_links_that_work(airflow_home: Path, moto_server: str,
                                                               smtp_server: tuple[int, object], nightly_data: Path
                                                               ) -> None:
    port, inbox = smtp_server
    client, env = publishing_env(airflow_home, moto_server, port, nightly_data, CONTACTS_REPORT_RENDER_BATCH_SIZE="2")
    result = run_dag(env, NIGHT)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    warehouse_run = json.loads((nightly_data / "warehouse/_runs/ingest_date=2026-03-11.json").read_text())
    assert warehouse_run["ingest_date"] == NIGHT  # the night processed arrival day 2026-03-11
    out = nightly_data / "out"
    local = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    objects = {o["Key"].removeprefix("site/"): o for p in client.get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET) for o in p.get("Contents", [])}
    pages = [k for k in local if re.fullmatch(r"\d+/\d{4}-\d{2}-\d{2}/\w+\.html", k)]  # archive/… excluded
    view = read_view(LocalStorage(nightly_data / "warehouse"))
    days = report_days(view, view.workspaces, None, end_of_night(date.fromisoformat(NIGHT)))
    late = late_pages({int(w): [date.fromisoformat(d) for d in ds]
                       for w, ds in warehouse_run["late_days_by_workspace"].items()}, days, view.first_day, 1)
    assert late and sorted(pages) == sorted(  # the night's report days, and what late events changed before
        [f"{w}/{d}/{n}.html" for w, d in days.items() for n in WINDOW_NAMES]
        + [f"{w}/{d}/{n}.html" for (d, names), ws in late.items() for w in ws for n in names])
    for key in [*pages, "index.html", "1/index.html", "_runs/index.html"]:
        assert key in objects, key
        head = client.head_object(Bucket=BUCKET, Key=f"site/{key}")
        assert head["ContentType"] == "text/html; charset=utf-8"
        assert head["ServerSideEncryption"] == "AES256"
        assert ("max-age=300" in head["CacheControl"]) == key.endswith("index.html")
        assert head["ContentEncoding"] == "gzip"
        if key != "_runs/index.html":
            assert published(client, BUCKET, f"site/{key}") == local[key], key
    csv_head = client.head_object(Bucket=BUCKET, Key=f"site/{next(k for k in objects if k.endswith('.csv'))}")
    assert csv_head["ContentType"] == "text/csv; charset=utf-8"
    acl = client.get_object_acl(Bucket=BUCKET, Key="site/index.html")
    assert all(g["Grantee"].get("URI") is None for g in acl["Grants"])  # no AllUsers / AuthenticatedUsers grant

    # The night's log snapshots are archived locally and mirrored to S3, and both verify.
    from etl.archive import verify
    from etl.storage import S3Storage

    assert any(k.startswith("archive/1/") and k.endswith("rev-1/manifest.json") for k in objects)
    assert verify(LocalStorage(nightly_data / "out/archive"))[0] == []
    assert verify(S3Storage(BUCKET, "site/archive", client))[0] == []

    # Indexes link only to objects that exist.
    for index in ("index.html", "1/index.html"):
        html = local[index].decode()
        folder = index.rsplit("/", 1)[0] + "/" if "/" in index else ""
        for href in re.findall(r'href="([^"#]+)"', html):
            target = str(Path(folder + href)).replace("\\", "/")
            target = re.sub(r"[^/]+/\.\./", "", target)
            assert target in objects, (index, href)

    # One e-mail per recipient, whose presigned links really download the pages; a refused address (workspace 3's
    # is not a valid mailbox) is counted as failed and does not stop the others.
    recipients = sorted(r for r, _ in inbox.messages)  # type: ignore[attr-defined]
    assert recipients == ["ana@example.com", "luis@example.com"]
    [ops_record] = json.loads(local["_runs/runs.json"])
    assert (ops_record["sent"], ops_record["failed"], ops_record["pages"]) == (2, 1, 28)
    # How it ran, for the ops page: the run's kind and link, each task's seconds as the tasks recorded them.
    assert ops_record["run_type"] == "manual" and "/dags/contacts_report_nightly/runs/" in ops_record["airflow_run_url"]
    assert {"check_landing", "ingest", "render", "publish", "send_emails"} <= set(ops_record["task_seconds"])
    message = email.message_from_bytes(dict(inbox.messages)["ana@example.com"])  # type: ignore[attr-defined]
    text = next(p for p in message.walk() if p.get_content_type() == "text/plain").get_payload(decode=True).decode()
    html_part = next(p for p in message.walk() if p.get_content_type() == "text/html").get_payload(decode=True)
    assert b"<script" not in html_part
    links = re.findall(r"(http://\S+)", text)
    assert len(links) == 8 and all("X-Amz-Expires=604800" in u for u in links)
    assert "7 days" in text
    assert all("/_share/night%3D" in u for u in links)  # shared copies, whose own links are signed (etl.share)
    with urllib.request.urlopen(links[0]) as response:  # urllib does not undo Content-Encoding: gzip, browsers do
        assert response.headers["Content-Encoding"] == "gzip"
        shared = gzip.decompress(response.read()).decode()
    original = local[f"1/{warehouse_run and _report_day(local, 1)}/today.html"].decode()
    assert re.sub(r' href="[^"]*"', "", shared) == re.sub(r' href="[^"]*"', "", original)  # only the links differ

    # No secret in logs, pages, summaries, the warehouse or e-mails.
    assert SECRET not in result.stdout + result.stderr
    for root in (nightly_data / "out", nightly_data / "warehouse"):
        assert not [p for p in root.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert not [raw for _, raw in inbox.messages if SECRET.encode() in raw]  # type: ignore[attr-defined]

    # A second run of the same night converges: same objects, same bytes, no second e-mail.
    before = {k: o["ETag"] for k, o in objects.items() if not k.startswith(("_runs/", "_published/runs"))}
    again = run_dag(env, NIGHT)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    after = {o["Key"].removeprefix("site/"): o["ETag"] for p in client.get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET) for o in p.get("Contents", [])
        if not o["Key"].startswith(("site/_runs/", "site/_published/runs"))}
    assert after == before
    assert len(inbox.messages) == 2  # type: ignore[attr-defined]


def _report_day(local: dict[str, bytes], workspace: int) -> str:
    [day] = {k.split("/")[1] for k in local if k.startswith(f"{workspace}/20")}
    return day


def test_missing_partition_fails_the_run_before_anything_is_published(airflow_home: Path, moto_server: str,
                                                                      smtp_server: tuple[int, object],
                                                                      nightly_data: Path) -> None:
    port, inbox = smtp_server
    client, env = publishing_env(airflow_home, moto_server, port, nightly_data,
                                 CONTACTS_REPORT_LANDING_WAIT_SECONDS="0")
    result = run_dag(env, "2026-04-20")  # no arrival partition for that night
    assert result.returncode == 1
    assert "no landing files yet for ingest_date=2026-04-20" in result.stdout + result.stderr
    assert client.list_objects_v2(Bucket=BUCKET).get("KeyCount", 0) == 0
    assert inbox.messages == []  # type: ignore[attr-defined]


def test_an_unusable_workspaces_file_fails_the_ingest_at_once(airflow_home: Path, moto_server: str,
                                                              smtp_server: tuple[int, object],
                                                              nightly_data: Path) -> None:
    """Bad input does not improve on retry: the task fails on its first try (storage errors are retried)."""
    port, inbox = smtp_server
    (nightly_data / "landing/workspaces.json").write_text('{"not": "a list"}')
    client, env = publishing_env(airflow_home, moto_server, port, nightly_data,
                                 CONTACTS_REPORT_OPS_EMAIL="ops@example.com")
    result = run_dag(env, NIGHT)
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "workspaces.json" in output and "up_for_retry" not in output.lower()
    assert client.list_objects_v2(Bucket=BUCKET).get("KeyCount", 0) == 0
    [(_, raw)] = inbox.messages  # type: ignore[attr-defined]
    assert email.message_from_bytes(raw, policy=email.policy.default)["Subject"] == (
        f"[contacts-report] ingest failed for night {NIGHT}")


def test_a_night_failing_the_quality_gate_publishes_nothing_and_alerts_ops(airflow_home: Path, moto_server: str,
                                                                           smtp_server: tuple[int, object],
                                                                           nightly_data: Path) -> None:
    port, inbox = smtp_server
    broken = nightly_data / f"landing/events/ingest_date={NIGHT}/hour=05/part-broken.ndjson"
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.write_text("".join(f'{{"event_id": "x{i}", "broken": true\n' for i in range(400)))
    client, env = publishing_env(airflow_home, moto_server, port, nightly_data,
                                 CONTACTS_REPORT_OPS_EMAIL="ops@example.com")
    result = run_dag(env, NIGHT)
    assert result.returncode == 1
    assert f"night {NIGHT} failed the data-quality gate" in result.stdout + result.stderr
    listed = client.list_objects_v2(Bucket=BUCKET).get("Contents", [])
    assert sorted(o["Key"] for o in listed) == [  # the ops page only (and its publishing ledger)
        "site/_published/runs.json", "site/_runs/index.html", "site/_runs/runs.json"]
    assert "quality gate failed" in published(client, BUCKET, "site/_runs/index.html").decode()
    [(recipient, raw)] = inbox.messages  # type: ignore[attr-defined]
    alert = email.message_from_bytes(raw, policy=email.policy.default)
    assert recipient == "ops@example.com"
    assert alert["Subject"] == f"[contacts-report] quality_gate failed for night {NIGHT}"
    body = alert.get_body(("html",)).get_content()
    assert "Error: <code>" in body and "<td>lines_read</td>" in body  # its last line, the counts so far


def test_a_night_ingested_in_two_mapped_shards_reports_what_one_process_reports(
        airflow_home: Path, moto_server: str, smtp_server: tuple[int, object], nightly_data: Path,
        tmp_path: Path) -> None:
    import shutil

    from etl.nightly import ingest
    from etl.render import RenderJob
    from etl.render_jobs import render

    whole = tmp_path / "whole"  # the same night in one process, for comparison
    shutil.copytree(nightly_data / "warehouse", whole)
    ingest(Settings(landing=str(nightly_data / "landing"), warehouse=str(whole)), date.fromisoformat(NIGHT))
    port, _ = smtp_server
    _, env = publishing_env(airflow_home, moto_server, port, nightly_data, CONTACTS_REPORT_INGEST_SHARDS="2")
    result = run_dag(env, NIGHT)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    shards = nightly_data / f"warehouse/_runs/shards/ingest_date={NIGHT}"
    assert sorted(p.name for p in shards.glob("*.json")) == ["shard-0-of-2.json", "shard-1-of-2.json"]  # both ran

    summary = json.loads((nightly_data / f"warehouse/_runs/ingest_date={NIGHT}.json").read_text())
    reference = json.loads((whole / f"_runs/ingest_date={NIGHT}.json").read_text())
    assert summary["shards"] == 2
    for count in ("lines_read", "events_valid", "events_quarantined", "duplicates_dropped", "late_events",
                  "events_by_workspace", "days_touched"):
        assert summary[count] == reference[count], count
    assert sorted(p.name for p in (nightly_data / "warehouse/ids").glob(f"ingest_date={NIGHT}*")) == [
        f"ingest_date={NIGHT}-shard-0-of-2.parquet", f"ingest_date={NIGHT}-shard-1-of-2.parquet"]
    out = nightly_data / "out"
    cutoff = end_of_night(date.fromisoformat(NIGHT))
    render(RenderJob(str(whole), str(tmp_path / "pages"), (1, 2, 3, 4), None, cutoff, WINDOW_NAMES, ()))
    for page in sorted((tmp_path / "pages").glob("*/*/*.html")):
        assert page.read_bytes() == (out / page.relative_to(tmp_path / "pages")).read_bytes(), page


def test_with_openlineage_on_each_task_reports_its_assets_as_inputs_and_outputs(
        airflow_home: Path, moto_server: str, smtp_server: tuple[int, Any], nightly_data: Path, tmp_path: Path
) -> None:
    """Off by default (no transport: the other DAG tests write no lineage); with the file transport configured,
    each task's run events carry the assets it reads and produces."""
    lineage = tmp_path / "lineage.jsonl"
    env = dag_env(airflow_home, moto_server, smtp_server[0], nightly_data, AIRFLOW__OPENLINEAGE__TRANSPORT=json.dumps(
        {"type": "file", "log_file_path": str(lineage), "append": True}))
    result = run_dag(env, NIGHT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    events = [json.loads(line) for line in lineage.read_text().splitlines() if line.strip()]
    done = {e["job"]["name"].rsplit(".", 1)[-1]: e for e in events if e["eventType"] == "COMPLETE"}

    def names(event: dict[str, Any], side: str) -> list[str]:
        return sorted(f"{d['namespace']}{d['name']}" for d in event.get(side, []))

    warehouse, landing = (f"file{(nightly_data / name).resolve()}" for name in ("warehouse", "landing"))
    out = f"file{(nightly_data / 'out').resolve()}"
    assert (names(done["finish_ingest"], "inputs"), names(done["finish_ingest"], "outputs")) == ([landing],
                                                                                                [warehouse])
    assert (names(done["build_indexes"], "inputs"), names(done["build_indexes"], "outputs")) == ([warehouse], [out])
    assert names(done["archive"], "outputs") == [f"{out}/archive"]
    assert {"START", "COMPLETE"} <= {e["eventType"] for e in events}
