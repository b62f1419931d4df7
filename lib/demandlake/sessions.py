"""Sessions: bronze events -> one row per user session (silver.sessions).

A session is a run of one user's events in which no two consecutive events are more than
``gap_minutes`` apart (a gap of exactly ``gap_minutes`` stays in the session). Events are ordered by
``event_ts`` then ``event_id`` so ties are deterministic; sessions are found with a window ``lag``
and a running sum of "starts a new session" flags, no Python loops.

The session id is ``sha2(user_id || '|' || unix_micros(session_start))``: the same events always
give the same id, and a late event that moves a session's start gives it a new one (the stage then
deletes the old id; see ``pipeline.transform.run_sessions``). The id the source gave, if any, is
kept as ``source_session_id``.
"""
from __future__ import annotations

from typing import Callable

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

# Output column -> event type it counts.
TYPE_COUNTS = {
    "n_views": "view",
    "n_carts": "cart",
    "n_remove_from_cart": "remove_from_cart",
    "n_purchases": "purchase",
    "n_searches": "search",
    "n_favs": "fav",
}

SESSION_COLUMNS = [
    "session_id", "user_id", "source_session_id", "session_start", "session_end", "duration_s",
    "n_events", *TYPE_COUNTS, "distinct_items", "distinct_categories", "item_sequence",
    "category_sequence", "cart_adds", "purchases", "revenue", "converted", "landing_item",
    "exit_item", "session_date",
]


def local_date(ts: Column, timezone: str) -> Column:
    """The calendar date of a UTC instant in ``timezone`` (same rule as bronze ``event_date``)."""
    return F.to_date(F.from_utc_timestamp(ts, timezone))


def last_n(arr: Column, n: int) -> Column:
    """The last ``n`` elements of an array (all of it when shorter).

    ``slice(arr, -n, n)`` would return an empty array when the array is shorter than ``n``.
    """
    return F.slice(arr, F.greatest(F.size(arr) - F.lit(n - 1), F.lit(1)), F.lit(n))


def _check_gap(gap_minutes: float) -> None:
    if not gap_minutes or gap_minutes <= 0:
        raise ValueError(f"gap_minutes must be > 0, got {gap_minutes!r}")


def assign_sessions(gap_minutes: float = 30) -> Callable[[DataFrame], DataFrame]:
    """Number each user's sessions.

    Args:
        gap_minutes: inactivity that ends a session (a longer gap starts a new one).

    Returns:
        A transform adding ``session_seq`` (1, 2, ... per user in time order) to events with
        ``user_id``, ``event_ts`` and ``event_id``.
    """
    _check_gap(gap_minutes)
    gap_us = int(round(gap_minutes * 60 * 1_000_000))

    def transform(events: DataFrame) -> DataFrame:
        by_user = Window.partitionBy("user_id").orderBy("event_ts", "event_id")
        prev_ts = F.lag("event_ts").over(by_user)
        gap_exceeded = (F.unix_micros(F.col("event_ts")) - F.unix_micros(prev_ts)) > F.lit(gap_us)
        starts_session = prev_ts.isNull() | gap_exceeded
        flagged = events.withColumn("_starts", starts_session.cast("long"))
        running = by_user.rowsBetween(Window.unboundedPreceding, Window.currentRow)
        return flagged.select(*events.columns, F.sum("_starts").over(running).alias("session_seq"))

    return transform


def sessionize(gap_minutes: float = 30, max_sequence_length: int = 50,
               timezone: str = "UTC") -> Callable[[DataFrame], DataFrame]:
    """Bronze events -> sessions.

    Args:
        gap_minutes: inactivity that ends a session.
        max_sequence_length: item_sequence / category_sequence keep their last this many values.
        timezone: lake time zone; ``session_date`` is the local date of ``session_start``.

    Returns:
        A transform from ``schemas.BRONZE_EVENTS``-shaped rows to the columns of
        ``schemas.SILVER_SESSIONS``.

    Raises:
        ValueError: for a non-positive gap or sequence length.
    """
    _check_gap(gap_minutes)
    if max_sequence_length < 1:
        raise ValueError(f"max_sequence_length must be >= 1, got {max_sequence_length!r}")

    def transform(events: DataFrame) -> DataFrame:
        numbered = events.transform(assign_sessions(gap_minutes))
        is_purchase = F.col("event_type") == "purchase"
        is_cart = F.col("event_type") == "cart"
        units = F.coalesce(F.col("quantity"), F.lit(1)).cast("long")
        amount = F.col("price") * units
        # sort_array, not array_sort: the same order for these non-null structs, compared by
        # Spark's native ordering instead of array_sort's default comparator lambda (3% less
        # CPU for sessionize at 5M events, stage_ab.py --pair sessions_rev; docs/BENCHMARKS.md).
        ordered = F.sort_array(F.collect_list(F.struct(
            "event_ts", "event_id", "item_id", "category", F.col("session_id").alias("sid"))))
        per_session = numbered.groupBy("user_id", "session_seq").agg(
            F.min("event_ts").alias("session_start"),
            F.max("event_ts").alias("session_end"),
            F.count(F.lit(1)).alias("n_events"),
            *[F.count_if(F.col("event_type") == t).alias(c) for c, t in TYPE_COUNTS.items()],
            F.coalesce(F.sum(F.when(is_cart, units)), F.lit(0)).alias("cart_adds"),
            F.coalesce(F.sum(F.when(is_purchase, units)), F.lit(0)).alias("purchases"),
            F.sum(F.when(is_purchase, amount)).alias("_priced_revenue"),
            ordered.alias("_events"),
        )

        def present(field: str) -> Column:
            # `_events.field` extracts the field from every struct in generated code, where a
            # `transform` lambda is interpreted per element: 7-10% less CPU for `sessionize`
            # at 5M events (docs/BENCHMARKS.md). `array_compact` drops the nulls.
            return F.array_compact(F.col(f"_events.{field}"))

        items, categories, source_ids = present("item_id"), present("category"), present("sid")
        start_us = F.unix_micros(F.col("session_start"))
        session_id = F.sha2(F.concat_ws("|", F.col("user_id"), start_us.cast("string")), 256)
        return per_session.select(
            session_id.alias("session_id"),
            "user_id",
            F.try_element_at(source_ids, F.lit(1)).alias("source_session_id"),
            "session_start",
            "session_end",
            ((F.unix_micros(F.col("session_end")) - start_us) / F.lit(1e6)).alias("duration_s"),
            "n_events",
            *TYPE_COUNTS,
            # From the collected values, not count_distinct: two distinct counts in one
            # aggregate make Spark expand every row three times (Expand + two more aggregates).
            F.size(F.array_distinct(items)).cast("long").alias("distinct_items"),
            F.size(F.array_distinct(categories)).cast("long").alias("distinct_categories"),
            last_n(items, max_sequence_length).alias("item_sequence"),
            last_n(categories, max_sequence_length).alias("category_sequence"),
            "cart_adds",
            "purchases",
            F.when(F.col("n_purchases") == 0, F.lit(0.0))
            .otherwise(F.col("_priced_revenue")).alias("revenue"),
            (F.col("n_purchases") > 0).alias("converted"),
            F.try_element_at(items, F.lit(1)).alias("landing_item"),
            F.try_element_at(items, F.lit(-1)).alias("exit_item"),
            local_date(F.col("session_start"), timezone).alias("session_date"),
        )

    return transform
