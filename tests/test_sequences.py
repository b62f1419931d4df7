"""Sequence examples and vocabularies: cutoff plan, vocabulary ids, padding, OOV, labels."""
from __future__ import annotations

import collections
import csv
import datetime as dt
import math

import pytest
from chispa import assert_df_equality

from demandlake import lake, schemas
from demandlake.features.sequences import (
    build_examples, build_vocabularies, plan_cutoffs,
)
from demandlake.pipeline.transform import build_scoring_sequences, run_sequence_examples

UTC = dt.timezone.utc
D = dt.date
SPLIT = {"train": 0.6, "validation": 0.2, "test": 0.2}


def ev(eid, user, when, etype="view", item=None, cat=None, price=None, qty=None):
    t = dt.datetime.fromisoformat(when).replace(tzinfo=UTC)
    return (eid, user, None, etype, item, cat, None, price, qty, None, t, None, "test", "inline",
            f"h-{eid}", t.date())


def vocab_rows(built: dt.date, items=(), categories=()):
    """A hand-written vocabulary: tokens numbered from 2 in the order given."""
    fixed = ["view", "cart", "remove_from_cart", "purchase", "search", "fav"]
    rows = []
    for name, tokens in (("item", items), ("category", categories), ("event_type", fixed)):
        rows += [(name, "<pad>", 0, 0, built), (name, "<oov>", 1, 0, built)]
        rows += [(name, t, i + 2, 1, built) for i, t in enumerate(tokens)]
    return rows


def test_plan_cutoffs_orders_splits_in_time_and_leaves_a_horizon_between_them():
    plan = plan_cutoffs(D(2024, 3, 1), D(2024, 3, 20), step=1, horizon=2, split_fractions=SPLIT)
    # 18 candidates (03-02 .. 03-19, label window inside the data). One is left out before each
    # later split (03-12, 03-16: their labels would reach it); the 16 left go 60/20/20 -> 10/3/3.
    days = lambda a, b: [D(2024, 3, d) for d in range(a, b + 1)]  # noqa: E731
    expected = ([(d, "train") for d in days(2, 11)] + [(d, "validation") for d in days(13, 15)]
                + [(d, "test") for d in days(17, 19)])
    assert plan == expected


@pytest.mark.parametrize("days,horizon,step,expected", [
    (28, 7, 1, {"train": 5, "validation": 2, "test": 2}),  # 21 candidates, 2 gaps of 6
    (90, 7, 1, {"train": 43, "validation": 14, "test": 14}),  # 83 - 12 = 71 kept
    (28, 7, 3, {"train": 1, "validation": 1, "test": 1}),  # 7 - 2 gaps of 2: 2/0/1 -> 1/1/1
    (12, 7, 1, {"train": 5}),  # 5 candidates: no room for a gap of 6, train only
    (20, 7, 1, {"train": 5, "validation": 2}),  # 13 candidates: room for one gap (test goes)
])
def test_every_split_gets_its_share_after_the_gaps(days, horizon, step, expected):
    first = D(2024, 1, 1)
    plan = plan_cutoffs(first, first + dt.timedelta(days=days - 1), step=step, horizon=horizon,
                        split_fractions=SPLIT)
    got = {s: sum(1 for _, x in plan if x == s) for s in ("train", "validation", "test")}
    assert {s: n for s, n in got.items() if n} == expected
    h = dt.timedelta(days=horizon)
    order = [x for _, x in plan]
    assert order == sorted(order, key=["train", "validation", "test"].index)
    for a, b in zip(plan, plan[1:]):
        if a[1] != b[1]:  # no label window of a split reaches the next split
            assert a[0] + h <= b[0]


def test_planned_label_periods_of_the_splits_do_not_overlap():
    plan = plan_cutoffs(D(2024, 1, 1), D(2024, 4, 30), step=3, horizon=7, split_fractions=SPLIT)
    h = dt.timedelta(days=7)
    by_split = {s: [c for c, x in plan if x == s] for s in ("train", "validation", "test")}
    assert all(by_split.values())
    assert max(by_split["train"]) + h <= min(by_split["validation"])
    assert max(by_split["validation"]) + h <= min(by_split["test"])
    assert max(by_split["test"]) + h <= D(2024, 5, 1)


