"""Shared flag handling for the spark-submit entry points in ``jobs/`` (one per stage of
``pipeline.graph``).

Each job is ``sys.exit(run_job("STAGE"))``: it parses ``--run-date`` (or ``--start-date`` and
``--end-date`` for a backfill), ``--conf-file``, ``--lake``, ``--set`` and the stage's own options
(``--if-none-serving`` for the training stages), builds the session (under spark-submit its
``--master``/``--conf`` win), runs the stage for each date in order exactly as the CLI's chain
runs it (``pipeline.chain.run_graph``), and on failure logs the whole traceback at ERROR (so the
scheduler's task log has it), prints one line and exits non-zero.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from demandlake.cli import date_range, iso_date
from demandlake.pipeline import graph


def job_parser(stage: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"jobs/{stage}.py",
                                description=f"demandlake {stage} stage (spark-submit entry point): "
                                            f"{graph.stage(stage).does}",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--run-date", type=iso_date, help="logical date YYYY-MM-DD")
    p.add_argument("--start-date", type=iso_date, help="backfill: first date")
    p.add_argument("--end-date", type=iso_date, help="backfill: last date (inclusive)")
    p.add_argument("--conf-file", action="append", default=[], help="extra YAML config (repeatable)")
    p.add_argument("--lake", help="lake URI (overrides lake.uri)")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                   help="config override (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="compute and count, write nothing")
    for option in graph.options_of(stage):
        p.add_argument(f"--{option.replace('_', '-')}", action="store_true", dest=option,
                       help=option.replace("_", " "))
    return p


def run_job(stage: str, argv: list[str] | None = None) -> int:
    """Parse flags, run ``stage`` for each requested date; 0 on success, 1 on failure."""
    args = job_parser(stage).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("py4j", "mlflow", "alembic", "urllib3", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
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
        from demandlake.config import load_config
        from demandlake.console import Reporter
        from demandlake.pipeline.chain import run_graph
        from demandlake.spark import get_spark

        cfg = load_config(args.conf_file, args.overrides, args.lake)
        log.info("resolved config (from %s):\n%s", cfg.sources, cfg.dumps())
        spark = get_spark(cfg, app_name=f"demandlake-{stage}")
        options = {o: True for o in graph.options_of(stage) if getattr(args, o, False)}
        if args.dry_run:
            options["dry_run"] = True
        reporter = Reporter()
        for d in dates:
            run_graph(spark, cfg, [graph.stage(stage)], d, reporter, {stage: options})
    except Exception as exc:
        log.error("%s failed", stage, exc_info=True)  # the whole traceback, in the task's log
        first = (str(exc).strip().splitlines() or [""])[0][:500]
        print(f"{stage} failed: {type(exc).__name__}: {first}", file=sys.stderr)
        return 1
    return 0
