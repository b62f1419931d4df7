"""One session-scoped Spark (local[2], UI off, few shuffle partitions, Delta) shared by every test.

Each test that writes tables gets its own lake under ``tmp_path`` through the ``cfg`` fixture, which
also clears the (in-memory) catalog so table names point at that lake. ``scored_lake`` is the one
tiny scored lake (tests/helpers/scored_lake.py) that the scoring and query tests read, built once.

Under ``CI=true`` nothing skips: a test or module that would skip fails instead, with the skip's
reason (missing real data, a missing Horovod build, ...). The one exception is a test marked
``skip_allowed_in_ci`` (the browser check, where no Chromium can be installed).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = ROOT.parent / "shared" / "data" / "real"
IN_CI = os.environ.get("CI", "").strip().lower() == "true"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from demandlake.config import load_config
    from demandlake.spark import get_spark
    from helpers.settings import SMALL_SPARK

    base = tmp_path_factory.mktemp("spark")
    cfg = load_config(overrides=[
        f"lake.uri={base / 'lake0'}",
        "lake.catalog=in-memory",
        *SMALL_SPARK,
        f"spark.conf.spark.sql.warehouse.dir={base / 'warehouse'}",
    ])
    session = get_spark(cfg, app_name="demandlake-tests")
    yield session
    session.stop()


@pytest.fixture
def cfg(spark, tmp_path):
    """A config whose lake is a fresh folder; the catalog forgets tables of earlier tests."""
    from helpers.catalog import fresh_lake

    return fresh_lake(spark, tmp_path / "lake")


@pytest.fixture(scope="session")
def scored_lake(spark, tmp_path_factory):
    """The tiny scored lake of tests/helpers/scored_lake.py (a few minutes to build, once).

    Read it, do not write to it: the scoring and query tests all see the same tables. A module
    that reads its tables by name registers them again first (``scored_lake.reset_catalog``),
    since every ``cfg`` fixture clears the catalog.
    """
    from helpers import scored_lake

    return scored_lake.build(spark, tmp_path_factory.mktemp("scored_lake"))


@pytest.fixture
def real_data() -> Path:
    """The public samples beside the clone (their SOURCES.md says where each comes from).

    A machine without them skips the ``real`` tests; CI must have them, so there it fails.
    """
    if not REAL_DATA.exists():
        if IN_CI:
            pytest.fail(f"CI=true, and the real data is not at {REAL_DATA}: CI must provide it "
                        "(the `real` tests run on it)", pytrace=False)
        pytest.skip(f"real data not found at {REAL_DATA}")
    return REAL_DATA


def _skip_reason(longrepr) -> str:
    """The reason of a skip report (pytest keeps it as (path, line, "Skipped: reason"))."""
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def _skips_allowed(item) -> bool:
    return item is not None and item.get_closest_marker("skip_allowed_in_ci") is not None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI=true a skipped test fails (with the skip's reason) unless marked
    ``skip_allowed_in_ci``: a missing input or build must not pass as green."""
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail") and not _skips_allowed(item):
        report.outcome = "failed"
        report.longrepr = (f"CI=true, and skipped tests fail in CI: "
                           f"{_skip_reason(report.longrepr)}")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """Under CI=true a module that skips itself (``pytest.importorskip`` or ``pytest.skip`` at
    import) is a collection error, with the skip's reason."""
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped:
        report.outcome = "failed"
        report.longrepr = (f"CI=true, and skipped modules fail in CI: {collector.nodeid}: "
                           f"{_skip_reason(report.longrepr)}")
