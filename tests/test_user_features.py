"""User features: hand-computed values, point-in-time isolation, table constraints."""
from __future__ import annotations

import datetime as dt

import pytest

from demandlake import lake, schemas
from demandlake.features.user_features import build_user_features
from demandlake.pipeline_transform import run_features

UTC = dt.timezone.utc
SNAPSHOT = dt.date(2024, 3, 10)


def ev(eid, user, when, etype="view", item=None, cat=None, price=None, qty=None, query=None,
       brand=None):
    t = dt.datetime.fromisoformat(when).replace(tzinfo=UTC)
    return (eid, user, None, etype, item, cat, brand, price, qty, query, t, None, "test", "inline",
            f"h-{eid}", t.date())


def review(rid, user, day):
    d = dt.date.fromisoformat(day)
    return (rid, user, "i1", "c1", 5, None, None, "fine", "en",
            dt.datetime.combine(d, dt.time(12), tzinfo=UTC), None, "test", "inline", f"h-{rid}", d)


EVENTS = [
    # user a: 2024-03-01 is a Friday, 03-09 a Saturday, 03-10 a Sunday
    ev("a1", "a", "2024-03-01 09:00:00", "view", "i1", "c1", 10.0, brand="b1"),
    ev("a2", "a", "2024-03-01 09:05:00", "cart", "i1", "c1", 10.0, 1, brand="b1"),
    ev("a3", "a", "2024-03-01 09:10:00", "purchase", "i1", "c1", 10.0, 2, brand="b1"),
    ev("a4", "a", "2024-03-09 20:00:00", "view", "i2", "c2", 40.0, brand="b2"),
    ev("a5", "a", "2024-03-09 20:10:00", "cart", "i2", "c2", 40.0, brand="b2"),
    ev("a6", "a", "2024-03-10 08:00:00", "search", query="  Red Shoes "),
    # user b: three views of an expensive c1 item, no brand
    ev("b1", "b", "2024-03-08 12:00:00", "view", "i3", "c1", 30.0),
    ev("b2", "b", "2024-03-08 12:05:00", "view", "i3", "c1", 30.0),
    ev("b3", "b", "2024-03-08 12:10:00", "view", "i3", "c1", 30.0),
]
AFTER_SNAPSHOT = [
    ev("a7", "a", "2024-03-11 10:00:00", "purchase", "i2", "c2", 40.0),
    ev("c1", "c", "2024-03-11 10:00:00", "view", "i9", "c9", 5.0),
]
REVIEWS = [review("r1", "a", "2024-03-05"), review("r2", "a", "2024-03-12")]


def hours(**counts):
    return [counts.get(f"h{h}", 0) for h in range(24)]


def test_features_match_hand_computed_values_for_each_user(spark):
    events = spark.createDataFrame(EVENTS + AFTER_SNAPSHOT, schemas.BRONZE_EVENTS)
    reviews = spark.createDataFrame(REVIEWS, schemas.BRONZE_REVIEWS)
    sentiment = spark.createDataFrame([("a", 0.75), ("a", 0.25)],
                                      "user_id string, sentiment double")
    got = build_user_features(events, reviews, SNAPSHOT, windows_days=[10, 2], top_k=2,
                              timezone="UTC", gap_minutes=30, sentiment=sentiment)
    expected = spark.createDataFrame([
        # c1 median over the lookback is 20 (10, 10, 10, 30, 30, 30): a's purchase at 10 is below.
        # a's sessions: 03-01 (cart, bought), 03-09 (cart, not bought), 03-10 (search).
        ("a", SNAPSHOT, dt.date(2024, 3, 1), 9, 0, 9,
         {2: 3, 10: 6}, {2: 0, 10: 1}, {2: 0.0, 10: 20.0},
         3, 1 / 3, 0.5, 20.0, 10.0, 25.0, 1.0,
         [("c1", 9 / 13), ("c2", 4 / 13)], [("b1", 9 / 13), ("b2", 4 / 13)],
         hours(h8=1, h9=3, h20=2), [0, 0, 0, 0, 3, 2, 1], ["red shoes"], 1, 0.5),
        ("b", SNAPSHOT, dt.date(2024, 3, 8), 2, 2, None,
         {2: 0, 10: 3}, {2: 0, 10: 0}, {2: 0.0, 10: 0.0},
         1, 0.0, None, None, None, 30.0, None,
         [("c1", 1.0)], [], hours(h12=3), [0, 0, 0, 0, 3, 0, 0], [], 0, None),
    ], schemas.GOLD_USER_FEATURES)
    # (maps cannot be sorted by Spark, so rows are compared in Python, ordered by user)
    assert got.columns == expected.columns
    assert got.orderBy("user_id").collect() == expected.orderBy("user_id").collect()


def test_build_user_features_rejects_empty_windows_and_non_positive_top_k(spark):
    events = spark.createDataFrame(EVENTS, schemas.BRONZE_EVENTS)
    reviews = spark.createDataFrame([], schemas.BRONZE_REVIEWS)
    with pytest.raises(ValueError):
        build_user_features(events, reviews, SNAPSHOT, windows_days=[])
    with pytest.raises(ValueError):
        build_user_features(events, reviews, SNAPSHOT, windows_days=[0, 7])
    with pytest.raises(ValueError):
        build_user_features(events, reviews, SNAPSHOT, top_k=0)


def load_bronze(spark, cfg, events=EVENTS, reviews=REVIEWS) -> None:
    """MERGE the hand-made events and reviews into the lake's bronze tables."""
    lake.merge_insert(spark, cfg, "bronze.events",
                      spark.createDataFrame(events, schemas.BRONZE_EVENTS), ["event_id"])
    lake.merge_insert(spark, cfg, "bronze.reviews",
                      spark.createDataFrame(reviews, schemas.BRONZE_REVIEWS), ["review_id"])


def test_events_after_the_snapshot_change_nothing_in_a_recomputed_snapshot(spark, cfg):
    cfg = cfg.with_overrides({"features.windows_days": [2, 10], "features.top_k": 2})
    load_bronze(spark, cfg)
    first = run_features(spark, cfg, SNAPSHOT)
    before = sorted(lake.read(spark, cfg, "gold.user_features").collect())

    load_bronze(spark, cfg, AFTER_SNAPSHOT, [])
    second = run_features(spark, cfg, SNAPSHOT)
    after = sorted(lake.read(spark, cfg, "gold.user_features").collect())

    assert first == second == {"users": 2}
    assert after == before


def test_a_conversion_rate_outside_zero_to_one_is_rejected_by_the_table(spark, cfg):
    good = build_user_features(spark.createDataFrame(EVENTS[6:], schemas.BRONZE_EVENTS),
                               spark.createDataFrame([], schemas.BRONZE_REVIEWS), SNAPSHOT)
    bad = good.withColumn("conversion_rate", good["conversion_rate"] + 1.5)
    with pytest.raises(Exception, match="(?i)constraint|CHECK"):
        lake.overwrite_where(spark, cfg, "gold.user_features", bad,
                             f"snapshot_date = DATE'{SNAPSHOT.isoformat()}'")
