"""A/B of one pipeline stage's alternatives, in one Spark session, on a lake bench/pipeline_scale.py
left behind.

    python bench/stage_ab.py --size 5000000 --pair features --rounds 3

Each round runs every variant of the pair once, in alternating order (A B, B A, ...), so load
drifts on a shared machine hit both alike. A variant's time is the JVM's CPU seconds and the wall
time of one action; the report gives per-variant medians and their ratios to the first variant.
Before timing, the variants' outputs are compared in full (every row; doubles within 1e-9
relative): a variant that changes the result is an error, not a speed-up.

Pairs:

* ``features``: ``build_user_features`` as ``run_features`` calls it for the lake's last event date,
  sessionizing every event in the lookback window for the session statistics (``events``)
  against reading them from silver.sessions (``silver``), and that with Spark's sort aggregate
  instead of the object hash aggregate for the ``collect_list`` of the top-k parts; into Spark's
  ``noop`` sink.
* ``sessions``: ``sessionize`` of all bronze events into ``noop`` with Spark's default object hash
  aggregate for the per-session ``collect_list`` (A; it falls back to sorting after 128 keys a
  task) against the sort aggregate (B, ``spark.sql.execution.useObjectHashAggregateExec=false``).
* ``sessions_write``: ``sessionize`` of all bronze events written as a fresh Delta table partitioned
  by ``session_date`` with statistics on every column (A, the Delta default, as silver.sessions
  has them) against statistics on the columns readers filter on only (B).

Results go to ``<cache>/stage_ab.json`` (one entry per size and pair) and are printed as a table.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import os
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from pipeline_scale import cpu_seconds, jvm_pid, machine_facts  # noqa: E402

# The setting run_sessions applies (the sessions pair's B side), imported, not restated.
from demandlake.pipeline_transform import SESSIONIZE_CONF as SORT_AGGREGATE  # noqa: E402

log = logging.getLogger("stage_ab")

TOL = 1e-9
# Columns readers of silver.sessions filter or join on (the B side of sessions_write; the
# partition column session_date needs none).
SESSION_STATS_COLUMNS = "session_id,user_id,session_start,session_end"


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=TOL, abs_tol=TOL) or (math.isnan(a) and math.isnan(b))
    return a == b


def by_key(df, key: str) -> dict:
    return {r[key]: r for r in df.collect()}


def differing_rows(left: dict, b, key: str) -> int:
    """Rows of a DataFrame that differ from ``left`` (rows by ``key``, as ``by_key`` gives; doubles
    within ``TOL``), counting rows present on one side only."""
    right = by_key(b, key)
    cols = [c for c in b.columns if c != key]
    bad = len(left.keys() ^ right.keys())
    for k in left.keys() & right.keys():
        if not all(_same(left[k][c], right[k][c]) for c in cols):
            bad += 1
    return bad


def features_pair(spark, cfg, last_day: dt.date) -> tuple[dict[str, Callable], Callable[[], int]]:
    from pyspark.sql import functions as F

    from demandlake import lake
    from demandlake.features.user_features import build_user_features
    from demandlake.spark import temporary_conf

    events = lake.read(spark, cfg, "bronze.events").where(F.col("event_date") <= last_day)
    reviews = lake.read(spark, cfg, "bronze.reviews")
    sessions = lake.read(spark, cfg, "silver.sessions")

    def build(from_silver: bool):
        return build_user_features(
            events, reviews, last_day, windows_days=cfg.get("features.windows_days", [7, 30, 90]),
            top_k=int(cfg.get("features.top_k", 5)), timezone=cfg.get("lake.timezone", "UTC"),
            gap_minutes=float(cfg.get("sessions.gap_minutes", 30)),
            sessions=sessions if from_silver else None)

    def noop(from_silver: bool, settings: dict[str, str] | None = None) -> None:
        with temporary_conf(spark, settings or {}):
            build(from_silver).write.format("noop").mode("overwrite").save()

    variants = {
        "events": lambda: noop(False),
        "silver": lambda: noop(True),
        "silver, sort aggregate": lambda: noop(True, SORT_AGGREGATE),
    }

    def rows(df):  # maps as JSON text: comparable whatever their entries' order
        return df.select([F.to_json(F.col(c)).alias(c) if c.endswith("_window") else F.col(c)
                          for c in df.columns])

    def check() -> int:
        base = by_key(rows(build(False)), "user_id")
        with temporary_conf(spark, SORT_AGGREGATE):
            sorted_agg = differing_rows(base, rows(build(True)), "user_id")
        return differing_rows(base, rows(build(True)), "user_id") + sorted_agg

    return variants, check


def _sessionized(spark, cfg):
    """All bronze events through ``sessionize`` with the run's settings (as ``run_sessions``)."""
    from demandlake import lake
    from demandlake.sessions import sessionize

    return lake.read(spark, cfg, "bronze.events").transform(sessionize(
        float(cfg.get("sessions.gap_minutes", 30)),
        int(cfg.get("sessions.max_sequence_length", 50)), cfg.get("lake.timezone", "UTC")))


