"""Kill-and-rerun harness: SIGKILL the nightly chain at random points, rerun, compare contents.

One command (``python -m demandlake.faults --kills 20``) does, on generated raw logs:

1. a clean run of the nightly chain (``pipeline.graph.NIGHTLY``, per date, as ``demandlake
   nightly`` runs it; no training, so forecasts come from the fallback) in a child process, then a
   second clean run on the same lake: the snapshot must not change (reruns are idempotent);
2. ``kills`` trials, each on a fresh lake: start the chain, SIGKILL the child at a random time,
   then rerun the chain to completion and compare every table with the clean run. By default the
   time is drawn between the first stage's start and the clean run's duration, so kills land in
   every stage in proportion to its length. ``--stages score,features`` aims instead: trial i
   kills during the i-th named stage (in turn) of a random date, at a random point of that
   stage's clean duration, so a short stage gets its share. The stage running at the kill is
   recorded either way.

A "snapshot" is the current version of every bronze/silver/gold table as a multiset of rows
(canonical JSON; maps as sorted entries; ``run_id`` left out since it names the run), so missing
rows, extra rows and duplicates all show. ``ops.*`` tables are left out on purpose: they record
the killed attempts too. The child writes the snapshot itself, so the parent needs no Spark.

Results are printed as a table and written as JSON (``--out``); docs/RELIABILITY.md quotes them.
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator, Sequence

from demandlake.pipeline import graph

VOLATILE = {"run_id"}
# ``DEMANDLAKE_KILL_AT=<what>``: the process kills itself (and its JVM) inside that write, e.g.
# ``merge bronze.events`` (names as ``lake._with_retry`` gives them: merge/overwrite/upsert/append
# + table).
KILL_AT_ENV = "DEMANDLAKE_KILL_AT"
# The three chosen points of the CI smoke run: inside the bronze MERGE, inside the silver write
# and inside the score stage's publish (its second of three tables).
KILL_POINTS = ("merge bronze.events", "overwrite silver.sessions", "overwrite gold.user_profiles")
# The nightly graph without its training stages (pipeline.graph; no model: fallback forecasts).
STAGES = tuple(s.name for s in graph.NIGHTLY if not s.name.startswith("train_"))


# ---- child: run the chain, print stage markers, write a snapshot ------------------------------
@contextlib.contextmanager
def kill_point(what: str) -> Iterator[None]:
    """SIGKILL this process group (Python and its JVM) while the Spark job of write ``what`` runs,
    when ``$DEMANDLAKE_KILL_AT`` names it; otherwise nothing.

    The write's jobs get a job group of their own; a watcher thread kills as soon as one of them
    is running, so the kill lands inside the write, after it started and before it committed.
    It prints ``KILLED <what>`` first, for the harness.
    """
    if os.environ.get(KILL_AT_ENV) != what:
        yield
        return
    from pyspark import SparkContext

    sc = SparkContext._active_spark_context
    group = f"demandlake-kill-{uuid.uuid4().hex[:8]}"
    sc.setJobGroup(group, what)  # thread-local: the jobs this thread starts from here

    def watch() -> None:
        tracker = sc.statusTracker()
        while True:
            for job in tracker.getJobIdsForGroup(group):
                info = tracker.getJobInfo(job)
                if info is not None and info.status == "RUNNING":
                    print(f"KILLED {what}", flush=True)
                    os.killpg(os.getpgid(0), signal.SIGKILL)
            time.sleep(0.02)

    threading.Thread(target=watch, daemon=True).start()
    yield
    raise RuntimeError(f"{KILL_AT_ENV}={what}: the write finished before a job of it was seen")


def snapshot(spark, cfg) -> dict[str, list[str]]:
    """Every bronze/silver/gold table (current version) as sorted canonical JSON rows.

    Tables are read by location, never through the catalog, so one session can snapshot lakes
    of any catalog (``write_snapshot``)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from demandlake import lake

    out = {}
    for name in sorted(lake.TABLES):
        df = None if name.startswith("ops.") else lake.read_existing(spark, cfg, name)
        if df is None:
            continue
        cols = []
        for f in df.schema.fields:
            if f.name in VOLATILE:
                continue
            c = F.col(f.name)
            if isinstance(f.dataType, T.MapType):
                c = F.array_sort(F.map_entries(c))
            cols.append(c.alias(f.name))
        rows = df.select(F.to_json(F.struct(*cols)).alias("j")).collect()
        out[name] = sorted(r["j"] for r in rows)
    return out


