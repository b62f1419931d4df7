"""Reruns, concurrent writers, backfill after a failure, and the kill harness' own logic
(docs/RELIABILITY.md). A chain really killed and rerun takes minutes of child Spark processes:
`python bench/fault_rerun.py` (one kill aimed at score), `python -m demandlake.faults --kills 20`."""
from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
import shutil
import threading
import time

import pytest
from pyspark.sql import functions as F

from demandlake import faults, lake, runlog, schemas, synth
from demandlake.pipeline import chain
from demandlake.config import local_path
from helpers.catalog import fresh_lake
from helpers.settings import SHORT_JVM_OPTIONS, SMALL_SPARK

D0 = dt.date(2026, 11, 1)
ROWS = schemas.GOLD_RECOMMENDATIONS


def recs(spark, writer: str, n: int = 50):
    return spark.createDataFrame(
        [(f"u{i}", D0, 1, f"item-{i}", "c", 1.0, "als", "test", None, writer) for i in range(n)],
        ROWS)


def _together(*actions):
    """Run the actions in threads started at the same moment; re-raise the first error."""
    errors, barrier = [], threading.Barrier(len(actions))

    def call(action):
        barrier.wait()
        try:
            action()
        except Exception as exc:  # noqa: BLE001 - collected and re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(a,)) for a in actions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def test_two_runs_replacing_one_partition_at_once_leave_one_of_them_whole(spark, cfg):
    lake.ensure_table(spark, cfg, "gold.recommendations")
    where = f"run_date = DATE'{D0.isoformat()}'"
    for _ in range(3):
        _together(*[lambda w=w: lake.overwrite_where(spark, cfg, "gold.recommendations",
                                                      recs(spark, w), where) for w in ("a", "b")])
        rows = lake.read(spark, cfg, "gold.recommendations").collect()
        assert len(rows) == 50
        assert len({r["run_id"] for r in rows}) == 1  # never a mix of the two writers


def test_two_runs_merging_the_same_rows_at_once_insert_them_once(spark, cfg):
    df = recs(spark, "a")
    _together(*[lambda: lake.merge_insert(spark, cfg, "gold.recommendations", df,
                                          ["user_id", "run_date", "rank"])] * 2)
    table = lake.read(spark, cfg, "gold.recommendations")
    assert table.count() == 50
    assert table.select("user_id").distinct().count() == 50


def test_a_retried_run_record_is_stored_once(spark, cfg):
    run = runlog.Run("sessions", D0)
    runlog.write_run(spark, cfg, run)
    runlog.write_run(spark, cfg, run)  # the retry after a commit whose answer was lost
    other = runlog.Run("sessions", D0)
    runlog.write_run(spark, cfg, other)
    ids = [r["run_id"] for r in lake.read(spark, cfg, "ops.runs").collect()]
    assert sorted(ids) == sorted([run.run_id, other.run_id])


@pytest.fixture
def raw_lake(cfg, tmp_path):
    raw = tmp_path / "raw"
    synth.generate(raw, users=30, days=2, start_date=D0.isoformat(), seed=5)
    return cfg.with_overrides({"lake.raw_uri": str(raw)}), raw


# What the queries during a nightly ask of each table it writes: answers that change with each
# commit, so that every answer can be traced to one committed version.
PROBES = {
    "bronze.events": "count(*), count(DISTINCT event_date), max(event_date)",
    "silver.sessions": "count(*), max(session_date)",
    "gold.user_profiles": "count(*), count(DISTINCT run_id), max(run_date)",
    "gold.demand_forecasts": "count(*), count(DISTINCT run_id), max(run_date)",
}


ROUND_PAUSE_S = 2.0


def _answer(row) -> tuple[str, ...]:
    return tuple(str(v) for v in row)


