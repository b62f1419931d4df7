"""Model families for the purchase propensity, judged on the same rows as the sequence network.

Every retrain of the sequence model (``training.runner.train_model``) also fits each enabled
Spark ML family on the same training rows of the same ``gold.sequence_examples`` snapshot and
scores it on the same validation rows. The best family on ``sequence_model.promote_metric`` is
what gets registered under the sequence model's registered name, with the version tag
``family`` saying which it is; it then has to beat the serving version (of whatever family) on
those rows, as before. Scoring reads the tag (``scoring.serving``): a Spark ML model scores in
Spark (:func:`score`), the network through its Arrow UDF.

Families:

* ``sequence_network``: the Keras model the Horovod ranks train (embeddings + GRU/LSTM and its
  variants); it also predicts the next categories.
* ``spark_gbt``: ``pyspark.ml`` gradient-boosted trees on the static features plus
  sequence-derived ones (``features.propensity``). It predicts the purchase only: its rows'
  categories are the user's own preferred categories weighted by its probability.
"""
from __future__ import annotations

import logging
from typing import Mapping

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from demandlake.config import Config

log = logging.getLogger(__name__)

NETWORK = "sequence_network"
GBT = "spark_gbt"
FAMILIES = (NETWORK, GBT)
FAMILY_TAG = "family"
ARTIFACT = "model"


def family_of(tags: Mapping[str, str] | None) -> str:
    """The family of a registered version from its tags (versions from before families were
    recorded are networks)."""
    family = (tags or {}).get(FAMILY_TAG) or NETWORK
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r} (known: {', '.join(FAMILIES)})")
    return family


def enabled(cfg: Config) -> list[str]:
    """The Spark ML families this configuration trains beside the network."""
    fams = list(cfg.get("propensity.families") or [NETWORK])
    unknown = sorted(set(fams) - set(FAMILIES))
    if unknown:
        raise ValueError(f"propensity.families: unknown {unknown}; known: {list(FAMILIES)}")
    if NETWORK not in fams:
        raise ValueError("propensity.families must include sequence_network (it also predicts "
                         "the categories)")
    return [f for f in fams if f != NETWORK]


def with_features(cfg: Config, df: DataFrame) -> DataFrame:
    """``df`` (sequence-example rows) with the propensity features."""
    from demandlake.features.propensity import propensity_features

    return df.transform(propensity_features(int(cfg["sequences.max_length"]),
                                            float(cfg.get("sessions.gap_minutes", 30))))


def fit_gbt(cfg: Config, train: DataFrame):
    """A ``PipelineModel`` (feature assembly + ``GBTClassifier``) fitted on the labelled rows of
    ``train``."""
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import GBTClassifier
    from pyspark.ml.feature import VectorAssembler

    from demandlake.features.propensity import PROPENSITY_FEATURES

    g = cfg.get("propensity.spark_gbt") or {}
    rows = (with_features(cfg, train.where(F.col("label_purchase").isNotNull()))
            .select(*PROPENSITY_FEATURES, F.col("label_purchase").cast("double").alias("label")))
    pipeline = Pipeline(stages=[
        VectorAssembler(inputCols=list(PROPENSITY_FEATURES), outputCol="features",
                        handleInvalid="keep"),
        GBTClassifier(maxIter=int(g.get("max_iter", 40)), maxDepth=int(g.get("max_depth", 4)),
                      stepSize=float(g.get("step_size", 0.1)),
                      subsamplingRate=float(g.get("subsampling_rate", 0.8)),
                      minInstancesPerNode=int(g.get("min_instances_per_node", 5)),
                      seed=int(g.get("seed", 7))),
    ])
    return pipeline.fit(rows)


def score(cfg: Config, model, df: DataFrame, keep: tuple[str, ...] = ("user_id",)) -> DataFrame:
    """``keep`` columns of ``df`` plus ``purchase_probability`` from a fitted family pipeline."""
    from pyspark.ml.functions import vector_to_array

    return (model.transform(with_features(cfg, df))
            .select(*keep, vector_to_array("probability")[1].alias("purchase_probability")))


def metrics(cfg: Config, model, df: DataFrame) -> dict[str, float]:
    """``purchase_*`` metrics (as the network's) of ``model`` on the labelled rows of ``df``."""
    from demandlake.training import evaluate as ev

    scored = score(cfg, model, df.where(F.col("label_purchase").isNotNull()),
                   keep=("label_purchase",))
    out = ev.binary_metrics(ev.spark_binary_counts(scored, "label_purchase",
                                                   "purchase_probability"))
    return {f"purchase_{k}": v for k, v in out.items()}


def log_spark_model(run_id: str, model, family: str) -> str:
    """Log a fitted Spark ML family in the run (MLflow's ``spark`` flavour); its URI."""
    import importlib.metadata as md

    import mlflow

    reqs = [f"{dist}=={md.version(dist)}" for dist in ("mlflow", "pyspark")]
    with mlflow.start_run(run_id=run_id):
        # mlflow.spark (3.17) still takes artifact_path, not name.
        info = mlflow.spark.log_model(model, f"{ARTIFACT}-{family}", pip_requirements=reqs)
    return info.model_uri


def load_spark_model(uri: str):
    """A registered Spark ML family as a ``PipelineModel``."""
    import mlflow

    return mlflow.spark.load_model(uri)
