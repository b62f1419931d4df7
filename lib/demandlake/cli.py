"""The ``demandlake`` command line: every stage, the nightly chain, backfills, SQL and status.

Global flags (before the command): ``--lake URI``, ``--conf-file FILE`` (repeatable),
``--set key.path=value`` (repeatable), ``--log-level``. Run ``demandlake COMMAND --help``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import logging
import re
import sys
import time
from typing import Callable

log = logging.getLogger("demandlake")

_TABLE_NAME = re.compile(r"^(bronze|silver|gold|ops)\.[a-z_][a-z0-9_]*$")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_UTC_OFFSET = re.compile(r"^(UTC|GMT)?[+-]\d{1,2}(:\d{2})?$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
MAX_USER_ID_CHARS = 512
# `demandlake sql` runs analysts' queries: one statement that only reads.
SQL_READ_ONLY_STARTS = ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN")
# Words that write, change the catalog or run arbitrary Java (reflect) anywhere in the statement.
SQL_FORBIDDEN = frozenset({
    "INSERT", "UPDATE", "DELETE", "MERGE", "DROP", "ALTER", "CREATE", "TRUNCATE", "VACUUM",
    "OPTIMIZE", "REORG", "RESTORE", "REPAIR", "MSCK", "GRANT", "REVOKE", "CLONE", "CONVERT",
    "ANALYZE", "CALL", "LOAD", "CACHE", "UNCACHE", "REFRESH", "REFLECT", "JAVA_METHOD",
    "TRY_REFLECT",
})


def iso_date(text: str) -> dt.date:
    """argparse type: a calendar date ``YYYY-MM-DD`` (rejects anything else)."""
    # fromisoformat alone also takes 20261114 and 2026-W46-6 (Python 3.11).
    try:
        if not _ISO_DATE.match(text):
            raise ValueError(text)
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def table_name(text: str) -> str:
    """argparse type: the name of a registered table (``lake.TABLES``), e.g. ``gold.user_profiles``."""
    if not _TABLE_NAME.match(text):
        raise argparse.ArgumentTypeError(f"not a table name (layer.table): {text!r}")
    from demandlake import lake

    if text not in lake.TABLES:
        raise argparse.ArgumentTypeError(f"unknown table {text!r}; known: {', '.join(sorted(lake.TABLES))}")
    return text


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_hours(text: str) -> float:
    """argparse type: a number of hours >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of hours: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"hours must be a finite number >= 0, got {text!r}")
    return value


def time_zone(text: str) -> str:
    """argparse type: an IANA time zone (``Asia/Shanghai``) or a UTC offset (``+08:00``)."""
    import zoneinfo

    if _UTC_OFFSET.match(text):
        return text
    try:
        zoneinfo.ZoneInfo(text)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        raise argparse.ArgumentTypeError(f"not a time zone (e.g. Asia/Shanghai, +08:00): {text!r}") from None
    return text


def user_id(text: str) -> str:
    """argparse type: a user id as the sources give it (non-blank, one line, bounded length)."""
    if not text.strip() or len(text) > MAX_USER_ID_CHARS or any(ord(c) < 32 for c in text):
        raise argparse.ArgumentTypeError(
            f"a user id must be non-blank, at most {MAX_USER_ID_CHARS} characters, one line")
    return text


def request_id(text: str) -> str:
    """argparse type: an erasure request id (letters, digits, ``._:-``; at most 128)."""
    if not _REQUEST_ID.match(text):
        raise argparse.ArgumentTypeError(f"request id must match {_REQUEST_ID.pattern}")
    return text


