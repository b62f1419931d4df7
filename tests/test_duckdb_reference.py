"""The DuckDB reference (bench/duckdb_reference.py) and the Spark stages agree row by row.

A few thousand synthetic events (plus a few hand-made edge cases) are written to bronze in a fresh
lake (in a non-UTC lake time zone, with a lookback window shorter than the history, so dates, hours
and window edges are all exercised);
``run_sessions`` and ``run_features`` write silver.sessions and gold.user_features, and the
reference computes both from the same bronze Parquet files. Either side changing a rule (gap,
ordering ties, windows, rates, nulls, arrays) makes a row differ.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pyspark.sql import functions as F

from demandlake import lake, schemas, synth
from helpers import bench
from helpers.catalog import fresh_lake
from demandlake.pipeline.transform import run_features, run_sessions

START = dt.date(2026, 11, 1)
DAYS = 14
SNAPSHOT = dt.date(2026, 11, 10)   # later events exist and must be ignored
TIMEZONE = "Asia/Shanghai"
WINDOWS = [2, 7]                   # lookback (7 days) shorter than the history before SNAPSHOT
TOP_K = 3
TOL = 1e-9


ref = bench.load("duckdb_reference")


# Hand-made events beside the generated ones, for the rules the generator never hits: two events
# of one user in the same second (order by event_id: "t-10" < "t-9"), a gap of exactly 30 minutes
# (same session) and of 30 minutes and 1 second (new session), an unpriced purchase (revenue null),
# a padded upper-case search, a session crossing local midnight, two source session ids in one
# session (the first non-null is kept), a user whose only events are older than the lookback
# window (zero sessions, default arrays) and one with sessions crossing both edges of it.
EDGE_EVENTS = [
    # (event_id, user, UTC time, type, item, category, brand, price, quantity, query[, sid])
    ("t-9", "edge1", "2026-11-08 10:00:00", "view", "iB", "books", "Quillmark", 5.0, None, None),
    ("t-10", "edge1", "2026-11-08 10:00:00", "cart", "iA", "books", "Quillmark", 7.5, 2, None,
     "src-b"),
    ("t-11", "edge1", "2026-11-08 10:30:00", "purchase", "iA", "books", None, 7.5, 2, None,
     "src-a"),
    ("t-12", "edge1", "2026-11-08 11:00:01", "search", None, None, None, None, None, "  Tent X "),
    ("t-13", "edge1", "2026-11-08 11:01:00", "purchase", "iC", "toys", None, None, None, None),
    ("t-14", "edge1", "2026-11-08 15:50:00", "view", "iD", "toys", "Kiddo", None, None, None),
    ("t-15", "edge1", "2026-11-08 16:10:00", "fav", "iD", "toys", "Kiddo", None, None, None),
    ("t-16", "edge2", "2026-11-01 03:00:00", "view", "iE", "pet", None, 3.0, None, None),
    # edge3: sessions crossing local midnight into the lookback's first day (11-04, bought
    # before it) and out of the snapshot date (bought after it): only their parts inside count.
    ("t-17", "edge3", "2026-11-03 15:50:00", "purchase", "iF", "pet", None, 4.0, 1, None),
    ("t-18", "edge3", "2026-11-03 16:10:00", "cart", "iF", "pet", None, 4.0, 1, None),
    ("t-19", "edge3", "2026-11-10 15:50:00", "cart", "iG", "pet", None, 6.0, 1, None),
    ("t-20", "edge3", "2026-11-10 16:10:00", "purchase", "iG", "pet", None, 6.0, 1, None),
]


def _bronze_events(raw: Path):
    """bronze.events rows for the generated JSON lines plus EDGE_EVENTS (typed as ingest would;
    ingest itself is not under test here and takes minutes on a shared 2-core machine)."""
    tz = ZoneInfo(TIMEZONE)

    def row(eid, user, sid, etype, item, cat, brand, price, qty, query, ts, source_file):
        ts = ts.astimezone(dt.timezone.utc)
        return (eid, user, sid, etype, item, cat, brand, price, qty, query, ts, None,
                "canonical_events", source_file, hashlib.sha256(eid.encode()).hexdigest(),
                ts.astimezone(tz).date())

    rows = []
    for path in sorted(raw.glob("events/dt=*/*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            e = json.loads(line)
            rows.append(row(e["event_id"], e["user_id"], e["session_id"], e["event_type"],
                            e["item_id"], e["category"], e["brand"], e["price"], e["quantity"],
                            e["search_query"], dt.datetime.fromisoformat(e["timestamp"]),
                            str(path)))
    for eid, user, when, etype, item, cat, brand, price, qty, query, *sid in EDGE_EVENTS:
        ts = dt.datetime.fromisoformat(when).replace(tzinfo=dt.timezone.utc)
        rows.append(row(eid, user, (sid or [None])[0], etype, item, cat, brand, price, qty, query,
                        ts, "edge"))
    return rows


def _bronze_reviews(raw: Path):
    tz = ZoneInfo(TIMEZONE)
    rows = []
    for path in sorted(raw.glob("reviews/dt=*/*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            ts = dt.datetime.fromisoformat(r["timestamp"]).astimezone(dt.timezone.utc)
            rows.append((r["review_id"], r["user_id"], r["item_id"], r["category"], r["rating"],
                         r["label"], r["title"], r["text"], r["language"], ts, None,
                         "canonical_reviews", str(path),
                         hashlib.sha256(line.encode()).hexdigest(), ts.astimezone(tz).date()))
    return rows


@pytest.fixture(scope="module")
def lake_run(spark, tmp_path_factory):
    """Generate, write bronze, run the sessions and features stages once for the module.

    Module-scoped (the stages take most of the test time), so it builds its config the way the
    shared ``cfg`` fixture does: a fresh lake folder and a catalog without earlier tests' tables.
    """
    base = tmp_path_factory.mktemp("duckdb_reference")
    summary = synth.generate(base / "raw", users=60, days=DAYS, start_date=START, seed=11)
    cfg = fresh_lake(
        spark, base / "lake", f"lake.timezone={TIMEZONE}",
        f"features.windows_days={WINDOWS}", f"features.top_k={TOP_K}",
        # The gold quality gate is not what this test checks (tests/test_quality.py does).
        "quality.enabled=false")
    lake.overwrite_all(spark, cfg, "bronze.events",
                       spark.createDataFrame(_bronze_events(base / "raw"), schemas.BRONZE_EVENTS))
    lake.overwrite_all(spark, cfg, "bronze.reviews", spark.createDataFrame(
        _bronze_reviews(base / "raw"), schemas.BRONZE_REVIEWS))
    last_day = START + dt.timedelta(days=DAYS - 1)
    run_sessions(spark, cfg, last_day, full=True)
    run_features(spark, cfg, SNAPSHOT)
    files = {name: lake.read(spark, cfg, name).inputFiles()
             for name in ("bronze.events", "bronze.reviews", "silver.sessions",
                          "gold.user_features")}
    return {"spark": spark, "cfg": cfg, "files": files, "base": base, "summary": summary}


def reference(lake_run, gap_minutes: float = 30, windows=WINDOWS, top_k: int = TOP_K):
    """A DuckDB connection with the reference's ``ref_sessions`` and ``ref_features`` tables."""
    con = ref.connect(threads=2, memory_limit="1GB")
    ref.register_inputs(con, lake_run["files"]["bronze.events"],
                        lake_run["files"]["bronze.reviews"])
    con.execute("CREATE TABLE ref_sessions AS "
                + ref.sessions_sql(gap_minutes, 50, TIMEZONE))
    con.execute("CREATE TABLE ref_features AS "
                + ref.user_features_sql(SNAPSHOT, windows, top_k, TIMEZONE, gap_minutes))
    return con