class _Prober(threading.Thread):
    """Asks every probe of ``PROBES`` through the endpoint, round after round, until stopped;
    keeps each answer with its round's start and end times."""

    def __init__(self, endpoint):
        super().__init__(daemon=True)
        self.endpoint, self.stop = endpoint, threading.Event()
        self.rounds: list[tuple[float, float, dict]] = []
        self.errors: list[str] = []
        self.first_round = threading.Event()

    def run(self):
        from demandlake.sql_endpoint import error_text

        conn = self.endpoint.connect()
        cur = conn.cursor()
        try:
            while True:
                last = self.stop.is_set()  # one more whole round after the stop: the final state
                t0, answers = time.monotonic(), {}
                for table, agg in PROBES.items():
                    try:
                        cur.execute(f"SELECT {agg} FROM {table}")
                        answers[table] = _answer(cur.fetchall()[0])
                    except Exception as exc:  # noqa: BLE001 - every failure is asserted on
                        self.errors.append(f"{table}: {error_text(exc)}")
                self.rounds.append((t0, time.monotonic(), answers))
                self.first_round.set()
                if last:
                    return
                # A pause between rounds: each round is a snapshot read of four tables in the
                # endpoint's JVM, and back to back they took CPU from the chain they watch.
                self.stop.wait(ROUND_PAUSE_S)
        finally:
            conn.close()


def _named_tables(conn) -> set[str]:
    cur, names = conn.cursor(), set()
    for db in ("bronze", "silver", "gold"):
        cur.execute(f"SHOW TABLES IN {db}")
        names |= {f"{r[0]}.{r[1]}" for r in cur.fetchall()}
    cur.close()
    return names


def _committed_answers(spark, cfg, table: str) -> list[tuple[str, ...]]:
    """The probe's answer at every committed version of ``table``, oldest first."""
    location = lake.spec(table).location(cfg)
    versions = sorted(r["version"] for r in spark.sql(
        f"DESCRIBE HISTORY delta.`{location}`").select("version").collect())
    return [_answer(spark.sql(f"SELECT {PROBES[table]} FROM delta.`{location}` "
                              f"VERSION AS OF {v}").first()) for v in versions]


def test_backfill_after_a_failed_date_runs_only_the_missing_dates_while_analysts_query(
        spark, raw_lake, tmp_path):
    """A backfill stopped by a missing date, resumed: only that date runs. And the SQL endpoint
    (a separate process, as ``demandlake serve-sql`` runs beside the nightly) answers queries
    before, during and after the resumed date's nightly chain, every one of them from a
    committed table version."""
    from helpers.endpoint import Endpoint

    cfg, raw = raw_lake
    dates = [D0 + dt.timedelta(days=i) for i in range(2)]
    day2 = raw / "events" / f"dt={dates[1].isoformat()}"
    shutil.move(day2, tmp_path / "held-back")
    # Started beside the first backfill; it names the tables as they appear (refresh 1 s).
    endpoint = Endpoint(cfg.lake_uri, "sql_endpoint.refresh_s=1")
    try:
        with pytest.raises(FileNotFoundError, match=dates[1].isoformat()):
            chain.backfill(spark, cfg, dates, train=False)
        assert runlog.last_success(spark, cfg, "nightly", dates[0])
        assert not runlog.last_success(spark, cfg, "nightly", dates[1])

        endpoint.ready()
        conn, deadline = endpoint.connect(), time.monotonic() + 60
        while not set(PROBES) <= (named := _named_tables(conn)):
            assert time.monotonic() < deadline, (
                f"the endpoint named {sorted(named)} after 60 s\n{endpoint.log()[-3000:]}")
            time.sleep(0.5)
        conn.close()
        prober = _Prober(endpoint)
        prober.start()
        assert prober.first_round.wait(120), "no answer from the endpoint in 120 s"

        shutil.move(tmp_path / "held-back", day2)
        started = time.monotonic()
        result = chain.backfill(spark, cfg, dates, train=False)
        ended = time.monotonic()
        prober.stop.set()
        prober.join(120)
    finally:
        endpoint.stop()
    assert result == {"ran": [d.isoformat() for d in dates[1:]],
                      "skipped": [dates[0].isoformat()]}
    filled = {k for k, v in faults.snapshot(spark, cfg).items() if v}
    assert {"bronze.events", "silver.sessions", "gold.user_features",
            "gold.demand_forecasts"} <= filled
    # One nightly record per date, written when its chain succeeded: the first date was not run
    # again. (That a date run again over the tables it wrote leaves them identical is the kill
    # smoke's: its last rerun runs every stage again over what the killed runs left.)
    nightly = (lake.read(spark, cfg, "ops.runs").where(F.col("stage") == "nightly")
               .select("run_date", "status").collect())
    assert sorted(tuple(r) for r in nightly) == [(d, "succeeded") for d in dates]

    # The queries: all answered, some while the chain ran, each from a committed version, the
    # last from the newest (the endpoint was not restarted to see the new commits).
    assert not prober.errors, prober.errors[:5]
    assert any(started < t0 and t1 < ended for t0, t1, _ in prober.rounds), (
        f"no query round fell inside the nightly ({ended - started:.0f} s)")
    for table in PROBES:
        committed = _committed_answers(spark, cfg, table)
        seen = [answers[table] for _, _, answers in prober.rounds]
        assert set(seen) <= set(committed), (table, set(seen) - set(committed), committed)
        assert seen[-1] == committed[-1], (table, seen[-1], committed[-1])
        assert len(set(seen)) >= 2, (table, seen)  # before the resumed date and after it


