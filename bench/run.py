"""`make bench`: the pipeline against a reference measured in the same run, on the same data.

Each measurement runs in a child process of its own, so its wall time and peak RSS are its own (os.wait4).
Ratios, not absolute times, are what hold on a noisy shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from night import Night

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
START = date(2026, 1, 1)
DAYS = 31  # 30 nights of history, then the 31st


@dataclass
class Measure:
    name: str
    seconds: float
    peak_mb: float
    rows: int | None = None
    cpu_seconds: float = 0.0  # user + system

    @property
    def rows_per_s(self) -> str:
        if not self.rows:
            return "—"
        rate = self.rows / self.seconds
        return f"{rate:,.1f}" if rate < 100 else f"{rate:,.0f}"


def child(name: str, code: str, rows: int | None = None, env: dict[str, str] | None = None,
          cwd: Path = ROOT) -> Measure:
    """Run `code` in a fresh Python process (in `cwd`); wall time, the child's own CPU time and peak RSS."""
    started = time.perf_counter()
    process = subprocess.Popen([PY, "-c", code], cwd=cwd, env={**os.environ, "NO_PROGRESS": "1", **(env or {})},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"{name} failed:\n{process.stderr.read().decode()[-3000:] if process.stderr else ''}")
    return Measure(name, seconds, usage.ru_maxrss / 1024, rows, usage.ru_utime + usage.ru_stime)


def ensure_data(folder: Path, events: int, workspaces: int, seed: int) -> Path:
    landing = folder / "landing"
    if not (landing / "workspaces.json").exists():
        child("generate", f"""
from datetime import date
from etl.generate import GenerateOptions, generate
from etl.storage import LocalStorage
generate(LocalStorage({str(landing)!r}), GenerateOptions(start=date({START.year}, {START.month}, {START.day}),
         days={DAYS}, workspaces={workspaces}, events_per_day={events // 30}, seed={seed}))
""")
    return landing


def ensure_catchup(folder: Path, landing: Path, day: date) -> Path:
    """The whole dataset as ONE arrival day (a feed catching up after an outage): the same files, linked under
    `ingest_date=day`. This is the ETL-vs-DuckDB measurement: at 1 M / 10 M events fixed costs (process start,
    imports) no longer hide the per-row cost. Hard links: the ETL never follows a symbolic link."""
    catchup = folder / "catchup"
    if (catchup / "workspaces.json").is_symlink():  # made by an earlier version
        shutil.rmtree(catchup)
    if not (catchup / "workspaces.json").exists():
        for source in sorted(landing.glob("events/ingest_date=*/hour=*/*.ndjson")):
            arrival = source.parts[-3].split("=", 1)[1]
            target = catchup / f"events/ingest_date={day}" / source.parts[-2] / f"part-{arrival}.ndjson"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.hardlink_to(source)
        (catchup / "workspaces.json").hardlink_to(landing / "workspaces.json")
    return catchup


def lines_of(landing: Path, day: date) -> int:
    return sum(p.read_bytes().count(b"\n") for p in (landing / f"events/ingest_date={day}").rglob("*.ndjson"))


ETL = """
from datetime import date
from etl.pipeline import run_etl
from etl.storage import LocalStorage
run_etl(LocalStorage({landing!r}), LocalStorage({warehouse!r}), date.fromisoformat({day!r}))
"""

# One shard of the catch-up day (`--shard K/N`), and the finish that adds the shards up (docs/warehouse.md, "Shards").
ETL_SHARD = """
from datetime import date
from etl.pipeline import run_etl
from etl.storage import LocalStorage
from etl.warehouse import Shard
run_etl(LocalStorage({landing!r}), LocalStorage({warehouse!r}), date.fromisoformat({day!r}),
        shard=Shard({number}, {count}))
"""
ETL_FINISH = """
from datetime import date
from etl.pipeline import finish_night
from etl.storage import LocalStorage
finish_night(LocalStorage({landing!r}), LocalStorage({warehouse!r}), date.fromisoformat({day!r}), {count})
"""
SHARDS = 4

