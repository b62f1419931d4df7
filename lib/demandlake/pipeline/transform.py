"""Stages that turn bronze into silver.sessions and the gold feature tables.

Each stage reads its inputs through ``lake``, calls the pure transforms of ``sessions`` and
``features``, writes idempotently (MERGE on a key, ``replaceWhere`` on the rows it owns, or a full
overwrite for full recomputes), logs its counts in ops.runs through ``runlog.tracked`` and returns
them.

Late events (``run_sessions``): the run passes the event dates its ingest wrote to (``dates``;
the run date alone by default). Affected users are those with any bronze event on those dates;
their sessions with ``session_date`` in ``[min(dates) - 1, max(dates) + 1]`` are recomputed from
their events one day wider on each side (so a session crossing midnight into or out of the range
is seen whole) and MERGEd: changed/new sessions upserted, their sessions in the range that no
longer exist (e.g. two sessions joined by a late event) deleted, in one commit. This is exact as
long as no session lasts more than 24 hours of continuous activity.
"""
from __future__ import annotations

import datetime as dt
import logging
from typing import Iterable

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from demandlake import lake, quality, runlog
from demandlake.config import Config
from demandlake.features.review_corpus import review_corpus
from demandlake.features.sequences import (
    SCORE_SPLIT, SPLITS, build_examples, build_vocabularies, plan_cutoffs, vocabulary_through,
)
from demandlake.features.user_features import build_user_features
from demandlake.sessions import sessionize
from demandlake.spark import temporary_conf

log = logging.getLogger(__name__)

DAY = dt.timedelta(days=1)
# sessionize collects each session's events (collect_list of structs). Spark's default object
# hash aggregate for that falls back to sorting after 128 keys a task; the sort aggregate, which
# sorts once, spends 11% less CPU on sessionize at 5M events (bench/stage_ab.py --pair sessions,
# docs/BENCHMARKS.md), with the same sessions. Scoped to the sessions stage's queries.
SESSIONIZE_CONF = {"spark.sql.execution.useObjectHashAggregateExec": "false"}
TRAINING_SPLITS_PREDICATE = "split IN (" + ", ".join(f"'{s}'" for s in SPLITS) + ")"


def _timezone(cfg: Config) -> str:
    return cfg.get("lake.timezone", "UTC") or "UTC"


def _date_sql(d: dt.date) -> str:
    return f"DATE'{d.isoformat()}'"


def sessionize_kwargs(cfg: Config) -> dict:
    """``sessionize``'s settings from the config (gap, sequence length, time zone)."""
    return {"gap_minutes": float(cfg.get("sessions.gap_minutes", 30)),
            "max_sequence_length": int(cfg.get("sessions.max_sequence_length", 50)),
            "timezone": _timezone(cfg)}


def run_sessions(spark: SparkSession, cfg: Config, run_date: dt.date,
                 dates: Iterable[dt.date] | None = None, full: bool = False) -> dict[str, int]:
    """Sessionize new (and late) bronze events into silver.sessions.

    Args:
        run_date: the run's logical date.
        dates: event dates the run's ingest wrote to (late dates included); default ``[run_date]``.
        full: recompute every session (also done when silver.sessions is empty).

    Returns:
        Counts: full (1/0), affected_users, sessions (rows in the table after a full run),
        inserted, updated, deleted.
    """
    transform = sessionize(**sessionize_kwargs(cfg))
    with runlog.tracked(spark, cfg, "sessions", run_date) as run, \
            temporary_conf(spark, SESSIONIZE_CONF):
        events = lake.read(spark, cfg, "bronze.events")
        current = lake.read(spark, cfg, "silver.sessions")
        if full or current.limit(1).count() == 0:
            lake.overwrite_all(spark, cfg, "silver.sessions", events.transform(transform))
            counts = {"full": 1, "sessions": lake.read(spark, cfg, "silver.sessions").count()}
            run.add(**counts)
            return counts
        days = sorted(set(dates or [run_date]))
        lo, hi = days[0] - DAY, days[-1] + DAY
        affected = events.where(F.col("event_date").isin(days)).select("user_id").distinct()
        nearby = events.where(F.col("event_date").between(lo - DAY, hi + DAY))
        fresh = (nearby.join(affected, on="user_id", how="left_semi").transform(transform)
                 .where(F.col("session_date").between(lo, hi)))
        in_range = f"session_date BETWEEN {_date_sql(lo)} AND {_date_sql(hi)}"
        stale = (current.where(in_range).join(affected, on="user_id", how="left_semi")
                 .select("session_id"))
        merged = lake.merge_changes(spark, cfg, "silver.sessions", fresh, stale, ["session_id"],
                                    prune=f"t.{in_range}")
        counts = {"full": 0, "affected_users": affected.count(),
                  "inserted": merged.get("num_inserted_rows", 0),
                  "updated": merged.get("num_updated_rows", 0),
                  "deleted": merged.get("num_deleted_rows", 0)}
        run.add(**counts, first_date=lo, last_date=hi)
        return counts


