"""Shared fixtures: the pinned tiny example, small landing zones written in the contract's layout."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest

from tests.faults.proxy import FaultProxy

FIXTURES = Path(__file__).parent / "fixtures"
TINY = FIXTURES / "tiny"

# `make mutation` (tools/mutation.py) runs the fast tests once per mutant: property tests draw a tenth of their
# examples (their @example cases always run) with a fixed seed, and tests that run our code in another process
# (Airflow, Ceph, the CLI, a render process pool: marked `other_process`) are left out: mutmut cannot trace them, and
# they would cost seconds per mutant. moto's server runs in a thread of the test process and stays.
MUTATION = os.environ.get("CONTACTS_REPORT_MUTATION", "")  # the module mutated (tools/mutation.py)
_IN_ANOTHER_PROCESS = {"airflow_home", "standalone", "rgw"}


def plain_id(value: object) -> str:
    """A test id of ASCII letters, digits and `-_.:'+` only. pytest escapes other characters in ids (`\\u0967`,
    `\\n`), and after mutmut's warm-up collection such an id given back on the command line is "not found": pytest
    exits 4, and mutmut counted every mutant those tests reach as a timeout, i.e. killed."""
    return re.sub(r"[^A-Za-z0-9_.:'+-]", "_", ascii(value))


def shared(fixture_name: str, config: pytest.Config) -> Literal["function", "module"]:
    """Scope of a fixture that builds something several tests read: the module, except under `make mutation`,
    where each test builds its own (mutmut credits the functions a fixture calls to the first test that uses it
    only, so the other tests would never run against the mutants they catch)."""
    return "function" if MUTATION else "module"


def examples(count: int) -> int:
    """How many examples a property test draws: `count`, or a tenth of it (at least 10) under `make mutation`."""
    return max(10, count // 10) if MUTATION else count


if MUTATION:
    from hypothesis import Phase, settings

    # No shrinking: a mutant is caught by the first failing example, and shrinking it can take minutes.
    settings.register_profile("mutation", derandomize=True, database=None, phases=(Phase.explicit, Phase.generate))
    settings.load_profile("mutation")


# mutmut stops a mutant's run at its first failing test, so under `make mutation` the tests run fastest first. Its
# own timings (which also set each mutant's time limit) count only a test's call; a fixture's set-up (an ETL run and
# a render, built per test under mutation) is added while mutmut maps which tests reach which function.
_TIMINGS = Path("mutmut-stats.json")


def _mapping_run() -> bool:
    return MUTATION and os.environ.get("MUTANT_UNDER_TEST") == "stats"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    escaped = [item.nodeid for item in items if "\\" in item.nodeid]
    if escaped:  # see plain_id: under `make mutation` such tests would never run
        raise pytest.UsageError(f"test ids that pytest escapes (give their parametrize ids=plain_id): {escaped[:3]}")
    if not MUTATION:
        return
    elsewhere = [i for i in items if _IN_ANOTHER_PROCESS & set(getattr(i, "fixturenames", ()))
                 or i.get_closest_marker("other_process")]
    if elsewhere:
        config.hook.pytest_deselected(items=elsewhere)
        items[:] = [i for i in items if i not in elsewhere]
    if not _mapping_run() and _TIMINGS.exists():
        seconds = json.loads(_TIMINGS.read_text()).get("duration_by_test", {})
        items.sort(key=lambda item: seconds.get(item.nodeid, 0.0))


def pytest_sessionstart(session: pytest.Session) -> None:
    """Under `make mutation`, a mutant listed as equivalent in docs/testing.md (and unchanged since) is not tested:
    it would survive every test, the most expensive outcome. mutmut counts it as skipped."""
    mutant = os.environ.get("MUTANT_UNDER_TEST", "")
    if MUTATION and "__mutmut_" in mutant:
        from tools.mutation import SKIPPED, reviewed_equivalent

        if reviewed_equivalent(mutant, Path.cwd()):
            pytest.exit(f"{mutant} is listed as equivalent", returncode=SKIPPED)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if _mapping_run() and report.when != "call":
        from mutmut.state import state

        timings = state().duration_by_test
        timings[report.nodeid] = timings.get(report.nodeid, 0.0) + report.duration


# Modules an ETL run executes: while `make mutation` mutates one of them, every test runs the ETL itself.
_RUN_BY_THE_ETL = {"ingest", "pipeline", "transform", "validate", "warehouse", "windows"}


@pytest.fixture(scope="session")
def tiny_warehouse_built(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """The tiny example's warehouse (every arrival day through the ETL), built once: once per test run, and under
    `make mutation` once for all the mutants of a module the ETL does not run (made by unmutated code: exactly what
    the tests of the report or the archive start from). None while a module the ETL runs is mutated."""
    if MUTATION in _RUN_BY_THE_ETL:
        return None
    cached = os.environ.get("CONTACTS_REPORT_MUTATION_CACHE")
    folder = Path(cached) / "tiny-warehouse" if MUTATION and cached else tmp_path_factory.getbasetemp() / "tiny-wh"
    if not folder.exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(dir=folder.parent))
        with contextlib.suppress(OSError):  # OSError: built by another process in the meantime
            os.rename(run_tiny_etl(building / "wh"), folder)
        shutil.rmtree(building)
    return folder


def run_tiny_etl(warehouse: Path) -> Path:
    from etl.ingest import landing_dates
    from etl.pipeline import run_etl
    from etl.storage import LocalStorage

    landing = LocalStorage(TINY / "landing")
    for day in landing_dates(landing):
        run_etl(landing, LocalStorage(warehouse), day)
    return warehouse


def copy_tiny_warehouse(target: Path, built: Path | None) -> Path:
    """A private copy of the tiny example's warehouse at `target` (`built`: the fixture `tiny_warehouse_built`)."""
    if built is None:
        return run_tiny_etl(target)
    shutil.copytree(built, target)
    return target


