"""Delta housekeeping: OPTIMIZE compacts without changing contents, VACUUM deletes old files."""
from __future__ import annotations

from pathlib import Path

import pytest
from pyspark.sql import functions as F

from demandlake import cli, lake, maintenance, schemas
from helpers import feature_events


def _load_in_pieces(spark, cfg, pieces: int = 4) -> None:
    """The hand-made events, one MERGE per slice: several small files per date partition."""
    for i in range(pieces):
        rows = feature_events.EVENTS[i::pieces]
        lake.merge_insert(spark, cfg, "bronze.events",
                          spark.createDataFrame(rows, schemas.BRONZE_EVENTS), ["event_id"])


def _rows(spark, cfg, name):
    df = lake.read(spark, cfg, name)
    return sorted(df.select(F.to_json(F.struct(*df.columns))).collect())


def test_optimize_compacts_each_partition_and_keeps_every_row(spark, cfg):
    _load_in_pieces(spark, cfg)
    before_rows = _rows(spark, cfg, "bronze.events")
    before = maintenance.file_stats(spark, cfg, "bronze.events")
    assert before["files_per_partition_max"] > 1  # the setup really made small files

    result = maintenance.maintain(spark, cfg, ["bronze.events"])

    after = maintenance.file_stats(spark, cfg, "bronze.events")
    assert result["bronze.events"]["files_before"] == before["files"]
    assert result["bronze.events"]["files_after"] == after["files"] == after["partitions"]
    assert after["files_per_partition_max"] == 1
    assert after["version"] == before["version"] + 1
    assert _rows(spark, cfg, "bronze.events") == before_rows
    runs = lake.read(spark, cfg, "ops.runs").where(F.col("stage") == "maintain").collect()
    assert len(runs) == 1 and runs[0]["status"] == "succeeded"
    assert runs[0]["metrics"]["files_after"] == str(after["files"])


def test_vacuum_leaves_only_the_current_versions_files(spark, cfg):
    _load_in_pieces(spark, cfg)
    maintenance.optimize(spark, cfg, "bronze.events")
    location = Path(lake.spec("bronze.events").location(cfg))
    on_disk = lambda: {p for p in location.rglob("*.parquet") if "_delta_log" not in p.parts}  # noqa: E731
    current = maintenance.file_stats(spark, cfg, "bronze.events")["files"]
    assert len(on_disk()) > current  # compaction left the old small files for time travel
    key = "spark.databricks.delta.retentionDurationCheck.enabled"
    spark.conf.set(key, "false")
    sc = spark.sparkContext
    sc.setJobGroup("test-maintain-vacuum", "maintain with VACUUM")
    try:
        maintenance.maintain(spark, cfg, ["bronze.events"], do_vacuum=True, retain_hours=0)
    finally:
        spark.conf.unset(key)
        sc.setLocalProperty("spark.jobGroup.id", None)
    assert len(on_disk()) == current
    # VACUUM lists the folders with Spark's default parallelism (2 here), not with the 10,000
    # tasks of Spark's partition-discovery default, which it used before (61 s on 2 cores).
    tracker = sc.statusTracker()
    stages = [tracker.getStageInfo(s) for j in tracker.getJobIdsForGroup("test-maintain-vacuum")
              for s in tracker.getJobInfo(j).stageIds]
    tasks = [s.numTasks for s in stages if s is not None]
    assert tasks and max(tasks) <= 16, sorted(tasks)[-5:]


def test_maintain_refuses_names_that_are_not_lake_tables(spark, cfg):
    with pytest.raises(ValueError, match="not lake tables"):
        maintenance.maintain(spark, cfg, ["bronze.events; DROP TABLE x"])
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["maintain", "--table", "gold.nope"])
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["maintain", "--retain-hours", "-1"])


def test_vacuum_listing_tasks_are_the_default_parallelism_unless_set(spark, cfg):
    assert maintenance.vacuum_listing_tasks(spark, cfg) == spark.sparkContext.defaultParallelism
    set_to = lambda v: cfg.with_overrides({"maintenance.vacuum_listing_tasks": v})  # noqa: E731
    assert maintenance.vacuum_listing_tasks(spark, set_to(64)) == 64
    for bad in (0, "many", -3):
        with pytest.raises(ValueError, match="maintenance.vacuum_listing_tasks"):
            maintenance.vacuum_listing_tasks(spark, set_to(bad))
