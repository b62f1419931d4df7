"""The Spark settings of every Spark the tests start: sized for a 2-core machine and tiny inputs."""
from __future__ import annotations

# Two local cores, two shuffle partitions, no adaptive re-planning (on inputs this small it only
# splits each action into more Spark jobs), one task to rebuild a Delta snapshot.
SMALL_SPARK = (
    "spark.master=local[2]",
    "spark.conf.spark.sql.shuffle.partitions=2",
    "spark.conf.spark.default.parallelism=2",
    "spark.conf.spark.driver.memory=2g",
    "spark.conf.spark.sql.adaptive.enabled=false",
    "spark.conf.spark.databricks.delta.snapshotPartitions=1",
)