def sessions_write_pair(spark, cfg, scratch: Path) -> tuple[dict[str, Callable], Callable[[], int]]:
    from delta.tables import DeltaTable

    from demandlake import lake

    sessions = _sessionized(spark, cfg)
    schema = lake.read(spark, cfg, "silver.sessions").schema

    def write(name: str, stats_columns: str | None):
        path = scratch / name
        shutil.rmtree(path, ignore_errors=True)
        builder = (DeltaTable.create(spark).location(str(path)).addColumns(schema)
                   .partitionedBy("session_date"))
        if stats_columns:
            builder = builder.property("delta.dataSkippingStatsColumns", stats_columns)
        builder.execute()
        sessions.write.format("delta").mode("overwrite").save(str(path))

    variants = {"stats-all": lambda: write("a", None),
                "stats-keys": lambda: write("b", SESSION_STATS_COLUMNS)}

    def check() -> int:
        write("a", None)
        write("b", SESSION_STATS_COLUMNS)
        a = spark.read.format("delta").load(str(scratch / "a"))
        b = spark.read.format("delta").load(str(scratch / "b"))
        return a.exceptAll(b).count() + b.exceptAll(a).count()

    return variants, check


def sessions_pair(spark, cfg) -> tuple[dict[str, Callable], Callable[[], int]]:
    from demandlake.spark import temporary_conf

    sessions = _sessionized(spark, cfg)

    def run(object_hash: bool, action=lambda df: df.write.format("noop").mode("overwrite").save()):
        with temporary_conf(spark, {} if object_hash else SORT_AGGREGATE):
            return action(sessions)

    def check() -> int:
        a = run(True, lambda df: df.localCheckpoint())
        b = run(False, lambda df: df.localCheckpoint())
        return a.exceptAll(b).count() + b.exceptAll(a).count()

    return {"object-hash": lambda: run(True), "sort-aggregate": lambda: run(False)}, check


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A/B of a stage's alternatives on a bench lake.")
    parser.add_argument("--size", type=int, default=5_000_000,
                        help="the pipeline_scale size whose lake is used (default: %(default)s)")
    parser.add_argument("--pair", choices=["features", "sessions", "sessions_write"],
                        required=True)
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds (default: %(default)s)")
    parser.add_argument("--cache", default="/tmp/demandlake-bench",
                        help="pipeline_scale's cache folder (default: %(default)s)")
    parser.add_argument("--master", default="local[2]", help="Spark master (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)

    from pyspark.sql import functions as F

    from demandlake import lake
    from demandlake.config import load_config
    from demandlake.spark import get_spark

    cache = Path(args.cache)
    lake_dir = cache / f"lake-{args.size}"
    if not (lake_dir / "silver").exists():
        raise SystemExit(f"no bench lake at {lake_dir}: run bench/pipeline_scale.py --sizes "
                         f"{args.size} first")
    cfg = load_config(overrides=[f"lake.uri={lake_dir}", "lake.catalog=in-memory",
                                 f"spark.master={args.master}"])
    spark = get_spark(cfg, app_name=f"bench-stage-ab-{args.pair}")
    jvm = jvm_pid(spark)
    last_day = lake.read(spark, cfg, "bronze.events").agg(F.max("event_date")).first()[0]
    scratch = cache / "stage_ab_scratch"
    if args.pair == "features":
        variants, check = features_pair(spark, cfg, last_day)
    elif args.pair == "sessions":
        variants, check = sessions_pair(spark, cfg)
    else:
        variants, check = sessions_write_pair(spark, cfg, scratch)
    names = list(variants)
    differing = check()
    log.info("outputs compared: %d differing rows", differing)
    if differing:
        raise SystemExit(f"the variants' outputs differ in {differing} rows")

    runs: dict[str, list[dict]] = {n: [] for n in names}
    load_start = os.getloadavg()[0]
    for r in range(args.rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            t, c = time.monotonic(), cpu_seconds(jvm)
            variants[name]()
            runs[name].append({"wall_s": round(time.monotonic() - t, 1),
                               "jvm_cpu_s": round(cpu_seconds(jvm) - c, 1)})
            log.info("round %d %s: %s", r + 1, name, runs[name][-1])
    shutil.rmtree(scratch, ignore_errors=True)

    def median(name: str, field: str) -> float:
        return statistics.median(x[field] for x in runs[name])

    a = names[0]
    result = {
        "size": args.size, "pair": args.pair, "variants": names, "runs": runs,
        "median": {n: {f: round(median(n, f), 1) for f in ("wall_s", "jvm_cpu_s")}
                   for n in names},
        "ratio_to_first": {n: {f: round(median(n, f) / median(a, f), 3)
                               for f in ("wall_s", "jvm_cpu_s")} for n in names[1:]},
        "differing_rows": differing, "last_day": str(last_day),
        "load_start": load_start, "load_end": os.getloadavg()[0],
        "machine": machine_facts(), "written": dt.datetime.now().isoformat(timespec="minutes"),
        "command": "python bench/stage_ab.py " + shlex.join(sys.argv[1:] if argv is None else argv),
    }
    spark.stop()
    store = cache / "stage_ab.json"
    saved = json.loads(store.read_text()) if store.exists() else {}
    saved[f"{args.pair}-{args.size}"] = result
    store.write_text(json.dumps(saved, indent=2, default=str) + "\n")
    print(f"| {args.pair} at {args.size:,} events | wall s (median) | JVM CPU s (median) "
          f"| wall / {a} | CPU / {a} |")
    print("|---|---:|---:|---:|---:|")
    for n in names:
        r = result["ratio_to_first"].get(n, {"wall_s": 1.0, "jvm_cpu_s": 1.0})
        print(f"| {n} | {result['median'][n]['wall_s']} | {result['median'][n]['jvm_cpu_s']} "
              f"| {r['wall_s']:.3f} | {r['jvm_cpu_s']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
