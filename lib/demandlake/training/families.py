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
  sequence-derived ones (``features.propensity``).
* ``spark_logistic``: ``pyspark.ml`` logistic regression (L2) on the same features, standardized.

A Spark ML family predicts the purchase only: its rows' categories are the user's own preferred
categories weighted by its probability.
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
LOGISTIC = "spark_logistic"
FAMILIES = (NETWORK, GBT, LOGISTIC)
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


def fit(cfg: Config, family: str, train: DataFrame):
    """A ``PipelineModel`` of a Spark ML ``family`` (feature assembly + its estimator), fitted
    on the labelled rows of ``train`` (sequence-example rows)."""
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import GBTClassifier, LogisticRegression
    from pyspark.ml.feature import StandardScaler, VectorAssembler

    from demandlake.features.propensity import PROPENSITY_FEATURES

    # The GBT's subsampling draws per partition: the same rows laid out another way (a rerun
    # reads differently written files) would give another model. A fixed layout, as KMeans's.
    layout = int(cfg.get("propensity.fit_partitions", 4))
    rows = (with_features(cfg, train.where(F.col("label_purchase").isNotNull())
                          .repartition(layout, "user_id")
                          .sortWithinPartitions("user_id", "cutoff_date"))
            .select(*PROPENSITY_FEATURES, F.col("label_purchase").cast("double").alias("label")))
    assemble = VectorAssembler(inputCols=list(PROPENSITY_FEATURES), outputCol="raw_features",
                               handleInvalid="keep")
    g = cfg.get(f"propensity.{family}") or {}
    if family == GBT:
        stages = [assemble, GBTClassifier(
            featuresCol="raw_features", maxIter=int(g.get("max_iter", 40)),
            maxDepth=int(g.get("max_depth", 4)), stepSize=float(g.get("step_size", 0.1)),
            subsamplingRate=float(g.get("subsampling_rate", 0.8)),
            minInstancesPerNode=int(g.get("min_instances_per_node", 5)),
            seed=int(g.get("seed", 7)))]
    elif family == LOGISTIC:
        stages = [assemble, StandardScaler(inputCol="raw_features", outputCol="features",
                                           withMean=True, withStd=True),
                  LogisticRegression(maxIter=int(g.get("max_iter", 100)),
                                     regParam=float(g.get("reg_param", 0.01)))]
    else:
        raise ValueError(f"not a Spark ML family: {family!r}")
    return Pipeline(stages=stages).fit(rows)



class SparkFamilyModel:
    """A fitted Spark ML family: its ``PipelineModel`` and the Platt calibration chosen for it
    on the validation rows (``{"method": "platt", "a", "b"}``, or ``{"method": "none"}``)."""

    def __init__(self, pipeline, calibration: Mapping | None = None):
        self.pipeline = pipeline
        self.calibration = dict(calibration or {"method": "none"})

    def probability(self, raw):
        """The calibrated probability column from the pipeline's raw one."""
        if self.calibration.get("method") != "platt":
            return raw
        eps = 1e-7
        p = F.least(F.greatest(raw, F.lit(eps)), F.lit(1 - eps))
        z = F.lit(float(self.calibration["a"])) * F.log(p / (1 - p)) \
            + F.lit(float(self.calibration["b"]))
        return 1 / (1 + F.exp(-z))


def _as_family_model(model) -> SparkFamilyModel:
    return model if isinstance(model, SparkFamilyModel) else SparkFamilyModel(model)


def score(cfg: Config, model, df: DataFrame, keep: tuple[str, ...] = ("user_id",)) -> DataFrame:
    """``keep`` columns of ``df`` plus ``purchase_probability`` from a fitted family
    (a :class:`SparkFamilyModel`, or a bare ``PipelineModel``: uncalibrated)."""
    from pyspark.ml.functions import vector_to_array

    m = _as_family_model(model)
    raw = vector_to_array("probability")[1]
    return (m.pipeline.transform(with_features(cfg, df))
            .select(*keep, m.probability(raw).alias("purchase_probability")))


def calibrate(cfg: Config, model, validation: DataFrame) -> SparkFamilyModel:
    """``model`` with Platt scaling when, fitted on the labelled ``validation`` rows, it lowers
    their log loss out of fold (``evaluate.choose_calibration``; isotonic is left to the bench:
    a step function does not travel as two numbers). The rows' (label, probability) pairs are
    collected: two doubles a row."""
    import numpy as np

    from demandlake.training import evaluate as ev

    m = _as_family_model(model)
    pairs = score(cfg, m.pipeline, validation.where(F.col("label_purchase").isNotNull()),
                  keep=("label_purchase",)).collect()
    if len(pairs) < 20 or len({r[0] for r in pairs}) < 2:
        return m
    y = np.array([r[0] for r in pairs], dtype=float)
    p = np.array([r[1] for r in pairs], dtype=float)
    choice = ev.choose_calibration(y, p, methods=("platt",))
    if choice["method"] == "platt":
        f = ev.fit_calibration(y, p, "platt")
        return SparkFamilyModel(m.pipeline, {"method": "platt", "a": f.a, "b": f.b,
                                             "log_loss_out_of_fold": choice["log_loss"]})
    return SparkFamilyModel(m.pipeline, {"method": "none",
                                         "log_loss_out_of_fold": choice["log_loss"]})


def metrics(cfg: Config, model, df: DataFrame) -> dict[str, float]:
    """``purchase_*`` metrics (as the network's) of ``model`` on the labelled rows of ``df``."""
    from demandlake.training import evaluate as ev

    scored = score(cfg, model, df.where(F.col("label_purchase").isNotNull()),
                   keep=("label_purchase",))
    out = ev.binary_metrics(ev.spark_binary_counts(scored, "label_purchase",
                                                   "purchase_probability"))
    return {f"purchase_{k}": v for k, v in out.items()}


def log_spark_model(run_id: str, model, family: str) -> str:
    """Log a fitted Spark ML family in the run (MLflow's ``spark`` flavour, its calibration in
    the model's metadata); its URI."""
    import importlib.metadata as md

    import mlflow

    m = _as_family_model(model)
    reqs = [f"{dist}=={md.version(dist)}" for dist in ("mlflow", "pyspark")]
    with mlflow.start_run(run_id=run_id):
        # mlflow.spark (3.17) still takes artifact_path, not name.
        info = mlflow.spark.log_model(
            m.pipeline, f"{ARTIFACT}-{family}", pip_requirements=reqs,
            metadata={"family": family, "calibration": {
                k: v for k, v in m.calibration.items() if k in ("method", "a", "b")}})
    return info.model_uri


def load_spark_model(uri: str) -> SparkFamilyModel:
    """A registered Spark ML family: its pipeline and calibration."""
    import mlflow

    metadata = mlflow.models.get_model_info(uri).metadata or {}
    return SparkFamilyModel(mlflow.spark.load_model(uri), metadata.get("calibration"))
