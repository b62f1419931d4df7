"""Table registry and the only code that writes tables.

Every table's name, location, schema, partitioning, comment and CHECK constraints live in
``TABLES``; stages look tables up by name (``bronze.events``) and never build paths themselves.
Writes are idempotent: ``overwrite_where`` replaces exactly the rows a run owns (Delta
``replaceWhere``), ``merge_insert`` adds rows whose key is not there yet (Delta MERGE).
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from typing import Iterable

from delta import exceptions as delta_exceptions
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.utils import AnalysisException

from demandlake import schemas
from demandlake.config import Config

log = logging.getLogger(__name__)

LAYERS = ("bronze", "silver", "gold", "ops")


@dataclass(frozen=True)
class TableSpec:
    """One table: everything a reader, writer or analyst needs to know about it."""

    name: str
    schema: T.StructType
    partition_by: tuple[str, ...] = ()
    comment: str = ""
    constraints: dict[str, str] = field(default_factory=dict)

    @property
    def layer(self) -> str:
        return self.name.split(".")[0]

    @property
    def short(self) -> str:
        return self.name.split(".")[1]

    def location(self, cfg: Config) -> str:
        return f"{cfg.lake_uri.rstrip('/')}/{self.layer}/{self.short}"


TABLES: dict[str, TableSpec] = {}


def register(spec: TableSpec) -> TableSpec:
    """Add a table to the registry (modules defining stage outputs call this at import)."""
    if spec.layer not in LAYERS:
        raise ValueError(f"unknown layer in {spec.name}")
    TABLES[spec.name] = spec
    return spec


register(TableSpec(
    "bronze.events", schemas.BRONZE_EVENTS, ("event_date",),
    "Typed, validated, deduplicated behaviour events from every source",
    {"price_non_negative": "price IS NULL OR price >= 0",
     "known_event_type": "event_type IN ('view','cart','remove_from_cart','purchase','search','fav')"},
))
register(TableSpec(
    "bronze.reviews", schemas.BRONZE_REVIEWS, ("review_date",),
    "Typed, validated, deduplicated product reviews",
    {"rating_1_to_5": "rating IS NULL OR rating BETWEEN 1 AND 5",
     "label_binary": "label IS NULL OR label IN (0, 1)"},
))
register(TableSpec(
    "bronze.quarantine", schemas.QUARANTINE, ("ingest_date",),
    "Records that failed parsing or validation, with the raw text and the reason",
))
register(TableSpec(
    "ops.runs", schemas.RUNS, (),
    "One row per stage execution: status, duration and counts",
))
register(TableSpec(
    "ops.quality_checks", schemas.QUALITY_CHECKS, (),
    "Data-quality checks run before publishing each gold table (quality.py), passed or not",
))


def spec(name: str) -> TableSpec:
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"unknown table {name!r}; known: {sorted(TABLES)}") from None


def _quote(name: str) -> str:
    return ".".join(f"`{p}`" for p in name.split("."))


_ENSURED: set[tuple[int, str, str]] = set()


def ensure_table(spark: SparkSession, cfg: Config, name: str) -> TableSpec:
    """Create the Delta table (and its schema/database) if missing and register it by name.

    Cheap after the first call per session and location (remembered in ``_ENSURED``); a catalog
    reset (tests) is detected because the catalog then lacks the table.
    """
    s = spec(name)
    key = (id(spark), s.name, s.location(cfg))
    if key in _ENSURED and spark.catalog.tableExists(s.name):
        return s
    spark.sql(f"CREATE DATABASE IF NOT EXISTS `{s.layer}`")
    _clear_interrupted_create(spark, s.location(cfg))
    builder = (
        DeltaTable.createIfNotExists(spark)
        .tableName(s.name)
        .addColumns(s.schema)
        .location(s.location(cfg))
    )
    if s.partition_by:
        builder = builder.partitionedBy(*s.partition_by)
    if s.comment:
        builder = builder.comment(s.comment)
    # CHECK constraints are table properties: set at creation they cost no extra commits.
    for cname, expr in s.constraints.items():
        builder = builder.property(f"delta.constraints.{cname.lower()}", expr)
    # Two runs starting on a fresh lake may both create the table: the loser's commit fails with
    # a protocol/metadata conflict, and its retry finds the table there.
    _with_retry(builder.execute, f"create {name}")
    if s.constraints:
        existing = {
            k.split(".", 2)[-1].lower()
            for k, _ in DeltaTable.forName(spark, s.name).detail().select("properties")
            .first()[0].items() if k.startswith("delta.constraints.")
        }
        for cname, expr in s.constraints.items():
            if cname.lower() not in existing:
                spark.sql(f"ALTER TABLE {_quote(s.name)} ADD CONSTRAINT {cname} CHECK ({expr})")
    _ENSURED.add(key)
    return s


_COMMITTED = re.compile(r"^\d{20}\.(json|checkpoint.*\.parquet)$|^_last_checkpoint$")


def _clear_interrupted_create(spark: SparkSession, location: str, min_age_s: float = 10.0) -> None:
    """Remove what a process killed while creating a table left behind, so a rerun can create it.

    Delta's first commit is written as a temporary file and renamed; a process killed between the
    two leaves ``_delta_log/`` with only temporary files, and Delta then refuses to create a table
    at that "non-empty location that is not a Delta table" forever. Only that exact debris is
    removed: no committed log entry, nothing outside ``_delta_log/``, and every file older than
    ``min_age_s`` (so a create in progress elsewhere is left alone). Anything else is left for
    Delta to report.
    """
    jvm = spark.sparkContext._jvm
    root = jvm.org.apache.hadoop.fs.Path(location)
    fs = root.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    delta_log = jvm.org.apache.hadoop.fs.Path(root, "_delta_log")
    if not fs.exists(delta_log):
        return
    # The usual case, a created table, is answered by one listing of _delta_log (never of data).
    if any(_COMMITTED.match(st.getPath().getName()) for st in fs.listStatus(delta_log)):
        return
    files, now_ms = [], time.time() * 1000
    it = fs.listFiles(root, True)
    while it.hasNext():
        status = it.next()
        files.append((status.getPath(), status.getModificationTime()))
    log_prefix = delta_log.toUri().getPath().rstrip("/") + "/"
    for path, modified in files:
        inside_log = path.toUri().getPath().startswith(log_prefix)
        if (not inside_log or _COMMITTED.match(path.getName())
                or now_ms - modified < min_age_s * 1000):
            return
    log.warning("%s: removing the uncommitted log of an interrupted table creation (%d files)",
                location, len(files))
    fs.delete(delta_log, True)


def ensure_all(spark: SparkSession, cfg: Config, names: Iterable[str] | None = None) -> None:
    """Register every known table (cheap when they exist): makes `spark-sql` see them all."""
    for name in list(TABLES) if names is None else names:  # an empty list registers none
        ensure_table(spark, cfg, name)


def read(spark: SparkSession, cfg: Config, name: str) -> DataFrame:
    """Read a table by name (creating it empty when it was never written)."""
    s = ensure_table(spark, cfg, name)
    return spark.read.format("delta").load(s.location(cfg))


def _existing_location(spark: SparkSession, cfg: Config, name: str) -> str:
    """The table's location, creating the table only when none is there yet.

    A table already at its location is taken as it is: creating it again would compare its
    schema with the declared one, and a question about its files, id or version is not the
    place to fail on a schema difference (the writes check that).
    """
    location = spec(name).location(cfg)
    if not is_delta_table(spark, location):
        ensure_table(spark, cfg, name)
    return location


def _detail(spark: SparkSession, cfg: Config, name: str):
    """The table's ``DESCRIBE DETAIL`` row (from the Delta log; no scan of the data)."""
    return DeltaTable.forPath(spark, _existing_location(spark, cfg, name)).detail().first()