DUCKDB = """
import duckdb, json
con = duckdb.connect()
con.execute("SET threads TO 2")
con.execute("CREATE TABLE ws AS SELECT * FROM read_json_auto({workspaces!r})")
con.execute('''
COPY (
  WITH raw AS (
    SELECT * FROM read_json({files!r}, format='newline_delimited', ignore_errors=true, columns={{
      event_id: 'VARCHAR', event_type: 'VARCHAR', occurred_at: 'VARCHAR', workspace_id: 'BIGINT',
      contact_id: 'BIGINT', contact_name: 'VARCHAR', source: 'VARCHAR', channel_id: 'BIGINT',
      channel_name: 'VARCHAR', channel_type: 'VARCHAR', user_id: 'BIGINT', user_name: 'VARCHAR',
      merged_contact_id: 'BIGINT'}})
  ), typed AS (
    SELECT *, TRY_CAST(occurred_at AS TIMESTAMPTZ) AS ts FROM raw
    WHERE event_id IS NOT NULL
      AND event_type IN ('contact.added', 'contact.connected', 'contact.deleted', 'contact.merged')
  ), dedup AS (
    SELECT * FROM typed QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY ts) = 1
  ), local AS (
    SELECT d.*, CAST(timezone(w.timezone, d.ts) AS DATE) AS local_date
    FROM dedup d JOIN ws w USING (workspace_id) WHERE d.ts IS NOT NULL
  )
  SELECT workspace_id, local_date, event_type, source, channel_id, user_id, count(*) AS events
  FROM local GROUP BY ALL
) TO {out!r} (FORMAT parquet)
''')
"""

# The same reference also writing the de-duplicated events, partitioned by local date: the ETL's full output.
DUCKDB_WITH_EVENTS = DUCKDB.replace("COPY (\n  WITH raw", "CREATE TABLE events AS\n  WITH raw").replace(
    """  SELECT workspace_id, local_date, event_type, source, channel_id, user_id, count(*) AS events
  FROM local GROUP BY ALL
) TO {out!r} (FORMAT parquet)
''')""", """  SELECT * FROM local
''')
con.execute("COPY events TO {events_out!r} (FORMAT parquet, PARTITION_BY (local_date), OVERWRITE_OR_IGNORE)")
con.execute('''COPY (SELECT workspace_id, local_date, event_type, source, channel_id, user_id, count(*) AS events
  FROM events GROUP BY ALL) TO {out!r} (FORMAT parquet)''')""")

# The landing files' schema as the DuckDB reference and the ETL declare it (text as String here).
FLOOR_SCHEMA = """
import polars as pl
SCHEMA = {{name: pl.Int64 if name.endswith("_id") and name != "event_id" else pl.String for name in (
    "event_id", "event_type", "occurred_at", "workspace_id", "contact_id", "contact_name", "source", "channel_id",
    "channel_name", "channel_type", "user_id", "user_name", "merged_contact_id")}}
"""

NDJSON_FLOOR = FLOOR_SCHEMA + """
import glob, io, json
# The schema is declared, as in the DuckDB reference and in the ETL: inferring it (a second pass over every file)
# made this floor ~3x slower at 10 M and the ETL's ratio to it look better than it is. One scan over all the files
# Polars accepts: reading them one `read_ndjson` at a time was ~2.3x slower at 1 M and ~1.25x at 10 M, which also
# flattered the ratio.
def without_malformed(path):  # Polars refuses a whole file for one malformed line: read it without them
    good = []
    for line in open(path, "rb"):
        try:
            if isinstance(json.loads(line), dict):
                good.append(line)
        except ValueError:
            pass
    return pl.read_ndjson(io.BytesIO(b"".join(good)), schema=SCHEMA, ignore_errors=True)
refused = {refused!r}
accepted = [path for path in sorted(glob.glob({pattern!r})) if path not in refused]
frame = pl.concat([pl.scan_ndjson(accepted, schema=SCHEMA, ignore_errors=True).collect(),
                   *(without_malformed(path) for path in refused)], how="vertical")
"""

# Which landing files Polars refuses (found once, not timed): the NDJSON floor reads those apart.
REFUSED_BY_POLARS = FLOOR_SCHEMA + """
import glob, json, sys
refused = []
for path in sorted(glob.glob({pattern!r})):
    try:
        pl.read_ndjson(path, schema=SCHEMA, ignore_errors=True)
    except pl.exceptions.PolarsError:
        refused.append(path)
json.dump(refused, sys.stdout)
"""


