"""Model evaluation: mergeable accumulators, metrics, Spark baselines and plots.

Everything a metric needs is first reduced to *sums* (an accumulator: a dict of numpy arrays and
numbers) that can be added across ranks, Spark partitions or batches; metrics are computed from
the merged sums. So the ranks of a Horovod job evaluate their own shards and only a few kilobytes
travel, and the same functions score the model, the serving champion and the Spark baselines.

Binary predictions are binned into ``BINS`` equal-width probability bins (positives, negatives and
the sum of probabilities per bin): ROC-AUC and PR-AUC (average precision) computed from the bins
differ from the exact values by far less than their sampling error (tests compare with
scikit-learn to 1e-3); log loss is summed exactly.

Ranking metrics for the categories head, over examples with at least one purchased category:
recall@k = |top-k ∩ purchased| / |purchased|, averaged; MRR = mean of 1 / rank of the first
purchased category in the model's top ``len(ranked)`` (0 when none is there).
"""
from __future__ import annotations

import logging
import math
from typing import Iterable, Mapping, Sequence

import numpy as np

log = logging.getLogger(__name__)

BINS = 2000
EPS = 1e-7


# ---- accumulators -------------------------------------------------------------------------------
def binary_counts(y_true: Sequence[float], y_prob: Sequence[float], bins: int = BINS) -> dict:
    """Sums for binary metrics of one batch/shard.

    Args:
        y_true: 0/1 labels.
        y_prob: predicted probabilities of 1.
        bins: number of equal-width probability bins.

    Returns:
        ``{"pos", "neg", "psum"}`` arrays of length ``bins`` and ``log_loss_sum``, ``n``.
    """
    y = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.clip(np.asarray(y_prob, dtype=np.float64).reshape(-1), 0.0, 1.0)
    if y.shape != p.shape:
        raise ValueError(f"y_true and y_prob differ in length: {y.shape} vs {p.shape}")
    if y.size and not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("y_true must hold only 0 and 1")
    if np.isnan(p).any():
        raise ValueError("y_prob holds NaN")
    idx = np.minimum((p * bins).astype(np.int64), bins - 1)
    pc = np.clip(p, EPS, 1 - EPS)
    return {
        "pos": np.bincount(idx, weights=y, minlength=bins),
        "neg": np.bincount(idx, weights=1 - y, minlength=bins),
        "psum": np.bincount(idx, weights=p, minlength=bins),
        "log_loss_sum": float(-(y * np.log(pc) + (1 - y) * np.log(1 - pc)).sum()),
        "n": float(y.size),
    }


def ranking_counts(labels: Iterable[Sequence[int] | None], ranked: Iterable[Sequence[int]],
                   ks: Sequence[int] = (5, 10), ignore: Sequence[int] = (0, 1)) -> dict:
    """Sums for recall@k and MRR.

    Args:
        labels: purchased category ids per example (None/empty: no purchase, not counted).
        ranked: the model's categories per example, best first.
        ks: cut-offs.
        ignore: ids that are never targets (padding 0, OOV 1).

    Returns:
        ``{"recall@k_sum" ..., "rr_sum", "n"}``.
    """
    ks = tuple(int(k) for k in ks)
    out = {f"recall@{k}_sum": 0.0 for k in ks}
    out.update(rr_sum=0.0, n=0.0)
    bad = set(int(i) for i in ignore)
    for lab, rank in zip(labels, ranked):
        if lab is None:
            continue
        pos = {int(c) for c in lab} - bad
        if not pos:
            continue
        rank = [int(c) for c in rank]
        out["n"] += 1
        for k in ks:
            out[f"recall@{k}_sum"] += len(pos.intersection(rank[:k])) / len(pos)
        first = next((i for i, c in enumerate(rank) if c in pos), None)
        out["rr_sum"] += 0.0 if first is None else 1.0 / (first + 1)
    return out


def merge(accs: Iterable[Mapping]) -> dict:
    """Add accumulators key by key (nested dicts merge; a key missing in one counts as zero)."""
    out: dict = {}
    for acc in accs:
        for key, value in acc.items():
            if isinstance(value, Mapping):
                out[key] = merge([out.get(key, {}), value])
            elif key in out:
                out[key] = out[key] + np.asarray(value) if isinstance(value, np.ndarray) \
                    else out[key] + value
            else:
                out[key] = np.array(value, copy=True) if isinstance(value, np.ndarray) else value
    return out


