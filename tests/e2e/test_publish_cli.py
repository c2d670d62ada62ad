"""`contacts-report publish`: what ops run by hand to publish a night again, the same function the DAG calls."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from etl import manifests
from etl.cli import EXIT_FAILED, EXIT_USAGE, main
from etl.storage import LocalStorage, s3_client
from tests.e2e.test_cli_errors import _errors_logged, run  # noqa: F401 (the fixture that keeps the error lines)
from tests.helpers import published

CUTOFF = "2026-03-31T00:00:00Z"


@pytest.fixture
def rendered(tmp_path: Path, tiny_warehouse: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    out = tmp_path / "out"
    assert main(["render", "--warehouse", str(tiny_warehouse), "--out", str(out), "--cutoff", CUTOFF,
                 "--workers", "1"]) == 0
    capsys.readouterr()
    return out


def stored(bucket: str, prefix: str) -> list[str]:
    return sorted(o["Key"].removeprefix(f"{prefix}/") for page in s3_client().get_paginator("list_objects_v2")
                  .paginate(Bucket=bucket, Prefix=f"{prefix}/") for o in page.get("Contents", [])
                  if "/_published/" not in o["Key"])


def test_publish_a_night_by_hand_again_and_in_part(rendered: Path, s3_bucket: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = LocalStorage(rendered)
    night = manifests.rendered(out, manifests.tag_of(CUTOFF))
    assert {k.split("/")[0] for k in night} == {"1", "2", "index.html"} and len(night) > 14
    publish = ["publish", "--out", str(rendered), "--to", f"s3://{s3_bucket}/site", "--cutoff", CUTOFF]
    code, stdout, _ = run(capsys, *publish)
    summary = json.loads(stdout)
    assert code == 0 and (summary["uploaded"], summary["unchanged"]) == (len(night), 0)
    assert summary["to"] == f"s3://{s3_bucket}/site" and summary["seconds"] >= 0
    assert summary["requests"]["PutObject"] >= len(night) and "ListObjectsV2" not in summary["requests"]
    assert stored(s3_bucket, "site") == sorted(night)  # what the night rendered, nothing of _rendered/ or archive/
    assert summary["bytes"] < sum(len(out.read_bytes(k)) for k in night) / 3  # compressed
    for key in night:
        assert published(s3_client(), s3_bucket, f"site/{key}") == out.read_bytes(key), key

    code, stdout, _ = run(capsys, *publish)  # ops publish the night again: nothing changed, nothing sent
    assert code == 0 and (json.loads(stdout)["uploaded"], json.loads(stdout)["unchanged"]) == (0, len(night))
    (rendered / "2/index.html").write_text("<p>re-rendered</p>")
    code, stdout, _ = run(capsys, *publish, "--workspace", "2", "--concurrency", "2")
    two = [k for k in night if k.startswith("2/") or k == "index.html"]
    assert code == 0 and (json.loads(stdout)["uploaded"], json.loads(stdout)["unchanged"]) == (1, len(two) - 1)


def test_publish_all_syncs_everything_but_the_render_records_and_the_archive(rendered: Path, s3_bucket: str,
                                                                             tiny_warehouse: Path,
                                                                             capsys: pytest.CaptureFixture[str]
                                                                             ) -> None:
    assert main(["render", "--warehouse", str(tiny_warehouse), "--out", str(rendered), "--report-day",
                 "2026-03-20", "--workspace", "1", "--workers", "1"]) == 0
    (rendered / "archive/1").mkdir(parents=True)
    (rendered / "archive/1/index.html").write_text("an archive page: mirrored by `archive`, as it is")
    capsys.readouterr()
    code, stdout, _ = run(capsys, "publish", "--out", str(rendered), "--to", f"s3://{s3_bucket}/all", "--all")
    everything = sorted(k for k in LocalStorage(rendered).list() if not k.startswith(("_rendered/", "archive/")))
    assert code == 0 and json.loads(stdout)["uploaded"] == len(everything)
    assert stored(s3_bucket, "all") == everything and any(k.startswith("1/2026-03-20/") for k in everything)
    s3_client().delete_object(Bucket=s3_bucket, Key="all/1/2026-03-20/today.html")  # lost by hand
    code, stdout, _ = run(capsys, "publish", "--out", str(rendered), "--to", f"s3://{s3_bucket}/all", "--all")
    assert code == 0 and json.loads(stdout)["uploaded"] == 1  # --all checks the bucket, not only the ledger
    assert "ListObjectsV2" in json.loads(stdout)["requests"]


def test_publish_refuses_what_cannot_work_with_what_to_do(rendered: Path, tmp_path: Path, s3_bucket: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    base = ["publish", "--out", str(rendered), "--to", f"s3://{s3_bucket}/site"]
    code, _, err = run(capsys, *base, "--cutoff", "2026-03-12T00:00Z")
    assert code == EXIT_FAILED
    assert "nothing rendered for cutoff=2026-03-12T000000Z" in err and "contacts-report render" in err
    code, _, err = run(capsys, "publish", "--out", str(rendered), "--to", "ftp://host/x", "--all")
    assert code == EXIT_USAGE and "s3://bucket/prefix" in err
    (tmp_path / "a-file").write_text("")
    code, _, err = run(capsys, "publish", "--out", str(tmp_path / "a-file"), "--to", f"s3://{s3_bucket}/x", "--all")
    assert code == EXIT_USAGE and "is not a folder" in err
    code, _, err = run(capsys, *base)
    assert code == EXIT_USAGE and "one of the arguments --cutoff --report-day --all is required" in err
    code, out, _ = run(capsys, "publish", "--help")
    assert code == 0 and "exit codes" in out and "AWS_ENDPOINT_URL" in out and "--concurrency" in out
    assert stored(s3_bucket, "site") == []


def test_publish_from_an_s3_staging_as_a_multi_machine_night_does(tiny_warehouse: Path, s3_bucket: str,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """With the render's output on S3 (workers that share nothing but S3), publish reads the records and the pages
    from there."""
    staging = f"s3://{s3_bucket}/staging"
    assert main(["render", "--warehouse", str(tiny_warehouse), "--out", staging, "--cutoff", CUTOFF, "--workspace",
                 "2", "--workers", "1"]) == 0
    capsys.readouterr()
    code, stdout, _ = run(capsys, "publish", "--out", staging, "--to", f"s3://{s3_bucket}/site", "--cutoff", CUTOFF)
    night = [k for k in stored(s3_bucket, "staging") if not k.startswith("_rendered/")]
    assert code == 0 and json.loads(stdout)["uploaded"] == len(night) > 7
    assert stored(s3_bucket, "site") == night
