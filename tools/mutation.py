"""`make mutation`: mutmut over the core modules, each against its own fast tests, then the score.

Each core module is mutated in its own copy of the project (build/mutation/<module>: the checkout stays clean)
with its own tests (TESTS below; [tool.mutmut] in pyproject.toml holds what the runs share); modules run side by
side. Then it reads every mutant's outcome, drops the mutants listed as equivalent in docs/testing.md, and prints
per-module scores and, last, `mutation_score=NN%` (killed ÷ non-equivalent mutants; a mutant no test reaches
counts as survived). The report, with the diff of every survivor, goes to build/mutation/report.md. Exit 1 below
--min-score. `--module report --module windows` mutates only those; --resume goes on from the last run.
"""

from __future__ import annotations

import argparse
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
                 "tests/unit/test_storage_keys.py", "tests/e2e/test_pipeline_contract.py"],
    "archive": ["tests/e2e/test_archive.py"],
    "report": ["tests/e2e/test_report_semantics.py", "tests/unit/test_filters.py", "tests/unit/test_log_csv.py",
               "tests/e2e/test_pages.py"],
    "nightly": ["tests/unit/test_nightly.py", "tests/e2e/test_night_steps.py", "tests/faults/test_mail_faults.py",
                "tests/dags/test_nightly_dag.py"],
    "validate": ["tests/unit/test_validate.py", "tests/unit/test_ingest.py"],
    "transform": ["tests/unit/test_transform.py", "tests/unit/test_pipeline.py"],
    "windows": ["tests/unit/test_windows.py", "tests/e2e/test_report_semantics.py"],
}
CORE = tuple(TESTS)
_EQUIVALENT_ROW = re.compile(r"^\|\s*`(etl\.[^`]+__mutmut_\d+)`\s*\|\s*(.+?)\s*\|\s*$")
_RESULT = re.compile(r"^\s*(etl\.\S+__mutmut_\d+): (.+)$")


def equivalents(text: str) -> dict[str, str]:
    """Mutant name -> reason, from the "Equivalent mutants" table of docs/testing.md."""
    section = text.split("## Equivalent mutants", 1)[-1] if "## Equivalent mutants" in text else ""
    return {m.group(1): m.group(2) for line in section.splitlines() if (m := _EQUIVALENT_ROW.match(line))}


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


def run_mutmut(module: str, jobs: int) -> tuple[str, int, float]:
    """mutmut over one module; its output goes to build/mutation/<module>.log."""
    env = {**os.environ, "CONTACTS_REPORT_MUTATION": "1", "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONHASHSEED": "0", "NO_PROGRESS": "1"}
    started = time.monotonic()
    with (REPORT / f"{module}.log").open("w") as log:
        result = subprocess.run([str(BIN / "mutmut"), "run", "--max-children", str(jobs)], cwd=workdir(module),
                                env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    return module, result.returncode, time.monotonic() - started


def tried(modules: list[str]) -> tuple[int, int]:
    """(mutants with an outcome, mutants) so far, from mutmut's per-file records."""
    done = total = 0
    for module in modules:
        meta = workdir(module) / "mutants" / "etl" / f"{module}.py.meta"
        try:
            codes = json.loads(meta.read_text())["exit_code_by_key"].values()
        except (OSError, ValueError, KeyError):
            continue
        total += len(codes)
        done += sum(1 for code in codes if code is not None)
    return done, total


def run_all(modules: list[str], jobs: int, progress: bool) -> None:
    """The modules side by side, `jobs` at a time, each testing up to `jobs` mutants at once (one module's set-up,
    mypy and tracing, leaves cores free that the other's mutants use)."""
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(run_mutmut, module, jobs) for module in modules]
        while not all(f.done() for f in futures):
            time.sleep(2)
            if progress:
                done, total = tried(modules)
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


def outcomes(modules: list[str]) -> dict[str, str]:
    found = {}
    for module in modules:
        if workdir(module).is_dir():
            listed = mutmut(module, "results", "--all", "true")
            found |= {m.group(1): m.group(2).strip() for line in listed.splitlines() if (m := _RESULT.match(line))}
    return found


def diff(mutant: str) -> str:
    shown = mutmut(module_of(mutant).removeprefix("etl."), "show", mutant)
    return "\n".join(line for line in shown.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---"))


def write_report(found: dict[str, str], equivalent: dict[str, str]) -> list[str]:
    lines = ["# Mutation testing", "", "| module | killed | counted | score |", "|---|---:|---:|---:|"]
    summary = []
    for module in sorted({module_of(m) for m in found}):
        of_module = {m: s for m, s in found.items() if module_of(m) == module}
        killed, counted = score(of_module, set(equivalent))
        pct = 100 * killed / counted if counted else 100.0
        lines.append(f"| {module} | {killed} | {counted} | {pct:.1f}% |")
        summary.append(f"{module:<16} {killed:>5} / {counted:<5} {pct:5.1f}%")
    by_status = Counter(found.values())
    lines += ["", "Outcomes: " + ", ".join(f"{s} {n}" for s, n in sorted(by_status.items())),
              f"Equivalent (docs/testing.md): {len(set(equivalent) & set(found))}", "", "## Survivors", ""]
    for mutant, status in sorted(found.items()):
        if status not in KILLED and status != NOT_CHECKED and mutant not in equivalent:
            lines += [f"### {mutant} ({status})", "```diff", diff(mutant), "```", ""]
    (REPORT / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make mutation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="mutants tested at once")
    parser.add_argument("--resume", action="store_true",
                        help="keep the last run's results (build/mutation/<module>/mutants)")
    parser.add_argument("--min-score", type=float, default=85.0, help="fail below this score (percent)")
    parser.add_argument("--report-only", action="store_true", help="score the last run without running mutmut")
    parser.add_argument("--module", action="append", default=[], choices=CORE,
                        help="mutate only this core module (repeatable; default: all of them)")
    args = parser.parse_args(argv)
    modules = args.module or list(CORE)
    REPORT.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        for module in modules:
            prepare(module, args.resume)
        run_all(modules, args.jobs, progress=sys.stdout.isatty())
    found = outcomes(modules)
    if not found:
        sys.exit("no mutants found: run without --report-only first")
    equivalent = equivalents(EQUIVALENTS.read_text(encoding="utf-8") if EQUIVALENTS.exists() else "")
    scored = {module_of(m) for m in found}
    stale = sorted(m for m in set(equivalent) - set(found) if module_of(m) in scored)
    for line in write_report(found, equivalent):
        print(line)
    if stale:
        print(f"{len(stale)} mutants listed as equivalent no longer exist (the code moved): {', '.join(stale[:5])}")
    killed, counted = score(found, set(equivalent))
    pct = 100 * killed / counted if counted else 100.0
    unchecked = sum(1 for s in found.values() if s == NOT_CHECKED)
    if unchecked:
        print(f"PARTIAL: {unchecked} of {len(found)} mutants were never tried (an interrupted run; --resume goes on)")
    print(f"report: {REPORT / 'report.md'}")
    print(f"mutation_score={pct:.0f}%")
    return 0 if pct >= args.min_score else 1


if __name__ == "__main__":
    sys.exit(main())
