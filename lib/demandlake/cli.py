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

from demandlake.pipeline import graph

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
    p.add_argument("--log-level", default="WARNING",
                   help="least level of log records shown on the console; the log file under "
                        "<lake>/_logs always has INFO and every traceback (default: %(default)s)")


_OPTION_HELP = {"if_none_serving": "train only when no version of the model is serving yet"}


def _dates(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--run-date", type=iso_date, required=required,
                   help="logical date of the run, YYYY-MM-DD" + (
                       "" if required else " (default: yesterday in lake.timezone)"))


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
    g.add_argument("--faults", action="store_true",
                   help="also plant what real feeds deliver: late events, repeats, conflicting "
                        "ids, bad records, Chinese and English reviews (synth.plant_faults)")

    for stage in graph.stage_names():
        if stage == "maintain":
            continue  # whole tables, no run date: its own parser below
        spec = graph.stage(stage)
        sp = sub.add_parser(stage, help=spec.does,
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        _dates(sp)
        sp.add_argument("--start-date", type=iso_date, help="run for each date from this one")
        sp.add_argument("--end-date", type=iso_date, help="... to this one (inclusive)")
        sp.add_argument("--dry-run", action="store_true", help="compute and count, write nothing "
                                                               "(ingest, review_sentiment, score)")
        for option in graph.options_of(stage):
            sp.add_argument(f"--{option.replace('_', '-')}", action="store_true",
                            help=_OPTION_HELP.get(option, option))
        if stage == "ingest":
            sp.add_argument("--source", action="append", default=[], metavar="FORMAT=PATH",
                            help="explicit input, e.g. taobao=/data/UserBehavior.csv (repeatable;"
                                 " default: ingest.sources of the config for the run date)")
            sp.add_argument("--timezone", type=time_zone,
                            help="time zone in which the source writes timestamps that carry no "
                                 "offset or zone (e.g. Asia/Shanghai); dates are always local "
                                 "dates in lake.timezone")
            sp.add_argument("--history", action="store_true",
                            help="every configured raw date up to the run date in one batch "
                                 "(the same tables as ingesting them date by date)")

    t = sub.add_parser("train", help="build training data and train a model (Horovod + MLflow)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("model", choices=["sequence", "sentiment", "all"], help="which model")
    _dates(t)
    t.add_argument("--if-none-serving", action="store_true", help=_OPTION_HELP["if_none_serving"])

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

    e = sub.add_parser("serve-sql", help="serve the lake's tables read-only over JDBC/ODBC "
                                         "(Spark Thrift server; beeline, BI tools, PyHive)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    e.add_argument("--host", help="address to listen on (default: sql_endpoint.host, 127.0.0.1)")
    e.add_argument("--port", type=positive_int, help="port (default: sql_endpoint.port, 10000)")

    c = sub.add_parser("metastore", help="the embedded default's shared catalog: the Derby "
                                         "network server every process of the lake uses",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    c.add_argument("action", choices=["start", "stop", "status"],
                   help="start it (it stops after metastore.idle_s unused), stop it now, or "
                        "show whether it runs")

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


def _resolve_run_date(args, cfg) -> dt.date:
    from demandlake.pipeline.chain import default_run_date

    return getattr(args, "run_date", None) or default_run_date(cfg)


def _stage_dates(args, cfg) -> list[dt.date]:
    if getattr(args, "start_date", None) or getattr(args, "end_date", None):
        if not (args.start_date and args.end_date):
            raise SystemExit("--start-date and --end-date go together")
        return date_range(args.start_date, args.end_date)
    return [_resolve_run_date(args, cfg)]


def main(argv: list[str] | None = None) -> int:
    import os

    args = build_parser().parse_args(argv)
    # TensorFlow's C++ start-up banner on every process that loads it (Spark's workers inherit it).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from demandlake.config import load_config
    from demandlake.console import FILE_ONLY, setup_logging

    try:
        cfg = load_config(args.conf_file, args.overrides, args.lake)
    except (OSError, ValueError) as exc:
        print(f"demandlake: configuration error: {exc}", file=sys.stderr)
        return 2
    global _LOGS
    _LOGS = setup_logging(cfg, args.command, args.log_level)
    log.info("demandlake %s; config from %s; lake %s", " ".join(argv or sys.argv[1:]),
             cfg.sources, cfg.lake_uri)
    log.info("resolved config:\n%s", cfg.dumps())
    handler = COMMANDS[args.command]
    t0 = time.monotonic()
    try:
        rc = handler(cfg, args)
    except KeyboardInterrupt:
        print("demandlake: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the CLI's one place to turn failures into a message + exit code
        log.error("%s failed", args.command, exc_info=True, extra=FILE_ONLY)  # traceback: the file
        first = (str(exc).strip().splitlines() or [""])[0][:500]  # Java errors run for pages
        print(f"demandlake {args.command}: failed: {type(exc).__name__}: {first}\n"
              f"(traceback in {_LOGS.python})", file=sys.stderr)
        return 1
    log.info("%s finished in %.1fs", args.command, time.monotonic() - t0)
    return rc or 0


_LOGS = None


def _spark(cfg, short_lived: bool = False):
    from demandlake.spark import get_spark

    return get_spark(cfg, java_log=_LOGS.spark if _LOGS else None, short_lived=short_lived)


def _print_logs() -> None:
    if _LOGS is not None:
        print(f"logs: {_LOGS.python} (Spark: {_LOGS.spark})")


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
    if args.faults:
        summary["planted"] = synth.plant_faults(out, seed=summary["seed"])
    print(f"wrote {summary} to {out}")
    return 0


def _stage_options(stage: str, args) -> dict:
    """The stage's options from its command's flags (``--if-none-serving``, ingest's inputs)."""
    options = {o: True for o in graph.options_of(stage) if getattr(args, o, False)}
    if stage == "ingest":
        from demandlake.pipeline.ingest import Source

        if args.source:
            sources = [Source.parse(s) for s in args.source]
            if args.timezone:
                sources = [Source(s.name, s.fmt, s.path, args.timezone) for s in sources]
            options["sources"] = sources
        if args.history:
            options["history"] = True
    return options


def _stage_command(stage: str) -> Callable:
    """A single-stage command: the stage for each date, as the chain runs it."""
    def run(cfg, args) -> int:
        from demandlake.console import Reporter
        from demandlake.pipeline.chain import run_graph

        spark = _spark(cfg)
        options = _stage_options(stage, args)
        spec = graph.stage(stage)
        if args.dry_run:
            options["dry_run"] = True
        reporter = Reporter()
        dates = _stage_dates(args, cfg)
        with reporter.dates(stage, dates) as advance:
            for d in dates:
                run_graph(spark, cfg, [spec], d, reporter, {stage: options})
                advance(d)
        return 0

    return run


def cmd_train(cfg, args) -> int:
    from demandlake.console import Reporter
    from demandlake.pipeline.chain import run_graph

    spark = _spark(cfg)
    models = ["sentiment", "sequence"] if args.model == "all" else [args.model]
    stages = [graph.stage(f"train_{m}", "retrain") for m in models]
    run_graph(spark, cfg, stages, _resolve_run_date(args, cfg), Reporter(),
              {s.name: {"if_none_serving": args.if_none_serving} for s in stages})
    return 0


def cmd_nightly(cfg, args) -> int:
    from demandlake.pipeline import chain

    spark = _spark(cfg)
    summary = chain.nightly(spark, cfg, args.run_date, train=not args.no_train)
    print(chain.describe_outputs(cfg, summary))
    _print_logs()
    return 0


def cmd_backfill(cfg, args) -> int:
    from demandlake.pipeline import chain

    spark = _spark(cfg)
    done = chain.backfill(spark, cfg, date_range(args.start_date, args.end_date),
                          force=args.force)
    print(f"backfill: ran {len(done['ran'])} date(s), skipped {len(done['skipped'])}: {done}")
    _print_logs()
    return 0


def cmd_sql(cfg, args) -> int:
    from demandlake import sql_endpoint

    # The user's own single read-only statement (checked by read_only_sql), executed as given:
    # nothing is spliced into it. A running endpoint for this lake answers in about a second.
    conn = sql_endpoint.connect(cfg) if cfg.get("sql_endpoint.use_from_cli", True) else None
    if conn is not None:
        log.info("query sent to the SQL endpoint on %s:%d", *sql_endpoint.endpoint_address(cfg))
        try:
            print(sql_endpoint.format_table(sql_endpoint.query(conn, args.query, args.limit)))
        except Exception as exc:
            raise RuntimeError(sql_endpoint.error_text(exc)) from None
        finally:
            conn.close()
        return 0
    # Else a local session on the lake's shared catalog (with metastore.mode: embedded, an
    # in-memory catalog with the tables the query names, by location: sql_endpoint.reader_config),
    # so it runs beside a nightly.
    rcfg = sql_endpoint.reader_config(cfg)
    spark = _spark(rcfg, short_lived=True)
    sql_endpoint.register_tables(spark, rcfg, sql_endpoint.referenced_tables(args.query))
    spark.sql(args.query).show(args.limit, truncate=False)
    return 0


def cmd_serve_sql(cfg, args) -> int:
    from demandlake import sql_endpoint

    overrides = {"sql_endpoint.host": args.host, "sql_endpoint.port": args.port}
    cfg = cfg.with_overrides({k: v for k, v in overrides.items() if v is not None}, source="flags")
    return sql_endpoint.serve(cfg, java_log=_LOGS.spark if _LOGS else None,
                              ready=lambda text: print(text, flush=True))


def cmd_metastore(cfg, args) -> int:
    from demandlake import metastore

    host, port = metastore.address(cfg)
    if not metastore.uses_server(cfg):
        print(f"demandlake metastore: {cfg.lake_uri} has no metastore server to manage (it needs "
              "lake.catalog: hive, a local lake, metastore.mode: server and no "
              "hive.metastore.uris)", file=sys.stderr)
        return 2
    if args.action == "stop":
        print(f"metastore server on {host}:{port}: "
              + ("stopped" if metastore.stop_server(cfg) else "was not running"))
        return 0
    if args.action == "status":
        info = metastore.server_info(port)
        if info is None:
            print(f"metastore server on {host}:{port}: not running (the next process of the lake "
                  "starts it)")
            return 3
        print(f"metastore server on {host}:{port}: running, pid {info['pid']}, "
              f"{metastore.established_connections(port)} connection(s)")
        return 0
    info = metastore.ensure_server(cfg)
    from demandlake.spark import session_conf

    conf = metastore.write_spark_sql_conf(cfg, session_conf(cfg))
    print(f"metastore server on {host}:{port}: running, pid {info['pid']} (stops after "
          f"{int(cfg.get('metastore.idle_s', 900))} s without a connection)\n"
          f"this lake's catalog: {metastore.jdbc_url(cfg)}\n"
          f"spark-sql --properties-file {conf} -e 'SHOW TABLES IN gold'")
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

    from demandlake import lake, sql_endpoint

    # A reader: ops.runs by location in an in-memory catalog (sql_endpoint.reader_config), so
    # status answers while a nightly holds the embedded Derby catalog, and boots no Derby.
    rcfg = sql_endpoint.reader_config(cfg)
    spark = _spark(rcfg, short_lived=True)
    runs = lake.read_existing(spark, rcfg, "ops.runs")
    if runs is None:
        print(f"no runs yet: {lake.spec('ops.runs').location(rcfg)} holds no run log")
        return 0
    (runs.orderBy(F.col("started_at").desc())
     .select("started_at", "stage", "run_date", "status", "duration_s", "metrics", "error")
     .show(args.limit, truncate=100))
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
    "generate": cmd_generate,
    **{stage: _stage_command(stage) for stage in graph.stage_names() if stage != "maintain"},
    "train": cmd_train, "nightly": cmd_nightly, "backfill": cmd_backfill, "sql": cmd_sql,
    "serve-sql": cmd_serve_sql, "metastore": cmd_metastore,
    "status": cmd_status, "report": cmd_report, "forget": cmd_forget, "maintain": cmd_maintain,
}


if __name__ == "__main__":
    sys.exit(main())
