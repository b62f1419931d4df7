"""Review sentiment outputs: labels, weekly item/category sentiment, complaint terms.

* labels: ``negative`` below ``scoring.sentiment.negative_below``, ``positive`` at or above
  ``positive_from``, ``neutral`` between.
* gold.item_sentiment: per ISO week (Monday) and item, and per week and category: review volume,
  mean positive probability, share of negative reviews and ``negative_trend`` = that share minus
  the previous calendar week's (null when the previous week had no reviews).
* gold.complaint_terms: per category, the terms most characteristic of negative against positive
  reviews of the window. Texts are tokenized by a pandas UDF (jieba words for text with Han
  characters, the text itself otherwise) followed by Spark ML's ``RegexTokenizer`` (lower case,
  split on white space, punctuation and symbols, tokens of 2+ characters) and
  ``StopWordsRemover`` (English list). With ``y`` the number of negative reviews containing the
  term out of ``n`` negative reviews, ``y'``/``n'`` the same for positive reviews and prior ``a``:
  ``delta = log((y + a) / (n - y + a)) - log((y' + a) / (n' - y' + a))``,
  ``score = delta / sqrt(1 / (y + a) + 1 / (y' + a))`` (the log-odds ratio's z-score, after Monroe,
  Colaresi and Quinn 2008, with a flat prior). Terms in fewer than ``min_reviews`` negative reviews
  or with a non-positive score are dropped; the best ``top_n`` per category are kept.
"""
from __future__ import annotations

import datetime as dt
from typing import Iterator, Mapping

import pandas as pd
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

LABELS = ("negative", "neutral", "positive")


def sentiment_label(probability: Column, thresholds: Mapping[str, float]) -> Column:
    """negative / neutral / positive from ``scoring.sentiment`` thresholds."""
    low, high = float(thresholds["negative_below"]), float(thresholds["positive_from"])
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"need 0 <= negative_below <= positive_from <= 1, got {dict(thresholds)}")
    return (F.when(probability < F.lit(low), F.lit("negative"))
            .when(probability >= F.lit(high), F.lit("positive")).otherwise(F.lit("neutral")))


def review_sentiment_rows(corpus: DataFrame, scores: DataFrame, thresholds: Mapping[str, float],
                          model_name: str, model_version: int, run_date: dt.date,
                          run_id: str) -> DataFrame:
    """gold.review_sentiment rows.

    Args:
        corpus: reviews in gold.review_corpus shape plus ``review_date``.
        scores: ``review_id``, ``probability`` from the sentiment UDF.
        thresholds: ``scoring.sentiment``.
        model_name, model_version, run_date, run_id: stamped on every row.
    """
    p = F.least(F.greatest(F.col("probability"), F.lit(0.0)), F.lit(1.0))
    return (corpus.join(scores, on="review_id", how="inner")
            .where(F.col("probability").isNotNull() & ~F.isnan("probability"))
            .select("review_id", "user_id", "item_id", "category", "review_date", "language",
                    p.alias("probability"), sentiment_label(p, thresholds).alias("label"),
                    F.lit(model_name).alias("model_name"),
                    F.lit(int(model_version)).alias("model_version"),
                    F.lit(run_date).alias("scored_date"), F.lit(run_id).alias("run_id")))


def _weekly(scored: DataFrame, keys: list[str]) -> DataFrame:
    negative = (F.col("label") == "negative").cast("double")
    weekly = scored.groupBy(*keys, "week").agg(
        F.count(F.lit(1)).alias("volume"), F.avg("probability").alias("mean_probability"),
        F.avg(negative).alias("share_negative"), F.max("model_version").alias("model_version"))
    by_key = Window.partitionBy(*keys).orderBy("week")
    adjacent = F.lag("week").over(by_key) == F.date_sub(F.col("week"), 7)
    trend = F.when(adjacent, F.col("share_negative") - F.lag("share_negative").over(by_key))
    return weekly.select(*keys, "week", "volume", "mean_probability", "share_negative",
                         trend.alias("negative_trend"), "model_version")


