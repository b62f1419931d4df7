"""MLflow: runs, per-epoch metrics, plots, the logged pyfunc model, registry and promotion.

Who writes what:

- the driver creates (or, when resuming, reopens) the run, logs the configuration, the data
  snapshot (table versions) and the vocabulary sizes, registers the model and decides promotion;
- inside the Horovod job only rank 0 logs (:class:`RankTracker`): per-epoch metrics, throughput,
  final metrics, PNG plots and the model itself (a pyfunc wrapper, see
  :mod:`demandlake.training.pyfunc`, so ``mlflow.pyfunc.spark_udf`` can score it).

Promotion: a new version gets the ``serving`` alias only when it beats the current serving version
on the same validation data (both were evaluated by the same ranks on the same shards).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

log = logging.getLogger(__name__)

RUN_KEY_TAG = "demandlake.run_key"
REGISTERED_NAMES = {"sequence": "demandlake-sequence", "sentiment": "demandlake-sentiment"}
# The sequence model's own copy of gold.vocabularies (as of the version it was trained on):
# scoring codes sequences with it, whatever the table holds after later rebuilds.
VOCABULARY_ARTIFACT = "vocabulary/vocabularies.parquet"


def tracking_uri(cfg) -> str:
    """The tracking URI of a Config (SQLite under the lake by default)."""
    return cfg.mlflow_tracking_uri


def configure(cfg) -> str:
    """Point MLflow at the project's store and make sure the experiment exists.

    Returns:
        The experiment id.
    """
    import mlflow

    from demandlake.config import local_path

    uri = tracking_uri(cfg)
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    name = cfg.get("mlflow.experiment", "demandlake")
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    artifacts = None
    lake_local = local_path(cfg.lake_uri)
    if not cfg.get("mlflow.tracking_uri") and lake_local is not None:
        # Beside the SQLite store, never ./mlruns of whatever directory the job started in.
        artifacts = (lake_local / "_mlflow" / "artifacts").as_uri()
    return mlflow.create_experiment(name, artifact_location=artifacts)


def log_vocabulary(run_id: str, vocabulary, out_dir: Path) -> str:
    """Log ``vocabulary`` (a pandas frame of gold.vocabularies rows) as ``VOCABULARY_ARTIFACT``
    of the run; returns the local file written."""
    from mlflow.tracking import MlflowClient

    folder, name = VOCABULARY_ARTIFACT.rsplit("/", 1)
    path = Path(out_dir) / folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    vocabulary.to_parquet(path, index=False)
    MlflowClient().log_artifact(run_id, str(path), folder)
    return str(path)


def flatten(prefix: str, tree: Any) -> dict[str, str]:
    """Nested config -> ``{"a.b.c": "value"}`` strings (MLflow params)."""
    if isinstance(tree, Mapping):
        out: dict[str, str] = {}
        for k, v in tree.items():
            out.update(flatten(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return {prefix: json.dumps(tree) if isinstance(tree, (list, tuple)) else str(tree)}


def run_key(task: str, table_version: int, sections: Mapping) -> str:
    """Identity of a training run: same task, data version and settings -> same key (resume)."""
    text = json.dumps({"task": task, "version": table_version, "cfg": sections},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def start_run(experiment_id: str, key: str, run_name: str, params: Mapping[str, str],
              tags: Mapping[str, str], resume: bool = True) -> tuple[str, bool]:
    """Create the run, or reopen an unfinished one with the same key (a retried job).

    Returns:
        ``(run_id, resumed)``.
    """
    from mlflow.entities import Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    if resume:
        found = client.search_runs(
            [experiment_id], f"tags.`{RUN_KEY_TAG}` = '{key}' and attributes.status != 'FINISHED'",
            max_results=1, order_by=["attributes.start_time DESC"])
        if found:
            run_id = found[0].info.run_id
            client.update_run(run_id, status="RUNNING")
            log.info("resuming MLflow run %s (key %s)", run_id, key)
            return run_id, True
    run = client.create_run(experiment_id, run_name=run_name,
                            tags={RUN_KEY_TAG: key, **{k: str(v) for k, v in tags.items()}})
    items = [Param(k[:250], str(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        client.log_batch(run.info.run_id, params=items[i:i + 100])
    client.log_batch(run.info.run_id, tags=[RunTag("mlflow.source.name", "demandlake")])
    return run.info.run_id, False


def finish_run(run_id: str, ok: bool) -> None:
    from mlflow.tracking import MlflowClient

    MlflowClient().set_terminated(run_id, "FINISHED" if ok else "FAILED")


def log_metrics(run_id: str, metrics: Mapping[str, float], step: int = 0,
                prefix: str = "") -> None:
    """Log finite numeric metrics in batches (NaN, e.g. AUC of a one-class split, is skipped)."""
    import time

    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    now = int(time.time() * 1000)
    items = [Metric(_key(prefix + k), float(v), now, step) for k, v in metrics.items()
             if isinstance(v, (int, float)) and math.isfinite(float(v))]
    client = MlflowClient()
    for i in range(0, len(items), 500):
        client.log_batch(run_id, metrics=items[i:i + 500])


def _key(name: str) -> str:
    # MLflow keys: word characters, - . / space; anything else (e.g. in category names) -> _.
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in name)[:250]


class RankTracker:
    """Logging from rank 0 of the Horovod job into the driver's run."""

    def __init__(self, spec: Mapping[str, str]):
        import mlflow

        self.uri, self.run_id = spec["tracking_uri"], spec["run_id"]
        mlflow.set_tracking_uri(self.uri)

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        try:
            MlflowClient().log_batch(self.run_id, params=[Param(k, str(v))
                                                          for k, v in params.items()])
        except Exception as exc:  # a resumed run re-logging a changed param is not fatal
            log.warning("could not log params %s: %s", sorted(params), exc)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        log_metrics(self.run_id, metrics, step)

    def log_final(self, task, serving_model, meta: dict, example, result: dict,
                  plots_dir: Path) -> str:
        """Final metrics, plots and the pyfunc model; returns the logged model's URI."""
        from mlflow.tracking import MlflowClient

        for split, metrics in result["metrics"].items():
            log_metrics(self.run_id, metrics, prefix=f"{split}_")
        plots_dir.mkdir(parents=True, exist_ok=True)
        client = MlflowClient()
        for path in make_plots(task.name, result["sums"], plots_dir):
            client.log_artifact(self.run_id, str(path), "plots")
        metrics_json = plots_dir.parent / "final_metrics.json"
        metrics_json.write_text(json.dumps(result["metrics"], indent=1, ensure_ascii=False,
                                           default=float))
        client.log_artifact(self.run_id, str(metrics_json))
        return log_model(self.run_id, task, serving_model, meta, example)


