"""Every propensity family beside its baselines on the same rows, with intervals and calibration
(issue 21, item 2). Called by ``bench/train_sequence_taobao.py`` after each training run.

For one ``gold.sequence_examples`` snapshot (the run's ``table_version``):

* per-row predictions on the validation and test rows of: the run's network (its logged pyfunc),
  each Spark ML family (``training.families``, refitted on the same training rows with the same
  seed: the model the run judged), and the logistic-regression baseline on the static features;
* on the test rows, each model's ROC-AUC, PR-AUC (average precision), log loss and ECE with a 95%
  percentile bootstrap interval over USERS (``evaluate.bootstrap_interval``: a user's cutoffs
  are drawn together);
* calibration: Platt or isotonic fitted on the validation rows when it improves their log loss
  out of fold (``evaluate.choose_calibration``), then applied to the test rows; the reliability
  plot of each model before and after goes to ``--plots``;
* categories: the network's recall@10 against category popularity (top purchased categories of
  the training rows), per row, with the same interval.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger("bench.honest_eval")

SEQUENCE_COLUMNS = ["item_ids", "category_ids", "event_type_ids", "price_buckets", "time_gaps",
                    "static_features"]


def _rows(spark, cfg, version: int):
    from pyspark.sql import functions as F

    from demandlake.training.runner import table_location

    return (spark.read.format("delta").option("versionAsOf", version)
            .load(table_location(cfg, "gold.sequence_examples"))
            .where(F.col("label_purchase").isNotNull()))


def predictions(spark, cfg, result) -> dict[str, dict]:
    """``{split: {"user_id", "y", "labels" (categories), model name -> probabilities,
    "network_top" (category ids, best first)}}`` for validation and test."""
    import mlflow
    from pyspark.sql import functions as F

    from demandlake.training import evaluate as ev
    from demandlake.training import families

    rows = _rows(spark, cfg, result.table_version)
    train = rows.where(F.col("split") == "train")
    fitted = {f: families.fit(cfg, f, train) for f in families.enabled(cfg)}
    static = ev.fit_static_baseline(train)
    network = mlflow.pyfunc.load_model(result.network_uri)
    out = {}
    for split in ("validation", "test"):
        part = rows.where(F.col("split") == split).orderBy("user_id", "cutoff_date")
        pdf = part.select("user_id", "cutoff_date", "label_purchase", "label_categories",
                          *SEQUENCE_COLUMNS).toPandas()
        if pdf.empty:
            continue
        preds = {"user_id": pdf["user_id"].to_numpy(),
                 "y": pdf["label_purchase"].to_numpy(dtype=float),
                 "labels": list(pdf["label_categories"])}
        net = network.predict(pdf[SEQUENCE_COLUMNS])
        preds["sequence_network"] = net["purchase_probability"].to_numpy(dtype=float)
        preds["network_top"] = list(net["top_category_ids"])
        for family, model in fitted.items():
            got = (families.score(cfg, model, part, keep=("user_id", "cutoff_date"))
                   .orderBy("user_id", "cutoff_date").toPandas())
            preds[family] = got["purchase_probability"].to_numpy(dtype=float)
        got = (ev.score_static_baseline(static, part.select("user_id", "cutoff_date",
                                                            "static_features"))
               .orderBy("user_id", "cutoff_date").toPandas())
        preds["baseline_static_logistic"] = got["p"].to_numpy(dtype=float)
        out[split] = preds
    popular = ev.popular_categories(train, 10)
    for preds in out.values():
        preds["popularity_top"] = [popular] * len(preds["y"])
    return out


def _recall_at(labels, ranked, k: int = 10) -> np.ndarray:
    """Per row with a purchased category: recall@k as ``evaluate.ranking_counts`` counts it;
    NaN for a row without one."""
    from demandlake.training import evaluate as ev

    out = []
    for lab, top in zip(labels, ranked):
        acc = ev.ranking_counts([lab], [list(top)], ks=(k,))
        out.append(acc[f"recall@{k}_sum"] if acc["n"] else np.nan)
    return np.asarray(out)


def evaluate(preds: dict[str, dict], plots: Path | None = None, n_boot: int = 1000) -> dict:
    """The test figures with intervals, calibration chosen on validation, and category recall."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    from demandlake.training import evaluate as ev

    def ece(y, p):
        return ev.binary_metrics(ev.binary_counts(y, p))["ece"]

    def log_loss(y, p):
        return ev._log_loss(y, p)

    metrics = {"roc_auc": lambda y, p: roc_auc_score(y, p),
               "pr_auc": lambda y, p: average_precision_score(y, p),
               "log_loss": log_loss, "ece": ece}
    val, test = preds["validation"], preds["test"]
    models = [k for k in test if k not in ("user_id", "y", "labels", "network_top",
                                           "popularity_top")]
    report: dict = {"n_test": int(len(test["y"])), "n_test_users": int(len(set(test["user_id"]))),
                    "positive_rate_test": float(np.mean(test["y"])), "models": {}}
    for name in models:
        y, p = test["y"], test[name]
        row = {m: ev.bootstrap_interval(test["user_id"], {"y": y, "p": p}, f, n_boot=n_boot)
               for m, f in metrics.items()}
        choice = ev.choose_calibration(val["y"], val[name])
        row["calibration"] = choice
        if choice["method"] != "none":
            fixed = ev.fit_calibration(val["y"], val[name], choice["method"])(p)
            row["calibrated"] = {"log_loss": log_loss(y, fixed), "ece": ece(y, fixed)}
        if plots is not None:
            plots.mkdir(parents=True, exist_ok=True)
            ev.plot_calibration(ev.binary_counts(y, p), str(plots / f"calibration_{name}.png"),
                                f"{name} (test)")
        report["models"][name] = row
    for name, key in (("sequence_network", "network_top"), ("popularity", "popularity_top")):
        r = _recall_at(test["labels"], test[key])
        keep = ~np.isnan(r)
        report["models"].setdefault(name, {})["categories_recall@10"] = ev.bootstrap_interval(
            test["user_id"][keep], {"r": r[keep]}, lambda r: float(np.mean(r)), n_boot=n_boot)
    return report


