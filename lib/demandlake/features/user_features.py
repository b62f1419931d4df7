"""Point-in-time user features (gold.user_features) as of a snapshot date.

Only events with ``event_date <= snapshot_date`` (and reviews with ``review_date <= snapshot_date``)
are read, so events arriving later for later dates cannot change a stored snapshot. Three time
scopes, all ending on the snapshot date (inclusive):

* all history: first seen, recency (days since the last event / purchase), review count;
* each window of ``windows_days`` (a 7-day window is the snapshot date and the 6 days before):
  events, purchases (frequency) and revenue (monetary), as maps ``{days: value}`` so the windows
  stay configurable without changing the table;
* the lookback window (the longest of ``windows_days``): sessions, conversion, cart abandonment,
  order value, price level and sensitivity, preferred categories/brands, active hours/weekdays and
  search terms. The session statistics are those of the sessions of the truncated events, so a
  session running past midnight of the snapshot date never brings later events in. Given
  silver.sessions (``sessions``), they are read from it for the sessions wholly inside the window,
  and only the users with a session crossing either edge of the window (or whose stored sessions
  do not account for their events) are sessionized here from their truncated events: the same
  values, without sorting every event again.
"""
from __future__ import annotations

import datetime as dt
from typing import Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from demandlake.sessions import assign_sessions, local_date

# How much one event says about a preference for its category/brand (search and
# remove_from_cart say nothing positive).
INTEREST_WEIGHTS = {"view": 1.0, "fav": 2.0, "cart": 3.0, "purchase": 5.0}

FEATURE_COLUMNS = [
    "user_id", "snapshot_date", "first_seen_date", "days_since_first_seen", "days_since_last_event",
    "days_since_last_purchase", "events_by_window", "purchases_by_window", "revenue_by_window",
    "sessions_count", "conversion_rate", "cart_abandonment_rate", "avg_order_value",
    "mean_purchase_price", "mean_view_price", "price_sensitivity", "top_categories", "top_brands",
    "active_hours", "active_weekdays", "recent_search_terms", "review_count",
    "mean_review_sentiment",
]
SESSION_STATS = ["sessions_count", "conversion_rate", "cart_abandonment_rate", "avg_order_value"]


def _is(event_type: str) -> Column:
    return F.col("event_type") == event_type


def _amount() -> Column:
    return F.col("price") * F.coalesce(F.col("quantity"), F.lit(1))


def _interest_weight() -> Column:
    weight = F.lit(0.0)
    for event_type, w in INTEREST_WEIGHTS.items():
        weight = F.when(_is(event_type), F.lit(w)).otherwise(weight)
    return weight


def top_weighted(events: DataFrame, key: str, top_k: int) -> DataFrame:
    """Each user's ``top_k`` values of ``key`` by interest weight.

    Returns:
        ``user_id`` and ``top`` (array<struct<name, weight>>, weight = share of the user's total
        weight over all values, order weight desc then name).
    """
    weighted = (
        events.where(F.col(key).isNotNull())
        .groupBy("user_id", F.col(key).alias("name"))
        .agg(F.sum(_interest_weight()).alias("w"))
        .where(F.col("w") > 0)
    )
    # Sorting each user's (small) list beats a window over all rows: no sort of the events.
    # (sort_array rather than array_sort: see sessions.sessionize.)
    # Ascending (-w, name) is weight desc, then name asc.
    collected = weighted.groupBy("user_id").agg(
        F.sort_array(F.collect_list(F.struct((-F.col("w")).alias("neg_w"), "name"))).alias("_all"),
        F.sum("w").alias("_total"),
    )
    return collected.select(
        "user_id",
        F.transform(F.slice("_all", 1, top_k), lambda x: F.struct(
            x["name"].alias("name"), (-x["neg_w"] / F.col("_total")).alias("weight"))).alias("top"),
    )


def recent_search_terms(events: DataFrame, top_k: int) -> DataFrame:
    """``user_id`` and ``terms``: up to ``top_k`` distinct lower-cased search terms, newest
    first."""
    term = F.lower(F.trim(F.col("search_query")))
    terms = (
        events.where(_is("search") & F.col("search_query").isNotNull())
        .select("user_id", term.alias("term"), "event_ts")
        .where(F.col("term") != "")
        .groupBy("user_id", "term").agg(F.max("event_ts").alias("last_ts"))
    )
    # Newest first, ties by term: ascending (-last_ts, term) within each user's list.
    newest_first = F.struct((-F.unix_micros("last_ts")).alias("neg_ts"), "term")
    collected = terms.groupBy("user_id").agg(
        F.sort_array(F.collect_list(newest_first)).alias("_terms"))
    return collected.select(
        "user_id", F.transform(F.slice("_terms", 1, top_k), lambda x: x["term"]).alias("terms"))