def write_snapshot(pairs: list[tuple[str, str]], conf_files: list[str]) -> None:
    """``snapshot`` of each ``(lake_dir, out)``'s lake as JSON in ``out``, all in ONE session.

    The session uses an in-memory catalog: it reads the tables by location and needs no catalog
    (nor the cost of opening one)."""
    from demandlake.config import load_config
    from demandlake.spark import get_spark

    spark = None
    for lake_dir, out in pairs:
        cfg = load_config(conf_files, ["spark.conf.spark.ui.enabled=false",
                                       "lake.catalog=in-memory"], lake=lake_dir)
        spark = spark or get_spark(cfg, app_name="demandlake-snapshot")
        Path(out).write_text(json.dumps(snapshot(spark, cfg)))
    if spark is not None:
        spark.stop()


def run_chain(spark, cfg, dates: list[dt.date]) -> None:
    """The chain's ``STAGES`` for each date in turn, each announced by a ``STAGE`` marker."""
    from demandlake.pipeline.stages import run_stage

    for d in dates:
        for stage in STAGES:
            print(f"STAGE {d} {stage}", flush=True)
            run_stage(spark, cfg, stage, d, **graph.stage(stage).options)
    print("STAGE done", flush=True)


def chain(lake_dir: str, raw_dir: str, dates: list[dt.date], snapshot_to: str | None,
          settings: Sequence[str] = ()) -> None:
    """The child: ``run_chain`` in a session of its own, then the lake's snapshot (if asked)."""
    from demandlake.config import load_config
    from demandlake.spark import get_spark

    cfg = load_config(overrides=[f"lake.raw_uri={raw_dir}", "spark.conf.spark.ui.enabled=false",
                                 *settings], lake=lake_dir)
    spark = get_spark(cfg, app_name="demandlake-faults")
    run_chain(spark, cfg, dates)
    if snapshot_to:
        Path(snapshot_to).write_text(json.dumps(snapshot(spark, cfg)))
    spark.stop()


# ---- parent ------------------------------------------------------------------------------------
def _run_child(lake_dir: Path, raw_dir: Path, dates: list[dt.date], snap: Path | None,
               kill_after: float | None, log_file: Path, kill_from: str | None = None,
               kill_at: str | None = None, settings: tuple[str, ...] = ()) -> dict:
    """Run the chain in a child; SIGKILL it ``kill_after`` seconds after the stage marker
    ``kill_from`` (``"<date> <stage>"``) was printed, or after the first one when that is None.

    ``kill_at`` instead arms ``kill_point``: the child kills itself inside that write.
    ``settings`` (``KEY=VALUE``) go to the child's configuration, as ``--set`` does.

    Returns the exit, the stage at the end and ``marks``: each marker's seconds after the first.
    """
    cmd = [sys.executable, "-m", "demandlake.faults", "--child", "--lake", str(lake_dir),
           "--raw", str(raw_dir), "--dates", ",".join(d.isoformat() for d in dates)]
    if snap:
        cmd += ["--snapshot-to", str(snap)]
    for setting in settings:
        cmd += ["--set", setting]
    t0 = time.monotonic()
    state: dict = {"stage": None, "first": None, "done": None, "marks": {}}

    def follow(stream) -> None:  # stage markers, as the child prints them
        for line in stream:
            if line.startswith("KILLED "):
                state["killed_at"] = line[7:].strip()
            if line.startswith("STAGE "):
                now = time.monotonic()
                state["stage"] = line[6:].strip()
                state["first"] = state["first"] or now
                state["marks"][state["stage"]] = now
                if state["stage"] == "done":
                    state["done"] = now

    with open(log_file, "ab") as err:
        env = {k: v for k, v in os.environ.items() if k != KILL_AT_ENV}
        if kill_at:
            env[KILL_AT_ENV] = kill_at
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True,
                                start_new_session=True, env=env)
        reader = threading.Thread(target=follow, args=(proc.stdout,), daemon=True)
        reader.start()
        killed = False
        while proc.poll() is None:
            since = state["marks"].get(kill_from) if kill_from else state["first"]
            if kill_after is not None and since is not None and time.monotonic() - since >= kill_after:
                os.killpg(proc.pid, signal.SIGKILL)  # the JVM too: the whole process group
                proc.wait()
                killed = True
                break
            time.sleep(0.05)
        reader.join(timeout=10)
    stage, first = state["stage"], state["first"]
    marks = {k: round(v - first, 2) for k, v in state["marks"].items()} if first else {}
    killed = killed or state.get("killed_at") is not None
    return {"returncode": proc.returncode, "killed": killed, "stage": stage, "marks": marks,
            "killed_at": state.get("killed_at"),
            "seconds": round(time.monotonic() - t0, 1),
            "chain_seconds": round((state["done"] or time.monotonic()) - (first or t0), 1)}


