"""Configuration: YAML layers plus command-line overrides, resolved into one object.

Layers, later wins:
  1. ``conf/defaults.yaml`` shipped with the project (or the packaged copy);
  2. ``conf/local.yaml`` beside it when present (machine-local, git-ignored);
  3. ``--conf-file FILE`` (any number, in order);
  4. ``--set key.path=value`` overrides and ``--lake URI``.

Secrets never come from these files: they are read from the environment where used.

The keys of ``defaults.yaml`` are the schema: every setting the code reads is there, so a key in
another layer that is not (``training.epoks``) is a mistake that would otherwise be silently
ignored. :func:`load_config` rejects it with a :class:`ConfigKeyError` naming the key, the layer
it came from and the nearest valid key. Only what the defaults cannot show by example is declared
here (:func:`schema_of`): free-form maps (``spark.conf``), per-name entries (``quality.tables``)
and keys of list entries.
"""
from __future__ import annotations

import copy
import difflib
import importlib.resources
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping

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


class ConfigKeyError(ValueError):
    """A configuration layer names keys the schema lacks (one message per key, joined by '; ')."""


class _FreeForm:
    """Schema node: a map whose keys are names the user chooses (any key, any value)."""

    def __repr__(self) -> str:
        return "FREE_FORM"


FREE_FORM = _FreeForm()


class _EachName:
    """Schema node: a map from free names (table names) to entries of one ``shape``."""

    def __init__(self, shape: Any):
        self.shape = shape


# Maps whose keys contain dots, so that a --set path names one key with several parts: a Spark
# property name takes the rest of the path; a table name (layer.name) takes two parts.
_DOTTED_KEYS = {("spark", "conf"): None, ("quality", "tables"): 2}


def split_path(path: str) -> list[str]:
    """The keys of a dotted ``--set`` path: ``quality.tables.gold.user_features.min_rows`` ->
    ``[quality, tables, gold.user_features, min_rows]``."""
    parts = path.split(".")
    for prefix, width in _DOTTED_KEYS.items():
        n = len(prefix)
        if tuple(parts[:n]) == prefix and len(parts) > n + 1:
            width = len(parts) - n if width is None else width
            return [*prefix, ".".join(parts[n:n + width]), *parts[n + width:]]
    return parts


def _shape(value: Any) -> Any:
    """Schema of a defaults value: a dict of the keys of a map, ``[shape]`` for a list of maps
    (the union of their keys), None for a value."""
    if isinstance(value, Mapping):
        return {str(k): _shape(v) for k, v in value.items()}
    if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        merged: dict = {}
        for item in value:
            merged = deep_merge(merged, item)
        return [_shape(merged)]
    return None


def schema_of(defaults: Mapping) -> dict:
    """The keys a configuration may hold: those of ``defaults``, plus what its examples cannot
    show.

    Args:
        defaults: the parsed ``defaults.yaml``.

    Returns:
        A tree of dicts (sections: these keys only) whose leaves are None (a value),
        :data:`FREE_FORM`, an ``_EachName`` or a one-element list (the shape of every entry).
    """
    schema = _shape(defaults)
    spark = schema.get("spark")
    if isinstance(spark, dict):
        spark["conf"] = FREE_FORM  # any Spark property: Spark itself knows which exist
    sources = (schema.get("ingest") or {}).get("sources")
    if isinstance(sources, list):
        for key in ("name", "format", "path", "timezone", "optional"):
            sources[0].setdefault(key, None)
    quality = schema.get("quality")
    if isinstance(quality, dict):
        # Per table name: the keys the defaults' tables use, max_null_rate {column: share}, and
        # quality's own thresholds for that table only (quality._settings merges them).
        entry = {k: v for k, v in quality.items() if k not in ("enabled", "tables")}
        for table in (quality.get("tables") or {}).values():
            entry = deep_merge(entry, table or {})
        entry.update(key=None, max_null_rate=FREE_FORM,
                     freshness={"expression": None, "max_age_days": None})
        quality["tables"] = _EachName(entry)
    return schema


def _paths(node: Any, prefix: str = "") -> Iterator[str]:
    """Every dotted key path of a schema (list entries as ``path[].key``, free names as ``*``)."""
    if isinstance(node, list):
        yield from _paths(node[0], prefix + "[]")
    elif isinstance(node, _EachName):
        yield from _paths(node.shape, prefix + ".*")
    elif isinstance(node, dict):
        for key, child in node.items():
            path = f"{prefix}.{key}" if prefix else key
            yield path
            yield from _paths(child, path)


def _unknown(schema: dict, node: Any, prefix: list[str], key: str, rest: list[str],
             source: str) -> str:
    """The message for ``key`` (under ``prefix``, followed by ``rest`` in a --set path), which
    ``node`` lacks: the nearest sibling key, else the same key in other sections."""
    bad = ".".join([*prefix, key, *rest])
    siblings = list(node) if isinstance(node, dict) else []
    near = difflib.get_close_matches(key, siblings, n=1)
    valid = set(_paths(schema))
    hints: list[str] = []
    if near:
        whole = ".".join([*prefix, near[0], *rest])
        hints = [whole if whole in valid else ".".join([*prefix, near[0]])]
    else:  # a key put in the wrong section: the sections that have it
        hints = [p for p in sorted(valid) if p.rsplit(".", 1)[-1] == key and "*" not in p][:3]
    where = f"unknown config key '{bad}' (from {source})"
    if hints:
        return where + ": did you mean " + " or ".join(f"'{h}'" for h in hints) + "?"
    return where + "; conf/defaults.yaml lists every key"


