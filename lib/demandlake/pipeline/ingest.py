"""The ingest stage: raw files -> bronze.events, bronze.reviews and bronze.quarantine.

``run_ingest`` ingests every configured source (``ingest.sources``) of a run date, or explicit
ones, and records in ``ops.runs`` the counts and the event/review dates that received new rows
(``dates``), which the sessions stage reads (``pipeline.stages``). ``ensure_sample_data``
generates the synthetic sample on an empty local lake.
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Iterable

from pyspark.sql import SparkSession

from demandlake import runlog
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
