"""Print what `make demo` produced and where to look (reads the ETL run summaries)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(demo: Path, out: Path) -> None:
    runs = [json.loads(line) for line in (demo / "etl-runs.ndjson").read_text().splitlines()]
    total = {k: sum(r[k] for r in runs) for k in ("lines_read", "events_valid", "events_quarantined",
                                                 "duplicates_dropped", "late_events")}
    print(f"\nProcessed {len(runs)} arrival days ({runs[0]['ingest_date']} .. {runs[-1]['ingest_date']}):")
    for key, value in total.items():
        print(f"  {key:<20} {value:>10,}")
    warehouse = demo / "warehouse"
    print(f"\nLanding zone:   {demo / 'landing'}")
    print(f"Warehouse:      {warehouse}")
    print(f"  events/       {len(list(warehouse.glob('events/*/*.parquet')))} daily partitions (workspace-local dates)")
    print(f"  daily/        {len(list(warehouse.glob('daily/*/*.parquet')))} daily aggregate partitions")
    print("  quarantine/   rejected lines with their reason, per arrival day")
    print(f"  _runs/        one JSON run summary per arrival day (also in {demo / 'etl-runs.ndjson'})")
    rendered = json.loads((demo / "render.json").read_text())
    print(f"\nRendered {rendered['pages']:,} pages and {rendered['csv']:,} CSV logs "
          f"for {rendered['workspaces']} workspaces.")
    print(f"Open the report index:  {(out / 'index.html').resolve().as_uri()}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
