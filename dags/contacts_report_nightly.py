"""
### Contacts report, nightly

Turns one UTC arrival day of raw contact events into the **Reports → Contacts** pages of every workspace,
publishes them to S3 and e-mails the links.

**The night.** Each run covers one UTC day (its data interval). Night N ingests the landing partition
`events/ingest_date=N/` and renders with cutoff N+1 00:00 UTC, so every workspace gets the last local day that had
fully ended at that instant. The night is always the UTC date of the run's logical date — scheduled runs, manual
triggers, `airflow dags test contacts_report_nightly N` and backfills all agree.

**Tasks.** `check_landing` (waits up to an hour for a late partition, then fails: no "0 contacts" report is ever
published) → `plan_shards` → `ingest` (validate, quarantine, de-duplicate, aggregate; mapped over
`CONTACTS_REPORT_INGEST_SHARDS` shards, one by default) → `finish_ingest` (the night's summary) → `quality_gate`
(fails on a high quarantine ratio, schema drift or a workspace whose volume collapsed; thresholds are settings) →
`plan_render_batches` → `render` (mapped over workspace batches, in parallel) → `build_indexes` → `publish`
(dated pages first, indexes last) → `send_emails` → `run_summary` (the ops page `_runs/index.html`). Beside the
render and publish, right after the gate: `archive` (immutable snapshots of the day's four logs from the warehouse,
mirrored to S3 create-only; it needs no page, so the e-mails do not wait for it; a failed archive fails the run).

**Re-running** a night, clearing any task or `airflow backfill create` over a range converges to the state of one
clean run: every write is scoped to the night and replaces what the night wrote before; e-mails keep a ledger.

**Assets.** `finish_ingest` produces `contacts_report.warehouse`, `build_indexes` `contacts_report.pages`,
`publish` `contacts_report.published`, `archive` `contacts_report.archive`; each asset event carries the task's
counts (lines, valid, quarantined, pages, objects, bytes, snapshots…) in its extra. Another DAG can be scheduled on
`Asset.ref(name="contacts_report.published")`.

**When it fails**, ops get an e-mail naming the task, the night, the log URL, the exception's last line and the
counts so far (`CONTACTS_REPORT_OPS_EMAIL`, through the SMTP provider's notifier). **When it is late** — not finished
`CONTACTS_REPORT_DEADLINE` after the night's end — a deadline alert tells them what is still running.
Settings: see the README (`CONTACTS_REPORT_*`); S3 and SMTP come from the `aws_default` and `smtp_default`
connections.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import Asset, CronDataIntervalTimetable, dag, get_current_context, task
from airflow.sdk.definitions.callback import SyncCallback
from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

from etl.ops import night_assets
from etl.settings import Settings

# Read once when the DAG is parsed (environment only, no I/O): where the assets are, and the deadline.
PARSED = Settings.from_env()
ASSETS = {key: Asset(name=name, uri=uri) for key, (name, uri) in night_assets(PARSED).items()}


def _night() -> Any:
    from etl.nightly import night_of

    context = get_current_context()
    return night_of(context.get("logical_date"), context["dag_run"].run_after)


def _settings() -> Any:
    from dataclasses import replace

    from etl.settings import Settings

    return replace(Settings.from_env(), s3_identity=_aws_default())


def _aws_default() -> Any:
    """The `aws_default` connection (credentials, region, endpoint) as the one S3 identity of every storage, upload
    and link of the task, render workers included; what it leaves out comes from boto3's standard chain."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsGenericHook

    from etl.settings import S3Identity

    hook: AwsGenericHook[Any] = AwsGenericHook(aws_conn_id="aws_default", client_type="s3")
    try:
        credentials = hook.get_credentials()  # masked in the task's log
    except AttributeError:  # no credentials anywhere: local stores need none
        return S3Identity(region=hook.region_name, endpoint_url=hook.conn_config.get_service_endpoint_url("s3"))
    return S3Identity(credentials.access_key, credentials.secret_key, credentials.token, hook.region_name,
                      hook.conn_config.get_service_endpoint_url("s3"))


def _s3_client() -> Any:
    from etl.storage import s3_client

    return s3_client(_settings().s3_identity)