def _plain(value):
    """Rows of either engine as plain Python values (Rows and dicts -> tuples / dicts)."""
    if hasattr(value, "asDict"):
        return tuple(_plain(v) for v in value)
    if isinstance(value, dict):
        if set(value) == {"name", "weight"}:
            return (value["name"], value["weight"])
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _mismatch(a, b, where: str) -> str | None:
    """Where ``a`` and ``b`` differ (floats within TOL), or None."""
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None or not math.isclose(a, b, rel_tol=TOL, abs_tol=TOL):
            return None if a is None and b is None else f"{where}: {a!r} != {b!r}"
        return None
    if isinstance(a, dict) and isinstance(b, dict):
        if sorted(a) != sorted(b):
            return f"{where}: keys {sorted(a)} != {sorted(b)}"
        return next(filter(None, (_mismatch(a[k], b[k], f"{where}[{k}]") for k in a)), None)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return f"{where}: length {len(a)} != {len(b)}: {a!r} != {b!r}"
        return next(filter(None, (_mismatch(x, y, f"{where}[{i}]")
                                  for i, (x, y) in enumerate(zip(a, b)))), None)
    return None if a == b else f"{where}: {a!r} != {b!r}"


def assert_same_rows(spark_rows, duck_rows, columns):
    """Both row lists, sorted by their first column (the key), are equal column by column."""
    got = sorted((_plain(r) for r in spark_rows), key=lambda r: r[0])
    want = sorted((_plain(list(r)) for r in duck_rows), key=lambda r: r[0])
    assert len(got) == len(want), f"{len(got)} Spark rows, {len(want)} reference rows"
    problems = [m for s, d in zip(got, want)
                for m in [_mismatch(list(s), list(d), f"{s[0]}")] if m]
    named = [f"{p} (columns {columns})" for p in problems[:3]]
    assert not problems, f"{len(problems)} rows differ, e.g. " + "; ".join(named)


# Timestamps as epoch microseconds on both sides, so no client-side time zone is involved.
TS_COLUMNS = ("session_start", "session_end")


def _spark_sessions(lake_run):
    df = lake.read(lake_run["spark"], lake_run["cfg"], "silver.sessions")
    return df.select([F.unix_micros(c).alias(c) if c in TS_COLUMNS else F.col(c)
                      for c in ref.SESSION_COLUMNS]).collect()


