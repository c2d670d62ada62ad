"""Input mistakes end with one clear line on stderr and a documented exit code, never a traceback."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest

from etl.cli import EXIT_FAILED, EXIT_STORAGE, EXIT_USAGE, main
from tests.conftest import TINY, plain_id
from tests.helpers import event, write_landing

_caplog: list[pytest.LogCaptureFixture] = []


@pytest.fixture(autouse=True)
def _errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    _caplog[:] = [caplog]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """(exit code, stdout, the error lines) of the command line, in this process: an uncaught exception fails the
    test. Error lines: what was logged at ERROR (stderr outside pytest) and argparse's own `error:` line."""
    _caplog[0].clear()
    try:
        code = main(list(argv))
    except SystemExit as stop:  # argparse's own usage errors
        code = int(stop.code or 0)
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    logged = [r.getMessage() for r in _caplog[0].records if r.levelname == "ERROR"]
    return code, out, "\n".join([*logged, *(line for line in err.splitlines() if "error:" in line)])


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line]


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    return write_landing(tmp_path / "landing", [(1, "W", "Europe/Madrid")],
                         {"2026-03-10/09": [event("a", "2026-03-10T08:00:00Z")]})


WORKSPACES_FILES: dict[str, bytes | None] = {
    "an object": b"{}",
    "empty": b"",
    "not UTF-8": b"\xff\xfe[\x00]",
    "deeply nested": b"[" * 100_000 + b"]" * 100_000,
    "a number": b"5",
    "a folder": None,
}


@pytest.mark.parametrize("what", WORKSPACES_FILES)
def test_an_unusable_workspaces_file_is_one_clear_line(capsys: pytest.CaptureFixture[str], landing: Path,
                                                       tmp_path: Path, what: str) -> None:
    target = landing / "workspaces.json"
    target.unlink()
    if WORKSPACES_FILES[what] is None:
        target.mkdir()
    else:
        target.write_bytes(WORKSPACES_FILES[what])  # type: ignore[arg-type]
    code, _, err = run(capsys, "etl", "--landing", str(landing), "--warehouse", str(tmp_path / "wh"),
                    "--ingest-date", "2026-03-10")
    assert code == EXIT_USAGE
    [line] = error_lines(err)
    assert "workspaces.json" in line


@pytest.mark.parametrize("entry", [{"workspace_id": 2**70, "name": "Huge", "timezone": "UTC"},
                                   {"workspace_id": 2, "name": "\ud800", "timezone": "UTC"},
                                   {"workspace_id": 2, "name": "Zone", "timezone": "\ud800"},
                                   {"workspace_id": True, "name": "Bool", "timezone": "UTC"},
                                   "not an object"])
def test_a_bad_entry_isolates_itself_and_the_night_goes_on(capsys: pytest.CaptureFixture[str], landing: Path,
                                                           tmp_path: Path, entry: object) -> None:
    dimension = json.loads((landing / "workspaces.json").read_text())
    (landing / "workspaces.json").write_text(json.dumps([*dimension, entry]))
    code, out, _ = run(capsys, "etl", "--landing", str(landing), "--warehouse", str(tmp_path / "wh"),
                       "--ingest-date", "2026-03-10")
    assert code == 0
    summary = json.loads(out)
    assert summary["events_by_workspace"] == {"1": 1}