def price_sensitivity(events: DataFrame) -> DataFrame:
    """``user_id`` and ``price_sensitivity``: share of a user's priced purchases below the median
    price of their category (median over all users' priced events in ``events``)."""
    priced = events.where(F.col("price").isNotNull() & F.col("category").isNotNull())
    medians = priced.groupBy("category").agg(F.median("price").alias("category_median"))
    purchases = priced.where(_is("purchase")).join(medians, on="category", how="inner")
    below = (F.col("price") < F.col("category_median")).cast("double")
    return purchases.groupBy("user_id").agg(F.avg(below).alias("price_sensitivity")).select(
        "user_id", "price_sensitivity")


def _session_outcomes(events: DataFrame, gap_minutes: float) -> DataFrame:
    """One row per session of ``events``: user_id, converted, has_cart, revenue (null when no
    purchase is priced)."""
    return (
        events.transform(assign_sessions(gap_minutes))
        .groupBy("user_id", "session_seq")
        .agg(
            (F.count_if(_is("purchase")) > 0).alias("converted"),
            (F.count_if(_is("cart")) > 0).alias("has_cart"),
            F.sum(F.when(_is("purchase"), _amount())).alias("revenue"),
        )
        .select("user_id", "converted", "has_cart", "revenue")
    )


def _session_aggregates() -> list[Column]:
    """Per-user statistics over session outcome rows (``converted``, ``has_cart``, ``revenue``)."""
    converted, has_cart = F.col("converted"), F.col("has_cart")
    abandoned = has_cart & ~converted
    order_value_known = converted & F.col("revenue").isNotNull()
    return [
        F.count(F.lit(1)).alias("sessions_count"),
        F.avg(converted.cast("double")).alias("conversion_rate"),
        F.try_divide(F.count_if(abandoned).cast("double"), F.count_if(has_cart)).alias(
            "cart_abandonment_rate"),
        F.try_divide(F.sum(F.when(order_value_known, F.col("revenue"))),
                     F.count_if(order_value_known)).alias("avg_order_value"),
    ]


def _summarize_sessions(outcomes: DataFrame) -> DataFrame:
    return outcomes.groupBy("user_id").agg(*_session_aggregates()).select("user_id", *SESSION_STATS)


def session_stats(events: DataFrame, gap_minutes: float) -> DataFrame:
    """Per user: sessions_count, conversion_rate, cart_abandonment_rate, avg_order_value."""
    return _summarize_sessions(_session_outcomes(events, gap_minutes))


