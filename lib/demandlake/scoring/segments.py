"""User segments: Spark ML KMeans over standardized user features, named by rules on centroids.

Inputs per user (from ``gold.user_features``, see :func:`segment_inputs`): recency, tenure,
activity, purchase frequency, spend, conversion and price sensitivity. They are standardized
(``StandardScaler`` with mean and standard deviation), so every KMeans centroid is a vector of
z-scores: "how far is this cluster from the average user, in standard deviations". Names follow
from those z-scores by the rules of :func:`segment_name` (first match wins; the thresholds are
``scoring.segments.rules``):

1. ``at risk``: recency z >= ``at_risk_recency`` (last seen long ago compared with others);
2. ``new``: tenure z <= ``new_tenure`` (first seen much more recently than others);
3. ``loyal high spenders``: spend z and purchase frequency z both >= ``high_spender``;
4. ``bargain hunters``: price sensitivity z >= ``bargain_sensitivity``;
5. ``casual browsers``: activity z and conversion z both <= ``casual_activity``;
6. ``regular shoppers``: every other cluster.

Two clusters may get the same name (the name describes, ``segment_id`` identifies).

Same data, same segments: KMeans' k-means|| initialisation samples partition by partition, so a
rerun whose input happens to be split differently (after a killed run, for instance) could find
the clusters in another order, or other clusters. :func:`stable_layout` fixes the layout (hash of
``user_id`` into a fixed number of partitions, sorted within each) and :func:`segment_ids` numbers
the clusters by their centroids (ascending, coordinate by coordinate), not by KMeans' internal
order, so ``segment_id`` is stable for the same data and seed.
"""
from __future__ import annotations

from typing import Mapping, Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

SEGMENT_FEATURES = (
    "recency_days",       # days since the last event
    "tenure_days",        # days since first seen
    "activity",           # log1p(events in the lookback window)
    "frequency",          # log1p(purchase events in the lookback window)
    "monetary",           # log1p(revenue in the lookback window; 0 without priced purchases)
    "conversion",         # share of lookback sessions with a purchase (0 without sessions)
    "price_sensitivity",  # share of purchases below the category median (0.5 when unknown)
)

DEFAULT_RULES = {"at_risk_recency": 0.75, "new_tenure": -0.75, "high_spender": 0.5,
                 "bargain_sensitivity": 0.5, "casual_activity": 0.0}

SEGMENT_NAMES = ("at risk", "new", "loyal high spenders", "bargain hunters", "casual browsers",
                 "regular shoppers")


def lookback_value(map_col: str, windows_days: Sequence[int]) -> Column:
    """The value of a ``{window days: value}`` feature map for the longest window (0 if null)."""
    longest = max(int(w) for w in windows_days)
    return F.coalesce(F.try_element_at(F.col(map_col), F.lit(longest)).cast("double"), F.lit(0.0))


def segment_inputs(windows_days: Sequence[int]):
    """gold.user_features rows -> ``user_id`` plus the :data:`SEGMENT_FEATURES` doubles.

    Args:
        windows_days: the feature windows (``features.windows_days``); the longest is used.
    """
    if not windows_days:
        raise ValueError("windows_days must not be empty")

    def transform(features: DataFrame) -> DataFrame:
        return features.select(
            "user_id",
            F.col("days_since_last_event").cast("double").alias("recency_days"),
            F.col("days_since_first_seen").cast("double").alias("tenure_days"),
            F.log1p(lookback_value("events_by_window", windows_days)).alias("activity"),
            F.log1p(lookback_value("purchases_by_window", windows_days)).alias("frequency"),
            F.log1p(F.greatest(lookback_value("revenue_by_window", windows_days), F.lit(0.0)))
            .alias("monetary"),
            F.coalesce(F.col("conversion_rate"), F.lit(0.0)).alias("conversion"),
            F.coalesce(F.col("price_sensitivity"), F.lit(0.5)).alias("price_sensitivity"),
        )

    return transform