# ---- metrics ----------------------------------------------------------------------------------
def binary_curves(acc: Mapping) -> dict:
    """ROC and precision-recall points from binned counts (thresholds from high to low)."""
    pos = np.asarray(acc["pos"], dtype=np.float64)[::-1]
    neg = np.asarray(acc["neg"], dtype=np.float64)[::-1]
    tp, fp = np.cumsum(pos), np.cumsum(neg)
    p_total, n_total = tp[-1] if tp.size else 0.0, fp[-1] if fp.size else 0.0
    tpr = np.concatenate([[0.0], tp / p_total]) if p_total else np.zeros(tp.size + 1)
    fpr = np.concatenate([[0.0], fp / n_total]) if n_total else np.zeros(fp.size + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 1.0)
    return {"fpr": fpr, "tpr": tpr, "recall": tpr[1:], "precision": precision}


def binary_metrics(acc: Mapping, threshold: float = 0.5, calibration_bins: int = 10) -> dict:
    """ROC-AUC, PR-AUC (average precision), log loss, ECE, accuracy, precision, recall, F1.

    Args:
        acc: merged :func:`binary_counts`.
        threshold: decision threshold for accuracy/F1 (rounded to the bin grid).
        calibration_bins: equal-width bins for the expected calibration error.

    Returns:
        Metric name -> value (NaN where undefined, e.g. AUC with one class only).
    """
    pos, neg, psum = (np.asarray(acc[k], dtype=np.float64) for k in ("pos", "neg", "psum"))
    n = float(acc["n"])
    n_pos, n_neg = pos.sum(), neg.sum()
    curves = binary_curves(acc)
    nan = float("nan")
    if n_pos and n_neg:
        roc_auc = float(np.trapezoid(curves["tpr"], curves["fpr"]))
        recall_steps = np.diff(np.concatenate([[0.0], curves["recall"]]))
        pr_auc = float((recall_steps * curves["precision"]).sum())
    else:
        roc_auc = pr_auc = nan
    bins = pos.size
    cut = int(round(threshold * bins))
    tp, fp = pos[cut:].sum(), neg[cut:].sum()
    fn, tn = pos[:cut].sum(), neg[:cut].sum()
    precision = tp / (tp + fp) if tp + fp else nan
    recall = tp / (tp + fn) if tp + fn else nan
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else nan
    # ECE: fine bins grouped into equal-width calibration bins.
    group = np.arange(bins) * calibration_bins // bins
    cnt = np.bincount(group, weights=pos + neg, minlength=calibration_bins)
    conf = np.bincount(group, weights=psum, minlength=calibration_bins)
    obs = np.bincount(group, weights=pos, minlength=calibration_bins)
    ece = float(np.abs(conf - obs).sum() / n) if n else nan
    return {
        "roc_auc": roc_auc, "pr_auc": pr_auc,
        "log_loss": float(acc["log_loss_sum"]) / n if n else nan,
        "ece": ece,
        "accuracy": (tp + tn) / n if n else nan,
        "precision": float(precision), "recall": float(recall), "f1": float(f1),
        "positive_rate": n_pos / n if n else nan, "n": n,
    }


def calibration_table(acc: Mapping, calibration_bins: int = 10) -> dict:
    """Per calibration bin: mean predicted probability, observed positive rate, count."""
    pos, neg, psum = (np.asarray(acc[k], dtype=np.float64) for k in ("pos", "neg", "psum"))
    group = np.arange(pos.size) * calibration_bins // pos.size
    cnt = np.bincount(group, weights=pos + neg, minlength=calibration_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(group, weights=psum, minlength=calibration_bins) / cnt
        observed = np.bincount(group, weights=pos, minlength=calibration_bins) / cnt
    return {"mean_predicted": mean_p, "observed": observed, "count": cnt}


def neutral_band_metrics(acc: Mapping, low: float, high: float) -> dict:
    """Predictions with ``low <= p < high`` are "neutral": coverage and accuracy of the rest."""
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"neutral band must satisfy 0 <= low <= high <= 1, got [{low}, {high}]")
    pos, neg = np.asarray(acc["pos"], float), np.asarray(acc["neg"], float)
    bins = pos.size
    lo, hi = int(round(low * bins)), int(round(high * bins))
    confident = pos[:lo].sum() + neg[:lo].sum() + pos[hi:].sum() + neg[hi:].sum()
    correct = neg[:lo].sum() + pos[hi:].sum()
    n = float(acc["n"])
    return {"coverage": confident / n if n else float("nan"),
            "confident_accuracy": correct / confident if confident else float("nan"),
            "neutral_rate": 1 - confident / n if n else float("nan")}


