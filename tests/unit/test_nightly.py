"""The nightly steps without Airflow: the quality gate, the landing wait, the publish order."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest

from etl.nightly import check_landing
from etl.pipeline import EtlError
from etl.publish import S3Target, upload
from etl.quality import Thresholds, problems
from etl.settings import Settings
from etl.storage import LocalStorage, s3_client
from tests.helpers import event, write_landing

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
    assert found[2].startswith("workspace 2: volume collapsed to 20 events")


def test_an_empty_night_never_passes() -> None:
    assert "refusing to publish a report of zero contacts" in problems(night(0), [], LIMITS)[0]


def test_small_workspaces_do_not_trip_the_volume_check() -> None:
    history = [night(100, by_workspace={"1": 10}) for _ in range(7)]
    assert problems(night(100, by_workspace={}), history, LIMITS) == []


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
    with pytest.raises(EtlError, match="after waiting 900s"):
        check_landing(settings, date(2026, 3, 11), sleep=clock.sleep, clock=clock.monotonic)
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


def test_publish_uploads_dated_pages_before_any_index(tmp_path: Path, s3_bucket: str) -> None:
    out = LocalStorage(tmp_path)
    keys = ["index.html", "1/index.html", "1/2026-03-10/today.html", "1/2026-03-10/today.contacts_added.csv",
            "_runs/index.html"]
    for key in keys:
        out.write_bytes(key, key.encode())
    client = s3_client()
    order: list[str] = []
    client.meta.events.register("before-parameter-build.s3.PutObject", lambda params, **_: order.append(params["Key"]))
    result = upload(client, S3Target.parse(f"s3://{s3_bucket}/site"), out, keys)
    assert result == {"uploaded": 5, "unchanged": 0}
    first_index = min(i for i, k in enumerate(order) if k.endswith("index.html"))
    assert all(not k.endswith("index.html") for k in order[:first_index])
    assert order[:2] == ["site/1/2026-03-10/today.contacts_added.csv", "site/1/2026-03-10/today.html"]
    again = upload(client, S3Target.parse(f"s3://{s3_bucket}/site"), out, keys)
    assert again == {"uploaded": 0, "unchanged": 5}


@pytest.mark.parametrize("sse", [None, "none"])
def test_published_objects_carry_the_documented_cache_and_encryption(tmp_path: Path, s3_bucket: str,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     sse: str | None) -> None:
    """README: a 5-minute cache for index pages, a day for dated ones; AES256 unless CONTACTS_REPORT_S3_SSE=none
    (then the bucket's own default applies)."""
    from etl.storage import encryption_args

    if sse is not None:
        monkeypatch.setenv("CONTACTS_REPORT_S3_SSE", sse)
    encryption_args.cache_clear()  # read once per process; this test changes it
    out = LocalStorage(tmp_path)
    keys = ["1/2026-03-10/today.html", "1/2026-03-10/today.contacts_added.csv", "1/index.html", "index.html"]
    for key in keys:
        out.write_bytes(key, key.encode())
    client = s3_client()
    sent: dict[str, Any] = {}
    client.meta.events.register("before-send.s3.PutObject",
                                lambda request, **_: sent.update({request.url.split("/site/")[1]: request.headers}))
    try:
        upload(client, S3Target.parse(f"s3://{s3_bucket}/site"), out, keys)
    finally:
        encryption_args.cache_clear()
    for key in keys:
        head = client.head_object(Bucket=s3_bucket, Key=f"site/{key}")
        max_age = int(head["CacheControl"].split("max-age=")[1].split(",")[0])
        assert max_age == (300 if key.endswith("index.html") else 86_400), key
        asked = sent[key].get("x-amz-server-side-encryption")
        assert asked == (b"AES256" if sse is None else None), key