def _smtp() -> Any:
    from airflow.sdk import BaseHook

    from etl.mail import SmtpConfig

    conn = BaseHook.get_connection("smtp_default")
    extra = conn.extra_dejson
    return SmtpConfig(host=conn.host or "127.0.0.1", port=int(conn.port or 25), user=conn.login or None,
                      password=conn.password or None, starttls=bool(extra.get("starttls", False)))


def notify_ops(context: dict[str, Any]) -> None:
    """on_failure_callback: which task failed, for which night, its log, the error's last line, the counts so far;
    sent through the SMTP provider's notifier (`etl.ops.notify`)."""
    from etl.nightly import night_of
    from etl.ops import failure_message, notify

    ti, settings = context["ti"], _settings()
    night = night_of(context.get("logical_date"), context["dag_run"].run_after)
    subject, html = failure_message(settings, night, ti.task_id, getattr(ti, "log_url", None),
                                    str(context.get("exception") or ""))
    notify(settings, subject, html, context)


def _run_stats() -> dict[str, Any]:
    """The run's kind and where the Airflow UI shows it, for the ops page."""
    context = get_current_context()
    run, log_url = context["dag_run"], getattr(context["ti"], "log_url", None) or ""
    return {"run_type": str(getattr(run.run_type, "value", run.run_type)), "run_id": run.run_id,
            "airflow_run_url": log_url.split("/tasks/")[0] if "/tasks/" in log_url else None}


@contextmanager
def _recorded() -> Iterator[None]:
    """The task's start and end in the night's records (`etl.ops.recording`): the ops page's durations and the
    deadline alert's "still running" come from them."""
    from etl.ops import recording

    ti = get_current_context()["ti"]
    with recording(_settings(), _night(), ti.task_id, getattr(ti, "map_index", None)):
        yield


def _produced(key: str, counts: dict[str, Any]) -> dict[str, Any]:
    """Attach the task's counts to the event of the asset it produced (numbers and short texts only)."""
    extra: dict[str, Any] = {k: v for k, v in counts.items()
                             if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
    get_current_context()["outlet_events"][ASSETS[key]].extra = extra
    return counts


def _deadline() -> DeadlineAlert | None:
    """A run not finished CONTACTS_REPORT_DEADLINE after the end of its night (logical date + 1 day) alerts ops."""
    if PARSED.deadline is None:
        return None
    return DeadlineAlert(reference=DeadlineReference.DAGRUN_LOGICAL_DATE, interval=timedelta(days=1) + PARSED.deadline,
                         callback=SyncCallback("etl.ops.deadline_missed"), name="e-mails out")


@contextmanager
def _no_retry_on_bad_input() -> Iterator[None]:
    """Every task retries (NETWORK_RETRIES: storage and SMTP hiccups pass); input that cannot be processed does not
    improve on retry, so it fails the task at once."""
    from airflow.sdk.exceptions import AirflowFailException

    from etl.errors import EtlError, InputError

    try:
        yield
    except (EtlError, InputError) as bad:
        raise AirflowFailException(str(bad)) from bad


NETWORK_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=15),
}