def ranking_metrics(acc: Mapping) -> dict:
    """recall@k and MRR from merged :func:`ranking_counts`."""
    n = float(acc.get("n", 0.0))
    out = {k[:-4]: (float(v) / n if n else float("nan"))
           for k, v in acc.items() if k.startswith("recall@")}
    out["mrr"] = float(acc["rr_sum"]) / n if n else float("nan")
    out["n_with_purchase"] = n
    return out


# ---- intervals and calibration (per-row predictions, small enough for the driver) ------------
def bootstrap_interval(groups: Sequence, values: Mapping[str, np.ndarray], metric,
                       n_boot: int = 1000, seed: int = 7, level: float = 0.95) -> dict:
    """Point estimate and percentile bootstrap interval of ``metric`` over GROUPS (users), so a
    user's rows (several cutoffs) are drawn together.

    Args:
        groups: one group key per row (e.g. the user id).
        values: aligned per-row arrays (e.g. ``{"y": labels, "p": probabilities}``).
        metric: ``f(**values) -> float`` on a subset of the rows.
        n_boot: resamples; ``level``: the interval's coverage.

    Returns:
        ``{"value", "low", "high", "n_groups", "n_boot"}`` (resamples whose metric is undefined,
        e.g. one class only, are left out of the interval).
    """
    keys, inverse = np.unique(np.asarray(groups), return_inverse=True)
    rows_of = [np.flatnonzero(inverse == g) for g in range(len(keys))]
    arrays = {k: np.asarray(v) for k, v in values.items()}
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(int(n_boot)):
        idx = np.concatenate([rows_of[g] for g in rng.integers(0, len(keys), len(keys))])
        try:
            v = float(metric(**{k: a[idx] for k, a in arrays.items()}))
        except ValueError:  # e.g. an AUC of one class
            continue
        if math.isfinite(v):
            stats.append(v)
    tail = (1 - level) / 2 * 100
    low, high = (np.percentile(stats, [tail, 100 - tail]) if stats else (math.nan, math.nan))
    return {"value": float(metric(**arrays)), "low": float(low), "high": float(high),
            "n_groups": int(len(keys)), "n_boot": len(stats)}


def fit_calibration(y: np.ndarray, p: np.ndarray, method: str):
    """A calibration map fitted on (``y``, ``p``): ``platt`` (logistic regression on the
    logit: ``sigmoid(a * logit(p) + b)``, with ``a`` and ``b`` as attributes of the returned
    function) or ``isotonic``. Returns ``f(p) -> calibrated p``."""
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    y, p = np.asarray(y, dtype=float), np.clip(np.asarray(p, dtype=float), EPS, 1 - EPS)
    if method == "platt":
        lr = LogisticRegression(C=1e6).fit(np.log(p / (1 - p)).reshape(-1, 1), y)
        platt = lambda q: lr.predict_proba(  # noqa: E731
            np.log(np.clip(q, EPS, 1 - EPS) / (1 - np.clip(q, EPS, 1 - EPS))).reshape(-1, 1))[:, 1]
        platt.a, platt.b = float(lr.coef_[0][0]), float(lr.intercept_[0])
        return platt
    if method == "isotonic":
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)
        return lambda q: iso.predict(np.asarray(q, dtype=float))
    raise ValueError(f"calibration method must be platt or isotonic, got {method!r}")


