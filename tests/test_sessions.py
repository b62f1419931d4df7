"""Sessions: gap splitting, per-session facts, and the late-event MERGE of run_sessions."""
from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from chispa import assert_df_equality

from demandlake import lake, schemas
from demandlake.pipeline.transform import run_sessions
from demandlake.sessions import sessionize

UTC = dt.timezone.utc


def ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def ev(eid, user, when, etype="view", item=None, cat=None, price=None, qty=None, sid=None,
       query=None, brand=None, tz_hours=0):
    """One bronze.events row; event_date is the local date at UTC+tz_hours."""
    t = ts(when)
    local = (t + dt.timedelta(hours=tz_hours)).date()
    return (eid, user, sid, etype, item, cat, brand, price, qty, query, t, None, "test", "inline",
            f"h-{eid}", local)


def sid(user: str, start: str) -> str:
    micros = int(ts(start).timestamp()) * 1_000_000
    return hashlib.sha256(f"{user}|{micros}".encode()).hexdigest()


def session(user, start, end, n_events, counts, items, cats, cart_adds=0, purchases=0, revenue=0.0,
            source_id=None, distinct_items=None, distinct_cats=None, date=None):
    """One expected silver.sessions row.

    counts = (views, carts, removes, purchases, searches, favs)."""
    duration = (ts(end) - ts(start)).total_seconds()
    return (sid(user, start), user, source_id, ts(start), ts(end), duration, n_events, *counts,
            len(set(items)) if distinct_items is None else distinct_items,
            len(set(cats)) if distinct_cats is None else distinct_cats,
            items, cats, cart_adds, purchases, revenue, counts[3] > 0,
            items[0] if items else None, items[-1] if items else None,
            date or ts(start).date())


EVENTS = [
    ev("e1", "u1", "2024-03-01 10:00:00", "view", "A", "c1", 10.0, sid="s-1"),
    ev("e2", "u1", "2024-03-01 10:10:00", "cart", "A", "c1", 10.0, 2, sid="s-1"),
    # exactly the 30-minute gap: still the same session
    ev("e3", "u1", "2024-03-01 10:40:00", "purchase", "A", "c1", 10.0, 2),
    # 40 minutes later: a new session
    ev("e4", "u1", "2024-03-01 11:20:00", "view", "B", "c2"),
    ev("e5", "u1", "2024-03-01 11:25:00", "search", query="shoes"),
    # crosses midnight: one session, dated by its start
    ev("f1", "u2", "2024-03-01 23:50:00", "view", "C", "c1"),
    ev("f2", "u2", "2024-03-02 00:10:00", "purchase", "D", "c1"),
]


def test_sessionize_splits_on_gaps_longer_than_the_threshold_and_summarizes_each_session(spark):
    got = spark.createDataFrame(EVENTS, schemas.BRONZE_EVENTS).transform(sessionize(30, 50, "UTC"))
    expected = spark.createDataFrame([
        session("u1", "2024-03-01 10:00:00", "2024-03-01 10:40:00", 3, (1, 1, 0, 1, 0, 0),
                ["A", "A", "A"], ["c1", "c1", "c1"], cart_adds=2, purchases=2, revenue=20.0,
                source_id="s-1"),
        session("u1", "2024-03-01 11:20:00", "2024-03-01 11:25:00", 2, (1, 0, 0, 0, 1, 0),
                ["B"], ["c2"]),
        # a purchase without a price: revenue unknown, not 0
        session("u2", "2024-03-01 23:50:00", "2024-03-02 00:10:00", 2, (1, 0, 0, 1, 0, 0),
                ["C", "D"], ["c1", "c1"], purchases=1, revenue=None),
    ], schemas.SILVER_SESSIONS)
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True,
                        ignore_metadata=True)


def test_session_date_is_the_local_date_of_the_start_in_the_lake_time_zone(spark):
    rows = [ev("g1", "u3", "2024-03-01 17:00:00", "view", "A", "c1", tz_hours=8)]
    got = (spark.createDataFrame(rows, schemas.BRONZE_EVENTS)
           .transform(sessionize(30, 50, "Asia/Shanghai")).select("session_date").collect())
    assert [r[0] for r in got] == [dt.date(2024, 3, 2)]


def test_item_and_category_sequences_keep_only_the_most_recent_values(spark):
    rows = [ev(f"h{i}", "u4", f"2024-03-01 10:0{i}:00", "view", f"I{i}", f"c{i}") for i in range(4)]
    got = (spark.createDataFrame(rows, schemas.BRONZE_EVENTS).transform(sessionize(30, 2, "UTC"))
           .select("item_sequence", "category_sequence", "landing_item", "exit_item").collect())
    assert [tuple(r) for r in got] == [(["I2", "I3"], ["c2", "c3"], "I0", "I3")]


@pytest.mark.parametrize("gap, length", [(0, 50), (-5, 50), (30, 0)])
def test_sessionize_rejects_a_non_positive_gap_or_sequence_length(gap, length):
    with pytest.raises(ValueError):
        sessionize(gap, length, "UTC")


def test_late_events_rerun_gives_the_same_table_as_a_recomputation_from_scratch(spark, cfg):
    early = [
        *EVENTS,
        ev("k1", "u5", "2024-03-03 09:00:00", "view", "E", "c3"),   # untouched user and date
        ev("m1", "u1", "2024-03-02 10:00:00", "view", "A", "c1"),   # u1 the next day
    ]
    late = [
        # joins u1's two sessions of 2024-03-01 into one (the 11:20 session must disappear)
        ev("e9", "u1", "2024-03-01 11:00:00", "fav", "B", "c2"),
        # a new user on the late date, crossing midnight into 03-02
        ev("n1", "u6", "2024-03-01 23:55:00", "view", "F", "c4"),
        ev("n2", "u6", "2024-03-02 00:05:00", "cart", "F", "c4"),
    ]
    bronze = lambda rows: spark.createDataFrame(rows, schemas.BRONZE_EVENTS)  # noqa: E731
    lake.merge_insert(spark, cfg, "bronze.events", bronze(early), ["event_id"])
    first = run_sessions(spark, cfg, dt.date(2024, 3, 3))
    before = lake.read(spark, cfg, "silver.sessions").collect()

    lake.merge_insert(spark, cfg, "bronze.events", bronze(late), ["event_id"])
    counts = run_sessions(spark, cfg, dt.date(2024, 3, 4), dates=[dt.date(2024, 3, 1)])

    got = lake.read(spark, cfg, "silver.sessions")
    expected = bronze(early + late).transform(sessionize(30, 50, "UTC"))
    assert first["full"] == 1 and counts["full"] == 0
    assert counts["deleted"] == 1 and counts["affected_users"] == 3
    assert sorted(got.collect()) != sorted(before)
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True,
                        ignore_metadata=True)
