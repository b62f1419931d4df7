"""Configuration: YAML layers plus command-line overrides, resolved into one object.

Layers, later wins:
  1. ``conf/defaults.yaml`` shipped with the project (or the packaged copy);
  2. ``conf/local.yaml`` beside it when present (machine-local, git-ignored);
  3. ``--conf-file FILE`` (any number, in order);
  4. ``--set key.path=value`` overrides and ``--lake URI``.

Secrets never come from these files: they are read from the environment where used.
"""
from __future__ import annotations

import copy
import importlib.resources
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import yaml

if TYPE_CHECKING:
    from importlib.abc import Traversable

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _conf_dir() -> Path | Traversable:
    """The folder holding ``defaults.yaml``: $DEMANDLAKE_CONF_DIR, the clone's ``conf/``, else
    the copy packaged in the wheel (``demandlake/conf``, a symlink to ``conf/defaults.yaml`` in
    the clone). That one is read through importlib.resources, not ``__file__``: with the wheel on
    ``spark-submit --py-files`` the package is imported from inside the zip, where no path exists.
    """
    env = os.environ.get("DEMANDLAKE_CONF_DIR")
    if env:
        return Path(env)
    if (PROJECT_ROOT / "conf" / "defaults.yaml").exists():
        return PROJECT_ROOT / "conf"
    packaged = importlib.resources.files(__package__) / "conf"
    if (packaged / "defaults.yaml").is_file():
        return packaged
    raise FileNotFoundError("conf/defaults.yaml not found; set DEMANDLAKE_CONF_DIR")


def deep_merge(base: dict, over: Mapping) -> dict:
    """Return ``base`` updated recursively with ``over`` (dicts merge, anything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _parse_scalar(text: str) -> Any:
    """Parse an override value with YAML rules (numbers, booleans, lists), falling back to text."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


class Config:
    """The resolved configuration: nested dicts with dotted-path access.

    Args:
        data: the merged configuration tree.
        sources: the files it was read from, in order (for the start-of-job log).
    """

    def __init__(self, data: dict, sources: Iterable[str] = ()):
        self.data = data
        self.sources = list(sources)

    def get(self, path: str, default: Any = None) -> Any:
        node: Any = self.data
        for part in path.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return default
            node = node[part]
        return node

    def __getitem__(self, path: str) -> Any:
        value = self.get(path, _MISSING)
        if value is _MISSING:
            raise KeyError(f"config key not set: {path}")
        return value

    def with_overrides(self, overrides: Mapping[str, Any]) -> "Config":
        """Return a copy with dotted-path keys replaced."""
        data = copy.deepcopy(self.data)
        for path, value in overrides.items():
            node = data
            parts = path.split(".")
            if path.startswith("spark.conf.") and len(parts) > 3:
                # Spark setting names contain dots: spark.conf.<whole name>.
                parts = ["spark", "conf", path[len("spark.conf."):]]
            for part in parts[:-1]:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise ValueError(f"cannot set {path}: {part} is not a section")
            node[parts[-1]] = value
        return Config(data, self.sources + ["overrides"])

    # Convenience accessors for the facts every stage needs.
    @property
    def lake_uri(self) -> str:
        return normalize_uri(self["lake.uri"])

    @property
    def raw_uri(self) -> str:
        raw = self.get("lake.raw_uri") or ""
        return normalize_uri(raw) if raw else self.lake_uri.rstrip("/") + "/raw"

    @property
    def mlflow_tracking_uri(self) -> str:
        uri = self.get("mlflow.tracking_uri") or ""
        if uri:
            return uri
        local = local_path(self.lake_uri)
        if local is None:
            raise ValueError("mlflow.tracking_uri must be set when the lake is not on a local disk")
        return f"sqlite:///{local / '_mlflow' / 'mlflow.db'}"

    def dumps(self) -> str:
        return json.dumps(self.data, indent=2, sort_keys=True, default=str)


_MISSING = object()


def normalize_uri(uri: str) -> str:
    """Make a local path absolute (``./lake`` -> ``/abs/lake``); leave scheme URIs alone."""
    if "://" in uri or uri.startswith("file:"):
        return uri.rstrip("/") if uri != "file:///" else uri
    return str(Path(uri).expanduser().resolve())


def local_path(uri: str) -> Path | None:
    """The local filesystem path of a URI, or None for remote stores (s3a, abfss, hdfs...)."""
    if "://" not in uri:
        return Path(uri)
    if uri.startswith("file://"):
        return Path(uri[len("file://"):])
    return None


def load_config(
    conf_files: Iterable[str | os.PathLike] = (),
    overrides: Iterable[str] = (),
    lake: str | None = None,
) -> Config:
    """Resolve the configuration layers.

    Args:
        conf_files: extra YAML files, applied in order after defaults and local.yaml.
        overrides: ``key.path=value`` strings (values parsed as YAML).
        lake: lake URI overriding ``lake.uri``.

    Returns:
        The merged Config.
    """
    conf_dir = _conf_dir()
    layers = [conf_dir / "defaults.yaml", conf_dir / "local.yaml", *map(Path, conf_files)]
    data: dict = {}
    used: list[str] = []
    for i, path in enumerate(layers):
        # defaults/local may lie inside the zipped wheel (a Traversable: is_file, no exists);
        # --conf-file may be /dev/null (exists, not a regular file).
        if not (path.is_file() if i < 2 else path.exists()):
            if i >= 2:
                raise FileNotFoundError(f"config file not found: {path}")
            continue
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"config file {path} must hold a mapping, not {type(loaded).__name__}")
        data = deep_merge(data, loaded)
        used.append(str(path))
    cfg = Config(data, used)
    parsed: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override must look like key.path=value, got {item!r}")
        key, value = item.split("=", 1)
        parsed[key.strip()] = _parse_scalar(value)
    if lake:
        parsed["lake.uri"] = lake
    return cfg.with_overrides(parsed) if parsed else cfg
