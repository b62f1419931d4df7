"""Which model version scores tonight: the registry's ``serving`` alias, resolved on the driver.

The UDFs receive the resolved ``models:/NAME/VERSION`` URI and the tracking URI, never an alias,
so every worker loads the same version even if the alias moves while the job runs.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from demandlake.config import Config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServingModel:
    """A resolved serving version and the facts scoring needs about it."""

    task: str
    name: str
    version: int
    uri: str
    tracking_uri: str
    params: dict
    run_id: str | None = None
    # training.families, for the sequence task: sequence_network (scored through the Arrow UDF)
    # or a Spark ML family (scored in Spark); the registry's version tag ``family``.
    family: str = "sequence_network"

    def param(self, key: str, default=None):
        return self.params.get(key, default)


def registered_name(cfg: Config, task: str) -> str:
    """The registered model name of ``task`` (``sequence`` or ``sentiment``)."""
    from demandlake.training import tracking

    return cfg.get(f"{task}_model.registered_name") or tracking.REGISTERED_NAMES[task]


def resolve(cfg: Config, task: str) -> tuple[ServingModel | None, str]:
    """The serving version of ``task``'s model, or None and the reason why there is none.

    Args:
        cfg: resolved configuration (tracking URI, registered names, promote alias).
        task: ``sequence`` or ``sentiment``.

    Returns:
        ``(model, "")`` or ``(None, reason)``; a missing registry, model or alias is a reason,
        not an error, so the caller can fall back and log why.
    """
    from mlflow.tracking import MlflowClient

    from demandlake.training import tracking

    name = registered_name(cfg, task)
    alias = cfg.get("training.promote_alias", "serving") or "serving"
    store = tracking.tracking_uri(cfg)
    if store.startswith("sqlite:///") and not Path(store[len("sqlite:///"):]).exists():
        return None, f"no MLflow store at {store}: no model was trained for this lake"
    try:
        uri = tracking.serving_model_uri(name, alias, cfg=cfg)
    except LookupError as exc:
        return None, str(exc)
    except Exception as exc:  # an unreachable or empty tracking store is a reason to fall back
        return None, f"registry unavailable: {type(exc).__name__}: {exc}"
    version = int(uri.rsplit("/", 1)[1])
    from demandlake.training import families

    client = MlflowClient()
    params: dict = {}
    run_id = None
    mv = client.get_model_version(name, str(version))
    # An unknown family fails here, not in scoring; the sentiment model has one kind only.
    family = families.family_of(mv.tags) if task == "sequence" else ""
    try:
        run_id = mv.run_id or None
        if run_id:
            params = dict(client.get_run(run_id).data.params)
    except Exception as exc:  # the run may have been deleted; the model itself still loads
        log.warning("no training run parameters for %s v%d: %s", name, version, exc)
    log.info("serving %s model: %s v%d%s", task, name, version, f" ({family})" if family else "")
    return ServingModel(task, name, version, uri, tracking.tracking_uri(cfg), params, run_id,
                        family), ""


def vocabulary_artifact(model: ServingModel):
    """The id mapping logged with ``model``'s training run (``VOCABULARY_ARTIFACT``) as a pandas
    frame of gold.vocabularies rows, or None when the run has none (or is gone)."""
    import mlflow
    import pandas as pd

    from demandlake.training.tracking import VOCABULARY_ARTIFACT

    if not model.run_id:
        return None
    try:
        path = mlflow.artifacts.download_artifacts(run_id=model.run_id,
                                                   artifact_path=VOCABULARY_ARTIFACT,
                                                   tracking_uri=model.tracking_uri)
    except Exception as exc:  # runs from before the artifact existed, or a deleted run
        log.warning("%s v%d: no vocabulary artifact in run %s (%s)", model.name, model.version,
                    model.run_id, exc)
        return None
    return pd.read_parquet(path)