def _duck_sessions(con):
    cols = ", ".join(f"epoch_us({c}) AS {c}" if c in TS_COLUMNS else c
                     for c in ref.SESSION_COLUMNS)
    return con.execute(f"SELECT {cols} FROM ref_sessions").fetchall()


def _spark_features(lake_run):
    df = lake.read(lake_run["spark"], lake_run["cfg"], "gold.user_features")
    return df.where(F.col("snapshot_date") == SNAPSHOT).select(ref.FEATURE_COLUMNS).collect()


def _duck_features(con):
    return con.execute(f"SELECT {', '.join(ref.FEATURE_COLUMNS)} FROM ref_features").fetchall()


def test_the_input_is_a_few_thousand_events_with_ties_late_dates_and_reviews(lake_run):
    con = reference(lake_run)
    n, users, later, ties, reviews = con.execute(f"""
        SELECT count(*), count(DISTINCT user_id), count_if(event_date > DATE '{SNAPSHOT}'),
               (SELECT count(*) FROM (SELECT user_id, event_ts FROM events
                                      GROUP BY ALL HAVING count(*) > 1)),
               (SELECT count(*) FROM reviews)
        FROM events""").fetchone()
    assert 1000 <= n <= 10_000 and n == lake_run["summary"]["events"] + len(EDGE_EVENTS)
    assert users > 20 and later > 0 and ties > 0 and reviews > 0


def test_duckdb_sessions_equal_the_spark_silver_sessions_row_by_row(lake_run):
    assert_same_rows(_spark_sessions(lake_run), _duck_sessions(reference(lake_run)),
                     ref.SESSION_COLUMNS)


def test_duckdb_user_features_equal_the_spark_gold_user_features_row_by_row(lake_run):
    assert_same_rows(_spark_features(lake_run), _duck_features(reference(lake_run)),
                     ref.FEATURE_COLUMNS)


@pytest.mark.parametrize("change", [{"gap_minutes": 20}, {"windows": [3, 7]}, {"top_k": 2}])
def test_a_reference_with_one_rule_changed_no_longer_matches(lake_run, change):
    con = reference(lake_run, **change)
    with pytest.raises(AssertionError):
        assert_same_rows(_spark_sessions(lake_run), _duck_sessions(con), ref.SESSION_COLUMNS)
        assert_same_rows(_spark_features(lake_run), _duck_features(con), ref.FEATURE_COLUMNS)


def test_the_benchmark_sql_comparison_finds_no_difference_and_catches_a_changed_gap(lake_run,
                                                                                   tmp_path):
    files = lake_run["files"]
    con = ref.connect(threads=2, memory_limit="1GB")
    ref.register_inputs(con, files["bronze.events"], files["bronze.reviews"])
    counts = ref.write_outputs(con, tmp_path / "same", SNAPSHOT, windows_days=WINDOWS,
                               top_k=TOP_K, timezone=TIMEZONE)
    ref.write_outputs(con, tmp_path / "changed", SNAPSHOT, gap_minutes=20, windows_days=WINDOWS,
                      top_k=TOP_K, timezone=TIMEZONE)

    def compare(out):
        return (ref.compare(con, files["silver.sessions"], str(out / "sessions/**/*.parquet"),
                            "session_id", ref.session_kinds(), TOL, partition="session_date"),
                ref.compare(con, files["gold.user_features"],
                            str(out / "user_features.parquet"), "user_id",
                            ref.feature_kinds(WINDOWS), TOL, partition="snapshot_date"))

    sessions, features = compare(tmp_path / "same")
    assert sessions["spark_rows"] == sessions["reference_rows"] == counts["sessions"]
    assert features["spark_rows"] == features["reference_rows"] == counts["users"]
    for c in (sessions, features):
        assert c["only_spark"] == c["only_reference"] == c["differing"] == 0, c
    sessions, features = compare(tmp_path / "changed")
    # edge1's 10:00 session splits at the 30-minute gap: a new id, a changed row, one more session
    assert sessions["only_reference"] > 0 and sessions["differing"] > 0
    assert features.get("differing.sessions_count", 0) > 0


def test_sessions_cross_both_edges_of_the_lookback_so_both_feature_paths_are_covered(lake_run):
    # run_features (and the benchmark's reference) read these users' session statistics from
    # their events and everyone else's from the stored sessions; the row-by-row comparisons above
    # cover both only if both kinds of user exist.
    con = reference(lake_run)
    lo = SNAPSHOT - dt.timedelta(days=max(WINDOWS) - 1)
    local_end = f"CAST(timezone('{TIMEZONE}', CAST(session_end AS TIMESTAMPTZ)) AS DATE)"
    crossing = con.execute(f"""
        SELECT count_if(session_date < DATE '{lo}' AND {local_end} >= DATE '{lo}'),
               count_if(session_date <= DATE '{SNAPSHOT}' AND {local_end} > DATE '{SNAPSHOT}'),
               count_if(session_date >= DATE '{lo}' AND {local_end} <= DATE '{SNAPSHOT}')
        FROM ref_sessions""").fetchone()
    assert all(n > 0 for n in crossing), crossing