def segment_pipeline(k: int, seed: int, max_iter: int = 30):
    """Unfitted Spark ML pipeline: assemble :data:`SEGMENT_FEATURES`, standardize, KMeans.

    Args:
        k: clusters (``scoring.segments.k``).
        seed: KMeans seed (same data and seed give the same clusters).
        max_iter: KMeans iterations.
    """
    from pyspark.ml import Pipeline
    from pyspark.ml.clustering import KMeans
    from pyspark.ml.feature import StandardScaler, VectorAssembler

    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return Pipeline(stages=[
        VectorAssembler(inputCols=list(SEGMENT_FEATURES), outputCol="_raw"),
        StandardScaler(inputCol="_raw", outputCol="_z", withMean=True, withStd=True),
        KMeans(featuresCol="_z", predictionCol="segment_id", k=k, seed=seed, maxIter=max_iter),
    ])


def stable_layout(partitions: int = 8):
    """Transform: the same rows always laid out the same way (see the module doc)."""
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")

    def transform(inputs: DataFrame) -> DataFrame:
        return inputs.repartition(partitions, "user_id").sortWithinPartitions("user_id")

    return transform


def segment_ids(model) -> dict[int, int]:
    """``{KMeans cluster index: segment_id}``: clusters numbered by their centroids (ascending)."""
    centers = [tuple(float(x) for x in c) for c in model.stages[-1].clusterCenters()]
    order = sorted(range(len(centers)), key=lambda i: (centers[i], i))
    return {index: rank for rank, index in enumerate(order)}


def segment_name(z: Mapping[str, float], rules: Mapping[str, float] | None = None) -> str:
    """The readable name of one centroid (z-scores by feature); see the module doc.

    Args:
        z: ``{feature: z-score}`` for every name in :data:`SEGMENT_FEATURES`.
        rules: thresholds (``scoring.segments.rules``); missing keys take :data:`DEFAULT_RULES`.
    """
    missing = [f for f in SEGMENT_FEATURES if f not in z]
    if missing:
        raise ValueError(f"centroid lacks features {missing}")
    r = {**DEFAULT_RULES, **dict(rules or {})}
    if z["recency_days"] >= r["at_risk_recency"]:
        return "at risk"
    if z["tenure_days"] <= r["new_tenure"]:
        return "new"
    if z["monetary"] >= r["high_spender"] and z["frequency"] >= r["high_spender"]:
        return "loyal high spenders"
    if z["price_sensitivity"] >= r["bargain_sensitivity"]:
        return "bargain hunters"
    if z["activity"] <= r["casual_activity"] and z["conversion"] <= r["casual_activity"]:
        return "casual browsers"
    return "regular shoppers"


def centroid_names(model, rules: Mapping[str, float] | None = None) -> dict[int, str]:
    """``{segment_id: name}`` (ids of :func:`segment_ids`) for a fitted :func:`segment_pipeline` model (k centroids, small)."""
    centers = model.stages[-1].clusterCenters()
    ids = segment_ids(model)
    return {ids[i]: segment_name(dict(zip(SEGMENT_FEATURES, map(float, c))), rules)
            for i, c in enumerate(centers)}


def assign_segments(model, names: Mapping[int, str]):
    """Inputs of :func:`segment_inputs` -> ``user_id``, ``segment_id``, ``segment``."""
    mapping = F.create_map(*[x for i, n in sorted(names.items()) for x in (F.lit(i), F.lit(n))])
    ids = F.create_map(*[x for k, i in sorted(segment_ids(model).items())
                         for x in (F.lit(k), F.lit(i))])

    def transform(inputs: DataFrame) -> DataFrame:
        segment_id = ids[F.col("segment_id").cast("int")]
        return model.transform(inputs).select(
            "user_id", segment_id.alias("segment_id"),
            F.coalesce(mapping[segment_id], F.lit("regular shoppers")).alias("segment"))

    return transform
