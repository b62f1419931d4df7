"""Stage name -> the function that runs it, for every stage of ``pipeline.graph``.

Every entry point calls a stage through ``run_stage``: the CLI's chain and single-stage commands,
the spark-submit jobs (``demandlake.jobs``) and so Airflow. A stage takes only the run date and
its options; whatever it needs from an earlier stage it reads from the lake (``graph.Stage.reads``),
so a stage run alone computes what the chain computes.
"""
from __future__ import annotations

import datetime as dt
import logging
from typing import Callable

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from demandlake import lake
from demandlake.config import Config
from demandlake.pipeline import graph
from demandlake.spark import stage_settings, temporary_conf

log = logging.getLogger(__name__)


def touched_dates(spark: SparkSession, cfg: Config, run_date: dt.date) -> list[dt.date]:
    """The event/review dates that the successful ingest runs of ``run_date`` wrote new rows to
    (their ``dates`` metric in ops.runs; late dates included). Every ingest run of the date
    counts, not only the last one: a rerun after a failed sessions stage writes nothing new, and
    the dates of the first run must still be sessionized."""
    rows = (lake.read(spark, cfg, "ops.runs")
            .where((F.col("stage") == "ingest") & (F.col("run_date") == F.lit(run_date))
                   & (F.col("status") == "succeeded"))
            .select(F.col("metrics")["dates"].alias("dates")).collect())
    found = {dt.date.fromisoformat(d) for r in rows for d in (r["dates"] or "").split(",") if d}
    return sorted(found)


def _ingest(spark, cfg, run_date, dry_run=False, **kw):
    from demandlake.pipeline.ingest import run_ingest

    return run_ingest(spark, cfg, run_date, dry_run=dry_run, **kw)


def _sessions(spark, cfg, run_date, dry_run=False, dates=None, full=False):
    from demandlake.pipeline.transform import run_sessions

    _no_dry_run("sessions", dry_run)
    if dates is None:
        dates = touched_dates(spark, cfg, run_date)
    return run_sessions(spark, cfg, run_date, dates=dates or [run_date], full=full)


def _features(spark, cfg, run_date, dry_run=False):
    from demandlake.pipeline.transform import run_features

    _no_dry_run("features", dry_run)
    return run_features(spark, cfg, run_date)


def _review_sentiment(spark, cfg, run_date, dry_run=False):
    from demandlake.pipeline.score import run_review_sentiment

    return run_review_sentiment(spark, cfg, run_date, dry_run=dry_run)


def _score(spark, cfg, run_date, dry_run=False):
    from demandlake.pipeline.score import run_score

    return run_score(spark, cfg, run_date, dry_run=dry_run)


def _trainer(model: str) -> Callable:
    def run(spark, cfg, run_date, dry_run=False, if_none_serving=False):
        from demandlake.pipeline.train import run_train

        _no_dry_run(f"train_{model}", dry_run)
        return run_train(spark, cfg, run_date, model, if_none_serving=if_none_serving)

    return run


def _maintain(spark, cfg, run_date=None, dry_run=False):
    from demandlake import maintenance

    _no_dry_run("maintain", dry_run)
    return maintenance.maintain(spark, cfg)


def _no_dry_run(stage: str, dry_run: bool) -> None:
    if dry_run:
        raise ValueError(f"the {stage} stage has no dry-run mode")


FUNCTIONS: dict[str, Callable] = {
    "ingest": _ingest,
    "sessions": _sessions,
    "review_sentiment": _review_sentiment,
    "features": _features,
    "score": _score,
    "train_sentiment": _trainer("sentiment"),
    "train_sequence": _trainer("sequence"),
    "maintain": _maintain,
}
_UNDEFINED = set(graph.stage_names()) - set(FUNCTIONS)
if _UNDEFINED:  # the graph and the functions are declared apart: fail at import, not at 3 a.m.
    raise ImportError(f"pipeline.graph declares stages without a function: {sorted(_UNDEFINED)}")


def run_stage(spark: SparkSession, cfg: Config, name: str, run_date: dt.date | None,
              dry_run: bool = False, **options) -> dict:
    """Run one stage for ``run_date`` with ``options`` (the graph's, or a command line's).

    Returns:
        The stage's counts.
    """
    if name not in FUNCTIONS:
        raise KeyError(f"no stage {name!r}; stages: {', '.join(FUNCTIONS)}")
    settings = stage_settings(spark, cfg,
                              lambda: stage_input_bytes(spark, cfg, name, run_date, options))
    with temporary_conf(spark, settings):
        return FUNCTIONS[name](spark, cfg, run_date, dry_run=dry_run, **options)


def stage_input_bytes(spark: SparkSession, cfg: Config, name: str, run_date: dt.date | None,
                      options: dict) -> int:
    """What a stage reads, roughly, for ``spark.codegen`` and ``spark.adaptive: auto``:
    bronze.events (every later stage reads it or what was built from it), plus for ingest the
    raw files it will read (a first load into an empty lake is as big as its raw input)."""
    size = lake.table_bytes(spark, cfg, "bronze.events")
    if name == "ingest" and run_date is not None:
        from demandlake.pipeline.ingest import raw_input_bytes

        size += raw_input_bytes(spark, cfg, run_date, bool(options.get("history")))
    return size
