"""Driver side of a training run: snapshot, launch the ranks, baselines, register, promote.

The entry points the pipeline calls::

    result = train_sequence_model(spark, cfg)    # gold.sequence_examples -> demandlake-sequence
    result = train_sentiment_model(spark, cfg)   # gold.review_corpus     -> demandlake-sentiment

The driver never collects training data: it pins the Delta version, passes the Parquet file list
of each split to the ranks and only receives metrics back.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from demandlake.config import Config, local_path

log = logging.getLogger(__name__)

SECTIONS = {"sequence": ("training", "sequence_model", "sequences"),
            "sentiment": ("training", "sentiment_model")}


@dataclass
class TrainingResult:
    """What a training run produced."""

    task: str
    run_id: str
    model_uri: str | None
    version: int | None
    promoted: bool
    table_version: int
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)
    out_dir: str = ""
    seconds: float = 0.0


def table_location(cfg: Config, name: str) -> str:
    """Location of a lake table: the registry's when registered, else the same convention."""
    from demandlake import lake

    if name in lake.TABLES:
        return lake.spec(name).location(cfg)
    layer, short = name.split(".")
    return f"{cfg.lake_uri.rstrip('/')}/{layer}/{short}"


def _delta_version(spark, location: str) -> int:
    from delta.tables import DeltaTable

    return int(DeltaTable.forPath(spark, location).history(1).first()["version"])


def vocab_sizes(spark, cfg: Config) -> tuple[dict[str, int], int]:
    """Vocabulary sizes (max id + 1) from ``gold.vocabularies`` and that table's version."""
    from pyspark.sql import functions as F

    loc = table_location(cfg, "gold.vocabularies")
    version = _delta_version(spark, loc)
    rows = (spark.read.format("delta").option("versionAsOf", version).load(loc)
            .groupBy("vocab").agg(F.max("id").alias("max_id")).collect())
    sizes = {r["vocab"]: int(r["max_id"]) + 1 for r in rows}
    missing = {"item", "category", "event_type"} - set(sizes)
    if missing:
        raise ValueError(f"gold.vocabularies lacks vocabularies {sorted(missing)}")
    sizes = {k: max(v, 2) for k, v in sizes.items()}
    sizes["price_bucket"] = len(cfg.get("sequences.price_buckets") or []) + 3
    return sizes, version


def vocabulary_frame(spark, cfg: Config, version: int):
    """gold.vocabularies as of ``version``, as pandas (the model's lookup table: one row per
    item/category/event type it can tell apart, so it is as large as its embeddings)."""
    return (spark.read.format("delta").option("versionAsOf", version)
            .load(table_location(cfg, "gold.vocabularies")).orderBy("vocab", "id").toPandas())


def work_dir(cfg: Config) -> Path:
    """Folder for checkpoints and results (must be shared by all ranks' hosts)."""
    configured = cfg.get("training.work_dir") or ""
    if configured:
        return Path(configured)
    lake_local = local_path(cfg.lake_uri)
    if lake_local is None:
        raise ValueError("training.work_dir must be set when the lake is not on a local disk")
    return lake_local / "_training"


def train_sequence_model(spark, cfg: Config) -> TrainingResult:
    """Train, evaluate, log, register (and maybe promote) the sequence model."""
    return train_model(spark, cfg, "sequence")


def train_sentiment_model(spark, cfg: Config) -> TrainingResult:
    """Train, evaluate, log, register (and maybe promote) the review sentiment model."""
    return train_model(spark, cfg, "sentiment")