def _tree_problems(schema: dict, node: Any, value: Any, prefix: list[str],
                   source: str) -> Iterator[str]:
    """Messages for the keys of ``value`` (placed at ``prefix``) that ``node`` does not allow."""
    if node is FREE_FORM:
        return
    if isinstance(node, _EachName):
        if isinstance(value, Mapping):
            for name, entry in value.items():
                yield from _tree_problems(schema, node.shape, entry, [*prefix, str(name)], source)
        return
    if isinstance(node, list):
        if isinstance(value, list):
            for i, item in enumerate(value):
                yield from _tree_problems(schema, node[0], item,
                                          [*prefix[:-1], f"{prefix[-1]}[{i}]"], source)
        return
    if not isinstance(value, Mapping):
        return  # a value, not keys: what it must be is the reading code's business
    for key, child in value.items():
        if isinstance(node, dict) and key in node:
            yield from _tree_problems(schema, node[key], child, [*prefix, str(key)], source)
        else:
            yield _unknown(schema, node, prefix, str(key), [], source)


def check_keys(schema: dict, data: Mapping, source: str) -> None:
    """Raise if ``data`` (one parsed YAML layer) holds a key the schema lacks.

    Args:
        schema: from :func:`schema_of`.
        data: the layer's tree.
        source: where it came from, for the message (a file name).

    Raises:
        ConfigKeyError: naming every unknown key, each with the nearest valid one.
    """
    problems = list(_tree_problems(schema, schema, data, [], source))
    if problems:
        raise ConfigKeyError("; ".join(problems))


def check_override(schema: dict, path: str, value: Any, source: str) -> None:
    """Raise if the dotted ``path`` of an override, or a key of its (mapping) ``value``, is not
    in the schema.

    Raises:
        ConfigKeyError: as :func:`check_keys`.
    """
    parts = split_path(path)
    node: Any = schema
    for i, part in enumerate(parts):
        if node is FREE_FORM:
            return
        if isinstance(node, _EachName):
            node = node.shape
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise ConfigKeyError(_unknown(schema, node, parts[:i], part, parts[i + 1:], source))
    problems = list(_tree_problems(schema, node, value, parts, source))
    if problems:
        raise ConfigKeyError("; ".join(problems))


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
        schema: the keys overrides may name (:func:`schema_of`); None: not checked.
    """

    def __init__(self, data: dict, sources: Iterable[str] = (), schema: dict | None = None):
        self.data = data
        self.sources = list(sources)
        self.schema = schema

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

    def with_overrides(self, overrides: Mapping[str, Any], source: str = "overrides") -> "Config":
        """Return a copy with dotted-path keys replaced.

        Args:
            overrides: ``{dotted path: value}``; a Spark property or table name inside a path
                is one key (:func:`split_path`).
            source: where they came from, for the error message.

        Raises:
            ConfigKeyError: for a path, or a key of a mapping value, that the schema lacks.
        """
        if self.schema is not None:
            problems = []
            for path, value in overrides.items():
                try:
                    check_override(self.schema, path, value, source)
                except ConfigKeyError as exc:
                    problems.append(str(exc))
            if problems:
                raise ConfigKeyError("; ".join(problems))
        data = copy.deepcopy(self.data)
        for path, value in overrides.items():
            node = data
            parts = split_path(path)
            for part in parts[:-1]:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise ValueError(f"cannot set {path}: {part} is not a section")
            node[parts[-1]] = value
        return Config(data, self.sources + ["overrides"], self.schema)

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

    Raises:
        ConfigKeyError: for keys that ``defaults.yaml`` lacks, in any later layer.
    """
    conf_dir = _conf_dir()
    layers = [conf_dir / "defaults.yaml", conf_dir / "local.yaml", *map(Path, conf_files)]
    data: dict = {}
    used: list[str] = []
    schema: dict | None = None  # without a defaults.yaml, nothing to check against
    problems: list[str] = []
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
        if i == 0:
            schema = schema_of(loaded)
        elif schema is not None:
            try:
                check_keys(schema, loaded, str(path))
            except ConfigKeyError as exc:
                problems.append(str(exc))  # every bad key of every file in one message
        data = deep_merge(data, loaded)
        used.append(str(path))
    if problems:
        raise ConfigKeyError("; ".join(problems))
    cfg = Config(data, used, schema)
    parsed: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override must look like key.path=value, got {item!r}")
        key, value = item.split("=", 1)
        parsed[key.strip()] = _parse_scalar(value)
    if lake:
        parsed["lake.uri"] = lake
    return cfg.with_overrides(parsed, "--set") if parsed else cfg
