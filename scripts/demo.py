"""`make demo`: the main job on its embedded defaults, on a machine with nothing running.

Generates ~60 days of events, starts a loopback S3 server (moto) and SMTP server (aiosmtpd, saving to
reports_out/_outbox/), backfills the warehouse, runs the real DAG for the latest night with `airflow dags test`,
prints where everything is, and stops the servers it started.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import socket
import subprocess
import sys
from contextlib import ExitStack, closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "contacts-reports"
log = logging.getLogger("demo")


def free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Outbox:
    """aiosmtpd handler: every accepted message becomes a .eml file, one per recipient."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        for rcpt in envelope.rcpt_tos:
            safe = re.sub(r"[^A-Za-z0-9@._-]", "_", rcpt)
            number = len(list(self.folder.glob("*.eml"))) + 1
            (self.folder / f"{number:04d}-{safe}.eml").write_bytes(envelope.original_content or envelope.content)
        return "250 Message accepted for delivery"


def start_s3(stack: ExitStack) -> str:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    stack.callback(server.stop)
    return f"http://127.0.0.1:{port}"


def start_smtp(stack: ExitStack, outbox: Path) -> int:
    from aiosmtpd.controller import Controller

    port = free_port()
    controller = Controller(Outbox(outbox), hostname="127.0.0.1", port=port)
    controller.start()
    stack.callback(controller.stop)
    return port


def airflow_env(endpoint: str, smtp_port: int, data: Path, out: Path) -> dict[str, str]:
    from etl.mail import SMTP_PLAIN

    aws = {"conn_type": "aws", "login": "demo", "password": "demo-secret",
           "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"}}
    smtp = {"conn_type": "smtp", "host": "127.0.0.1", "port": smtp_port, **SMTP_PLAIN}
    return {
        **os.environ,
        "AIRFLOW_HOME": str(ROOT / "airflow_home"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(aws),
        "AIRFLOW_CONN_SMTP_DEFAULT": json.dumps(smtp),
        "CONTACTS_REPORT_LANDING": str(data / "landing"),
        "CONTACTS_REPORT_WAREHOUSE": str(data / "warehouse"),
        "CONTACTS_REPORT_OUT": str(out),
        "CONTACTS_REPORT_S3_URI": f"s3://{BUCKET}/reports",
        "CONTACTS_REPORT_RECIPIENTS": str(data / "recipients.json"),
        "CONTACTS_REPORT_OPS_EMAIL": "ops@example.com",
        "AWS_ACCESS_KEY_ID": "demo",
        "AWS_SECRET_ACCESS_KEY": "demo-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "NO_PROGRESS": "1",
    }


def run(cmd: list[str], env: dict[str, str], log_file: Path) -> None:
    with log_file.open("ab") as sink:
        result = subprocess.run(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        sys.exit(f"{' '.join(cmd[:4])}… failed (exit {result.returncode}); see {log_file}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "data/demo", help="demo data folder")
    parser.add_argument("--out", type=Path, default=ROOT / "reports_out", help="rendered pages")
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--workspaces", type=int, default=36)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("werkzeug", "mail.log", "etl"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from etl.generate import GenerateOptions, default_start, generate
    from etl.nightly import backfill
    from etl.settings import Settings
    from etl.storage import LocalStorage

    data, out = args.data, args.out
    night = datetime.now(UTC).date() - timedelta(days=1)
    log.info("1/4 generating %d days of events for %d workspaces…", args.days, args.workspaces)
    generate(LocalStorage(data / "landing"), GenerateOptions(start=default_start(args.days), days=args.days,
                                                             workspaces=args.workspaces, events_per_day=3000))
    # English (1, 3), Spanish (2) and Brazilian Portuguese (4) workspaces; one recipient wants incoming messages only
    recipients: dict[str, list[object]] = {str(w): [f"team-{w}@example.com", f"lead-{w}@example.com"]
                                           for w in (1, 2, 3, 4)}
    recipients["1"].append({"to": "inbound-1@example.com", "filters": {"source": "incoming_message"}})
    (data / "recipients.json").write_text(json.dumps(recipients))
    log.info("2/4 backfilling the warehouse up to %s…", night)
    settings = Settings(landing=str(data / "landing"), warehouse=str(data / "warehouse"), out=str(out))
    backfill(settings, until=night)
    with ExitStack() as stack:
        endpoint = start_s3(stack)
        smtp_port = start_smtp(stack, out / "_outbox")
        env = airflow_env(endpoint, smtp_port, data, out)
        import boto3

        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="demo",
                     aws_secret_access_key="demo-secret").create_bucket(Bucket=BUCKET)
        log.info("3/4 preparing Airflow (SQLite in airflow_home/)…")
        airflow = str(Path(sys.executable).parent / "airflow")
        log_file = data / "airflow.log"
        run([airflow, "db", "migrate"], env, log_file)
        log.info("4/4 running the DAG for night %s with `airflow dags test` (log: %s)…", night, log_file)
        run([airflow, "dags", "test", "contacts_report_nightly", night.isoformat()], env, log_file)
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="demo",
                              aws_secret_access_key="demo-secret")
        objects = sum(p.get("KeyCount", 0) for p in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET))
    from etl.archive import verify

    problems, counts = verify(LocalStorage(out / "archive"))
    verdict = "verified" if not problems else f"FAILED verification ({len(problems)} problems)"
    runs = json.loads((out / "_runs/runs.json").read_text())
    latest = runs[0]
    print(f"""
Night {night}: {latest['lines_read']:,} lines read, {latest['events_valid']:,} valid, \
{latest['events_quarantined']} quarantined, {latest['duplicates_dropped']} duplicates, {latest['late_events']} late.
Rendered {latest.get('pages', 0):,} pages; published {objects:,} objects; e-mails sent: {latest.get('sent', 0)}.

  Local index page:  {(out / 'index.html').resolve().as_uri()}
  Ops page:          {(out / '_runs/index.html').resolve().as_uri()}
  S3 (stopped now):  s3://{BUCKET}/reports/index.html  (and s3://{BUCKET}/reports/<workspace>/<day>/<window>.html)
  Outbox:            {(out / '_outbox').resolve()}  (one .eml per recipient, chart inline: workspace 2 in
                     Spanish, 4 in Brazilian Portuguese, 1 and 3 in English; inbound-1@ filtered to incoming messages)
  Languages:         {(out / '2/index.html').resolve().as_uri()}  (es; 4: pt-BR, 5: es-MX)
  Filtered pages:    {(out / 'filtered').resolve()}
  Archive:           {(out / 'archive').resolve()}  ({counts['snapshots']} snapshots, {verdict};
                     re-check: .venv/bin/contacts-report archive verify --archive {out / 'archive'})
  Warehouse:         {data / 'warehouse'}

Open the Airflow UI on the same data: `make airflow` (airflow standalone on http://127.0.0.1:8080).""")


if __name__ == "__main__":
    main()
