"""The nightly job, one function per DAG task. Plain Python: tested without Airflow, called by dags/.

A night N is an arrival day (UTC): the run ingests `ingest_date=N` and renders with cutoff N+1 00:00 UTC, so each
workspace reports its own last fully ended local day. Every step writes only what belongs to its night, so
re-running a night, clearing a task or backfilling a range converges to the state of one clean run.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any

from etl import manifests
from etl.errors import EtlError
from etl.indexes import write_indexes
from etl.ingest import landing_dates, landing_inventory
from etl.ops import deadline_key, night_counts, task_records, task_seconds
from etl.pipeline import finish_night, run_etl
from etl.publish import S3Target, link, upload
from etl.quality import gate
from etl.render import RenderJob, job_scope, page_key, render_batch
from etl.render_jobs import late_work, planned_batches
from etl.report import Filters, Freshness, PreparedInputs, build_page, filtered_inputs
from etl.settings import Settings
from etl.share import share_key, share_night
from etl.storage import Storage, open_storage
from etl.templating import environment
from etl.warehouse import (
    ROWS_PER_GROUP,
    DayFiles,
    ReportScope,
    Shard,
    load_groups,
    read_view,
    report_scope,
    run_key,
)
from etl.windows import WINDOW_NAMES, WINDOW_TITLES, end_of_night

if TYPE_CHECKING:
    from etl.mail import MailReport, Recipient

log = logging.getLogger(__name__)


def _store(settings: Settings, uri: str) -> Storage:
    """One of the night's storages: on S3, every object written is encrypted as the settings say."""
    return open_storage(uri, sse=settings.s3_sse, identity=settings.s3_identity)


def night_of(logical_date: datetime | None, run_after: datetime | None = None) -> date:
    """One rule for every kind of run: the UTC date of the logical date. Scheduled runs of the daily
    CronDataIntervalTimetable have logical_date = the interval's start; `airflow dags test X D` and triggers with
    a logical date get D. A manual run without a logical date processes the last fully ended UTC day."""
    if logical_date is not None:
        return logical_date.astimezone(UTC).date()
    if run_after is None:
        raise ValueError("a run needs a logical date or a run_after time to know its night")
    return run_after.astimezone(UTC).date() - timedelta(days=1)


def check_landing(settings: Settings, night: date, sleep: Any = time.sleep, clock: Any = time.monotonic) -> int:
    """Wait up to `landing_wait_seconds` for the night's arrival partition, then fail loudly: a missing feed must
    never become a report of zero contacts. (`sleep` and `clock` are for tests.)"""
    landing = _store(settings, settings.landing)
    deadline = clock() + settings.landing_wait_seconds
    while True:
        keys = landing_inventory(landing, night)[0]
        if keys:
            return len(keys)
        if clock() >= deadline:
            raise EtlError(f"no landing files yet for ingest_date={night} under {landing.uri}/events/ after waiting "
                           f"{settings.landing_wait_seconds}s; refusing to report zero contacts. Re-run the night "
                           "once the feed has delivered.")
        log.info("ingest_date=%s not delivered yet; checking again in %ss", night, settings.landing_poll_seconds)
        sleep(settings.landing_poll_seconds)


def ingest(settings: Settings, night: date) -> dict[str, Any]:
    """The whole night in this process: every shard (`CONTACTS_REPORT_INGEST_SHARDS`), then `finish_ingest`."""
    for number in range(settings.ingest_shards):
        ingest_shard(settings, night, number)
    return finish_ingest(settings, night)


def ingest_shard(settings: Settings, night: date, number: int) -> dict[str, Any]:
    """One shard of the night's ingest (the whole night with one shard); the DAG maps it over the shards."""
    summary = run_etl(_store(settings, settings.landing), _store(settings, settings.warehouse), night,
                      shard=Shard(number, settings.ingest_shards), **_etl_options(settings))
    return {"shard": number, "events_valid": summary["events_valid"]}


def finish_ingest(settings: Settings, night: date) -> dict[str, Any]:
    """After the shards: the night's summary and quarantine written once from theirs (`finish_night`); the counts
    for XCom."""
    warehouse = _store(settings, settings.warehouse)
    if settings.ingest_shards > 1:
        summary = finish_night(_store(settings, settings.landing), warehouse, night, settings.ingest_shards,
                               _etl_options(settings))
    else:  # the one shard wrote the summary itself
        summary = json.loads(warehouse.read_bytes(run_key(night)))
    return {"ingest_date": summary["ingest_date"], "run_id": summary["run_id"], **night_counts(summary),
            "days_touched": len(summary["days_touched"])}