@pytest.mark.parametrize("kwargs", [
    {"step": 0}, {"horizon": 0}, {"first_date": D(2024, 4, 1)},
    {"split_fractions": {"train": -1, "test": 1}}, {"split_fractions": {"train": 0}},
    {"split_fractions": {"training": 1}},
])
def test_plan_cutoffs_rejects_bad_arguments(kwargs):
    args = {"first_date": D(2024, 3, 1), "last_date": D(2024, 3, 20), "step": 1, "horizon": 2,
            "split_fractions": SPLIT, **kwargs}
    with pytest.raises(ValueError):
        plan_cutoffs(**args)


def test_vocabulary_ids_follow_count_then_token_within_the_training_window_only(spark):
    events = spark.createDataFrame([
        ev("1", "u1", "2024-03-01 10:00:00", "view", "x", "c1"),
        ev("2", "u1", "2024-03-01 10:01:00", "view", "x", "c1"),
        ev("3", "u2", "2024-03-02 10:00:00", "cart", "x", "c1"),
        ev("4", "u2", "2024-03-02 10:01:00", "view", "y", "c1"),
        ev("5", "u2", "2024-03-03 10:00:00", "purchase", "y", "c1"),
        ev("6", "u1", "2024-03-04 10:00:00", "view", "z", "c2"),
        ev("7", "u1", "2024-03-04 10:01:00", "fav", "z", "c2"),
        ev("8", "u1", "2024-03-05 10:00:00", "view", "w", "c1"),   # once: below min count 2
        ev("9", "u1", "2024-03-05 10:01:00", "search"),
        *[ev(f"v{i}", "u2", f"2024-03-06 10:0{i}:00", "view", "v", "c3") for i in range(5)],
    ], schemas.BRONZE_EVENTS)
    got = build_vocabularies(events, D(2024, 3, 5), min_item_count=2)
    b = D(2024, 3, 5)
    expected = spark.createDataFrame([
        ("item", "<pad>", 0, 0, b), ("item", "<oov>", 1, 1, b),
        ("item", "x", 2, 3, b), ("item", "y", 3, 2, b), ("item", "z", 4, 2, b),
        ("category", "<pad>", 0, 0, b), ("category", "<oov>", 1, 0, b),
        ("category", "c1", 2, 6, b), ("category", "c2", 3, 2, b),
        ("event_type", "<pad>", 0, 0, b), ("event_type", "<oov>", 1, 0, b),
        ("event_type", "view", 2, 5, b), ("event_type", "cart", 3, 1, b),
        ("event_type", "remove_from_cart", 4, 0, b), ("event_type", "purchase", 5, 1, b),
        ("event_type", "search", 6, 1, b), ("event_type", "fav", 7, 1, b),
    ], schemas.GOLD_VOCABULARIES)
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True,
                       ignore_metadata=True)


def _f32(values):
    """The float32 values Spark stores for ``array<float>``."""
    import struct
    return [struct.unpack("f", struct.pack("f", v))[0] for v in values]


def test_unknown_tokens_map_to_oov_and_short_histories_are_left_padded(spark):
    vocab = spark.createDataFrame(vocab_rows(D(2024, 3, 7), items=["x"], categories=["c1"]),
                                  schemas.GOLD_VOCABULARIES)
    events = spark.createDataFrame([
        ev("p1", "u1", "2024-03-08 10:00:00", "view", "x", "c1", price=15.0),
        ev("p2", "u1", "2024-03-08 10:01:00", "view", "new-item", "c9"),
        ev("p3", "u1", "2024-03-09 10:03:00", "search"),
        # on the cutoff date: a label, never an input
        ev("p4", "u1", "2024-03-10 09:00:00", "purchase", "x", "c1", price=25.0, qty=2),
    ], schemas.BRONZE_EVENTS)
    got = build_examples(events, vocab, [(D(2024, 3, 10), "train")], max_length=5, horizon_days=3,
                         price_buckets=[0, 10, 20])
    expected = spark.createDataFrame([(
        "u1", D(2024, 3, 10), "train", 3,
        [0, 0, 2, 1, 1], [0, 0, 2, 1, 1], [0, 0, 2, 2, 6],
        _f32([0.0, 0.0, 0.0, math.log1p(60), math.log1p(86_520)]),
        [0, 0, 3, 1, 1],
        _f32([math.log1p(3), 0.0, 2.0, 1.0, 0.0]),
        1, [2],
    )], schemas.GOLD_SEQUENCE_EXAMPLES)
    assert_df_equality(got, expected, ignore_nullable=True, ignore_metadata=True)