@dag(
    dag_id="contacts_report_nightly",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,  # history is filled on purpose, with `airflow backfill create`
    max_active_runs=1,
    tags=["contacts-report", "reports", "nightly"],
    doc_md=__doc__,
    default_args={"owner": "contacts-report", "on_failure_callback": notify_ops, **NETWORK_RETRIES},
    deadline=_deadline(),
)
def contacts_report_nightly() -> None:
    @task
    def check_landing() -> dict[str, Any]:
        """Waits for a late feed itself (CONTACTS_REPORT_LANDING_WAIT_SECONDS); a feed still missing then fails the
        run at once (no retry), while storage errors are retried like any network hiccup."""
        from airflow.sdk.exceptions import AirflowFailException

        from etl.errors import EtlError
        from etl.nightly import check_landing

        started = datetime.now(UTC).isoformat(timespec="seconds")
        try:
            with _recorded():
                return {"files": int(check_landing(_settings(), _night())), "started_at": started}
        except EtlError as missing:
            raise AirflowFailException(str(missing)) from missing

    @task
    def plan_shards(landing: dict[str, Any]) -> list[int]:
        """The ingest shards (CONTACTS_REPORT_INGEST_SHARDS): numbers only, one mapped `ingest` task each."""
        with _recorded():
            return list(range(_settings().ingest_shards))

    @task(inlets=[ASSETS["landing"]])
    def ingest(shard: int) -> dict[str, Any]:
        """One shard of the night (the whole night with one). Storage errors are retried; input that cannot be
        processed (EtlError, InputError) fails at once."""
        from etl.nightly import ingest_shard

        with _no_retry_on_bad_input(), _recorded():
            return dict(ingest_shard(_settings(), _night(), shard))

    @task(inlets=[ASSETS["landing"]], outlets=[ASSETS["warehouse"]])
    def finish_ingest(shards: list[dict[str, Any]]) -> dict[str, Any]:
        """The night's summary and quarantine, once, from every shard's."""
        from etl.nightly import finish_ingest

        with _no_retry_on_bad_input(), _recorded():
            return _produced("warehouse", dict(finish_ingest(_settings(), _night())))

    @task
    def quality_gate(summary: dict[str, Any]) -> dict[str, Any]:
        """Bad data does not improve on retry: a failed gate fails the run at once."""
        from airflow.sdk.exceptions import AirflowFailException

        from etl.nightly import quality_gate
        from etl.quality import QualityError

        try:
            with _recorded():
                return dict(quality_gate(_settings(), _night()))
        except QualityError as bad:
            from etl.nightly import record_gate_failure

            record_gate_failure(_settings(), _night(), str(bad), _run_stats(), _s3_client())
            raise AirflowFailException(str(bad)) from bad

    @task
    def plan_render_batches(checked: dict[str, Any]) -> list[list[int]]:
        from etl.nightly import plan_batches

        with _recorded():
            return list(plan_batches(_settings(), _night()))

    @task(max_active_tis_per_dagrun=2, inlets=[ASSETS["warehouse"]])
    def render(workspace_ids: list[int]) -> dict[str, int]:
        from etl.nightly import render_workspaces

        with _no_retry_on_bad_input(), _recorded():
            return dict(render_workspaces(_settings(), _night(), workspace_ids))

    @task(inlets=[ASSETS["warehouse"]], outlets=[ASSETS["pages"]])
    def build_indexes(rendered: list[dict[str, int]]) -> dict[str, int]:
        from etl.nightly import finalize_indexes

        with _recorded():
            return _produced("pages", {
                "workspaces": finalize_indexes(_settings(), _night()), "pages": sum(r["pages"] for r in rendered),
                "csv": sum(r.get("csv", 0) for r in rendered),
                "filtered_pages": sum(r.get("filtered_pages", 0) for r in rendered),
                "late_pages": sum(r.get("late_pages", 0) for r in rendered)})

    @task(inlets=[ASSETS["pages"]], outlets=[ASSETS["published"]])
    def publish(indexes: dict[str, int]) -> dict[str, Any]:
        from etl.nightly import publish

        with _recorded():
            return _produced("published", dict(publish(_settings(), _night(), _s3_client())))

    @task(inlets=[ASSETS["warehouse"]], outlets=[ASSETS["archive"]])
    def archive(checked: dict[str, Any]) -> dict[str, int]:
        from etl.nightly import archive_night

        with _recorded():
            return _produced("archive", dict(archive_night(_settings(), _night(), _s3_client())))

    @task(inlets=[ASSETS["published"]])
    def send_emails(published: dict[str, Any]) -> dict[str, int]:
        from etl.nightly import email

        with _recorded():
            return dict(email(_settings(), _night(), _s3_client(), _smtp))

    @task
    def run_summary(landing: dict[str, Any], indexes: dict[str, int], published: dict[str, Any],
                    mailed: dict[str, int], archived: dict[str, int]) -> dict[str, Any]:
        from etl.nightly import record_run

        stats = {**indexes, **published, **mailed, "snapshots_written": archived["written"] + archived["revised"],
                 "started_at": landing["started_at"], **_run_stats()}
        with _recorded():
            return dict(record_run(_settings(), _night(), stats, _s3_client()))

    landing = check_landing()
    checked = quality_gate(finish_ingest(ingest.expand(shard=plan_shards(landing))))
    indexes = build_indexes(render.expand(workspace_ids=plan_render_batches(checked)))
    published = publish(indexes)
    run_summary(landing, indexes, published, send_emails(published), archive(checked))


contacts_report_nightly()
