"""`make mutation`: mutmut over the core modules, each against its own fast tests, then the score.

Each core module is mutated in its own copy of the project (build/mutation/<module>: the checkout stays clean)
with its own tests (TESTS below; [tool.mutmut] in pyproject.toml holds what the runs share); modules run side by
side. Then it reads every mutant's outcome, drops the mutants listed as equivalent in docs/testing.md (while
unchanged: each row carries a fingerprint of its mutant), and prints per-module scores and, last,
`mutation_score=NN%` (killed ÷ non-equivalent mutants; a mutant no test reaches counts as survived). The report,
with the diff of every survivor, goes to build/mutation/report.md. Exit 1 below --min-score.
`--module report --module windows` mutates only those; --resume goes on from the last run.

By default it tests one mutant in ten of each function (numbers 1, 11, 21, …: a sample that fits 30 minutes on two
cores and still reaches every function); `--every 1` tests all of them (hours), `--every 2` or `5` half or a fifth.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
REPORT = ROOT / "build/mutation"
EQUIVALENTS = ROOT / "docs/testing.md"
KILLED = {"killed", "timeout", "caught by type check"}
NOT_CHECKED = "not checked"
# The fast tests that state each module's promises (a mutant runs those of them that reach its function, fastest
# first, until one fails). Largest module first: modules start in this order.
TESTS = {
    "ingest": ["tests/unit/test_ingest.py", "tests/unit/test_landing_files.py", "tests/unit/test_pipeline.py"],
    "pipeline": ["tests/unit/test_pipeline.py", "tests/unit/test_landing_files.py",
                 "tests/unit/test_storage_keys.py"],
    "archive": ["tests/e2e/test_archive.py"],
    "report": ["tests/unit/test_report_model.py", "tests/e2e/test_report_semantics.py", "tests/unit/test_filters.py",
               "tests/unit/test_log_csv.py", "tests/e2e/test_pages.py"],
    "nightly": ["tests/unit/test_nightly.py", "tests/e2e/test_night_steps.py", "tests/faults/test_mail_faults.py",
                "tests/dags/test_nightly_dag.py"],
    "warehouse": ["tests/unit/test_warehouse.py", "tests/unit/test_pipeline.py", "tests/e2e/test_night_steps.py",
                  "tests/e2e/test_pages.py"],
    "validate": ["tests/unit/test_validate.py", "tests/unit/test_ingest.py"],
    "transform": ["tests/unit/test_transform.py", "tests/unit/test_pipeline.py"],
    "windows": ["tests/unit/test_windows.py", "tests/e2e/test_report_semantics.py"],
}
CORE = tuple(TESTS)
_EQUIVALENT_ROW = re.compile(r"^\|\s*`(etl\.[^`]+__mutmut_\d+)`\s*\|\s*`([0-9a-f]{12})`\s*\|\s*(.+?)\s*\|\s*$")
_RESULT = re.compile(r"^\s*(etl\.\S+__mutmut_\d+): (.+)$")
_MUTANT_DEF = re.compile(r"^( *)(?:async )?def (\S+__mutmut_\d+)\(")
SKIPPED = 34  # mutmut's exit code for a mutant it did not test
EVERY = (1, 2, 5, 10)  # sample sizes that a pattern on the mutant number's last digit expresses


def sampled_digits(every: int) -> str:
    """Last digits of the mutant numbers n with (n - 1) % every == 0, for an `every` that divides ten."""
    return "".join(str(d) for d in range(10) if (d - 1) % every == 0)


def in_sample(mutant: str, every: int) -> bool:
    return mutant[-1] in sampled_digits(every)


def sample_patterns(module: str, every: int) -> list[str]:
    """mutmut's mutant-name patterns for the sample (none: every mutant)."""
    return [] if every == 1 else [f"etl.{module}.*__mutmut_*[{sampled_digits(every)}]"]


def equivalents(text: str) -> dict[str, tuple[str, str]]:
    """Mutant name -> (fingerprint, reason), from the "Equivalent mutants" table of docs/testing.md."""
    section = text.split("## Equivalent mutants", 1)[-1] if "## Equivalent mutants" in text else ""
    return {m.group(1): (m.group(2), m.group(3)) for line in section.splitlines() if (m := _EQUIVALENT_ROW.match(line))}