def test_only_the_last_max_length_events_are_kept_and_short_histories_get_no_example(spark):
    vocab = spark.createDataFrame(vocab_rows(D(2024, 3, 7), items=["x", "y"]),
                                  schemas.GOLD_VOCABULARIES)
    events = spark.createDataFrame([
        ev("q1", "u2", "2024-03-09 10:00:00", "view", "x"),
        ev("q2", "u2", "2024-03-09 10:01:00", "view", "x"),
        ev("q3", "u2", "2024-03-09 10:02:00", "view", "y", price=500.0),
        ev("q4", "u2", "2024-03-09 10:04:00", "cart", "y", price=5.0),
        ev("r1", "u3", "2024-03-09 10:00:00", "view", "x"),      # one event < min_events
    ], schemas.BRONZE_EVENTS)
    got = build_examples(events, vocab, [(D(2024, 3, 10), "validation")], max_length=2,
                         horizon_days=1, price_buckets=[0, 10, 20], min_events=2)
    expected = spark.createDataFrame([(
        "u2", D(2024, 3, 10), "validation", 2,
        [3, 3], [1, 1], [2, 3], _f32([0.0, math.log1p(120)]), [4, 2],
        _f32([math.log1p(4), 0.0, 1.0, 1.0, 0.0]), 0, [],
    )], schemas.GOLD_SEQUENCE_EXAMPLES)
    assert_df_equality(got, expected, ignore_nullable=True, ignore_metadata=True)


def test_labels_come_only_from_purchases_inside_the_horizon_after_the_cutoff(spark):
    vocab = spark.createDataFrame(vocab_rows(D(2024, 3, 7), items=["x"], categories=["c1", "c2"]),
                                  schemas.GOLD_VOCABULARIES)
    events = spark.createDataFrame([
        ev("s1", "u4", "2024-03-09 10:00:00", "purchase", "x", "c1"),   # before the first cutoff
        ev("s2", "u4", "2024-03-12 10:00:00", "purchase", "x", "c2"),   # inside [03-10, 03-13)
        ev("s3", "u4", "2024-03-13 00:00:01", "purchase", "x", "c1"),   # inside [03-13, 03-16)
        ev("t1", "u5", "2024-03-09 10:00:00", "view", "x", "c1"),
    ], schemas.BRONZE_EVENTS)
    got = build_examples(events, vocab, [(D(2024, 3, 10), "train"), (D(2024, 3, 13), "test")],
                         max_length=4, horizon_days=3, price_buckets=[0, 10])
    cols = ["user_id", "cutoff_date", "split", "seq_len", "label_purchase", "label_categories"]
    expected = spark.createDataFrame([
        ("u4", D(2024, 3, 10), "train", 1, 1, [3]),
        ("u4", D(2024, 3, 13), "test", 2, 1, [2]),
        ("u5", D(2024, 3, 10), "train", 1, 0, []),
        ("u5", D(2024, 3, 13), "test", 1, 0, []),
    ], "user_id string, cutoff_date date, split string, seq_len int, label_purchase int, "
       "label_categories array<int>")
    assert_df_equality(got.select(*cols), expected, ignore_row_order=True, ignore_nullable=True,
                       ignore_metadata=True)