def _etl_options(settings: Settings) -> dict[str, Any]:
    return {"future_tolerance": settings.future_tolerance, "max_line_bytes": settings.max_line_bytes,
            "limits": settings.read_limits}


def quality_gate(settings: Settings, night: date) -> dict[str, Any]:
    return gate(_store(settings, settings.warehouse), night, settings.thresholds)


def night_scope(settings: Settings, night: date) -> ReportScope:
    """The night's scope: every workspace with the report day the night's cutoff gives it. Each task
    is a process of its own, maybe on another machine: it reads the scope from the warehouse once (a few small
    objects, `etl.warehouse.read_view`) and passes it on; XCom carries only ids and counts."""
    return report_scope(_store(settings, settings.warehouse), None, None, end_of_night(night))


def plan_batches(settings: Settings, night: date) -> list[list[int]]:
    """Workspace batches for the mapped render tasks (ids only: XCom carries no data): one per `render_batch_size`
    workspaces, of about equal work (a workspace with a quarter of all events can be a batch of its own), the
    batch with the most work first so that it starts first."""
    scope = night_scope(settings, night)
    if not scope.days:
        return []
    count = -(-len(scope.days) // max(1, settings.render_batch_size))
    return [list(batch) for batch in planned_batches(_render_job(settings, night, list(scope.days)), count, scope)]


def render_workspaces(settings: Settings, night: date, workspace_ids: list[int]) -> dict[str, int]:
    """The night's pages of these workspaces and the filtered pages their recipients asked for, each with those
    pages of past report days that the night's late events changed (`etl.render_jobs.late_work`), rendered from the
    same rows and recorded with the night's, so that publish uploads them too."""
    job = _render_job(settings, night, workspace_ids)
    scope = job_scope(job)
    past = late_work(_store(settings, settings.warehouse), job, scope, settings.late_pages_days)
    counts = render_batch(job, scope, past)
    filtered = [render_batch(audience, scope, past) for audience in _audience_jobs(settings, job)]
    return {"pages": counts["pages"], "csv": counts["csv"], "filtered_pages": sum(f["pages"] for f in filtered),
            "late_pages": counts["late_pages"] + sum(f["late_pages"] for f in filtered)}


def _audience_jobs(settings: Settings, job: RenderJob) -> list[RenderJob]:
    """The filtered renders the job's workspaces' recipients asked for (`audiences`). A recipients file that cannot
    be read renders none: the e-mail step then fails with the reason."""
    try:
        wanted = audiences(_recipients(settings))
    except (EtlError, OSError) as err:
        log.error("no filtered pages for recipients: %s", err)
        return []
    return [replace(job, workspace_ids=tuple(chosen), filters=filters) for filters, ids in wanted.items()
            if (chosen := [w for w in ids if w in job.workspace_ids])]


def _render_job(settings: Settings, night: date, workspace_ids: list[int]) -> RenderJob:
    return RenderJob(settings.warehouse, settings.out, tuple(workspace_ids), None, end_of_night(night), WINDOW_NAMES,
                     (), sse=settings.s3_sse, s3=settings.s3_identity)


def finalize_indexes(settings: Settings, night: date | None = None) -> int:
    """The index pages, with the pages the renders of `night` recorded (`write_indexes`); without a night, from a
    listing of the whole output."""
    view = read_view(_store(settings, settings.warehouse))
    out = _store(settings, settings.out)
    write_indexes(out, view, None if night is None else manifests.rendered(out, manifests.tag(end_of_night(night),
                                                                                              None)))
    return len(view.workspaces)


def archive_night(settings: Settings, night: date, client: Any) -> dict[str, int]:
    """Snapshot every workspace's report day, then mirror the snapshots to S3 create-only (If-None-Match)."""
    from etl.archive import Lock, mirror, write_archive
    from etl.storage import S3Storage

    lock = Lock(settings.archive_lock_mode, settings.archive_lock_days)
    scope = night_scope(settings, night)
    archive = _store(settings, settings.archive)
    outcome = write_archive(_store(settings, settings.warehouse), archive, scope, lock)
    if settings.s3_uri:
        target = S3Target.parse(settings.s3_uri)
        remote = S3Storage(target.bucket, target.key("archive"), client, settings.s3_sse)
        outcome["mirrored"] = mirror(archive, remote, scope.days, lock, settings.publish_concurrency)
    return outcome


def night_keys(settings: Settings, night: date) -> list[str]:
    """What the night publishes: what its renders wrote (`etl.manifests`), then the index pages."""
    return manifests.rendered(_store(settings, settings.out), manifests.tag(end_of_night(night), None))


def publish(settings: Settings, night: date, client: Any) -> dict[str, Any]:
    """Upload the night's pages (`contacts-report publish --cutoff` does the same): counts for XCom and the ops
    record."""
    if not settings.s3_uri:
        log.info("CONTACTS_REPORT_S3_URI is not set: nothing to publish")
        return {"uploaded": 0, "unchanged": 0}
    summary = upload(client, S3Target.parse(settings.s3_uri), _store(settings, settings.out),
                     night_keys(settings, night), settings.s3_sse, settings.publish_concurrency)
    return {"uploaded": summary["uploaded"], "unchanged": summary["unchanged"],
            "published_bytes": summary["bytes"], "publish_requests": sum(summary["requests"].values()),
            "publish_seconds": summary["seconds"]}


def _recipients(settings: Settings) -> dict[int, list[Recipient]]:
    """CONTACTS_REPORT_RECIPIENTS: a JSON file (`etl.mail.parse_recipients`), a local path or an s3:// URI (a
    worker then needs no file of its own)."""
    from etl.mail import parse_recipients

    if not settings.recipients_file:
        return {}
    folder, _, name = settings.recipients_file.rpartition("/")
    text = (_store(settings, folder).read_bytes(name) if settings.recipients_file.startswith("s3://")
            else Path(settings.recipients_file).read_bytes())
    try:
        return parse_recipients(json.loads(text.decode("utf-8")))
    except ValueError as err:
        raise EtlError(f"{settings.recipients_file}: {err}") from None


def audiences(recipients: dict[int, list[Recipient]]) -> dict[tuple[str, ...], list[int]]:
    """The filter sets recipients asked for (usable ones), with the workspaces that need each: the night renders
    those filtered pages too."""
    found: dict[tuple[str, ...], set[int]] = {}
    for workspace_id, entries in recipients.items():
        for recipient in entries:
            if recipient.filters and recipient.problem is None:
                found.setdefault(recipient.filters, set()).add(workspace_id)
    return {filters: sorted(ids) for filters, ids in sorted(found.items())}


@dataclass(frozen=True)
class MailPlan:
    """What a night's e-mail step will do: the messages to send (with their ledger entries), and the ledger as it
    stands before sending (entries already sent, invalid addresses or filters, unknown workspaces)."""

    messages: tuple[tuple[str, EmailMessage], ...]
    ledger: dict[str, str]
    skipped: int
    invalid: int


def plan_emails(recipients: dict[int, list[Recipient]], reports: dict[tuple[int, tuple[str, ...]], MailReport],
                ledger: dict[str, str], href: Callable[[str], str], mail_from: str, presigned: bool,
                ops_address: str | None = None) -> MailPlan:
    """One message per recipient of each workspace with a report, except those the ledger says were sent, invalid
    addresses and invalid filters; no I/O (`href` turns an output key into the link the e-mail carries)."""
    from etl.mail import Link, build_message, valid_address

    ledger, messages, skipped, invalid = dict(ledger), [], 0, 0
    for workspace_id, everyone in sorted(recipients.items()):
        entries = unsent(workspace_id, everyone, ledger)
        skipped += len(everyone) - len(entries)
        if not entries:
            continue
        if (workspace_id, ()) not in reports:  # a recipients file ahead of (or behind) the warehouse: counted
            log.error("recipients name workspace %s, which is not in the warehouse", workspace_id)
            ledger.update({r.entry(workspace_id): "unknown workspace" for r in entries})
            invalid += len(entries)
            continue
        for recipient in entries:
            entry = recipient.entry(workspace_id)
            problem = recipient.problem or (None if valid_address(recipient.address) else "invalid address")
            if problem is not None:
                log.error("workspace %s: no e-mail for %r (%s)", workspace_id, recipient.address, problem)
                ledger[entry] = problem
                invalid += 1
                continue
            report = reports[workspace_id, recipient.filters]
            lang = report.page.lang
            links = [Link(lang.gettext(WINDOW_TITLES[w]),
                          href(page_key(workspace_id, report.page.report_day, w, report.page.filters)))
                     for w in WINDOW_NAMES]
            index = Link(lang.gettext("All report days"), href(f"{workspace_id}/index.html"))
            messages.append((entry, build_message(report, links, index, mail_from, recipient.address, presigned,
                                                  ops_address or mail_from)))
    return MailPlan(tuple(messages), ledger, skipped, invalid)


def unsent(workspace_id: int, recipients: list[Recipient], ledger: dict[str, str]) -> list[Recipient]:
    """The recipients of a workspace the ledger does not say were sent tonight's e-mail."""
    return [r for r in recipients if ledger.get(r.entry(workspace_id)) != "sent"]


def share_set(workspace_id: int, report_day: date, filter_sets: list[tuple[str, ...]]) -> list[str]:
    """The pages shared for one workspace's presigned e-mails (`etl.share`): the report day's and the day before's
    seven windows, unfiltered and with each filter set its recipients asked for, and its index."""
    return [page_key(workspace_id, day, w, Filters.parse(list(filters))) for filters in [(), *filter_sets]
            for day in (report_day, report_day - timedelta(days=1)) for w in WINDOW_NAMES] + [
        f"{workspace_id}/index.html"]


def _mail_reports(warehouse: Storage, recipients: dict[int, list[Recipient]], scope: ReportScope
                  ) -> dict[tuple[int, tuple[str, ...]], MailReport]:
    """What each workspace's e-mails show (of those in the night's `scope`), unfiltered and for every usable filter
    set its recipients asked for: its report day, and the last 14 days."""
    from etl.mail import mail_report

    known = scope.narrowed(w for w in sorted(recipients) if w in scope.days)
    by_contact = any(r.filters and Filters.parse(list(r.filters)).contact is not None
                     for entries in recipients.values() for r in entries if r.problem is None)
    freshness = Freshness(None, None, None, None)
    reports = {}
    # a group of workspaces at a time, like a render batch: at 10 M events all at once held 3.8 GB
    for group in load_groups(DayFiles(warehouse), known.workspaces, known.days, ("today", "last_14_days"),
                             by_contact, ROWS_PER_GROUP):
        for workspace_id in list(group):
            inputs, day = group.pop(workspace_id), known.days[workspace_id]
            wanted = {(), *(r.filters for r in recipients[workspace_id] if r.problem is None)}
            for filters in sorted(wanted):
                chosen = Filters.parse(list(filters))
                prepared = PreparedInputs.of(filtered_inputs(inputs, chosen))
                pages = [build_page(prepared, w, day, chosen, freshness, page_log_rows=0)
                         for w in ("today", "last_14_days")]
                reports[workspace_id, filters] = mail_report(*pages)
    return reports


def email(settings: Settings, night: date, client: Any, smtp_factory: Any) -> dict[str, int]:
    """One e-mail per recipient per night: a ledger in the warehouse makes re-runs send only what is missing.
    `smtp_factory` is called only when there is something to send. With presigned links, the pages the e-mails
    link to are shared first (`etl.share`), so that every link on them works as long as the e-mail's own."""
    from etl.mail import send, valid_address

    recipients = _recipients(settings)
    if not recipients:
        return {"sent": 0, "failed": 0, "skipped": 0}
    warehouse = _store(settings, settings.warehouse)
    ledger_key = f"_mail/night={night.isoformat()}.json"
    ledger: dict[str, str] = json.loads(warehouse.read_bytes(ledger_key)) if warehouse.exists(ledger_key) else {}
    target = S3Target.parse(settings.s3_uri) if settings.s3_uri else None
    presigned = target is not None and not settings.base_url

    def href(relative: str) -> str:
        if target is None:
            return f"{settings.out.rstrip('/')}/{relative}"
        if presigned:
            return link(client, target, share_key(night, relative), None, settings.presign_seconds)
        return link(client, target, relative, settings.base_url, settings.presign_seconds)

    scope = night_scope(settings, night)
    # only what is still to be sent: a re-run after the e-mails went out draws no chart
    waiting = {w: entries for w, everyone in recipients.items() if (entries := unsent(w, everyone, ledger))}
    mailed = sorted(w for w, entries in waiting.items()
                    if w in scope.days and any(r.problem is None and valid_address(r.address) for r in entries))
    audience = audiences(recipients)
    with ThreadPoolExecutor(1, thread_name_prefix="share") as background:
        # the shared copies go up while the e-mails are drawn: the one waits on S3, the other on the CPU
        shared = None
        if presigned and mailed and target is not None:
            share_sets = [share_set(w, scope.days[w], [f for f, ids in audience.items() if w in ids]) for w in mailed]
            shared = background.submit(share_night, client, target, _store(settings, settings.out), night, share_sets,
                                       settings.presign_seconds, settings.s3_sse)
        reports = _mail_reports(warehouse, waiting, scope)
        plan = plan_emails(recipients, reports, ledger, href, settings.mail_from, presigned, settings.ops_email)
        if shared is not None:
            shared.result()  # no e-mail goes out before every page it links to is shared
    unshared = {int(entry.split(":", 1)[0]) for entry, _ in plan.messages} - set(mailed)
    if presigned and unshared:  # `mailed` must foresee the plan: an e-mail to a page not shared would be broken
        raise EtlError(f"internal error: e-mails planned for workspaces {sorted(unshared)} whose pages were not "
                       "shared; nothing was sent")
    results = send(smtp_factory(), [m for _, m in plan.messages]) if plan.messages else []
    ledger = plan.ledger | {entry: result for (entry, _), result in zip(plan.messages, results, strict=True)}
    warehouse.write_bytes(ledger_key, json.dumps(ledger, indent=1, sort_keys=True).encode(), "application/json")
    sent = results.count("sent")
    return {"sent": sent, "failed": len(plan.messages) - sent + plan.invalid, "skipped": plan.skipped}


def record_run(settings: Settings, night: date, stats: dict[str, Any], client: Any | None) -> dict[str, Any]:
    """The ops record of the night, and the small ops page `_runs/index.html` (+ JSON) of recent runs."""
    warehouse = _store(settings, settings.warehouse)
    etl_summary = json.loads(warehouse.read_bytes(run_key(night)))
    finished = datetime.now(UTC)
    started = stats.get("started_at")
    seconds = round((finished - datetime.fromisoformat(started)).total_seconds()) if started else None
    record = {"night": night.isoformat(), "finished_at": finished.isoformat(timespec="seconds"), "seconds": seconds,
              **night_counts(etl_summary),
              "task_seconds": task_seconds(task_records(settings, night)),
              **({"deadline_missed": True} if warehouse.exists(deadline_key(night)) else {}),
              **stats}
    warehouse.write_bytes(f"_nightly/night={night.isoformat()}.json", json.dumps(record, indent=1).encode())
    write_ops_page(settings, client)
    return record


def record_gate_failure(settings: Settings, night: date, reason: str, stats: dict[str, Any], client: Any | None
                        ) -> None:
    """A night the quality gate stopped never reaches `record_run`: its record (the ETL's counts and the reason)
    is written here, so the ops page marks it; a later successful re-run replaces it."""
    warehouse = _store(settings, settings.warehouse)
    summary = json.loads(warehouse.read_bytes(run_key(night)))
    record = {"night": night.isoformat(), **night_counts(summary),
              "gate_failed": reason.splitlines()[0][:300] if reason else "failed", **stats}
    warehouse.write_bytes(f"_nightly/night={night.isoformat()}.json", json.dumps(record, indent=1).encode())
    write_ops_page(settings, client)


def write_ops_page(settings: Settings, client: Any | None) -> None:
    """`_runs/index.html` and `runs.json`: the last 60 nights' records (and the nights filled with the CLI, from
    their ETL summaries), with their trends (`etl.ops_page`); uploaded when there is a bucket."""
    from etl.ops_page import NIGHTS_SHOWN, nights_shown, status, summary_nights, trends

    warehouse = _store(settings, settings.warehouse)
    records = [json.loads(warehouse.read_bytes(k)) for k in warehouse.list("_nightly")[-NIGHTS_SHOWN:]]
    recorded = {r["night"] for r in records}
    summaries = {n: json.loads(warehouse.read_bytes(run_key(date.fromisoformat(n))))
                 for n in summary_nights(warehouse.list("_runs"))[-NIGHTS_SHOWN:] if n not in recorded}
    rows = nights_shown(records, summaries)
    out = _store(settings, settings.out)
    records.sort(key=lambda r: r["night"], reverse=True)
    out.write_bytes("_runs/runs.json", json.dumps(records, indent=1).encode(), "application/json")
    html = environment().get_template("runs.html.j2").render(runs=rows[::-1], trends=trends(rows, settings.thresholds),
                                                             status=status)
    out.write_bytes("_runs/index.html", html.encode(), "text/html; charset=utf-8")
    if settings.s3_uri and client is not None:
        upload(client, S3Target.parse(settings.s3_uri), out, ["_runs/runs.json", "_runs/index.html"], settings.s3_sse,
               settings.publish_concurrency)


def backfill(settings: Settings, until: date) -> int:
    """ETL every arrival day before `until` (the demo's history); returns how many nights ran."""
    landing, warehouse = _store(settings, settings.landing), _store(settings, settings.warehouse)
    nights = [d for d in landing_dates(landing) if d < until]
    for night in nights:
        run_etl(landing, warehouse, night, settings.future_tolerance, settings.max_line_bytes,
                limits=settings.read_limits)
    return len(nights)
