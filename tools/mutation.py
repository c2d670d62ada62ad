"""`make mutation`: mutmut over the core modules ([tool.mutmut] in pyproject.toml), then the score.

Runs `mutmut run` in a copy of the project (build/mutation/work: the checkout stays clean) from scratch, or on top
of the last run with --resume; reads every mutant's outcome, drops the mutants listed as equivalent in
docs/testing.md, and prints per-module scores and, last, `mutation_score=NN%` (killed ÷ non-equivalent mutants; a
mutant no test reaches counts as survived). The report, with the diff of every survivor, goes to
build/mutation/report.md. Exit 1 below --min-score. `--module report --module windows` mutates only those.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
REPORT = ROOT / "build/mutation"
WORK = REPORT / "work"
EQUIVALENTS = ROOT / "docs/testing.md"
KILLED = {"killed", "timeout", "caught by type check"}
NOT_CHECKED = "not checked"
CORE = ("validate", "ingest", "transform", "pipeline", "windows", "report", "archive", "nightly")
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


def prepare(modules: list[str], resume: bool) -> None:
    """A copy of the project's files (tracked or new, not ignored) to mutate, with only `modules` if given."""
    if WORK.exists() and not resume:
        shutil.rmtree(WORK)
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source, target = ROOT / name, WORK / name
        if source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    if modules:
        config = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
        chosen = ", ".join(f'"etl/{m}.py"' for m in modules)
        config = re.sub(r"only_mutate = \[[^\]]*\]", f"only_mutate = [{chosen}]", config, count=1)
        (WORK / "pyproject.toml").write_text(config, encoding="utf-8")


def mutmut(*args: str) -> str:
    return subprocess.run([str(BIN / "mutmut"), *args], cwd=WORK, capture_output=True, text=True,
                          check=False).stdout


def run_mutmut(jobs: int, quiet: bool) -> None:
    env = {**os.environ, "CONTACTS_REPORT_MUTATION": "1", "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONHASHSEED": "0", "NO_PROGRESS": "1"}
    with (REPORT / "mutmut.log").open("w") as log:
        # mutmut redraws a spinner line many times a second: on a terminal it is the progress; elsewhere, the log.
        result = subprocess.run([str(BIN / "mutmut"), "run", "--max-children", str(jobs)], cwd=WORK, env=env,
                                stdout=None if not quiet else log, stderr=subprocess.STDOUT if quiet else None,
                                check=False)
    if result.returncode != 0:
        sys.exit(f"mutmut run failed (exit {result.returncode}); see {REPORT / 'mutmut.log'}")


def outcomes() -> dict[str, str]:
    listed = mutmut("results", "--all", "true")
    return {m.group(1): m.group(2).strip() for line in listed.splitlines() if (m := _RESULT.match(line))}


def diff(mutant: str) -> str:
    shown = mutmut("show", mutant)
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
                        help="keep the last run's results (build/mutation/work/mutants)")
    parser.add_argument("--min-score", type=float, default=85.0, help="fail below this score (percent)")
    parser.add_argument("--report-only", action="store_true", help="score the last run without running mutmut")
    parser.add_argument("--module", action="append", default=[], choices=CORE,
                        help="mutate only this core module (repeatable; default: all of them)")
    args = parser.parse_args(argv)
    REPORT.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        prepare(args.module, args.resume)
        run_mutmut(args.jobs, quiet=not sys.stdout.isatty())
    found = outcomes()
    if not found:
        sys.exit("no mutants found: run without --report-only first")
    equivalent = equivalents(EQUIVALENTS.read_text(encoding="utf-8") if EQUIVALENTS.exists() else "")
    stale = sorted(set(equivalent) - set(found))
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