def make_plots(task: str, sums: Mapping[str, Any], out: Path) -> list[Path]:
    """PNG plots from the merged evaluation sums (test split when present, else validation)."""
    from demandlake.training import evaluate as ev

    split = "test" if "test" in sums else "validation"
    if split not in sums:
        return []
    s = sums[split]
    paths = []
    if task == "sequence":
        acc = s["purchase"]
        paths.append(ev.plot_roc_pr(acc, str(out / "purchase_roc_pr.png"),
                                    f"purchase ({split})"))
        paths.append(ev.plot_calibration(acc, str(out / "purchase_calibration.png"),
                                         f"purchase calibration ({split})"))
        series = {"model": ev.ranking_metrics(s["categories"])}
        if "champion_validation" in sums and split == "validation":
            series["serving"] = ev.ranking_metrics(sums["champion_validation"]["categories"])
        paths.append(ev.plot_topk(series, str(out / "categories_recall_at_k.png"),
                                  f"category recall@k ({split})"))
    else:
        acc = s["overall"]
        paths.append(ev.plot_roc_pr(acc, str(out / "sentiment_roc_pr.png"),
                                    f"sentiment ({split})"))
        paths.append(ev.plot_calibration(acc, str(out / "sentiment_calibration.png"),
                                         f"sentiment calibration ({split})"))
        per = {k: ev.binary_metrics(v)["accuracy"] for k, v in s.get("by_category", {}).items()}
        if per:
            paths.append(ev.plot_per_group(per, str(out / "sentiment_accuracy_by_category.png"),
                                           "accuracy", f"accuracy per category ({split})"))
    return [Path(p) for p in paths]


def _pip_requirements() -> list[str]:
    import importlib.metadata as md

    reqs = []
    for dist in ("mlflow", "tensorflow-cpu", "tensorflow", "keras", "numpy", "pandas", "jieba"):
        try:
            reqs.append(f"{dist}=={md.version(dist)}")
        except md.PackageNotFoundError:
            continue
    return reqs


def package_folder(tmp: str | Path) -> str:
    """The demandlake package as a folder, for MLflow's ``code_paths``.

    Where the package was imported from a folder (a checkout, an installed wheel), that folder.
    Where it came from an archive (``spark-submit --py-files demandlake.zip``: ``__file__`` is
    ``.../demandlake.zip/demandlake/__init__.py``), MLflow cannot copy a path inside the zip
    ("Failed to copy the specified code path"), so the package's files are extracted from the
    archive under ``tmp`` and that copy is returned.
    """
    import zipfile

    import demandlake

    pkg = Path(demandlake.__file__).parent
    if pkg.is_dir():
        return str(pkg)
    archive = next((a for a in pkg.parents if a.is_file()), None)
    if archive is None or not zipfile.is_zipfile(archive):
        raise FileNotFoundError(f"demandlake imported from {pkg}: neither a folder nor a zip")
    inner = pkg.relative_to(archive).as_posix() + "/"
    out = Path(tmp) / "code"
    with zipfile.ZipFile(archive) as z:
        z.extractall(out, [n for n in z.namelist()
                           if n.startswith(inner) and "__pycache__/" not in n])
    return str(out / inner.rstrip("/"))


