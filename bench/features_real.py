"""Wall time and peak memory of sessions + user features + sequence examples on the real Taobao
sample (489 users, 52k events), in a throw-away lake. Figures go to docs/FEATURES.md.

    python bench/features_real.py --data ../shared/data/real/taobao_user_behavior_sample.csv

Peak memory is the high-water mark of resident memory (``VmHWM``) of the Spark JVM and of this
Python driver; the stages run no Python UDFs, so no Python workers hold data. Besides wall time,
the JVM's CPU seconds per stage are reported: on a shared machine they move much less with the load
than wall time does. The load average is printed too.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import resource
import tempfile
import time
from pathlib import Path

from demandlake import lake
from demandlake.config import load_config
from demandlake.ingest.bronze import ingest_source
from demandlake.pipeline.transform import run_features, run_sequence_examples, run_sessions
from demandlake.spark import get_spark

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "real" / "taobao_user_behavior_sample.csv"
RUN_DATE = dt.date(2017, 12, 3)


def _hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _descendants(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            out += [int(child), *_descendants(int(child))]
    return out


def jvm_pid(spark) -> int:
    """The JVM the driver launched (spark-submit execs or forks java)."""
    root = spark.sparkContext._gateway.proc.pid  # the gateway process py4j started
    pids = [root, *_descendants(root)]
    def program(p: int) -> str:
        return Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")[0].decode()

    javas = [p for p in pids if "java" in program(p)]
    return (javas or pids)[0]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Time sessions, features and sequence examples "
                                                 "on the Taobao sample.")
    parser.add_argument("--data", default=str(DEFAULT_DATA),
                        help="Taobao UserBehavior CSV (default: %(default)s)")
    parser.add_argument("--lake", default="", help="lake folder (default: a new temporary one)")
    parser.add_argument("--master", default="local[2]", help="Spark master (default: %(default)s)")
    parser.add_argument("--snapshot-partitions", type=int, default=0,
                        help="spark.databricks.delta.snapshotPartitions; 0 keeps Delta's default "
                             "(default: %(default)s)")
    parser.add_argument("--horizon-days", type=int, default=1,
                        help="label horizon; the sample spans only 9 days (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    lake_dir = args.lake or tempfile.mkdtemp(prefix="bench-features-")
    overrides = [f"lake.uri={lake_dir}", "lake.catalog=in-memory", f"spark.master={args.master}",
                 "lake.timezone=Asia/Shanghai", f"sequences.horizon_days={args.horizon_days}"]
    if args.snapshot_partitions:
        overrides.append("spark.conf.spark.databricks.delta.snapshotPartitions="
                         f"{args.snapshot_partitions}")
    cfg = load_config(overrides=overrides)
    t0 = time.monotonic()
    spark = get_spark(cfg, app_name="bench-features-real")
    timings = {"spark_start_s": time.monotonic() - t0}
    jvm = jvm_pid(spark)
    cpu: dict[str, float] = {}
    load_before = os.getloadavg()

    t = time.monotonic()
    ingested = ingest_source(spark, cfg, "taobao", args.data, run_date=RUN_DATE,
                             timezone="Asia/Shanghai")
    timings["ingest_s"] = time.monotonic() - t
    lake.ensure_all(spark, cfg)  # table creation is not part of the stages' cost
    results = {}
    stages = [("sessions", lambda: run_sessions(spark, cfg, RUN_DATE, full=True)),
              ("features", lambda: run_features(spark, cfg, RUN_DATE)),
              ("sequence_examples", lambda: run_sequence_examples(spark, cfg))]
    t_all = time.monotonic()
    cpu_all = cpu_seconds(jvm)
    for name, stage in stages:
        t, c = time.monotonic(), cpu_seconds(jvm)
        results[name] = stage()
        timings[f"{name}_s"] = time.monotonic() - t
        cpu[f"{name}_s"] = cpu_seconds(jvm) - c
    timings["three_stages_s"] = time.monotonic() - t_all
    cpu["three_stages_s"] = cpu_seconds(jvm) - cpu_all
    report = {
        "data": args.data, "ingested": ingested, "counts": results,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "jvm_cpu_s": {k: round(v, 1) for k, v in cpu.items()},
        "load_average_1m": {"before": load_before[0], "after": os.getloadavg()[0]},
        "peak_rss_mib": {"jvm": round(_hwm_kib(jvm) / 1024, 0),
                         "python_driver": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                                / 1024, 0)},
        "spark": {"master": args.master,
                  "driver_memory": spark.conf.get("spark.driver.memory", "?"),
                  "shuffle_partitions": spark.conf.get("spark.sql.shuffle.partitions"),
                  "delta_snapshot_partitions": spark.conf.get(
                      "spark.databricks.delta.snapshotPartitions", "default")},
    }
    print(json.dumps(report, indent=2, default=str))
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