def features_kwargs(cfg: Config) -> dict:
    """``build_user_features``' settings from the config (windows, top-k, time zone, gap)."""
    return {"windows_days": cfg.get("features.windows_days", [7, 30, 90]),
            "top_k": int(cfg.get("features.top_k", 5)), "timezone": _timezone(cfg),
            "gap_minutes": float(cfg.get("sessions.gap_minutes", 30))}


def review_sentiment_as_of(spark: SparkSession, cfg: Config, snapshot_date: dt.date) -> DataFrame:
    """``(user_id, sentiment)``: the serving model's probability that each of the user's reviews
    is positive, for the reviews visible on ``snapshot_date`` (dated on or before it, or
    undated), from gold.review_sentiment (the review_sentiment stage runs before features)."""
    visible = F.col("review_date").isNull() | (F.col("review_date") <= F.lit(snapshot_date))
    return (lake.read(spark, cfg, "gold.review_sentiment")
            .where(F.col("user_id").isNotNull() & visible)
            .select("user_id", F.col("probability").alias("sentiment")))


def run_features(spark: SparkSession, cfg: Config, snapshot_date: dt.date,
                 sentiment: DataFrame | None = None) -> dict[str, int]:
    """Recompute gold.user_features for one snapshot date (replaces exactly that partition).

    Args:
        snapshot_date: features see events with event_date <= this date only.
        sentiment: ``(user_id, sentiment)`` rows; default: ``review_sentiment_as_of`` (what the
            review_sentiment stage has scored), so ``mean_review_sentiment`` is the mean of the
            user's scored reviews (null for a user without one).

    The session statistics read silver.sessions (so ``run_sessions`` runs first, as in the
    nightly pipeline) unless ``features.sessions_from_silver`` is false.

    Returns:
        Counts: users.
    """
    with runlog.tracked(spark, cfg, "features", snapshot_date) as run:
        events = lake.read(spark, cfg, "bronze.events").where(F.col("event_date") <= snapshot_date)
        sessions = (lake.read(spark, cfg, "silver.sessions")
                    if cfg.get("features.sessions_from_silver", True) else None)
        if sessions is not None and sessions.limit(1).count() == 0:
            sessions = None  # never sessionized: every user would be rebuilt from the events
        if sentiment is None:
            sentiment = review_sentiment_as_of(spark, cfg, snapshot_date)

        features = build_user_features(
            events, lake.read(spark, cfg, "bronze.reviews"), snapshot_date,
            sentiment=sentiment, sessions=sessions, **features_kwargs(cfg))
        features = features.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            checks = quality.gate(spark, cfg, "gold.user_features", features, snapshot_date,
                                  run.run_id, "features")
            run.add(**quality.summary(checks))
            lake.overwrite_where(spark, cfg, "gold.user_features", features,
                                 f"snapshot_date = {_date_sql(snapshot_date)}")
        finally:
            features.unpersist()
        users = (lake.read(spark, cfg, "gold.user_features")
                 .where(F.col("snapshot_date") == snapshot_date).count())
        run.add(users=users)
        return {"users": users}


def history_bounds(events: DataFrame, start_quantile: float) -> tuple[dt.date, dt.date]:
    """(first, last) date of the event history; first is the ``start_quantile`` of event dates,
    so a handful of stray old events (Taobao has some from September) do not stretch the cutoff
    plan over empty months."""
    row = events.agg(
        F.percentile_approx(F.unix_date(F.col("event_date")), float(start_quantile)).alias("first"),
        F.max("event_date").alias("last"),
    ).first()
    if row is None or row["last"] is None:
        raise ValueError("bronze.events is empty: nothing to build sequences from")
    return dt.date(1970, 1, 1) + dt.timedelta(days=int(row["first"])), row["last"]


def training_example_settings(cfg: Config) -> dict:
    """``build_examples``' settings for labelled training examples, from the config: the one
    place they are read (the training examples here, and the champion's validation rows that
    ``training.runner`` rebuilds with the champion's vocabulary must differ only in their ids)."""
    return {"max_length": int(cfg["sequences.max_length"]),
            "horizon_days": int(cfg.get("sequences.horizon_days", 7)),
            "price_buckets": cfg.get("sequences.price_buckets",
                                     [0, 10, 20, 50, 100, 200, 500, 1000]),
            "with_labels": True, "min_events": int(cfg.get("sequences.min_events", 2))}


