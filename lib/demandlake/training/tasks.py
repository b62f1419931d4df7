"""What differs between the two trained models: data columns, preprocessing, model, loss, metrics.

The Horovod trainer (:mod:`demandlake.training.horovod_trainer`) is the same for both; it asks a
task for the columns to read, the arrays to train on, the model, the loss, the evaluation and the
rows the serving champion is judged on. :class:`Task` holds the defaults.
"""
from __future__ import annotations

import logging

import numpy as np

from demandlake.training import evaluate as ev

log = logging.getLogger(__name__)


def _section(cfg: dict, name: str) -> dict:
    return dict(cfg.get(name) or {})


class Task:
    """What the trainer asks of every task, with the defaults of a task that fits no
    preprocessing, serves the model it trains and whose champion codes its inputs as it does.

    A task also names ``name``, ``table``, ``columns``, ``row_filter``, ``pyfunc_class_name``
    and ``predictor_class_name``, and implements ``build_model``, ``losses``, ``val_sums``,
    ``val_metrics``, ``pyfunc_meta``, ``frame``, ``eval_sums``, ``eval_metrics`` and
    ``promotion``.
    """

    def prepare(self, tables: dict, hvd) -> dict:
        """Arrays per split: ``{split: (x, y)}``, from :meth:`arrays` (nothing fitted).

        Args:
            tables: this rank's pyarrow table of each split (None where it has no rows).
            hvd: the Horovod module, for preprocessing fitted across ranks.
        """
        return {s: self.arrays(t) for s, t in tables.items() if t is not None}

    def arrays(self, table) -> tuple[dict, dict]:
        """Model inputs and labels of one table's rows."""
        raise NotImplementedError(f"{type(self).__name__} must prepare its arrays")

    def serving_model(self, model):
        """The model scoring serves (and the final evaluation judges): the trained one."""
        return model

    def champion_splits(self, data_spec: dict) -> dict | None:
        """The splits to judge the serving champion on, when they are not the new model's.

        Returns:
            ``{split: {"split", "files"}}``, or None: the champion is judged on the new model's
            rows (it codes its raw inputs itself).
        """
        return None