def run_kill_points(work: Path,
                    clean: Callable[[Path, Path, list[dt.date]], dict[str, list[str]]],
                    points: tuple[str, ...] = KILL_POINTS, users: int = 20, days: int = 1,
                    seed: int = 1, settings: tuple[str, ...] = ()) -> dict:
    """A clean run, then on another lake one kill inside each write of ``points`` in turn (each
    run killed is the rerun of the one before), then a rerun to the end; the final tables are
    compared with the clean run's. ``settings`` (``KEY=VALUE``) configure every killed chain and
    rerun, each a child process.

    The clean run is ``clean`` called with (lake folder, raw folder, dates), returning the
    lake's ``snapshot``: e.g. ``run_chain`` in a session that is already warm (the CI smoke
    run), which spares a new JVM and its first-run costs.

    Returns:
        ``clean``, ``kills`` (where each child died), ``final`` (the last rerun) and ``diff``
        (``compare``; empty when every table is identical).
    """
    from demandlake import synth

    raw, log_file = work / "raw", work / "children.log"
    start = dt.date(2026, 11, 1)
    synth.generate(raw, users=users, days=days, start_date=start.isoformat(), seed=seed)
    synth.plant_faults(raw, seed=seed)
    dates = [start + dt.timedelta(days=i) for i in range(days)]

    def killed_series() -> tuple[list[dict], dict]:
        kills = [_run_child(work / "lake-killed", raw, dates, None, None, log_file, kill_at=point,
                            settings=settings)
                 for point in points]
        return kills, _run_child(work / "lake-killed", raw, dates, work / "final.json", None,
                                 log_file, settings=settings)

    # The clean run goes on beside the killed ones (its own lake): the chain mostly waits on
    # Spark's per-job latency, so the two together take little more than the killed series.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        series = pool.submit(killed_series)
        t0 = time.monotonic()
        reference = clean(work / "lake-clean", raw, dates)
        clean_result = {"returncode": 0, "seconds": round(time.monotonic() - t0, 1)}
        kills, final = series.result()
    diff = ({"runs": f"final rc={final['returncode']}"} if final["returncode"] else
            compare(reference, json.loads((work / "final.json").read_text())))
    return {"clean": clean_result, "kills": kills, "final": final, "diff": diff, "log": log_file}


