"""The rest of the night, measured (`make bench` calls `measure`; `python bench/night.py --size 1M` runs it alone on
the data the main bench left behind): the night's render (its pages and the late pages, as the nightly renders them:
by its cutoff), publish, archive and e-mail after the nightly ETL,
against a loopback S3 answering every request 20 ms late (moto's server behind the fault proxy of the tests) and a
loopback SMTP server, and in the same run the **publish floor**: a plain concurrent boto3 upload of the same files (a
thread pool at the same concurrency, no checks, no compression) through the same proxy. The night starts where the
night before left the output and the bucket (`measure`)."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from run import PY, RENDER, ROOT, Measure, child

from etl import manifests
from etl.settings import DEFAULT_LATE_PAGES_DAYS
from etl.storage import LocalStorage
from etl.windows import end_of_night
from tests.faults.proxy import FaultProxy

LATENCY = 0.020  # seconds added to every S3 request: a real S3 answers a small PUT in 20-50 ms
CONCURRENCY = 16
BUCKET = "night"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}

PUBLISH = """
import json
from etl import manifests
from etl.publish import S3Target, upload
from etl.storage import LocalStorage, s3_client
out = LocalStorage({out!r})
keys = manifests.rendered(out, {tag!r})
summary = upload(s3_client(), S3Target({bucket!r}, {prefix!r}), out, keys, concurrency={concurrency})
open({result!r}, "w").write(json.dumps({{**summary, "objects": len(keys),
                                        "plain_bytes": sum(out.size(k) for k in keys)}}))
"""

FLOOR = """
from concurrent.futures import ThreadPoolExecutor
from etl import manifests
from etl.storage import s3_client
from etl.storage import LocalStorage
out = LocalStorage({out!r})
keys = manifests.rendered(out, {tag!r})
client = s3_client()
def put(key):
    client.put_object(Bucket={bucket!r}, Key={prefix!r} + "/" + key, Body=out.read_bytes(key))
with ThreadPoolExecutor({concurrency}) as pool:
    list(pool.map(put, keys))
"""

NIGHT_RENDER = """
import json
from datetime import datetime
from etl.render import RenderJob
from etl.render_jobs import render
from etl.settings import DEFAULT_LATE_PAGES_DAYS
from etl.windows import WINDOW_NAMES
if __name__ == "__main__":  # the workers are spawned and re-import this module
    job = RenderJob({warehouse!r}, {out!r}, tuple(range(1, {workspaces} + 1)), None,
                    datetime.fromisoformat({cutoff!r}), WINDOW_NAMES, ())
    totals = render(job, workers=2, late_pages_days=DEFAULT_LATE_PAGES_DAYS)
    open({result!r}, "w").write(json.dumps(totals))
