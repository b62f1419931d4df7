"""Runs a graph of ``pipeline.graph``: the nightly chain of a date, a backfill, a first run.

``nightly`` on a lake that already has data runs the ``graph.NIGHTLY`` stages for the run date.
On an empty lake it first loads the history (generating the synthetic sample when there is no
raw data): the ``graph.HISTORY`` stages (ingest, sessions) run once over every raw date up to the
run date, and the rest of the chain (models, review sentiment, features, scoring) then runs for
the last date. ``tests/test_pipeline_chain.py`` pins that this gives the same tables as running
the chain date by date.
"""
from __future__ import annotations

import datetime as dt
import logging
import shlex
import sys
import time
import zoneinfo
from pathlib import Path
from typing import Sequence

from pyspark.sql import SparkSession

from demandlake import lake, runlog
from demandlake.config import Config, local_path
from demandlake.console import Reporter
from demandlake.pipeline import graph
from demandlake.pipeline.stages import run_stage

log = logging.getLogger(__name__)


def default_run_date(cfg: Config) -> dt.date:
    """Yesterday in the lake's time zone (``lake.timezone``), the date a nightly run processes."""
    tz = zoneinfo.ZoneInfo(cfg.get("lake.timezone", "UTC") or "UTC")
    return dt.datetime.now(tz).date() - dt.timedelta(days=1)


def stages_of(name: str, train: bool = True, skip: Sequence[str] = ()) -> list[graph.Stage]:
    """The stages of graph ``name``, without training ones when ``train`` is False."""
    return [s for s in graph.GRAPHS[name]
            if s.name not in skip and (train or not s.name.startswith("train_"))]


def run_graph(spark: SparkSession, cfg: Config, stages: Sequence[graph.Stage],
              run_date: dt.date, reporter: Reporter | None = None,
              options: dict[str, dict] | None = None) -> dict[str, dict]:
    """Run ``stages`` in order for ``run_date``, each with the graph's options.

    Args:
        options: extra options per stage name (e.g. ``{"ingest": {"history": True}}``).

    Returns:
        Stage name -> its counts.
    """
    reporter = reporter or Reporter()
    summary: dict[str, dict] = {}
    for s in stages:
        t0 = time.monotonic()
        counts = run_stage(spark, cfg, s.name, run_date if s.per_date else None,
                           **{**s.options, **(options or {}).get(s.name, {})})
        reporter.stage(run_date if s.per_date else None, s.name, counts,
                       time.monotonic() - t0, s.headline)
        summary[s.name] = counts
    return summary


def run_day(spark: SparkSession, cfg: Config, run_date: dt.date, train: bool = True,
            reporter: Reporter | None = None,
            stages: Sequence[graph.Stage] | None = None) -> dict:
    """The nightly graph's stages (or ``stages``) for ``run_date``, then the ``nightly`` record
    in ops.runs that says the date is done.

    Returns:
        ``run_date`` and each stage's counts.
    """
    if stages is None:
        stages = stages_of("nightly", train)
    summary = run_graph(spark, cfg, stages, run_date, reporter)
    # The record that the whole chain of the date succeeded (backfill skips such dates).
    with runlog.tracked(spark, cfg, "nightly", run_date) as run:
        run.add(stages=",".join(summary))
    return {"run_date": run_date, **summary}


def _bronze_is_empty(spark: SparkSession, cfg: Config) -> bool:
    return lake.read(spark, cfg, "bronze.events").limit(1).count() == 0


def nightly(spark: SparkSession, cfg: Config, run_date: dt.date | None = None,
            train: bool = True, reporter: Reporter | None = None) -> dict:
    """The nightly chain for ``run_date`` (default: the last raw date on an empty lake, else
    yesterday in the lake's time zone); on an empty lake, the history first (module doc).

    Returns:
        ``run_date`` and each stage's counts.
    """
    from demandlake.pipeline.ingest import ensure_sample_data

    reporter = reporter or Reporter()
    stages = stages_of("nightly", train)
    if _bronze_is_empty(spark, cfg):
        available = ensure_sample_data(spark, cfg)
        history = [d for d in available if run_date is None or d <= run_date]
        if history:
            run_date = history[-1]
            reporter.line(f"empty lake: loading {len(history)} days of history "
                          f"({history[0]}..{run_date}) in one batch")
            first = [s for s in stages if s.name in graph.HISTORY]
            rest = [s for s in stages if s.name not in graph.HISTORY]
            run_graph(spark, cfg, first, run_date, reporter, {"ingest": {"history": True}})
            return run_day(spark, cfg, run_date, reporter=reporter, stages=rest)
    return run_day(spark, cfg, run_date or default_run_date(cfg), reporter=reporter,
                   stages=stages)


def backfill(spark: SparkSession, cfg: Config, dates: list[dt.date], force: bool = False,
             train: bool = True, reporter: Reporter | None = None) -> dict:
    """The nightly chain for each date in order, skipping dates whose nightly already succeeded.

    A date that fails stops the backfill (later dates depend on it); rerunning the same range
    then runs only the dates without a successful nightly.
    """
    reporter = reporter or Reporter()
    ran, skipped = [], []
    stages = stages_of("nightly", train)
    with reporter.dates("backfill", dates) as advance:
        for d in dates:
            if not force and runlog.last_success(spark, cfg, "nightly", d):
                log.info("backfill: %s already done: skipped", d)
                skipped.append(d.isoformat())
            else:
                run_day(spark, cfg, d, reporter=reporter, stages=stages)
                ran.append(d.isoformat())
            advance(d)
    return {"ran": ran, "skipped": skipped}


def _cli() -> str:
    """The ``demandlake`` command of this interpreter's environment, as a path a plain shell
    runs (the venv is usually not on the user's PATH)."""
    exe = Path(sys.executable).parent / "demandlake"
    return str(exe) if exe.exists() else "demandlake"


def sample_query(cfg: Config, run_date: dt.date) -> str:
    """A ``demandlake sql`` command line that a person can paste into a shell as printed."""
    lake_dir = local_path(cfg.lake_uri)
    lake_arg = str(lake_dir.resolve()) if lake_dir is not None else cfg.lake_uri
    query = ("SELECT segment, count(*) AS users, round(avg(churn_risk), 3) AS churn_risk "
             f"FROM gold.user_profiles WHERE run_date = DATE'{run_date.isoformat()}' "
             "GROUP BY segment ORDER BY users DESC")
    return f'{shlex.quote(_cli())} --lake {shlex.quote(lake_arg)} sql "{query}"'


def describe_outputs(cfg: Config, summary: dict) -> str:
    """What a person reads at the end of ``demandlake nightly``."""
    d = summary.get("run_date")
    lines = [f"nightly run for {d} finished.", f"lake: {cfg.lake_uri}", "tables:"]
    for name in sorted(lake.TABLES):
        lines.append(f"  {name:28s} {lake.spec(name).location(cfg)}")
    lines += ["", "try:", f"  {sample_query(cfg, d)}",
              f"  {shlex.quote(_cli())} --lake {shlex.quote(cfg.lake_uri)} status"]
    return "\n".join(lines)
