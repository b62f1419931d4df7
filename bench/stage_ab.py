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
* ``features_rev``: ``build_user_features`` at a git revision (``--rev``, default ``HEAD``)
  against the working tree's, both as ``run_features`` calls them; into ``noop``. For a change
  inside the features transform that has no switch of its own.
* ``features_parts``: a profile rather than an A/B: the whole features build and each of its
  lookback parts alone into ``noop`` (the ratios are each part's cost against the whole).
* ``sessions``: ``sessionize`` of all bronze events into ``noop`` with Spark's default object hash
  aggregate for the per-session ``collect_list`` (A; it falls back to sorting after 128 keys a
  task) against the sort aggregate (B, ``spark.sql.execution.useObjectHashAggregateExec=false``),
  and that with Spark's radix sort off (C, ``spark.sql.sort.enableRadixSort=false``: TimSort,
  adaptive to the aggregate's already sorted input; no gain measured).
* ``sessions_rev``: ``sessionize`` at a git revision (``--rev``) against the working tree's, with
  run_sessions' Spark settings; into ``noop``.
* ``codegen``: features (from silver) and sessionize, with Spark's code generation, without
  whole-stage code generation, and without any (the tests' settings).
* ``sessions_write``: ``sessionize`` of all bronze events written as a fresh Delta table partitioned
  by ``session_date`` with statistics on every column (A, the Delta default, as silver.sessions
  has them) against statistics on the columns readers filter on only (B), and against up to 64
  open files a write task (C, ``spark.sql.maxConcurrentOutputFileWriters``: no sort of the rows
  by ``session_date`` before writing; 25% slower measured); all with run_sessions' sort
  aggregate.

Results go to ``<cache>/stage_ab.json`` (one entry per size and pair, and revision for the ``_rev``
pairs) and are printed as a table.
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
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from pipeline_scale import cpu_seconds, jvm_pid, machine_facts  # noqa: E402

# The setting run_sessions applies (the sessions pair's B side), imported, not restated.
from demandlake.pipeline.transform import SESSIONIZE_CONF as SORT_AGGREGATE  # noqa: E402

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


def _features_inputs(spark, cfg, last_day: dt.date):
    """bronze.events up to ``last_day``, bronze.reviews and silver.sessions, as run_features reads
    them."""
    from pyspark.sql import functions as F

    from demandlake import lake

    return (lake.read(spark, cfg, "bronze.events").where(F.col("event_date") <= last_day),
            lake.read(spark, cfg, "bronze.reviews"), lake.read(spark, cfg, "silver.sessions"))


def _feature_rows(df):
    """Features with their maps as JSON text: comparable whatever their entries' order."""
    from pyspark.sql import functions as F

    return df.select([F.to_json(F.col(c)).alias(c) if c.endswith("_window") else F.col(c)
                      for c in df.columns])


def _noop(df) -> None:
    df.write.format("noop").mode("overwrite").save()


def features_pair(spark, cfg, last_day: dt.date) -> tuple[dict[str, Callable], Callable[[], int]]:
    from demandlake.features.user_features import build_user_features
    from demandlake.pipeline.transform import features_kwargs
    from demandlake.spark import temporary_conf

    events, reviews, sessions = _features_inputs(spark, cfg, last_day)

    def build(from_silver: bool):
        return build_user_features(events, reviews, last_day,
                                   sessions=sessions if from_silver else None,
                                   **features_kwargs(cfg))

    def noop(from_silver: bool, settings: dict[str, str] | None = None) -> None:
        with temporary_conf(spark, settings or {}):
            _noop(build(from_silver))

    variants = {
        "events": lambda: noop(False),
        "silver": lambda: noop(True),
        "silver, sort aggregate": lambda: noop(True, SORT_AGGREGATE),
    }

    def check() -> int:
        base = by_key(_feature_rows(build(False)), "user_id")
        with temporary_conf(spark, SORT_AGGREGATE):
            sorted_agg = differing_rows(base, _feature_rows(build(True)), "user_id")
        return differing_rows(base, _feature_rows(build(True)), "user_id") + sorted_agg

    return variants, check


NO_WHOLE_STAGE = {"spark.sql.codegen.wholeStage": "false"}
NO_CODEGEN = {**NO_WHOLE_STAGE, "spark.sql.codegen.factoryMode": "NO_CODEGEN"}


def codegen_pair(spark, cfg, last_day: dt.date) -> tuple[dict[str, Callable], Callable[[], int]]:
    """Features (from silver) and sessionize into ``noop`` with Spark's code generation (A),
    without whole-stage code generation (B) and without any (C, expressions interpreted): the
    tests' settings run without it, where it costs more than it saves (docs/BENCHMARKS.md,
    "Fixed cost of a day"); this shows what it is worth at a size."""
    from demandlake.features.user_features import build_user_features
    from demandlake.pipeline.transform import features_kwargs
    from demandlake.spark import temporary_conf

    events, reviews, sessions = _features_inputs(spark, cfg, last_day)
    sessionized = _sessionized(spark, cfg)
    settings = {"code generation": {}, "no whole-stage": NO_WHOLE_STAGE,
                "no code generation": NO_CODEGEN}

    def build():
        return build_user_features(events, reviews, last_day, sessions=sessions,
                                   **features_kwargs(cfg))

    def run(name: str) -> None:
        with temporary_conf(spark, settings[name]):
            _noop(build())
            with temporary_conf(spark, SORT_AGGREGATE):
                _noop(sessionized)

    def check() -> int:
        base = by_key(_feature_rows(build()), "user_id")
        with temporary_conf(spark, NO_CODEGEN):
            return differing_rows(base, _feature_rows(build()), "user_id")

    return {name: (lambda name=name: run(name)) for name in settings}, check


def module_at(rev: str, relpath: str, scratch: Path):
    """The module at ``lib/<relpath>`` as it was at git revision ``rev``, loaded as a separate
    module (its own imports resolve to the working tree's package)."""
    import importlib.util

    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:lib/{relpath}"],
                            check=True, capture_output=True, text=True).stdout
    scratch.mkdir(parents=True, exist_ok=True)
    name = "at_rev_" + Path(relpath).stem
    path = scratch / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def features_rev_pair(spark, cfg, last_day: dt.date, rev: str,
                      scratch: Path) -> tuple[dict[str, Callable], Callable[[], int]]:
    """``build_user_features`` at git revision ``rev`` (A) against the working tree's (B), both
    as run_features calls them (session statistics from silver.sessions unless the config says
    otherwise)."""
    from demandlake.features import user_features
    from demandlake.pipeline.transform import features_kwargs

    old = module_at(rev, "demandlake/features/user_features.py", scratch)
    events, reviews, sessions = _features_inputs(spark, cfg, last_day)
    if not cfg.get("features.sessions_from_silver", True):
        sessions = None

    def build(module):
        return module.build_user_features(events, reviews, last_day, sessions=sessions,
                                          **features_kwargs(cfg))

    def check() -> int:
        return differing_rows(by_key(_feature_rows(build(old)), "user_id"),
                              _feature_rows(build(user_features)), "user_id")

    return {f"at {rev}": lambda: _noop(build(old)),
            "working tree": lambda: _noop(build(user_features))}, check


def features_parts(spark, cfg, last_day: dt.date) -> tuple[dict[str, Callable], Callable[[], int]]:
    """A profile, not an A/B: the whole ``build_user_features`` (from silver, as run_features) and
    its lookback parts each alone into ``noop``, so the ratios say what share each part costs
    when planned by itself. The parts are not alternatives, so there is nothing to compare."""
    from pyspark.sql import functions as F

    from demandlake.features import user_features as uf
    from demandlake.pipeline.transform import features_kwargs

    events, reviews, sessions = _features_inputs(spark, cfg, last_day)
    kwargs = features_kwargs(cfg)
    lookback_days = max(int(w) for w in kwargs["windows_days"])
    lookback = events.where(F.col("event_date") > F.date_sub(F.lit(last_day), lookback_days))
    weights = (lookback.where(F.col("category").isNotNull())
               .groupBy("user_id", "category").agg(F.sum(uf._interest_weight()).alias("w")))
    variants = {
        "whole": lambda: _noop(uf.build_user_features(events, reviews, last_day,
                                                      sessions=sessions, **kwargs)),
        "top categories": lambda: _noop(uf.top_weighted(lookback, "category", kwargs["top_k"])),
        "top brands": lambda: _noop(uf.top_weighted(lookback, "brand", kwargs["top_k"])),
        "category weights only": lambda: _noop(weights),
        "price sensitivity": lambda: _noop(uf.price_sensitivity(lookback)),
        "search terms": lambda: _noop(uf.recent_search_terms(lookback, kwargs["top_k"])),
        "lookback scan": lambda: _noop(lookback.select("user_id", "event_type", "category",
                                                       "brand", "price")),
    }
    return variants, lambda: 0


def _sessionized(spark, cfg, module=None):
    """All bronze events through ``sessionize`` (of ``module``, default the working tree's
    ``demandlake.sessions``) with the run's settings (as ``run_sessions``)."""
    from demandlake import lake
    from demandlake import sessions as current
    from demandlake.pipeline.transform import sessionize_kwargs

    return lake.read(spark, cfg, "bronze.events").transform(
        (module or current).sessionize(**sessionize_kwargs(cfg)))


def _rows_differing(a, b) -> int:
    """Rows of one DataFrame not in the other, both ways (duplicates counted)."""
    return a.exceptAll(b).count() + b.exceptAll(a).count()


# Spark sorts each write task's rows by the partition column before writing, unless it may keep
# this many files open at once (then rows go to the open file of their partition, no sort).
CONCURRENT_WRITERS = {"spark.sql.maxConcurrentOutputFileWriters": "64"}


def sessions_write_pair(spark, cfg, scratch: Path) -> tuple[dict[str, Callable], Callable[[], int]]:
    from delta.tables import DeltaTable

    from demandlake import lake
    from demandlake.spark import temporary_conf

    sessions = _sessionized(spark, cfg)
    schema = lake.read(spark, cfg, "silver.sessions").schema
    # name -> (Delta statistics columns, Spark settings besides run_sessions' own)
    setups = {"stats-all": (None, {}), "stats-keys": (SESSION_STATS_COLUMNS, {}),
              "concurrent-writers": (None, CONCURRENT_WRITERS)}

    def write(name: str) -> None:
        stats_columns, settings = setups[name]
        path = scratch / name
        shutil.rmtree(path, ignore_errors=True)
        builder = (DeltaTable.create(spark).location(str(path)).addColumns(schema)
                   .partitionedBy("session_date"))
        if stats_columns:
            builder = builder.property("delta.dataSkippingStatsColumns", stats_columns)
        builder.execute()
        with temporary_conf(spark, {**SORT_AGGREGATE, **settings}):
            sessions.write.format("delta").mode("overwrite").save(str(path))

    def check() -> int:
        first, *others = setups
        write(first)
        a = spark.read.format("delta").load(str(scratch / first))
        bad = 0
        for name in others:
            write(name)
            b = spark.read.format("delta").load(str(scratch / name))
            bad += _rows_differing(a, b)
        return bad

    return {name: (lambda name=name: write(name)) for name in setups}, check


# With radix sort off, Spark's in-memory sort is TimSort, which is adaptive: the aggregate's
# sort by (user_id, session_seq) gets rows the window left sorted by (user_id, event_ts).
# Measured: no gain at 5M (docs/BENCHMARKS.md).
NO_RADIX_SORT = {**SORT_AGGREGATE, "spark.sql.sort.enableRadixSort": "false"}


def sessions_pair(spark, cfg) -> tuple[dict[str, Callable], Callable[[], int]]:
    from demandlake.spark import temporary_conf

    sessions = _sessionized(spark, cfg)
    settings = {"object-hash": {}, "sort-aggregate": SORT_AGGREGATE,
                "sort-aggregate, no radix sort": NO_RADIX_SORT}

    def run(name: str, action=_noop):
        with temporary_conf(spark, settings[name]):
            return action(sessions)

    def check() -> int:
        first, *others = settings
        a = run(first, lambda df: df.localCheckpoint())
        bad = 0
        for name in others:
            b = run(name, lambda df: df.localCheckpoint())
            bad += _rows_differing(a, b)
        return bad

    return {name: (lambda name=name: run(name)) for name in settings}, check


def sessions_rev_pair(spark, cfg, rev: str,
                      scratch: Path) -> tuple[dict[str, Callable], Callable[[], int]]:
    """``sessionize`` of all bronze events at git revision ``rev`` (A) against the working
    tree's (B), both with run_sessions' settings and Spark conf; into ``noop``."""
    from demandlake.spark import temporary_conf

    old = _sessionized(spark, cfg, module_at(rev, "demandlake/sessions.py", scratch))
    new = _sessionized(spark, cfg)

    def run(sessions, action=_noop):
        with temporary_conf(spark, SORT_AGGREGATE):
            return action(sessions)

    def check() -> int:
        return _rows_differing(run(old, lambda df: df.localCheckpoint()),
                               run(new, lambda df: df.localCheckpoint()))

    return {f"at {rev}": lambda: run(old), "working tree": lambda: run(new)}, check


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A/B of a stage's alternatives on a bench lake.")
    parser.add_argument("--size", type=int, default=5_000_000,
                        help="the pipeline_scale size whose lake is used (default: %(default)s)")
    parser.add_argument("--pair", required=True,
                        choices=["features", "features_rev", "features_parts", "sessions",
                                 "sessions_rev", "sessions_write", "codegen"])
    parser.add_argument("--rev", default="HEAD",
                        help="features_rev, sessions_rev: the git revision to compare the "
                             "working tree with (default: %(default)s)")
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
    elif args.pair == "features_parts":
        variants, check = features_parts(spark, cfg, last_day)
    elif args.pair == "features_rev":
        variants, check = features_rev_pair(spark, cfg, last_day, args.rev, scratch)
    elif args.pair == "sessions":
        variants, check = sessions_pair(spark, cfg)
    elif args.pair == "codegen":
        variants, check = codegen_pair(spark, cfg, last_day)
    elif args.pair == "sessions_rev":
        variants, check = sessions_rev_pair(spark, cfg, args.rev, scratch)
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
        **({"rev": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.rev],
                                  check=True, capture_output=True, text=True).stdout.strip()}
           if args.pair.endswith("_rev") else {}),
        "load_start": load_start, "load_end": os.getloadavg()[0],
        "machine": machine_facts(), "written": dt.datetime.now().isoformat(timespec="minutes"),
        "command": "python bench/stage_ab.py " + shlex.join(sys.argv[1:] if argv is None else argv),
    }
    spark.stop()
    store = cache / "stage_ab.json"
    saved = json.loads(store.read_text()) if store.exists() else {}
    saved[f"{args.pair}-{args.size}" + (f"-{result['rev']}" if "rev" in result else "")] = result
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