def refused_by_polars(pattern: str) -> list[str]:
    result = subprocess.run([PY, "-c", REFUSED_BY_POLARS.format(pattern=pattern)], cwd=ROOT, check=True,
                            capture_output=True)
    return list(json.loads(result.stdout))


PARQUET_FLOOR = """
import polars as pl, glob
pl.scan_parquet(sorted(glob.glob({pattern!r}))).select(
    "workspace_id", "local_date", "event_type", "source", "channel_id", "user_id").collect()
"""

RENDER = """
from datetime import date
from etl.render import RenderJob
from etl.render_jobs import render
from etl.windows import WINDOW_NAMES
if __name__ == "__main__":  # the workers are spawned and re-import this module
    ids = tuple(range(1, 1001, 1000 // {workspaces}))[:{workspaces}]  # a spread: sizes are skewed by id
    render(RenderJob({warehouse!r}, {out!r}, ids, date.fromisoformat({day!r}), None, WINDOW_NAMES, ()),
           workers={workers})
"""

PROFILE = """
import cProfile, pstats, io
from datetime import date
from etl.render import RenderJob, render_batch
from etl.windows import WINDOW_NAMES
ids = tuple(range(1, 1001, 1000 // {workspaces}))[:{workspaces}]
job = RenderJob({warehouse!r}, {out!r}, ids, date.fromisoformat({day!r}), None, WINDOW_NAMES, ())
profile = cProfile.Profile()
profile.runcall(render_batch, job)
stats = pstats.Stats(profile)
total = max(v[3] for k, v in stats.stats.items() if k[2] == "render_batch")
charts = sum(v[3] for k, v in stats.stats.items() if k[2] == "_charts")
open({result!r}, "w").write(str(charts / total))
"""