def table(report: dict) -> str:
    """A markdown table of :func:`evaluate`'s report."""
    def cell(d):
        return f"{d['value']:.3f} [{d['low']:.3f}, {d['high']:.3f}]" if d else ""

    lines = ["| model (test) | ROC-AUC [95% CI] | PR-AUC | log loss | ECE | calibration (on "
             "validation) | calibrated log loss / ECE | category recall@10 |",
             "|---|---|---|---|---|---|---|---|"]
    for name, row in report["models"].items():
        cal = row.get("calibration", {})
        fixed = row.get("calibrated")
        lines.append("| " + " | ".join([
            name, cell(row.get("roc_auc")), cell(row.get("pr_auc")), cell(row.get("log_loss")),
            cell(row.get("ece")), cal.get("method", ""),
            f"{fixed['log_loss']:.3f} / {fixed['ece']:.3f}" if fixed else "",
            cell(row.get("categories_recall@10"))]) + " |")
    return "\n".join(lines)


def rolling_origin(spark, cfg, version: int, horizon_days: int, n_boot: int = 500) -> list[dict]:
    """Rolling-origin evaluation of the Spark ML families and the baselines over every usable
    cutoff of the snapshot, whatever split the pipeline gave it: for each cutoff c with at least
    one earlier cutoff whose label window ends by c (``cutoff + horizon <= c``), fit on all such
    earlier rows and score the rows of c. (The network is not refitted per origin here: each fit
    is a Horovod training run; its figures are the run's own test split.)

    Returns:
        One row per origin: cutoff, rows, positive rate, and per model ROC-AUC / PR-AUC with a
        bootstrap interval over users.
    """
    import datetime as dt

    from pyspark.sql import functions as F
    from sklearn.metrics import average_precision_score, roc_auc_score

    from demandlake.training import evaluate as ev
    from demandlake.training import families

    rows = _rows(spark, cfg, version)
    cutoffs = sorted(r[0] for r in rows.select("cutoff_date").distinct().collect())
    out = []
    for c in cutoffs:
        past = rows.where(F.col("cutoff_date") + F.expr(f"INTERVAL {int(horizon_days)} DAYS")
                          <= F.lit(c))
        if past.limit(1).count() == 0:
            continue
        if {r[0] for r in past.select("label_purchase").distinct().collect()} != {0, 1}:
            continue
        here = rows.where(F.col("cutoff_date") == F.lit(c))
        scored = {}
        for family in families.enabled(cfg):
            model = families.fit(cfg, family, past)
            scored[family] = (families.score(cfg, model, here, keep=("user_id", "label_purchase"))
                              .toPandas())
        scored["baseline_static_logistic"] = (ev.score_static_baseline(
            ev.fit_static_baseline(past), here.select("user_id", "label_purchase",
                                                      "static_features"))
            .select("user_id", "label_purchase", F.col("p").alias("purchase_probability"))
            .toPandas())
        row = {"cutoff": c.isoformat() if isinstance(c, dt.date) else str(c),
               "rows": int(len(next(iter(scored.values())))),
               "positive_rate": float(next(iter(scored.values()))["label_purchase"].mean())}
        for name, pdf in scored.items():
            y, p = pdf["label_purchase"].to_numpy(dtype=float), pdf["purchase_probability"].to_numpy()
            if len(set(y)) < 2:
                continue
            row[name] = {
                "roc_auc": ev.bootstrap_interval(pdf["user_id"], {"y": y, "p": p},
                                                 lambda y, p: roc_auc_score(y, p), n_boot=n_boot),
                "pr_auc": ev.bootstrap_interval(pdf["user_id"], {"y": y, "p": p},
                                                lambda y, p: average_precision_score(y, p),
                                                n_boot=n_boot)}
        out.append(row)
        log.info("rolling origin %s: %s", row["cutoff"], {
            k: round(v["roc_auc"]["value"], 3) for k, v in row.items() if isinstance(v, dict)})
    return out


def rolling_table(rows: list[dict]) -> str:
    """A markdown table of :func:`rolling_origin` (ROC-AUC [95% CI] per model and origin)."""
    models = sorted({k for r in rows for k, v in r.items() if isinstance(v, dict)})
    lines = ["| origin (cutoff) | rows | positive rate | " + " | ".join(
        f"{m} ROC-AUC" for m in models) + " |", "|---" * (3 + len(models)) + "|"]
    for r in rows:
        cells = []
        for m in models:
            d = r.get(m, {}).get("roc_auc")
            cells.append(f"{d['value']:.3f} [{d['low']:.3f}, {d['high']:.3f}]" if d else "")
        lines.append(f"| {r['cutoff']} | {r['rows']} | {r['positive_rate']:.3f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)
