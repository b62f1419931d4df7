"""gold.demand_forecasts rows from model scores, with a fallback for users the model cannot score.

Model rows (``source`` = ``model: <family>``, ``training.families``): for the
``sequence_network``, ``purchase_probability`` is the purchase head's output; ``top_categories``
are the category head's best ids mapped back to tokens through ``gold.vocabularies`` (padding, OOV and ids
unknown to the vocabulary are dropped). Their probability is ``P(purchase) * P(category |
purchase)`` for the ``softmax`` head (trained on purchasing examples only, so its scores are
conditional) and the head's own score for the ``sigmoid`` head (trained on all examples). A
Spark ML family (``spark_gbt``) predicts the purchase only: its rows' categories are the user's
preferred ones weighted by its probability, as for a fallback row.

Fallback rows (``is_fallback``; ``source`` says which rule and why):

* ``fallback: segment_base_rate/no_model``: no sequence model serves;
* ``fallback: segment_base_rate/no_sequence``: the user has no scoring sequence;
* ``fallback: segment_base_rate/no_score``: the model returned no finite probability.

The segment base rate is the share of the user's segment who bought in the shortest feature window
(``features.windows_days``, 7 days by default, matching the 7-day horizon); the overall share when
the segment has none. Fallback categories are the user's own preferred categories
(``gold.user_features.top_categories``, weight = share of interest) scaled by that probability, else
the most preferred categories over all users.
"""
from __future__ import annotations

import datetime as dt
from typing import Mapping, Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from demandlake.features.sequences import OOV_ID

HEADS = ("softmax", "sigmoid")
MODEL = "model"
FALLBACK_RULE = "segment_base_rate"


def fallback_source(why: str) -> str:
    """The ``source`` value of a fallback row (``why``: no_model, no_sequence, no_score)."""
    return f"fallback: {FALLBACK_RULE}/{why}"


def score_band(probability: Column, bands: Mapping[str, float]) -> Column:
    """``high`` when probability >= bands.high, ``medium`` when >= bands.medium, else ``low``."""
    high, medium = float(bands["high"]), float(bands["medium"])
    if not 0.0 <= medium <= high <= 1.0:
        raise ValueError(f"bands must satisfy 0 <= medium <= high <= 1, got {dict(bands)}")
    return (F.when(probability >= F.lit(high), F.lit("high"))
            .when(probability >= F.lit(medium), F.lit("medium")).otherwise(F.lit("low")))


def category_map(vocab: DataFrame) -> DataFrame:
    """One row, one column ``_categories``: map category id -> token (ids > OOV only)."""
    cats = vocab.where((F.col("vocab") == "category") & (F.col("id") > OOV_ID))
    return cats.agg(F.map_from_entries(F.collect_list(
        F.struct(F.col("id").cast("int"), F.col("token")))).alias("_categories"))


def model_categories(scores: DataFrame, categories: DataFrame, head: str, top_n: int) -> DataFrame:
    """Model scores -> ``user_id``, ``purchase_probability``, ``top_categories`` (tokens).

    Args:
        scores: rows of :data:`demandlake.scoring.udfs.SEQUENCE_SCORES`.
        categories: :func:`category_map` output (broadcast to every task).
        head: the model's ``sequence_model.category_head``.
        top_n: categories kept.
    """
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    p = F.col("purchase_probability")

    def entry(x: Column) -> Column:
        score = x["top_category_scores"]
        prob = p * score if head == "softmax" else score
        name = F.try_element_at(F.col("_categories"), x["top_category_ids"])
        return F.struct(name.alias("category"),
                        F.least(F.greatest(prob, F.lit(0.0)), F.lit(1.0)).alias("probability"))

    named = F.filter(F.transform(F.arrays_zip("top_category_ids", "top_category_scores"), entry),
                     lambda e: e["category"].isNotNull())
    return (scores.crossJoin(F.broadcast(categories))
            .select("user_id", "purchase_probability",
                    F.slice(named, 1, top_n).alias("top_categories")))


def bought_in_window(windows_days: Sequence[int]) -> Column:
    """Whether the user bought in the shortest feature window (the base-rate event)."""
    shortest = min(int(w) for w in windows_days)
    n = F.coalesce(F.try_element_at(F.col("purchases_by_window"), F.lit(shortest)), F.lit(0))
    return (n > 0).cast("double")


