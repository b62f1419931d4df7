"""Arrow (pandas) UDFs that score DataFrames with the serving models, whole batches at a time.

Each builder returns a function for ``DataFrame.mapInPandas`` (an iterator of pandas batches in,
an iterator of pandas batches out) or, for sequence scoring in the nightly job,
``DataFrame.mapInArrow`` (the same with Arrow record batches: no pandas objects per list cell).
The function loads the model when its first batch arrives (a task with no rows never imports
TensorFlow), through a per-process cache keyed by the model URI, so a Python worker that runs
many tasks (``spark.python.worker.reuse``, Spark's default) loads it once; the model is never called per row and no rows ever reach the driver.
Inside a batch the model is called on ``batch_size`` rows at a time (``scoring.batch_size``).

The sequence UDF computes exactly what ``SequencePredictor.predict`` computes
(:mod:`demandlake.training.predictors`; tests compare the numbers) but stacks whole batches into
matrices and runs the model as one compiled graph; the sentiment UDF calls the predictor itself
(it pre-segments text with jieba where configured).
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Iterator

import numpy as np
import pandas as pd
from pyspark.sql import types as T

log = logging.getLogger(__name__)

SEQUENCE_INPUTS = ("item_ids", "category_ids", "event_type_ids", "price_buckets", "time_gaps",
                   "static_features")

SEQUENCE_SCORES = T.StructType([
    T.StructField("user_id", T.StringType(), False),
    T.StructField("purchase_probability", T.DoubleType(), True),
    T.StructField("top_category_ids", T.ArrayType(T.IntegerType()), True),
    T.StructField("top_category_scores", T.ArrayType(T.DoubleType()), True),
])

SENTIMENT_SCORES = T.StructType([
    T.StructField("review_id", T.StringType(), False),
    T.StructField("probability", T.DoubleType(), True),
])

# Per Python worker process: model URI -> predictor (or compiled scorer). Survives across tasks
# while the worker lives, so a model is loaded once per worker, not once per task.
_PREDICTORS: dict[str, object] = {}


def _one_task_of_threads() -> None:
    """Give TensorFlow as many threads as the Spark task has cores.

    Spark runs one task per core and sets ``OMP_NUM_THREADS`` to ``spark.task.cpus`` in its Python
    workers; TensorFlow ignores that variable and would start a thread per machine core in every
    worker, so the workers would fight over the cores. Settable only before TensorFlow starts.
    """
    threads = int(os.environ.get("OMP_NUM_THREADS") or 0)
    if threads < 1:
        return
    try:
        import keras

        if keras.backend.backend() != "tensorflow":
            return
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow already started in this process: keep its settings
        pass


def load_predictor(model_uri: str, tracking_uri: str | None = None):
    """The predictor behind a logged pyfunc model, loaded once per process.

    Args:
        model_uri: ``models:/NAME/VERSION``, a local model folder, or any URI
            ``mlflow.pyfunc.load_model`` takes.
        tracking_uri: where ``models:/`` URIs resolve (the driver's tracking store).

    Returns:
        A :class:`~demandlake.training.predictors.SequencePredictor` or
        ``SentimentPredictor`` (its ``predict`` takes and returns pandas DataFrames).
    """
    key = f"{tracking_uri}|{model_uri}"
    if key not in _PREDICTORS:
        import mlflow

        _one_task_of_threads()
        if tracking_uri:
            mlflow.set_tracking_uri(tracking_uri)
        wrapper = mlflow.pyfunc.load_model(model_uri).unwrap_python_model()
        # The pyfunc wrapper built its predictor in load_context (public accessor requested from
        # training/; until then the attribute). Calling it directly skips PyFuncModel.predict's
        # per-batch signature enforcement, which copies every array cell.
        _PREDICTORS[key] = getattr(wrapper, "predictor", None) or wrapper._predictor
        log.info("loaded %s in this worker", model_uri)
    return _PREDICTORS[key]


class SequenceScorer:
    """Batch scoring with the serving sequence model: vectorized inputs, one compiled graph.

    Same contract and numbers as ``SequencePredictor.predict`` (tests compare them), faster:

    * inputs: rows of fixed width (what gold.sequence_examples guarantees) are stacked into
      matrices with one ``np.concatenate`` per column; a batch with a null or ragged row goes
      through the predictor's own row-by-row padding instead;
    * the model runs as one traced graph (``tf.function`` with an input signature of unknown
      batch and sequence length, so one trace serves every call; ``predict_on_batch`` under other
      Keras backends) instead of eagerly layer by layer;
    * the top categories are picked inside the graph (``tf.math.top_k`` over the categories
      after padding and OOV, equal scores in id order as the predictor's stable argsort has
      them): only ``top_n`` ids and scores per row leave TensorFlow, instead of sorting the whole
      category matrix in NumPy, which with a catalogue of thousands of categories cost more than
      the model itself;
    * padding is not computed: sequences are left-padded and the model masks padding steps, so a
      recurrent encoder gives the same numbers with the all-padding leading columns cut off.
      Rows are sorted by length and scored in sub-batches of ``bucket_rows``, each cut to its
      longest row. Whether the model really is indifferent to that cut (an attention encoder with
      absolute positions is not) is checked once per process on the first batch with padding:
      cut and uncut outputs of its most padded rows must agree within ``TRIM_TOLERANCE``, else
      every batch is scored uncut.
    """

    TRIM_TOLERANCE = 1e-6

    def __init__(self, predictor, top_n: int, bucket_rows: int = 512, trim: bool = True):
        import keras

        self.predictor = predictor
        self.model = predictor.model
        self.top_n = int(top_n)
        self.length = int(predictor.meta["max_length"])
        self.n_static = int(predictor.meta["n_static"])
        self.bucket_rows = max(1, int(bucket_rows))
        self.trim: bool | None = None if trim else False  # None: not checked yet
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            spec = {c: tf.TensorSpec([None, None], tf.int32) for c in SEQUENCE_INPUTS[:4]}
            spec["time_gaps"] = tf.TensorSpec([None, None], tf.float32)
            spec["static_features"] = tf.TensorSpec([None, self.n_static], tf.float32)
            top_n = self.top_n

            def scores(x):
                out = self.model(x, training=False)
                # Padding (0) and OOV (1) are never predicted: pick among ids 2.. only.
                cat = out["categories"][:, 2:]
                top = tf.math.top_k(cat, k=tf.minimum(top_n, tf.shape(cat)[1]), sorted=True)
                return {"purchase": out["purchase"], "top_scores": top.values,
                        "top_ids": top.indices + 2}

            graph = tf.function(scores, input_signature=[spec])
            self._call = lambda x: {k: v.numpy() for k, v in graph(x).items()}
        else:
            self._call = lambda x: self._top_in_numpy(self.model.predict_on_batch(x))

    def _top_in_numpy(self, out: dict) -> dict[str, np.ndarray]:
        """The graph's outputs computed in NumPy (backends other than TensorFlow)."""
        cat = np.asarray(out["categories"], dtype=np.float64)[:, 2:]
        top = np.argsort(-cat, axis=1, kind="stable")[:, :self.top_n]
        return {"purchase": np.asarray(out["purchase"]),
                "top_scores": np.take_along_axis(cat, top, axis=1), "top_ids": top + 2}

    def _cut(self, x: dict[str, np.ndarray], rows: np.ndarray, width: int) -> dict:
        """Rows ``rows`` of ``x`` with only the last ``width`` steps of the step inputs."""
        return {c: v[rows, -width:] if c != "static_features" else v[rows] for c, v in x.items()}

    def _trim_is_exact(self, x: dict[str, np.ndarray], needed: np.ndarray) -> bool:
        rows = np.argsort(needed, kind="stable")[:64]
        width = max(1, int(needed[rows].max()))
        full = self._call({c: v[rows] for c, v in x.items()})
        cut = self._call(self._cut(x, rows, width))
        # Scores, not ids: two near-equal categories may swap within the tolerance.
        exact = all(np.allclose(full[k], cut[k], rtol=0.0, atol=self.TRIM_TOLERANCE)
                    for k in ("purchase", "top_scores"))
        log.info("scoring without padding steps: %s (checked on %d rows cut to %d of %d steps)",
                 "exact, on" if exact else "changes the outputs, off", len(rows), width,
                 self.length)
        return exact

    def run(self, x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``purchase``, ``top_ids`` and ``top_scores`` (best first) for full-width inputs."""
        ids = x["item_ids"]
        # Steps each row needs: from its first non-padding item to the end (all-padding rows
        # keep every step, so nothing is ever cut that the model might look at).
        nonzero = ids != 0
        needed = np.where(nonzero.any(axis=1), self.length - nonzero.argmax(axis=1), self.length)
        if self.trim is None and (needed < self.length).any():
            self.trim = self._trim_is_exact(x, needed)
        if not self.trim or (needed == self.length).all():
            return self._call(x)
        order = np.argsort(needed, kind="stable")
        parts, index = [], []
        for start in range(0, len(order), self.bucket_rows):
            rows = order[start:start + self.bucket_rows]
            parts.append(self._call(self._cut(x, rows, max(1, int(needed[rows].max())))))
            index.append(rows)
        back = np.argsort(np.concatenate(index), kind="stable")
        return {k: np.concatenate([np.asarray(p[k]) for p in parts])[back] for k in parts[0]}

    def inputs(self, batch: pd.DataFrame) -> dict[str, np.ndarray]:
        """Model inputs of a batch (see the class doc)."""
        n = len(batch)
        widths = {c: self.length for c in SEQUENCE_INPUTS}
        widths["static_features"] = self.n_static
        x = {}
        for c, width in widths.items():
            cells = batch[c].to_numpy()
            try:
                lengths = np.fromiter((len(v) for v in cells), np.int64, n)
            except TypeError:  # a null row
                return self.predictor.inputs(batch)
            if (lengths != width).any():  # ragged: the predictor pads row by row
                return self.predictor.inputs(batch)
            # One concatenate per column (several times faster than np.stack of the cells).
            x[c] = np.concatenate(cells).reshape(n, width)
        out = {c: x[c].astype(np.int32, copy=False) for c in SEQUENCE_INPUTS[:4]}
        out.update({c: x[c].astype(np.float32, copy=False) for c in SEQUENCE_INPUTS[4:]})
        return out

    def arrow_inputs(self, batch) -> dict[str, np.ndarray]:
        """Model inputs of a ``pyarrow.RecordBatch``: NumPy views of the list columns' values
        (no pandas, no per-row objects); a null row goes through the predictor's padding, as in
        :meth:`inputs`, and rows of another length are cut or padded as it would."""
        from demandlake.training.data import fixed_width

        try:
            x = {c: fixed_width(batch.column(c), self.length, np.int32, fit=True)
                 for c in SEQUENCE_INPUTS[:4]}
            x["time_gaps"] = fixed_width(batch.column("time_gaps"), self.length, np.float32,
                                         fit=True)
            x["static_features"] = fixed_width(batch.column("static_features"), self.n_static,
                                               np.float32)
        except ValueError:  # a null row, or static features of another width
            return self.predictor.inputs(batch.select(list(SEQUENCE_INPUTS)).to_pandas())
        return x

    def predict_arrow(self, batch):
        """:meth:`predict` from and to Arrow: ``batch`` has ``user_id`` and
        :data:`SEQUENCE_INPUTS`; the result is a ``pyarrow.RecordBatch`` of
        :data:`SEQUENCE_SCORES` whose list columns are built from the flat score matrices."""
        import pyarrow as pa

        out = self.run(self.arrow_inputs(batch))
        ids = np.ascontiguousarray(out["top_ids"], dtype=np.int32)
        n, k = ids.shape
        offsets = pa.array(np.arange(0, n * k + 1, k, dtype=np.int32))
        scores = np.ascontiguousarray(out["top_scores"], dtype=np.float64).reshape(-1)
        return pa.RecordBatch.from_arrays(
            [batch.column("user_id"),
             pa.array(np.asarray(out["purchase"], dtype=np.float64).reshape(-1)),
             pa.ListArray.from_arrays(offsets, pa.array(ids.reshape(-1))),
             pa.ListArray.from_arrays(offsets, pa.array(scores))],
            names=list(SEQUENCE_SCORES.names))

    def predict(self, batch: pd.DataFrame) -> pd.DataFrame:
        """``purchase_probability``, ``top_category_ids``, ``top_category_scores`` of a batch."""
        if len(batch) == 0:
            return pd.DataFrame({"purchase_probability": pd.Series([], dtype="float64"),
                                 "top_category_ids": [], "top_category_scores": []})
        out = self.run(self.inputs(batch))
        p = np.asarray(out["purchase"], dtype=np.float64).reshape(-1)
        return pd.DataFrame({"purchase_probability": p,
                             "top_category_ids": list(out["top_ids"].astype(np.int32)),
                             "top_category_scores": list(out["top_scores"].astype(np.float64))})


def load_sequence_scorer(model_uri: str, tracking_uri: str | None, top_n: int,
                         skip_padding: bool = True) -> SequenceScorer:
    """A :class:`SequenceScorer` for the model, built once per process (per settings)."""
    key = f"scorer|{top_n}|{skip_padding}|{tracking_uri}|{model_uri}"
    if key not in _PREDICTORS:
        _PREDICTORS[key] = SequenceScorer(load_predictor(model_uri, tracking_uri), top_n,
                                          trim=skip_padding)
    return _PREDICTORS[key]


def _chunks(frame: pd.DataFrame, size: int) -> Iterator[pd.DataFrame]:
    for start in range(0, len(frame), size):
        yield frame.iloc[start:start + size]


def sequence_scorer(model_uri: str, tracking_uri: str | None, batch_size: int, top_n: int,
                    skip_padding: bool = True
                    ) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """A ``mapInPandas`` function scoring ``gold.sequence_examples``-shaped rows.

    Args:
        model_uri, tracking_uri: the serving sequence model (see :func:`load_predictor`).
        batch_size: rows per model call.
        top_n: categories kept per user (best first; padding and OOV never appear).
        skip_padding: cut padding steps when that is exact for the model
            (:class:`SequenceScorer`; ``scoring.skip_padding``).

    Returns:
        A function over batches with ``user_id`` and :data:`SEQUENCE_INPUTS`, yielding
        :data:`SEQUENCE_SCORES` rows (``top_category_scores`` are the category head's scores).
    """
    if batch_size < 1 or top_n < 1:
        raise ValueError(f"batch_size and top_n must be >= 1, got {batch_size}, {top_n}")

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        scorer = None
        for batch in batches:
            if scorer is None and len(batch):  # a task without rows never imports TensorFlow
                scorer = load_sequence_scorer(model_uri, tracking_uri, top_n, skip_padding)
            for part in _chunks(batch, batch_size):
                out = scorer.predict(part)
                yield pd.DataFrame({
                    "user_id": part["user_id"].to_numpy(),
                    "purchase_probability": out["purchase_probability"].to_numpy(),
                    "top_category_ids": out["top_category_ids"].to_numpy(),
                    "top_category_scores": out["top_category_scores"].to_numpy(),
                })

    return score


def sequence_scorer_arrow(model_uri: str, tracking_uri: str | None, batch_size: int, top_n: int,
                          skip_padding: bool = True) -> Callable[[Iterator], Iterator]:
    """:func:`sequence_scorer` for ``DataFrame.mapInArrow``: the same rows and numbers, with
    Arrow record batches in and out instead of pandas frames.

    The pandas path costs the Python worker a pandas object per list cell on the way in and,
    on the way out, Spark's per-row ``list(value)`` over each array column before Arrow
    rebuilds it; here the list columns are read as NumPy views of their values and written
    back from the flat score matrices (docs/SCORING.md has the measured difference).
    """
    if batch_size < 1 or top_n < 1:
        raise ValueError(f"batch_size and top_n must be >= 1, got {batch_size}, {top_n}")

    def score(batches: Iterator) -> Iterator:
        scorer = None
        for batch in batches:
            if scorer is None and batch.num_rows:  # a task without rows never imports TF
                scorer = load_sequence_scorer(model_uri, tracking_uri, top_n, skip_padding)
            for start in range(0, batch.num_rows, batch_size):
                part = batch.slice(start, batch_size)
                if part.num_rows:
                    yield scorer.predict_arrow(part)

    return score


def sentiment_scorer(model_uri: str, tracking_uri: str | None,
                     batch_size: int) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """A ``mapInPandas`` function scoring review texts.

    Args:
        model_uri, tracking_uri: the serving sentiment model.
        batch_size: texts per model call.

    Returns:
        A function over batches with ``review_id`` and ``text``, yielding
        :data:`SENTIMENT_SCORES` rows (``probability`` that the review is positive).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        predictor = None
        for batch in batches:
            if predictor is None and len(batch):  # a task without rows never imports TF
                predictor = load_predictor(model_uri, tracking_uri)
                predictor.meta.update(batch_size=batch_size)
            for part in _chunks(batch, batch_size):
                out = predictor.predict(part[["text"]])
                yield pd.DataFrame({"review_id": part["review_id"].to_numpy(),
                                    "probability": out["probability"].to_numpy()})

    return score
