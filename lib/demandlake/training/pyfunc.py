"""MLflow pyfunc wrappers: how a logged model scores a pandas DataFrame (and ``spark_udf``).

A wrapper holds a ``.keras`` artifact plus a few facts (``meta``) and delegates to the
predictors of :mod:`demandlake.training.predictors`. Wrappers rather than the ``mlflow.keras``
flavour because the sequence model takes six array columns and returns a probability plus a
ranked category list, and the sentiment model may need jieba before its in-graph vectorizer; a
wrapper gives both a flat, typed signature that ``mlflow.pyfunc.spark_udf`` turns into a Spark
struct.
"""
from __future__ import annotations

import warnings
from typing import Any

import mlflow.pyfunc

from demandlake.training import predictors

# The wrappers take DataFrames and declare explicit signatures; MLflow's type-hint validation
# (and its warning about missing hints) does not apply.
warnings.filterwarnings("ignore", message=".*Add type hints to the `predict` method")


class _KerasPyfunc(mlflow.pyfunc.PythonModel):
    """Common part: the Keras model is loaded from the artifact, never pickled."""

    predictor_class: type = predictors.SequencePredictor

    def __init__(self, meta: dict[str, Any]):
        self.meta = dict(meta)
        self._predictor = None

    def __getstate__(self):
        return {"meta": self.meta, "_predictor": None}

    def load_context(self, context) -> None:
        model = predictors.load_keras(context.artifacts["keras_model"])
        self._predictor = self.predictor_class(self.meta, model)

    @property
    def predictor(self):
        """The :mod:`~demandlake.training.predictors` object (after ``load_context``)."""
        return self._predictor

    def predict(self, context, model_input, params=None):
        return self._predictor.predict(model_input)


class SequencePyfunc(_KerasPyfunc):
    """See :class:`demandlake.training.predictors.SequencePredictor` for columns."""

    predictor_class = predictors.SequencePredictor


class SentimentPyfunc(_KerasPyfunc):
    """See :class:`demandlake.training.predictors.SentimentPredictor` for columns."""

    predictor_class = predictors.SentimentPredictor
