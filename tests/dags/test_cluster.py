"""A smaller night of `make demo-cluster`: PostgreSQL, CeleryExecutor with Redis, two workers that share nothing but
the loopback S3 and SMTP, the ingest in two shards, the run created with the CLI and executed by the scheduler.
Its pages equal a single-process run of the same night, byte for byte."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from etl.generate import GenerateOptions, default_start, generate
from etl.nightly import backfill, ingest
from etl.render import RenderJob
from etl.render_jobs import render
from etl.settings import Settings
from etl.storage import LocalStorage
from etl.windows import WINDOW_NAMES, end_of_night
from tests.dags.conftest import REPO

DAYS, WORKSPACES, EVENTS_PER_DAY = 8, 4, 1500  # a few malformed lines stay under the quality gate


def test_the_night_on_postgres_celery_and_two_workers_sharing_only_s3(tmp_path: Path) -> None:
    scratch, published = tmp_path / "cluster", tmp_path / "published"
    result = subprocess.run([sys.executable, str(REPO / "scripts/demo_cluster.py"), "--days", str(DAYS),
                             "--workspaces", str(WORKSPACES), "--events-per-day", str(EVENTS_PER_DAY),
                             "--scratch", str(scratch), "--download", str(published), "--timeout", "600"],
                            capture_output=True, text=True, check=False, timeout=1200, cwd=tmp_path)
    logs = "".join(f"\n--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(scratch.glob("*.log")))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:] + logs
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert (found["executor"], found["metadata_db"], found["dag_run_state"], found["shards"]) == (
        "CeleryExecutor", "postgresql", "success", 2)
    assert set(found["tasks_by_worker"]) == {"worker-a", "worker-b"}  # both workers ran tasks
    assert all(count > 0 for count in found["tasks_by_worker"].values())
    assert found["emails"] == 6 and found["pages"] >= WORKSPACES * 7 and found["objects"] > found["pages"]

    # Nothing but logs and Airflow's own configuration in a worker's scratch folder: no task left a file for another.
    for worker in ("worker-a", "worker-b"):
        left = [p.relative_to(scratch / worker).as_posix() for p in (scratch / worker).rglob("*") if p.is_file()]
        assert left and all(name.startswith("logs/") or name in ("airflow.cfg", "webserver_config.py")
                            for name in left), left

    # The same night in one process, from the same generated landing: the same pages.
    night = datetime.now(UTC).date() - timedelta(days=1)
    data = tmp_path / "one-process"
    generate(LocalStorage(data / "landing"), GenerateOptions(start=default_start(DAYS), days=DAYS,
                                                             workspaces=WORKSPACES, events_per_day=EVENTS_PER_DAY))
    settings = Settings(landing=str(data / "landing"), warehouse=str(data / "warehouse"))
    backfill(settings, until=night)
    ingest(settings, night)
    render(RenderJob(settings.warehouse, str(data / "out"), tuple(range(1, WORKSPACES + 1)), None,
                     end_of_night(night), WINDOW_NAMES, ()), late_pages_days=1)
    local = {p.relative_to(data / "out").as_posix(): p.read_bytes() for p in (data / "out").glob("*/*/*.html")}
    remote = {p.relative_to(published).as_posix(): p.read_bytes() for p in published.glob("*/*/*.html")}
    assert local.keys() == remote.keys() and len(local) == found["pages"]
    for key, page in local.items():
        assert remote[key] == page, key


pytestmark = pytest.mark.other_process
