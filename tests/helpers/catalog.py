"""A fresh lake for a test: the one way to point the session catalog at a new lake folder."""
from __future__ import annotations

from pathlib import Path

DATABASES = ("bronze", "silver", "gold", "ops")


def forget_catalog(spark) -> None:
    """Drop the table names other tests registered (their tables' files stay where they are)."""
    for db in DATABASES:
        spark.sql(f"DROP DATABASE IF EXISTS `{db}` CASCADE")


def fresh_lake(spark, lake_dir: Path, *overrides: str):
    """A config whose lake is ``lake_dir`` with an in-memory catalog, after forgetting the
    names of earlier lakes; ``overrides`` are further ``--set`` settings."""
    from demandlake.config import load_config

    forget_catalog(spark)
    return load_config(overrides=[f"lake.uri={lake_dir}", "lake.catalog=in-memory", *overrides])