def log_model(run_id: str, task, serving_model, meta: dict, example) -> str:
    """Log ``serving_model`` as a pyfunc (wrapper + ``.keras`` artifact) with its signature.

    The demandlake package travels in ``code_paths`` so a scoring cluster can load the wrapper
    (:func:`package_folder`: extracted when it was imported from a ``--py-files`` zip).

    Returns:
        The logged model's URI.
    """
    import mlflow
    from mlflow.models import infer_signature

    from demandlake.training import predictors, pyfunc

    cls = getattr(pyfunc, task.pyfunc_class_name)
    output = getattr(predictors, task.predictor_class_name)(meta, serving_model).predict(example)
    signature = infer_signature(example, output)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        serving_model.save(path)
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="model", python_model=cls(meta), artifacts={"keras_model": str(path)},
                signature=signature, pip_requirements=_pip_requirements(),
                code_paths=[package_folder(tmp)])
    return info.model_uri


# ---- registry ---------------------------------------------------------------------------------
@dataclass
class Promotion:
    """Outcome of :func:`register_and_promote`."""

    version: int
    promoted: bool
    metric: str
    new_value: float
    serving_value: float | None
    previous_version: int | None


def serving_version(name: str, alias: str = "serving") -> int | None:
    """The version holding ``alias`` (None when the model or the alias does not exist)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        return int(MlflowClient().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def is_better(new: float, current: float | None, higher_is_better: bool,
              min_delta: float = 0.0) -> bool:
    """Whether ``new`` beats ``current`` by more than ``min_delta`` (ties do not promote)."""
    if new is None or not math.isfinite(new):
        return False
    if current is None:
        return True
    if not math.isfinite(current):
        return False
    return new > current + min_delta if higher_is_better else new < current - min_delta


def register_and_promote(model_uri: str, name: str, run_id: str, new_metrics: Mapping,
                         serving_metrics: Mapping | None, metric: str, higher_is_better: bool,
                         alias: str = "serving", min_delta: float = 0.0,
                         tags: Mapping[str, str] | None = None) -> Promotion:
    """Register the run's model and move ``alias`` to it only if it beats the serving version.

    Args:
        model_uri: the logged model.
        name: registered model name (``demandlake-sequence`` / ``demandlake-sentiment``).
        run_id: the training run.
        new_metrics, serving_metrics: validation metrics of the new and of the current serving
            model on the same data (None when nothing is serving yet).
        metric: the deciding metric; ``higher_is_better`` its direction.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    previous = serving_version(name, alias)
    # register_model prints "Successfully registered model ..." to stderr: keep it in the log.
    with contextlib.redirect_stderr(io.StringIO()) as said:
        mv = mlflow.register_model(model_uri, name, tags={"run_id": run_id, **(tags or {})})
    for line in said.getvalue().splitlines():
        log.info("mlflow: %s", line)
    version = int(mv.version)
    new_value = float(new_metrics.get(metric, float("nan")))
    current = None
    if previous is not None:
        current = float((serving_metrics or {}).get(metric, float("nan")))
    promoted = is_better(new_value, current, higher_is_better, min_delta)
    client.set_model_version_tag(name, str(version), f"validation_{metric}", f"{new_value:.6f}")
    if promoted:
        client.set_registered_model_alias(name, alias, str(version))
    client.set_model_version_tag(name, str(version), "promoted", str(promoted).lower())
    log.info("%s v%d: validation %s %.5f vs serving %s -> %s", name, version, metric, new_value,
             "none" if current is None else f"v{previous} {current:.5f}",
             "promoted" if promoted else "kept serving version")
    return Promotion(version, promoted, metric, new_value, current, previous)


def load_serving(name: str, alias: str = "serving", cfg=None):
    """The model scoring should use: ``(pyfunc model, version)``.

    Args:
        name: registered model name, e.g. ``demandlake-sequence``.
        alias: the alias (``training.promote_alias``).
        cfg: a Config whose tracking URI to use (else the current MLflow setting).

    Raises:
        LookupError: nothing holds the alias yet.
    """
    import mlflow

    if cfg is not None:
        mlflow.set_tracking_uri(tracking_uri(cfg))
    version = serving_version(name, alias)
    if version is None:
        raise LookupError(f"no version of {name!r} holds the alias {alias!r}: train first")
    return mlflow.pyfunc.load_model(f"models:/{name}/{version}"), version


def serving_model_uri(name: str, alias: str = "serving", cfg=None) -> str:
    """``models:/NAME/VERSION`` of the serving model (for ``mlflow.pyfunc.spark_udf``)."""
    import mlflow

    if cfg is not None:
        mlflow.set_tracking_uri(tracking_uri(cfg))
    version = serving_version(name, alias)
    if version is None:
        raise LookupError(f"no version of {name!r} holds the alias {alias!r}: train first")
    return f"models:/{name}/{version}"
