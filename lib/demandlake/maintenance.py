"""Delta housekeeping: file statistics, OPTIMIZE (compaction) and VACUUM for the lake's tables.

Nightly runs add files every day: each MERGE or ``replaceWhere`` writes new files for the
partitions it touches (about one per shuffle partition and table partition) and leaves the old
ones behind for time travel. After weeks the tables hold many small files, and every read pays
for listing and opening them. ``maintain`` compacts each table with Delta's ``OPTIMIZE``
(``DeltaTable.optimize().executeCompaction()``: bin-packing within each partition, a new table
version, readers never blocked) and, on request, ``VACUUM``s the files no current version needs
any more, keeping ``retain_hours`` of time travel (Delta's default 168 h unless configured).

Measured effect on a month of nightly runs: docs/BENCHMARKS.md (``bench/housekeeping.py``).
"""
from __future__ import annotations

import collections
import logging
import statistics
from typing import Iterable

from delta.tables import DeltaTable
from pyspark.sql import SparkSession

from demandlake import lake, runlog
from demandlake.config import Config
from demandlake.spark import temporary_conf

log = logging.getLogger(__name__)

DEFAULT_RETAIN_HOURS = 168.0
# The setting with which Delta's VACUUM sizes its listing of the table's folders.
LISTING_PARALLELISM = "spark.sql.sources.parallelPartitionDiscovery.parallelism"


def _partition_of(path: str, location: str) -> str:
    """``event_date=2026-11-01`` for a data file below ``location`` ('' when unpartitioned)."""
    rel = path.split(location.rstrip("/").split("://")[-1], 1)[-1].strip("/")
    return "/".join(p for p in rel.split("/")[:-1] if "=" in p)


def file_stats(spark: SparkSession, cfg: Config, name: str) -> dict:
    """Files of the current version of ``name``: count, bytes, per-partition counts, small files.

    Sizes come from the file system through Hadoop (so any lake URI works); one call per file,
    which is fine for a report but not for millions of files.
    """
    spec = lake.ensure_table(spark, cfg, name)
    location = spec.location(cfg)
    files = lake.read(spark, cfg, name).inputFiles()
    jvm = spark.sparkContext._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    sizes, per_partition = [], collections.Counter()
    for f in files:
        path = jvm.org.apache.hadoop.fs.Path(f)
        sizes.append(int(path.getFileSystem(conf).getFileStatus(path).getLen()))
        per_partition[_partition_of(f, location)] += 1
    small = int(cfg.get("maintenance.small_file_bytes", 8 * 1024 * 1024))
    counts = list(per_partition.values()) or [0]
    return {
        "table": name, "files": len(files), "bytes": sum(sizes),
        "partitions": len(per_partition),
        "files_per_partition_mean": round(statistics.fmean(counts), 2),
        "files_per_partition_max": max(counts),
        "mean_file_kib": round(sum(sizes) / len(sizes) / 1024, 1) if sizes else 0.0,
        "small_files": sum(1 for s in sizes if s < small),
        "version": lake.table_version(spark, cfg, name),
    }


def file_count(spark: SparkSession, cfg: Config, name: str) -> int:
    """Data files of the current version, from the Delta log (``DESCRIBE DETAIL``'s numFiles)."""
    spec = lake.ensure_table(spark, cfg, name)
    return int(DeltaTable.forPath(spark, spec.location(cfg)).detail().first()["numFiles"])


def optimize(spark: SparkSession, cfg: Config, name: str) -> dict:
    """Compact ``name`` (Delta OPTIMIZE); returns files removed/added."""
    spec = lake.ensure_table(spark, cfg, name)
    metrics = (DeltaTable.forPath(spark, spec.location(cfg)).optimize().executeCompaction()
               .select("metrics.numFilesAdded", "metrics.numFilesRemoved").first())
    return {"files_removed": int(metrics["numFilesRemoved"] or 0),
            "files_added": int(metrics["numFilesAdded"] or 0)}


def vacuum_listing_tasks(spark: SparkSession, cfg: Config) -> int:
    """How many Spark tasks VACUUM lists a table's folders with
    (``maintenance.vacuum_listing_tasks``; ``auto``: Spark's default parallelism)."""
    value = cfg.get("maintenance.vacuum_listing_tasks", "auto")
    if str(value) == "auto":
        return max(1, int(spark.sparkContext.defaultParallelism))
    try:
        tasks = int(value)
    except (TypeError, ValueError):
        tasks = 0
    if tasks < 1:
        raise ValueError(f"maintenance.vacuum_listing_tasks must be 'auto' or a whole number >= 1, "
                         f"got {value!r}")
    return tasks


def vacuum_path(spark: SparkSession, cfg: Config, location: str, retain_hours: float) -> None:
    """VACUUM the Delta table at ``location``, listing its folders with
    ``vacuum_listing_tasks`` tasks instead of Spark's partition-discovery default of 10,000
    (one stage of 10,000 tasks per listing: 61 s for a table of 6 folders on 2 cores, 15 s with
    2 tasks; docs/OPERATIONS.md)."""
    if not retain_hours >= 0:
        raise ValueError(f"retain_hours must be >= 0, got {retain_hours!r}")
    with temporary_conf(spark, {LISTING_PARALLELISM: str(vacuum_listing_tasks(spark, cfg))}):
        DeltaTable.forPath(spark, location).vacuum(float(retain_hours))


def vacuum(spark: SparkSession, cfg: Config, name: str, retain_hours: float) -> None:
    """Delete files that no table version of the last ``retain_hours`` needs (ends time travel
    before that). Delta refuses less than the table's retention unless its check is disabled."""
    spec = lake.ensure_table(spark, cfg, name)
    vacuum_path(spark, cfg, spec.location(cfg), retain_hours)


def maintain(spark: SparkSession, cfg: Config, names: Iterable[str] | None = None,
             do_vacuum: bool = False, retain_hours: float | None = None) -> dict:
    """OPTIMIZE (and optionally VACUUM) tables; the run and its counts land in ``ops.runs``.

    Args:
        names: table names (default: every bronze/silver/gold table; ``ops.*`` too when named).
        do_vacuum: also VACUUM each table after compacting it.
        retain_hours: VACUUM retention (default ``maintenance.retain_hours``, else 168).

    Returns:
        ``{table: {files_before, files_after, files_removed, files_added}}``.

    Raises:
        ValueError: for a name that is not a lake table.
    """
    chosen = list(names) if names else [n for n in lake.TABLES if not n.startswith("ops.")]
    unknown = [n for n in chosen if n not in lake.TABLES]
    if unknown:
        raise ValueError(f"not lake tables: {unknown}; known: {sorted(lake.TABLES)}")
    hours = float(retain_hours if retain_hours is not None
                  else cfg.get("maintenance.retain_hours", DEFAULT_RETAIN_HOURS))
    out: dict[str, dict] = {}
    with runlog.tracked(spark, cfg, "maintain", None) as run:
        for name in chosen:
            result = {"files_before": file_count(spark, cfg, name),
                      **optimize(spark, cfg, name)}
            if do_vacuum:
                vacuum(spark, cfg, name, hours)
            result["files_after"] = file_count(spark, cfg, name)
            log.info("maintain %s: %s", name, result)
            out[name] = result
        run.add(tables=len(out), files_before=sum(r["files_before"] for r in out.values()),
                files_after=sum(r["files_after"] for r in out.values()), vacuum=int(do_vacuum))
        if do_vacuum:
            run.add(retain_hours=hours)
    return out
