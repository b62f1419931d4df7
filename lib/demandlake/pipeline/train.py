"""The training stages: rebuild a model's training data from the lake, train it, register it and
promote it when it beats the serving version (``demandlake.training``).

Each run is one row in ``ops.runs`` (stage ``train_sequence`` or ``train_sentiment``) for the run
date it was started for, with the MLflow run id, the registered version and whether it was
promoted, so the run log says which nightly or weekly run produced which model.
"""
from __future__ import annotations

import datetime as dt
import logging

from pyspark.sql import SparkSession

from demandlake import runlog
from demandlake.config import Config

log = logging.getLogger(__name__)

MODELS = ("sentiment", "sequence")


def has_serving(cfg: Config, model: str) -> bool:
    """Whether the registry has a version of ``model`` under the serving alias."""
    from demandlake.scoring import serving

    found, _ = serving.resolve(cfg, model)
    return found is not None


def run_train(spark: SparkSession, cfg: Config, run_date: dt.date | None, model: str,
              if_none_serving: bool = False) -> dict:
    """Build ``model``'s training data and train it (registers; promotes only if better).

    Args:
        run_date: the run this training belongs to (recorded in ops.runs); training reads the
            whole lake as it is.
        model: ``sequence`` or ``sentiment``.
        if_none_serving: train only when no version of the model serves yet (the nightly
            chain on a new lake); otherwise record a skipped run.

    Returns:
        Counts: skipped, version, promoted, seconds, run_id.
    """
    from demandlake.pipeline import transform
    from demandlake.training import runner

    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; known: {', '.join(MODELS)}")
    with runlog.tracked(spark, cfg, f"train_{model}", run_date) as run:
        if if_none_serving and has_serving(cfg, model):
            run.add(skipped=1, reason="a version is serving")
            return {"skipped": 1}
        if model == "sequence":
            data = transform.run_sequence_examples(spark, cfg, run_date)
            sizes = {s: data.get(f"examples_{s}", 0) for s in ("train", "validation")}
        else:
            data = transform.run_review_corpus(spark, cfg, run_date)
            sizes = {s: data.get(f"rows_{s}", 0) for s in ("train", "validation")}
        run.add(**{f"data.{k}": v for k, v in data.items()})
        empty = [s for s, n in sizes.items() if not n]
        if empty and if_none_serving:
            # A new lake's first days: a model without training or validation rows could not be
            # promoted, so the nightly goes on without one (forecasts fall back) until it can.
            why = f"not enough history yet: no {' or '.join(empty)} rows"
            log.info("train_%s for %s skipped: %s", model, run_date, why)
            run.add(skipped=1, reason=why)
            return {"skipped": 1, "reason": why}
        if empty and not sizes["train"]:
            raise ValueError(f"cannot train the {model} model: no training rows in the lake yet "
                             f"({data})")
        result = (runner.train_sequence_model(spark, cfg) if model == "sequence"
                  else runner.train_sentiment_model(spark, cfg))
        counts = {"skipped": 0, "version": result.version, "promoted": int(result.promoted),
                  "seconds": round(result.seconds, 1), "run_id": result.run_id}
        run.add(**counts)
        return counts
