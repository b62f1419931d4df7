"""The ingest stage: raw files -> bronze.events, bronze.reviews and bronze.quarantine.

``run_ingest`` ingests every configured source (``ingest.sources``) of a run date, or explicit
ones, and records in ``ops.runs`` the counts and the event/review dates that received new rows
(``dates``), which the sessions stage reads (``pipeline.stages``). With ``history=True`` it reads
every date of the sources' ``{run_date}`` paths up to the run date in one batch, with the tables
that ingesting those dates one by one, in order, would leave. ``ensure_sample_data`` generates
the synthetic sample on an empty local lake.
"""
from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass
from typing import Iterable

from pyspark.sql import SparkSession

from demandlake import runlog
from demandlake.config import Config
from demandlake.ingest.bronze import Input, ReconciliationError, ingest_inputs, ingest_source
from demandlake.ingest.readers import reader_for

log = logging.getLogger(__name__)

RUN_DATE = "{run_date}"


@dataclass(frozen=True)
class Source:
    """One input of the ingest stage: a format, a path (glob allowed) and a time zone.

    ``timezone`` is the zone in which the source writes timestamps that carry no offset or zone
    (``2017-11-25 08:00:00`` is local time there; None: UTC). Timestamps with ``Z``, an offset or
    a zone name, and Unix epoch numbers, do not depend on it. Event and review dates are always
    local dates in ``lake.timezone``.
    """

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


def configured_sources(cfg: Config, run_date: dt.date | None) -> list[Source]:
    """The ``ingest.sources`` entries under ``lake.raw_uri``, with ``{run_date}`` filled in
    (left in place when ``run_date`` is None, for ``history``)."""
    out = []
    for entry in cfg.get("ingest.sources") or []:
        path = str(entry["path"])
        if run_date is not None:
            path = path.format(run_date=run_date.isoformat())
        if "://" not in path and not path.startswith("/"):
            path = f"{cfg.raw_uri.rstrip('/')}/{path}"
        reader_for(entry["format"])
        out.append(Source(entry.get("name", entry["format"]), entry["format"], path,
                          entry.get("timezone"), bool(entry.get("optional", False))))
    return out


def _glob(spark: SparkSession, path: str) -> list:
    """The Hadoop FileStatus of everything matching ``path`` (a glob)."""
    jvm = spark.sparkContext._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    fs = hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    return list(fs.globStatus(hpath) or [])


def raw_input_bytes(spark: SparkSession, cfg: Config, run_date: dt.date, history: bool) -> int:
    """Bytes of the configured sources' files for ``run_date`` (every date with ``history``)."""
    total = 0
    for src in configured_sources(cfg, None if history else run_date):
        for status in _glob(spark, src.path.replace(RUN_DATE, "*")):
            path = status.getPath()
            total += int(path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
                         .getContentSummary(path).getLength())
    return total


def _exists(spark: SparkSession, path: str) -> bool:
    return len(_glob(spark, path)) > 0


