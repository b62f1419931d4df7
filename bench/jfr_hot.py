"""Where a JVM's CPU went, from a Java Flight Recorder file (``bench/fixed_cost.py --jfr``).

    python bench/jfr_hot.py /tmp/fixed.jfr

Reads the execution samples (``jfr print --events jdk.ExecutionSample``) and reports the share
of samples whose stack holds a frame of each area (inclusive: one sample counts for every area
on its stack), then the hottest frames by their own samples (the top of the stack) and the
hottest Spark/Delta methods anywhere on the stack.
"""
from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys

# Areas, first match per frame; a sample counts once per area.
AREAS = (
    ("analyzer", "org.apache.spark.sql.catalyst.analysis."),
    ("optimizer", "org.apache.spark.sql.catalyst.optimizer."),
    ("rule executor", "org.apache.spark.sql.catalyst.rules.RuleExecutor"),
    ("physical planning", "org.apache.spark.sql.execution.SparkStrategies"),
    ("query planner", "org.apache.spark.sql.catalyst.planning.QueryPlanner"),
    ("adaptive execution", "org.apache.spark.sql.execution.adaptive."),
    ("codegen compile (janino)", "org.codehaus.janino."),
    ("codegen", "org.apache.spark.sql.catalyst.expressions.codegen."),
    ("tree transforms", "org.apache.spark.sql.catalyst.trees.TreeNode"),
    ("Delta log / snapshot", "org.apache.spark.sql.delta.Snapshot"),
    ("Delta log replay", "org.apache.spark.sql.delta.actions."),
    ("Delta commit", "org.apache.spark.sql.delta.OptimisticTransaction"),
    ("Delta merge", "org.apache.spark.sql.delta.commands.MergeIntoCommand"),
    ("Delta stats", "org.apache.spark.sql.delta.stats."),
    ("Parquet read", "org.apache.parquet."),
    ("Parquet (Spark)", "org.apache.spark.sql.execution.datasources.parquet."),
    ("file listing", "org.apache.spark.sql.execution.datasources.InMemoryFileIndex"),
    ("JSON", "org.apache.spark.sql.catalyst.json."),
    ("shuffle", "org.apache.spark.shuffle."),
    ("scheduler", "org.apache.spark.scheduler."),
    ("task run", "org.apache.spark.executor.Executor$TaskRunner"),
    ("serializer", "org.apache.spark.serializer."),
    ("py4j", "py4j."),
    ("Python runner (UDF)", "org.apache.spark.api.python."),
    ("Arrow", "org.apache.arrow."),
    ("ML (ALS/KMeans)", "org.apache.spark.ml."),
    ("hadoop fs", "org.apache.hadoop.fs."),
    ("json4s/jackson", "com.fasterxml.jackson."),
    ("GC", "GC"),
)


def samples(path: str):
    """Yield each sample's stack as a list of ``class.method`` frames, top first."""
    out = subprocess.run(["jfr", "print", "--events", "jdk.ExecutionSample", "--stack-depth",
                          "200", path], capture_output=True, text=True, check=True).stdout
    stack: list[str] | None = None
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("stackTrace = ["):
            stack = []
        elif stack is not None:
            if line.startswith("]") or line.startswith("..."):
                if line.startswith("]"):
                    yield stack
                    stack = None
                continue
            m = re.match(r"([\w$.<>/]+)\(", line)
            if m:
                stack.append(m.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("jfr")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    total, areas, own, anywhere = 0, collections.Counter(), collections.Counter(), collections.Counter()
    for stack in samples(args.jfr):
        total += 1
        if stack:
            own[stack[0]] += 1
        hit = set()
        for frame in stack:
            for name, prefix in AREAS:
                if frame.startswith(prefix):
                    hit.add(name)
        areas.update(hit)
        anywhere.update({f for f in stack if f.startswith(("org.apache.spark", "io.delta",
                                                           "org.apache.spark.sql.delta"))})
    print(f"{total} samples")
    print("\nby area (inclusive):")
    for name, n in areas.most_common():
        print(f"  {100 * n / total:5.1f}%  {name}")
    print(f"\nhottest frames (own samples), top {args.top}:")
    for f, n in own.most_common(args.top):
        print(f"  {100 * n / total:5.1f}%  {f}")
    print(f"\nSpark/Delta methods anywhere on the stack, top {args.top}:")
    for f, n in anywhere.most_common(args.top):
        print(f"  {100 * n / total:5.1f}%  {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