def session_stats_from_sessions(sessions: DataFrame, events: DataFrame, event_counts: DataFrame,
                                first_date: dt.date, last_date: dt.date, gap_minutes: float,
                                timezone: str = "UTC") -> DataFrame:
    """``session_stats(events, gap_minutes)`` for ``events`` cut to ``[first_date, last_date]``,
    reading the sessions that lie wholly inside that range from ``sessions``.

    Cutting a user's events to a date range leaves one contiguous run of them, so each session
    inside the range is unchanged, each one crossing an edge keeps only its part inside, and no
    session splits or joins. A user's stored sessions are used when none of them crosses an edge
    of the range (or jumps over it) and their ``n_events`` add up to the user's events in the
    range; every other user (an edge-crossing session, or sessions missing or stale against
    bronze) is sessionized here from their cut events. So the result is exact wherever
    ``sessions`` are ``sessionize`` output of the same events with the same gap and time zone, and
    falls back to the events where they visibly are not.

    Args:
        sessions: silver.sessions rows (``user_id``, ``session_date``, ``session_end``,
            ``n_events``, ``n_purchases``, ``n_carts``, ``revenue`` are read).
        events: bronze events already cut to ``[first_date, last_date]`` by ``event_date``.
        event_counts: ``user_id``, ``n_events``: each user's number of ``events`` (users with
            none may be left out).
        first_date, last_date: the range, inclusive, in local dates.
        gap_minutes: the session gap ``sessions`` were built with.
        timezone: the lake time zone (``event_date`` and ``session_date`` are local dates).
    """
    lo, hi = F.lit(first_date), F.lit(last_date)
    end_date = local_date(F.col("session_end"), timezone)
    inside = (F.col("session_date") >= lo) & (end_date <= hi)
    # One aggregation of the stored sessions gives both each user's statistics and what decides
    # whether they can be used.
    stored = (
        sessions.where((F.col("session_date") <= hi) & (end_date >= lo))
        .select("user_id", "n_events", inside.alias("inside"),
                (F.col("n_purchases") > 0).alias("converted"),
                (F.col("n_carts") > 0).alias("has_cart"),
                # silver's revenue is 0.0 for a session without purchases, null when none of
                # its purchases is priced; only converted sessions' revenue is used.
                "revenue")
        .groupBy("user_id")
        .agg(F.sum("n_events").alias("_stored_events"),
             F.count_if(~F.col("inside")).alias("_edges"), *_session_aggregates())
    )
    checked = event_counts.where(F.col("n_events") > 0).join(stored, on="user_id", how="left")
    usable = F.coalesce(
        (F.col("_edges") == 0) & (F.col("_stored_events") == F.col("n_events")), F.lit(False))
    rebuild_users = checked.where(~usable).select("user_id")
    # Few users in a nightly run (sessions crossing midnight into the days after the snapshot):
    # broadcast, so the events are filtered where they are read rather than shuffled.
    rebuilt = _summarize_sessions(_session_outcomes(
        events.join(F.broadcast(rebuild_users), on="user_id", how="left_semi"), gap_minutes))
    return checked.where(usable).select("user_id", *SESSION_STATS).unionByName(rebuilt)


def _zeros(n: int) -> Column:
    return F.array_repeat(F.lit(0).cast("long"), n)


