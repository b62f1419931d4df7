"""The Spark settings of every Spark the tests start: sized for a 2-core machine and tiny inputs."""
from __future__ import annotations

# Two local cores, two shuffle partitions, no adaptive re-planning (on inputs this small it only
# splits each action into more Spark jobs), one task to rebuild a Delta snapshot, and no code
# generation: on rows this few, compiling each plan's Java (janino: a quarter of the JVM's CPU in
# a day of the sample, profiled with JFR) costs more than interpreting it. Measured with
# bench/fixed_cost.py, one JVM each, these settings vs. the same with code generation: 117.5 vs
# 153.7 CPU-s for a day's five stages in a new JVM, 65.5 / 49.9 vs 90.8 / 95.7 warm
# (docs/BENCHMARKS.md, "Fixed cost of a day"). The serial garbage collector: the scored lake's
# build (tests/helpers/scored_lake.py) in a new session of these settings, A B A B on the 2-core
# machine, 2026-12-07: 225 / 212 process-tree CPU-s with G1 (JVM 172 / 168) against 192 / 196
# with it (JVM 147 / 151); G1's concurrent threads cost more than they save on a 2 GB heap.
SMALL_SPARK = (
    "spark.master=local[2]",
    "spark.conf.spark.sql.shuffle.partitions=2",
    "spark.conf.spark.default.parallelism=2",
    "spark.conf.spark.driver.memory=2g",
    "spark.conf.spark.sql.adaptive.enabled=false",
    "spark.conf.spark.databricks.delta.snapshotPartitions=1",
    "spark.conf.spark.sql.codegen.wholeStage=false",
    "spark.conf.spark.sql.codegen.factoryMode=NO_CODEGEN",
    "spark.conf.spark.driver.extraJavaOptions=-XX:+UseSerialGC",
)

# JVM options for the tests' SHORT-LIVED JVMs, given as SPARK_SUBMIT_OPTS (the JVM's options
# cannot come from the YAML, which is read after the JVM started): the kill smoke's children and
# the Airflow test's spark-submit jobs, CLI run and snapshots. C1 only (a JVM that lives for one
# small chain spends more on C2's compiles than it gains from C2's code) and the serial collector.
# Paired on one chain child (the kill smoke's, these SMALL_SPARK settings, 2026-12-07, 2 cores
# under load): 177 vs 226 CPU-s and 1.5 vs 2.1 GB peak; the serial collector alone: 223. Not for
# the long-lived suite session (C1 only cost it 20% more, docs/OPERATIONS.md) and not the
# product's default (a large input needs C2's code).
SHORT_JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