def has_files(spark: SparkSession, cfg: Config, name: str) -> bool:
    """Whether the table's current version holds any data file."""
    return int(_detail(spark, cfg, name)["numFiles"]) > 0


def table_bytes(spark: SparkSession, cfg: Config, name: str) -> int:
    """Bytes of the table's current data files (from the Delta log); 0 when it does not exist."""
    if not table_exists(spark, cfg, name):
        return 0
    return int(_detail(spark, cfg, name)["sizeInBytes"] or 0)


def table_id(spark: SparkSession, cfg: Config, name: str) -> str:
    """The Delta table's id: new for every creation, so a table dropped and created again at
    the same place (whose version numbers start over) is told apart from the old one."""
    return str(_detail(spark, cfg, name)["id"])


def table_version(spark: SparkSession, cfg: Config, name: str) -> int:
    location = _existing_location(spark, cfg, name)
    return int(DeltaTable.forPath(spark, location).history(1).first()["version"])


def _conform(df: DataFrame, s: TableSpec) -> DataFrame:
    """Select the table's columns in order with its types; a missing column is a bug, not a null."""
    missing = [f.name for f in s.schema.fields if f.name not in df.columns]
    if missing:
        raise ValueError(f"{s.name}: output lacks columns {missing}")
    return df.select([F.col(f.name).cast(f.dataType).alias(f.name) for f in s.schema.fields])