def item_sentiment(review_sentiment: DataFrame, run_id: str) -> DataFrame:
    """gold.item_sentiment rows from gold.review_sentiment (dated reviews only)."""
    dated = review_sentiment.where(F.col("review_date").isNotNull()).select(
        "*", F.date_trunc("week", F.col("review_date")).cast("date").alias("week"))
    items = _weekly(dated.where(F.col("item_id").isNotNull()), ["item_id", "category"])
    cats = _weekly(dated, ["category"])
    columns = ["level", "item_id", "category", "week", "volume", "mean_probability",
               "share_negative", "negative_trend", "model_version", "run_id"]
    return (items.select("*", F.lit("item").alias("level"), F.lit(run_id).alias("run_id"))
            .select(*columns)
            .unionByName(cats.select("*", F.lit("category").alias("level"),
                                     F.lit(None).cast("string").alias("item_id"),
                                     F.lit(run_id).alias("run_id")).select(*columns)))


def _presegment(texts: Iterator[pd.Series]) -> Iterator[pd.Series]:
    """jieba words joined by spaces for texts with Han characters; other texts unchanged."""
    import logging
    import re

    import jieba

    jieba.setLogLevel(logging.WARNING)
    han = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
    for batch in texts:
        yield batch.map(lambda t: " ".join(jieba.lcut(t)) if isinstance(t, str) and han.search(t)
                        else t)


def presegment_udf():
    """The pandas UDF (iterator of Series) behind :func:`review_terms`."""
    return F.pandas_udf(_presegment, "string")


def review_terms(reviews: DataFrame, stop_words: list[str] | None = None) -> DataFrame:
    """``review_id``, ``terms``: distinct tokens of each review's ``text`` (see the module doc)."""
    from pyspark.ml.feature import RegexTokenizer, StopWordsRemover

    segmented = reviews.select("review_id", presegment_udf()(F.col("text")).alias("_segmented"))
    tokens = RegexTokenizer(inputCol="_segmented", outputCol="_tokens", toLowercase=True,
                            pattern=r"[\s\p{P}\p{S}]+", minTokenLength=2).transform(segmented)
    if stop_words is None:
        stop_words = StopWordsRemover.loadDefaultStopWords("english")
    kept = StopWordsRemover(inputCol="_tokens", outputCol="_kept",
                            stopWords=stop_words).transform(tokens)
    return kept.select("review_id", F.array_distinct("_kept").alias("terms"))


def complaint_terms(scored: DataFrame, terms: DataFrame, top_n: int, min_reviews: int,
                    prior: float, run_date: dt.date, run_id: str) -> DataFrame:
    """gold.complaint_terms rows (see the module doc for the score).

    Args:
        scored: gold.review_sentiment rows of the window (``review_id``, ``category``, ``label``,
            ``model_version``).
        terms: :func:`review_terms` of the same reviews.
        top_n, min_reviews, prior: ``scoring.complaint_terms``.
        run_date, run_id: stamped on every row.
    """
    if top_n < 1 or min_reviews < 1 or prior <= 0:
        raise ValueError("top_n, min_reviews >= 1 and prior > 0 are required")
    is_polar = F.col("label").isin("negative", "positive") & F.col("category").isNotNull()
    polar = scored.where(is_polar)
    totals = polar.groupBy("category").agg(
        F.count_if(F.col("label") == "negative").alias("n_neg"),
        F.count_if(F.col("label") == "positive").alias("n_pos"),
        F.max("model_version").alias("model_version"))
    docs = (polar.join(terms, on="review_id", how="inner")
            .select("category", "label", F.explode("terms").alias("term")))
    counts = docs.groupBy("category", "term").agg(
        F.count_if(F.col("label") == "negative").alias("negative_reviews"),
        F.count_if(F.col("label") == "positive").alias("positive_reviews"))
    a = F.lit(float(prior))
    y, y2 = F.col("negative_reviews"), F.col("positive_reviews")
    n, n2 = F.col("n_neg"), F.col("n_pos")
    delta = F.log((y + a) / (n - y + a)) - F.log((y2 + a) / (n2 - y2 + a))
    score = delta / F.sqrt(F.lit(1.0) / (y + a) + F.lit(1.0) / (y2 + a))
    best = Window.partitionBy("category").orderBy(F.desc("score"), F.asc("term"))
    return (counts.join(totals, on="category", how="inner")
            .select("*", score.alias("score"))
            .where((F.col("negative_reviews") >= min_reviews) & (F.col("score") > 0))
            .select("*", F.row_number().over(best).alias("rank"))
            .where(F.col("rank") <= top_n)
            .select(F.lit(run_date).alias("run_date"), "category",
                    F.col("rank").cast("int").alias("rank"), "term", "score",
                    "negative_reviews", "positive_reviews", "model_version",
                    F.lit(run_id).alias("run_id")))