def test_build_examples_rejects_unknown_splits_and_unsorted_price_edges(spark):
    events = spark.createDataFrame([], schemas.BRONZE_EVENTS)
    vocab = spark.createDataFrame([], schemas.GOLD_VOCABULARIES)
    ok = {"max_length": 5, "horizon_days": 1, "price_buckets": [0, 10]}
    with pytest.raises(ValueError):
        build_examples(events, vocab, [(D(2024, 3, 1), "holdout")], **ok)
    with pytest.raises(ValueError):
        build_examples(events, vocab, [], **ok)
    with pytest.raises(ValueError):
        build_examples(events, vocab, [(D(2024, 3, 1), "train")], max_length=5, horizon_days=1,
                       price_buckets=[10, 0])


def test_training_examples_and_scoring_sequences_use_the_training_window_vocabulary(spark, cfg):
    cfg = cfg.with_overrides({"sequences.horizon_days": 1, "sequences.min_events": 1,
                              "sequences.max_length": 3, "sequences.min_item_count": 1})
    rows = [ev(f"a{d}", "u1", f"2024-03-0{d} 10:00:00", "purchase" if d % 2 else "view", "x", "c1")
            for d in range(1, 7)]
    rows += [ev("b6", "u2", "2024-03-06 11:00:00", "view", "late-item", "c1")]
    lake.merge_insert(spark, cfg, "bronze.events",
                      spark.createDataFrame(rows, schemas.BRONZE_EVENTS), ["event_id"])
    counts = run_sequence_examples(spark, cfg)
    stored = lake.read(spark, cfg, "gold.sequence_examples")
    vocab = lake.read(spark, cfg, "gold.vocabularies")
    scoring = build_scoring_sequences(spark, cfg, D(2024, 3, 6))

    # 5 cutoffs 03-02 .. 03-06: 3 train, 1 validation, 1 test; u2 only has history for scoring
    assert sorted((r[0], r[1]) for r in stored.select("cutoff_date", "split").collect()) == [
        (D(2024, 3, 2), "train"), (D(2024, 3, 3), "train"), (D(2024, 3, 4), "train"),
        (D(2024, 3, 5), "validation"), (D(2024, 3, 6), "test")]
    assert counts["examples_train"] == 3 and counts["positives_train"] == 1
    assert {r[0] for r in vocab.select("built_through").distinct().collect()} == {D(2024, 3, 4)}
    scored = scoring.select("user_id", "cutoff_date", "split", "item_ids", "label_purchase",
                            "label_categories").collect()
    assert sorted(tuple(r) for r in scored) == [
        ("u1", D(2024, 3, 7), "score", [2, 2, 2], None, None),
        ("u2", D(2024, 3, 7), "score", [0, 0, 1], None, None)]


@pytest.mark.real
def test_sessions_features_and_examples_are_sensible_on_the_real_taobao_sample(spark, cfg,
                                                                              real_data):
    from pyspark.sql import functions as F

    from demandlake.ingest.bronze import ingest_source
    from demandlake.pipeline.transform import run_features, run_sessions

    # The sample spans 9 days (2017-11-25 .. 12-03, UTC+8): a 1-day horizon leaves 8 cutoffs.
    cfg = cfg.with_overrides({"lake.timezone": "Asia/Shanghai", "sequences.horizon_days": 1})
    run_date = D(2017, 12, 3)
    sample = str(real_data / "taobao_user_behavior_sample.csv")
    ingested = ingest_source(spark, cfg, "taobao", sample, run_date=run_date,
                             timezone="Asia/Shanghai")
    sessions = run_sessions(spark, cfg, run_date, full=True)
    features = run_features(spark, cfg, run_date)
    examples = run_sequence_examples(spark, cfg)

    events = lake.read(spark, cfg, "bronze.events")
    users = events.select("user_id").distinct().count()
    stored = lake.read(spark, cfg, "gold.sequence_examples")
    cutoffs = {s: [r[0] for r in stored.where(F.col("split") == s).select("cutoff_date").distinct()
                   .collect()] for s in ("train", "validation", "test")}
    assert ingested["new"] == 52_229 and users == 489
    # Sessions by the documented rule, counted from the raw file: per user in time order, a gap
    # of more than sessions.gap_minutes starts a new one (all 52,229 lines are distinct events).
    times = collections.defaultdict(list)
    with open(sample, newline="") as f:
        for user, _, _, _, epoch_s in csv.reader(f):
            times[user].append(int(epoch_s))
    gap_s = 60 * float(cfg["sessions.gap_minutes"])
    want = sum(1 + sum(b - a > gap_s for a, b in zip(ts, ts[1:]))
               for ts in map(sorted, times.values()))
    assert (len(times), sessions["sessions"]) == (users, want)
    assert features["users"] == users
    assert 0 < examples["positives_train"] < examples["examples_train"]
    assert examples["examples_validation"] > 0 and examples["examples_test"] > 0
    assert max(cutoffs["train"]) < min(cutoffs["validation"])
    assert max(cutoffs["validation"]) < min(cutoffs["test"])
    feats = lake.read(spark, cfg, "gold.user_features")
    assert feats.where(F.size("top_categories") == 0).count() == 0


