"""The DuckDB reference (bench/duckdb_examples.py) and the Spark sequence-examples stage agree
row by row.

A few thousand synthetic events plus hand-made edge cases are written to bronze in a fresh lake
(lake time zone Asia/Shanghai, sequences of 8 events, a 3-day horizon, so truncation, local
midnights and label-window edges are frequent); ``run_sequence_examples`` writes
gold.vocabularies and gold.sequence_examples, and the reference computes both from the same
bronze Parquet files. Either side changing a rule (plan, vocabulary ids, tie order, truncation,
gaps, buckets, static features, horizon) makes a row differ.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from demandlake import lake, schemas, synth
from demandlake.pipeline.transform import run_sequence_examples
from helpers import bench
from helpers.catalog import fresh_lake

START = dt.date(2026, 11, 1)
DAYS = 14
TIMEZONE = "Asia/Shanghai"
SETTINGS = {"max_length": 8, "horizon_days": 3, "step_days": 1, "min_events": 2,
            "min_item_count": 2, "history_start_quantile": 0.001,
            "price_buckets": (0, 10, 20, 50, 100, 200, 500, 1000),
            "split": {"train": 0.6, "validation": 0.2, "test": 0.2}}
TOL = 1e-6   # float32 arrays: a few ulps (ln(1 + x) in DuckDB, log1p in Spark)


ref = bench.load("duckdb_examples")

# Hand-made events (local times in TIMEZONE) for the rules the generator never hits. With the
# synthetic period the plan is: train cutoffs 11-02..11-06, validation 11-09, test 11-12/11-13,
# vocabulary through 11-08.
# * edge-tie: nine events before 11-04, the two oldest in the same second (order by event id:
#   "x-10" < "x-9", so the truncation to 8 drops "x-10"), and two more tied in the middle.
# * edge-horizon: an input 0.5 s before local midnight, a purchase at 00:00:00 of the cutoff 11-04
#   (a label, never an input), one at 23:59:59 of its last label day (11-06, a label) and one at
#   00:00 of 11-07 (outside its window); a purchase without category and one of a category first
#   seen after the vocabulary window (both id 1, once in label_categories).
# * edge-price: prices on and around the bucket edges, an unpriced purchase (revenue + 0), a
#   purchase without quantity (x1); an item seen once (OOV) and one seen only after the window.
# * edge-min: one event before 11-03 and 11-04 (fewer than min_events: no example), two before
#   11-05.
# * edge-old: two stray events a month early (below the 0.001 quantile: the plan ignores them).
EDGE_EVENTS = [
    # (event_id, user, local time, type, item, category, price, quantity)
    ("x-10", "edge-tie", "2026-11-02 09:00:00", "cart", "iA", "books", 7.5, 2),
    ("x-9", "edge-tie", "2026-11-02 09:00:00", "view", "iB", "books", 5.0, None),
    ("x-11", "edge-tie", "2026-11-02 09:05:00", "view", "iA", "books", 7.5, None),
    ("x-12", "edge-tie", "2026-11-02 10:00:00", "view", "iB", "books", 5.0, None),
    ("x-14", "edge-tie", "2026-11-03 08:00:00", "fav", "iA", "books", None, None),
    ("x-13", "edge-tie", "2026-11-03 08:00:00", "search", None, None, None, None),
    ("x-15", "edge-tie", "2026-11-03 08:00:00.250000", "view", "iC", "toys", 12.0, None),
    ("x-16", "edge-tie", "2026-11-03 20:00:00", "remove_from_cart", "iA", "books", 7.5, 1),
    ("x-17", "edge-tie", "2026-11-03 21:00:00", "purchase", "iB", "books", 5.0, 3),
    ("h-1", "edge-horizon", "2026-11-02 12:00:00", "view", "iD", "toys", 30.0, None),
    ("h-2", "edge-horizon", "2026-11-03 23:59:59.500000", "cart", "iD", "toys", 30.0, 1),
    ("h-3", "edge-horizon", "2026-11-04 00:00:00", "purchase", "iD", "toys", 30.0, 1),
    ("h-4", "edge-horizon", "2026-11-06 23:59:59", "purchase", "iE", "pet", 3.0, 1),
    ("h-5", "edge-horizon", "2026-11-07 00:00:00", "purchase", "iF", "garden", 4.0, 1),
    ("h-6", "edge-horizon", "2026-11-12 10:00:00", "purchase", "iF", None, 4.0, 1),
    ("h-7", "edge-horizon", "2026-11-13 10:00:00", "purchase", "iZ", "zz-late", 4.0, 1),
    ("h-8", "edge-horizon", "2026-11-14 10:00:00", "purchase", "iZ", "zz-late", 4.0, 1),
    ("p-1", "edge-price", "2026-11-02 10:00:00", "view", "iA", "books", 0.0, None),
    ("p-2", "edge-price", "2026-11-02 10:00:01", "view", "iA", "books", 9.99, None),
    ("p-3", "edge-price", "2026-11-02 10:00:02", "view", "iA", "books", 10.0, None),
    ("p-4", "edge-price", "2026-11-02 10:00:03", "view", "iA", "books", 999.99, None),
    ("p-5", "edge-price", "2026-11-02 10:00:04", "view", "iA", "books", 1000.0, None),
    ("p-6", "edge-price", "2026-11-02 10:00:05", "view", "rare-1", "books", 5000.0, None),
    ("p-7", "edge-price", "2026-11-02 11:00:00", "purchase", "iA", "books", None, 2),
    ("p-8", "edge-price", "2026-11-02 11:30:00", "purchase", "iA", "books", 19.99, None),
    ("p-9", "edge-price", "2026-11-03 11:30:00", "purchase", "iA", "books", 50.0, 3),
    ("p-10", "edge-price", "2026-11-10 09:00:00", "view", "late-item", "books", 20.0, None),
    ("p-11", "edge-price", "2026-11-11 09:00:00", "view", "late-item", "books", 20.0, None),
    ("m-1", "edge-min", "2026-11-02 10:00:00", "view", "iA", "books", 7.5, None),
    ("m-2", "edge-min", "2026-11-04 10:00:00", "view", "iB", "books", 5.0, None),
    ("o-1", "edge-old", "2026-10-01 10:00:00", "view", "iA", "books", 7.5, None),
    ("o-2", "edge-old", "2026-10-02 10:00:00", "view", "iB", "books", 5.0, None),
    ("o-3", "edge-old", "2026-11-05 10:00:00", "purchase", "iB", "books", 5.0, 1),
]


def _bronze_events(raw: Path):
    """bronze.events rows for the generated JSON lines plus EDGE_EVENTS (typed as ingest would;
    ingest itself is not under test here)."""
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
    for eid, user, when, etype, item, cat, price, qty in EDGE_EVENTS:
        ts = dt.datetime.fromisoformat(when).replace(tzinfo=tz)
        rows.append(row(eid, user, None, etype, item, cat, None, price, qty, None, ts, "edge"))
    return rows


@pytest.fixture(scope="module")
def lake_run(spark, tmp_path_factory):
    """Generate, write bronze, run the sequence-examples stage once for the module (a fresh lake
    and catalog, as the shared ``cfg`` fixture makes them)."""
    base = tmp_path_factory.mktemp("duckdb_examples")
    summary = synth.generate(base / "raw", users=60, days=DAYS, start_date=START, seed=11,
                             reviews=False)
    cfg = fresh_lake(
        spark, base / "lake", f"lake.timezone={TIMEZONE}",
        *(f"sequences.{k}={SETTINGS[k]}" for k in
          ("max_length", "horizon_days", "min_events", "min_item_count",
           "history_start_quantile")),
        f"sequences.cutoff_step_days={SETTINGS['step_days']}",
        f"sequences.price_buckets={list(SETTINGS['price_buckets'])}",
        "quality.enabled=false")
    lake.overwrite_all(spark, cfg, "bronze.events",
                       spark.createDataFrame(_bronze_events(base / "raw"), schemas.BRONZE_EVENTS))
    counts = run_sequence_examples(spark, cfg)
    files = {name: lake.read(spark, cfg, name).inputFiles()
             for name in ("bronze.events", "gold.vocabularies", "gold.sequence_examples")}
    # Collected once: every comparison below reads the same Spark rows.
    rows = {name: lake.read(spark, cfg, name).select(columns).collect()
            for name, columns in (("gold.vocabularies", ref.VOCAB_COLUMNS),
                                  ("gold.sequence_examples", ref.EXAMPLE_COLUMNS))}
    return {"spark": spark, "cfg": cfg, "files": files, "summary": summary, "counts": counts,
            "rows": rows}


def reference(lake_run, **changes):
    """A DuckDB connection with the reference's ``ref_vocabularies`` and ``ref_examples``, and
    what ``build_tables`` returned (the plan)."""
    con = ref.base.connect(threads=2, memory_limit="1GB")
    ref.base.register_inputs(con, lake_run["files"]["bronze.events"], [])
    return con, ref.build_tables(con, **{**SETTINGS, **changes})


def _plain(value):
    """Rows of either engine as plain Python lists."""
    if hasattr(value, "asDict"):
        return [_plain(v) for v in value]
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _mismatch(a, b, where: str) -> str | None:
    """Where ``a`` and ``b`` differ (floats within TOL relative), or None."""
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None or not math.isclose(a, b, rel_tol=TOL, abs_tol=TOL):
            return None if a is None and b is None else f"{where}: {a!r} != {b!r}"
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{where}: length {len(a)} != {len(b)}: {a!r} != {b!r}"
        return next(filter(None, (_mismatch(x, y, f"{where}[{i}]")
                                  for i, (x, y) in enumerate(zip(a, b)))), None)
    return None if a == b else f"{where}: {a!r} != {b!r}"


def assert_same_rows(spark_rows, duck_rows, columns, n_keys: int):
    """Both row lists, sorted by their first ``n_keys`` columns, are equal column by column."""
    got = sorted((_plain(r) for r in spark_rows), key=lambda r: r[:n_keys])
    want = sorted((_plain(list(r)) for r in duck_rows), key=lambda r: r[:n_keys])
    only_spark = {tuple(r[:n_keys]) for r in got} - {tuple(r[:n_keys]) for r in want}
    only_duck = {tuple(r[:n_keys]) for r in want} - {tuple(r[:n_keys]) for r in got}
    assert not only_spark and not only_duck, (
        f"{len(got)} Spark rows, {len(want)} reference rows; only in Spark e.g. "
        f"{sorted(only_spark)[:3]}, only in the reference e.g. {sorted(only_duck)[:3]}")
    problems = [m for s, d in zip(got, want) for m in [_row_mismatch(s, d, columns, n_keys)] if m]
    assert not problems, f"{len(problems)} rows differ, e.g. " + "; ".join(problems[:3])


def _row_mismatch(s, d, columns, n_keys: int) -> str | None:
    """The first column where rows ``s`` and ``d`` differ, or None."""
    return next(filter(None, (_mismatch(a, b, f"{tuple(s[:n_keys])} {col}")
                              for col, a, b in zip(columns, s, d))), None)


def _spark_examples(lake_run):
    return lake_run["rows"]["gold.sequence_examples"]


def _duck_examples(con, table: str = "ref_examples"):
    return con.execute(f"SELECT {', '.join(ref.EXAMPLE_COLUMNS)} FROM {table}").fetchall()


def _spark_vocabularies(lake_run):
    return lake_run["rows"]["gold.vocabularies"]


def _duck_vocabularies(con):
    return con.execute(f"SELECT {', '.join(ref.VOCAB_COLUMNS)} FROM ref_vocabularies").fetchall()


def test_the_input_has_stray_days_and_the_examples_hit_truncation_ties_and_window_edges(lake_run):
    con, plan = reference(lake_run)
    n, stray = con.execute(f"SELECT count(*), count_if(event_date < DATE '{START}') "
                           "FROM events").fetchone()
    # over 2,000 events, the 0.001 quantile is the 3rd date or later: past the two stray ones
    assert 2000 < n <= 10_000 and n == lake_run["summary"]["events"] + len(EDGE_EVENTS)
    assert stray == 2 and plan["first"] == START
    assert lake_run["counts"]["cutoffs"] == len(plan["plan"])
    splits = [s for _, s in plan["plan"]]
    assert splits == ["train"] * 5 + ["validation"] + ["test"] * 2
    assert plan["through"] == dt.date(2026, 11, 8)
    L = SETTINGS["max_length"]
    full, short, positive, oov_label = con.execute(f"""
        SELECT count_if(seq_len = {L}), count_if(seq_len < {L}), count_if(label_purchase = 1),
               count_if(list_contains(label_categories, 1))
        FROM ref_examples""").fetchone()
    assert full > 50 and short > 50 and positive > 10 and oov_label > 0
    edges = dict(con.execute("""
        SELECT user_id || '@' || cutoff_date, [seq_len, label_purchase] FROM ref_examples
        WHERE user_id LIKE 'edge-%'""").fetchall())
    assert edges["edge-tie@2026-11-04"] == [8, 0]
    assert edges["edge-horizon@2026-11-04"] == [2, 1]
    assert "edge-min@2026-11-04" not in edges and edges["edge-min@2026-11-05"] == [2, 0]


def test_duckdb_vocabularies_equal_the_spark_gold_vocabularies_row_by_row(lake_run):
    con, _ = reference(lake_run)
    assert_same_rows(_spark_vocabularies(lake_run), _duck_vocabularies(con), ref.VOCAB_COLUMNS,
                     n_keys=2)


def test_duckdb_examples_equal_the_spark_gold_sequence_examples_row_by_row(lake_run):
    con, _ = reference(lake_run)
    assert_same_rows(_spark_examples(lake_run), _duck_examples(con), ref.EXAMPLE_COLUMNS,
                     n_keys=2)


@pytest.mark.parametrize("change", [{"horizon_days": 4}, {"max_length": 7}, {"min_events": 1},
                                    {"min_item_count": 1}, {"history_start_quantile": 0.0}])
def test_a_reference_with_one_setting_changed_no_longer_matches(lake_run, change):
    con, _ = reference(lake_run, **change)
    with pytest.raises(AssertionError):
        assert_same_rows(_spark_vocabularies(lake_run), _duck_vocabularies(con),
                         ref.VOCAB_COLUMNS, n_keys=2)
        assert_same_rows(_spark_examples(lake_run), _duck_examples(con), ref.EXAMPLE_COLUMNS,
                         n_keys=2)


def test_the_benchmark_sql_comparison_finds_no_difference_and_catches_a_changed_horizon(
        lake_run, tmp_path):
    files = lake_run["files"]
    con = ref.base.connect(threads=2, memory_limit="1GB")
    ref.base.register_inputs(con, files["bronze.events"], [])
    counts = ref.write_outputs(con, tmp_path / "same", **SETTINGS)
    ref.write_outputs(con, tmp_path / "changed", **{**SETTINGS, "horizon_days": 2})

    def compare(out):
        return (ref.compare(con, files["gold.vocabularies"], str(out / "vocabularies.parquet"),
                            ["vocab", "token"], ref.vocabulary_kinds(), TOL),
                ref.compare(con, files["gold.sequence_examples"],
                            str(out / "sequence_examples" / "**" / "*.parquet"),
                            ["user_id", "cutoff_date"], ref.example_kinds(), TOL,
                            partition="cutoff_date"))

    vocab, examples = compare(tmp_path / "same")
    assert vocab["spark_rows"] == vocab["reference_rows"] == counts["vocabularies"]
    assert examples["spark_rows"] == examples["reference_rows"] == counts["examples"]
    for c in (vocab, examples):
        assert c["only_spark"] == c["only_reference"] == c["differing"] == 0, c
    _, examples = compare(tmp_path / "changed")
    # a 2-day horizon moves the plan (more cutoffs, other splits) and shortens the label windows
    assert examples["only_reference"] > 0 and examples["differing"] > 0
    assert examples.get("differing.label_purchase", 0) > 0
