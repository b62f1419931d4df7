"""Keras 3 models (``keras`` and ``keras.ops`` only: no Spark, no I/O, no ``tf.*``).

Written against the backend-neutral Keras API so the same builders run under TensorFlow (the
Horovod trainer) and can be measured on a JAX or PyTorch backend. Text vectorization and input
pipelines live in :mod:`demandlake.training`.
"""
from demandlake.models.sentiment import build_sentiment_model
from demandlake.models.sequence import build_sequence_model

__all__ = ["build_sequence_model", "build_sentiment_model"]