@pytest.fixture
def tiny_warehouse(tmp_path: Path, tiny_warehouse_built: Path | None) -> Path:
    return copy_tiny_warehouse(tmp_path / "wh", tiny_warehouse_built)


@pytest.fixture
def tiny_landing(tmp_path: Path) -> Path:
    """A private copy of ../shared/examples/tiny/landing (vendored under tests/fixtures/tiny)."""
    target = tmp_path / "landing"
    shutil.copytree(TINY / "landing", target)
    return target


@pytest.fixture
def tiny_expected() -> dict[str, Any]:
    return json.loads((TINY / "expected.json").read_text())


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_pair(offset: int) -> int:
    """A free port P with P + offset free too (radosgw-local puts its monitor at P + 10000): the kernel's
    ephemeral ports reach 60999, where P + 10000 is no port at all."""
    import random
    import socket

    for candidate in random.Random().sample(range(20_000, 65_535 - offset), 200):
        try:
            with socket.socket() as first, socket.socket() as second:
                first.bind(("127.0.0.1", candidate))
                second.bind(("127.0.0.1", candidate + offset))
        except OSError:
            continue
        return candidate
    raise RuntimeError(f"no free pair of loopback ports {offset} apart")


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's S3 server on a loopback port, for the whole session (reset between tests)."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def moto_server(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Points boto3's standard chain at the loopback server, with throwaway credentials."""
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST")).close()
    for name, value in {"AWS_ENDPOINT_URL": moto_endpoint, "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    yield moto_endpoint


@pytest.fixture
def proxy(moto_server: str) -> Iterator[FaultProxy]:
    """The tests' fault proxy in front of the loopback S3 (tests/faults/proxy.py): faults on request, every request
    seen."""
    faults = FaultProxy(moto_server).start()
    yield faults
    faults.stop()


@pytest.fixture
def s3_bucket(moto_server: str) -> str:
    from etl.storage import s3_client

    s3_client().create_bucket(Bucket="contacts-report-test")
    return "contacts-report-test"


class Inbox:
    """aiosmtpd handler keeping every message, per recipient."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        for rcpt in envelope.rcpt_tos:
            self.messages.append((rcpt, envelope.content))
        return "250 OK"


@pytest.fixture
def smtp_server() -> Iterator[tuple[int, Inbox]]:
    from aiosmtpd.controller import Controller

    inbox, port = Inbox(), _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield port, inbox
    controller.stop()


RADOSGW_LOCAL = Path(__file__).parents[1] / "scripts/radosgw-local"


@pytest.fixture(scope="session")
def rgw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    """Ceph's RADOS Gateway on loopback for the session (`scripts/radosgw-local`): (endpoint, key, secret)."""
    folder = tmp_path_factory.mktemp("rgw")
    port = free_port_pair(10_000)  # the script's monitor listens on port + 10000
    started = subprocess.run([str(RADOSGW_LOCAL), "start", str(folder), str(port)], capture_output=True, text=True,
                             check=False, timeout=300)
    ready = [line for line in started.stdout.splitlines() if line.startswith("RGW_READY")]
    if not ready:  # the daemons often exit without a word on the terminal: their logs say why
        logs = "".join(f"\n--- {log.name}\n{log.read_text(errors='replace')[-1500:]}"
                       for log in sorted((folder / "log").glob("*.log")))
        pytest.fail(f"RADOS Gateway did not start (exit {started.returncode}; ceph-mon, for one, refuses to start "
                    f"with less than 5 % of its disk free):\n{started.stdout[-2000:]}\n{started.stderr[-2000:]}{logs}")
    _, endpoint, key, secret = ready[0].split()
    yield endpoint, key, secret
    subprocess.run([str(RADOSGW_LOCAL), "stop", str(folder)], check=False, timeout=60)


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Chromium is missing: `make test` installs Debian's chromium package"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()
