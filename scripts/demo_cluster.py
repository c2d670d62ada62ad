"""`make demo-cluster`: the night of `make demo` on a production-shaped Airflow on this one machine.

PostgreSQL as the metadata database and Redis as the Celery broker (Debian's packages, started under a temporary
folder on loopback ports by scripts/pg-redis-local and stopped at the end), CeleryExecutor, and the scheduler,
dag-processor, API server and two Celery workers as separate processes. Each worker starts in an empty scratch
folder of its own, under a name of its own (the hostname Airflow records for its tasks): the workers share nothing
but the loopback S3 server (landing, warehouse, output, archive and the recipients file are s3:// URIs) and SMTP.
The run is created with the CLI (`airflow dags trigger`) and executed by the scheduler, with the ingest in
CONTACTS_REPORT_INGEST_SHARDS=2 shards. Prints one JSON line:

  {"executor": "CeleryExecutor", "metadata_db": "postgresql", "dag_run_state": "success",
   "tasks_by_worker": {...}, "shards": 2, "pages": N, "objects": N, "emails": N}

and exits 0 only when the run succeeded.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW = str(Path(sys.executable).parent / "airflow")
BUCKET = "contacts-cluster"
DAG_ID = "contacts_report_nightly"
WORKERS = ("worker-a", "worker-b")
KEY, SECRET = "cluster", "cluster-secret"
log = logging.getLogger("demo-cluster")
sys.path.insert(0, str(ROOT / "scripts"))

from demo import free_port  # noqa: E402 (the same loopback ports as make demo)


class Counter:
    """aiosmtpd handler counting the messages accepted."""

    def __init__(self) -> None:
        self.messages = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages += 1
        return "250 OK"


def start_services(stack: ExitStack, scratch: Path) -> tuple[str, str]:
    """PostgreSQL and Redis on loopback ports: (SQLAlchemy URL, broker URL)."""
    script = ROOT / "scripts/pg-redis-local"
    folder = scratch / "services"
    started = subprocess.run([str(script), "start", str(folder), str(free_port()), str(free_port())],
                             capture_output=True, text=True, check=False, timeout=600)
    stack.callback(subprocess.run, [str(script), "stop", str(folder)], check=False, timeout=120)
    ready = [line for line in started.stdout.splitlines() if line.startswith("SERVICES_READY")]
    if not ready:
        sys.exit(f"PostgreSQL and Redis did not start (exit {started.returncode}):\n{started.stdout[-2000:]}"
                 f"\n{started.stderr[-2000:]}\nlogs: {folder}")
    _, database, broker = ready[0].split()
    return database, broker


def airflow_env(home: Path, database: str, broker: str, api_port: int, s3: str, smtp_port: int,
                shards: int) -> dict[str, str]:
    """What every Airflow process gets: the same database, broker, API and secrets; the night's settings."""
    from etl.mail import SMTP_PLAIN

    aws = {"conn_type": "aws", "login": KEY, "password": SECRET,
           "extra": {"endpoint_url": s3, "region_name": "us-east-1"}}
    stores = {name: f"s3://{BUCKET}/{name}" for name in ("landing", "warehouse", "out", "archive")}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AIRFLOW", "CONTACTS_REPORT_"))}
    return {
        **env,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database,
        "AIRFLOW__CELERY__BROKER_URL": broker,
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + database.replace("+psycopg2", ""),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API_AUTH__JWT_SECRET": "demo-cluster-jwt-secret-0123456789",
        "AIRFLOW__API__SECRET_KEY": "demo-cluster-secret-key",
        "AIRFLOW__CORE__FERNET_KEY": "",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "etl.settings.worker_hostname",
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(aws),
        "AIRFLOW_CONN_SMTP_DEFAULT": json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": smtp_port,
                                                 **SMTP_PLAIN}),
        **{f"CONTACTS_REPORT_{name.upper()}": uri for name, uri in stores.items()},
        "CONTACTS_REPORT_S3_URI": f"s3://{BUCKET}/site",
        "CONTACTS_REPORT_RECIPIENTS": f"s3://{BUCKET}/config/recipients.json",
        "CONTACTS_REPORT_INGEST_SHARDS": str(shards),
        "CONTACTS_REPORT_LANDING_WAIT_SECONDS": "0",
        "NO_PROGRESS": "1",
    }


