"""A worker killed with SIGKILL in the middle of each step: re-running converges to one clean run's state."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import boto3
import pytest

from etl.archive import verify
from etl.generate import GenerateOptions, generate
from etl.publish import S3Target, upload
from etl.storage import LocalStorage, client_config
from tests.helpers import published

CLI = [sys.executable, "-m", "etl.cli"]
# The last arrival day is 2026-03-10; its local day 2026-03-09 had ended everywhere when it ended (archives take
# only finished days).
ARCHIVED_DAY = "2026-03-09"


def kill_when(cmd: list[str], ready: Callable[[], bool], env: dict[str, str] | None = None) -> None:
    """Start `cmd`, SIGKILL it as soon as `ready()` holds (polled), and check it really died mid-way."""
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 120
    while not ready():
        assert process.poll() is None, "the step finished before it could be interrupted; give it more work"
        assert time.monotonic() < deadline, "the step never reached the point to interrupt"
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL


def state(root: Path) -> dict[str, str]:
    """What a reader sees: every visible file and its digest (temporary files are never listed), but the run
    summaries (they carry their durations)."""
    storage = LocalStorage(root)
    return {k: hashlib.sha256(storage.read_bytes(k)).hexdigest() for k in storage.list()
            if not k.startswith("_runs/ingest_date=") and not k.endswith("HEAD.json")}


@pytest.fixture(scope="module")
def landing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kill") / "landing"
    generate(LocalStorage(root), GenerateOptions(start=date(2026, 2, 8), days=31, workspaces=8, events_per_day=600,
                                                 seed=9))
    return root


@pytest.fixture(scope="module")
def clean(landing: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clean")
    subprocess.run([*CLI, "etl", "--landing", str(landing), "--warehouse", str(root / "wh"), "--all"], check=True,
                   capture_output=True)
    subprocess.run([*CLI, "render", "--warehouse", str(root / "wh"), "--out", str(root / "out"), "--report-day",
                    "2026-03-10", "--workers", "1"], check=True, capture_output=True)
    subprocess.run([*CLI, "archive", "write", "--warehouse", str(root / "wh"), "--archive", str(root / "archive"),
                    "--report-day", ARCHIVED_DAY], check=True, capture_output=True)
    return root


def test_killed_etl_converges_on_rerun(landing: Path, clean: Path, tmp_path: Path) -> None:
    warehouse = tmp_path / "wh"
    etl = [*CLI, "etl", "--landing", str(landing), "--warehouse", str(warehouse), "--all"]
    kill_when(etl, lambda: len(list((warehouse / "_runs").glob("ingest_date=*.json"))) >= 12)
    subprocess.run(etl, check=True, capture_output=True)
    assert state(warehouse) == state(clean / "wh")


def test_a_killed_ingest_shard_converges_on_rerun(landing: Path, clean: Path, tmp_path: Path) -> None:
    from tests.unit.test_shards import content, same

    warehouse = tmp_path / "wh"
    etl = [*CLI, "etl", "--landing", str(landing), "--warehouse", str(warehouse), "--all"]
    subprocess.run([*etl, "--shard", "0/2"], check=True, capture_output=True)
    kill_when([*etl, "--shard", "1/2"],
              lambda: len(list((warehouse / "_runs/shards").glob("*/shard-1-of-2.json"))) >= 12)
    assert subprocess.run([*etl, "--finish", "2"], capture_output=True).returncode == 1  # shard 1 is not done
    subprocess.run([*etl, "--shard", "1/2"], check=True, capture_output=True)
    subprocess.run([*etl, "--finish", "2"], check=True, capture_output=True)
    same(content(warehouse), content(clean / "wh"))


def test_killed_render_converges_on_rerun(clean: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    render = [*CLI, "render", "--warehouse", str(clean / "wh"), "--out", str(out), "--report-day", "2026-03-10",
              "--workers", "1"]
    kill_when(render, lambda: len(list(out.glob("*/2026-03-10/*.html"))) >= 20)
    subprocess.run(render, check=True, capture_output=True)
    assert state(out) == state(clean / "out")


def test_killed_archive_converges_on_rerun_and_verifies(clean: Path, tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    write = [*CLI, "archive", "write", "--warehouse", str(clean / "wh"), "--archive", str(archive), "--report-day",
             ARCHIVED_DAY]
    kill_when(write, lambda: len(list(archive.glob(f"*/{ARCHIVED_DAY}/rev-1/manifest.json"))) >= 3)
    subprocess.run(write, check=True, capture_output=True)
    assert state(archive) == state(clean / "archive")
    assert verify(LocalStorage(archive))[0] == []


def test_killed_publish_converges_and_leaves_no_multipart_upload(clean: Path, tmp_path: Path, moto_server: str
                                                               ) -> None:
    """Killed while a multipart upload of its own is in flight: the re-run aborts that orphan (parts nobody sees
    but the bill) and converges to one clean upload."""
    site = tmp_path / "out"
    shutil.copytree(clean / "out", site)
    big = site / "1/2026-03-10/big.contacts_added.csv"  # several multipart parts: the kill lands inside them
    big.write_bytes(random.Random(3).randbytes(30 * 1024 * 1024))  # incompressible: multipart even when gzipped
    client = boto3.client("s3", endpoint_url=moto_server, config=client_config())
    client.create_bucket(Bucket="site")
    script = ("import sys; from etl.publish import S3Target, upload; from etl.storage import LocalStorage, s3_client;"
              f"out = LocalStorage({str(site)!r});"
              "upload(s3_client(), S3Target('site', 'reports'), out, out.list())")
    env = {**os.environ, "AWS_ENDPOINT_URL": moto_server}

    def in_flight() -> list[dict[str, Any]]:
        return list(client.list_multipart_uploads(Bucket="site").get("Uploads", []))

    kill_when([sys.executable, "-c", script], lambda: bool(in_flight()), env=env)
    assert [u["Key"] for u in in_flight()] == ["reports/1/2026-03-10/big.contacts_added.csv"]  # the kill's orphan
    out = LocalStorage(site)
    upload(client, S3Target("site", "reports"), out, out.list())
    assert in_flight() == []
    objects = {o["Key"].removeprefix("reports/") for p in client.get_paginator("list_objects_v2").paginate(
        Bucket="site") for o in p.get("Contents", [])}
    assert {k for k in objects if not k.startswith("_published/")} == set(out.list())
    for key in out.list():
        assert published(client, "site", f"reports/{key}") == out.read_bytes(key), key