def compare(reference: dict[str, list[str]], got: dict[str, list[str]]) -> dict[str, dict]:
    """Per table: rows missing from ``got`` and extra in it (multisets, so duplicates count)."""
    diff = {}
    for name in sorted(set(reference) | set(got)):
        a, b = collections.Counter(reference.get(name, [])), collections.Counter(got.get(name, []))
        missing, extra = sum((a - b).values()), sum((b - a).values())
        if missing or extra:
            diff[name] = {"missing": missing, "extra": extra,
                          "example": next(iter((a - b) or (b - a)))[:300]}
    return diff


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--users", type=int, default=150)
    p.add_argument("--days", type=int, default=2)
    p.add_argument("--stages", default="",
                   help=f"aim the kills at these stages in turn (of {','.join(STAGES)}); "
                        "default: anywhere in the chain")
    p.add_argument("--work", default=None, help="work folder (default: a temporary one)")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--lake", help=argparse.SUPPRESS)
    p.add_argument("--raw", help=argparse.SUPPRESS)
    p.add_argument("--dates", help=argparse.SUPPRESS)
    p.add_argument("--snapshot-to", action="append", default=[],
                   help="with --snapshot-of: the JSON file to write (once per --snapshot-of)")
    p.add_argument("--snapshot-of", metavar="LAKE", action="append", default=[],
                   help="only write LAKE's snapshot (every bronze/silver/gold row, run ids left "
                        "out) to --snapshot-to, e.g. to compare two runs of the same input; "
                        "repeatable, each with its --snapshot-to, all in one Spark session")
    p.add_argument("--set", action="append", default=[], dest="settings", metavar="KEY=VALUE",
                   help="a setting for every chain run (repeatable), as the CLI's --set, e.g. "
                        "spark.conf.spark.sql.shuffle.partitions=2")
    p.add_argument("--conf-file", action="append", default=[],
                   help="with --snapshot-of: the YAML the lake was written with (catalog, ...)")
    args = p.parse_args(argv)
    if args.snapshot_of:
        if len(args.snapshot_of) != len(args.snapshot_to):
            p.error("give one --snapshot-to per --snapshot-of")
        write_snapshot(list(zip(args.snapshot_of, args.snapshot_to)), args.conf_file)
        return 0
    if args.child:
        chain(args.lake, args.raw, [dt.date.fromisoformat(d) for d in args.dates.split(",")],
              args.snapshot_to[-1] if args.snapshot_to else None, args.settings)
        return 0
    stages = [x for x in args.stages.split(",") if x]
    return run_trials(args.kills, args.seed, args.users, args.days, args.work, args.out, stages,
                      tuple(args.settings))


def stage_windows(marks: dict[str, float]) -> dict[str, float]:
    """Each ``"<date> <stage>"`` marker's duration in a clean run: until the next marker."""
    ordered = sorted(marks.items(), key=lambda kv: kv[1])
    return {name: round(nxt - at, 2)
            for (name, at), (_, nxt) in zip(ordered, ordered[1:]) if name != "done"}


def kill_plan(rng: random.Random, trial: int, stages: list[str], dates: list[dt.date],
              windows: dict[str, float], chain_seconds: float) -> tuple[str | None, float]:
    """Where trial ``trial`` (1-based) kills: (marker to count from, seconds after it)."""
    if not stages:
        return None, rng.uniform(0.0, 0.9 * chain_seconds)
    stage = stages[(trial - 1) % len(stages)]
    marker = f"{rng.choice(dates)} {stage}"
    return marker, rng.uniform(0.0, 0.9 * windows[marker])


def kill_until_killed(draw: Callable[[], tuple[str | None, float]],
                      kill: Callable[[int, str | None, float], dict],
                      attempts: int = 3) -> tuple[dict, str | None, float, int]:
    """Run ``kill(attempt, marker, seconds)`` with a point from ``draw()`` until a run is really
    killed: a point past the end of the chain (the child finished first, which the chain's
    timing from run to run allows) is drawn again, up to ``attempts`` times, so that a trial is
    a kill and not a plain run. ``kill`` must use a new lake for each attempt.

    Returns:
        The last run's result, its marker and seconds, and how many draws it took.
    """
    for attempt in range(1, attempts + 1):
        kill_from, at = draw()
        result = kill(attempt, kill_from, at)
        if result["killed"]:
            break
    return result, kill_from, at, attempt