def build_user_features(
    events: DataFrame,
    reviews: DataFrame,
    snapshot_date: dt.date,
    windows_days: Sequence[int] = (7, 30, 90),
    top_k: int = 5,
    timezone: str = "UTC",
    gap_minutes: float = 30,
    sentiment: DataFrame | None = None,
    sessions: DataFrame | None = None,
) -> DataFrame:
    """User features as of the end of ``snapshot_date``.

    Args:
        events: bronze.events rows (any date range; later dates are ignored).
        reviews: bronze.reviews rows (only ``user_id`` and ``review_date`` are used).
        snapshot_date: last local date the features may see.
        windows_days: frequency/monetary windows; the longest is also the lookback window.
        top_k: length of top_categories, top_brands and recent_search_terms.
        timezone: lake time zone, for hours and weekdays.
        gap_minutes: session inactivity gap.
        sentiment: optional ``(user_id, sentiment)`` rows from a sentiment model; their per-user
            mean is ``mean_review_sentiment`` (null without it).
        sessions: optional silver.sessions of the same events, built with the same
            ``gap_minutes`` and ``timezone``: the session statistics then read the sessions
            inside the lookback window from it instead of sessionizing every event again (same
            values; see ``session_stats_from_sessions``).

    Returns:
        One row per user with an event on or before ``snapshot_date``, columns ``FEATURE_COLUMNS``.

    Raises:
        ValueError: for empty or non-positive windows or a non-positive top_k.
    """
    windows = sorted({int(w) for w in windows_days})
    if not windows or windows[0] < 1:
        raise ValueError(f"windows_days must be positive day counts, got {windows_days!r}")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k!r}")
    snap = F.lit(snapshot_date)
    visible = events.where(F.col("event_date") <= snap)
    lookback = visible.where(F.col("event_date") > F.date_sub(snap, windows[-1]))

    def in_window(w: int) -> Column:
        return F.col("event_date") > F.date_sub(snap, w)

    in_lookback = in_window(windows[-1])
    local_ts = F.from_utc_timestamp(F.col("event_ts"), timezone)
    hour, weekday = F.col("_hour"), F.col("_weekday")
    # All history and the lookback-window profile in one aggregation (one scan and shuffle of
    # the events instead of two); the lookback parts are conditional on the window.
    history = visible.withColumns({
        "_hour": F.hour(local_ts), "_weekday": F.weekday(F.to_date(local_ts)),
    }).groupBy("user_id").agg(
        F.min("event_date").alias("first_seen_date"),
        F.max("event_date").alias("last_event_date"),
        F.max(F.when(_is("purchase"), F.col("event_date"))).alias("last_purchase_date"),
        *[F.count_if(in_window(w)).alias(f"_events_{w}") for w in windows],
        *[F.count_if(in_window(w) & _is("purchase")).alias(f"_purchases_{w}") for w in windows],
        *[F.sum(F.when(in_window(w) & _is("purchase"), _amount())).alias(f"_revenue_{w}")
          for w in windows],
        F.avg(F.when(in_lookback & _is("purchase"), F.col("price"))).alias("mean_purchase_price"),
        F.avg(F.when(in_lookback & _is("view"), F.col("price"))).alias("mean_view_price"),
        F.array(*[F.count_if(in_lookback & (hour == h)) for h in range(24)]).alias(
            "active_hours"),
        F.array(*[F.count_if(in_lookback & (weekday == d)) for d in range(7)]).alias(
            "active_weekdays"),
    )

    review_counts = (
        reviews.where(F.col("user_id").isNotNull() & (F.col("review_date") <= snap))
        .groupBy("user_id").agg(F.count(F.lit(1)).alias("review_count"))
    )
    if sentiment is not None:
        sentiments = sentiment.groupBy("user_id").agg(
            F.avg("sentiment").cast("double").alias("mean_review_sentiment"))
    else:
        sentiments = None

    if sessions is None:
        stats = session_stats(lookback, gap_minutes)
    else:
        lookback_counts = history.select(
            "user_id", F.col(f"_events_{windows[-1]}").alias("n_events"))
        stats = session_stats_from_sessions(
            sessions, lookback, lookback_counts,
            snapshot_date - dt.timedelta(days=windows[-1] - 1), snapshot_date, gap_minutes,
            timezone)
    parts = [
        stats,
        price_sensitivity(lookback),
        top_weighted(lookback, "category", top_k).withColumnRenamed("top", "top_categories"),
        top_weighted(lookback, "brand", top_k).withColumnRenamed("top", "top_brands"),
        recent_search_terms(lookback, top_k).withColumnRenamed("terms", "recent_search_terms"),
        review_counts,
    ]
    joined = history
    for part in parts:
        joined = joined.join(part, on="user_id", how="left")
    if sentiments is None:
        joined = joined.withColumn("mean_review_sentiment", F.lit(None).cast("double"))
    else:
        joined = joined.join(sentiments, on="user_id", how="left")

    def by_window(prefix: str) -> Column:
        return F.create_map(*[x for w in windows for x in (F.lit(w), F.col(f"{prefix}_{w}"))])

    revenue_map = F.create_map(*[
        x for w in windows for x in (
            F.lit(w),
            F.when(F.col(f"_purchases_{w}") == 0, F.lit(0.0)).otherwise(F.col(f"_revenue_{w}")))])
    empty_strings = F.array().cast("array<string>")
    no_names = F.array().cast("array<struct<name:string,weight:double>>")
    return joined.select(
        "user_id",
        snap.alias("snapshot_date"),
        "first_seen_date",
        F.datediff(snap, F.col("first_seen_date")).alias("days_since_first_seen"),
        F.datediff(snap, F.col("last_event_date")).alias("days_since_last_event"),
        F.datediff(snap, F.col("last_purchase_date")).alias("days_since_last_purchase"),
        by_window("_events").alias("events_by_window"),
        by_window("_purchases").alias("purchases_by_window"),
        revenue_map.alias("revenue_by_window"),
        F.coalesce(F.col("sessions_count"), F.lit(0).cast("long")).alias("sessions_count"),
        "conversion_rate",
        "cart_abandonment_rate",
        "avg_order_value",
        "mean_purchase_price",
        "mean_view_price",
        "price_sensitivity",
        F.coalesce(F.col("top_categories"), no_names).alias("top_categories"),
        F.coalesce(F.col("top_brands"), no_names).alias("top_brands"),
        F.coalesce(F.col("active_hours"), _zeros(24)).alias("active_hours"),
        F.coalesce(F.col("active_weekdays"), _zeros(7)).alias("active_weekdays"),
        F.coalesce(F.col("recent_search_terms"), empty_strings).alias("recent_search_terms"),
        F.coalesce(F.col("review_count"), F.lit(0).cast("long")).alias("review_count"),
        "mean_review_sentiment",
    )
