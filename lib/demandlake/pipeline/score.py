"""Nightly scoring stages: forecasts, profiles and recommendations; review sentiment.

``run_score`` scores every active user of the run date (a user with an event in the last
``scoring.active_days`` days, from ``gold.user_features``) and writes, replacing exactly the run
date's partition of each (``replaceWhere``), so a rerun leaves the same rows:

* gold.demand_forecasts  (sequence model through a pandas UDF, fallback for the rest)
* gold.user_profiles     (KMeans segments, value tier, preferences, sentiment, churn risk)
* gold.recommendations   (ALS + category popularity, bought items excluded)

``run_review_sentiment`` scores reviews the serving sentiment model has not scored yet
(MERGE on ``review_id``), then recomputes gold.item_sentiment and the run date's
gold.complaint_terms. Without a serving sentiment model it logs why and writes nothing.

Both log counts and duration in ops.runs (``runlog.tracked``); a dry run computes and counts
everything but writes no output table. Every row carries the model versions and the run id.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from demandlake import lake, quality, runlog, schemas
from demandlake.config import Config
from demandlake.scoring import forecasts as fc
from demandlake.scoring import profiles as pr
from demandlake.scoring import recommendations as rc
from demandlake.scoring import segments as sg
from demandlake.scoring import sentiment as st
from demandlake.scoring import serving, udfs
from demandlake.spark import temporary_conf
from demandlake.training import families

log = logging.getLogger(__name__)

DAY = dt.timedelta(days=1)
ARROW_BATCH = "spark.sql.execution.arrow.maxRecordsPerBatch"


def _date_sql(d: dt.date) -> str:
    return f"DATE'{d.isoformat()}'"


def _arrow_batch(spark: SparkSession, rows: int) -> contextlib.AbstractContextManager[None]:
    """Arrow batches of ``rows`` records into the pandas UDFs while the stage runs."""
    return temporary_conf(spark, {ARROW_BATCH: str(int(rows))})


class _Phases:
    """Wall-clock seconds per phase of a stage, for the run's metrics (``seconds.<phase>``)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._t = time.monotonic()

    def done(self, phase: str) -> None:
        now = time.monotonic()
        self.seconds[f"seconds.{phase}"] = round(now - self._t, 2)
        log.info("%s done in %.1fs", phase, now - self._t)
        self._t = now


def _windows(cfg: Config) -> list[int]:
    return [int(w) for w in cfg.get("features.windows_days", [7, 30, 90])]


def active_users(spark: SparkSession, cfg: Config, run_date: dt.date) -> DataFrame:
    """gold.user_features rows of ``run_date`` of users seen in the last scoring.active_days
    days."""
    days = int(cfg.get("scoring.active_days", 90))
    return (lake.read(spark, cfg, "gold.user_features")
            .where((F.col("snapshot_date") == F.lit(run_date))
                   & (F.col("days_since_last_event") < F.lit(days))))


def model_vocabulary(spark: SparkSession, cfg: Config, model: serving.ServingModel) -> DataFrame:
    """The id mapping ``model`` was trained with, for coding its input sequences and naming its
    category ids.

    gold.vocabularies is rebuilt with every set of training examples, and a retrained model is
    not always promoted, so the table may have moved on from the serving model. In order: the
    current table when it is still the table and version the model's run recorded
    (``data.vocabularies_table_id``, ``data.vocabularies_version``); else the copy logged with
    the model (``tracking.VOCABULARY_ARTIFACT``); else, for models logged before those existed,
    the recorded version of the same table (current, or by time travel). A model without a
    recorded version gets the current table.

    Raises:
        RuntimeError: when the model's vocabulary exists nowhere any more (vacuumed, or the
            table was dropped and created again, and no copy was logged).
    """
    current = lake.table_version(spark, cfg, "gold.vocabularies")
    trained = model.param("data.vocabularies_version")
    if trained is None:
        log.warning("%s v%d records no vocabulary version: using gold.vocabularies v%d",
                    model.name, model.version, current)
        return lake.read(spark, cfg, "gold.vocabularies")
    trained_id = model.param("data.vocabularies_table_id")
    current_id = lake.table_id(spark, cfg, "gold.vocabularies")
    # Version numbers start over when the table is created again: only the id tells them apart.
    if int(trained) == current and trained_id == current_id:
        return lake.read(spark, cfg, "gold.vocabularies")
    frame = serving.vocabulary_artifact(model)
    if frame is not None:
        log.info("gold.vocabularies is at v%d, %s v%d was trained on v%s: using the model's copy "
                 "(%d rows)", current, model.name, model.version, trained, len(frame))
        return spark.createDataFrame(frame, schemas.GOLD_VOCABULARIES)
    retrain = ("retrain the sequence model (demandlake train --model sequence) or promote one "
               "trained on the current table")
    if trained_id is not None and trained_id != current_id:
        raise RuntimeError(
            f"{model.name} v{model.version} was trained on a gold.vocabularies table that has "
            f"since been dropped and created again (id {trained_id}, now {current_id}), and its "
            f"run logged no vocabulary: {retrain}")
    if int(trained) == current:  # a model from before table ids were recorded
        return lake.read(spark, cfg, "gold.vocabularies")
    location = lake.ensure_table(spark, cfg, "gold.vocabularies").location(cfg)
    try:
        vocab = spark.read.format("delta").option("versionAsOf", int(trained)).load(location)
        vocab.limit(1).count()
    except Exception as exc:
        raise RuntimeError(
            f"{model.name} v{model.version} was trained on gold.vocabularies v{trained}, which "
            f"is gone ({type(exc).__name__}), and its run logged no vocabulary: {retrain} "
            f"(v{current})") from exc
    log.warning("gold.vocabularies is at v%d: using v%s, which %s v%d was trained on, by time "
                "travel", current, trained, model.name, model.version)
    return vocab


