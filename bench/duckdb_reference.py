"""A reference implementation, in DuckDB SQL, of silver.sessions and gold.user_features.

It reproduces ``demandlake.sessions.sessionize`` and
``demandlake.features.user_features.build_user_features`` (without ``sentiment``, so
``mean_review_sentiment`` is always null) from the same input the Spark stages read: the Parquet
files of the current snapshot of the bronze.events and bronze.reviews Delta tables (their partition
columns ``event_date`` / ``review_date`` come from the ``name=value`` folders, as in Delta). It
serves two purposes: an independent check of the Spark semantics (tests/test_duckdb_reference.py)
and a single-process baseline for bench/pipeline_scale.py.

    python bench/duckdb_reference.py --events-files ev.txt --reviews-files rv.txt \\
        --snapshot-date 2026-11-28 --out /tmp/ref --json-out /tmp/ref/timings.json

The semantics reproduced, rule by rule (see docs/FEATURES.md):

* sessions: events of a user ordered by ``event_ts`` then ``event_id``; a gap of more than
  ``gap_minutes`` (in microseconds, so exactly the gap stays in the session) starts a session;
  ``session_id = sha256(user_id || '|' || epoch_us(session_start))``; sequences are the non-null
  values in time order, the last ``max_sequence_length`` kept; revenue 0 without purchases, null
  with purchases but no price; ``session_date`` the local date of the start in ``timezone``;
* features: ``event_date <= snapshot`` (all history), ``event_date > snapshot - w`` (windows, the
  longest being the lookback); sessions rebuilt from the lookback events (or, in ``write_outputs``,
  read from the written sessions where they account for them, as ``run_features`` does); interest
  weights view 1,
  fav 2, cart 3, purchase 5; top-k by weight desc then name; search terms ``lower(trim(q))``,
  newest first, ties by term; category medians interpolated (Spark ``median``); hours and
  weekdays (Monday = 0) of the local time.

Spark's ``lower`` (Java) and DuckDB's (utf8proc) can differ on a few exotic letters (e.g. dotted
capital I); the synthetic and public data sets have none.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import resource
import time
from pathlib import Path
from typing import Sequence

log = logging.getLogger(__name__)

# Same weights as demandlake.features.user_features.INTEREST_WEIGHTS (restated, not imported:
# the reference must not share code with what it checks).
INTEREST_WEIGHTS = {"view": 1.0, "fav": 2.0, "cart": 3.0, "purchase": 5.0}
TYPE_COUNTS = {
    "n_views": "view", "n_carts": "cart", "n_remove_from_cart": "remove_from_cart",
    "n_purchases": "purchase", "n_searches": "search", "n_favs": "fav",
}
SESSION_COLUMNS = [
    "session_id", "user_id", "source_session_id", "session_start", "session_end", "duration_s",
    "n_events", *TYPE_COUNTS, "distinct_items", "distinct_categories", "item_sequence",
    "category_sequence", "cart_adds", "purchases", "revenue", "converted", "landing_item",
    "exit_item", "session_date",
]
FEATURE_COLUMNS = [
    "user_id", "snapshot_date", "first_seen_date", "days_since_first_seen", "days_since_last_event",
    "days_since_last_purchase", "events_by_window", "purchases_by_window", "revenue_by_window",
    "sessions_count", "conversion_rate", "cart_abandonment_rate", "avg_order_value",
    "mean_purchase_price", "mean_view_price", "price_sensitivity", "top_categories", "top_brands",
    "active_hours", "active_weekdays", "recent_search_terms", "review_count",
    "mean_review_sentiment",
]
NAME_WEIGHT = "STRUCT(name VARCHAR, weight DOUBLE)[]"


def _q(text: str) -> str:
    """A SQL string literal."""
    return "'" + str(text).replace("'", "''") + "'"


def _file_list(paths: Sequence[str]) -> str:
    return "[" + ", ".join(_q(p) for p in paths) + "]"


def connect(threads: int = 2, memory_limit: str = "6GB", temp_dir: str | None = None):
    """A DuckDB connection in UTC (as Spark's session time zone), with bounded threads/memory."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET threads = {int(threads)}")
    con.execute(f"SET memory_limit = {_q(memory_limit)}")
    con.execute("SET preserve_insertion_order = false")
    if temp_dir:
        con.execute(f"SET temp_directory = {_q(temp_dir)}")
    return con


def register_inputs(con, event_files: Sequence[str], review_files: Sequence[str]) -> None:
    """Views ``events`` and ``reviews`` over bronze Parquet files laid out by Delta.

    Args:
        event_files / review_files: the data files of the tables' current snapshot (Spark's
            ``DataFrame.inputFiles()``); the date partition comes from the ``col=value`` folder.
    """
    def strip(paths: Sequence[str]) -> list[str]:
        return [p[len("file:"):] if p.startswith("file:") else p for p in paths]

    if not event_files:
        raise ValueError("no bronze.events files given")
    con.execute(f"""
        CREATE OR REPLACE VIEW events AS
        SELECT event_id, user_id, session_id AS sid, event_type, item_id, category, brand,
               CAST(price AS DOUBLE) AS price, CAST(quantity AS INTEGER) AS quantity,
               search_query, CAST(event_ts AS TIMESTAMP) AS event_ts,
               CAST(event_date AS DATE) AS event_date
        FROM read_parquet({_file_list(strip(event_files))}, hive_partitioning = true,
                          hive_types = {{'event_date': DATE}})""")
    if review_files:
        con.execute(f"""
            CREATE OR REPLACE VIEW reviews AS
            SELECT user_id, CAST(review_date AS DATE) AS review_date
            FROM read_parquet({_file_list(strip(review_files))}, hive_partitioning = true,
                              hive_types = {{'review_date': DATE}})""")
    else:
        con.execute("CREATE OR REPLACE VIEW reviews AS "
                    "SELECT NULL::VARCHAR AS user_id, NULL::DATE AS review_date WHERE false")


def _local(ts: str, timezone: str) -> str:
    """Wall-clock time in ``timezone`` of a naive-UTC timestamp (Spark ``from_utc_timestamp``)."""
    return f"timezone({_q(timezone)}, CAST({ts} AS TIMESTAMPTZ))"


def _numbered(source: str, gap_minutes: float) -> str:
    """SQL numbering each user's sessions (``session_seq``) over the rows of ``source``."""
    if not gap_minutes or gap_minutes <= 0:
        raise ValueError(f"gap_minutes must be > 0, got {gap_minutes!r}")
    gap_us = int(round(gap_minutes * 60 * 1_000_000))
    return f"""
        SELECT *, sum(_starts) OVER (PARTITION BY user_id ORDER BY event_ts, event_id
                                     ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
                  AS session_seq
        FROM (
            SELECT *, CASE WHEN lag(event_ts) OVER w IS NULL
                             OR epoch_us(event_ts) - epoch_us(lag(event_ts) OVER w) > {gap_us}
                           THEN 1 ELSE 0 END AS _starts
            FROM {source}
            WINDOW w AS (PARTITION BY user_id ORDER BY event_ts, event_id)
        )"""


def sessions_sql(gap_minutes: float = 30, max_sequence_length: int = 50,
                 timezone: str = "UTC") -> str:
    """SQL for silver.sessions from the ``events`` view (columns in table order)."""
    if max_sequence_length < 1:
        raise ValueError(f"max_sequence_length must be >= 1, got {max_sequence_length!r}")
    n = int(max_sequence_length)
    units = "CAST(coalesce(quantity, 1) AS BIGINT)"
    counts = ",\n".join(f"count_if(event_type = {_q(t)}) AS {c}" for c, t in TYPE_COUNTS.items())

    def present(col: str) -> str:
        return (f"coalesce(list({col} ORDER BY event_ts, event_id) "
                f"FILTER (WHERE {col} IS NOT NULL), [])")

    def last_n(col: str) -> str:
        return f"list_slice({col}, greatest(len({col}) - {n - 1}, 1), len({col}))"

    return f"""
    WITH per_session AS (
        SELECT user_id, session_seq,
               min(event_ts) AS session_start, max(event_ts) AS session_end,
               count(*) AS n_events,
               {counts},
               count(DISTINCT item_id) AS distinct_items,
               count(DISTINCT category) AS distinct_categories,
               coalesce(sum(CASE WHEN event_type = 'cart' THEN {units} END), 0) AS cart_adds,
               coalesce(sum(CASE WHEN event_type = 'purchase' THEN {units} END), 0) AS purchases,
               sum(CASE WHEN event_type = 'purchase' THEN price * {units} END) AS priced_revenue,
               {present('item_id')} AS items,
               {present('category')} AS categories,
               {present('sid')} AS sids
        FROM ({_numbered('events', gap_minutes)})
        GROUP BY user_id, session_seq
    )
    SELECT sha256(user_id || '|' || CAST(epoch_us(session_start) AS VARCHAR)) AS session_id,
           user_id,
           sids[1] AS source_session_id,
           session_start, session_end,
           (epoch_us(session_end) - epoch_us(session_start)) / 1e6 AS duration_s,
           n_events, {", ".join(TYPE_COUNTS)},
           distinct_items, distinct_categories,
           {last_n('items')} AS item_sequence,
           {last_n('categories')} AS category_sequence,
           cart_adds, purchases,
           CASE WHEN n_purchases = 0 THEN 0.0::DOUBLE ELSE priced_revenue END AS revenue,
           n_purchases > 0 AS converted,
           items[1] AS landing_item,
           items[-1] AS exit_item,
           CAST({_local('session_start', timezone)} AS DATE) AS session_date
    FROM per_session"""


def user_features_sql(snapshot_date: dt.date, windows_days: Sequence[int] = (7, 30, 90),
                      top_k: int = 5, timezone: str = "UTC", gap_minutes: float = 30,
                      stored_sessions: str | None = None) -> str:
    """SQL for gold.user_features as of ``snapshot_date`` from the ``events`` and ``reviews``
    views (columns in table order; ``mean_review_sentiment`` null).

    With ``stored_sessions`` (a relation of ``sessions_sql`` rows over the same events), the
    session statistics follow ``run_features``' default: a user's sessions are read from it when
    none crosses an edge of the lookback window and their ``n_events`` add up to the user's
    lookback events; only the other users' lookback events are sessionized. Without it, every
    lookback event is sessionized (the rule itself)."""
    windows = sorted({int(w) for w in windows_days})
    if not windows or windows[0] < 1:
        raise ValueError(f"windows_days must be positive day counts, got {windows_days!r}")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k!r}")
    snap = f"DATE {_q(snapshot_date.isoformat())}"
    lookback_days = windows[-1]
    amount = "price * coalesce(quantity, 1)"
    is_purchase = "event_type = 'purchase'"
    per_window = []
    for w in windows:
        inside = f"event_date > {snap} - {w}"
        per_window += [
            f"count_if({inside}) AS events_{w}",
            f"count_if({inside} AND {is_purchase}) AS purchases_{w}",
            f"sum(CASE WHEN {inside} AND {is_purchase} THEN {amount} END) AS revenue_{w}",
        ]
    weight = ("CASE event_type " + " ".join(f"WHEN {_q(t)} THEN {w}::DOUBLE"
                                            for t, w in INTEREST_WEIGHTS.items())
              + " ELSE 0.0::DOUBLE END")
    local_ts = _local("event_ts", timezone)
    hours = ", ".join(f"count_if(hour({local_ts}) = {h})" for h in range(24))
    weekdays = ", ".join(f"count_if(isodow(CAST({local_ts} AS DATE)) = {d + 1})"
                         for d in range(7))

    def top(key: str) -> str:
        return f"""(
            SELECT user_id, list(struct_pack(name := name, weight := weight) ORDER BY rn) AS top
            FROM (
                SELECT user_id, name, w / sum(w) OVER (PARTITION BY user_id) AS weight,
                       row_number() OVER (PARTITION BY user_id ORDER BY w DESC, name ASC) AS rn
                FROM (SELECT user_id, {key} AS name, sum({weight}) AS w
                      FROM lookback WHERE {key} IS NOT NULL
                      GROUP BY user_id, {key})
                WHERE w > 0
            )
            WHERE rn <= {top_k}
            GROUP BY user_id)"""

    stats = """count(*) AS sessions_count,
               avg(CAST(converted AS DOUBLE)) AS conversion_rate,
               CAST(count_if(has_cart AND NOT converted) AS DOUBLE)
                   / nullif(count_if(has_cart), 0) AS cart_abandonment_rate,
               sum(CASE WHEN converted AND revenue IS NOT NULL THEN revenue END)
                   / nullif(count_if(converted AND revenue IS NOT NULL), 0) AS avg_order_value"""

    def rebuilt(source: str) -> str:
        return f"""
        SELECT user_id, {stats}
        FROM (SELECT user_id, session_seq,
                     count_if({is_purchase}) > 0 AS converted,
                     count_if(event_type = 'cart') > 0 AS has_cart,
                     sum(CASE WHEN {is_purchase} THEN {amount} END) AS revenue
              FROM ({_numbered(source, gap_minutes)})
              GROUP BY user_id, session_seq)
        GROUP BY user_id"""

    if stored_sessions is None:
        session_stats = f"session_stats AS ({rebuilt('lookback')})"
    else:
        lo = f"{snap} - {lookback_days - 1}"
        end_date = f"CAST({_local('session_end', timezone)} AS DATE)"
        session_stats = f"""
    stored AS (
        SELECT user_id, sum(n_events) AS stored_events, count_if(NOT inside) AS edges, {stats}
        FROM (SELECT user_id, n_events, revenue, n_purchases > 0 AS converted,
                     n_carts > 0 AS has_cart,
                     session_date >= {lo} AND {end_date} <= {snap} AS inside
              FROM {stored_sessions}
              WHERE session_date <= {snap} AND {end_date} >= {lo})
        GROUP BY user_id),
    checked AS (
        SELECT h.user_id, s.sessions_count, s.conversion_rate, s.cart_abandonment_rate,
               s.avg_order_value,
               coalesce(s.edges = 0 AND s.stored_events = h.events_{lookback_days}, false)
                   AS usable
        FROM history h LEFT JOIN stored s ON s.user_id = h.user_id
        WHERE h.events_{lookback_days} > 0),
    rebuild_events AS (
        SELECT * FROM lookback
        WHERE user_id IN (SELECT user_id FROM checked WHERE NOT usable)),
    session_stats AS (
        SELECT user_id, sessions_count, conversion_rate, cart_abandonment_rate, avg_order_value
        FROM checked WHERE usable
        UNION ALL {rebuilt('rebuild_events')})"""

    def window_map(prefix: str, value_type: str) -> str:
        keys = ", ".join(str(w) for w in windows)
        if prefix == "revenue":
            values = ", ".join(f"CASE WHEN purchases_{w} = 0 THEN 0.0::DOUBLE ELSE revenue_{w} END"
                               for w in windows)
        else:
            values = ", ".join(f"{prefix}_{w}" for w in windows)
        return f"MAP(CAST([{keys}] AS INTEGER[]), CAST([{values}] AS {value_type}[]))"

    return f"""
    WITH visible AS (SELECT * FROM events WHERE event_date <= {snap}),
    lookback AS (SELECT * FROM visible WHERE event_date > {snap} - {lookback_days}),
    history AS (
        SELECT user_id, min(event_date) AS first_seen_date, max(event_date) AS last_event_date,
               max(CASE WHEN {is_purchase} THEN event_date END) AS last_purchase_date,
               {", ".join(per_window)}
        FROM visible GROUP BY user_id),
    {session_stats},
    profile AS (
        SELECT user_id,
               avg(CASE WHEN {is_purchase} THEN price END) AS mean_purchase_price,
               avg(CASE WHEN event_type = 'view' THEN price END) AS mean_view_price,
               [{hours}] AS active_hours,
               [{weekdays}] AS active_weekdays
        FROM lookback GROUP BY user_id),
    priced AS (SELECT * FROM lookback WHERE price IS NOT NULL AND category IS NOT NULL),
    medians AS (SELECT category, median(price) AS category_median FROM priced GROUP BY category),
    sensitivity AS (
        SELECT p.user_id,
               avg(CASE WHEN p.price < m.category_median THEN 1.0 ELSE 0.0 END::DOUBLE)
                   AS price_sensitivity
        FROM priced p JOIN medians m ON p.category = m.category
        WHERE p.{is_purchase} GROUP BY p.user_id),
    terms AS (
        SELECT user_id, list(term ORDER BY rn) AS terms
        FROM (SELECT user_id, term,
                     row_number() OVER (PARTITION BY user_id ORDER BY last_ts DESC, term ASC) AS rn
              FROM (SELECT user_id, lower(trim(search_query)) AS term, max(event_ts) AS last_ts
                    FROM lookback
                    WHERE event_type = 'search' AND search_query IS NOT NULL
                      AND lower(trim(search_query)) <> ''
                    GROUP BY user_id, lower(trim(search_query))))
        WHERE rn <= {top_k} GROUP BY user_id),
    review_counts AS (
        SELECT user_id, count(*) AS review_count FROM reviews
        WHERE user_id IS NOT NULL AND review_date <= {snap} GROUP BY user_id)
    SELECT h.user_id,
           {snap} AS snapshot_date,
           h.first_seen_date,
           CAST({snap} - h.first_seen_date AS INTEGER) AS days_since_first_seen,
           CAST({snap} - h.last_event_date AS INTEGER) AS days_since_last_event,
           CAST({snap} - h.last_purchase_date AS INTEGER) AS days_since_last_purchase,
           {window_map('events', 'BIGINT')} AS events_by_window,
           {window_map('purchases', 'BIGINT')} AS purchases_by_window,
           {window_map('revenue', 'DOUBLE')} AS revenue_by_window,
           coalesce(s.sessions_count, 0) AS sessions_count,
           s.conversion_rate, s.cart_abandonment_rate, s.avg_order_value,
           p.mean_purchase_price, p.mean_view_price,
           ps.price_sensitivity,
           coalesce(tc.top, CAST([] AS {NAME_WEIGHT})) AS top_categories,
           coalesce(tb.top, CAST([] AS {NAME_WEIGHT})) AS top_brands,
           coalesce(p.active_hours, CAST(list_transform(range(24), lambda x: 0) AS BIGINT[]))
               AS active_hours,
           coalesce(p.active_weekdays, CAST(list_transform(range(7), lambda x: 0) AS BIGINT[]))
               AS active_weekdays,
           coalesce(t.terms, CAST([] AS VARCHAR[])) AS recent_search_terms,
           coalesce(r.review_count, 0) AS review_count,
           CAST(NULL AS DOUBLE) AS mean_review_sentiment
    FROM history h
    LEFT JOIN session_stats s ON s.user_id = h.user_id
    LEFT JOIN profile p ON p.user_id = h.user_id
    LEFT JOIN sensitivity ps ON ps.user_id = h.user_id
    LEFT JOIN {top('category')} tc ON tc.user_id = h.user_id
    LEFT JOIN {top('brand')} tb ON tb.user_id = h.user_id
    LEFT JOIN terms t ON t.user_id = h.user_id
    LEFT JOIN review_counts r ON r.user_id = h.user_id"""