"""

ARCHIVE = """
import json
from datetime import date, timedelta
from etl import nightly
from etl.settings import Settings
from etl.storage import s3_client
settings = Settings(warehouse={warehouse!r}, archive={archive!r}, s3_uri="s3://{bucket}/site")
night = date.fromisoformat({day!r}) + timedelta(days=1)
open({result!r}, "w").write(json.dumps(nightly.archive_night(settings, night, s3_client())))
"""

EMAIL = """
import json
from datetime import date, timedelta
from etl import nightly
from etl.mail import SmtpConfig
from etl.settings import Settings
from etl.storage import s3_client
settings = Settings(warehouse={warehouse!r}, out={out!r}, s3_uri="s3://{bucket}/site", recipients_file={recipients!r})
night = date.fromisoformat({day!r}) + timedelta(days=1)
open({result!r}, "w").write(json.dumps(nightly.email(settings, night, s3_client(),
                                                      lambda: SmtpConfig("127.0.0.1", {smtp_port}))))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SlowS3:
    """The loopback S3 of the night: its URL, the requests it served so far, and the CPU time its servers have used
    so far (moto's S3 server, and this process: the proxy and the SMTP server), which real servers would not take
    from the night's two cores."""

    url: str
    server_pid: int
    proxy: FaultProxy

    def moto_cpu_seconds(self) -> float:
        """moto's server alone: one Python process, so at most one core (its GIL) whatever the requests in flight."""
        fields = Path(f"/proc/{self.server_pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def cpu_seconds(self) -> float:
        return self.moto_cpu_seconds() + time.process_time()

    def requests(self) -> Counter[str]:
        """Requests served so far, by HTTP method."""
        return Counter(method for method, _, _ in list(self.proxy.seen))


@contextmanager
def slow_s3() -> Iterator[SlowS3]:
    """moto's S3 server in a process of its own, behind the fault proxy adding LATENCY to every request."""
    port = free_port()
    server = subprocess.Popen([PY, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/data.json").close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("moto's S3 server did not start") from None
                time.sleep(0.2)
        proxy = FaultProxy(f"http://127.0.0.1:{port}").start()
        for method in ("GET", "PUT", "POST", "HEAD", "DELETE"):
            proxy.add(method, "/", "delay", times=10**12, delay=LATENCY)
        try:
            yield SlowS3(proxy.url, server.pid, proxy)
        finally:
            proxy.stop()
    finally:
        server.terminate()
        server.wait()


@contextmanager
def smtp_server() -> Iterator[int]:
    from aiosmtpd.controller import Controller

    class Sink:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            return "250 OK"

    port = free_port()
    controller = Controller(Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


@dataclass
class Night:
    """The night's phases after the ETL and the render, and what publishing stored."""

    render: Measure  # rows: pages, the late pages included
    late_pages: int
    publish: Measure
    floor: Measure
    archive: Measure
    email: Measure
    s3_cpu: dict[str, float]  # phase -> CPU seconds the loopback servers spent serving it
    moto_cpu: dict[str, float]  # phase -> of those, moto's server's (one process: one core at most)
    s3_requests: dict[str, Counter[str]]  # phase -> requests it sent, by HTTP method
    published: dict[str, object]
    stored_bytes: int  # what the bucket holds for the night's files: uploaded tonight or unchanged since
    snapshots: int
    mirrored: int  # snapshot objects copied to S3
    sent: int


def measure(warehouse: Path, before: Path, out: Path, day: str, scratch: Path, workspaces: int) -> Night:
    """Render the night as the nightly does (by the cutoff of arrival day `day` + 1, which reports `day`: its pages
    and, from the same rows, the past pages its late events changed), publish what it wrote under `out`, the floor,
    the archive snapshots and one e-mail per workspace. `warehouse` holds the nights up to `day` + 1, `before` the
    nights up to `day`. Like a real night, it starts from the night before's state (untimed): its report day
    (`day` - 1) rendered from `before` under `out` and published, so the late pages re-render pages that exist,
    and publish skips those whose bytes did not change."""
    import boto3

    scratch.mkdir(parents=True, exist_ok=True)
    recipients = scratch / "recipients.json"
    recipients.write_text(json.dumps({str(w): [f"owner{w}@example.com"] for w in range(1, workspaces + 1)}))
    before_day = str(date.fromisoformat(day) - timedelta(days=1))
    subprocess.run(["rm", "-rf", str(warehouse / "_mail")], check=True)  # a re-run of the bench e-mails again
    s3_cpu: dict[str, float] = {}
    moto_cpu: dict[str, float] = {}
    s3_requests: dict[str, Counter[str]] = {}
    with slow_s3() as s3, smtp_server() as smtp_port:
        endpoint = s3.url
        env = {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}

        def serving(name: str, code: str) -> Measure:
            """`child`, with the S3 requests it sends and the loopback servers' CPU time (and moto's) while it
            runs."""
            started, moto_started, sent = s3.cpu_seconds(), s3.moto_cpu_seconds(), s3.requests()
            measure_ = child(name, code, env=env)
            s3_cpu[name] = s3.cpu_seconds() - started
            moto_cpu[name] = s3.moto_cpu_seconds() - moto_started
            s3_requests[name] = s3.requests() - sent
            return measure_

        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id="bench", aws_secret_access_key="bench")
        client.create_bucket(Bucket=BUCKET)
        common = {"out": str(out), "bucket": BUCKET, "concurrency": CONCURRENCY}
        child("the night before: its render", RENDER.format(workspaces=workspaces, warehouse=str(before),
                                                             out=str(out), day=before_day, workers=2))
        child("the night before: its publish", PUBLISH.format(**common, tag=manifests.tag(None, date.fromisoformat(
            before_day)), prefix="site", result=str(scratch / "before.json")), env=env)
        cutoff = end_of_night(date.fromisoformat(day) + timedelta(days=1))
        tag = manifests.tag(cutoff, None)
        render = child(f"render, the night's: {workspaces:,} workspaces × 7 windows and the late pages "
                       f"({DEFAULT_LATE_PAGES_DAYS} past report day: the windows its late events changed), 2 workers",
                       NIGHT_RENDER.format(warehouse=str(warehouse), out=str(out), workspaces=workspaces,
                                           cutoff=cutoff.isoformat(), result=str(scratch / "rendered.json")))
        rendered = json.loads((scratch / "rendered.json").read_text())
        render.rows = int(rendered["pages"]) + int(rendered["late_pages"])
        floor = serving("publish floor: plain concurrent puts, same files",
                        FLOOR.format(**common, tag=tag, prefix="floor"))
        publish = serving("publish (compressed, ledgers, order)",
                          PUBLISH.format(**common, tag=tag, prefix="site", result=str(scratch / "published.json")))
        published = json.loads((scratch / "published.json").read_text())
        publish.rows = int(published["objects"])
        floor.rows = publish.rows
        sizes = {o["Key"]: o["Size"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET,
                                                                                                   Prefix="site/")
                 for o in page.get("Contents", [])}
        stored = sum(sizes[f"site/{key}"] for key in manifests.rendered(LocalStorage(out), tag))
        subprocess.run(["rm", "-rf", str(scratch / "archive")], check=True)
        archive = serving("archive (a snapshot per workspace, mirrored to S3 create-only)",
                          ARCHIVE.format(warehouse=str(warehouse), archive=str(scratch / "archive"), day=day,
                                         bucket=BUCKET, result=str(scratch / "archived.json")))
        archived = json.loads((scratch / "archived.json").read_text())
        snapshots, mirrored = int(archived["written"]), int(archived["mirrored"])
        mail = serving("e-mail (one per workspace, presigned links)",
                       EMAIL.format(warehouse=str(warehouse), out=str(out), bucket=BUCKET, recipients=str(recipients),
                                    day=day, result=str(scratch / "mailed.json"), smtp_port=smtp_port))
        sent = int(json.loads((scratch / "mailed.json").read_text())["sent"])
    return Night(render, int(rendered["late_pages"]), publish, floor, archive, mail, s3_cpu, moto_cpu, s3_requests,
                 published, stored, snapshots, mirrored, sent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="1M", choices=("1M", "10M"))
    args = parser.parse_args()
    folder = ROOT / "bench/data" / args.size / "scratch"
    days = sorted(p.name for p in (folder / "out-full/_rendered").iterdir() if p.name.startswith("report-day="))
    if not days or not (folder / "wh-before").is_dir():
        raise SystemExit(f"no render or no wh-before under {folder}: run `make bench` first")
    report_day = days[-1].split("=", 1)[1]
    night = measure(folder / "wh-history", folder / "wh-before", folder / "out-full", report_day, folder / "night",
                    1000)
    print(json.dumps({**night.published, "stored_bytes": night.stored_bytes,
                      "pages": night.render.rows, "late_pages": night.late_pages,
                      "render_s": round(night.render.seconds, 2), "publish_s": round(night.publish.seconds, 2),
                      "floor_s": round(night.floor.seconds, 2),
                      "archive_s": round(night.archive.seconds, 2), "email_s": round(night.email.seconds, 2),
                      "snapshots": night.snapshots, "mirrored": night.mirrored, "sent": night.sent,
                      "s3_cpu_s": {k: round(v, 1) for k, v in night.s3_cpu.items()},
                      "moto_cpu_s": {k: round(v, 1) for k, v in night.moto_cpu.items()},
                      "s3_requests": night.s3_requests}, indent=1))


if __name__ == "__main__":
    main()
