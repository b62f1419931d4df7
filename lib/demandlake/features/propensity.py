"""Purchase-propensity features of a sequence example, for the Spark ML model family.

One transform for training and scoring: it reads a ``gold.sequence_examples`` row (the training
splits, or the ``score`` rows of ``pipeline.transform.build_scoring_sequences``) and adds one
double column per name in :data:`PROPENSITY_FEATURES`. Nothing depends on the vocabulary's
item or category ids beyond equality (event types have fixed ids,
``features.sequences.EVENT_TYPE_IDS``), so a model fitted on one version of gold.vocabularies
scores sequences coded with another.

The inputs hold the user's last ``sequences.max_length`` events (left-padded with 0, most recent
last); counts below are over those events, and ``static_features`` cover the whole history before
the cutoff. "Since the last X" is counted from the user's most recent event; absent, it is
``max_length + 1`` events and ``log1p`` of :data:`NEVER_SECONDS`.
"""
from __future__ import annotations

import math

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from demandlake.features.sequences import EVENT_TYPE_IDS, OOV_ID, STATIC_FEATURES

COUNTED_TYPES = ("view", "cart", "remove_from_cart", "purchase", "search", "fav")
RECENCY_TYPES = ("cart", "purchase", "fav")
NEVER_SECONDS = 1e9  # about 32 years: "never" in the recency features

PROPENSITY_FEATURES: tuple[str, ...] = (
    *STATIC_FEATURES,
    "seq_len",
    *(f"n_{t}" for t in COUNTED_TYPES),
    *(f"events_since_last_{t}" for t in RECENCY_TYPES),
    *(f"log1p_seconds_since_last_{t}" for t in RECENCY_TYPES),
    "repeat_item_views",      # views of an item already viewed earlier in the sequence
    "max_views_one_item",     # the most views any one item got
    "carted_not_bought",      # distinct items carted and not bought in the sequence
    "distinct_categories",    # distinct known categories in the sequence
    "n_sessions",             # sessions in the sequence (a gap over the session gap starts one)
    "last_session_events",    # events in the most recent session
    "last_session_funnel",    # its deepest step: 0 none, 1 view, 2 cart or fav, 3 purchase
)


def _count(arr: str, value: int) -> Column:
    return F.size(F.filter(F.col(arr), lambda x: x == F.lit(value)))


def _items_of(type_id: int) -> Column:
    """Known item ids (not padding, not OOV) of the events of one type, oldest first."""
    pairs = F.arrays_zip(F.col("item_ids").alias("i"), F.col("event_type_ids").alias("t"))
    return F.transform(F.filter(pairs, lambda p: (p["t"] == F.lit(type_id))
                                & (p["i"] > F.lit(OOV_ID))), lambda p: p["i"])


def _since_last(type_id: int, max_length: int) -> tuple[Column, Column]:
    """(events after the last event of the type, log1p seconds from it to the last event)."""
    rev_types = F.reverse(F.col("event_type_ids"))
    pos = F.array_position(rev_types, F.lit(type_id))  # 1 = the most recent event; 0 = none
    # time_gaps[i] is log1p(seconds since event i-1): the seconds from the event at reversed
    # position k to the last event are the sum of the first k - 1 reversed gaps.
    gaps_after = F.slice(F.reverse(F.col("time_gaps")), F.lit(1), F.greatest(pos - 1, F.lit(0)))
    seconds = F.aggregate(gaps_after, F.lit(0.0).cast("double"),
                          lambda acc, g: acc + F.expm1(g.cast("double")))
    events = F.when(pos > 0, pos - 1).otherwise(F.lit(max_length + 1))
    return events.cast("double"), F.when(pos > 0, F.log1p(seconds)).otherwise(
        F.lit(math.log1p(NEVER_SECONDS)))


def propensity_features(max_length: int, session_gap_minutes: float):
    """``DataFrame -> DataFrame``: sequence examples plus the :data:`PROPENSITY_FEATURES`
    columns (doubles; ``seq_len`` is the input's own).

    Args:
        max_length: ``sequences.max_length`` (the "never" value of the event recencies).
        session_gap_minutes: ``sessions.gap_minutes``; a longer gap between two events of the
            sequence starts a new session.
    """
    ids = EVENT_TYPE_IDS
    gap = F.lit(math.log1p(float(session_gap_minutes) * 60.0))

    def transform(df: DataFrame) -> DataFrame:
        cols: dict[str, Column] = {
            name: F.col("static_features")[i] for i, name in enumerate(STATIC_FEATURES)}
        cols["seq_len"] = F.col("seq_len")
        for t in COUNTED_TYPES:
            cols[f"n_{t}"] = _count("event_type_ids", ids[t])
        for t in RECENCY_TYPES:
            cols[f"events_since_last_{t}"], cols[f"log1p_seconds_since_last_{t}"] = \
                _since_last(ids[t], max_length)
        viewed = _items_of(ids["view"])
        cols["repeat_item_views"] = F.size(viewed) - F.size(F.array_distinct(viewed))
        cols["max_views_one_item"] = F.aggregate(
            F.transform(F.array_distinct(viewed),
                        lambda i: F.size(F.filter(viewed, lambda j: j == i))),
            F.lit(0), lambda acc, n: F.greatest(acc, n))
        cols["carted_not_bought"] = F.size(F.array_except(
            F.array_distinct(_items_of(ids["cart"])), _items_of(ids["purchase"])))
        cols["distinct_categories"] = F.size(F.array_distinct(
            F.filter(F.col("category_ids"), lambda c: c > F.lit(OOV_ID))))
        # Real events are the last seq_len positions; the first of them has gap 0.
        real_gaps = F.slice(F.col("time_gaps"), -F.greatest(F.col("seq_len"), F.lit(1)),
                            F.greatest(F.col("seq_len"), F.lit(1)))
        starts = F.transform(real_gaps, lambda g: g > gap)
        cols["n_sessions"] = F.size(F.filter(starts, lambda s: s)) + F.lit(1)
        boundary = F.array_position(F.reverse(starts), F.lit(True))
        last_len = F.when(boundary > 0, boundary).otherwise(F.col("seq_len"))
        cols["last_session_events"] = last_len
        last_types = F.slice(F.reverse(F.col("event_type_ids")), F.lit(1),
                             F.greatest(last_len, F.lit(1)))
        cols["last_session_funnel"] = (
            F.when(F.array_contains(last_types, F.lit(ids["purchase"])), F.lit(3))
            .when(F.array_contains(last_types, F.lit(ids["cart"]))
                  | F.array_contains(last_types, F.lit(ids["fav"])), F.lit(2))
            .when(F.array_contains(last_types, F.lit(ids["view"])), F.lit(1)).otherwise(F.lit(0)))
        # seq_len is an input column already: kept as it is.
        return df.select("*", *[c.cast("double").alias(n) for n, c in cols.items()
                                if n not in df.columns])

    return transform