def choose_calibration(y: np.ndarray, p: np.ndarray, folds: int = 5, seed: int = 7,
                       min_gain: float = 0.002,
                       methods: Sequence[str] = ("platt", "isotonic")) -> dict:
    """Whether Platt or isotonic calibration fitted on validation improves its log loss, judged
    out of fold (fitted on 4/5 of the rows, scored on the fifth), so that isotonic's in-sample
    fit does not win by construction.

    Returns:
        ``{"method": "none" | "platt" | "isotonic", "log_loss": {method: out-of-fold log loss}}``;
        the method is the lowest, "none" unless a calibration beats the raw probabilities by
        more than ``min_gain`` (Platt's two parameters fit noise by about 1e-4 on calibrated
        probabilities).
    """
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    order = np.random.default_rng(seed).permutation(len(y))
    fold = np.empty(len(y), dtype=int)
    fold[order] = np.arange(len(y)) % folds
    losses = {"none": _log_loss(y, p)}
    for method in methods:
        out = np.empty(len(y))
        for f in range(folds):
            train, test = fold != f, fold == f
            out[test] = fit_calibration(y[train], p[train], method)(p[test])
        losses[method] = _log_loss(y, out)
    best = min(methods, key=losses.get)
    return {"method": best if losses[best] < losses["none"] - min_gain else "none",
            "log_loss": losses}


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(np.asarray(p, dtype=float), EPS, 1 - EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


# ---- Spark baselines ---------------------------------------------------------------------------
def spark_binary_counts(df, label_col: str, prob_col: str, bins: int = BINS) -> dict:
    """:func:`binary_counts` computed by Spark (one aggregation; ``bins`` rows reach the driver)."""
    from pyspark.sql import functions as F

    p = F.least(F.greatest(F.col(prob_col).cast("double"), F.lit(0.0)), F.lit(1.0))
    pc = F.least(F.greatest(p, F.lit(EPS)), F.lit(1 - EPS))
    y = F.col(label_col).cast("double")
    rows = (
        df.where(F.col(label_col).isNotNull())
        .select(F.least(F.floor(p * bins), F.lit(bins - 1)).cast("int").alias("b"),
                y.alias("y"), p.alias("p"),
                (-(y * F.log(pc) + (1 - y) * F.log(1 - pc))).alias("ll"))
        .groupBy("b")
        .agg(F.sum("y").alias("pos"), F.sum(1 - F.col("y")).alias("neg"),
             F.sum("p").alias("psum"), F.sum("ll").alias("ll"), F.count("*").alias("n"))
        .collect()
    )
    acc = {"pos": np.zeros(bins), "neg": np.zeros(bins), "psum": np.zeros(bins),
           "log_loss_sum": 0.0, "n": 0.0}
    for r in rows:
        acc["pos"][r["b"]] += r["pos"]
        acc["neg"][r["b"]] += r["neg"]
        acc["psum"][r["b"]] += r["psum"]
        acc["log_loss_sum"] += r["ll"]
        acc["n"] += r["n"]
    return acc


def _static_rows(df, features_col: str, label_col: str | None):
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F

    feats = F.col(features_col)
    if dict(df.dtypes)[features_col].startswith("array"):
        feats = array_to_vector(F.col(features_col).cast("array<double>"))
    if label_col is None:
        return df.select("*", feats.alias("_features"))
    return df.where(F.col(label_col).isNotNull()).select(
        feats.alias("_features"), F.col(label_col).cast("double").alias("label"))


def fit_static_baseline(train_df, kind: str = "logistic", features_col: str = "static_features",
                        label_col: str = "label_purchase", seed: int = 7):
    """The Spark ML baseline on the static features (``logistic``: LogisticRegression, ``gbt``:
    GBTClassifier), fitted on the labelled rows of ``train_df``."""
    from pyspark.ml.classification import GBTClassifier, LogisticRegression

    if kind not in ("logistic", "gbt"):
        raise ValueError(f"baseline kind must be logistic or gbt, got {kind!r}")
    est = (LogisticRegression(featuresCol="_features", maxIter=50, regParam=0.01)
           if kind == "logistic" else
           GBTClassifier(featuresCol="_features", maxIter=30, maxDepth=4, seed=seed))
    return est.fit(_static_rows(train_df, features_col, label_col))


def score_static_baseline(model, df, features_col: str = "static_features"):
    """``df`` plus ``p``, the baseline's probability of the positive class."""
    from pyspark.ml.functions import vector_to_array

    rows = _static_rows(df, features_col, None)
    return model.transform(rows).select(*df.columns, vector_to_array("probability")[1].alias("p"))


def static_features_baseline(train_df, eval_df, kind: str = "logistic",
                             features_col: str = "static_features",
                             label_col: str = "label_purchase", seed: int = 7) -> dict:
    """Spark ML baseline on the static features, scored on ``eval_df``.

    Args:
        train_df, eval_df: DataFrames with an ``array<float>`` (or vector) features column and a
            0/1 label (e.g. ``gold.sequence_examples`` train and test splits, or a features table).
        kind: ``logistic`` (LogisticRegression) or ``gbt`` (GBTClassifier).

    Returns:
        :func:`binary_metrics` of the baseline's probabilities.
    """
    from pyspark.sql import functions as F

    model = fit_static_baseline(train_df, kind, features_col, label_col, seed)
    scored = score_static_baseline(model, eval_df.where(F.col(label_col).isNotNull()),
                                   features_col)
    return binary_metrics(spark_binary_counts(scored, label_col, "p"))


def popular_categories(train_df, top_n: int = 20, label_col: str = "label_categories") -> list:
    """Category ids by how many training rows purchased in them (most first, ties by id)."""
    from pyspark.sql import functions as F

    return [r["c"] for r in (
        train_df.where(F.col(label_col).isNotNull())
        .select(F.explode(F.array_distinct(label_col)).alias("c"))
        .where(F.col("c") > 1)
        .groupBy("c").count()
        .orderBy(F.desc("count"), F.asc("c")).limit(top_n).collect())]


def popularity_baseline(train_df, eval_df, ks: Sequence[int] = (5, 10), top_n: int = 20,
                        label_col: str = "label_categories") -> dict:
    """Rank categories by how often they were purchased in ``train_df``; same for every user.

    Computed in Spark: only the ``top_n`` ranking reaches the driver.

    Returns:
        :func:`ranking_metrics` on ``eval_df`` (truncated to ``top_n`` like the model's output).
    """
    from pyspark.sql import functions as F

    top = popular_categories(train_df, top_n, label_col)
    ranked = F.array(*[F.lit(int(c)) for c in top]) if top else F.array().cast("array<int>")
    pos = F.array_except(F.array_distinct(F.col(label_col)), F.array(F.lit(0), F.lit(1)))
    n_pos = F.size(pos)
    hits = {k: F.size(F.array_intersect(F.slice(ranked, 1, k), pos)) for k in ks} if top else \
        {k: F.lit(0) for k in ks}
    # 1-based position of the first purchased category in the ranking (0 = absent).
    first = F.expr("0") if not top else F.array_min(F.filter(
        F.transform(pos, lambda c: F.array_position(ranked, c)), lambda i: i > 0))
    rr = F.when(first.isNull() | (first == 0), F.lit(0.0)).otherwise(1.0 / first)
    agg = (
        eval_df.where(F.col(label_col).isNotNull())
        .select(*[(hits[k] / n_pos).alias(f"r{k}") for k in ks], rr.alias("rr"),
                n_pos.alias("n_pos"))
        .where(F.col("n_pos") > 0)
        .agg(*[F.sum(f"r{k}").alias(f"r{k}") for k in ks], F.sum("rr").alias("rr"),
             F.count("*").alias("n"))
        .first()
    )
    acc = {f"recall@{k}_sum": float(agg[f"r{k}"] or 0.0) for k in ks}
    acc.update(rr_sum=float(agg["rr"] or 0.0), n=float(agg["n"]))
    return ranking_metrics(acc)


# ---- plots ------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_roc_pr(acc: Mapping, path: str, title: str = "") -> str:
    """ROC and precision-recall curves side by side, saved as PNG."""
    plt = _plt()
    m, c = binary_metrics(acc), binary_curves(acc)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4.5))
    a.plot(c["fpr"], c["tpr"], label=f"ROC-AUC {m['roc_auc']:.3f}")
    a.plot([0, 1], [0, 1], "k--", lw=0.8)
    a.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    a.legend(loc="lower right")
    b.plot(c["recall"], c["precision"], label=f"PR-AUC {m['pr_auc']:.3f}")
    b.axhline(m["positive_rate"], color="k", ls="--", lw=0.8, label="base rate")
    b.set(xlabel="recall", ylabel="precision", title="Precision-recall", ylim=(0, 1.02))
    b.legend(loc="upper right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_calibration(acc: Mapping, path: str, title: str = "", bins: int = 10) -> str:
    """Reliability diagram (mean predicted vs observed rate per bin), saved as PNG."""
    plt = _plt()
    t = calibration_table(acc, bins)
    ok = t["count"] > 0
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.plot(t["mean_predicted"][ok], t["observed"][ok], "o-",
            label=f"ECE {binary_metrics(acc, calibration_bins=bins)['ece']:.3f}")
    ax.set(xlabel="mean predicted probability", ylabel="observed rate", title=title or
           "Calibration", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_topk(series: Mapping[str, Mapping[str, float]], path: str, title: str = "") -> str:
    """recall@k bars per model (e.g. model vs popularity baseline), saved as PNG."""
    plt = _plt()
    names = list(series)
    keys = sorted({k for s in series.values() for k in s if k.startswith("recall@")},
                  key=lambda k: int(k.split("@")[1]))
    fig, ax = plt.subplots(figsize=(6, 4))
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        ax.bar([j + i * width for j in range(len(keys))],
               [series[name].get(k, math.nan) for k in keys], width, label=name)
    ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(keys))], keys)
    ax.set(ylabel="recall", ylim=(0, 1), title=title or "Category recall@k")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_per_group(values: Mapping[str, float], path: str, metric: str = "accuracy",
                   title: str = "") -> str:
    """One bar per group (e.g. accuracy per product category), saved as PNG."""
    plt = _plt()
    names = sorted(values)
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(names)), 4))
    ax.bar(range(len(names)), [values[n] for n in names])
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set(ylabel=metric, ylim=(0, 1), title=title or f"{metric} per group")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
