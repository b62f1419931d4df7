"""The fixed cost of a nightly day (issue 20, item 3): the five per-date stages of one day of the
200-user sample, in one warm Spark session, with the shipped settings.

    python bench/fixed_cost.py                 # build the base lake once, then measure
    python bench/fixed_cost.py --rounds 2      # two warm days after the first, each timed

The base lake is the shipped sample (``generator``: 200 users, 28 days from 2026-11-01) loaded
by ``demandlake nightly`` up to ``--base-date`` (history in one batch, both models trained and
serving, the day scored). It is built once under ``--cache`` and copied for every measurement
(the catalog is in-memory, so a copy is a lake of its own; the copy's MLflow registry points at
the base lake's artifacts, which are only read).

One measurement is one JVM: the stages ingest, sessions, review_sentiment, features and score
(the nightly graph without its training stages) for the day after the base date (the first run
of every stage in this JVM: class loading, code generation, JIT), then for each following day
(warm). Per stage: wall seconds, the JVM's CPU seconds, this Python process's CPU seconds and
the number of Spark jobs (each stage runs in its own job group). The goal is the warm day's
stage time: at most 30 s for all five.

Results go to ``<cache>/fixed_cost.json`` and are printed as a table.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from pipeline_scale import cpu_seconds, jvm_pid, machine_facts  # noqa: E402

log = logging.getLogger("fixed_cost")

STAGES = ("ingest", "sessions", "review_sentiment", "features", "score")


def _config(lake_dir: Path, extra: list[str]):
    from demandlake.config import load_config

    return load_config(overrides=[f"lake.uri={lake_dir}", "lake.catalog=in-memory", *extra])


def build_base(base: Path, base_date: dt.date) -> None:
    """The sample's history up to ``base_date`` through ``demandlake nightly`` with the shipped
    settings, in a child process (its own JVM, so the measured one starts cold). Every
    variant is measured on a copy of this one base."""
    if base.exists():
        shutil.rmtree(base)
    cmd = [sys.executable, "-m", "demandlake.cli", "--lake", str(base),
           "--set", "lake.catalog=in-memory", "nightly", "--run-date", base_date.isoformat()]
    log.info("building the base lake: %s", " ".join(cmd))
    t = time.monotonic()
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(ROOT / "lib")})
    (base / "_fixed_cost_base").write_text(base_date.isoformat() + "\n")
    log.info("base lake built in %.0f s", time.monotonic() - t)


def measure_day(spark, cfg, day: dt.date, jvm: int, profile: Path | None = None) -> dict:
    from demandlake.pipeline.stages import run_stage

    sc = spark.sparkContext
    tracker = sc.statusTracker()
    rows = {}
    for stage in STAGES:
        group = f"fixed-cost-{day}-{stage}"
        sc.setJobGroup(group, stage)
        j0, p0, t0 = cpu_seconds(jvm), time.process_time(), time.monotonic()
        if profile is not None:  # cProfile of the stage: where the driver waits, per call
            import cProfile

            with cProfile.Profile() as prof:
                counts = run_stage(spark, cfg, stage, day)
            prof.dump_stats(profile.with_name(f"{profile.name}-{stage}.pstats"))
        else:
            counts = run_stage(spark, cfg, stage, day)
        rows[stage] = {"seconds": round(time.monotonic() - t0, 2),
                       "jvm_cpu_s": round(cpu_seconds(jvm) - j0, 2),
                       "python_cpu_s": round(time.process_time() - p0, 2),
                       "jobs": len(tracker.getJobIdsForGroup(group)),
                       "counts": {k: v for k, v in counts.items() if isinstance(v, (int, float))}}
        log.info("%s %s: %.1f s, %d jobs", day, stage, rows[stage]["seconds"], rows[stage]["jobs"])
    total = {k: round(sum(r[k] for r in rows.values()), 2)
             for k in ("seconds", "jvm_cpu_s", "python_cpu_s", "jobs")}
    return {"day": day.isoformat(), "stages": rows, "total": total}


def jobs_by_call_site(spark, day: str) -> dict[str, dict[str, int]]:
    """``{stage: {call site: jobs}}`` of ``day``'s stages: each job named by the call site of
    its last Spark stage (the status tracker's stage names; no UI needed)."""
    import collections

    tracker = spark.sparkContext.statusTracker()
    out = {}
    for stage in STAGES:
        sites = collections.Counter()
        for job_id in tracker.getJobIdsForGroup(f"fixed-cost-{day}-{stage}"):
            job = tracker.getJobInfo(job_id)
            info = tracker.getStageInfo(max(job.stageIds)) if job and job.stageIds else None
            sites[info.name if info else "?"] += 1
        out[stage] = dict(sites)
    return out


WRITTEN = ("bronze.events", "silver.sessions", "gold.review_sentiment", "gold.user_features",
           "gold.demand_forecasts", "gold.user_profiles", "gold.recommendations")


def data_files(spark, cfg) -> dict[str, int]:
    """Data files in the current version of each table the stages write (small inputs written
    from many shuffle partitions make many small files, which every later read opens)."""
    from delta.tables import DeltaTable

    from demandlake import lake

    return {name: int(DeltaTable.forPath(spark, lake.spec(name).location(cfg)).detail()
                      .first()["numFiles"]) for name in WRITTEN}


def table(days: list[dict]) -> str:
    head = "| stage | " + " | ".join(
        f"{d['day']} {'(first in JVM)' if i == 0 else '(warm)'} s / JVM CPU-s / jobs"
        for i, d in enumerate(days)) + " |"
    lines = [head, "|---|" + "---|" * len(days)]
    for stage in (*STAGES, "total"):
        cells = []
        for d in days:
            r = d["total"] if stage == "total" else d["stages"][stage]
            cells.append(f"{r['seconds']:.1f} / {r['jvm_cpu_s']:.1f} / {r['jobs']}")
        name = f"**{stage}**" if stage == "total" else stage
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", default="/tmp/demandlake-bench/fixed-cost",
                        help="base lake, measured copies and results (default: %(default)s)")
    parser.add_argument("--base-date", default="2026-11-25",
                        help="last date of the base lake (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="warm days measured after the first day (default: %(default)s)")
    parser.add_argument("--rebuild", action="store_true", help="build the base lake again")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="a configuration override for the measurement (the base lake is "
                             "always built with the shipped settings)")
    parser.add_argument("--profile", metavar="PREFIX",
                        help="write a cProfile of each stage of the last day to "
                             "PREFIX-<stage>.pstats (default: none)")
    parser.add_argument("--jfr", metavar="FILE",
                        help="record the last day in Java Flight Recorder (jcmd JFR.start, "
                             "settings=profile) into FILE; bench/jfr_hot.py sums it (default: none)")
    parser.add_argument("--jobs", action="store_true",
                        help="also list, per stage of the last day, its Spark jobs by call site "
                             "(from the status tracker)")
    parser.add_argument("--label", default="", help="a name for this run in the results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("py4j", "demandlake"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    base_date = dt.date.fromisoformat(args.base_date)
    base = cache / "base"
    marker = base / "_fixed_cost_base"
    if args.rebuild or not marker.exists() or marker.read_text().strip() != args.base_date:
        build_base(base, base_date)
    run_dir = cache / "run"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    shutil.copytree(base, run_dir, symlinks=True)

    from demandlake.spark import get_spark

    cfg = _config(run_dir, args.sets)
    t = time.monotonic()
    spark = get_spark(cfg, app_name="bench-fixed-cost", java_log=cache / "spark.log")
    start_s = round(time.monotonic() - t, 1)
    jvm = jvm_pid(spark)
    days = []
    for i in range(1 + args.rounds):
        last = i == args.rounds
        if last and args.jfr:
            subprocess.run(["jcmd", str(jvm), "JFR.start", "name=fixed-cost", "settings=profile",
                            f"filename={Path(args.jfr).resolve()}"], check=True,
                           capture_output=True)
        days.append(measure_day(spark, cfg, base_date + dt.timedelta(days=i + 1), jvm,
                                Path(args.profile) if args.profile and last else None))
        if last and args.jfr:
            subprocess.run(["jcmd", str(jvm), "JFR.stop", "name=fixed-cost"], check=True,
                           capture_output=True)
    files = data_files(spark, cfg)
    if args.jobs:
        for stage, sites in jobs_by_call_site(spark, days[-1]["day"]).items():
            days[-1]["stages"][stage]["jobs_by_call_site"] = sites
    spark.stop()
    result = {"label": args.label, "written": dt.datetime.now().isoformat(timespec="seconds"),
              "command": "python bench/fixed_cost.py " + " ".join(argv or sys.argv[1:]),
              "machine": machine_facts(), "load": os.getloadavg(),
              "spark_start_s": start_s, "days": days, "data_files": files,
              "python_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}
    store = cache / "fixed_cost.json"
    saved = json.loads(store.read_text()) if store.exists() else []
    store.write_text(json.dumps([*saved, result], indent=2) + "\n")
    print(table(days))
    print("data files after the last day: "
          + ", ".join(f"{name} {n}" for name, n in files.items()))
    if args.jobs:
        for stage in STAGES:
            sites = days[-1]["stages"][stage].get("jobs_by_call_site", {})
            print(f"\n{stage} ({sum(sites.values())} jobs):")
            for site, n in sorted(sites.items(), key=lambda kv: -kv[1]):
                print(f"  {n:4d}  {site}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