def _sql_tokens(text: str) -> tuple[list[str], list[int]]:
    """Upper-cased words of a SQL text outside strings, quoted names and comments, and the word
    index at each ``;`` (so a statement separator is found however the text is spaced)."""
    words: list[str] = []
    semicolons: list[int] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in "'\"`":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" and c != "`" else 1
            if j >= n:
                raise argparse.ArgumentTypeError(f"unterminated {c} quote in the query")
            i = j + 1
        elif text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise argparse.ArgumentTypeError("unterminated /* comment in the query")
            i = end + 2
        elif c == ";":
            semicolons.append(len(words))
            i += 1
        elif c.isalpha() or c == "_":
            j = i
            while j < n and (text[j].isalnum() or text[j] == "_"):
                j += 1
            words.append(text[i:j].upper())
            i = j
        else:
            i += 1
    return words, semicolons


def read_only_sql(text: str) -> str:
    """argparse type: one SQL statement that only reads (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN).

    A lexical check (strings, quoted names and comments skipped), done before Spark starts: more
    than one statement, a first word outside ``SQL_READ_ONLY_STARTS`` or any ``SQL_FORBIDDEN``
    word (``SHOW CREATE TABLE`` excepted) is refused.
    """
    words, semicolons = _sql_tokens(text)
    if not words:
        raise argparse.ArgumentTypeError("empty query")
    if any(at < len(words) for at in semicolons):
        raise argparse.ArgumentTypeError("only one statement is allowed (found ';' between statements)")
    if words[0] not in SQL_READ_ONLY_STARTS:
        raise argparse.ArgumentTypeError(
            f"only read-only queries are allowed ({', '.join(SQL_READ_ONLY_STARTS)}), got {words[0]}")
    for k, w in enumerate(words):
        if w in SQL_FORBIDDEN and not (w == "CREATE" and k == 1 and words[0] == "SHOW"):
            raise argparse.ArgumentTypeError(f"{w} is not allowed: `demandlake sql` only reads")
    return text


def date_range(start: dt.date, end: dt.date) -> list[dt.date]:
    if end < start:
        raise ValueError(f"end date {end} is before start date {start}")
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lake", help="lake URI (overrides lake.uri; default ./lake)")
    p.add_argument("--conf-file", action="append", default=[], metavar="FILE",
                   help="extra YAML config layered over conf/defaults.yaml (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override one config value, e.g. --set sessions.gap_minutes=20")
    p.add_argument("--log-level", default="INFO", help="logging level (default: %(default)s)")


def _dates(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--run-date", type=iso_date, required=required,
                   help="logical date of the run, YYYY-MM-DD" + ("" if required else
                                                                 " (default: yesterday, UTC)"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="demandlake",
        description="Mine e-commerce users' latent demand from their logs (Spark + Delta Lake).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _common(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    g = sub.add_parser("generate", help="write seeded synthetic raw logs (events + reviews)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g.add_argument("--out", help="output folder (default: <lake>/raw)")
    g.add_argument("--users", type=positive_int, help="number of users (default: generator.users)")
    g.add_argument("--days", type=positive_int, help="number of days (default: generator.days)")
    g.add_argument("--start-date", type=iso_date, help="first day (default: generator.start_date)")
    g.add_argument("--seed", type=int, help="random seed (default: generator.seed)")
    g.add_argument("--events", type=positive_int, help="target number of events (sizes the users)")
    g.add_argument("--workers", type=positive_int, default=2, help="parallel worker processes")

    i = sub.add_parser("ingest", help="raw logs -> bronze.events / bronze.reviews / quarantine",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _dates(i)
    i.add_argument("--source", action="append", default=[], metavar="FORMAT=PATH",
                   help="explicit input, e.g. taobao=/data/UserBehavior.csv (repeatable; "
                        "default: ingest.sources of the config for the run date)")
    i.add_argument("--timezone", type=time_zone, help="time zone of the source's local dates (e.g. Asia/Shanghai)")
    i.add_argument("--dry-run", action="store_true", help="validate and count, write nothing")

    for name, helptext in [("sessions", "bronze.events -> silver.sessions (late events merged)"),
                           ("features", "silver/bronze -> gold.user_features for the run date"),
                           ("score", "score every active user into gold forecasts/profiles/recs")]:
        sp = sub.add_parser(name, help=helptext, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        _dates(sp)
        sp.add_argument("--start-date", type=iso_date, help="backfill from this date")
        sp.add_argument("--end-date", type=iso_date, help="backfill to this date (inclusive)")
        sp.add_argument("--dry-run", action="store_true", help="compute and count, write nothing")

    t = sub.add_parser("train", help="build training data and train a model (Horovod + MLflow)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("model", choices=["sequence", "sentiment", "all"], help="which model")
    _dates(t)

    n = sub.add_parser("nightly", help="the whole chain for a date (generates sample data "
                                       "when the lake is empty)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _dates(n)
    n.add_argument("--no-train", action="store_true", help="never train, even without models")

    b = sub.add_parser("backfill", help="run the nightly chain for a date range, in order, "
                                        "skipping dates already done",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    b.add_argument("--start-date", type=iso_date, required=True, help="first date")
    b.add_argument("--end-date", type=iso_date, required=True, help="last date (inclusive)")
    b.add_argument("--force", action="store_true", help="rerun dates already done")

    q = sub.add_parser("sql", help="run a SQL query on the lake's tables by name",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    q.add_argument("query", type=read_only_sql,
                   help='one read-only statement (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN), '
                        'e.g. "SELECT * FROM gold.user_profiles LIMIT 10"')
    q.add_argument("--limit", type=positive_int, default=50, help="rows to print")

    s = sub.add_parser("status", help="what ran, when, counts and model versions",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    s.add_argument("--limit", type=positive_int, default=20, help="runs to show")

    r = sub.add_parser("report", help="write a self-contained HTML run report",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _dates(r, required=True)
    r.add_argument("--out", help="output file (default: <lake>/_reports/report-DATE.html)")

    f = sub.add_parser("forget", help="erase every row of the given users from every table holding "
                                      "user data (right to erasure; see docs/OPERATIONS.md)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    f.add_argument("--user-id", type=user_id, action="append", default=[], dest="user_ids",
                   metavar="ID", help="user id as the sources give it; its pseudonym is matched "
                                      "too (repeatable)")
    f.add_argument("--user-id-file", metavar="FILE",
                   help="file with one user id per line (keeps ids out of shell history and ps)")
    f.add_argument("--request-id", type=request_id,
                   help="id of the erasure request, e.g. a ticket number (default: generated)")
    f.add_argument("--vacuum-hours", type=non_negative_hours,
                   help="then VACUUM the changed tables with this retention, ending time travel "
                        "to older versions; below 168 needs "
                        "spark.databricks.delta.retentionDurationCheck.enabled=false "
                        "(default: no VACUUM)")

    m = sub.add_parser("maintain", help="compact the lake's Delta tables (OPTIMIZE) and "
                                        "optionally VACUUM them (docs/OPERATIONS.md)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    m.add_argument("--table", type=table_name, action="append", default=[], dest="tables",
                   metavar="NAME", help="table to maintain, e.g. silver.sessions (repeatable; "
                                        "default: every bronze, silver and gold table)")
    m.add_argument("--vacuum", action="store_true",
                   help="also VACUUM: delete files older versions need, ending time travel "
                        "beyond --retain-hours")
    m.add_argument("--retain-hours", type=non_negative_hours, default=None,
                   help="VACUUM retention (default: maintenance.retain_hours, 168)")

    return parser


def _resolve_run_date(args) -> dt.date:
    d = getattr(args, "run_date", None)
    return d or (dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1))


def _stage_dates(args) -> list[dt.date]:
    if getattr(args, "start_date", None) or getattr(args, "end_date", None):
        if not (args.start_date and args.end_date):
            raise SystemExit("--start-date and --end-date go together")
        return date_range(args.start_date, args.end_date)
    return [_resolve_run_date(args)]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("py4j", "mlflow", "alembic", "urllib3", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from demandlake.config import load_config

    try:
        cfg = load_config(args.conf_file, args.overrides, args.lake)
    except (OSError, ValueError) as exc:
        print(f"demandlake: configuration error: {exc}", file=sys.stderr)
        return 2
    log.info("config from %s; lake %s", cfg.sources, cfg.lake_uri)
    log.debug("resolved config:\n%s", cfg.dumps())
    handler = COMMANDS[args.command]
    t0 = time.monotonic()
    try:
        rc = handler(cfg, args)
    except KeyboardInterrupt:
        print("demandlake: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the CLI's one place to turn failures into a message + exit code
        log.debug("failure", exc_info=True)
        print(f"demandlake {args.command}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    log.info("%s finished in %.1fs", args.command, time.monotonic() - t0)
    return rc or 0


def _spark(cfg):
    from demandlake.spark import get_spark

    return get_spark(cfg)


# ---- commands ----------------------------------------------------------------------------------
def cmd_generate(cfg, args) -> int:
    from demandlake import synth

    g = synth.configured(cfg)
    out = args.out or cfg.raw_uri
    summary = synth.generate(
        out, users=args.users or g["users"], days=args.days or g["days"],
        start_date=args.start_date or g["start_date"],
        seed=args.seed if args.seed is not None else g["seed"],
        events_target=args.events, workers=args.workers)
    print(f"wrote {summary} to {out}")
    return 0


def cmd_ingest(cfg, args) -> int:
    from demandlake.pipeline import Source, run_ingest

    spark = _spark(cfg)
    run_date = _resolve_run_date(args)
    sources = None
    if args.source:
        sources = [Source.parse(s) for s in args.source]
        if args.timezone:
            sources = [Source(s.name, s.fmt, s.path, args.timezone) for s in sources]
    totals = run_ingest(spark, cfg, run_date, sources, dry_run=args.dry_run)
    print(f"ingest {run_date}: {totals}")
    return 0


def _per_date(stage: str) -> Callable:
    def run(cfg, args) -> int:
        from demandlake import pipeline

        spark = _spark(cfg)
        fn = pipeline.stage_functions()[stage]
        dates = _stage_dates(args)
        for i, d in enumerate(dates, 1):
            log.info("[%s %d/%d] %s", stage, i, len(dates), d)
            result = fn(spark, cfg, d, dry_run=args.dry_run)
            print(f"{stage} {d}: {result}")
        return 0

    return run


def cmd_train(cfg, args) -> int:
    from demandlake import pipeline

    spark = _spark(cfg)
    models = ["sentiment", "sequence"] if args.model == "all" else [args.model]
    for m in models:
        result = pipeline.stage_functions()[f"train_{m}"](spark, cfg, _resolve_run_date(args))
        print(f"train {m}: {result}")
    return 0


def cmd_nightly(cfg, args) -> int:
    from demandlake import pipeline

    spark = _spark(cfg)
    summary = pipeline.nightly(spark, cfg, args.run_date, train=not args.no_train)
    print(pipeline.describe_outputs(cfg, summary))
    return 0


def cmd_backfill(cfg, args) -> int:
    from demandlake import pipeline

    spark = _spark(cfg)
    done = pipeline.backfill(spark, cfg, date_range(args.start_date, args.end_date),
                             force=args.force)
    print(f"backfill: ran {len(done['ran'])} date(s), skipped {len(done['skipped'])}: {done}")
    return 0


def cmd_sql(cfg, args) -> int:
    spark = _spark(cfg)
    from demandlake import lake

    lake.ensure_all(spark, cfg, [n for n in lake.TABLES if lake.table_exists(spark, cfg, n)])
    # The user's own single read-only statement (checked by read_only_sql), executed as given:
    # nothing is spliced into it.
    spark.sql(args.query).show(args.limit, truncate=False)
    return 0


def _read_user_ids(path: str) -> list[str]:
    with open(path, encoding="utf-8") as fh:
        lines = [ln.rstrip("\r\n") for ln in fh]
    return [user_id(ln) for ln in lines if ln.strip()]


def cmd_forget(cfg, args) -> int:
    from demandlake import privacy

    try:
        ids = list(args.user_ids) + (_read_user_ids(args.user_id_file) if args.user_id_file else [])
    except (OSError, argparse.ArgumentTypeError) as exc:
        print(f"demandlake forget: bad --user-id-file: {exc}", file=sys.stderr)
        return 2
    if not ids:
        print("demandlake forget: give at least one --user-id or a --user-id-file", file=sys.stderr)
        return 2
    spark = _spark(cfg)
    result = privacy.forget(spark, cfg, ids, request_id=args.request_id,
                            vacuum_hours=args.vacuum_hours)
    deleted = ", ".join(f"{t}={n}" for t, n in sorted(result["rows_deleted"].items())) or "none"
    print(f"forget {result['request_id']}: {result['status']} for {len(set(ids))} user id(s); "
          f"rows deleted: {deleted}"
          + (f"; vacuumed: {', '.join(result['vacuumed']) or 'none'}"
             if args.vacuum_hours is not None else ""))
    return 0


def cmd_status(cfg, args) -> int:
    from pyspark.sql import functions as F

    from demandlake import lake

    spark = _spark(cfg)
    runs = lake.read(spark, cfg, "ops.runs").orderBy(F.col("started_at").desc())
    runs.select("started_at", "stage", "run_date", "status", "duration_s", "metrics", "error") \
        .show(args.limit, truncate=100)
    return 0


def cmd_report(cfg, args) -> int:
    from demandlake import report

    spark = _spark(cfg)
    path = report.write_report(spark, cfg, args.run_date, args.out)
    print(f"report written to {path}")
    return 0


def cmd_maintain(cfg, args) -> int:
    from demandlake import maintenance

    spark = _spark(cfg)
    result = maintenance.maintain(spark, cfg, args.tables or None, do_vacuum=args.vacuum,
                                  retain_hours=args.retain_hours)
    for name, r in result.items():
        print(f"maintain {name}: {r['files_before']} -> {r['files_after']} files "
              f"(removed {r['files_removed']}, added {r['files_added']})")
    return 0


COMMANDS: dict[str, Callable] = {
    "generate": cmd_generate, "ingest": cmd_ingest, "sessions": _per_date("sessions"),
    "features": _per_date("features"), "score": _per_date("score"), "train": cmd_train,
    "nightly": cmd_nightly, "backfill": cmd_backfill, "sql": cmd_sql, "status": cmd_status,
    "report": cmd_report, "forget": cmd_forget, "maintain": cmd_maintain,
}


if __name__ == "__main__":
    sys.exit(main())