def run_trials(kills: int, seed: int, users: int, days: int, work: str | None,
               out: str | None, stages: list[str] | None = None,
               settings: tuple[str, ...] = ()) -> int:
    from demandlake import synth

    root = Path(work or tempfile.mkdtemp(prefix="demandlake-faults-"))
    root.mkdir(parents=True, exist_ok=True)
    raw, log_file = root / "raw", root / "children.log"
    start = dt.date(2026, 11, 1)
    synth.generate(raw, users=users, days=days, start_date=start.isoformat(), seed=seed)
    dates = [start + dt.timedelta(days=i) for i in range(days)]
    rng = random.Random(seed)
    say = lambda *a: print(*a, flush=True)  # noqa: E731
    stages = list(stages or [])
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise ValueError(f"unknown stages {unknown}; known: {list(STAGES)}")

    ref_lake, ref_snap, re_snap = root / "lake-ref", root / "ref.json", root / "rerun.json"
    clean = _run_child(ref_lake, raw, dates, ref_snap, None, log_file, settings=settings)
    if clean["returncode"] != 0:
        say(f"clean run failed ({clean}); see {log_file}")
        return 2
    reference = json.loads(ref_snap.read_text())
    rerun = _run_child(ref_lake, raw, dates, re_snap, None, log_file, settings=settings)
    rerun_diff = compare(reference, json.loads(re_snap.read_text()))
    windows = stage_windows(clean["marks"])
    say(f"clean run: {clean['chain_seconds']} s of chain, tables "
        f"{ {k: len(v) for k, v in reference.items()} }; rerun on the same lake: "
        f"{'identical' if not rerun_diff else rerun_diff}")

    trials: list[dict] = []

    def summary() -> dict:
        by_stage = collections.Counter((t["stage_at_kill"] or "start-up").split()[-1]
                                       for t in trials if t["killed"])
        return {
            "machine": {"cores": os.cpu_count(), "load_avg": os.getloadavg()},
            "users": users, "days": days, "seed": seed, "trials_planned": kills,
            "settings": list(settings),
            "clean_chain_seconds": clean["chain_seconds"], "clean_stage_seconds": windows,
            "aimed_at": stages or "anywhere", "tables": sorted(reference),
            "rows": {k: len(v) for k, v in reference.items()},
            "rerun_identical": not rerun_diff, "kills": sum(t["killed"] for t in trials),
            "kills_by_stage": dict(by_stage),
            "identical_after_rerun": sum(t["identical"] for t in trials), "trials": trials,
        }

    for i in range(1, kills + 1):
        snap = root / f"trial-{i}.json"
        lakes: list[Path] = []

        def kill(attempt: int, kill_from: str | None, at: float) -> dict:
            lakes.append(root / (f"lake-{i}" if attempt == 1 else f"lake-{i}-{attempt}"))
            return _run_child(lakes[-1], raw, dates, None, at, log_file, kill_from,
                              settings=settings)

        killed, kill_from, at, draws = kill_until_killed(
            lambda: kill_plan(rng, i, stages, dates, windows, clean["chain_seconds"]), kill)
        done = _run_child(lakes[-1], raw, dates, snap, None, log_file, settings=settings)
        diff = (compare(reference, json.loads(snap.read_text()))
                if done["returncode"] == 0 else {"rerun": f"failed rc={done['returncode']}"})
        trial = {"trial": i, "kill_from": kill_from or "first stage",
                 "kill_after_s": round(at, 1), "draws": draws, "killed": killed["killed"],
                 "stage_at_kill": killed["stage"], "rerun_rc": done["returncode"],
                 "identical": not diff, "diff": diff}
        trials.append(trial)
        say(f"trial {i:2d}: kill {at:6.1f} s after {kill_from or 'the first stage'}, in "
            f"{killed['stage'] or 'start-up'!s:22s} "
            f"killed={killed['killed']!s:5s} rerun rc={done['returncode']} "
            f"{'identical' if not diff else 'DIFFERENT ' + json.dumps(diff)[:400]}")
        if out:  # after every trial, so an interrupted run still leaves its figures
            Path(out).write_text(json.dumps(summary(), indent=1, default=str))
    result = summary()
    say(f"{result['kills']} kills ({result['kills_by_stage']}), "
        f"{result['identical_after_rerun']}/{kills} reruns identical to the clean run; "
        f"plain rerun identical: {result['rerun_identical']}")
    ok = result["rerun_identical"] and result["identical_after_rerun"] == kills
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
