"""Airflow for the DAG tests: a project-local AIRFLOW_HOME (SQLite), migrated once per session."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from etl.mail import SMTP_PLAIN

REPO = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).parent / "airflow")
SECRET = "s3cr3t-d0-n0t-l34k"  # the S3 secret key in the DAG tests' connection: it must never be written anywhere


@pytest.fixture(scope="session")
def migrated_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("airflow_home")
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags")}
    result = subprocess.run([AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return home


@pytest.fixture
def airflow_home(migrated_home: Path, tmp_path: Path) -> Path:
    """A copy of the migrated metadata database per test: each test's DAG declares its assets where its own data
    are, and an asset whose name another test's run left active with other URIs would be inactive here."""
    home = tmp_path / "airflow_home"
    shutil.copytree(migrated_home, home)
    config = home / "airflow.cfg"  # names the database by its absolute path: the copy's own, then
    config.write_text(config.read_text().replace(str(migrated_home), str(home)))
    return home


def dag_env(airflow_home: Path, s3_endpoint: str, smtp_port: int, data: Path, **settings: str) -> dict[str, str]:
    aws = {"conn_type": "aws", "login": "testing", "password": SECRET,
           "extra": {"endpoint_url": s3_endpoint, "region_name": "us-east-1"}}
    return {
        **os.environ,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(aws),
        "AIRFLOW_CONN_SMTP_DEFAULT": json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": smtp_port,
                                                 **SMTP_PLAIN}),
        "CONTACTS_REPORT_LANDING": str(data / "landing"),
        "CONTACTS_REPORT_WAREHOUSE": str(data / "warehouse"),
        "CONTACTS_REPORT_OUT": str(data / "out"),
        "NO_PROGRESS": "1",
        **settings,
    }


def run_dag(env: dict[str, str], logical_date: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(Path(__file__).parent / "run_dag.py"), logical_date], env=env,
                          capture_output=True, text=True, check=False, cwd=REPO)
