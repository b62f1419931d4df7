"""gold.user_profiles rows: segment, value tier, preferences, sentiment and churn risk per user.

* ``value_tier``: ``high`` for buyers whose lookback revenue is at or above the
  ``1 - value_tier_top_share`` quantile of buyers' revenue (approximate percentile), ``medium`` for
  other buyers, ``low`` for users without purchase revenue in the lookback window.
* ``active_hours``: up to three hours of day with the most lookback events, most active first
  (hours without events never appear; ties go to the earlier hour).
* ``review_sentiment``: mean ``probability`` of the user's rows in gold.review_sentiment with a
  review date up to the run date (undated reviews count too); null without any.
* ``churn_risk = w * (1 - purchase_probability) + (1 - w) * min(recency_days / R, 1)`` with
  ``w = scoring.churn.weight`` and ``R = scoring.churn.recency_days``: a user unlikely to buy and
  long gone is at risk; either part alone gives at most its weight.
"""
from __future__ import annotations

import datetime as dt
from typing import Mapping, Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from demandlake.scoring.segments import lookback_value

ACTIVE_HOURS = 3


def value_tier(revenue: Column, threshold: Column) -> Column:
    """``high`` at or above ``threshold`` (a positive revenue), ``medium`` for other buyers,
    else ``low``."""
    bought = revenue > F.lit(0.0)
    return (F.when(bought & (revenue >= threshold), F.lit("high"))
            .when(bought, F.lit("medium")).otherwise(F.lit("low")))


def top_hours(counts: Column, n: int = ACTIVE_HOURS) -> Column:
    """Indexes (hours) of the ``n`` largest positive counts, largest first, earlier hour on ties."""
    indexed = F.transform(counts, lambda c, i: F.struct((-c).alias("neg"), i.alias("hour")))
    busy = F.filter(F.sort_array(indexed), lambda x: x["neg"] < 0)
    return F.transform(F.slice(busy, 1, n), lambda x: x["hour"].cast("int"))


def churn_risk(purchase_probability: Column, recency_days: Column, weight: float,
               recency_scale_days: float) -> Column:
    """See the module doc; the result is clipped to [0, 1]."""
    if not 0.0 <= weight <= 1.0 or recency_scale_days <= 0:
        raise ValueError("churn weight must be in [0, 1] and recency_days > 0")
    recency = F.least(recency_days.cast("double") / F.lit(float(recency_scale_days)), F.lit(1.0))
    risk = F.lit(weight) * (F.lit(1.0) - purchase_probability) + F.lit(1.0 - weight) * recency
    return F.least(F.greatest(risk, F.lit(0.0)), F.lit(1.0))


def user_sentiment(review_sentiment: DataFrame, run_date: dt.date) -> DataFrame:
    """``user_id``, ``review_sentiment``: mean positive probability of the user's scored reviews."""
    visible = F.col("review_date").isNull() | (F.col("review_date") <= F.lit(run_date))
    return (review_sentiment.where(F.col("user_id").isNotNull() & visible)
            .groupBy("user_id").agg(F.avg("probability").alias("review_sentiment")))


def user_profiles(
    users: DataFrame,
    segments: DataFrame,
    forecasts: DataFrame,
    sentiment: DataFrame,
    windows_days: Sequence[int],
    top_share: float,
    churn: Mapping[str, float],
    run_date: dt.date,
    run_id: str,
    segment_model: str,
    sequence_model_version: int | None = None,
    sentiment_model_version: int | None = None,
) -> DataFrame:
    """One profile per user of ``users``.

    Args:
        users: active users' gold.user_features rows.
        segments: ``user_id``, ``segment_id``, ``segment`` for every user of ``users``.
        forecasts: gold.demand_forecasts rows of the run (``user_id``, ``purchase_probability``).
        sentiment: :func:`user_sentiment` output.
        windows_days: feature windows (the longest is the lookback for revenue).
        top_share: ``scoring.value_tier_top_share`` in (0, 1].
        churn: ``scoring.churn`` (``weight``, ``recency_days``).
        run_date, run_id, segment_model, sequence_model_version, sentiment_model_version:
            stamped on every row.

    Returns:
        gold.user_profiles rows.
    """
    if not 0.0 < top_share <= 1.0:
        raise ValueError(f"top_share must be in (0, 1], got {top_share}")
    revenue = lookback_value("revenue_by_window", windows_days)
    with_revenue = users.select("*", revenue.alias("_revenue"))
    threshold = (with_revenue.where(F.col("_revenue") > 0)
                 .agg(F.percentile_approx("_revenue", 1.0 - top_share).alias("_threshold")))
    joined = (
        with_revenue.join(segments, on="user_id", how="left")
        .join(forecasts.select("user_id", "purchase_probability"), on="user_id", how="left")
        .join(sentiment, on="user_id", how="left")
        .crossJoin(F.broadcast(threshold))
    )
    p = F.coalesce(F.col("purchase_probability"), F.lit(0.0))
    return joined.select(
        "user_id",
        F.lit(run_date).alias("run_date"),
        F.col("segment_id").cast("int").alias("segment_id"),
        "segment",
        value_tier(F.col("_revenue"), F.col("_threshold")).alias("value_tier"),
        "top_categories",
        "top_brands",
        top_hours(F.col("active_hours")).alias("active_hours"),
        "review_sentiment",
        p.alias("purchase_probability"),
        churn_risk(p, F.col("days_since_last_event"), float(churn.get("weight", 0.5)),
                   float(churn.get("recency_days", 30))).alias("churn_risk"),
        F.col("first_seen_date").alias("first_seen"),
        F.date_sub(F.lit(run_date), F.col("days_since_last_event")).alias("last_seen"),
        F.lit(sequence_model_version).cast("int").alias("sequence_model_version"),
        F.lit(sentiment_model_version).cast("int").alias("sentiment_model_version"),
        F.lit(segment_model).alias("segment_model"),
        F.lit(run_id).alias("run_id"),
    )