class SequenceTask(Task):
    """Purchase propensity + next categories from ``gold.sequence_examples``."""

    name = "sequence"
    table = "gold.sequence_examples"
    pyfunc_class_name = "SequencePyfunc"
    predictor_class_name = "SequencePredictor"

    def __init__(self, cfg: dict, data_spec: dict):
        self.cfg = cfg
        self.m = _section(cfg, "sequence_model")
        self.max_length = int(data_spec.get("max_length") or
                              _section(cfg, "sequences").get("max_length", 50))
        self.n_static = int(data_spec.get("n_static") or self.m.get("n_static", 5))
        self.vocab_sizes = {k: int(v) for k, v in data_spec["vocab_sizes"].items()}
        self.n_categories = self.vocab_sizes["category"]
        self.max_labels = int(self.m.get("max_label_categories", 16))
        self.head = self.m.get("category_head", "softmax")
        weights = self.m.get("loss_weights") or {}
        self.w_purchase = float(weights.get("purchase", 1.0))
        self.w_categories = float(weights.get("categories", 0.5))
        self.ks = tuple(int(k) for k in (_section(cfg, "training").get("ks") or (5, 10)))

    columns = ("item_ids", "category_ids", "event_type_ids", "price_buckets", "time_gaps",
               "static_features", "label_purchase", "label_categories")
    order_by = ("user_id", "cutoff_date")  # rows in key order (training.data.read_shard)

    @staticmethod
    def row_filter(table):
        import pyarrow.compute as pc

        return pc.is_valid(table["label_purchase"])

    def arrays(self, table) -> tuple[dict, dict]:
        from demandlake.training.data import fixed_width, padded_lists

        L = self.max_length
        # fit: rows written at another sequences.max_length are cut or padded to this one.
        x = {c: fixed_width(table[c], L, np.int32, fit=True)
             for c in ("item_ids", "category_ids", "event_type_ids", "price_buckets")}
        x["time_gaps"] = fixed_width(table["time_gaps"], L, np.float32, fit=True)
        x["static_features"] = fixed_width(table["static_features"], self.n_static, np.float32)
        y = {"purchase": table["label_purchase"].to_numpy(zero_copy_only=False)
             .astype(np.float32).reshape(-1, 1),
             "categories": padded_lists(table["label_categories"], self.max_labels)}
        return x, y

    def build_model(self):
        from demandlake.models.sequence import build_sequence_model

        m = self.m
        return build_sequence_model(
            self.vocab_sizes, self.max_length, self.n_static, self.n_categories,
            encoder=m.get("encoder", "lstm"), item_dim=int(m.get("item_dim", 32)),
            category_dim=int(m.get("category_dim", 16)), event_dim=int(m.get("event_dim", 4)),
            price_dim=int(m.get("price_dim", 4)), hidden=int(m.get("hidden", 64)),
            attention_heads=int(m.get("attention_heads", 2)),
            attention_layers=int(m.get("attention_layers", 1)),
            dropout=float(m.get("dropout", 0.1)), category_head=self.head,
            log_time_gaps=bool(m.get("log_time_gaps", False)))

    def losses(self, y: dict, out: dict) -> dict:
        """Weighted sum of the purchase BCE and the category loss (see models.sequence)."""
        import keras
        from keras import ops

        p = ops.clip(ops.cast(out["purchase"], "float32"), ev.EPS, 1 - ev.EPS)
        yp = ops.cast(y["purchase"], "float32")
        purchase = ops.mean(-(yp * ops.log(p) + (1 - yp) * ops.log(1 - p)))
        labels = ops.cast(y["categories"], "int32")
        valid = ops.cast(ops.logical_and(labels > 1, labels < self.n_categories), "float32")
        safe = ops.where(valid > 0, labels, ops.zeros_like(labels))
        q = ops.clip(ops.cast(out["categories"], "float32"), ev.EPS, 1 - ev.EPS)
        if self.head == "softmax":
            # Uniform target over the purchased categories; only examples with a purchase count.
            logq = ops.take_along_axis(ops.log(q), safe, axis=1)
            n_pos = ops.sum(valid, axis=1)
            ce = -ops.sum(logq * valid, axis=1) / ops.maximum(n_pos, 1.0)
            has = ops.cast(n_pos > 0, "float32")
            categories = ops.sum(ce * has) / ops.maximum(ops.sum(has), 1.0)
        else:
            multi = ops.minimum(ops.sum(ops.one_hot(safe, self.n_categories) *
                                        ops.expand_dims(valid, -1), axis=1), 1.0)
            categories = ops.mean(keras.losses.binary_crossentropy(multi, q))
        total = self.w_purchase * purchase + self.w_categories * categories
        return {"loss": total, "purchase_loss": purchase, "category_loss": categories}

    # -- per-epoch validation on arrays (fixed structure: summed with hvd.allreduce) --
    def val_sums(self, y: dict, out: dict) -> dict:
        top = np.argsort(-np.where(np.arange(out["categories"].shape[1]) < 2, -np.inf,
                                   out["categories"]), axis=1, kind="stable")[:, :max(self.ks)]
        labels = [[int(c) for c in row if c > 1] for row in y["categories"]]
        return {"purchase": ev.binary_counts(y["purchase"], out["purchase"], bins=200),
                "categories": ev.ranking_counts(labels, top, self.ks),
                "category_loss": self._category_loss_sums(y["categories"], out["categories"])}

    def _category_loss_sums(self, labels: np.ndarray, q: np.ndarray) -> dict:
        """The training category loss as sums (numpy twin of :meth:`losses`)."""
        labels = np.asarray(labels, np.int64)
        q = np.clip(np.asarray(q, np.float64), ev.EPS, 1 - ev.EPS)
        valid = (labels > 1) & (labels < self.n_categories)
        safe = np.where(valid, labels, 0)
        if self.head == "softmax":
            n_pos = valid.sum(axis=1)
            logq = np.take_along_axis(np.log(q), safe, axis=1) if len(q) else np.zeros_like(
                safe, np.float64)
            ce = -(logq * valid).sum(axis=1) / np.maximum(n_pos, 1)
            has = n_pos > 0
            return {"sum": float(ce[has].sum()), "n": float(has.sum())}
        multi = np.zeros_like(q)
        rows = np.repeat(np.arange(len(q)), labels.shape[1]).reshape(labels.shape)
        multi[rows[valid], safe[valid]] = 1.0
        bce = -(multi * np.log(q) + (1 - multi) * np.log(1 - q)).mean(axis=1)
        return {"sum": float(bce.sum()), "n": float(len(q))}

    def val_metrics(self, sums: dict) -> dict:
        b = ev.binary_metrics(sums["purchase"])
        r = ev.ranking_metrics(sums["categories"])
        c = sums["category_loss"]
        category_loss = c["sum"] / c["n"] if c["n"] else 0.0
        return {"val_loss": self.w_purchase * b["log_loss"] + self.w_categories * category_loss,
                "val_category_loss": category_loss,
                "val_purchase_roc_auc": b["roc_auc"], "val_purchase_pr_auc": b["pr_auc"],
                "val_purchase_log_loss": b["log_loss"],
                **{f"val_categories_{k}": v for k, v in r.items() if k != "n_with_purchase"}}

    # -- final evaluation through the pyfunc wrapper (any model version, same code) --
    def champion_splits(self, data_spec: dict) -> dict | None:
        """The rows the driver coded with the champion's own vocabulary (``champion_splits``),
        when its vocabulary table differs from this run's: the model takes ids, so it must be
        judged on ids as scoring codes them for it. None when it shares this run's."""
        return data_spec.get("champion_splits") or None

    def pyfunc_meta(self) -> dict:
        return {"task": self.name, "max_length": self.max_length, "n_static": self.n_static,
                "top_k": int(self.m.get("top_k_output", 20)), "vocab_sizes": self.vocab_sizes}

    def frame(self, table):
        cols = ["item_ids", "category_ids", "event_type_ids", "price_buckets", "time_gaps",
                "static_features"]
        return table.select(cols).to_pandas()

    def eval_sums(self, table, pred) -> dict:
        y = table["label_purchase"].to_numpy(zero_copy_only=False).astype(float)
        labels = table["label_categories"].to_pylist()
        return {"purchase": ev.binary_counts(y, pred["purchase_probability"].to_numpy()),
                "categories": ev.ranking_counts(labels, pred["top_category_ids"].tolist(),
                                                self.ks)}

    def eval_metrics(self, sums: dict) -> dict:
        b = ev.binary_metrics(sums["purchase"])
        r = ev.ranking_metrics(sums["categories"])
        out = {f"purchase_{k}": v for k, v in b.items()}
        out.update({f"categories_{k}": v for k, v in r.items()})
        return out

    def promotion(self) -> tuple[str, bool]:
        metric = self.m.get("promote_metric", "pr_auc")
        if metric not in ("pr_auc", "roc_auc", "log_loss"):
            raise ValueError(f"sequence_model.promote_metric must be pr_auc, roc_auc or "
                             f"log_loss, got {metric!r}")
        return f"purchase_{metric}", metric != "log_loss"