def spawn(stack: ExitStack, args: list[str], env: dict[str, str], cwd: Path, log_file: Path) -> subprocess.Popen[bytes]:
    sink = log_file.open("ab")
    stack.callback(sink.close)
    process = subprocess.Popen(args, env=env, cwd=cwd, stdout=sink, stderr=subprocess.STDOUT,
                               start_new_session=True)

    def stop() -> None:
        if process.poll() is None:
            os.killpg(process.pid, 15)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait()
    stack.callback(stop)
    return process


def airflow(args: list[str], env: dict[str, str], cwd: Path) -> str:
    result = subprocess.run([AIRFLOW, *args], env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"airflow {' '.join(args)} failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return result.stdout


def wait_for(what: str, check: Any, timeout: float, processes: list[subprocess.Popen[bytes]]) -> Any:
    """Poll `check()` until it returns something truthy; a component that died ends the wait at once."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        dead = [p.args for p in processes if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting for {what}" + (f": {dead} exited" if dead else ""))
        time.sleep(1)


def prepare_data(s3: str, scratch: Path, days: int, workspaces: int, events_per_day: int) -> Any:
    """The demo's landing in the bucket, the warehouse backfilled up to the night before: the night."""
    import boto3

    from etl.generate import GenerateOptions, default_start, generate
    from etl.nightly import backfill
    from etl.settings import S3Identity, Settings

    client = boto3.client("s3", endpoint_url=s3, aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                          region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    night = datetime.now(UTC).date() - timedelta(days=1)
    landing = scratch / "landing"
    generate_options = GenerateOptions(start=default_start(days), days=days, workspaces=workspaces,
                                       events_per_day=events_per_day)
    from etl.storage import LocalStorage

    generate(LocalStorage(landing), generate_options)
    for path in sorted(p for p in landing.rglob("*") if p.is_file()):
        client.put_object(Bucket=BUCKET, Key=f"landing/{path.relative_to(landing).as_posix()}", Body=path.read_bytes())
    recipients = {str(w): [f"team-{w}@example.com", f"lead-{w}@example.com"] for w in (1, 2, 3)}
    client.put_object(Bucket=BUCKET, Key="config/recipients.json", Body=json.dumps(recipients).encode())
    identity = S3Identity(KEY, SECRET, None, "us-east-1", s3)
    backfill(Settings(landing=f"s3://{BUCKET}/landing", warehouse=f"s3://{BUCKET}/warehouse", s3_identity=identity),
             until=night)
    return night, client


def run_state(database: str, run_id: str) -> str | None:
    import psycopg2

    with closing(psycopg2.connect(database.replace("+psycopg2", ""))) as db, db.cursor() as cursor:
        cursor.execute("SELECT state FROM dag_run WHERE dag_id = %s AND run_id = %s", (DAG_ID, run_id))
        row = cursor.fetchone()
    return str(row[0]) if row else None


def tasks_by_worker(database: str, run_id: str) -> dict[str, int]:
    import psycopg2

    with closing(psycopg2.connect(database.replace("+psycopg2", ""))) as db, db.cursor() as cursor:
        cursor.execute("SELECT hostname, count(*) FROM task_instance WHERE dag_id = %s AND run_id = %s "
                       "AND state = 'success' GROUP BY hostname ORDER BY hostname", (DAG_ID, run_id))
        return {str(host): int(count) for host, count in cursor.fetchall()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--workspaces", type=int, default=36)
    parser.add_argument("--events-per-day", type=int, default=3000)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--scratch", type=Path, help="keep everything here (default: a temporary folder, removed)")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds to wait for the run")
    parser.add_argument("--download", type=Path, help="copy the published pages here (decompressed) before stopping")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("werkzeug", "mail.log", "etl", "botocore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    with ExitStack() as stack:
        scratch = args.scratch or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="demo-cluster-")))
        scratch.mkdir(parents=True, exist_ok=True)
        from aiosmtpd.controller import Controller
        from moto.server import ThreadedMotoServer

        s3_port = free_port()
        s3_server = ThreadedMotoServer(ip_address="127.0.0.1", port=s3_port, verbose=False)
        s3_server.start()
        stack.callback(s3_server.stop)
        s3 = f"http://127.0.0.1:{s3_port}"
        inbox, smtp_port = Counter(), free_port()
        smtp = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
        smtp.start()
        stack.callback(smtp.stop)

        log.info("1/5 PostgreSQL and Redis on loopback (scripts/pg-redis-local)…")
        database, broker = start_services(stack, scratch)
        log.info("2/5 the landing in s3://%s, the warehouse backfilled…", BUCKET)
        night, client = prepare_data(s3, scratch, args.days, args.workspaces, args.events_per_day)
        api_port = free_port()
        control = scratch / "control"
        control.mkdir(exist_ok=True)
        env = airflow_env(control, database, broker, api_port, s3, smtp_port, args.shards)
        log.info("3/5 Airflow on PostgreSQL: migrating, then the API server, scheduler, dag-processor and two "
                 "Celery workers (logs in %s)…", scratch)
        airflow(["db", "migrate"], env, control)
        processes = [spawn(stack, [AIRFLOW, *command], env, control, scratch / f"{name}.log") for name, command in (
            ("api-server", ["api-server"]), ("scheduler", ["scheduler"]), ("dag-processor", ["dag-processor"]))]
        for name in WORKERS:
            home = scratch / name  # empty: the worker's own AIRFLOW_HOME and working directory
            home.mkdir()
            worker_env = {**env, "AIRFLOW_HOME": str(home), "CONTACTS_REPORT_WORKER_NAME": name,
                          "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())}
            processes.append(spawn(stack, [AIRFLOW, "celery", "worker", "--concurrency", "2", "--celery-hostname",
                                           f"{name}@cluster"], worker_env, home, scratch / f"{name}.log"))
        wait_for("the DAG to be parsed", lambda: DAG_ID in airflow(["dags", "list", "-o", "plain"], env, control),
                 180, processes)
        run_id = f"demo-cluster__{night.isoformat()}"
        log.info("4/5 triggering night %s (run %s) and waiting for the scheduler to run it…", night, run_id)
        airflow(["dags", "trigger", DAG_ID, "--run-id", run_id, "--logical-date",
                 f"{night.isoformat()}T00:00:00+00:00"], env, control)
        airflow(["dags", "unpause", DAG_ID], env, control)
        state = wait_for("the run to end", lambda: (s := run_state(database, run_id)) in ("success", "failed") and s,
                         args.timeout, processes)
        workers = tasks_by_worker(database, run_id)
        keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="site/")
                for o in page.get("Contents", [])]
        pages = [k for k in keys if re.fullmatch(r"site/\d+/\d{4}-\d{2}-\d{2}/\w+\.html", k)]
        if args.download:
            for key in pages:
                target = args.download / key.removeprefix("site/")
                target.parent.mkdir(parents=True, exist_ok=True)
                answer = client.get_object(Bucket=BUCKET, Key=key)
                body = answer["Body"].read()
                target.write_bytes(gzip.decompress(body) if answer.get("ContentEncoding") == "gzip" else body)
        log.info("5/5 done: the run ended %s; stopping everything", state)
        result = {"executor": "CeleryExecutor", "metadata_db": "postgresql", "dag_run_state": state,
                  "tasks_by_worker": workers, "shards": args.shards, "pages": len(pages), "objects": len(keys),
                  "emails": inbox.messages}
    print(json.dumps(result), flush=True)
    return 0 if state == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