def train_model(spark, cfg: Config, task: str) -> TrainingResult:
    """One training run of ``task`` (``sequence`` or ``sentiment``) end to end.

    Args:
        spark: the session (classic Spark for the ``spark`` launcher).
        cfg: resolved configuration.
        task: which model.

    Returns:
        The run, its metrics and the registry outcome.
    """
    from demandlake import lake
    from demandlake.training import evaluate as ev
    from demandlake.training import tracking
    from demandlake.training.data import snapshot_spec
    from demandlake.training.launch import launch
    from demandlake.training.tasks import TASKS

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {sorted(TASKS)}")
    t0 = time.monotonic()
    table = TASKS[task].table
    location = table_location(cfg, table)
    version = _delta_version(spark, location)
    snap = snapshot_spec(spark, location, ["train", "validation", "test"], version)
    facts: dict[str, Any] = {}
    data_params = {"data.table": table, "data.version": str(version),
                   **{f"data.files.{s}": str(len(v["files"])) for s, v in snap["splits"].items()}}
    if task == "sequence":
        sizes, vocab_version = vocab_sizes(spark, cfg)
        facts = {"vocab_sizes": sizes, "max_length": int(cfg.get("sequences.max_length", 50)),
                 "n_static": int(cfg.get("sequence_model.n_static", 5))}
        data_params.update({"data.vocabularies_version": str(vocab_version),
                            "data.vocabularies_table_id": lake.table_id(spark, cfg,
                                                                         "gold.vocabularies"),
                            **{f"vocab_size.{k}": str(v) for k, v in sizes.items()}})

    sections = {s: cfg.get(s) or {} for s in SECTIONS[task]}
    tcfg = dict(sections["training"])
    key = tracking.run_key(task, version, {**sections, **facts})
    out_dir = work_dir(cfg) / task / key
    experiment_id = tracking.configure(cfg)
    model_section = f"{task}_model"
    name = cfg.get(f"{model_section}.registered_name") or tracking.REGISTERED_NAMES[task]
    alias = tcfg.get("promote_alias", "serving")
    params = {**tracking.flatten("", sections), **data_params}
    run_id, resumed = tracking.start_run(
        experiment_id, key, f"{task}-v{version}", params,
        {"task": task, "table_version": version, "launcher": tcfg.get("launcher", "local")},
        resume=bool(tcfg.get("resume", True)))
    if not resumed:
        shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    if task == "sequence":
        # The model carries the id mapping it learns with (the same table version as vocab_sizes).
        tracking.log_vocabulary(run_id, vocabulary_frame(spark, cfg, vocab_version), out_dir)

    champion = tracking.serving_version(name, alias) if tcfg.get("compare_with_serving", True) \
        else None
    data_spec = {"splits": snap["splits"], "table_version": version, **facts,
                 "mlflow": {"tracking_uri": tracking.tracking_uri(cfg), "run_id": run_id},
                 "champion_uri": f"models:/{name}/{champion}" if champion else None}
    ok = False
    try:
        result = launch(task, cfg.data, data_spec, str(out_dir), spark=spark)
        metrics = result.get("metrics", {})
        baselines = {}
        if task == "sequence" and tcfg.get("baselines", True):
            baselines = _sequence_baselines(spark, snap, tcfg, metrics, run_id, out_dir, ev)
        t_task = TASKS[task](cfg.data, data_spec)
        metric, higher = t_task.promotion()
        promotion = None
        if result.get("model_uri") and "validation" in metrics:
            promotion = tracking.register_and_promote(
                result["model_uri"], name, run_id, metrics["validation"],
                metrics.get("champion_validation"), metric, higher, alias,
                float(tcfg.get("promote_min_delta", 0.0)),
                tags={"table_version": str(version)})
            tracking.log_metrics(run_id, {"registered_version": promotion.version,
                                          "promoted": float(promotion.promoted)})
        ok = True
    finally:
        tracking.finish_run(run_id, ok)
    return TrainingResult(
        task=task, run_id=run_id, model_uri=result.get("model_uri"),
        version=promotion.version if promotion else None,
        promoted=bool(promotion and promotion.promoted), table_version=version,
        metrics=metrics, baselines=baselines, out_dir=str(out_dir),
        seconds=time.monotonic() - t0)


def _sequence_baselines(spark, snap, tcfg, metrics, run_id, out_dir, ev) -> dict:
    """Static-features Spark ML model and category popularity on the evaluation split."""
    from pyspark.sql import functions as F

    from demandlake.training import tracking

    split = "test" if snap["splits"].get("test", {}).get("files") else "validation"
    df = (spark.read.format("delta").option("versionAsOf", snap["version"])
          .load(snap["location"]).where(F.col("label_purchase").isNotNull()))
    train_df, eval_df = df.where(F.col("split") == "train"), df.where(F.col("split") == split)
    kind = tcfg.get("baseline", "logistic")
    out = {f"static_{kind}": ev.static_features_baseline(train_df, eval_df, kind=kind),
           "popularity": ev.popularity_baseline(
               train_df, eval_df, tuple(tcfg.get("ks") or (5, 10)))}
    for name, m in out.items():
        tracking.log_metrics(run_id, m, prefix=f"baseline_{name}_{split}_")
    model = metrics.get(split, {})
    series = {"model": {k[len("categories_"):]: v for k, v in model.items()
                        if k.startswith("categories_recall@")},
              "popularity": out["popularity"]}
    plot = ev.plot_topk(series, str(Path(out_dir) / "recall_at_k_vs_popularity.png"),
                        f"category recall@k vs popularity ({split})")
    from mlflow.tracking import MlflowClient

    MlflowClient().log_artifact(run_id, plot, "plots")
    (Path(out_dir) / "baselines.json").write_text(json.dumps(out, indent=1, default=float))
    return out