# Delta's own classes for a commit that lost an optimistic-concurrency race (delta-spark turns
# the JVM's io.delta.exceptions.* into these); anything else is a real failure.
CONCURRENT_COMMIT = (
    delta_exceptions.DeltaConcurrentModificationException, delta_exceptions.ConcurrentWriteException,
    delta_exceptions.MetadataChangedException, delta_exceptions.ProtocolChangedException,
    delta_exceptions.ConcurrentAppendException, delta_exceptions.ConcurrentDeleteReadException,
    delta_exceptions.ConcurrentDeleteDeleteException,
    delta_exceptions.ConcurrentTransactionException,
)


def _with_retry(action, what: str, attempts: int = 5):
    """Retry a Delta commit that lost an optimistic-concurrency race (the losing run re-reads).

    Runs ``action`` under ``faults.kill_point(what)``: a no-op unless the kill harness armed
    that point (``DEMANDLAKE_KILL_AT``).
    """
    from demandlake.faults import kill_point

    for attempt in range(1, attempts + 1):
        try:
            with kill_point(what):
                return action()
        except CONCURRENT_COMMIT:
            if attempt == attempts:
                raise
            log.warning("%s: concurrent commit, retrying (%d/%d)", what, attempt, attempts)
            time.sleep(0.5 * attempt)


def overwrite_where(spark: SparkSession, cfg: Config, name: str, df: DataFrame,
                    condition: str) -> None:
    """Atomically replace exactly the rows matching ``condition`` with ``df``.

    Args:
        condition: SQL predicate built by the caller from validated values (dates, run ids),
            never from user text. Every row of ``df`` must satisfy it (Delta checks this).
    """
    s = ensure_table(spark, cfg, name)
    out = _conform(df, s)
    _with_retry(lambda: (
        out.write.format("delta").mode("overwrite").option("replaceWhere", condition)
        .save(s.location(cfg))
    ), f"overwrite {name}")


def overwrite_all(spark: SparkSession, cfg: Config, name: str, df: DataFrame) -> None:
    """Replace the whole table (for small derived tables recomputed from scratch)."""
    s = ensure_table(spark, cfg, name)
    out = _conform(df, s)
    _with_retry(lambda: out.write.format("delta").mode("overwrite").save(s.location(cfg)),
                f"overwrite {name}")