def fingerprints(mutated_source: str) -> dict[str, str]:
    """Mutant function name -> a digest of its source as mutmut wrote it. A mutant listed as equivalent counts as
    one only while its function is unchanged: names are numbers within a function, so an edit can give a listed
    name to another mutant. (A scan by indentation: parsing the file, tens of thousands of lines, takes seconds.)"""
    found, lines, at = {}, mutated_source.splitlines(keepends=True), 0
    while at < len(lines):
        match = _MUTANT_DEF.match(lines[at])
        if not match:
            at += 1
            continue
        indent, end = len(match.group(1)), at + 1
        while end < len(lines) and (not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent):
            end += 1
        found[match.group(2)] = hashlib.sha256("".join(lines[at:end]).rstrip().encode()).hexdigest()[:12]
        at = end
    return found


def mutated_file(root: Path, module: str) -> Path:
    """The mutated copy of `etl.<module>` under a mutmut `mutants` folder."""
    return root / "etl" / f"{module.removeprefix('etl.')}.py"


def reviewed_equivalent(mutant: str, root: Path) -> bool:
    """Whether `mutant` is listed as equivalent and unchanged since (tests/conftest.py then skips its tests: an
    equivalent mutant survives every test, the most expensive outcome)."""
    listed = equivalents((root / "docs/testing.md").read_text(encoding="utf-8")).get(mutant)
    if listed is None:
        return False
    source = mutated_file(root, module_of(mutant)).read_text(encoding="utf-8")
    return fingerprints(source).get(mutant.rsplit(".", 1)[1]) == listed[0]


def module_of(mutant: str) -> str:
    return re.split(r"\.x[_ǁ]", mutant, maxsplit=1)[0]


def score(outcomes: dict[str, str], equivalent: set[str]) -> tuple[int, int]:
    """(killed, counted): equivalent mutants and those an interrupted run never tried are left out; everything else
    not killed counts as survived."""
    counted = {m: s for m, s in outcomes.items() if m not in equivalent and s != NOT_CHECKED}
    return sum(1 for s in counted.values() if s in KILLED), len(counted)


def workdir(module: str) -> Path:
    return REPORT / module


def prepare(module: str, resume: bool) -> None:
    """A copy of the project's files (tracked or new, not ignored) that mutates `module` against its tests."""
    work = workdir(module)
    if work.exists() and not resume:
        shutil.rmtree(work)
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source, target = ROOT / name, work / name
        if source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    config = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    chosen = f'only_mutate = ["etl/{module}.py"]\npytest_add_cli_args_test_selection = {json.dumps(TESTS[module])}'
    config = config.replace("[tool.mutmut]\n", f"[tool.mutmut]\n{chosen}\n", 1)
    (work / "pyproject.toml").write_text(config, encoding="utf-8")


def exit_codes(module: str) -> dict[str, int | None] | None:
    """Mutant -> mutmut's recorded exit code (None: not tried yet) from the last run of `module`; None: no run."""
    meta = workdir(module) / "mutants" / "etl" / f"{module}.py.meta"
    try:
        codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
    except (OSError, ValueError, KeyError):
        return None
    return codes


def untried(module: str, every: int) -> list[str] | None:
    """The sampled mutants of the last run of `module` that have no outcome yet (None: no last run). mutmut tests
    again every mutant named on its command line; a resumed run names only those."""
    codes = exit_codes(module)
    if codes is None:
        return None
    return [name for name, code in codes.items() if code is None and in_sample(name, every)]


