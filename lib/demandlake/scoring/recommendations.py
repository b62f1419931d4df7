"""gold.recommendations: top-K items per user from ALS, filled in from category popularity.

* ``als``: Spark ML ALS with ``implicitPrefs`` on the lookback window's events, confidence = the
  summed interest weights of the user's events on the item (view 1, fav 2, cart 3, purchase 5, as
  in ``gold.user_features``). ALS needs integer ids: users and items get a 31-bit hash of their id;
  the few ids whose hash collides with another's are left out of ALS (they still get category
  popularity items), so no two users ever share factors.
* ``category_popularity``: for each category of the user's forecast (``top_categories``), the
  category's most popular items (same interest weights over all users); score = the category's
  probability * the item's share of the category's interest.

Items the user bought up to the run date are never recommended. ALS items come first (by ALS
score), then category popularity items (by their score) until ``top_k``; the two scores are not on
one scale, so ``rank`` orders sources before scores. Ties go to the smaller item id.
"""
from __future__ import annotations

import datetime as dt
import math
from typing import Mapping

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from demandlake.features.user_features import INTEREST_WEIGHTS

ALS_SOURCE, POPULARITY_SOURCE = "als", "category_popularity"
_SOURCE_ORDER = {ALS_SOURCE: 0, POPULARITY_SOURCE: 1}


def interest_weight() -> Column:
    """Interest weight of an event (0 for search and remove_from_cart)."""
    weight = F.lit(0.0)
    for event_type, w in INTEREST_WEIGHTS.items():
        weight = F.when(F.col("event_type") == event_type, F.lit(w)).otherwise(weight)
    return weight


def interactions(events: DataFrame) -> DataFrame:
    """``user_id``, ``item_id``, ``confidence`` (summed interest weights, > 0)."""
    return (events.where(F.col("item_id").isNotNull())
            .groupBy("user_id", "item_id").agg(F.sum(interest_weight()).alias("confidence"))
            .where(F.col("confidence") > 0)
            .select("user_id", "item_id", "confidence"))


def purchased_items(events: DataFrame) -> DataFrame:
    """Distinct ``user_id``, ``item_id`` of purchase events."""
    return (events.where((F.col("event_type") == "purchase") & F.col("item_id").isNotNull())
            .select("user_id", "item_id").distinct())


def hash_key(c: Column) -> Column:
    """A non-negative 31-bit integer key of a string id (ALS needs int ids)."""
    return F.xxhash64(c).bitwiseAND(F.lit(0x7FFFFFFF)).cast("int")


def unique_keys(ids: DataFrame, id_col: str, key_col: str) -> DataFrame:
    """``id_col``, ``key_col`` for the distinct ids whose hash key no other id shares."""
    keyed = ids.select(id_col).distinct().select(id_col, hash_key(F.col(id_col)).alias(key_col))
    return (keyed.groupBy(key_col).agg(F.count(F.lit(1)).alias("_n"), F.min(id_col).alias(id_col))
            .where(F.col("_n") == 1).select(id_col, key_col))


def item_categories(events: DataFrame) -> DataFrame:
    """``item_id``, ``category``: the item's most frequent non-null category (ties: smallest)."""
    counts = (events.where(F.col("item_id").isNotNull() & F.col("category").isNotNull())
              .groupBy("item_id", "category").agg(F.count(F.lit(1)).alias("n")))
    return counts.groupBy("item_id").agg(
        F.min_by(F.col("category"), F.struct(-F.col("n"), F.col("category"))).alias("category"))


def popular_items(events: DataFrame, per_category: int) -> DataFrame:
    """``category``, ``item_id``, ``share``: each category's ``per_category`` items with the most
    interest, share = the item's part of the category's interest."""
    weights = (events.where(F.col("item_id").isNotNull())
               .groupBy("item_id").agg(F.sum(interest_weight()).alias("w"))
               .where(F.col("w") > 0)
               .join(item_categories(events), on="item_id", how="inner"))
    by_category = Window.partitionBy("category")
    ranked = Window.partitionBy("category").orderBy(F.desc("w"), F.asc("item_id"))
    return (weights.select("category", "item_id", (F.col("w") / F.sum("w").over(by_category))
                           .alias("share"), F.row_number().over(ranked).alias("_rn"))
            .where(F.col("_rn") <= per_category).select("category", "item_id", "share"))


def fit_als(keyed_interactions: DataFrame, params: Mapping[str, float],
            interactions: int | None = None):
    """Fit implicit-feedback ALS on ``_user``, ``_item``, ``confidence``.

    Args:
        keyed_interactions: interactions with int keys.
        params: ``scoring.recommendations.als`` (rank, max_iter, reg_param, alpha, seed, blocks,
            interactions_per_block); ``blocks`` as :func:`als_blocks` reads it.
        interactions: the number of rows of ``keyed_interactions`` when the caller knows it.
    """
    from pyspark.ml.recommendation import ALS

    blocks = als_blocks(keyed_interactions, params.get("blocks", "auto"), interactions,
                        int(params.get("interactions_per_block", 200_000)))
    als = ALS(userCol="_user", itemCol="_item", ratingCol="confidence", implicitPrefs=True,
              rank=int(params.get("rank", 16)), maxIter=int(params.get("max_iter", 8)),
              regParam=float(params.get("reg_param", 0.1)), alpha=float(params.get("alpha", 10.0)),
              seed=int(params.get("seed", 7)), coldStartStrategy="drop", nonnegative=False,
              numUserBlocks=blocks, numItemBlocks=blocks)
    return als.fit(keyed_interactions)