def append_once(spark: SparkSession, cfg: Config, name: str, df: DataFrame, txn_id: str) -> None:
    """Append ``df`` unless a write with the same ``txn_id`` was already committed.

    Delta's idempotent writes (``txnAppId``/``txnVersion``): a retried write of the same
    records, after a commit whose answer was lost, is skipped by Delta itself. One plain append
    job instead of a MERGE's join, for the small ops tables whose rows each carry a unique run id.
    """
    s = ensure_table(spark, cfg, name)
    out = _conform(df, s)
    _with_retry(lambda: (
        out.write.format("delta").mode("append").option("txnAppId", txn_id)
        .option("txnVersion", 0).save(s.location(cfg))
    ), f"append {name}")


def merge_insert(spark: SparkSession, cfg: Config, name: str, df: DataFrame,
                 keys: Iterable[str], prune: str | None = None) -> dict[str, int]:
    """Insert the rows of ``df`` whose key is not in the table yet (idempotent append).

    Args:
        keys: columns that identify a row.
        prune: optional extra predicate on the target (``t.``-prefixed) to limit the files read.

    Returns:
        The MERGE's own counts (``num_inserted_rows``, ...), taken from this commit.
    """
    s = ensure_table(spark, cfg, name)
    out = _conform(df, s)
    cond = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
    if prune:
        cond = f"({prune}) AND {cond}"
    result = _with_retry(lambda: (
        DeltaTable.forPath(spark, s.location(cfg)).alias("t")
        .merge(out.alias("s"), cond).whenNotMatchedInsertAll().execute()
    ), f"merge {name}")
    row = result.first() if result is not None else None
    return {k: int(v) for k, v in row.asDict().items()} if row is not None else {}


def merge_upsert(spark: SparkSession, cfg: Config, name: str, df: DataFrame,
                 keys: Iterable[str], prune: str | None = None,
                 delete_unmatched: str | None = None) -> None:
    """Update matching rows, insert new ones, optionally delete target rows under
    ``delete_unmatched`` (a ``t.`` predicate) that the source no longer has."""
    s = ensure_table(spark, cfg, name)
    out = _conform(df, s)
    cond = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
    if prune:
        cond = f"({prune}) AND {cond}"

    def action():
        m = (DeltaTable.forPath(spark, s.location(cfg)).alias("t").merge(out.alias("s"), cond)
             .whenMatchedUpdateAll().whenNotMatchedInsertAll())
        if delete_unmatched:
            m = m.whenNotMatchedBySourceDelete(condition=delete_unmatched)
        m.execute()

    _with_retry(action, f"upsert {name}")


def is_delta_table(spark: SparkSession, location: str) -> bool:
    """Whether ``location`` holds a Delta table now, as another process may just have made it.

    ``DeltaTable.isDeltaTable`` answers from the session's cached log of the path, which it never
    updates: once it has seen the log folder before the first commit was in it (a writer in
    another process creating the table: Delta makes the folder before it writes the data), it
    kept answering False for that path for the cache's lifetime (an hour). The SQL endpoint, whose
    refresh ran into such a moment, then never named the new table. ``DeltaTable.forPath``
    updates the log, so a False is checked with it.
    """
    try:
        if DeltaTable.isDeltaTable(spark, location):
            return True
        DeltaTable.forPath(spark, location)
        return True
    except AnalysisException:
        return False


def table_exists(spark: SparkSession, cfg: Config, name: str) -> bool:
    return is_delta_table(spark, spec(name).location(cfg))


def read_existing(spark: SparkSession, cfg: Config, name: str) -> DataFrame | None:
    """The table by its location, or None when there is none: nothing is created and no catalog
    is asked, so a reader of any catalog (or of several lakes) can use it."""
    location = spec(name).location(cfg)
    return spark.read.format("delta").load(location) if is_delta_table(spark, location) else None