@pytest.mark.parametrize("argv", [
    ["etl", "--ingest-date", "2026-02-30"],
    ["etl", "--ingest-date", "9999-12-31"],
    ["etl", "--ingest-date", "٢٠٢٦-٠٣-١٠"],
    ["render", "--cutoff", "9999-12-31T23:00Z"],
    ["render", "--cutoff", "0001-01-01T00:00Z"],
    ["render", "--report-day", "1970-01-01"],
    ["render", "--report-day", "2026-03-10", "--workspace", "²"],
    ["render", "--report-day", "2026-03-10", "--workspace", "99999999999999999999"],
    ["archive", "write", "--report-day", "9999-12-31"],
    ["archive", "show", "--workspace", "1", "--day", "2026-13-01"],
])
def test_arguments_out_of_range_are_usage_errors(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, _, err = run(capsys, *argv)
    assert code == EXIT_USAGE
    assert "error:" in err


@pytest.mark.parametrize("value", ["channel=²", "channel=٣", "user=99999999999999999999", "channel=-1", "user=1.0",
                                   "source=Users", "channel="], ids=plain_id)
def test_a_filter_that_is_not_a_valid_id_is_a_usage_error(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                          value: str) -> None:
    code, _, err = run(capsys, "render", "--warehouse", str(tmp_path / "wh"), "--out", str(tmp_path / "out"),
                    "--report-day", "2026-03-10", "--filter", value)
    assert code == EXIT_USAGE
    [line] = error_lines(err)
    assert value.split("=")[0] in line


def _etl_tiny(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Path:
    warehouse = tmp_path / "wh"
    code, _, _ = run(capsys, "etl", "--landing", str(TINY / "landing"), "--warehouse", str(warehouse), "--all")
    assert code == 0
    return warehouse


def test_render_out_pointing_at_a_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    warehouse = _etl_tiny(capsys, tmp_path)
    (tmp_path / "out.html").write_text("not a folder")
    code, _, err = run(capsys, "render", "--warehouse", str(warehouse), "--out", str(tmp_path / "out.html"),
                    "--report-day", "2026-03-30")
    assert code == EXIT_USAGE
    [line] = error_lines(err)
    assert "is a file" in line


@pytest.mark.parametrize("name", ["ingest_date=2026-02-30", "ingest_date=9999-12-31"])
def test_a_partition_named_after_no_day_stops_all_with_its_name(capsys: pytest.CaptureFixture[str], landing: Path,
                                                                 tmp_path: Path, name: str) -> None:
    shutil.copytree(landing / "events/ingest_date=2026-03-10", landing / "events" / name)
    code, _, err = run(capsys, "etl", "--landing", str(landing), "--warehouse", str(tmp_path / "wh"), "--all")
    assert code == EXIT_FAILED
    [line] = error_lines(err)
    assert name.split("=")[1] in line


def test_an_unreachable_s3_endpoint_is_named_after_the_retries(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
    for name, value in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    code, _, err = run(capsys, "etl", "--landing", "s3://nowhere/landing", "--warehouse", str(tmp_path / "wh"), "--all")
    assert code == EXIT_STORAGE
    [line] = error_lines(err)
    assert endpoint in line


def test_archive_write_refuses_unknown_workspaces_missing_warehouses_and_open_days(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    archive = str(tmp_path / "archive")
    code, _, err = run(capsys, "archive", "write", "--warehouse", str(tmp_path / "none"), "--archive", archive,
                    "--report-day", "2026-03-30")
    assert code == EXIT_USAGE and "contacts-report etl" in error_lines(err)[0]
    warehouse = _etl_tiny(capsys, tmp_path)
    code, _, err = run(capsys, "archive", "write", "--warehouse", str(warehouse), "--archive", archive,
                    "--report-day", "2026-03-20", "--workspace", "999")
    assert code == EXIT_USAGE and "999" in error_lines(err)[0]
    latest = max(p.name for p in (TINY / "landing/events").iterdir()).split("=")[1]  # the last arrival day
    for day in (latest, "2027-01-01"):  # not ended in every zone when that arrival day ended; the future
        code, _, err = run(capsys, "archive", "write", "--warehouse", str(warehouse), "--archive", archive,
                        "--report-day", day)
        assert code == EXIT_USAGE and "had not ended" in error_lines(err)[0]
    code, _, err = run(capsys, "archive", "write", "--warehouse", str(warehouse), "--archive", archive,
                    "--cutoff", "2027-01-01T00:00Z")
    assert code == EXIT_USAGE and "had not ended" in error_lines(err)[0]
    assert not (tmp_path / "archive").exists() or not list((tmp_path / "archive").rglob("manifest.json"))


@pytest.mark.parametrize("where", ["missing", "a file", "empty folder", "other files"])
def test_archive_verify_of_nothing_fails(capsys: pytest.CaptureFixture[str], tmp_path: Path, where: str) -> None:
    target = tmp_path / "archive"
    if where == "a file":
        target.write_text("x")
    elif where != "missing":
        target.mkdir()
        if where == "other files":
            (target / "README.txt").write_text("nothing here")
    code, out, _ = run(capsys, "archive", "verify", "--archive", str(target))
    assert code == EXIT_FAILED
    assert "no snapshots" in out and out.splitlines()[-1].startswith("FAILED")


@pytest.mark.parametrize("manifest", [b"[" * 100_000, b"[]", b'{"files": 5}', b'{"files": {"a.csv": 5}}',
                                      b'{"files": {}, "sequence": "one"}', b"\xff"], ids=plain_id)
def test_a_malformed_manifest_is_a_problem_not_a_crash(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                       manifest: bytes) -> None:
    folder = tmp_path / "archive/1/2026-03-10/rev-1"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_bytes(manifest)
    code, out, _ = run(capsys, "archive", "verify", "--archive", str(tmp_path / "archive"))
    assert code == EXIT_FAILED
    assert "manifest" in out and "FAILED" in out.splitlines()[-1]
    code, _, err = run(capsys, "archive", "show", "--archive", str(tmp_path / "archive"), "--workspace", "1",
                       "--day", "2026-03-10")
    assert code in (0, EXIT_FAILED) and "Traceback" not in err  # shown as it is, or one line saying it is not JSON
    folder.parent.rename(tmp_path / "archive/1/2026-02-30")  # a folder named after no day
    code, out, _ = run(capsys, "archive", "verify", "--archive", str(tmp_path / "archive"))
    assert code == EXIT_FAILED and "not a calendar date" in out


def test_every_command_has_help_naming_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "exit codes" in out


@pytest.mark.parametrize(("name", "value"), [("CONTACTS_REPORT_MAX_FILE_LINES", "lots"),
                                             ("CONTACTS_REPORT_MAX_QUARANTINE_RATIO", "5%"),
                                             ("CONTACTS_REPORT_RENDER_BATCH_SIZE", "0"),
                                             ("CONTACTS_REPORT_LANDING_WAIT_SECONDS", "-1")])
def test_a_setting_that_is_not_a_number_is_one_line(capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    code, _, err = run(capsys, "etl", "--all")
    assert code == EXIT_USAGE
    [line] = error_lines(err)
    assert name in line