def write_outputs(con, out_dir: str | Path, snapshot_date: dt.date, *, gap_minutes: float = 30,
                  max_sequence_length: int = 50, windows_days: Sequence[int] = (7, 30, 90),
                  top_k: int = 5, timezone: str = "UTC",
                  features_from_sessions: bool = True) -> dict:
    """Compute sessions and features and write them as Parquet (sessions partitioned by
    ``session_date``, like the Delta table), timing each. The features read the written sessions
    (``features_from_sessions``, as Spark's ``run_features`` reads silver.sessions) or sessionize
    the lookback events again.

    Returns:
        ``sessions_s``, ``features_s`` (wall seconds), ``sessions_cpu_s``, ``features_cpu_s``
        (CPU seconds of this process, all threads), ``sessions`` and ``users`` (rows written).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {}
    t, c = time.monotonic(), time.process_time()
    con.execute(f"""COPY ({sessions_sql(gap_minutes, max_sequence_length, timezone)})
                    TO {_q(out / 'sessions')}
                    (FORMAT parquet, PARTITION_BY (session_date), OVERWRITE_OR_IGNORE true)""")
    result["sessions_s"] = time.monotonic() - t
    result["sessions_cpu_s"] = time.process_time() - c
    t, c = time.monotonic(), time.process_time()
    stored = None
    if features_from_sessions:
        # As run_features does by default: the session statistics read the sessions just written.
        con.execute(f"""CREATE OR REPLACE VIEW stored_sessions AS
                        SELECT * FROM read_parquet({_q(out / 'sessions' / '**' / '*.parquet')},
                                                   hive_partitioning = true,
                                                   hive_types = {{'session_date': DATE}})""")
        stored = "stored_sessions"
    features = user_features_sql(snapshot_date, windows_days, top_k, timezone, gap_minutes,
                                 stored)
    con.execute(f"COPY ({features}) TO {_q(out / 'user_features.parquet')} (FORMAT parquet)")
    result["features_s"] = time.monotonic() - t
    result["features_cpu_s"] = time.process_time() - c
    result["sessions"] = con.execute(
        f"SELECT count(*) FROM read_parquet({_q(out / 'sessions' / '**' / '*.parquet')})").fetchone()[0]
    result["users"] = con.execute(
        f"SELECT count(*) FROM read_parquet({_q(out / 'user_features.parquet')})").fetchone()[0]
    return result


# ---- comparing with the Spark tables -----------------------------------------------------------
def _differs(a: str, b: str, kind: str, tol: float) -> str:
    """SQL true when the values ``a`` and ``b`` differ (doubles within a relative tolerance)."""
    if kind == "double":
        close = f"abs({a} - {b}) <= {tol} * greatest(1.0, abs({b}))"
        return f"(({a}) IS NULL) <> (({b}) IS NULL) OR NOT coalesce({close}, true)"
    if kind == "name_weight":
        names = (f"list_transform({a}, lambda x: x.name) IS DISTINCT FROM "
                 f"list_transform({b}, lambda x: x.name)")
        gaps = (f"list_max(list_transform(range(1, len({a}) + 1), "
                f"lambda i: abs({a}[i].weight - {b}[i].weight)))")
        return f"{names} OR coalesce({gaps}, 0) > {tol}"
    return f"{a} IS DISTINCT FROM {b}"


def compare(con, spark_files: Sequence[str], reference: str, key: str, columns: dict[str, str],
            tol: float = 1e-9, partition: str | None = None) -> dict:
    """Full comparison of a Spark table (its Parquet files) with the reference output.

    Args:
        columns: column -> kind (``exact``, ``double``, ``name_weight``, or ``map_double:<keys>``).
        partition: the Delta partition column, read from the folder names.

    Returns:
        Counts: spark_rows, reference_rows, only_spark, only_reference, differing, and the
        differing count per column (only the non-zero ones).
    """
    files = [p[len("file:"):] if p.startswith("file:") else p for p in spark_files]
    hive = (f", hive_partitioning = true, hive_types = {{'{partition}': DATE}}"
            if partition else "")
    con.execute(f"CREATE OR REPLACE TEMP VIEW _spark AS SELECT * FROM "
                f"read_parquet({_file_list(files)}{hive})")
    ref_hive = ", hive_partitioning = true" if reference.endswith("**/*.parquet") else ""
    con.execute(f"CREATE OR REPLACE TEMP VIEW _ref AS SELECT * FROM "
                f"read_parquet({_q(reference)}{ref_hive})")
    checks = {}
    for col, kind in columns.items():
        a, b = f"s.{col}", f"r.{col}"
        if kind.startswith("map_double:"):
            parts = [f"map_keys({a}) IS DISTINCT FROM map_keys({b})"]
            for k in kind.split(":", 1)[1].split(","):
                parts.append("(" + _differs(f"{a}[{k}]", f"{b}[{k}]", "double", tol) + ")")
            checks[col] = " OR ".join(parts)
        else:
            checks[col] = _differs(a, b, kind, tol)
    sums = ", ".join(f"count_if(s.{key} IS NOT NULL AND r.{key} IS NOT NULL AND ({c})) AS {col}"
                     for col, c in checks.items())
    any_diff = " OR ".join(f"({c})" for c in checks.values())
    row = con.execute(f"""
        SELECT (SELECT count(*) FROM _spark), (SELECT count(*) FROM _ref),
               count_if(r.{key} IS NULL), count_if(s.{key} IS NULL),
               count_if(s.{key} IS NOT NULL AND r.{key} IS NOT NULL AND ({any_diff})), {sums}
        FROM _spark s FULL OUTER JOIN _ref r ON s.{key} = r.{key}""").fetchone()
    out = {"spark_rows": row[0], "reference_rows": row[1], "only_spark": row[2],
           "only_reference": row[3], "differing": row[4]}
    out.update({f"differing.{c}": v for c, v in zip(checks, row[5:]) if v})
    return out


def session_kinds() -> dict[str, str]:
    """Comparison kind of each silver.sessions column (except the key)."""
    doubles = {"duration_s", "revenue"}
    return {c: ("double" if c in doubles else "exact") for c in SESSION_COLUMNS
            if c != "session_id"}


def feature_kinds(windows_days: Sequence[int]) -> dict[str, str]:
    """Comparison kind of each gold.user_features column (except the key)."""
    keys = ",".join(str(w) for w in sorted({int(w) for w in windows_days}))
    doubles = {"conversion_rate", "cart_abandonment_rate", "avg_order_value",
               "mean_purchase_price", "mean_view_price", "price_sensitivity",
               "mean_review_sentiment"}
    kinds = {}
    for c in FEATURE_COLUMNS:
        if c == "user_id":
            continue
        if c in doubles:
            kinds[c] = "double"
        elif c in ("top_categories", "top_brands"):
            kinds[c] = "name_weight"
        elif c == "revenue_by_window":
            kinds[c] = f"map_double:{keys}"
        else:
            kinds[c] = "exact"
    return kinds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Sessions and user features in DuckDB SQL, "
                                                 "from bronze Parquet files.")
    parser.add_argument("--events-files", required=True,
                        help="text file listing the bronze.events Parquet files, one a line")
    parser.add_argument("--reviews-files", default="",
                        help="text file listing the bronze.reviews Parquet files (default: none)")
    parser.add_argument("--snapshot-date", required=True, help="features snapshot, YYYY-MM-DD")
    parser.add_argument("--out", required=True, help="output folder for the Parquet outputs")
    parser.add_argument("--timezone", default="UTC", help="lake time zone (default: %(default)s)")
    parser.add_argument("--gap-minutes", type=float, default=30.0,
                        help="session inactivity gap (default: %(default)s)")
    parser.add_argument("--max-sequence-length", type=int, default=50,
                        help="kept sequence length (default: %(default)s)")
    parser.add_argument("--windows-days", type=int, nargs="+", default=[7, 30, 90],
                        help="feature windows (default: %(default)s)")
    parser.add_argument("--top-k", type=int, default=5, help="top-k length (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="DuckDB threads (default: %(default)s)")
    parser.add_argument("--memory-limit", default="6GB",
                        help="DuckDB memory_limit (default: %(default)s)")
    parser.add_argument("--features-from-events", dest="features_from_sessions",
                        action="store_false",
                        help="sessionize every lookback event for the session statistics instead "
                             "of reading the written sessions (default: read them)")
    parser.add_argument("--json-out", default="", help="write timings/counts here as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    def lines(path: str) -> list[str]:
        return [x for x in Path(path).read_text().splitlines() if x.strip()] if path else []

    t0 = time.monotonic()
    con = connect(args.threads, args.memory_limit, temp_dir=str(Path(args.out) / "_tmp"))
    register_inputs(con, lines(args.events_files), lines(args.reviews_files))
    result = write_outputs(con, args.out, dt.date.fromisoformat(args.snapshot_date),
                           gap_minutes=args.gap_minutes,
                           max_sequence_length=args.max_sequence_length,
                           windows_days=args.windows_days, top_k=args.top_k,
                           timezone=args.timezone,
                           features_from_sessions=args.features_from_sessions)
    return finish(result, t0, args.json_out)


def finish(result: dict, t0: float, json_out: str) -> int:
    """A reference's ending: total seconds since ``t0``, peak RSS and DuckDB's version added to
    ``result``, logged, and written as JSON to ``json_out`` (when given)."""
    import duckdb

    result["total_s"] = time.monotonic() - t0
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["duckdb_version"] = duckdb.__version__
    log.info("reference: %s", result)
    if json_out:
        Path(json_out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