def python_tasks(cfg: Config, rows: int) -> int:
    """How many tasks a scoring UDF's input is coalesced to at most: one per
    ``scoring.rows_per_python_task`` rows, at least 1.

    Each Python worker that scores imports TensorFlow and loads the model once (about 6 CPU-s
    on the 2-core machine), more than scoring thousands of rows costs; on the tests' 2 shuffle
    partitions every small score paid it twice. ``DataFrame.coalesce`` never raises the count,
    so a large input keeps its partitions.
    """
    per_task = int(cfg.get("scoring.rows_per_python_task", 50000))
    if per_task < 1:
        raise ValueError(f"scoring.rows_per_python_task must be >= 1, got {per_task}")
    return max(1, -(-int(rows) // per_task))


def score_sequences(spark: SparkSession, cfg: Config, run_date: dt.date, users: DataFrame,
                    model: serving.ServingModel, n_users: int) -> DataFrame:
    """Model scores of ``users`` (``n_users`` rows: user_id, purchase_probability,
    top_categories as tokens).

    The sequences come from ``pipeline.transform.build_scoring_sequences``; the Arrow
    iterator-of-batches UDF (``mapInArrow``) loads the model once per Python worker
    (:mod:`demandlake.scoring.udfs`), in at most :func:`python_tasks` tasks.
    """
    from demandlake.pipeline.transform import build_scoring_sequences

    top_n = int(cfg.get("scoring.top_categories", 3))
    vocab = model_vocabulary(spark, cfg, model)
    sequences = (build_scoring_sequences(spark, cfg, run_date, vocab)
                 .join(users.select("user_id"), on="user_id", how="left_semi"))
    scorer = udfs.sequence_scorer_arrow(model.uri, model.tracking_uri,
                                        int(cfg.get("scoring.batch_size", 2048)), top_n,
                                        bool(cfg.get("scoring.skip_padding", True)))
    raw = (sequences.select("user_id", *udfs.SEQUENCE_INPUTS)
           .coalesce(python_tasks(cfg, n_users))
           .mapInArrow(scorer, udfs.SEQUENCE_SCORES))
    head = model.param("sequence_model.category_head") or cfg.get("sequence_model.category_head",
                                                                  "softmax")
    return fc.model_categories(raw, fc.category_map(vocab), head, top_n)


def score_spark_family(spark: SparkSession, cfg: Config, run_date: dt.date, users: DataFrame,
                       model: serving.ServingModel) -> DataFrame:
    """Scores of ``users`` by a Spark ML family (``training.families``), in Spark: the same
    scoring sequences as the network's, coded with the current gold.vocabularies (the family's
    features use no vocabulary id beyond equality). ``top_categories`` is null: the forecasts
    take the user's preferred categories."""
    from demandlake.pipeline.transform import build_scoring_sequences

    fitted = families.load_spark_model(model.uri)
    sequences = (build_scoring_sequences(spark, cfg, run_date)
                 .join(users.select("user_id"), on="user_id", how="left_semi"))
    return families.score(cfg, fitted, sequences).select(
        "user_id", "purchase_probability",
        F.lit(None).cast("array<struct<category:string,probability:double>>")
        .alias("top_categories"))


def _segments(cfg: Config, active: DataFrame, n_users: int) -> tuple[DataFrame, str, dict]:
    windows = _windows(cfg)
    seed = int(cfg.get("scoring.segments.seed", 7))
    inputs = active.transform(sg.segment_inputs(windows)).transform(
        sg.stable_layout(int(cfg.get("scoring.segments.fit_partitions", 8))))
    # Spark's KMeans fails (ArrayIndexOutOfBoundsException in its k-means|| start) when k is
    # above the number of distinct points, which a new lake's first days reach.
    distinct = inputs.drop("user_id").distinct().count()
    k = max(1, min(int(cfg.get("scoring.segments.k", 5)), n_users, distinct))
    model = sg.segment_pipeline(k, seed, int(cfg.get("scoring.segments.max_iter", 30))).fit(inputs)
    names = sg.centroid_names(model, cfg.get("scoring.segments.rules") or {})
    log.info("segments: %s", names)
    return inputs.transform(sg.assign_segments(model, names)), f"kmeans k={k} seed={seed}", names


def _recommendations(spark: SparkSession, cfg: Config, run_date: dt.date, active: DataFrame,
                     forecasts: DataFrame, run_id: str, seq_version: int | None,
                     counts: dict, persisted: list[DataFrame]) -> DataFrame:
    rcfg = cfg.get("scoring.recommendations") or {}
    top_k = int(rcfg.get("top_k", 10))
    events = lake.read(spark, cfg, "bronze.events").where(F.col("event_date") <= F.lit(run_date))
    lookback = events.where(F.col("event_date") > F.lit(run_date - max(_windows(cfg)) * DAY))
    users = active.select("user_id")
    inter = rc.interactions(lookback)
    user_keys = rc.unique_keys(inter, "user_id", "_user")
    item_keys = rc.unique_keys(inter, "item_id", "_item")
    keyed = (inter.join(user_keys, on="user_id", how="inner")
             .join(item_keys, on="item_id", how="inner")
             .select("_user", "_item", "confidence").persist(StorageLevel.MEMORY_AND_DISK))
    persisted.append(keyed)
    als = None
    counts["als_interactions"] = keyed.count()
    if counts["als_interactions"] > 0:
        model = rc.fit_als(keyed, rcfg.get("als") or {}, counts["als_interactions"])
        als = rc.als_candidates(model, user_keys.join(users, on="user_id", how="left_semi"),
                                item_keys, top_k + int(rcfg.get("exclude_buffer", 20)))
    else:
        log.warning("no interactions in the lookback window: recommendations from popularity only")
    popular = rc.popular_items(lookback, int(rcfg.get("popular_items_per_category", 20)))
    purchased = rc.purchased_items(events).join(users, on="user_id", how="left_semi")
    recs = rc.recommendations(als, rc.popularity_candidates(forecasts, popular), purchased,
                              rc.item_categories(lookback), top_k, run_date, run_id, seq_version)
    recs = recs.persist(StorageLevel.MEMORY_AND_DISK)
    persisted.append(recs)
    return recs


def run_score(spark: SparkSession, cfg: Config, run_date: dt.date,
              dry_run: bool = False) -> dict[str, int]:
    """Score every active user of ``run_date`` into forecasts, profiles and recommendations.

    Args:
        run_date: the scoring date; gold.user_features must have its snapshot.
        dry_run: compute and count, write no output table (ops.runs still gets the run).

    Returns:
        Counts: users, forecasts, fallbacks, per band and source, profiles, per segment,
        recommendations, users with recommendations, model versions.

    Raises:
        RuntimeError: when gold.user_features has no active user for ``run_date``.
    """
    windows = _windows(cfg)
    top_n = int(cfg.get("scoring.top_categories", 3))
    persisted: list[DataFrame] = []
    with (runlog.tracked(spark, cfg, "score", run_date, dry_run=dry_run) as run,
          _arrow_batch(spark, int(cfg.get("scoring.batch_size", 2048)))):
        try:
            active = active_users(spark, cfg, run_date).persist(StorageLevel.MEMORY_AND_DISK)
            persisted.append(active)
            n_users = active.count()
            if n_users == 0:
                raise RuntimeError(f"gold.user_features has no active user for {run_date}: "
                                   "run the features stage first")
            counts: dict[str, int] = {"users": n_users}
            phases = _Phases()

            segments, segment_model, names = _segments(cfg, active, n_users)
            segments = segments.persist(StorageLevel.MEMORY_AND_DISK)
            persisted.append(segments)
            phases.done("segments")

            seq, why = serving.resolve(cfg, "sequence")
            sent, sent_why = serving.resolve(cfg, "sentiment")
            if seq is None:
                log.warning("no sequence model: every forecast is a fallback (%s)", why)
                run.add(sequence_model="none", sequence_model_reason=why)
            scores = (None if seq is None
                      else score_sequences(spark, cfg, run_date, active, seq, n_users)
                      if seq.family == families.NETWORK
                      else score_spark_family(spark, cfg, run_date, active, seq))
            users = active.join(segments.select("user_id", "segment_id"), on="user_id", how="inner")
            forecasts = fc.demand_forecasts(
                users, scores, fc.popular_categories(active, top_n), windows,
                cfg.get("scoring.bands") or {"high": 0.5, "medium": 0.2}, top_n, run_date,
                run.run_id, seq.name if seq else None, seq.version if seq else None,
                seq.family if seq else families.NETWORK,
            ).persist(StorageLevel.MEMORY_AND_DISK)
            persisted.append(forecasts)
            summary = forecasts.agg(
                F.count(F.lit(1)).alias("forecasts"),
                F.count_if("is_fallback").alias("fallbacks"),
                *[F.count_if(F.col("score_band") == b).alias(f"band_{b}")
                  for b in ("high", "medium", "low")]).first().asDict()
            counts.update({k: int(v) for k, v in summary.items()})
            phases.done("forecasts")

            profiles = pr.user_profiles(
                active, segments, forecasts,
                pr.user_sentiment(lake.read(spark, cfg, "gold.review_sentiment"), run_date),
                windows, float(cfg.get("scoring.value_tier_top_share", 0.2)),
                cfg.get("scoring.churn") or {}, run_date, run.run_id, segment_model,
                seq.version if seq else None, sent.version if sent else None,
            ).persist(StorageLevel.MEMORY_AND_DISK)
            persisted.append(profiles)
            for r in profiles.groupBy("segment").count().collect():
                counts[f"segment.{r['segment']}"] = int(r["count"])
            counts["profiles"] = sum(v for k, v in counts.items() if k.startswith("segment."))
            phases.done("profiles")

            recs = _recommendations(spark, cfg, run_date, active, forecasts, run.run_id,
                                    seq.version if seq else None, counts, persisted)
            rec_summary = recs.agg(F.count(F.lit(1)).alias("recommendations"),
                                   F.count_distinct("user_id").alias("users_with_recommendations"),
                                   F.count_if(F.col("source") == rc.ALS_SOURCE).alias("als_items")
                                   ).first().asDict()
            counts.update({k: int(v) for k, v in rec_summary.items()})
            phases.done("recommendations")

            # Quality gates on all three first; a table that fails is not written (its previous
            # version stays current), the others are, and the run then fails naming the checks.
            outputs = {"gold.demand_forecasts": forecasts, "gold.user_profiles": profiles,
                       "gold.recommendations": recs}
            checks, failures = quality.gate_all(spark, cfg, outputs, run_date, run.run_id, "score")
            counts.update(quality.summary(checks))
            phases.done("quality")
            if not dry_run:
                where = f"run_date = {_date_sql(run_date)}"
                blocked = {exc.table for exc in failures}
                for name, df in outputs.items():
                    if name not in blocked:
                        lake.overwrite_where(spark, cfg, name, df, where)
                phases.done("writes")
            if failures:
                run.add(**counts, **phases.seconds)
                raise failures[0] if len(failures) == 1 else quality.QualityGateError(
                    ", ".join(exc.table for exc in failures), run_date,
                    [c for exc in failures for c in exc.failed])
            if seq:
                counts["sequence_model_version"] = seq.version
                run.add(sequence_model_family=seq.family)
            if sent:
                counts["sentiment_model_version"] = sent.version
            run.add(**counts, **phases.seconds, segment_model=segment_model,
                    segment_names="; ".join(f"{i}={n}" for i, n in sorted(names.items())))
            log.info("score %s%s: %s", run_date, " (dry run)" if dry_run else "", counts)
            return counts
        finally:
            for df in persisted:
                df.unpersist()


def run_review_sentiment(spark: SparkSession, cfg: Config, run_date: dt.date,
                         dry_run: bool = False) -> dict[str, int]:
    """Score unscored reviews with the serving sentiment model; refresh the aggregates.

    Reviews dated up to ``run_date`` (and undated ones) that gold.review_sentiment does not hold
    for the serving version are scored and MERGEd on ``review_id`` (a new serving version rescores
    everything once). gold.item_sentiment is then recomputed from all scored reviews, and the
    run date's gold.complaint_terms from the last ``scoring.complaint_terms.window_days`` days.

    Returns:
        Counts: scored (this run), skipped (1 when no sentiment model serves), item_sentiment
        rows, complaint_terms rows, model_version.
    """
    from demandlake.features.review_corpus import review_corpus

    scfg = cfg.get("scoring.sentiment") or {}
    tcfg = cfg.get("scoring.complaint_terms") or {}
    with runlog.tracked(spark, cfg, "review_sentiment", run_date, dry_run=dry_run) as run:
        model, why = serving.resolve(cfg, "sentiment")
        if model is None:
            log.warning("review sentiment skipped: %s", why)
            run.add(skipped=1, reason=why)
            return {"skipped": 1, "scored": 0}
        bronze_reviews = lake.read(spark, cfg, "bronze.reviews")
        reviews_total = bronze_reviews.count()
        reviews = bronze_reviews.where(
            F.col("review_date").isNull() | (F.col("review_date") <= F.lit(run_date)))
        corpus = (reviews.transform(review_corpus(cfg.get("reviews.split") or
                                                  {"train": 0.8, "validation": 0.1, "test": 0.1}))
                  .join(reviews.select("review_id", "review_date"), on="review_id", how="inner"))
        existing = lake.read(spark, cfg, "gold.review_sentiment")
        done = existing.where(F.col("model_version") == F.lit(model.version)).select("review_id")
        todo = corpus.join(done, on="review_id", how="left_anti")
        scorer = udfs.sentiment_scorer(model.uri, model.tracking_uri,
                                       int(scfg.get("batch_size", 512)))
        persisted: list[DataFrame] = []
        try:
            with _arrow_batch(spark, int(scfg.get("batch_size", 512))):
                # At most every review of bronze.reviews is to score: Delta counts a whole
                # table from its log, without a scan.
                tasks = python_tasks(cfg, reviews_total)
                scores = (todo.select("review_id", "text").coalesce(tasks)
                          .mapInPandas(scorer, udfs.SENTIMENT_SCORES))
                rows = st.review_sentiment_rows(
                    todo, scores, {"negative_below": scfg.get("negative_below", 0.4),
                                   "positive_from": scfg.get("positive_from", 0.6)},
                    model.name, model.version, run_date, run.run_id,
                ).persist(StorageLevel.MEMORY_AND_DISK)
                persisted.append(rows)
                counts = {"scored": rows.count(), "skipped": 0, "model_version": model.version}
            if dry_run:
                scored = existing.join(rows.select("review_id"), on="review_id",
                                       how="left_anti").unionByName(rows)
            else:
                lake.merge_upsert(spark, cfg, "gold.review_sentiment", rows, ["review_id"])
                scored = lake.read(spark, cfg, "gold.review_sentiment")
            items = st.item_sentiment(scored, run.run_id).persist(StorageLevel.MEMORY_AND_DISK)
            persisted.append(items)
            counts["item_sentiment"] = items.count()

            window = F.col("review_date") > F.lit(run_date - int(tcfg.get("window_days", 90)) * DAY)
            recent = scored.where(window & (F.col("review_date") <= F.lit(run_date)))
            texts = corpus.join(recent.select("review_id"), on="review_id", how="left_semi")
            terms = st.complaint_terms(
                recent, st.review_terms(texts), int(tcfg.get("top_n", 20)),
                int(tcfg.get("min_reviews", 2)), float(tcfg.get("prior", 0.5)), run_date,
                run.run_id).persist(StorageLevel.MEMORY_AND_DISK)
            persisted.append(terms)
            counts["complaint_terms"] = terms.count()
            if not dry_run:
                lake.overwrite_all(spark, cfg, "gold.item_sentiment", items)
                lake.overwrite_where(spark, cfg, "gold.complaint_terms", terms,
                                     f"run_date = {_date_sql(run_date)}")
            run.add(**counts)
            log.info("review sentiment %s%s: %s", run_date, " (dry run)" if dry_run else "", counts)
            return counts
        finally:
            for df in persisted:
                df.unpersist()
