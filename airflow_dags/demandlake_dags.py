"""
### demandlake's Airflow DAGs: `demandlake_nightly` and `demandlake_retrain`

Both DAGs are built from the project's one stage graph, `lib/demandlake/pipeline/graph.py`
(`NIGHTLY` and `RETRAIN`): one task per stage, in the graph's order, each the project's own
spark-submit job `<project>/jobs/<stage>.py` with the graph's options as flags. The CLI's
`demandlake nightly` runs the same graph, so the scheduled path computes what the CLI computes
(`tests/airflow/test_dags.py` compares every table). A stage takes what it needs from earlier
stages from the lake (for example `sessions` reads the dates `ingest` wrote to from `ops.runs`),
so a task retried or cleared alone computes the same as in the chain.

**Which date a run processes.**
- `demandlake_nightly` uses a *data-interval* timetable (`CronDataIntervalTimetable("0 0 * * *",
  UTC)`): the run whose data interval is `[D 00:00, D+1 00:00)` starts after midnight at the end
  of day D, has logical date D, and every task gets `--run-date {{ ds }}` = D. (Airflow 3's
  default for a plain `"@daily"` is a trigger timetable whose logical date is the *start* of the
  run, a day whose data has not arrived yet.) It first waits for the day's raw event partition.
- `demandlake_retrain` runs every Sunday at 06:00 UTC (`CronTriggerTimetable`): `{{ ds }}` is that
  Sunday, and the latest date the nightly DAG has finished is the day before. It waits for the
  nightly `score` task of Saturday (Sunday 06:00 - 30 h), retrains both models, redoes review
  sentiment, features and scoring of Saturday with whatever serves then, and compacts the tables.
  Whether a new version is promoted is decided in the library, not here.

**Reruns and backfills.** Every job is keyed by its run date (never the wall clock) and writes
idempotently (Delta MERGE / replaceWhere), so retries, clears and reruns are safe. The nightly
DAG's `catchup=True` with `max_active_runs=1` and `depends_on_past=True` makes catchup an in-order
backfill that stops at the first failed date. The stages run one after another, each reading what
the one before wrote. (The embedded default's catalog is shared: analysts' `serve-sql`,
`demandlake sql` and `spark-sql` query the lake while the DAG runs; see docs/OPERATIONS.md.)

**Settings** (nothing is hard-coded; see docs/OPERATIONS.md):

| Airflow object | use |
|---|---|
| Variable `demandlake_project_dir` | the checkout holding `jobs/` (required) |
| Variable `demandlake_lake` | lake URI passed as `--lake` (required) |
| Variable `demandlake_raw_dir` | raw landing zone (default `<lake>/raw`), watched by the sensor and passed as `--set lake.raw_uri=` |
| Variable `demandlake_conf_file` | extra YAML passed as `--conf-file` (optional) |
| Variable `demandlake_spark_jars` | comma-separated Delta jar paths for `--jars` (optional; else `--packages`) |
| Variable `demandlake_spark_packages` | Maven coordinates for `--packages` (default: the project's Delta) |
| Connection `spark_default` | Spark master (`{"conn_type": "spark", "host": "local[2]"}`, YARN, k8s...) |

The worker's `PATH` must find the project venv's `spark-submit` (the Airflow venv only has
`pyspark-client`); the jobs run their Python workers with the interpreter spark-submit starts
them with unless `spark.pyspark.python` or `PYSPARK_PYTHON` says otherwise.
"""
from __future__ import annotations

import datetime as dt
import importlib.util
import sys
from pathlib import Path

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.providers.standard.sensors.external_task import ExternalTaskSensor
from airflow.providers.standard.sensors.python import PythonSensor
from airflow.sdk import DAG, CronDataIntervalTimetable, CronTriggerTimetable


