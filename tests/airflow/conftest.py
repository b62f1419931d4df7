"""Tests of the Airflow DAGs. Run them with the AIRFLOW venv's pytest, never the project's:

    AF=$(scripts/airflow_env.sh)
    DEMANDLAKE_PROJECT_VENV=<project venv> "$AF/bin/python" -m pytest tests/airflow

(``scripts/run_tests.sh`` does exactly that after the project's own suite, which ignores this
folder.) Airflow reads its configuration when first imported, so everything it needs is set here
at module level, before any test module imports it: a throw-away ``AIRFLOW_HOME`` (SQLite),
this repository's ``airflow_dags`` as the DAG folder, no examples, the ``spark_default``
Connection and the project's Variables as environment variables, and ``PATH``/``SPARK_HOME``
pointing at the PROJECT venv, whose ``spark-submit`` the DAGs call (this venv only has
``pyspark-client``: no ``spark-submit``, no jars), as a deployment's worker has it. No
``PYSPARK_PYTHON``: the jobs choose their workers' interpreter themselves.
"""
from __future__ import annotations

import glob
import importlib.metadata
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAGS_FOLDER = ROOT / "airflow_dags"
PROJECT_VENV = os.environ.get("DEMANDLAKE_PROJECT_VENV", "")

_AIRFLOW_HOME = tempfile.mkdtemp(prefix="demandlake-airflow-home-")


def _configure_airflow() -> None:
    """Everything Airflow reads at import: must run before the first ``import airflow``."""
    os.environ.update({
        "AIRFLOW_HOME": _AIRFLOW_HOME,
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # The URI form spark://local[2] does not parse; the JSON form does.
        "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps({"conn_type": "spark", "host": "local[2]"}),
        "AIRFLOW_VAR_DEMANDLAKE_PROJECT_DIR": str(ROOT),
        # Replaced by the `lake_variables` fixture; set here so that no render ever lacks it.
        "AIRFLOW_VAR_DEMANDLAKE_LAKE": str(Path(_AIRFLOW_HOME) / "lake"),
    })
    if PROJECT_VENV:
        venv = Path(PROJECT_VENV)
        pyspark = sorted(glob.glob(str(venv / "lib" / "python3*" / "site-packages" / "pyspark")))
        os.environ["PATH"] = f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
        for leftover in ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "VIRTUAL_ENV"):
            os.environ.pop(leftover, None)
        if pyspark:
            os.environ["SPARK_HOME"] = pyspark[-1]
        # Two cores shared by everything: keep TF/BLAS threads (score imports TF) to what they have.
        os.environ.setdefault("OMP_NUM_THREADS", "2")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _airflow_installed() -> bool:
    # Not importlib.util.find_spec("airflow"): under pytest this very folder would pass for a
    # namespace package of that name.
    try:
        importlib.metadata.distribution("apache-airflow-core")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


if _airflow_installed():
    _configure_airflow()
else:
    # Collected by the project venv's pytest (which has no Airflow): these belong to Airflow's.
    collect_ignore_glob = ["test_*.py"]


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_AIRFLOW_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def stage_graph():
    """The project's stage graph (``lib/demandlake/pipeline/graph.py``), loaded by path as the
    DAG file loads it: this venv has neither pyspark nor the package."""
    return _load_by_path(ROOT / "lib" / "demandlake" / "pipeline" / "graph.py",
                         "stage_graph_under_test")


def _load_by_path(path: Path, name: str):
    """A module of the project loaded from its file (this venv cannot import the package)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def airflow_db():
    """A fresh SQLite metadata database in the temporary AIRFLOW_HOME."""
    from airflow.utils import db

    db.initdb()
    return _AIRFLOW_HOME


@pytest.fixture(scope="session")
def dagbag():
    """Every DAG file in airflow_dags, parsed the way the DAG processor parses it."""
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_FOLDER))


@pytest.fixture(scope="session")
def project_venv() -> Path:
    """The project venv (pyspark, delta, the demandlake package) the DAGs' jobs run in."""
    if not PROJECT_VENV:
        message = "set DEMANDLAKE_PROJECT_VENV to the project venv (scripts/run_tests.sh does)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI runs everything: a missing venv is a broken run
        pytest.skip(message)
    venv = Path(PROJECT_VENV)
    if not (venv / "bin" / "spark-submit").exists():
        pytest.fail(f"no spark-submit in the project venv {venv}")
    return venv


