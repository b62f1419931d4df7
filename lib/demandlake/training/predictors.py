"""Turn a pandas DataFrame into model inputs and predictions into a DataFrame (no MLflow).

Used by the MLflow pyfunc wrappers (:mod:`demandlake.training.pyfunc`) and directly by the
training ranks, which evaluate the new model through exactly the code that will score it.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

SEQUENCE_ID_COLUMNS = ("item_ids", "category_ids", "event_type_ids", "price_buckets")
SEQUENCE_COLUMNS = (*SEQUENCE_ID_COLUMNS, "time_gaps", "static_features")


def _matrix(values, width: int, dtype, left_pad: bool = True) -> np.ndarray:
    """Rows of lists/arrays -> ``[n, width]``; shorter rows padded with 0 (left, keeping the most
    recent values at the end), longer rows keep their last ``width`` values."""
    out = np.zeros((len(values), width), dtype)
    for i, v in enumerate(values):
        if v is None:
            continue
        a = np.asarray(v, dtype=dtype).reshape(-1)[-width:]
        if left_pad:
            out[i, width - a.size:] = a
        else:
            out[i, :a.size] = a
    return out


def load_keras(path: str):
    import keras

    # Registers the custom layers and text functions the saved model refers to.
    import demandlake.models.layers  # noqa: F401
    import demandlake.training.text  # noqa: F401

    return keras.saving.load_model(path, compile=False)


class _Predictor:
    """A Keras model plus the facts (``meta``) needed to feed it from a DataFrame."""

    def __init__(self, meta: dict[str, Any], model=None):
        self.meta = dict(meta)
        self.model = model


class SequencePredictor(_Predictor):
    """Input: the six array columns of ``gold.sequence_examples`` (ints / floats per step).

    Output columns: ``purchase_probability`` (double), ``top_category_ids`` (array<long>, best
    first, padding/OOV ids excluded) and ``top_category_scores`` (array<double>, the category
    head's scores for them).
    """

    def inputs(self, df: pd.DataFrame) -> dict[str, np.ndarray]:
        L, S = int(self.meta["max_length"]), int(self.meta["n_static"])
        missing = [c for c in SEQUENCE_COLUMNS if c not in df.columns]
        if missing:
            raise ValueError(f"sequence model input lacks columns {missing}")
        x = {c: _matrix(df[c].tolist(), L, np.int64) for c in SEQUENCE_ID_COLUMNS}
        x = {c: np.clip(v, -1, 2**31 - 1).astype(np.int32) for c, v in x.items()}
        x["time_gaps"] = _matrix(df["time_gaps"].tolist(), L, np.float32)
        x["static_features"] = _matrix(df["static_features"].tolist(), S, np.float32,
                                       left_pad=False)
        return x

    def predict(self, model_input) -> pd.DataFrame:
        df = pd.DataFrame(model_input)
        k = int(self.meta.get("top_k", 20))
        if len(df) == 0:
            return pd.DataFrame({"purchase_probability": pd.Series([], dtype="float64"),
                                 "top_category_ids": [], "top_category_scores": []})
        x = self.inputs(df)
        batch = int(self.meta.get("batch_size", 1024))
        probs, ids, scores = [], [], []
        for start in range(0, len(df), batch):
            out = self.model({c: v[start:start + batch] for c, v in x.items()}, training=False)
            p = np.asarray(out["purchase"], dtype=np.float64).reshape(-1)
            cat = np.asarray(out["categories"], dtype=np.float64)
            cat[:, :2] = -np.inf  # padding and OOV are never recommended
            kk = min(k, cat.shape[1] - 2)
            top = np.argsort(-cat, axis=1, kind="stable")[:, :kk]
            probs.append(p)
            ids.extend(top.astype(np.int64))
            scores.extend(np.take_along_axis(cat, top, axis=1))
        return pd.DataFrame({"purchase_probability": np.concatenate(probs),
                             "top_category_ids": [list(map(int, r)) for r in ids],
                             "top_category_scores": [list(map(float, r)) for r in scores]})


class SentimentPredictor(_Predictor):
    """Input: a ``text`` column of raw review text (any language the vocabulary covers).

    Output columns: ``probability`` (double, positive) and ``sentiment`` (``positive``,
    ``negative`` or ``neutral`` when the probability falls in the configured neutral band).
    """

    def predict(self, model_input) -> pd.DataFrame:
        from demandlake.training.text import presegment

        df = pd.DataFrame(model_input)
        col = "text" if "text" in df.columns else df.columns[0]
        texts = presegment(df[col].tolist(), self.meta["tokenizer"])
        batch = int(self.meta.get("batch_size", 1024))
        probs = []
        for start in range(0, len(texts), batch):
            chunk = np.asarray(texts[start:start + batch], dtype=object)
            out = self.model(chunk, training=False)
            out = out["positive"] if isinstance(out, dict) else out
            probs.append(np.asarray(out, dtype=np.float64).reshape(-1))
        p = np.concatenate(probs) if probs else np.zeros(0)
        low, high = self.meta.get("neutral_band", (0.5, 0.5))
        label = np.where(p >= high, "positive", np.where(p < low, "negative", "neutral"))
        return pd.DataFrame({"probability": p, "sentiment": label.astype(object)})