# ---- silver / gold tables of sessions.py and features/ (built in pipeline/transform.py) ---------
register(TableSpec(
    "silver.sessions", schemas.SILVER_SESSIONS, ("session_date",),
    "One row per user session (events split by an inactivity gap of sessions.gap_minutes)",
    {"session_counts_add_up": "n_events = n_views + n_carts + n_remove_from_cart + n_purchases "
                              "+ n_searches + n_favs",
     "session_facts_consistent": "session_end >= session_start AND duration_s >= 0"
                                 " AND converted = (n_purchases > 0)"
                                 " AND (revenue IS NULL OR revenue >= 0)"},
))
register(TableSpec(
    "gold.user_features", schemas.GOLD_USER_FEATURES, ("snapshot_date",),
    "Point-in-time user features: one row per user active up to snapshot_date",
    {"rates_in_0_1": "(conversion_rate IS NULL OR conversion_rate BETWEEN 0 AND 1)"
                     " AND (cart_abandonment_rate IS NULL OR cart_abandonment_rate BETWEEN 0 AND 1)"
                     " AND (price_sensitivity IS NULL OR price_sensitivity BETWEEN 0 AND 1)",
     "recency_ordered": "days_since_last_event >= 0 AND days_since_first_seen >= days_since_last_event"
                        " AND (days_since_last_purchase IS NULL"
                        " OR days_since_last_purchase >= days_since_last_event)",
     "counts_well_formed": "(review_count IS NULL OR review_count >= 0)"
                           " AND size(active_hours) = 24 AND size(active_weekdays) = 7"},
))
register(TableSpec(
    "gold.vocabularies", schemas.GOLD_VOCABULARIES, (),
    "Token -> id maps of the sequence model, built from the training window only",
    {"known_vocab": "vocab IN ('item', 'category', 'event_type')",
     "ids_and_counts_non_negative": "id >= 0 AND count >= 0"},
))
register(TableSpec(
    "gold.sequence_examples", schemas.GOLD_SEQUENCE_EXAMPLES, ("cutoff_date",),
    "Padded event sequences before a cutoff, with labels from after it (train/validation/test/score)",
    {"known_split": "split IN ('train', 'validation', 'test', 'score')",
     "sequences_aligned": "size(item_ids) = size(category_ids) AND size(item_ids) = size(event_type_ids)"
                          " AND size(item_ids) = size(time_gaps) AND size(item_ids) = size(price_buckets)"
                          " AND seq_len BETWEEN 1 AND size(item_ids)",
     "labels_binary_unless_score": "(label_purchase IS NULL OR label_purchase IN (0, 1))"
                                   " AND (split = 'score') = (label_purchase IS NULL)"},
))
register(TableSpec(
    "gold.review_corpus", schemas.GOLD_REVIEW_CORPUS, (),
    "Normalized review texts with binary labels and a deterministic split, for the sentiment model",
    {"corpus_values_valid": "(label IS NULL OR label IN (0, 1)) AND n_chars > 0"
                            " AND split IN ('train', 'validation', 'test')"},
))