def _load_graph():
    """The project's stage graph. It imports only the standard library, so it loads here,
    in Airflow's environment, without pyspark or the package: from the checkout this file is
    in, or from an installed ``demandlake`` when the DAG file was deployed on its own."""
    path = Path(__file__).resolve().parents[1] / "lib" / "demandlake" / "pipeline" / "graph.py"
    if not path.exists():
        from demandlake.pipeline import graph

        return graph
    spec = importlib.util.spec_from_file_location("demandlake_stage_graph", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


graph = _load_graph()

# Jinja, rendered at run time (reading Variables at parse time would hit the metadata DB on every
# parse of this file: Airflow's best practices).
PROJECT_DIR = "{{ var.value.demandlake_project_dir }}"
LAKE = "{{ var.value.demandlake_lake }}"
RAW_DIR = "{{ var.value.get('demandlake_raw_dir', '') or var.value.demandlake_lake ~ '/raw' }}"
# An empty YAML layer when no extra config is wanted: the job's flags stay the same either way.
CONF_FILE = "{{ var.value.get('demandlake_conf_file', '') or '/dev/null' }}"
# spark-submit must put Delta on the driver's classpath at launch (a SparkSession built later
# cannot add it): either pre-fetched jars (offline) or Maven coordinates.
DELTA_PACKAGES = "io.delta:delta-spark_4.2_2.13:4.4.0"
JARS = "{{ var.value.get('demandlake_spark_jars', '') }}"
PACKAGES = ("{{ '' if var.value.get('demandlake_spark_jars', '') else "
            f"var.value.get('demandlake_spark_packages', '{DELTA_PACKAGES}') }}}}")
# The latest date the nightly DAG has processed when a retrain run starts (see above).
SATURDAY = "{{ macros.ds_add(ds, -1) }}"


def stage_job(stage, run_date: str) -> SparkSubmitOperator:
    """The spark-submit task of one stage of the graph, for ``run_date`` (a template)."""
    dated = ["--run-date", run_date] if stage.per_date else []
    return SparkSubmitOperator(
        task_id=stage.name,
        conn_id="spark_default",
        application=f"{PROJECT_DIR}/jobs/{stage.name}.py",
        name=f"demandlake-{stage.name}-{run_date}",
        jars=JARS,
        packages=PACKAGES,
        application_args=[*dated, "--lake", LAKE, "--conf-file", CONF_FILE,
                          "--set", f"lake.raw_uri={RAW_DIR}", *stage.job_flags()],
        doc_md=stage.does,
    )


def chain(first, stages, run_date: str) -> list:
    """``first`` then one task per stage, each after the one before."""
    tasks = [first, *(stage_job(s, run_date) for s in stages)]
    for upstream, downstream in zip(tasks, tasks[1:]):
        upstream >> downstream
    return tasks


def raw_partition_ready(path: str) -> bool:
    """Sensor check: the raw partition folder exists and holds at least one file.

    Args:
        path: a local path or ``file://`` URI (object stores need their provider's key sensor).

    Returns:
        True when the partition can be ingested.
    """
    import os

    if "://" in path and not path.startswith("file://"):
        raise ValueError(f"raw_partition_ready checks local folders only, not {path!r}")
    local = path[len("file://"):] if path.startswith("file://") else path
    return os.path.isdir(local) and any(entry.is_file() for entry in os.scandir(local))


with DAG(
    dag_id="demandlake_nightly",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc),
    catchup=True,
    max_active_runs=1,
    default_args={
        "owner": "demandlake",
        "depends_on_past": True,
        "retries": 2,
        "retry_delay": dt.timedelta(minutes=10),
        "execution_timeout": dt.timedelta(hours=3),
    },
    tags=["demandlake"],
    doc_md=__doc__,
) as nightly:
    wait_for_raw = PythonSensor(
        task_id="wait_for_raw",
        python_callable=raw_partition_ready,
        op_kwargs={"path": f"{RAW_DIR}/events/dt={{{{ ds }}}}"},
        mode="reschedule",
        poke_interval=dt.timedelta(minutes=5),
        timeout=dt.timedelta(hours=12),
        retries=0,
    )
    chain(wait_for_raw, graph.NIGHTLY, "{{ ds }}")

with DAG(
    dag_id="demandlake_retrain",
    schedule=CronTriggerTimetable("0 6 * * 0", timezone="UTC"),
    start_date=dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc),
    # Retraining for weeks long past would only be overwritten by the latest week's models.
    catchup=False,
    max_active_runs=1,
    default_args={
        "owner": "demandlake",
        "retries": 1,
        "retry_delay": dt.timedelta(minutes=30),
        "execution_timeout": dt.timedelta(hours=6),
    },
    tags=["demandlake"],
    doc_md=__doc__,
) as retrain:
    wait_for_nightly = ExternalTaskSensor(
        task_id="wait_for_nightly",
        external_dag_id="demandlake_nightly",
        external_task_id=graph.NIGHTLY[-1].name,
        execution_delta=dt.timedelta(hours=30),
        failed_states=["failed", "upstream_failed"],
        mode="reschedule",
        poke_interval=dt.timedelta(minutes=10),
        timeout=dt.timedelta(hours=12),
        retries=0,
    )
    chain(wait_for_nightly, graph.RETRAIN, SATURDAY)