def run_sequence_examples(spark: SparkSession, cfg: Config,
                          run_date: dt.date | None = None) -> dict[str, int]:
    """Rebuild gold.vocabularies and the training splits of gold.sequence_examples from the
    whole bronze history (rows of split ``score``, if any were stored, are kept).

    Returns:
        Counts: cutoffs, examples per split, positive train labels, vocabulary sizes.
    """
    horizon = int(cfg.get("sequences.horizon_days", 7))
    with runlog.tracked(spark, cfg, "sequence_examples", run_date) as run:
        events = lake.read(spark, cfg, "bronze.events")
        first, last = history_bounds(events, cfg.get("sequences.history_start_quantile", 0.001))
        fractions = cfg.get("sequences.split", {"train": 0.6, "validation": 0.2, "test": 0.2})
        plan = plan_cutoffs(first, last, int(cfg.get("sequences.cutoff_step_days", 1)), horizon,
                            fractions)
        missing = [s for s in SPLITS if s not in {split for _, split in plan}]
        if missing:
            log.warning("sequence examples: no %s cutoffs in %s..%s with a %d-day horizon (the "
                        "splits need gaps of a horizon between them); a model trained without "
                        "validation data is not promoted: more days of history are needed",
                        "/".join(missing), first, last, horizon)
        if not plan:  # a new lake's first days: nothing to learn from yet
            run.add(cutoffs=0, history_first=first, history_last=last)
            return {"cutoffs": 0}
        through = vocabulary_through(plan, horizon)
        vocab = build_vocabularies(events, through, int(cfg.get("sequences.min_item_count", 2)))
        lake.overwrite_all(spark, cfg, "gold.vocabularies", vocab)
        examples = build_examples(events, lake.read(spark, cfg, "gold.vocabularies"), plan,
                                  **training_example_settings(cfg))
        lake.overwrite_where(spark, cfg, "gold.sequence_examples", examples,
                             TRAINING_SPLITS_PREDICATE)
        stored = lake.read(spark, cfg, "gold.sequence_examples").where(TRAINING_SPLITS_PREDICATE)
        counts = {"cutoffs": len(plan)}
        for row in stored.groupBy("split").agg(F.count(F.lit(1)).alias("n"),
                                               F.sum("label_purchase").alias("pos")).collect():
            counts[f"examples_{row['split']}"] = int(row["n"])
            counts[f"positives_{row['split']}"] = int(row["pos"] or 0)
        for row in lake.read(spark, cfg, "gold.vocabularies").groupBy("vocab").count().collect():
            counts[f"vocab_{row['vocab']}"] = int(row["count"])
        run.add(**counts, history_first=first, history_last=last, vocab_through=through,
                splits_missing=",".join(missing))
        log.info("sequence examples: %s", counts)
        return counts


def build_scoring_sequences(spark: SparkSession, cfg: Config, run_date: dt.date,
                            vocab: DataFrame | None = None) -> DataFrame:
    """Latest sequences of every user with an event on or before ``run_date`` (split ``score``,
    cutoff ``run_date + 1``, labels null), coded with ``vocab`` (gold.vocabularies rows; the
    current table when None; unseen tokens -> 1). Scoring passes the serving model's own
    vocabulary (``pipeline.score.model_vocabulary``).

    Returns:
        A lazy DataFrame of gold.sequence_examples rows (the caller scores and writes it).

    Raises:
        RuntimeError: when no vocabulary was built yet.
    """
    with runlog.tracked(spark, cfg, "score_sequences", run_date) as run:
        vocab = lake.read(spark, cfg, "gold.vocabularies") if vocab is None else vocab
        built_through = vocab.agg(F.max("built_through")).first()[0]
        if built_through is None:
            raise RuntimeError("gold.vocabularies is empty: run run_sequence_examples first")
        events = lake.read(spark, cfg, "bronze.events").where(F.col("event_date") <= run_date)
        cutoff = run_date + DAY
        run.add(cutoff_date=cutoff, vocab_built_through=built_through)
        return build_examples(
            events, vocab, [(cutoff, SCORE_SPLIT)],
            max_length=int(cfg["sequences.max_length"]),
            horizon_days=int(cfg.get("sequences.horizon_days", 7)),
            price_buckets=cfg.get("sequences.price_buckets", [0, 10, 20, 50, 100, 200, 500, 1000]),
            with_labels=False, min_events=1,
        )


def run_review_corpus(spark: SparkSession, cfg: Config,
                      run_date: dt.date | None = None) -> dict[str, int]:
    """Rebuild gold.review_corpus from all of bronze.reviews (a full recompute).

    Returns:
        Counts: reviews_read, rows, excluded_no_text, and rows per split.
    """
    with runlog.tracked(spark, cfg, "review_corpus", run_date) as run:
        reviews = lake.read(spark, cfg, "bronze.reviews")
        corpus = reviews.transform(
            review_corpus(cfg.get("reviews.split", {"train": 0.8, "validation": 0.1, "test": 0.1})))
        lake.overwrite_all(spark, cfg, "gold.review_corpus", corpus)
        read = reviews.count()
        stored = lake.read(spark, cfg, "gold.review_corpus")
        by_split = {r["split"]: int(r["count"]) for r in stored.groupBy("split").count().collect()}
        rows = sum(by_split.values())
        counts = {"reviews_read": read, "rows": rows, "excluded_no_text": read - rows,
                  **{f"rows_{s}": by_split.get(s, 0) for s in SPLITS}}
        run.add(**counts)
        return counts