def _run(cmd: list[str], **kw) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
    if proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


@pytest.fixture(scope="session")
def raw_sample(project_venv, tmp_path_factory) -> Path:
    """One raw sample for every way of running the chain: ONE date's delivery, 2026-11-01, of 30
    users, holding the whole day before too (late), with repeated lines, a conflicting event
    id, bad records, and Chinese and English reviews by users with events.

    It is ``demandlake generate --days 2 --faults`` from 2026-10-31 with the first day's file
    moved into the second day's folder: generated reviews come 1 to 10 days after a purchase, so
    a generated first day has none, and the planted faults (late events, repeats, a conflicting
    id, bad records, reviews of the day before's users) go into the days after the first. One
    date is enough for the nightly DAG to train the sentiment model, score the reviews and carry
    their sentiment into the features."""
    path = tmp_path_factory.mktemp("airflow-raw") / "raw"
    _run([str(project_venv / "bin" / "demandlake"), "--lake", str(path.parent / "unused"),
          "generate", "--out", str(path), "--users", "30", "--days", "2",
          "--start-date", "2026-10-31", "--workers", "1", "--faults"])
    for kind in ("events", "reviews"):
        before, day = path / kind / "dt=2026-10-31", path / kind / "dt=2026-11-01"
        if before.exists():
            for f in before.iterdir():
                f.rename(day / f"late-{f.name}")
            before.rmdir()
    assert sorted(p.name for p in (path / "events").iterdir()) == ["dt=2026-11-01"]
    assert any((path / "events" / "dt=2026-11-01").glob("late-*.jsonl"))
    return path


@pytest.fixture(scope="session")
def small_settings():
    """tests/helpers/settings.py: the Spark settings of every Spark the tests start, and the
    JVM options of their short-lived JVMs."""
    return _load_by_path(ROOT / "tests" / "helpers" / "settings.py", "small_spark_settings")


@pytest.fixture(scope="session")
def small_conf(tmp_path_factory, small_settings) -> Path:
    """The extra YAML every run here is given (the DAG as --conf-file): the Spark settings of
    every Spark the tests start (tests/helpers/settings.py), no Derby start-up, one epoch of
    deterministic training."""
    sets = dict(s.split("=", 1) for s in small_settings.SMALL_SPARK)
    conf = {k[len("spark.conf."):]: v for k, v in sets.items() if k.startswith("spark.conf.")}
    assert set(sets) - {f"spark.conf.{k}" for k in conf} == {"spark.master"}, sets
    path = tmp_path_factory.mktemp("airflow-conf") / "small.yaml"
    path.write_text(
        "lake:\n  catalog: in-memory\n"
        f"spark:\n  master: {json.dumps(sets['spark.master'])}\n  conf:\n"
        + "".join(f"    {k}: {json.dumps(v)}\n" for k, v in conf.items())
        + "training:\n  epochs: 1\n  deterministic: true\n  baselines: false\n"
        "sentiment_model:\n  max_length: 48\n"
    )
    return path


@pytest.fixture(scope="session")
def delta_jars(project_venv) -> str:
    """The Delta jars the bootstrap cached (offline), comma-separated; '' to use --packages."""
    code = "from demandlake.spark import cached_delta_jars; print(','.join(cached_delta_jars()))"
    out = _run([str(project_venv / "bin" / "python"), "-c", code])
    return out.strip().splitlines()[-1] if out.strip() else ""


@pytest.fixture
def lake_variables(monkeypatch, airflow_db, raw_sample, small_conf, delta_jars, tmp_path):
    """The DAGs' Variables for a new lake on the raw sample, as AIRFLOW_VAR_* (read when the
    templates render); returns the lake's path."""
    lake = tmp_path / "lake"
    monkeypatch.setenv("AIRFLOW_VAR_DEMANDLAKE_LAKE", str(lake))
    monkeypatch.setenv("AIRFLOW_VAR_DEMANDLAKE_RAW_DIR", str(raw_sample))
    monkeypatch.setenv("AIRFLOW_VAR_DEMANDLAKE_CONF_FILE", str(small_conf))
    if delta_jars:
        monkeypatch.setenv("AIRFLOW_VAR_DEMANDLAKE_SPARK_JARS", delta_jars)
    return lake