def test_compare_counts_missing_extra_and_duplicated_rows():
    ref = {"t": ["a", "b", "b"], "u": ["x"]}
    assert faults.compare(ref, {"t": ["b", "a", "b"], "u": ["x"]}) == {}
    diff = faults.compare(ref, {"t": ["a", "b", "c", "c"]})
    assert (diff["t"]["missing"], diff["t"]["extra"]) == (1, 2)
    assert diff["u"]["missing"] == 1


def test_stage_windows_run_from_each_marker_to_the_next():
    marks = {"2026-11-01 ingest": 0.0, "2026-11-01 sessions": 10.0, "2026-11-01 score": 12.5,
             "done": 20.0}
    assert faults.stage_windows(marks) == {"2026-11-01 ingest": 10.0,
                                           "2026-11-01 sessions": 2.5, "2026-11-01 score": 7.5}


def test_aimed_kills_take_the_named_stages_in_turn_inside_their_clean_duration():
    import random

    dates = [dt.date(2026, 11, 1), dt.date(2026, 11, 2)]
    windows = {f"{d} {s}": w for d in dates for s, w in (("ingest", 100.0), ("score", 4.0))}
    rng = random.Random(5)
    plans = [faults.kill_plan(rng, i, ["score", "ingest"], dates, windows, 500.0)
             for i in range(1, 41)]
    assert [p[0].split()[-1] for p in plans[:4]] == ["score", "ingest", "score", "ingest"]
    assert {p[0].split()[0] for p in plans} == {str(d) for d in dates}
    assert all(0 <= at <= 0.9 * windows[m] for m, at in plans)
    assert max(at for m, at in plans if m.endswith("score")) <= 3.6  # not the chain's 500 s
    marker, at = faults.kill_plan(random.Random(5), 1, [], dates, windows, 500.0)
    assert marker is None and 0 <= at <= 450.0


def test_a_kill_point_past_the_end_of_the_chain_is_drawn_again_on_a_new_lake():
    draws = iter([("2026-11-01 score", 90.0), ("2026-11-01 score", 2.0), ("x", 1.0)])
    runs = []

    def kill(attempt, marker, at):  # the chain ends 10 s after its marker
        runs.append((attempt, marker, at))
        return {"killed": at < 10.0, "stage": marker}

    result, marker, at, n = faults.kill_until_killed(lambda: next(draws), kill)
    assert (result["killed"], marker, at, n) == (True, "2026-11-01 score", 2.0, 2)
    assert [r[0] for r in runs] == [1, 2]
    never = faults.kill_until_killed(lambda: (None, 99.0), kill, attempts=3)
    assert never[0]["killed"] is False and never[3] == 3  # reported as a non-kill at last


