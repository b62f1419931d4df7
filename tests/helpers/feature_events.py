"""Hand-made bronze rows of two users around ``SNAPSHOT`` (2024-03-10), with hand-computed
features in tests/test_user_features.py; tests/test_quality.py and tests/test_maintenance.py load
the same rows."""
from __future__ import annotations

import datetime as dt

from demandlake import lake, schemas

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


def load_bronze(spark, cfg, events=EVENTS, reviews=REVIEWS) -> None:
    """MERGE the hand-made events and reviews into the lake's bronze tables."""
    lake.merge_insert(spark, cfg, "bronze.events",
                      spark.createDataFrame(events, schemas.BRONZE_EVENTS), ["event_id"])
    lake.merge_insert(spark, cfg, "bronze.reviews",
                      spark.createDataFrame(reviews, schemas.BRONZE_REVIEWS), ["review_id"])
