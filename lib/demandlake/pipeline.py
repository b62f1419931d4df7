"""Stages in order: each reads its inputs, calls pure transforms, writes through ``lake`` and logs
itself in ``ops.runs``. The CLI, the spark-submit jobs and Airflow all come through here.
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Callable, Iterable

from pyspark.sql import SparkSession

from demandlake import lake, runlog
from demandlake.config import Config
from demandlake.ingest.bronze import ReconciliationError, ingest_source
from demandlake.ingest.readers import reader_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """One input of the ingest stage: a format, a path (glob allowed) and its time zone."""

    name: str
    fmt: str
    path: str
    timezone: str | None = None
    optional: bool = False

    @classmethod
    def parse(cls, text: str) -> "Source":
        """``FORMAT=PATH`` (e.g. ``taobao=/data/UserBehavior.csv``) from the command line."""
        if "=" not in text:
            raise ValueError(f"--source must look like FORMAT=PATH, got {text!r}")
        fmt, path = text.split("=", 1)
        reader_for(fmt)  # validates the name
        return cls(fmt, fmt, path)


def configured_sources(cfg: Config, run_date: dt.date) -> list[Source]:
    """The ``ingest.sources`` entries with ``{run_date}`` filled in, under ``lake.raw_uri``."""
    out = []
    for entry in cfg.get("ingest.sources") or []:
        path = str(entry["path"]).format(run_date=run_date.isoformat())
        if "://" not in path and not path.startswith("/"):
            path = f"{cfg.raw_uri.rstrip('/')}/{path}"
        reader_for(entry["format"])
        out.append(Source(entry.get("name", entry["format"]), entry["format"], path,
                          entry.get("timezone"), bool(entry.get("optional", False))))
    return out


def _exists(spark: SparkSession, path: str) -> bool:
    jvm = spark.sparkContext._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    fs = hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    statuses = fs.globStatus(hpath)
    return statuses is not None and len(statuses) > 0


def run_ingest(spark: SparkSession, cfg: Config, run_date: dt.date,
               sources: Iterable[Source] | None = None, dry_run: bool = False,
               allow_missing: bool = False) -> dict[str, int]:
    """Ingest every source for ``run_date`` into bronze (idempotent: a rerun adds nothing).

    Args:
        sources: explicit inputs; default: ``ingest.sources`` from the config.
        allow_missing: skip configured inputs whose files are absent instead of failing.

    Returns:
        Totals over the sources (read, new, duplicates, quarantined, reason.*), and ``dates``:
        the event/review dates that received new rows (late dates included).
    """
    srcs = list(sources) if sources is not None else configured_sources(cfg, run_date)
    totals: dict = {}
    dates: set[dt.date] = set()
    with runlog.tracked(spark, cfg, "ingest", run_date, dry_run=dry_run) as run:
        for src in srcs:
            if not _exists(spark, src.path):
                if allow_missing or src.optional:
                    log.warning("no input at %s (%s): skipped", src.path, src.name)
                    run.add(**{f"missing.{src.name}": src.path})
                    continue
                raise FileNotFoundError(f"input for {src.name} not found: {src.path}")
            counts = ingest_source(spark, cfg, src.fmt, src.path, run_date, source_name=src.name,
                                   timezone=src.timezone, dry_run=dry_run)
            for k, v in counts.items():
                if k == "dates":
                    dates.update(v)
                    continue
                totals[k] = totals.get(k, 0) + v
                run.add(**{f"{src.name}.{k}": v})
        run.add(**totals)
        if totals.get("read", 0) != (totals.get("new", 0) + totals.get("duplicates", 0)
                                     + totals.get("quarantined", 0)):
            raise ReconciliationError(f"ingest totals do not add up: {totals}")
        run.add(dates=",".join(d.isoformat() for d in sorted(dates)))
    totals["dates"] = sorted(dates)
    return totals


def _raw_event_dates(spark: SparkSession, cfg: Config) -> list[dt.date]:
    """Dates of the ``events/dt=YYYY-MM-DD`` partitions present in the raw landing zone."""
    jvm = spark.sparkContext._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(f"{cfg.raw_uri.rstrip('/')}/events/dt=*")
    fs = hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    found = []
    for status in fs.globStatus(hpath) or []:
        name = status.getPath().getName()
        try:
            found.append(dt.date.fromisoformat(name.split("=", 1)[1]))
        except ValueError:
            log.warning("ignoring raw folder with a bad date: %s", name)
    return sorted(found)


def ensure_sample_data(spark: SparkSession, cfg: Config) -> list[dt.date]:
    """On an empty lake with no raw data, generate the configured synthetic sample.

    Returns:
        The raw event dates available afterwards.
    """
    dates = _raw_event_dates(spark, cfg)
    if dates:
        return dates
    from demandlake import synth
    from demandlake.config import local_path

    out = local_path(cfg.raw_uri)
    if out is None:
        raise FileNotFoundError(f"no raw data under {cfg.raw_uri} (sample data is only "
                                "generated on a local lake)")
    log.info("lake is empty: generating sample data into %s", out)
    synth.generate(out, **synth.configured(cfg))
    return _raw_event_dates(spark, cfg)


def _bronze_is_empty(spark: SparkSession, cfg: Config) -> bool:
    return lake.read(spark, cfg, "bronze.events").limit(1).count() == 0


def _has_serving(cfg: Config, model: str) -> bool:
    from demandlake.training import tracking

    tracking.configure(cfg)
    return tracking.serving_version(tracking_name(model)) is not None


def tracking_name(model: str) -> str:
    return f"demandlake-{model}"


def run_train(spark: SparkSession, cfg: Config, model: str) -> dict:
    """Build the model's training data and train it (registers; promotes only if better)."""
    from demandlake import pipeline_transform
    from demandlake.training import runner

    if model == "sequence":
        pipeline_transform.run_sequence_examples(spark, cfg)
        result = runner.train_sequence_model(spark, cfg)
    elif model == "sentiment":
        pipeline_transform.run_review_corpus(spark, cfg)
        result = runner.train_sentiment_model(spark, cfg)
    else:
        raise ValueError(f"unknown model {model!r}")
    return {"run_id": result.run_id, "version": result.version, "promoted": result.promoted,
            "seconds": round(result.seconds, 1)}


