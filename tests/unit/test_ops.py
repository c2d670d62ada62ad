"""The pieces of ops' view of a night that need no Airflow: the deadline setting, the tasks' own records, what a
late night's alert says, and the assets' names and places."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from etl.errors import InputError
from etl.ops import deadline_message, night_assets, progress, recording, task_records, task_seconds
from etl.settings import Settings

NIGHT = date(2026, 3, 10)


@pytest.mark.parametrize(("text", "expected"), [("90s", timedelta(seconds=90)), ("45m", timedelta(minutes=45)),
                                                ("6h", timedelta(hours=6)), (" 1d ", timedelta(days=1)), ("", None)])
def test_the_deadline_is_a_duration_after_the_nights_end(text: str, expected: timedelta | None) -> None:
    assert Settings.from_env({"CONTACTS_REPORT_DEADLINE": text}).deadline == expected


@pytest.mark.parametrize("text", ["6", "six hours", "6hours", "-1h", "1.5h"])
def test_a_deadline_that_is_not_a_duration_says_how_to_write_one(text: str) -> None:
    with pytest.raises(InputError, match="is not a duration; write one such as 90s, 45m, 6h or 1d"):
        Settings.from_env({"CONTACTS_REPORT_DEADLINE": text})


def test_tasks_record_their_own_runs_and_a_late_alert_lists_them_by_state(tmp_path: Path) -> None:
    settings = Settings(warehouse=str(tmp_path / "wh"))
    for task in ("check_landing", "plan_shards"):
        with recording(settings, NIGHT, task):
            pass
    for shard in (0, 1):
        with recording(settings, NIGHT, "ingest", shard):
            pass
    with pytest.raises(RuntimeError), recording(settings, NIGHT, "finish_ingest"):
        raise RuntimeError("storage down")
    records = task_records(settings, NIGHT)
    running = dict(records[0], task="quality_gate")  # started, not ended: as a task in flight looks
    running.pop("finished_at")
    states = progress([*records, running])
    assert states["done"] == ["check_landing", "plan_shards", "ingest"]
    assert (states["failed"], states["running"]) == (["finish_ingest"], ["quality_gate"])
    assert states["not started"][0] == "plan_render_batches" and states["not started"][-1] == "run_summary"
    assert set(task_seconds(records)) == {"check_landing", "plan_shards", "ingest"}  # a mapped task once
    subject, html = deadline_message(settings, NIGHT, datetime(2026, 3, 11, 6, tzinfo=UTC), "scheduled__x", states)
    assert subject == "[contacts-report] night 2026-03-10 is late: not finished by 2026-03-11 06:00 UTC"
    assert "<li>running: quality_gate</li>" in html and "<li>failed: finish_ingest</li>" in html


def test_assets_have_fixed_names_and_the_places_the_settings_give(tmp_path: Path) -> None:
    local = night_assets(Settings(warehouse=str(tmp_path / "wh"), out="reports_out"))
    assert local["warehouse"] == ("contacts_report.warehouse", f"file://{tmp_path}/wh")
    assert local["published"][1].endswith("/reports_out/_not_published")
    remote = night_assets(Settings(warehouse="s3://b/wh/", s3_uri="s3://b/site"))
    assert (remote["warehouse"][1], remote["published"][1]) == ("s3://b/wh", "s3://b/site")
    assert len({uri for _, uri in local.values()}) == len(local)  # one place per asset