class SentimentTask(Task):
    """Binary review sentiment from ``gold.review_corpus`` (text -> positive probability)."""

    name = "sentiment"
    table = "gold.review_corpus"
    pyfunc_class_name = "SentimentPyfunc"
    predictor_class_name = "SentimentPredictor"
    columns = ("text", "label", "category", "language")
    order_by = ("review_id",)

    def __init__(self, cfg: dict, data_spec: dict):
        self.cfg = cfg
        self.m = _section(cfg, "sentiment_model")
        self.tokenizer = self.m.get("tokenizer", "char")
        self.max_length = int(self.m.get("max_length", 200))
        self.max_tokens = int(self.m.get("max_tokens", 20000))
        self.min_count = int(self.m.get("min_count", 2))
        self.ngrams = self.m.get("ngrams")
        self.vocabulary: list[str] | None = None
        self.vectorizer = None

    @staticmethod
    def row_filter(table):
        import pyarrow.compute as pc

        return pc.and_(pc.is_valid(table["label"]), pc.is_valid(table["text"]))

    def prepare(self, tables: dict, hvd) -> dict:
        """Fit the vocabulary on every rank's train shard together, then vectorize each split."""
        from demandlake.training import text as tx

        pre = {s: tx.presegment(t["text"].to_pylist(), self.tokenizer)
               for s, t in tables.items() if t is not None}
        counter_layer = tx.build_vectorizer(self.tokenizer, self.max_length, ngrams=self.ngrams)
        local = tx.count_tokens(pre.get("train", []), counter_layer)
        # Horovod: merge every rank's token counts so all ranks pick the same vocabulary.
        counts = ev.merge([dict(c) for c in hvd.allgather_object(dict(local))])
        import collections

        self.vocabulary = tx.select_vocabulary(collections.Counter(counts), self.max_tokens,
                                               self.min_count)
        self.vectorizer = tx.build_vectorizer(self.tokenizer, self.max_length, self.vocabulary,
                                              ngrams=self.ngrams)
        out = {}
        for s, texts in pre.items():
            ids = tx.vectorize(texts, self.vectorizer)
            y = tables[s]["label"].to_numpy(zero_copy_only=False).astype(np.float32)
            out[s] = ({"token_ids": ids}, {"positive": y.reshape(-1, 1)})
        return out

    def build_model(self):
        from demandlake.models.sentiment import build_sentiment_model

        m = self.m
        return build_sentiment_model(
            len(self.vocabulary) + 2, self.max_length,
            architecture=m.get("architecture", "textcnn"),
            embedding_dim=int(m.get("embedding_dim", 64)), filters=int(m.get("filters", 64)),
            kernel_sizes=tuple(m.get("kernel_sizes") or (2, 3, 4)),
            lstm_units=int(m.get("lstm_units", 48)), hidden=int(m.get("hidden", 64)),
            dropout=float(m.get("dropout", 0.3)))

    def losses(self, y: dict, out: dict) -> dict:
        from keras import ops

        p = ops.clip(ops.cast(out["positive"], "float32"), ev.EPS, 1 - ev.EPS)
        t = ops.cast(y["positive"], "float32")
        bce = ops.mean(-(t * ops.log(p) + (1 - t) * ops.log(1 - p)))
        return {"loss": bce}

    def val_sums(self, y: dict, out: dict) -> dict:
        return {"positive": ev.binary_counts(y["positive"], out["positive"], bins=200)}

    def val_metrics(self, sums: dict) -> dict:
        b = ev.binary_metrics(sums["positive"])
        return {"val_loss": b["log_loss"], "val_accuracy": b["accuracy"], "val_f1": b["f1"], "val_roc_auc": b["roc_auc"],
                "val_log_loss": b["log_loss"]}

    def serving_model(self, model):
        from demandlake.training.text import inference_model

        return inference_model(self.vectorizer, model)

    def pyfunc_meta(self) -> dict:
        band = self.m.get("neutral_band") or [0.5, 0.5]
        return {"task": self.name, "tokenizer": self.tokenizer,
                "neutral_band": [float(band[0]), float(band[1])],
                "vocab_size": len(self.vocabulary or []) + 2, "max_length": self.max_length}

    def frame(self, table):
        return table.select(["text"]).to_pandas()

    def eval_sums(self, table, pred) -> dict:
        y = table["label"].to_numpy(zero_copy_only=False).astype(float)
        p = pred["probability"].to_numpy()
        cats = np.asarray([c if c is not None else "(none)" for c in table["category"].to_pylist()],
                          dtype=object)
        by_cat = {str(c): ev.binary_counts(y[cats == c], p[cats == c]) for c in np.unique(cats)}
        langs = np.asarray([c or "(none)" for c in table["language"].to_pylist()], dtype=object)
        by_lang = {str(c): ev.binary_counts(y[langs == c], p[langs == c])
                   for c in np.unique(langs)}
        return {"overall": ev.binary_counts(y, p), "by_category": by_cat,
                "by_language": by_lang}

    def eval_metrics(self, sums: dict) -> dict:
        out = dict(ev.binary_metrics(sums["overall"]))
        band = self.m.get("neutral_band") or [0.5, 0.5]
        out.update(ev.neutral_band_metrics(sums["overall"], float(band[0]), float(band[1])))
        for group in ("by_category", "by_language"):
            for name, acc in sorted(sums.get(group, {}).items()):
                m = ev.binary_metrics(acc)
                for k in ("accuracy", "f1", "roc_auc", "n"):
                    out[f"{group[3:]}.{name}.{k}"] = m[k]
        return out

    def promotion(self) -> tuple[str, bool]:
        metric = self.m.get("promote_metric", "accuracy")
        if metric not in ("accuracy", "f1", "roc_auc"):
            raise ValueError(f"sentiment_model.promote_metric must be accuracy, f1 or roc_auc, "
                             f"got {metric!r}")
        return metric, True


TASKS = {"sequence": SequenceTask, "sentiment": SentimentTask}


def make_task(task: str, cfg: dict, data_spec: dict) -> Task:
    """The task object for ``sequence`` or ``sentiment``."""
    try:
        return TASKS[task](cfg, data_spec)
    except KeyError:
        raise ValueError(f"unknown task {task!r}; known: {sorted(TASKS)}") from None
