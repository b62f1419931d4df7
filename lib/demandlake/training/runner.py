"""Driver side of a training run: snapshot, launch the ranks, baselines, register, promote.

The entry points the pipeline calls::

    result = train_sequence_model(spark, cfg)    # gold.sequence_examples -> demandlake-sequence
    result = train_sentiment_model(spark, cfg)   # gold.review_corpus     -> demandlake-sentiment

The driver never collects training data: it pins the Delta version, passes the Parquet file list
of each split to the ranks and only receives metrics back.

The serving champion is judged on the same validation rows as the new model, coded the way
scoring feeds it: gold.vocabularies is rebuilt with every set of sequence examples, so when the
champion was trained on another version of it the driver rebuilds those rows (same users and
cutoff dates) with the champion's own vocabulary (:func:`champion_validation_splits`).
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from demandlake.config import Config, local_path

if TYPE_CHECKING:
    from demandlake.scoring.serving import ServingModel

log = logging.getLogger(__name__)

SECTIONS = {"sequence": ("training", "sequence_model", "sequences", "propensity"),
            "sentiment": ("training", "sentiment_model")}
# Under the run's out_dir: the validation rows coded with the serving champion's vocabulary.
CHAMPION_VALIDATION_DIR = "champion_validation"


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
    family: str = "sequence_network"
    network_uri: str | None = None  # the network's logged model, registered or not


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
    from mlflow.tracking import MlflowClient

    from demandlake import lake
    from demandlake.training import evaluate as ev
    from demandlake.training import families as fam
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
        facts = {"vocab_sizes": sizes, "max_length": int(cfg["sequences.max_length"]),
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
    champion_family = fam.NETWORK
    if champion:
        champion_family = fam.family_of(
            MlflowClient().get_model_version(name, str(champion)).tags)
    # The ranks judge a network champion; a Spark ML one is judged here, on the same rows.
    ranks_judge = champion if champion_family == fam.NETWORK else None
    data_spec = {"splits": snap["splits"], "table_version": version, **facts,
                 "mlflow": {"tracking_uri": tracking.tracking_uri(cfg), "run_id": run_id},
                 "champion_uri": f"models:/{name}/{ranks_judge}" if ranks_judge else None}
    ok = False
    try:
        if task == "sequence" and ranks_judge:
            own = champion_validation_splits(
                spark, cfg, registered_version(cfg, task, name, champion), snap,
                data_params, out_dir)
            if own:
                data_spec["champion_splits"] = own
            _tag_champion_rows(run_id, champion, bool(own))
        result = launch(task, cfg.data, data_spec, str(out_dir), spark=spark)
        metrics = result.get("metrics", {})
        baselines = {}
        if task == "sequence" and tcfg.get("baselines", True):
            baselines = _sequence_baselines(spark, snap, tcfg, metrics, run_id, out_dir, ev)
        t_task = TASKS[task](cfg.data, data_spec)
        metric, higher = t_task.promotion()
        promotion = None
        model_uri, family = result.get("model_uri"), fam.NETWORK
        champion_metrics = metrics.get("champion_validation")
        if task == "sequence" and model_uri and "validation" in metrics:
            model_uri, family, champion_metrics = _served_by_merit(
                spark, cfg, snap, run_id, metrics, (metric, higher), model_uri,
                champion_metrics, f"models:/{name}/{champion}" if champion else None,
                champion_family)
        if model_uri and "validation" in metrics:
            promotion = tracking.register_and_promote(
                model_uri, name, run_id, metrics["validation"],
                champion_metrics, metric, higher, alias,
                float(tcfg.get("promote_min_delta", 0.0)),
                tags={"table_version": str(version), fam.FAMILY_TAG: family})
            tracking.log_metrics(run_id, {"registered_version": promotion.version,
                                          "promoted": float(promotion.promoted)})
        ok = True
    finally:
        tracking.finish_run(run_id, ok)
    return TrainingResult(
        task=task, run_id=run_id, model_uri=model_uri, family=family,
        network_uri=result.get("model_uri"),
        version=promotion.version if promotion else None,
        promoted=bool(promotion and promotion.promoted), table_version=version,
        metrics=metrics, baselines=baselines, out_dir=str(out_dir),
        seconds=time.monotonic() - t0)


def registered_version(cfg: Config, task: str, name: str, version: int) -> ServingModel:
    """A registered model version as scoring sees it (:class:`~demandlake.scoring.serving.
    ServingModel`: URI, its training run and that run's params), looked up by version rather
    than by alias, so the champion compared is the one ``train_model`` resolved even if the
    alias moves meanwhile.

    Args:
        cfg: resolved configuration (tracking URI).
        task: ``sequence`` or ``sentiment``.
        name: registered model name.
        version: the version.

    Returns:
        The version; ``params`` is empty when its run is gone (the model itself still loads).
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from demandlake.scoring.serving import ServingModel
    from demandlake.training import tracking

    client = MlflowClient()
    run_id = client.get_model_version(name, str(version)).run_id or None
    params: dict = {}
    if run_id:
        try:
            params = dict(client.get_run(run_id).data.params)
        except MlflowException as exc:
            log.warning("no training run parameters for %s v%d: %s", name, version, exc)
    return ServingModel(task, name, int(version), f"models:/{name}/{version}",
                        tracking.tracking_uri(cfg), params, run_id)


def shares_vocabulary(champion: ServingModel, data_params: dict) -> bool:
    """Whether ``champion`` was trained on the gold.vocabularies table and version this run
    trains on (``data.vocabularies_table_id`` and ``data.vocabularies_version`` of both runs);
    then the snapshot's rows are already coded with its ids. Version numbers start over when
    the table is created again, so the id must match too."""
    keys = ("data.vocabularies_version", "data.vocabularies_table_id")
    return all(champion.param(k) is not None and champion.param(k) == data_params.get(k)
               for k in keys)


def champion_validation_splits(spark, cfg: Config, champion: ServingModel, snap: dict,
                               data_params: dict, out_dir: Path) -> dict:
    """The snapshot's validation rows coded with the champion's own vocabulary, for the ranks.

    Every id in a sequence example is a gold.vocabularies id, the category labels included,
    and the table is rebuilt with every set of examples: fed the new ids, the champion would
    see other items and categories than its users saw and be scored against relabelled
    targets. Scoring codes sequences with the model's own vocabulary
    (``pipeline.score.model_vocabulary``); the champion is judged the same way, on the same
    rows (users and cutoff dates) rebuilt from bronze.events with the settings the stored rows
    were built with. Tokens the champion never saw map to OOV (1), so its ids stay within its
    embeddings even when the new vocabulary is larger.

    Args:
        spark: the session.
        cfg: resolved configuration.
        champion: the serving version (:func:`registered_version`).
        snap: :func:`~demandlake.training.data.snapshot_spec` of gold.sequence_examples.
        data_params: this run's ``data.*`` params (its vocabulary table id and version).
        out_dir: the run's folder; the rows go to ``CHAMPION_VALIDATION_DIR`` in it.

    Returns:
        ``{}`` when the champion shares this run's vocabulary or there is no validation split
        (the shared rows serve), else ``{"validation": {"split", "files"}}``.

    Raises:
        RuntimeError: from ``model_vocabulary`` when the champion's vocabulary exists nowhere
            any more (scoring with it fails the same way).
    """
    from pyspark.sql import functions as F

    from demandlake import lake
    from demandlake.features.sequences import build_examples
    from demandlake.pipeline.score import model_vocabulary
    from demandlake.pipeline.transform import training_example_settings

    if shares_vocabulary(champion, data_params) or not snap["splits"].get(
            "validation", {}).get("files"):
        return {}
    keys = (spark.read.format("delta").option("versionAsOf", snap["version"])
            .load(snap["location"])
            .where((F.col("split") == "validation") & F.col("label_purchase").isNotNull())
            .select("user_id", "cutoff_date").distinct())
    cutoffs = sorted(r["cutoff_date"] for r in keys.select("cutoff_date").distinct().collect())
    if not cutoffs:
        return {}
    vocab = model_vocabulary(spark, cfg, champion)
    # Examples of a user depend on that user's events only: the other users are skipped.
    events = lake.read(spark, cfg, "bronze.events").join(
        keys.select("user_id").distinct(), on="user_id", how="left_semi")
    rows = (build_examples(events, vocab, [(c, "validation") for c in cutoffs],
                           **training_example_settings(cfg))
            .join(keys, on=["user_id", "cutoff_date"], how="left_semi"))
    # Plain Parquet, overwritten by a rerun: the ranks read these files as they read the snapshot.
    target = (Path(out_dir) / CHAMPION_VALIDATION_DIR).resolve().as_uri()
    rows.write.mode("overwrite").parquet(target)
    written = spark.read.parquet(target)
    n_rows, n_keys = written.count(), keys.count()
    if n_rows != n_keys:  # e.g. events erased from bronze since the examples were built
        log.warning("champion v%d: %d of %d validation rows could be rebuilt with its vocabulary",
                    champion.version, n_rows, n_keys)
    log.info("champion %s v%d: %d validation rows coded with its own vocabulary (trained on "
             "gold.vocabularies v%s, this run on v%s)", champion.name, champion.version, n_rows,
             champion.param("data.vocabularies_version"),
             data_params.get("data.vocabularies_version"))
    return {"validation": {"split": "validation", "files": sorted(written.inputFiles())}}


def _served_by_merit(spark, cfg: Config, snap: dict, run_id: str, metrics: dict,
                     promotion: tuple[str, bool], network_uri: str,
                     champion_metrics: dict | None, champion_uri: str | None,
                     champion_family: str) -> tuple[str, str, dict | None]:
    """Fit every enabled Spark ML family on the snapshot's training rows, judge each on the
    validation (and test) rows the network was judged on, and pick the best on the promotion
    metric (the network on a tie). A Spark ML champion is judged here on the same rows.

    ``metrics`` gains ``<family>_<split>`` entries and, when a Spark ML family wins,
    ``network_<split>`` (the network's own) while ``validation``/``test`` become the winner's.

    Returns:
        (model URI to register, its family, the champion's validation metrics).
    """
    from pyspark.sql import functions as F

    from demandlake.training import families as fam
    from demandlake.training import tracking

    metric, higher = promotion
    rows = (spark.read.format("delta").option("versionAsOf", snap["version"])
            .load(snap["location"]).where(F.col("label_purchase").isNotNull()))
    splits = [s for s in ("validation", "test") if s in metrics]
    best_family, best = fam.NETWORK, metrics["validation"]
    judged, fitted = {fam.NETWORK: metrics["validation"].get(metric)}, {}
    train = rows.where(F.col("split") == "train")
    labels = {r[0] for r in train.select("label_purchase").distinct().collect()}
    enabled = fam.enabled(cfg)
    if enabled and labels != {0, 1}:
        log.warning("Spark ML families not fitted: the training rows hold labels %s only",
                    sorted(labels))
        enabled = []
    for family in enabled:
        model = fam.calibrate(cfg, fam.fit(cfg, family, train),
                              rows.where(F.col("split") == "validation"))
        log.info("%s: calibration %s", family, model.calibration)
        tracking.log_metrics(run_id, {f"{family}_platt_calibrated":
                                      float(model.calibration["method"] == "platt")})
        for split in splits:
            metrics[f"{family}_{split}"] = fam.metrics(cfg, model, rows.where(
                F.col("split") == split))
            tracking.log_metrics(run_id, metrics[f"{family}_{split}"], prefix=f"{family}_{split}_")
        judged[family], fitted[family] = metrics[f"{family}_validation"].get(metric), model
        if tracking.is_better(judged[family], best.get(metric), higher):
            best_family, best = family, metrics[f"{family}_validation"]
    # Only the winner is logged as a model of the run (the network always is, by its rank 0).
    best_uri = (network_uri if best_family == fam.NETWORK
                else fam.log_spark_model(run_id, fitted[best_family], best_family))
    if best_family != fam.NETWORK:
        for split in splits:
            metrics[f"network_{split}"] = metrics[split]
            metrics[split] = metrics[f"{best_family}_{split}"]
    log.info("validation %s by family: %s -> %s", metric,
             ", ".join(f"{k} {v:.4f}" for k, v in judged.items() if v is not None), best_family)
    tracking.log_metrics(run_id, {"family_is_" + f: float(f == best_family) for f in judged})
    if champion_uri and champion_family != fam.NETWORK:
        champion_metrics = fam.metrics(cfg, fam.load_spark_model(champion_uri),
                                       rows.where(F.col("split") == "validation"))
        metrics["champion_validation"] = champion_metrics
        tracking.log_metrics(run_id, champion_metrics, prefix="champion_validation_")
    return best_uri, best_family, champion_metrics


def _tag_champion_rows(run_id: str, champion: int, own: bool) -> None:
    """Record in the run which rows the champion's validation metrics come from."""
    from mlflow.tracking import MlflowClient

    MlflowClient().set_tag(run_id, "champion_validation_rows",
                           f"v{champion}: " + ("rebuilt with its own vocabulary" if own
                                               else "the snapshot's (same vocabulary)"))


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