def run_day(spark: SparkSession, cfg: Config, run_date: dt.date, *, score: bool = True,
            train: bool = True) -> dict:
    """The nightly chain for one date: ingest -> sessions -> features -> (train) -> score."""
    from demandlake import pipeline_transform

    summary: dict = {"run_date": run_date}
    log.info("[nightly %s] ingest", run_date)
    ing = run_ingest(spark, cfg, run_date)
    summary["ingest"] = {k: v for k, v in ing.items() if k != "dates"}
    log.info("[nightly %s] sessions", run_date)
    summary["sessions"] = pipeline_transform.run_sessions(spark, cfg, run_date,
                                                          dates=ing["dates"] or [run_date])
    if not score:
        return summary
    log.info("[nightly %s] features", run_date)
    summary["features"] = pipeline_transform.run_features(spark, cfg, run_date)
    if train:
        for model in ("sentiment", "sequence"):
            if not _has_serving(cfg, model):
                log.info("[nightly %s] no serving %s model yet: training one", run_date, model)
                summary[f"train_{model}"] = run_train(spark, cfg, model)
    from demandlake import pipeline_score

    log.info("[nightly %s] review sentiment", run_date)
    summary["review_sentiment"] = pipeline_score.run_review_sentiment(spark, cfg, run_date)
    log.info("[nightly %s] score", run_date)
    summary["score"] = pipeline_score.run_score(spark, cfg, run_date)
    with runlog.tracked(spark, cfg, "nightly", run_date) as run:
        run.add(stages=",".join(k for k in summary if k != "run_date"))
    return summary


def nightly(spark: SparkSession, cfg: Config, run_date: dt.date | None = None,
            train: bool = True) -> dict:
    """Run the nightly chain. On an empty lake: generate sample data when there is no raw data,
    then run every raw date in order up to ``run_date`` (a backfill), scoring the last one."""
    dates = [run_date] if run_date else []
    if _bronze_is_empty(spark, cfg):
        available = ensure_sample_data(spark, cfg)
        dates = [d for d in available if run_date is None or d <= run_date] or dates
    if not dates:
        dates = [dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1)]
    summary = {}
    for i, d in enumerate(dates, 1):
        last = i == len(dates)
        log.info("[nightly %d/%d] %s%s", i, len(dates), d, "" if last else " (history)")
        summary = run_day(spark, cfg, d, score=last, train=train)
    return summary


def backfill(spark: SparkSession, cfg: Config, dates: list[dt.date], force: bool = False,
             train: bool = True) -> dict:
    """The nightly chain for each date in order, skipping dates whose nightly already succeeded.

    A date that fails stops the backfill (later dates depend on it); rerunning the same range
    then runs only the dates without a successful nightly.
    """
    ran, skipped = [], []
    for i, d in enumerate(dates, 1):
        if not force and runlog.last_success(spark, cfg, "nightly", d):
            log.info("[backfill %d/%d] %s already done: skipped", i, len(dates), d)
            skipped.append(d.isoformat())
            continue
        log.info("[backfill %d/%d] %s", i, len(dates), d)
        run_day(spark, cfg, d, train=train)
        ran.append(d.isoformat())
    return {"ran": ran, "skipped": skipped}


def describe_outputs(cfg: Config, summary: dict) -> str:
    """What a person reads at the end of `demandlake nightly`."""
    d = summary.get("run_date")
    lines = [f"nightly run for {d} finished.", f"lake: {cfg.lake_uri}", "tables:"]
    for name in sorted(lake.TABLES):
        lines.append(f"  {name:28s} {lake.spec(name).location(cfg)}")
    lines += ["", "try:",
              f"  demandlake --lake {cfg.lake_uri} sql \"",
              "    \"SELECT segment, count(*) AS users, avg(churn_risk) AS churn_risk "
              f"FROM gold.user_profiles WHERE run_date = DATE'{d}' GROUP BY segment\"",
              f"  demandlake --lake {cfg.lake_uri} status"]
    return "\n".join(lines)


def _adapt(fn: Callable, dry_run_ok: bool = False) -> Callable:
    def call(spark, cfg, run_date, dry_run: bool = False, **kw):
        if dry_run and not dry_run_ok:
            raise ValueError("this stage has no dry-run mode")
        return fn(spark, cfg, run_date, **({"dry_run": dry_run} if dry_run_ok else {}), **kw)

    return call


def stage_functions() -> dict[str, Callable]:
    """Stage name -> callable(spark, cfg, run_date, dry_run=False); imported lazily."""
    from demandlake import pipeline_score, pipeline_transform

    return {
        "ingest": _adapt(run_ingest, dry_run_ok=True),
        "sessions": _adapt(pipeline_transform.run_sessions),
        "features": _adapt(pipeline_transform.run_features),
        "score": _adapt(pipeline_score.run_score, dry_run_ok=True),
        "train_sequence": lambda spark, cfg, run_date, **kw: run_train(spark, cfg, "sequence"),
        "train_sentiment": lambda spark, cfg, run_date, **kw: run_train(spark, cfg, "sentiment"),
    }
