"""The run log (``ops.runs``): one row per stage execution, written even when the stage fails."""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
import uuid
from typing import Iterator

from pyspark.sql import SparkSession

from demandlake import lake, schemas
from demandlake.config import Config

log = logging.getLogger(__name__)


class Run:
    """Mutable record of one execution; stages add counts to ``metrics``."""

    def __init__(self, stage: str, run_date: dt.date | None):
        self.run_id = f"{stage}-{run_date or 'na'}-{uuid.uuid4().hex[:12]}"
        self.stage = stage
        self.run_date = run_date
        self.metrics: dict[str, str] = {}
        self.status = "running"
        self.started_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        self._t0 = time.monotonic()

    def add(self, **metrics) -> None:
        for k, v in metrics.items():
            self.metrics[k] = str(v)


def write_run(spark: SparkSession, cfg: Config, run: Run, error: str | None = None) -> None:
    finished = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    row = (run.run_id, run.stage, run.run_date, run.status, run.started_at, finished,
           round(time.monotonic() - run._t0, 3), run.metrics, error)
    df = spark.createDataFrame([row], schemas.RUNS)
    # Keyed by the unique run id: a retried write of the same record cannot duplicate it.
    lake.append_once(spark, cfg, "ops.runs", df, f"ops.runs/{run.run_id}")


@contextlib.contextmanager
def tracked(spark: SparkSession, cfg: Config, stage: str, run_date: dt.date | None,
            dry_run: bool = False) -> Iterator[Run]:
    """Context manager recording a stage's outcome in ops.runs (failure included, then re-raised)."""
    run = Run(stage, run_date)
    log.info("stage %s for %s started (run %s)", stage, run_date, run.run_id)
    try:
        yield run
    except BaseException as exc:
        run.status = "failed"
        with contextlib.suppress(Exception):
            write_run(spark, cfg, run, error=f"{type(exc).__name__}: {exc}"[:4000])
        raise
    run.status = "dry_run" if dry_run else "succeeded"
    write_run(spark, cfg, run)
    log.info("stage %s for %s %s in %.1fs: %s", stage, run_date, run.status,
             time.monotonic() - run._t0, run.metrics)


def last_success(spark: SparkSession, cfg: Config, stage: str, run_date: dt.date) -> bool:
    """Whether ``stage`` already succeeded for ``run_date`` (used by backfill to skip dates)."""
    runs = lake.read(spark, cfg, "ops.runs")
    return (runs.where((runs.stage == stage) & (runs.run_date == run_date)
                       & (runs.status == "succeeded")).limit(1).count() > 0)