def _debris(location, age_s: float):
    """What a process killed inside Delta's first commit leaves: temporary files only."""
    log_dir = location / "_delta_log"
    (log_dir / "_staged_commits").mkdir(parents=True)
    files = [log_dir / ".00000000000000000000.json.1234.tmp",
             log_dir / "..00000000000000000000.json.1234.tmp.crc"]
    for f in files:
        f.write_text("{}")
        past = time.time() - age_s
        os.utime(f, (past, past))
    return files


def test_a_table_written_by_another_tool_answers_files_id_and_version_as_it_is(spark, cfg):
    """A table written at its location without the declared comments and NOT NULLs (by hand,
    by another tool) is described as it is, not refused as a schema mismatch (CI, stop 13)."""
    from pyspark.sql import types as T

    name = "gold.vocabularies"
    location = lake.spec(name).location(cfg)
    loose = T.StructType([T.StructField(f.name, f.dataType) for f in lake.spec(name).schema])
    rows = [("item", "i0", 0, 1, dt.date(2026, 11, 3))]
    spark.createDataFrame(rows, loose).write.format("delta").save(location)
    assert lake.has_files(spark, cfg, name)
    assert lake.table_version(spark, cfg, name) == 0
    first_id = lake.table_id(spark, cfg, name)
    shutil.rmtree(local_path(location))
    assert not lake.has_files(spark, cfg, name)  # none there: created empty, as declared
    assert lake.table_id(spark, cfg, name) != first_id


def test_a_table_another_process_creates_is_seen_although_its_empty_log_was_seen_first(
        spark, cfg, tmp_path):
    """Delta makes a new table's log folder before the data and the first commit. A long-lived
    session (the SQL endpoint's refresh, every second) that looked in between kept answering
    "no table" from its cached log for an hour (CI, 2026-12-07: the endpoint never named
    gold.demand_forecasts). The other process's table is made here by copying a table's files
    in, which this session's Delta never hears of."""
    name = "gold.vocabularies"
    location = Path(local_path(lake.spec(name).location(cfg)))
    (location / "_delta_log").mkdir(parents=True)
    assert not lake.table_exists(spark, cfg, name)
    elsewhere = tmp_path / "written-elsewhere"
    spark.range(3).write.format("delta").save(str(elsewhere))
    shutil.copytree(elsewhere, location, dirs_exist_ok=True)
    assert lake.table_exists(spark, cfg, name)


def test_a_table_whose_creation_was_killed_is_created_on_rerun(spark, cfg):
    location = local_path(lake.spec("ops.quality_checks").location(cfg))
    _debris(location, age_s=600)
    lake.ensure_table(spark, cfg, "ops.quality_checks")  # Delta alone refuses this location
    assert lake.table_exists(spark, cfg, "ops.quality_checks")
    assert lake.read(spark, cfg, "ops.quality_checks").count() == 0


def test_debris_of_a_create_in_progress_or_next_to_data_is_left_alone(spark, cfg):
    young = local_path(lake.spec("ops.quality_checks").location(cfg))
    files = _debris(young, age_s=0)
    with pytest.raises(Exception, match="not empty|NON_EMPTY"):
        lake.ensure_table(spark, cfg, "ops.quality_checks")
    assert all(f.exists() for f in files)

    with_data = local_path(lake.spec("ops.runs").location(cfg))
    files = _debris(with_data, age_s=600)
    (with_data / "part-0000.parquet").write_text("not ours to delete")
    with pytest.raises(Exception, match="not empty|NON_EMPTY"):
        lake.ensure_table(spark, cfg, "ops.runs")
    assert all(f.exists() for f in files) and (with_data / "part-0000.parquet").exists()


def _metastore_debris(path, age_s: float) -> list:
    """What Derby leaves when killed while creating the embedded metastore: its folder with lock
    files, a log and segment files, but no service.properties (seen in a fault run, kill 19.9 s
    into the first run on a fresh lake)."""
    files = [path / "db.lck", path / "dbex.lck", path / "log" / "log1.dat", path / "seg0" / "c10.dat",
             path / "tmp" / "x"]
    for f in files:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"\x00" * 16)
    old = time.time() - age_s
    for f in [*files, *{f.parent for f in files}]:
        os.utime(f, (old, old))
    return files