def test_propensity_features_read_counts_recencies_repeats_and_the_last_session(spark):
    from demandlake.features.propensity import NEVER_SECONDS, PROPENSITY_FEATURES, \
        propensity_features

    g = math.log1p
    # Oldest first, one pad: view 5, view 5 (+60 s), cart 5 (+120 s), view 6 (+2 h: a new
    # session), fav 6 (+30 s), cart 7 in an unknown category (+10 s), view 6 (+20 s).
    rows = [("u1", 7, [0, 5, 5, 5, 6, 6, 7, 6], [0, 2, 2, 2, 3, 3, 1, 3],
             [0, 2, 2, 3, 2, 7, 3, 2], [0.0, 0.0, g(60), g(120), g(7200), g(30), g(10), g(20)],
             [1.0, 2.0, 3.0, 4.0, 5.0]),
            ("u2", 1, [0] * 7 + [9], [0] * 7 + [4], [0] * 7 + [5], [0.0] * 8,
             [0.0, 0.0, 1.0, 1.0, 0.0])]
    df = spark.createDataFrame(rows, "user_id string, seq_len int, item_ids array<int>, "
                               "category_ids array<int>, event_type_ids array<int>, "
                               "time_gaps array<float>, static_features array<float>")
    out = {r["user_id"]: r.asDict() for r in
           df.transform(propensity_features(8, 30)).collect()}
    u1, u2 = out["u1"], out["u2"]
    assert set(PROPENSITY_FEATURES) <= set(u1)
    assert [u1[k] for k in ("log1p_n_events", "log1p_revenue")] == [1.0, 5.0]
    assert [u1[f"n_{t}"] for t in ("view", "cart", "remove_from_cart", "purchase", "search",
                                   "fav")] == [4, 2, 0, 0, 0, 1]
    assert (u1["events_since_last_cart"], u1["events_since_last_fav"],
            u1["events_since_last_purchase"]) == (1, 2, 9)
    assert u1["log1p_seconds_since_last_cart"] == pytest.approx(g(20), rel=1e-5)
    assert u1["log1p_seconds_since_last_fav"] == pytest.approx(g(30), rel=1e-5)
    assert u1["log1p_seconds_since_last_purchase"] == pytest.approx(g(NEVER_SECONDS))
    assert (u1["repeat_item_views"], u1["max_views_one_item"], u1["carted_not_bought"],
            u1["distinct_categories"]) == (2, 2, 2, 2)
    assert (u1["n_sessions"], u1["last_session_events"], u1["last_session_funnel"]) == (2, 4, 2)
    assert (u2["n_purchase"], u2["events_since_last_purchase"],
            u2["log1p_seconds_since_last_purchase"], u2["carted_not_bought"]) == (1, 0, 0.0, 0)
    assert (u2["n_sessions"], u2["last_session_events"], u2["last_session_funnel"]) == (1, 1, 3)
