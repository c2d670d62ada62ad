"""`make bench-ab`: the ETL of a base revision against the working tree, on the bench's catch-up data.

A change worth less than the machine's drift (±0.5 s on a 27 s run here) needs a comparison in the same run: the
two sides run in interleaved rounds, each in a child process of its own (wall time, user + system CPU and peak RSS
from os.wait4), and the medians and their ratios are reported. CPU time is the steadier figure: both cores are busy
for most of a run, so less work is what makes it faster. Last, the two warehouses of the final round are compared
file by file (run summaries without their `seconds`): a change meant to keep the output must keep it byte for byte.

The base is checked out with `git worktree` into a temporary folder and imported from there (`PYTHONPATH`); both
sides share this checkout's virtualenv, so a base with other dependencies is not comparable this way.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

from run import DAYS, ETL, ROOT, START, Measure, child, ensure_catchup, ensure_data

SIZES = {"1M": 1_000_000, "10M": 10_000_000}


def etl_run(source: Path, landing: Path, warehouse: Path, day: str) -> Measure:
    """One ETL of `day` with the code under `source`, into an empty `warehouse`."""
    subprocess.run(["rm", "-rf", str(warehouse)], check=True)
    return child(f"the ETL of {source}", ETL.format(landing=str(landing), warehouse=str(warehouse), day=day),
                 env={"PYTHONPATH": str(source)}, cwd=source)


def fingerprint(warehouse: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file; run summaries without their timing."""
    prints = {}
    for path in sorted(p for p in warehouse.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.suffix == ".json":
            summary = json.loads(data)
            summary.pop("seconds", None)
            data = json.dumps(summary, sort_keys=True).encode()
        prints[str(path.relative_to(warehouse))] = hashlib.sha256(data).hexdigest()
    return prints


def differences(base: dict[str, str], work: dict[str, str]) -> list[str]:
    return sorted(name for name in base.keys() | work.keys() if base.get(name) != work.get(name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="HEAD", help="git revision to compare with (default %(default)s)")
    parser.add_argument("--size", default="10M", choices=sorted(SIZES), help="data set (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default %(default)s)")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    folder = ROOT / "bench/data" / args.size
    day = START + timedelta(days=DAYS)
    catchup = ensure_catchup(folder, ensure_data(folder, SIZES[args.size], 1000, seed=42), day)
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as scratch:
        base = Path(scratch) / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--quiet", "--detach", str(base), args.base],
                       check=True)
        try:
            sides: dict[str, list[Measure]] = {"base": [], "work": []}
            for number in range(1, args.rounds + 1):
                for side, source in (("base", base), ("work", ROOT)):
                    sides[side].append(etl_run(source, catchup, Path(scratch) / f"wh-{side}", str(day)))
                print(f"round {number}/{args.rounds}: base {sides['base'][-1].seconds:.2f} s, "
                      f"work {sides['work'][-1].seconds:.2f} s", file=sys.stderr)
            changed = differences(fingerprint(Path(scratch) / "wh-base"), fingerprint(Path(scratch) / "wh-work"))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False)
    print(report(args.base, args.size, sides, changed))


def report(base: str, size: str, sides: dict[str, list[Measure]], changed: list[str]) -> str:
    def median(side: str, figure: str) -> float:
        return statistics.median(getattr(run, figure) for run in sides[side])

    rows = [f"| {label} | {median('base', figure):,.2f} | {median('work', figure):,.2f} | "
            f"{median('work', figure) / median('base', figure):.3f} |"
            for label, figure in (("wall s", "seconds"), ("CPU s (user + system)", "cpu_seconds"),
                                  ("peak RSS MB", "peak_mb"))]
    identical = "yes" if not changed else f"no: {len(changed)} files differ, e.g. {', '.join(changed[:3])}"
    return "\n".join([
        f"ETL of {size} lines in one arrival day: `{base}` (base) against the working tree (work), medians of "
        f"{len(sides['base'])} interleaved rounds", "",
        "| figure | base | work | work / base |", "|---|---:|---:|---:|", *rows, "",
        f"warehouses byte-identical: {identical}", "",
        f"wall_ratio={median('work', 'seconds') / median('base', 'seconds'):.3f} "
        f"cpu_ratio={median('work', 'cpu_seconds') / median('base', 'cpu_seconds'):.3f} "
        f"identical={'yes' if not changed else 'no'}"])


if __name__ == "__main__":
    main()