def _glob_regex(glob: str) -> str:
    """A regular expression for one path segment of a Hadoop glob, ``{run_date}`` captured."""
    out, i = [], 0
    while i < len(glob):
        if glob.startswith(RUN_DATE, i):
            out.append(r"(\d{4}-\d{2}-\d{2})")
            i += len(RUN_DATE)
            continue
        c = glob[i]
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            j = glob.index("]", i + 1)
            body = glob[i + 1:j]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = j
        elif c == "{":
            j = glob.index("}", i + 1)
            out.append("(?:" + "|".join(re.escape(a) for a in glob[i + 1:j].split(",")) + ")")
            i = j
        elif c == "\\" and i + 1 < len(glob):
            i += 1
            out.append(re.escape(glob[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def file_dates(spark: SparkSession, template: str) -> list[dt.date]:
    """The dates in place of ``{run_date}`` of the files (or folders) that ``template`` matches
    with a wildcard there: the run dates a day-by-day ingest would read them under.

    Raises:
        ValueError: ``template`` has no ``{run_date}``.
    """
    segments = template.split("/")
    at = next((k for k, s in enumerate(segments) if RUN_DATE in s), None)
    if at is None:
        raise ValueError(f"history needs {RUN_DATE} in the input path, got {template!r}")
    up = len([s for s in segments[at + 1:] if s])  # Hadoop drops empty segments
    pattern = re.compile(_glob_regex(segments[at]))
    found = set()
    for status in _glob(spark, template.replace(RUN_DATE, "*")):
        path = status.getPath()
        for _ in range(up):
            path = path.getParent()
        m = pattern.fullmatch(path.getName())
        try:
            day = dt.date.fromisoformat(m.group(1)) if m else None
        except ValueError:
            day = None
        if day is None or day.isoformat() != m.group(1):
            log.warning("history: %s has no run date in place of %s: skipped", status.getPath(),
                        RUN_DATE)
            continue
        found.add(day)
    return sorted(found)


def _history_inputs(spark: SparkSession, srcs: list[Source], run_date: dt.date,
                    allow_missing: bool, run: runlog.Run) -> list[Input]:
    """Every (date <= run_date, source) input in replay order: date, then source."""
    inputs = []
    for src in srcs:
        dates = [d for d in file_dates(spark, src.path) if d <= run_date]
        if not dates:
            if allow_missing or src.optional:
                log.warning("no input at %s up to %s (%s): skipped", src.path, run_date, src.name)
                run.add(**{f"missing.{src.name}": src.path})
                continue
            raise FileNotFoundError(f"input for {src.name} not found: {src.path} up to {run_date}")
        inputs += [Input(src.fmt, src.path.replace(RUN_DATE, d.isoformat()), d, src.name,
                         src.timezone) for d in dates]
    order = {src.name: k for k, src in enumerate(srcs)}
    return sorted(inputs, key=lambda i: (i.run_date, order[i.source]))


def run_ingest(spark: SparkSession, cfg: Config, run_date: dt.date,
               sources: Iterable[Source] | None = None, dry_run: bool = False,
               allow_missing: bool = False, history: bool = False) -> dict[str, int]:
    """Ingest every source for ``run_date`` into bronze (idempotent: a rerun adds nothing).

    Args:
        sources: explicit inputs; default: ``ingest.sources`` from the config.
        allow_missing: skip configured inputs whose files are absent instead of failing.
        history: read every date up to ``run_date`` in one batch: each source path's
            ``{run_date}`` becomes a wildcard, each file is ingested under the date in its path,
            and bronze ends as it would after ``run_ingest`` for each of those dates in order.

    Returns:
        Totals over the sources (read, new, duplicates, quarantined, reason.*), and ``dates``:
        the event/review dates that received new rows (late dates included).
    """
    if sources is not None:
        srcs = list(sources)
    else:
        srcs = configured_sources(cfg, None if history else run_date)
    totals: dict = {}
    dates: set[dt.date] = set()
    with runlog.tracked(spark, cfg, "ingest", run_date, dry_run=dry_run) as run:
        if history:
            inputs = _history_inputs(spark, srcs, run_date, allow_missing, run)
            run.add(history=f"{inputs[0].run_date}..{inputs[-1].run_date}" if inputs else "none")
            by_kind: dict[str, list[Input]] = {}
            for inp in inputs:
                by_kind.setdefault(reader_for(inp.fmt)[0], []).append(inp)
            results = [ingest_inputs(spark, cfg, batch, dry_run=dry_run)["by_source"]
                       for batch in by_kind.values()]
            per_source = [item for r in results for item in r.items()]
        else:
            per_source = []
            for src in srcs:
                if not _exists(spark, src.path):
                    if allow_missing or src.optional:
                        log.warning("no input at %s (%s): skipped", src.path, src.name)
                        run.add(**{f"missing.{src.name}": src.path})
                        continue
                    raise FileNotFoundError(f"input for {src.name} not found: {src.path}")
                per_source.append((src.name, ingest_source(
                    spark, cfg, src.fmt, src.path, run_date, source_name=src.name,
                    timezone=src.timezone, dry_run=dry_run)))
        for name, counts in per_source:
            for k, v in counts.items():
                if k == "dates":
                    dates.update(v)
                    continue
                totals[k] = totals.get(k, 0) + v
                run.add(**{f"{name}.{k}": v})
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
