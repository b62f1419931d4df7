"""One session-scoped Spark (local[2], UI off, few shuffle partitions, Delta) shared by every test.

Each test that writes tables gets its own lake under ``tmp_path`` through the ``cfg`` fixture, which
also clears the (in-memory) catalog so table names point at that lake.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = ROOT.parent / "shared" / "data" / "real"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from demandlake.config import load_config
    from demandlake.spark import get_spark

    base = tmp_path_factory.mktemp("spark")
    cfg = load_config(overrides=[
        f"lake.uri={base / 'lake0'}",
        "lake.catalog=in-memory",
        "spark.master=local[2]",
        "spark.conf.spark.sql.shuffle.partitions=2",
        "spark.conf.spark.default.parallelism=2",
        "spark.conf.spark.driver.memory=2g",
        "spark.conf.spark.sql.adaptive.enabled=false",
        "spark.conf.spark.databricks.delta.snapshotPartitions=1",
        f"spark.conf.spark.sql.warehouse.dir={base / 'warehouse'}",
    ])
    session = get_spark(cfg, app_name="demandlake-tests")
    yield session
    session.stop()


@pytest.fixture
def cfg(spark, tmp_path):
    """A config whose lake is a fresh folder; the catalog forgets tables of earlier tests."""
    from demandlake.config import load_config

    for db in ("bronze", "silver", "gold", "ops"):
        spark.sql(f"DROP DATABASE IF EXISTS `{db}` CASCADE")
    return load_config(overrides=[f"lake.uri={tmp_path / 'lake'}", "lake.catalog=in-memory"])


@pytest.fixture
def real_data() -> Path:
    if not REAL_DATA.exists():
        pytest.skip(f"real data not found at {REAL_DATA}")
    return REAL_DATA