def als_blocks(keyed_interactions: DataFrame, blocks, interactions: int | None = None,
               per_block: int = 200_000) -> int:
    """ALS's user and item blocks: ``blocks``, or with ``"auto"`` one block per ``per_block``
    interactions, at least 1 and at most Spark's default parallelism.

    Every ALS iteration runs a few shuffle stages with one task per block. On a day of the
    200-user sample (6,695 interactions) Spark's default of 10 blocks made the recommendations
    12.2 s of score's 30 s; 2 blocks 6.9 s, 1 block 6.7 s (docs/BENCHMARKS.md, "Fixed cost").
    ALS seeds each block's starting factors by the block's id, so the items recommended depend
    on the number of blocks: the same interactions and settings always give the same items.
    """
    if str(blocks).strip().lower() == "auto":
        if per_block < 1:
            raise ValueError("scoring.recommendations.als.interactions_per_block must be >= 1, "
                             f"got {per_block}")
        n = keyed_interactions.count() if interactions is None else int(interactions)
        cap = max(1, keyed_interactions.sparkSession.sparkContext.defaultParallelism)
        return max(1, min(cap, math.ceil(n / per_block)))
    if int(blocks) < 1:
        raise ValueError(f"scoring.recommendations.als.blocks must be 'auto' or >= 1, got {blocks}")
    return int(blocks)


def als_candidates(model, users: DataFrame, item_keys: DataFrame, n: int) -> DataFrame:
    """``user_id``, ``item_id``, ``score``: ALS's ``n`` best items for each keyed user.

    Args:
        model: fitted ALS model.
        users: ``user_id``, ``_user`` (unique keys) of the users to recommend for.
        item_keys: ``item_id``, ``_item``.
        n: items asked per user.
    """
    recs = model.recommendForUserSubset(users.select("_user"), n)
    exploded = recs.select("_user", F.explode("recommendations").alias("r")).select(
        "_user", F.col("r._item").alias("_item"), F.col("r.rating").cast("double").alias("score"))
    return (exploded.join(users, on="_user", how="inner")
            .join(F.broadcast(item_keys), on="_item", how="inner")
            .select("user_id", "item_id", "score"))


def popularity_candidates(forecasts: DataFrame, popular: DataFrame) -> DataFrame:
    """``user_id``, ``item_id``, ``score`` from the forecast's categories and their popular
    items."""
    cats = forecasts.select("user_id", F.explode("top_categories").alias("c")).select(
        "user_id", F.col("c.category").alias("category"), F.col("c.probability").alias("p"))
    return (cats.join(popular, on="category", how="inner")
            .groupBy("user_id", "item_id").agg(F.max(F.col("p") * F.col("share")).alias("score"))
            .select("user_id", "item_id", "score"))


def recommendations(
    als: DataFrame | None,
    popularity: DataFrame,
    purchased: DataFrame,
    categories: DataFrame,
    top_k: int,
    run_date: dt.date,
    run_id: str,
    sequence_model_version: int | None = None,
) -> DataFrame:
    """Merge the candidates into gold.recommendations rows (see the module doc).

    Args:
        als: :func:`als_candidates` output, or None when ALS could not run.
        popularity: :func:`popularity_candidates` output.
        purchased: :func:`purchased_items` of history up to the run date.
        categories: :func:`item_categories` (for the ``category`` column).
        top_k: items per user.
        run_date, run_id, sequence_model_version: stamped on every row.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    parts = [popularity.select("*", F.lit(POPULARITY_SOURCE).alias("source"))]
    if als is not None:
        parts.insert(0, als.select("*", F.lit(ALS_SOURCE).alias("source")))
    candidates = parts[0]
    for part in parts[1:]:
        candidates = candidates.unionByName(part)
    order = F.when(F.col("source") == ALS_SOURCE, F.lit(0)).otherwise(F.lit(1))
    fresh = (candidates.where(F.col("score").isNotNull() & ~F.isnan("score"))
             .join(purchased, on=["user_id", "item_id"], how="left_anti")
             .select("*", order.alias("_order")))
    best_source = Window.partitionBy("user_id", "item_id").orderBy("_order", F.desc("score"))
    per_user = Window.partitionBy("user_id").orderBy("_order", F.desc("score"), "item_id")
    ranked = (fresh.select("*", F.row_number().over(best_source).alias("_dup"))
              .where(F.col("_dup") == 1)
              .select("*", F.row_number().over(per_user).alias("rank"))
              .where(F.col("rank") <= top_k)
              .join(categories, on="item_id", how="left"))
    reason = (F.when(F.col("source") == ALS_SOURCE,
                     F.lit("people who behave like this user engaged with this item"))
              .otherwise(F.concat(F.lit("popular in "), F.coalesce(F.col("category"), F.lit("?")),
                                  F.lit(", a category this user is likely to buy"))))
    return ranked.select(
        "user_id", F.lit(run_date).alias("run_date"), F.col("rank").cast("int").alias("rank"),
        "item_id", "category", "score", "source", reason.alias("reason"),
        F.lit(sequence_model_version).cast("int").alias("sequence_model_version"),
        F.lit(run_id).alias("run_id"),
    )