def popular_categories(features: DataFrame, top_n: int) -> DataFrame:
    """One row ``_popular``: the ``top_n`` categories by summed preference share over users,
    as ``array<struct<category, share>>`` with shares summing to at most 1."""
    prefs = features.select(F.explode("top_categories").alias("c")).select(
        F.col("c.name").alias("category"), F.col("c.weight").alias("w"))
    totals = prefs.groupBy("category").agg(F.sum("w").alias("w"))
    ranked = totals.agg(F.sort_array(F.collect_list(F.struct(
        (-F.col("w")).alias("neg"), F.col("category"), F.col("w")))).alias("_all"),
        F.sum("w").alias("_total"))
    return ranked.select(F.transform(
        F.slice("_all", 1, top_n),
        lambda x: F.struct(x["category"].alias("category"),
                           (x["w"] / F.col("_total")).alias("share"))).alias("_popular"))


def demand_forecasts(
    users: DataFrame,
    model_scores: DataFrame | None,
    popular: DataFrame,
    windows_days: Sequence[int],
    bands: Mapping[str, float],
    top_n: int,
    run_date: dt.date,
    run_id: str,
    model_name: str | None = None,
    model_version: int | None = None,
    model_family: str = "sequence_network",
) -> DataFrame:
    """One forecast per user of ``users`` (model where scored, fallback otherwise).

    Args:
        users: active users: gold.user_features rows plus ``segment_id``.
        model_scores: :func:`model_categories` output, or None when no model serves.
        popular: :func:`popular_categories` output (for fallback users without preferences).
        windows_days: feature windows (the shortest defines the base rate).
        bands: ``scoring.bands``.
        top_n: categories per forecast.
        run_date, run_id: stamped on every row.
        model_name, model_version: the serving sequence model (None when none serves).
        model_family: its family (``training.families``): model rows' ``source`` is
            ``model: <family>``. A family that predicts no categories (``top_categories`` null
            in ``model_scores``) gets the user's preferred categories weighted by its
            probability, as a fallback row gets them weighted by the base rate.

    Returns:
        gold.demand_forecasts rows.
    """
    if top_n < 1:
        raise ValueError(f"top_n must be >= 1, got {top_n}")
    base = users.select("user_id", "segment_id", "top_categories",
                        bought_in_window(windows_days).alias("_bought"))
    rates = base.groupBy("segment_id").agg(F.avg("_bought").alias("_segment_rate"))
    overall = base.agg(F.avg("_bought").alias("_overall_rate"))
    with_rates = (base.join(rates, on="segment_id", how="left")
                  .crossJoin(F.broadcast(overall)).crossJoin(F.broadcast(popular)))
    if model_scores is None:
        no_categories = F.lit(None).cast("array<struct<category:string,probability:double>>")
        scored = with_rates.select("*", F.lit(None).cast("double").alias("_p"),
                                   no_categories.alias("_cats"), F.lit(False).alias("_has_row"))
    else:
        scores = model_scores.select("user_id", F.col("purchase_probability").alias("_p"),
                                     F.col("top_categories").alias("_cats"),
                                     F.lit(True).alias("_has_row"))
        scored = with_rates.join(scores, on="user_id", how="left")

    finite = F.col("_p").isNotNull() & ~F.isnan(F.col("_p"))
    use_model = F.coalesce(F.col("_has_row"), F.lit(False)) & finite
    why = (F.when(F.lit(model_scores is None), F.lit("no_model"))
           .when(~F.coalesce(F.col("_has_row"), F.lit(False)), F.lit("no_sequence"))
           .otherwise(F.lit("no_score")))
    fallback_p = F.coalesce(F.col("_segment_rate"), F.col("_overall_rate"), F.lit(0.0))
    probability = F.least(F.greatest(F.when(use_model, F.col("_p")).otherwise(fallback_p),
                                     F.lit(0.0)), F.lit(1.0))
    own = F.transform(F.slice("top_categories", 1, top_n),
                      lambda c: F.struct(c["name"].alias("category"),
                                         (probability * c["weight"]).alias("probability")))
    overall_cats = F.transform("_popular", lambda c: F.struct(
        c["category"].alias("category"), (probability * c["share"]).alias("probability")))
    preferred_cats = F.when(F.size("top_categories") > 0, own).otherwise(overall_cats)
    return scored.select(
        "user_id",
        F.lit(run_date).alias("run_date"),
        probability.alias("purchase_probability"),
        F.when(use_model, F.coalesce(F.col("_cats"), preferred_cats))
        .otherwise(preferred_cats).alias("top_categories"),
        score_band(probability, bands).alias("score_band"),
        (~use_model).alias("is_fallback"),
        F.when(use_model, F.lit(f"{MODEL}: {model_family}"))
        .otherwise(F.concat(F.lit(f"fallback: {FALLBACK_RULE}/"), why)).alias("source"),
        F.lit(model_name).cast("string").alias("model_name"),
        F.lit(model_version).cast("int").alias("model_version"),
        F.lit(run_id).alias("run_id"),
    )
