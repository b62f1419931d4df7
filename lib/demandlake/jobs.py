"""Shared flag handling for the spark-submit entry points in ``jobs/``.

Each job is ``sys.exit(run_job("STAGE"))``: it parses ``--run-date`` (or ``--start-date`` and
``--end-date`` for a backfill), ``--conf-file``, ``--lake`` and ``--set``, builds the session (under
spark-submit its ``--master``/``--conf`` win), runs the stage for each date in order and exits
non-zero with a one-line message on failure.
"""
from __future__ import annotations

import argparse
import logging
import sys

from demandlake.cli import date_range, iso_date


def job_parser(stage: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"jobs/{stage}.py",
                                description=f"demandlake {stage} stage (spark-submit entry point)",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--run-date", type=iso_date, help="logical date YYYY-MM-DD")
    p.add_argument("--start-date", type=iso_date, help="backfill: first date")
    p.add_argument("--end-date", type=iso_date, help="backfill: last date (inclusive)")
    p.add_argument("--conf-file", action="append", default=[], help="extra YAML config (repeatable)")
    p.add_argument("--lake", help="lake URI (overrides lake.uri)")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                   help="config override (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="compute and count, write nothing")
    return p


def run_job(stage: str, argv: list[str] | None = None) -> int:
    """Parse flags, run ``stage`` for each requested date; 0 on success, 1 on failure."""
    args = job_parser(stage).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger(f"demandlake.jobs.{stage}")
    if args.start_date or args.end_date:
        if not (args.start_date and args.end_date):
            print(f"{stage}: --start-date and --end-date go together", file=sys.stderr)
            return 2
        dates = date_range(args.start_date, args.end_date)
    elif args.run_date:
        dates = [args.run_date]
    else:
        print(f"{stage}: give --run-date or --start-date/--end-date", file=sys.stderr)
        return 2
    try:
        from demandlake import pipeline
        from demandlake.config import load_config
        from demandlake.spark import get_spark

        cfg = load_config(args.conf_file, args.overrides, args.lake)
        log.info("resolved config (from %s):\n%s", cfg.sources, cfg.dumps())
        spark = get_spark(cfg, app_name=f"demandlake-{stage}")
        fn = pipeline.stage_functions()[stage]
        for i, d in enumerate(dates, 1):
            log.info("[%s %d/%d] %s", stage, i, len(dates), d)
            log.info("%s %s: %s", stage, d, fn(spark, cfg, d, dry_run=args.dry_run))
    except Exception as exc:  # one clear line for the scheduler's log, the trace at debug level
        log.debug("failure", exc_info=True)
        print(f"{stage} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0