def run_mutmut(module: str, every: int, resume: bool) -> tuple[str, int, float]:
    """mutmut over one module's sample, one mutant at a time; its output goes to build/mutation/<module>.log."""
    names = untried(module, every) if resume else None
    if names == []:
        return module, 0, 0.0
    names = names or sample_patterns(module, every)
    # The cache keeps what tests build with code this run does not mutate (tests/conftest.py: the tiny warehouse).
    env = {**os.environ, "CONTACTS_REPORT_MUTATION": module,
           "CONTACTS_REPORT_MUTATION_CACHE": str(workdir(module) / "cache"),
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONHASHSEED": "0", "NO_PROGRESS": "1"}
    started = time.monotonic()
    with (REPORT / f"{module}.log").open("w") as log:
        result = subprocess.run([str(BIN / "mutmut"), "run", "--max-children", "1", *names], cwd=workdir(module),
                                env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    return module, result.returncode, time.monotonic() - started


def tried(modules: list[str], every: int) -> tuple[int, int]:
    """(sampled mutants with an outcome, sampled mutants) so far, from mutmut's per-file records."""
    done = total = 0
    for module in modules:
        codes = [code for name, code in (exit_codes(module) or {}).items() if in_sample(name, every)]
        total += len(codes)
        done += sum(1 for code in codes if code is not None)
    return done, total


PID_MAX = Path("/proc/sys/kernel/pid_max")
ENOUGH_PIDS = 4_194_304  # systemd's default; the kernel's own is 32,768


def enough_pids() -> None:
    """mutmut's wall-clock timer signals a mutant's process by PID and never cancels the timers of processes that have
    ended. With the kernel's 32,768 PIDs, which the tests' threads use up fast (each takes one), a stray SIGXCPU can
    hit a later mutant and count as a timeout, i.e. as killed (not seen in a run, but nothing prevents it). As root
    the limit is raised to systemd's default; otherwise a warning says the timeouts cannot be fully trusted."""
    try:
        current = int(PID_MAX.read_text())
    except (OSError, ValueError):
        return
    if current >= ENOUGH_PIDS:
        return
    try:
        PID_MAX.write_text(str(ENOUGH_PIDS))
        print(f"kernel.pid_max raised from {current} to {ENOUGH_PIDS} (systemd's default): see docs/testing.md")
    except OSError:
        print(f"WARNING: kernel.pid_max is {current}; timeouts may be stray signals (run as root, or raise it to "
              f"{ENOUGH_PIDS}: sysctl -w kernel.pid_max={ENOUGH_PIDS})", file=sys.stderr)


def run_all(modules: list[str], jobs: int, every: int, resume: bool, progress: bool) -> None:
    """The modules side by side, `jobs` at a time, each testing one mutant at a time: never more test processes than
    cores (mutmut's wall-clock limit is half its CPU limit; on an overloaded machine slow tests would count as
    timeouts, i.e. as killed), and no core idles while a module mutates, type-checks and maps its tests."""
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(run_mutmut, module, every, resume) for module in modules]
        while not all(f.done() for f in futures):
            time.sleep(2)
            if progress:
                done, total = tried(modules, every)
                print(f"\rmutants tried: {done}/{total}  {time.monotonic() - started:5.0f} s", end="", flush=True)
        if progress:
            print()
        failed = []
        for future in futures:
            module, code, seconds = future.result()
            print(f"etl.{module}: mutmut finished in {seconds / 60:.1f} min" + (f" (exit {code})" if code else ""))
            if code:
                failed.append(module)
    if failed:
        sys.exit(f"mutmut run failed for {', '.join(failed)}; see {REPORT}/<module>.log")


def mutmut(module: str, *args: str) -> str:
    return subprocess.run([str(BIN / "mutmut"), *args], cwd=workdir(module), capture_output=True, text=True,
                          check=False).stdout


RUNNER_ERROR = 255  # the test run raised (pytest usage error: e.g. a test id not found); mutmut shows "timeout"


def outcomes(modules: list[str], every: int) -> dict[str, str]:
    """Sampled mutant -> mutmut's outcome, except that a test run which raised is a "runner error", not a timeout:
    such a mutant ran no test, and counting it as killed once made a module's score false (docs/testing.md)."""
    found: dict[str, str] = {}
    for module in modules:
        if workdir(module).is_dir():
            listed = mutmut(module, "results", "--all", "true")
            found |= {m.group(1): m.group(2).strip() for line in listed.splitlines() if (m := _RESULT.match(line))}
            codes = exit_codes(module) or {}
            found |= {name: "runner error" for name, code in codes.items() if code == RUNNER_ERROR}
    return {name: status for name, status in found.items() if in_sample(name, every)}


def diff(mutant: str) -> str:
    shown = mutmut(module_of(mutant).removeprefix("etl."), "show", mutant)
    return "\n".join(line for line in shown.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---"))


def current_fingerprints(modules: set[str]) -> dict[str, str]:
    """Mutant name -> fingerprint, for every mutant of the last run of `modules` (etl.<module>)."""
    found: dict[str, str] = {}
    for module in modules:
        path = mutated_file(workdir(module.removeprefix("etl.")) / "mutants", module)
        if path.exists():
            prints = fingerprints(path.read_text(encoding="utf-8"))
            found |= {f"{module}.{name}": digest for name, digest in prints.items()}
    return found


def write_report(found: dict[str, str], equivalent: set[str], prints: dict[str, str]) -> list[str]:
    lines = ["# Mutation testing", "", "| module | killed | counted | score |", "|---|---:|---:|---:|"]
    summary = []
    for module in sorted({module_of(m) for m in found}):
        of_module = {m: s for m, s in found.items() if module_of(m) == module}
        killed, counted = score(of_module, equivalent)
        pct = 100 * killed / counted if counted else 100.0
        lines.append(f"| {module} | {killed} | {counted} | {pct:.1f}% |")
        summary.append(f"{module:<16} {killed:>5} / {counted:<5} {pct:5.1f}%")
    by_status = Counter(found.values())
    lines += ["", "Outcomes: " + ", ".join(f"{s} {n}" for s, n in sorted(by_status.items())),
              f"Equivalent (docs/testing.md, unchanged since listed): {len(equivalent & set(found))}", "",
              "## Survivors", "", "Each with the row that lists it as equivalent, if it is one.", ""]
    for mutant, status in sorted(found.items()):
        if status not in KILLED and status != NOT_CHECKED and mutant not in equivalent:
            lines += [f"### {mutant} ({status})", "```diff", diff(mutant), "```", "```",
                      f"| `{mutant}` | `{prints.get(mutant, '?')}` | … |", "```", ""]
    (REPORT / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return summary


def write_stale(stale: list[str], prints: dict[str, str]) -> None:
    """Appends to the report each listed equivalent that changed since: its diff now and its row's fingerprint."""
    lines = ["", "## Listed as equivalent, changed since", ""]
    for mutant in stale:
        shown = diff(mutant) if mutant in prints else "(no such mutant any more)"
        lines += [f"### {mutant}: fingerprint now `{prints.get(mutant, '-')}`", "```diff", shown, "```", ""]
    with (REPORT / "report.md").open("a", encoding="utf-8") as report:
        report.write("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make mutation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="mutants tested at once")
    parser.add_argument("--resume", action="store_true",
                        help="keep the last run's results (build/mutation/<module>/mutants)")
    parser.add_argument("--min-score", type=float, default=85.0, help="fail below this score (percent)")
    parser.add_argument("--report-only", action="store_true", help="score the last run without running mutmut")
    parser.add_argument("--every", type=int, default=10, choices=EVERY,
                        help="test mutants 1, 1+N, 1+2N, … of each function (default 10: fits 30 minutes on two "
                             "cores; 1: every mutant, hours)")
    parser.add_argument("--module", action="append", default=[], choices=CORE,
                        help="mutate only this core module (repeatable; default: all of them)")
    args = parser.parse_args(argv)
    modules = args.module or list(CORE)
    REPORT.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        for module in modules:
            prepare(module, args.resume)
        enough_pids()
        run_all(modules, args.jobs, args.every, args.resume, progress=sys.stdout.isatty())
    found = outcomes(modules, args.every)
    if not found:
        sys.exit("no mutants found: run without --report-only first")
    listed = equivalents(EQUIVALENTS.read_text(encoding="utf-8"))
    scored = {module_of(m) for m in found}
    prints = current_fingerprints(scored)
    equivalent = {m for m, (digest, _) in listed.items() if prints.get(m) == digest}
    stale = sorted(m for m in set(listed) - equivalent if module_of(m) in scored)
    for line in write_report(found, equivalent, prints):
        print(line)
    if stale:
        print(f"{len(stale)} mutants listed as equivalent changed or are gone since (counted as the tests found "
              f"them; check each again, see the report): {', '.join(stale[:5])}")
        write_stale(stale, prints)
    killed, counted = score(found, equivalent)
    pct = 100 * killed / counted if counted else 100.0
    unchecked = sum(1 for s in found.values() if s == NOT_CHECKED)
    if unchecked:
        print(f"PARTIAL: {unchecked} of {len(found)} mutants were never tried (an interrupted run; --resume goes on)")
    print(f"report: {REPORT / 'report.md'}")
    print(f"mutation_score={pct:.0f}%")
    return 0 if pct >= args.min_score else 1


if __name__ == "__main__":
    sys.exit(main())
