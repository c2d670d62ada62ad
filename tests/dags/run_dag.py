"""Runs the nightly DAG once with dag.test() for a logical date; exit code 0 only when the run succeeded.

Used by the tests in a subprocess, so Airflow's configuration (AIRFLOW_HOME, connections) stays out of pytest.
"""

from __future__ import annotations

import importlib.util
import sys
from datetime import UTC, datetime
from pathlib import Path

DAG_FILE = Path(__file__).resolve().parents[2] / "dags/contacts_report_nightly.py"


def main(logical_date: str) -> int:
    spec = importlib.util.spec_from_file_location("contacts_report_nightly", DAG_FILE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = module.contacts_report_nightly()
    run = dag.test(logical_date=datetime.fromisoformat(logical_date).replace(tzinfo=UTC))
    print(f"DAG_RUN_STATE={run.state}")
    return 0 if str(run.state) in ("success", "DagRunState.SUCCESS") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