def merge_changes(spark: SparkSession, cfg: Config, name: str, upserts: DataFrame,
                  deletes: DataFrame, keys: Iterable[str], prune: str | None = None) -> dict[str, int]:
    """One atomic MERGE that upserts ``upserts`` and deletes the target rows keyed in ``deletes``.

    For partial recomputations whose old rows may vanish (a late event merges two sessions):
    ``merge_upsert``'s ``delete_unmatched`` takes a predicate on the target only, which cannot say
    "rows of these users"; here the caller names the rows to drop by key instead.

    Args:
        upserts: rows in the table's shape.
        deletes: the key columns of target rows to remove; keys also in ``upserts`` are upserted.
        keys: columns that identify a row (non-null).
        prune: optional extra predicate on the target (``t.``-prefixed) to limit the files read.

    Returns:
        The MERGE's own counts (``num_inserted_rows``, ``num_deleted_rows``, ...).
    """
    s = ensure_table(spark, cfg, name)
    keys = list(keys)
    op = "_merge_op"
    up = _conform(upserts, s).withColumn(op, F.lit("upsert"))
    gone = (deletes.select(*[F.col(k).cast(s.schema[k].dataType).alias(k) for k in keys])
            .join(up.select(*keys), on=keys, how="left_anti"))
    gone = gone.select(*[F.col(f.name) if f.name in keys else F.lit(None).cast(f.dataType).alias(f.name)
                         for f in s.schema.fields], F.lit("delete").alias(op))
    source = up.unionByName(gone)
    cond = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
    if prune:
        cond = f"({prune}) AND {cond}"
    assign = {f"`{f.name}`": f"s.`{f.name}`" for f in s.schema.fields}
    result = _with_retry(lambda: (
        DeltaTable.forPath(spark, s.location(cfg)).alias("t").merge(source.alias("s"), cond)
        .whenMatchedDelete(condition=f"s.{op} = 'delete'")
        .whenMatchedUpdate(condition=f"s.{op} = 'upsert'", set=assign)
        .whenNotMatchedInsert(condition=f"s.{op} = 'upsert'", values=assign)
        .execute()
    ), f"merge changes {name}")
    row = result.first() if result is not None else None
    return {k: int(v) for k, v in row.asDict().items()} if row is not None else {}


# ---- gold tables of scoring/ (written by pipeline/score.py; docs/SCORING.md) --------------------
register(TableSpec(
    "gold.demand_forecasts", schemas.GOLD_DEMAND_FORECASTS, ("run_date",),
    "Nightly purchase forecast per active user: probability, likely categories, band, source",
    {"forecast_probability_in_0_1": "purchase_probability BETWEEN 0 AND 1",
     "forecast_known_band": "score_band IN ('high', 'medium', 'low')",
     "forecast_source_matches_flag": "is_fallback = (source LIKE 'fallback:%')"},
))
register(TableSpec(
    "gold.user_profiles", schemas.GOLD_USER_PROFILES, ("run_date",),
    "Nightly profile per active user: segment, value tier, preferences, sentiment, churn risk",
    {"profile_churn_risk_in_0_1": "churn_risk BETWEEN 0 AND 1",
     "profile_probability_in_0_1": "purchase_probability BETWEEN 0 AND 1",
     "profile_known_tier": "value_tier IN ('high', 'medium', 'low')",
     "profile_seen_ordered": "first_seen <= last_seen AND last_seen <= run_date"},
))
register(TableSpec(
    "gold.recommendations", schemas.GOLD_RECOMMENDATIONS, ("run_date",),
    "Nightly top-K items per user (ALS on implicit feedback, category popularity fill-ins)",
    {"recommendation_rank_positive": "rank >= 1",
     "recommendation_known_source": "source IN ('als', 'category_popularity')"},
))
register(TableSpec(
    "gold.review_sentiment", schemas.GOLD_REVIEW_SENTIMENT, (),
    "Sentiment of every review by the serving sentiment model (one row per review)",
    {"review_probability_in_0_1": "probability BETWEEN 0 AND 1",
     "review_known_label": "label IN ('negative', 'neutral', 'positive')"},
))
register(TableSpec(
    "gold.item_sentiment", schemas.GOLD_ITEM_SENTIMENT, (),
    "Weekly review sentiment per item and per category, with the change in negative share",
    {"item_sentiment_known_level": "level IN ('item', 'category')",
     "item_sentiment_shares_in_0_1": "share_negative BETWEEN 0 AND 1 "
                                     "AND mean_probability BETWEEN 0 AND 1"},
))
register(TableSpec(
    "gold.complaint_terms", schemas.GOLD_COMPLAINT_TERMS, ("run_date",),
    "Terms most characteristic of negative reviews per category (log-odds vs positive reviews)",
))


# ---- ops table of privacy.py (right to erasure) ---------------------------------------------------
register(TableSpec(
    "ops.forget_requests", schemas.FORGET_REQUESTS, (),
    "One row per erasure request: keyed hashes of the user ids, rows deleted per table, status",
))