def median(measures: list[Measure]) -> Measure:
    """The median measurement by time, with the highest peak RSS of all."""
    middle = sorted(measures, key=lambda m: m.seconds)[len(measures) // 2]
    return Measure(middle.name, middle.seconds, max(m.peak_mb for m in measures), middle.rows, middle.cpu_seconds)


def mid(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def spread(values: list[float]) -> str:
    return "/".join(f"{v:.2f}" for v in sorted(values))


def same_bytes(part: Path, full: Path, *others: Path) -> bool:
    """Every file of `part` (and of `others`, which render the same workspaces) equals the full render's, but the
    index pages and their records (they list the workspaces each render had)."""
    files = [p.relative_to(part) for p in part.rglob("*")
             if p.is_file() and p.name not in ("index.html", "indexes.json", "pages.json")]
    return bool(files) and all((full / f).read_bytes() == (root / f).read_bytes()
                               for f in files for root in (part, *others))


def du_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def run(size_name: str, events: int, workspaces: int, render_workspaces: int, repeats: int, results: list[str],
        summary: dict[str, str]) -> None:
    folder = ROOT / "bench/data" / size_name
    landing = ensure_data(folder, events, workspaces, seed=42)
    day1, day31 = START, START + timedelta(days=DAYS - 1)
    scratch = folder / "scratch"
    subprocess.run(["rm", "-rf", str(scratch)], check=True)

    catchup_day = START + timedelta(days=DAYS)
    catchup = ensure_catchup(folder, landing, catchup_day)
    rows = lines_of(catchup, catchup_day)
    files = str(catchup / f"events/ingest_date={catchup_day}/*/*.ndjson")
    refused = refused_by_polars(files)
    # The ETL and its references run `repeats` times, interleaved: each round's ratios compare neighbours in
    # time; the median ratio and each figure's median time are reported (this shared machine drifts by 5-15 %
    # between runs).
    rounds = []
    for round_number in range(repeats):
        rounds.append((
            child("etl (the whole dataset as one arrival day)",
                  ETL.format(landing=str(catchup), warehouse=str(scratch / f"wh-one-{round_number}"),
                             day=str(catchup_day)), rows),
            child("duckdb reference (same files; the issue's query, aggregates)",
                  DUCKDB.format(workspaces=str(landing / "workspaces.json"), files=files,
                                out=str(scratch / "duck.parquet")), rows),
            child("duckdb, also writing the de-duplicated events",
                  DUCKDB_WITH_EVENTS.format(workspaces=str(landing / "workspaces.json"), files=files,
                                            out=str(scratch / "duck2.parquet"),
                                            events_out=str(scratch / "duck-events")), rows),
            child("floor: polars scan_ndjson only (schema declared)",
                  NDJSON_FLOOR.format(pattern=files, refused=refused), rows),
        ))
    etl_one, duck, duck_events, floor = (median(list(same_kind)) for same_kind in zip(*rounds, strict=True))
    def etl_ratios(figure: str) -> dict[str, list[float]]:
        """Each round's ETL `figure` over each reference's."""
        return {name: [getattr(measures[0], figure) / getattr(measures[index], figure) for measures in rounds]
                for index, name in enumerate(("duckdb", "duckdb_events", "floor"), start=1)}

    ratios = etl_ratios("seconds")
    # The same by CPU time (user + system): steadier than wall time on a shared host, and what both cores share.
    cpu_ratios = etl_ratios("cpu_seconds")
    pq_floor = child("floor: parquet columns for the aggregation",
                     PARQUET_FLOOR.format(pattern=str(scratch / "wh-one-0/events/*/*.parquet")))
    common = {"landing": str(catchup), "warehouse": str(scratch / "wh-shards"), "day": str(catchup_day),
              "count": SHARDS}
    shards = [child(f"etl, shard {number} of {SHARDS} (the same arrival day)", ETL_SHARD.format(**common,
                                                                                           number=number))
              for number in range(SHARDS)]
    finish = child(f"etl, finishing the {SHARDS} shards", ETL_FINISH.format(**common))

    history = scratch / "wh-history"
    for offset in range(DAYS - 1):
        child("history", ETL.format(landing=str(landing), warehouse=str(history),
                                    day=str(START + timedelta(days=offset))))
    # The warehouse as the night before left it (before night 31's late events): the night table starts from that
    # night's pages and bucket
    shutil.copytree(history, scratch / "wh-before")
    # Night 1 into an empty warehouse and night 31 after the 30 nights, in interleaved rounds like the ETL above,
    # and more of them: a night at 1 M takes under 1 s, where one hiccup of the machine moves the ratio by 0.3 or
    # more. From the second round night 31 is re-run, which does the same work: the same reads of history, the
    # same files written.
    nights = []
    for _ in range(2 * repeats + 1):
        subprocess.run(["rm", "-rf", str(scratch / "wh-night-1")], check=True)
        nights.append((
            child("night 1 (empty warehouse)", ETL.format(landing=str(landing), warehouse=str(scratch / "wh-night-1"),
                                                           day=str(day1)), lines_of(landing, day1)),
            child("night 31 (30 nights of history)", ETL.format(landing=str(landing), warehouse=str(history),
                                                                 day=str(day31)), lines_of(landing, day31)),
        ))
    first, last = (median(list(same_kind)) for same_kind in zip(*nights, strict=True))
    ratios["incremental"] = [night31.seconds / night1.seconds for night1, night31 in nights]

    report_day = str(day31 - timedelta(days=1))
    pages = render_workspaces * 7
    one = child("render, 1 worker (spread)", RENDER.format(workspaces=render_workspaces, warehouse=str(history),
                                                           out=str(scratch / "out1"), day=report_day, workers=1),
                pages)
    two = child("render, 2 workers (spread)", RENDER.format(workspaces=render_workspaces, warehouse=str(history),
                                                            out=str(scratch / "out2"), day=report_day, workers=2),
                pages)
    full = child(f"render, full nightly: {workspaces:,} workspaces × 7 windows, 2 workers",
                 RENDER.format(workspaces=workspaces, warehouse=str(history), out=str(scratch / "out-full"),
                               day=report_day, workers=2), workspaces * 7)
    same = same_bytes(scratch / "out2", scratch / "out-full", scratch / "out1")
    share_file = scratch / "charts-share"
    child("render profile", PROFILE.format(workspaces=min(render_workspaces, 10), warehouse=str(history),
                                           out=str(scratch / "out-prof"), day=report_day, result=str(share_file)))
    charts_share = float(share_file.read_text())

    from night import measure as measure_night  # night.py imports this module: not at the top

    night = measure_night(history, scratch / "wh-before", scratch / "out-full", report_day, scratch / "night",
                          workspaces)
    night_table(size_name, last, night, results, summary)

    table = [one, two, full, etl_one, duck, duck_events, floor, pq_floor, *shards, finish, first, last]
    results.append(f"\n### {size_name}: {events:,} events over {DAYS} days, {workspaces} workspaces "
                   f"(ETL: all {rows:,} lines landed as one arrival day; nights 1 and 31: {first.rows:,} and "
                   f"{last.rows:,} lines)\n")
    results.append("| measurement | seconds | CPU seconds | rows/s (pages/s) | peak RSS MB |")
    results.append("|---|---:|---:|---:|---:|")
    for m in table:
        results.append(f"| {m.name} | {m.seconds:.2f} | {m.cpu_seconds:.2f} | {m.rows_per_s} | {m.peak_mb:,.0f} |")
    results.append(f"\nETL / DuckDB = {mid(ratios['duckdb']):.2f} (against DuckDB also writing the events: "
                   f"{mid(ratios['duckdb_events']):.2f}); ETL / NDJSON floor = {mid(ratios['floor']):.2f} "
                   f"(medians of {repeats} interleaved rounds; the rounds: {spread(ratios['duckdb'])}, "
                   f"{spread(ratios['duckdb_events'])} and {spread(ratios['floor'])}; the table shows each figure's "
                   f"median time, that round's CPU time and the highest peak RSS); by CPU time (user + system), "
                   f"ETL / DuckDB = "
                   f"{mid(cpu_ratios['duckdb']):.2f} ({mid(cpu_ratios['duckdb_events']):.2f} against DuckDB also "
                   f"writing the events) and ETL / NDJSON floor = {mid(cpu_ratios['floor']):.2f} (rounds: "
                   f"{spread(cpu_ratios['floor'])}); night 31 / night 1 = "
                   f"{mid(ratios['incremental']):.2f} (rounds: {spread(ratios['incremental'])}); "
                   f"Matplotlib share of render time = {charts_share:.0%} (profile of "
                   f"{min(render_workspaces, 10)} workspaces); "
                   f"full nightly render {full.seconds:,.0f} s = {workspaces * 7 / full.seconds:.1f} pages/s, "
                   f"{du_mb(scratch / 'out-full'):,.0f} MB written; the spread's pages are byte-identical in the "
                   f"1-worker, 2-worker and full renders: {same}. The spread is {render_workspaces} workspaces "
                   "over the size range, the largest included (it holds ~24 % of all events). "
                   f"In {SHARDS} shards the same arrival day peaks at {max(m.peak_mb for m in shards):,.0f} MB per "
                   f"shard, {max(m.peak_mb for m in shards) / etl_one.peak_mb:.2f} of one process's "
                   f"{etl_one.peak_mb:,.0f} MB (each shard reads every line; they ran one after the other here).")
    summary.update(shard_peak_vs_whole=f"{max(m.peak_mb for m in shards) / etl_one.peak_mb:.2f}",
                   etl_vs_duckdb=f"{mid(ratios['duckdb']):.2f}",
                   etl_vs_ndjson_floor=f"{mid(ratios['floor']):.2f}",
                   incremental_ratio=f"{mid(ratios['incremental']):.2f}",
                   render_pages_per_s=f"{workspaces * 7 / full.seconds:.1f}",
                   full_render_s=f"{full.seconds:.0f}")


def night_table(size_name: str, ingest: Measure, night: Night, results: list[str], summary: dict[str, str]) -> None:
    """The whole night, phase by phase: ingest (night 31), the night's render (its pages and the late pages),
    publish, archive, e-mail."""
    from night import CONCURRENCY, LATENCY

    phases = [ingest, night.render, night.publish, night.archive, night.email]
    published = night.published
    requests = published["requests"]
    plain, uploaded = published["plain_bytes"], published["bytes"]
    assert isinstance(requests, dict) and isinstance(plain, int) and isinstance(uploaded, int)
    total = sum(m.seconds for m in phases)
    results.append(f"\n### {size_name}: the whole night (S3 answering every request {LATENCY * 1000:.0f} ms late, "
                   f"{CONCURRENCY} requests in flight; SMTP on loopback)\n")
    results.append("| phase | seconds | CPU seconds | peak RSS MB | S3 requests | loopback servers' CPU seconds "
                   "(moto's) | what |")
    results.append("|---|---:|---:|---:|---:|---:|---|")
    what = [f"{ingest.rows or 0:,} lines",
            f"{night.render.rows or 0:,} pages ({night.late_pages:,} of them late pages)",
            f"{published['uploaded']:,} of {published['objects']:,} objects uploaded ({uploaded / 1e6:,.0f} "
            f"MB; the others unchanged since the night before), {night.stored_bytes / 1e6:,.0f} MB stored for the "
            f"night's files ({plain / 1e6:,.0f} MB as files), requests "
            + ", ".join(f"{k} {v:,}" for k, v in sorted(requests.items())),
            f"{night.snapshots:,} snapshots, {night.mirrored:,} objects mirrored", f"{night.sent:,} e-mails"]
    def served(name: str) -> str:
        """The phase's S3 requests and the loopback servers' CPU seconds serving them (moto's share)."""
        if name not in night.s3_cpu:
            return "— | —"
        return (f"{sum(night.s3_requests[name].values()):,} | "
                f"{night.s3_cpu[name]:.1f} ({night.moto_cpu[name]:.1f})")

    for measure_, text in zip(phases, what, strict=True):
        results.append(f"| {measure_.name} | {measure_.seconds:.1f} | {measure_.cpu_seconds:.1f} | "
                       f"{measure_.peak_mb:,.0f} | {served(measure_.name)} | {text} |")
    names = [m.name for m in phases if m.name in night.s3_cpu]
    requests_sent = sum(sum(night.s3_requests[n].values()) for n in names)
    moto = sum(night.moto_cpu[n] for n in names)
    results.append(f"| **the night** | **{total:.1f}** | | | {requests_sent:,} | "
                   f"{sum(night.s3_cpu[n] for n in names):.1f} ({moto:.1f}) | |")
    results.append(f"| {night.floor.name} | {night.floor.seconds:.1f} | {night.floor.cpu_seconds:.1f} | "
                   f"{night.floor.peak_mb:,.0f} | {served(night.floor.name)} | "
                   f"{night.floor.rows or 0:,} objects, {plain / 1e6:,.0f} MB |")
    ratio = night.publish.seconds / night.floor.seconds
    results.append(f"\npublish / floor = {ratio:.2f}; bytes stored / plain = "
                   f"{night.stored_bytes / plain:.3f}; moto's server spent {moto:.0f} CPU-s on the night's "
                   f"{requests_sent:,} S3 requests ({1000 * moto / max(requests_sent, 1):.1f} ms each): one process, "
                   "so at most one core, a floor under the night's time on this rig whatever the client does")
    summary.update(night_s=f"{total:.0f}", publish_vs_floor=f"{ratio:.2f}",
                   bytes_per_night=f"{night.stored_bytes / 1e6:.0f}MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1M,10M", help="comma-separated: 1M, 10M (default %(default)s)")
    parser.add_argument("--render-workspaces", type=int, default=40,
                        help="workspaces rendered for the pages/s figures (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="interleaved rounds of the ETL and its references; medians reported (default %(default)s)")
    args = parser.parse_args()
    sizes = {"1M": 1_000_000, "10M": 10_000_000}
    results = ["# Benchmark results", "", "Machine: " + os.uname().machine + f", {os.cpu_count()} cores. "
               "Each figure is one child process; ratios compare figures of the same run. The ETL and its references "
               "(DuckDB, the NDJSON floor) run in interleaved rounds (`--repeats`): medians."]
    summary: dict[str, str] = {}
    for name in args.sizes.split(","):
        print(f"running {name}…", file=sys.stderr)
        run(name, sizes[name], 1000, args.render_workspaces, args.repeats, results, summary)
    line = " ".join(f"{k}={v}" for k, v in summary.items())
    text = "\n".join(results) + "\n\n" + line + "\n"
    (ROOT / "bench/results").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench/results/latest.md").write_text(text)
    print(text)
    print(json.dumps(summary), file=sys.stderr)


if __name__ == "__main__":
    main()
