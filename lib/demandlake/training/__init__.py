"""Model training: one Horovod code path for both models, data shards, MLflow tracking/registry.

Entry points (see docs/MODELS.md): :func:`demandlake.training.runner.train_sequence_model`,
:func:`demandlake.training.runner.train_sentiment_model`,
:func:`demandlake.training.tracking.load_serving`. The package itself imports nothing heavy;
TensorFlow, Spark and MLflow are imported where they are used (inside functions shipped to ranks).
"""
