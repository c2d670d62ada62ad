"""Every CSV download is its window's complete log, however it was produced: the windows ending on the report day
take theirs from the longest one's first rows (`etl.csv_logs.LogCsv`), which holds only while a log's local days
follow its order, newest first; a workspace that changed its time zone breaks that order."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from etl.csv_logs import log_csv
from etl.pipeline import run_etl
from etl.render import RenderJob, render_batch
from etl.report import KINDS, Filters, Freshness, PreparedInputs, build_page, filtered_inputs
from etl.storage import LocalStorage
from etl.warehouse import load_inputs, report_scope
from etl.windows import WINDOW_NAMES
from tests.helpers import event, write_landing

DAY = date(2026, 3, 2)


def night_events(night: int) -> list[dict[str, object]]:
    """A few of each kind over the last month, the later ones (night 2) between the earlier ones in time."""
    hour = 20 if night == 2 else 12
    return [event(f"{kind}-{night}-{d}", f"2026-{month}-{d:02d}T{hour}:00:00Z", event_type=f"contact.{kind}",
                  contact_id=100 * night + d, contact_name=f'"{kind}" =cmd|{d}')
            for kind in KINDS for month, days in (("02", (3, 17, 27)), ("03", (1,))) for d in days]


@pytest.mark.parametrize("filters", [(), ("source=contact_import",), ("contact=added",)],
                         ids=["unfiltered", "by source", "by contact"])
@pytest.mark.parametrize("moved", [False, True], ids=["one time zone", "moved across the date line"])
def test_every_download_is_its_windows_log_also_when_the_days_are_out_of_order(tmp_path: Path, moved: bool,
                                                                               filters: tuple[str, ...]) -> None:
    landing, warehouse = tmp_path / "landing", LocalStorage(tmp_path / "wh")
    write_landing(landing, [(1, "Acme", "Pacific/Kiritimati")], {"2026-03-02/01": night_events(1)})
    run_etl(LocalStorage(landing), warehouse, DAY)
    # moved: night 2's events get local days a day behind night 1's, so the log is out of day order
    zone = "Pacific/Pago_Pago" if moved else "Pacific/Kiritimati"
    write_landing(landing, [(1, "Acme", zone)], {"2026-03-03/01": night_events(2)})
    run_etl(LocalStorage(landing), warehouse, date(2026, 3, 3))
    render_batch(RenderJob(str(tmp_path / "wh"), str(tmp_path / "out"), (1,), DAY, None, WINDOW_NAMES, filters))
    chosen = Filters.parse(list(filters))
    scope = report_scope(warehouse, (1,), DAY, None)
    inputs = load_inputs(warehouse, scope.workspaces, scope.days, WINDOW_NAMES, chosen.contact is not None)[1]
    prepared = PreparedInputs.of(filtered_inputs(inputs, chosen))
    assert prepared.logs["added"]["local_date"].is_sorted(descending=True) is not moved  # which path is tested
    freshness = Freshness(None, None, None, None)
    folder = tmp_path / "out" / (f"filtered/{chosen.slug()}/" if chosen.active else "") / "1" / str(DAY)
    downloads = 0
    for name in WINDOW_NAMES:
        page = build_page(prepared, name, DAY, chosen, freshness, 0)
        for kind in KINDS:
            frame = page.logs[kind].frame
            assert (frame is None) is not chosen.applies(kind)
            if frame is not None:
                assert (folder / f"{name}.contacts_{kind}.csv").read_bytes() == log_csv(frame), (name, kind)
                downloads += 1
    assert downloads == 7 * sum(chosen.applies(k) for k in KINDS)
    assert build_page(prepared, "last_30_days", DAY, chosen, freshness, 0).logs["added"].total > 0
