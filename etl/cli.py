"""`contacts-report`: the command line. Results go to stdout (JSON), logs and progress to stderr."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from etl.errors import InputError
from etl.progress import show_on_terminal
from etl.settings import Settings
from etl.storage import StorageError, StorageUnavailable, open_storage
from etl.windows import FIRST_DAY, LAST_DAY, WINDOW_NAMES

_S3_ERRORS = (BotoCoreError, ClientError)

log = logging.getLogger("contacts_report")

# Exit codes (also in `--help` and the README).
EXIT_FAILED = 1  # the work could not be done or did not pass: no landing data, archive problems found
EXIT_USAGE = 2  # an argument or an input file is unusable: fix it and run again
EXIT_STORAGE = 3  # storage could not be reached or refused us, after the retries: check the endpoint and access
EXIT_CODES = ("exit codes: 0 done; 1 the work failed or did not verify (the message says why); 2 an argument or "
              "an input file is unusable; 3 storage unreachable or refusing access after retries")


def _in_range(day: date, text: str) -> None:
    if not FIRST_DAY <= day <= LAST_DAY:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range; use a day from {FIRST_DAY} to {LAST_DAY}")


def _date(text: str) -> date:
    try:
        day = date.fromisoformat(text) if text.isascii() else None
    except ValueError:
        day = None
    if day is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date; use YYYY-MM-DD")
    _in_range(day, text)
    return day


def _instant(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO instant; use e.g. 2026-03-12T00:00Z") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset; add Z or +HH:MM")
    _in_range(moment.date(), text)
    return moment


def _positive(text: str) -> int:
    value = int(text) if text.isascii() and text.isdigit() and len(text) <= 19 else 0
    if not 0 < value < 2**63:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive whole number")
    return value


def _shard(text: str) -> Any:
    from etl.warehouse import Shard, WarehouseError

    try:
        return Shard.parse(text)
    except WarehouseError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _shards(text: str) -> int:
    count = _positive(text)
    if count < 2:
        raise argparse.ArgumentTypeError("a night in one piece has nothing to finish: give the number of shards (>= 2)")
    return count


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="contacts-report",
        description="Nightly ETL and static pages for the Reports → Contacts page of every workspace.",
        epilog=EXIT_CODES,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail to stderr")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = commands.add_parser("generate", help="write a synthetic landing zone (deterministic by --seed)",
                              epilog=EXIT_CODES, description="Write a synthetic landing zone in the contract's layout.")
    gen.add_argument("--landing", default=settings.landing, help="folder or s3://bucket/prefix (default %(default)s)")
    gen.add_argument("--start", type=_date, help="first arrival day, YYYY-MM-DD (default: --days ago, UTC)")
    gen.add_argument("--days", type=_positive, default=60, help="number of days (default %(default)s)")
    gen.add_argument("--workspaces", type=_positive, default=30, help="number of workspaces (default %(default)s)")
    gen.add_argument("--events-per-day", type=_positive, default=2_000,
                     help="events per day over all workspaces (default %(default)s)")
    gen.add_argument("--seed", type=int, default=7, help="random seed (default %(default)s)")

    etl = commands.add_parser("etl", help="process arrival days into the warehouse",
                              epilog=EXIT_CODES,
                              description="Validate, quarantine, de-duplicate and aggregate arrival days. "
                              "Prints one JSON run summary per day on stdout.")
    etl.add_argument("--landing", default=settings.landing, help="folder or s3://… (default %(default)s)")
    etl.add_argument("--warehouse", default=settings.warehouse, help="folder or s3://… (default %(default)s)")
    which = etl.add_mutually_exclusive_group(required=True)
    which.add_argument("--ingest-date", type=_date, action="append", metavar="YYYY-MM-DD",
                       help="arrival day to process (repeatable)")
    which.add_argument("--all", action="store_true", help="every arrival day in the landing zone, oldest first")
    split = etl.add_mutually_exclusive_group()
    split.add_argument("--shard", type=_shard, metavar="K/N",
                       help="process only shard K of N (0 <= K < N: the events whose event_id hashes to K) and write "
                       "its own files and summary; run every shard, then --finish N (docs/warehouse.md, \"Shards\")")
    split.add_argument("--finish", type=_shards, metavar="N",
                       help="after the N shards of each day (N >= 2): write the night's summary and quarantine from "
                       "them")

    ren = commands.add_parser("render", help="render the report pages of a report day",
                              epilog=EXIT_CODES,
                              description="Render one page per workspace and preset window, the CSV logs and the "
                              "index pages. Prints a JSON summary on stdout.")
    ren.add_argument("--warehouse", default=settings.warehouse, help="folder or s3://… (default %(default)s)")
    ren.add_argument("--out", default=settings.out, help="output folder or s3://… (default %(default)s)")
    day = ren.add_mutually_exclusive_group(required=True)
    day.add_argument("--report-day", type=_date, metavar="YYYY-MM-DD", help="the same report day for every workspace")
    day.add_argument("--cutoff", type=_instant, metavar="ISO-INSTANT",
                     help="each workspace reports the last local day fully ended at this instant")
    ren.add_argument("--workspace", type=_positive, action="append", metavar="ID", help="repeatable (default: all)")
    ren.add_argument("--window", action="append", choices=WINDOW_NAMES, metavar="NAME",
                     help=f"repeatable, one of {', '.join(WINDOW_NAMES)} (default: all seven)")
    ren.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                     help="channel=<id>, user=<id>, source=<source>, contact=<id or part of a name>; AND-ed")
    ren.add_argument("--locale", metavar="BCP47",
                     help="write the pages (and index pages) in this language instead of each workspace's own "
                     "(workspaces.json `locale`): en, es, es-MX, pt-BR, …")
    ren.add_argument("--workers", type=_positive, default=min(2, os.cpu_count() or 1),
                     help="render processes (default %(default)s)")
    ren.add_argument("--late-pages-days", type=int, default=settings.late_pages_days, metavar="N",
                     help="with --cutoff: also render again the pages of the N report days before each workspace's "
                     "that the night's late events changed, as the nightly does (default %(default)s, from "
                     "CONTACTS_REPORT_LATE_PAGES_DAYS; 0: none)")

    pub = commands.add_parser("publish", help="upload what a render wrote to S3 (dated pages first, then indexes)",
                              epilog=EXIT_CODES + ". Credentials and endpoint: boto3's standard chain "
                              "(AWS_ENDPOINT_URL, AWS_PROFILE, …)",
                              description="Upload what the renders of a cutoff or report day wrote under --out "
                              "(their pages and CSV downloads, then the index pages), compressed, many requests at "
                              "once; objects the bucket already holds with the same bytes are skipped. "
                              "Prints a JSON summary on stdout.")
    pub.add_argument("--out", default=settings.out, help="the render's output: folder or s3://… (default %(default)s)")
    pub.add_argument("--to", default=settings.s3_uri, required=settings.s3_uri is None, metavar="s3://BUCKET/PREFIX",
                     help="where to publish (default: CONTACTS_REPORT_S3_URI%s)" % (
                         f", {settings.s3_uri}" if settings.s3_uri else ", unset"))
    what = pub.add_mutually_exclusive_group(required=True)
    what.add_argument("--cutoff", type=_instant, metavar="ISO-INSTANT", help="what `render --cutoff` wrote")
    what.add_argument("--report-day", type=_date, metavar="YYYY-MM-DD", help="what `render --report-day` wrote")
    what.add_argument("--all", action="store_true", help="everything under --out, checked against a listing of the "
                      "bucket (a repair: its cost grows with the bucket)")
    pub.add_argument("--workspace", type=_positive, action="append", metavar="ID", help="repeatable (default: all)")
    pub.add_argument("--concurrency", type=_positive, default=settings.publish_concurrency,
                     help="S3 requests in flight (default %(default)s)")

    arc = commands.add_parser("archive", help="auditors' archive of the contact logs: write, verify, show",
                              epilog=EXIT_CODES,
                              description="Immutable, verifiable snapshots of the four contact logs of each "
                              "report day.")
    verbs = arc.add_subparsers(dest="verb", required=True, metavar="VERB")
    write = verbs.add_parser("write", help="snapshot each workspace's report day (a new revision only if it changed)",
                             epilog=EXIT_CODES,
                             description="Snapshot each workspace's report day under ARCHIVE/{workspace}/{day}/rev-N/.")
    write.add_argument("--warehouse", default=settings.warehouse, help="folder or s3://… (default %(default)s)")
    write.add_argument("--archive", default=settings.archive, help="folder or s3://… (default %(default)s)")
    when = write.add_mutually_exclusive_group(required=True)
    when.add_argument("--report-day", type=_date, metavar="YYYY-MM-DD")
    when.add_argument("--cutoff", type=_instant, metavar="ISO-INSTANT")
    write.add_argument("--workspace", type=_positive, action="append", metavar="ID", help="repeatable (default: all)")
    check = verbs.add_parser("verify", help="recompute every hash, count and chain link; exit 0 only if all hold",
                             epilog=EXIT_CODES, description="Verify the archive: one line per problem, a summary last.")
    check.add_argument("--archive", default=settings.archive, help="folder or s3://… (default %(default)s)")
    check.add_argument("--workspace", type=_positive, action="append", metavar="ID")
    check.add_argument("--from", dest="start", type=_date, metavar="YYYY-MM-DD", help="first report day to check")
    check.add_argument("--to", dest="end", type=_date, metavar="YYYY-MM-DD", help="last report day to check")
    check.add_argument("--json", action="store_true", help="machine-readable output")
    look = verbs.add_parser("show", help="print a snapshot's manifest and where its files are",
                            epilog=EXIT_CODES, description="Print a snapshot's manifest and the location of its files.")
    look.add_argument("--archive", default=settings.archive, help="folder or s3://… (default %(default)s)")
    look.add_argument("--workspace", type=_positive, required=True, metavar="ID")
    look.add_argument("--day", type=_date, required=True, metavar="YYYY-MM-DD")
    look.add_argument("--rev", type=_positive, metavar="N", help="revision (default: the latest)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = Settings.from_env()
    except InputError as err:
        print(f"contacts-report: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    args = build_parser(settings).parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    show_on_terminal(settings.progress)
    try:
        return _run(args, settings)
    except StorageUnavailable as err:
        log.error("%s; check the storage (AWS_ENDPOINT_URL: %s) and run again", err,
                  settings.aws_endpoint_url or "the default AWS endpoint")
        return EXIT_STORAGE
    except (StorageError, InputError) as err:
        log.error("%s", err)
        return EXIT_USAGE
    except OSError as err:  # a path that is a folder, a file where a folder belongs, no permission
        log.error("cannot use %s: %s; check the path", err.filename or "a path", err.strerror or err)
        return EXIT_USAGE
    except _S3_ERRORS as err:
        log.error("S3 storage failed after the retries (%s): %s; check AWS_ENDPOINT_URL, the bucket and the "
                  "credentials", settings.aws_endpoint_url or "the default AWS endpoint", err)
        return EXIT_STORAGE


def _run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "generate":
        return _generate(args, settings)
    if args.command == "etl":
        return _etl(args, settings)
    if args.command == "render":
        return _render(args, settings)
    if args.command == "archive":
        return _archive(args, settings)
    if args.command == "publish":
        return _publish(args, settings)
    raise AssertionError(f"unhandled command {args.command}")


def _generate(args: argparse.Namespace, settings: Settings) -> int:
    from etl.generate import GenerateOptions, default_start, generate

    options = GenerateOptions(start=args.start or default_start(args.days), days=args.days,
                              workspaces=args.workspaces, events_per_day=args.events_per_day, seed=args.seed)
    counts = generate(open_storage(args.landing, sse=settings.s3_sse), options)
    print(json.dumps({"landing": args.landing, "start": options.start.isoformat(), **counts}))
    return 0


def _etl(args: argparse.Namespace, settings: Settings) -> int:
    from etl.errors import EtlError
    from etl.ingest import landing_dates
    from etl.pipeline import finish_night, run_etl
    from etl.warehouse import Shard

    landing = open_storage(args.landing, sse=settings.s3_sse)
    warehouse = open_storage(args.warehouse, sse=settings.s3_sse)
    try:
        days = landing_dates(landing) if args.all else sorted(set(args.ingest_date))
    except EtlError as err:
        log.error("%s", err)
        return EXIT_FAILED
    if not days:
        log.error("no arrival days under %s/events/; generate or deliver data first", landing.uri)
        return EXIT_FAILED
    options: dict[str, Any] = {"future_tolerance": settings.future_tolerance,
                               "max_line_bytes": settings.max_line_bytes, "limits": settings.read_limits}
    for day in days:
        try:
            if args.finish:
                summary = finish_night(landing, warehouse, day, args.finish, options)
            else:
                summary = run_etl(landing, warehouse, day, **options, shard=args.shard or Shard())
        except EtlError as err:
            log.error("%s", err)
            return EXIT_FAILED
        print(json.dumps(summary), flush=True)
    return 0


def _render(args: argparse.Namespace, settings: Settings) -> int:
    from etl.i18n import LocaleError, parse_locale
    from etl.render import RenderError, RenderJob
    from etl.render_jobs import render
    from etl.report import FilterError, Filters
    from etl.warehouse import report_scope

    if "://" not in args.out and os.path.exists(args.out) and not os.path.isdir(args.out):
        log.error("--out %s is a file; give a folder (created if missing) or s3://bucket/prefix", args.out)
        return EXIT_USAGE
    try:
        Filters.parse(args.filter)  # before reading anything
        locale = parse_locale(args.locale) if args.locale else None
    except (FilterError, LocaleError) as err:
        log.error("%s", err)
        return EXIT_USAGE
    warehouse = open_storage(args.warehouse, sse=settings.s3_sse)
    scope = report_scope(warehouse, sorted(set(args.workspace)) if args.workspace else None, args.report_day,
                         args.cutoff)
    ids = tuple(scope.days)
    job = RenderJob(warehouse_uri=args.warehouse, out_uri=args.out, workspace_ids=ids, report_day=args.report_day,
                    cutoff=args.cutoff, windows=tuple(args.window or WINDOW_NAMES), filters=tuple(args.filter),
                    sse=settings.s3_sse, locale=locale)
    try:
        totals = render(job, workers=args.workers, scope=scope, late_pages_days=args.late_pages_days)
    except RenderError as err:
        log.error("%s", err)
        return EXIT_FAILED
    print(json.dumps({"out": args.out, "workspaces": len(ids), **totals}))
    return 0


def _publish(args: argparse.Namespace, settings: Settings) -> int:
    from etl import manifests
    from etl.publish import S3Target, upload
    from etl.storage import s3_client

    try:
        target = S3Target.parse(args.to)
    except ValueError as err:
        log.error("--to: %s", err)
        return EXIT_USAGE
    if "://" not in args.out and not os.path.isdir(args.out):
        log.error("--out %s is not a folder; give the render's output folder (or its s3:// staging)", args.out)
        return EXIT_USAGE
    out = open_storage(args.out, sse=settings.s3_sse)
    workspaces = set(args.workspace) if args.workspace else None
    if args.all:  # not the render records, nor the archive when it lives in --out (mirrored as it is, by `archive`)
        inside = os.path.relpath(settings.archive, args.out) if "://" not in settings.archive else ".."
        skipped = (f"{manifests.FOLDER}/", "archive/", *(() if inside.startswith("..") else (f"{inside}/",)))
        keys = [k for k in out.list() if not k.startswith(skipped)
                and (workspaces is None or manifests.workspace_of(k) in workspaces or "/" not in k)]
    else:
        folder_tag = manifests.tag(args.cutoff, args.report_day)
        if not out.list(f"{manifests.FOLDER}/{folder_tag}"):
            log.error("nothing rendered for %s under %s: run `contacts-report render` with the same option first",
                      folder_tag, args.out)
            return EXIT_FAILED
        keys = manifests.rendered(out, folder_tag, workspaces)
    summary = upload(s3_client(), target, out, keys, settings.s3_sse, args.concurrency, verify=args.all)
    print(json.dumps({"to": args.to, **summary}))
    return 0


def _archive(args: argparse.Namespace, settings: Settings) -> int:
    from etl.archive import Lock, show, verify, write_archive
    from etl.warehouse import report_scope

    archive = open_storage(args.archive, sse=settings.s3_sse)
    if args.verb == "write":
        lock = Lock(settings.archive_lock_mode, settings.archive_lock_days)
        warehouse = open_storage(args.warehouse, sse=settings.s3_sse)
        scope = report_scope(warehouse, args.workspace, args.report_day, args.cutoff)
        outcome = write_archive(warehouse, archive, scope, lock)
        print(json.dumps({"archive": args.archive, **outcome}))
        return 0
    if args.verb == "verify":
        problems, counts = verify(archive, args.workspace, args.start, args.end)
        if args.json:
            print(json.dumps({"ok": not problems, **counts,
                              "problems": [{"where": p.where, "what": p.what} for p in problems]}, indent=1))
        else:
            for problem in problems:
                print(f"PROBLEM {problem.where}: {problem.what}")
            verdict = "OK" if not problems else f"FAILED with {len(problems)} problem(s)"
            print(f"{verdict}: {counts['snapshots']} snapshots, {counts['files']} files checked in "
                  f"{counts['workspaces']} workspaces of {archive.uri}")
        return 0 if not problems else EXIT_FAILED
    try:
        print(json.dumps(show(archive, args.workspace, args.day, args.rev), indent=1, ensure_ascii=False))
    except FileNotFoundError as err:
        log.error("%s", err)
        return EXIT_FAILED
    except (ValueError, RecursionError):
        log.error("the manifest of workspace %s, %s is not valid JSON: run `contacts-report archive verify`",
                  args.workspace, args.day)
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