def test_a_metastore_whose_creation_was_killed_is_removed_before_the_next_run(tmp_path):
    from demandlake.spark import clear_interrupted_metastore

    debris = tmp_path / "debris" / "metastore_db"
    _metastore_debris(debris, age_s=600)
    assert clear_interrupted_metastore(debris)
    assert not debris.exists()

    created = tmp_path / "created" / "metastore_db"  # a finished database is never touched
    _metastore_debris(created, age_s=600)
    (created / "service.properties").write_text("derby")
    young = tmp_path / "young" / "metastore_db"  # files still changing: a create in progress
    _metastore_debris(young, age_s=0)
    assert not clear_interrupted_metastore(created) and not clear_interrupted_metastore(young)
    assert (created / "seg0" / "c10.dat").exists() and (young / "seg0" / "c10.dat").exists()
    assert not clear_interrupted_metastore(None)
    assert not clear_interrupted_metastore(tmp_path / "absent")


def test_a_metastore_a_live_process_holds_open_is_left_alone(tmp_path):
    import subprocess
    import sys

    from demandlake.spark import clear_interrupted_metastore

    held = tmp_path / "metastore_db"
    _metastore_debris(held, age_s=600)
    lock = held / "dbex.lck"
    holder = subprocess.Popen(  # POSIX record locks belong to a process, so another one holds it
        [sys.executable, "-c", "import fcntl, sys, time\n"
         f"f = open({str(lock)!r}, 'r+b'); fcntl.lockf(f, fcntl.LOCK_EX)\n"
         "print('locked', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        os.utime(lock, (time.time() - 600, time.time() - 600))
        assert not clear_interrupted_metastore(held)
        assert lock.exists()
    finally:
        holder.kill()
        holder.wait()
    assert clear_interrupted_metastore(held)  # the holder is gone: now it is debris


def test_killed_inside_the_bronze_merge_the_silver_write_and_the_publish_a_rerun_heals(
        spark, tmp_path, monkeypatch):
    # The killed chains and their reruns are children with the suite's small Spark settings (the
    # catalog stays the embedded Derby one, as shipped): about 0.6x the CPU of the shipped
    # defaults in each new JVM. The clean reference runs the same stages in this process's warm
    # session (in-memory catalog) meanwhile: one JVM fewer, and the tables must not depend on
    # the catalog either. The random 20-kill run (docs/RELIABILITY.md) runs with the defaults.
    monkeypatch.setenv("SPARK_SUBMIT_OPTS", SHORT_JVM_OPTIONS)  # the children's JVMs
    reference: dict[str, list[str]] = {}

    def clean(lake_dir: Path, raw: Path, dates: list[dt.date]) -> dict[str, list[str]]:
        cfg = fresh_lake(spark, lake_dir, f"lake.raw_uri={raw}")
        faults.run_chain(spark, cfg, dates)
        reference.update(faults.snapshot(spark, cfg))
        return reference

    result = faults.run_kill_points(tmp_path, clean, settings=SMALL_SPARK)
    # The tables of the chain hold rows, so "identical" compares something (one generated day
    # has no planted faults: no quarantine, no reviews).
    assert all(reference.get(name) for name in (
        "bronze.events", "silver.sessions", "gold.user_features", "gold.demand_forecasts",
        "gold.user_profiles", "gold.recommendations")), \
        {name: len(rows) for name, rows in reference.items()}
    assert [k["killed_at"] for k in result["kills"]] == list(faults.KILL_POINTS), \
        f"{result['kills']} (log: {result['log']})"
    assert all(k["returncode"] == -9 for k in result["kills"])
    assert result["clean"]["returncode"] == 0 and result["final"]["returncode"] == 0
    assert result["diff"] == {}, f"{result['diff']} (log: {result['log']})"
