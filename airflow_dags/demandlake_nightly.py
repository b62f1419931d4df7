"""
### demandlake nightly

One run per calendar day (UTC): wait for the day's raw event partition, then
`ingest -> sessions -> features -> score`, each the project's own spark-submit job
(`<project>/jobs/<stage>.py`), so the DAG only orchestrates.

**Which date a run processes.** The schedule is a *data-interval* timetable
(`CronDataIntervalTimetable("0 0 * * *", UTC)`): the run whose data interval is
`[D 00:00, D+1 00:00)` starts after midnight at the end of day D, has logical date D, and every
task is called with `--run-date {{ ds }}` = D. (Airflow 3's default for a plain `"@daily"` would
be a trigger timetable whose logical date is the *start* of the run, i.e. a day whose data has not
arrived yet; the data-interval timetable keeps Airflow 2's "ds = the day being processed".)

**Reruns and backfills.** Every job is keyed by `{{ ds }}` only (never the wall clock) and
writes idempotently (Delta MERGE / replaceWhere), so retries, clears and reruns are safe.
`catchup=True` with `max_active_runs=1` and `depends_on_past=True` turns catchup into an in-order
backfill that stops at the first failed date; `airflow dags backfill` does the same on demand.

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

The worker's `PATH` must find the project venv's `spark-submit`, and `PYSPARK_PYTHON` must be the
project venv's python (the Airflow venv only has `pyspark-client`).
"""
from __future__ import annotations

import datetime as dt

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.providers.standard.sensors.python import PythonSensor
from airflow.sdk import DAG, CronDataIntervalTimetable

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
STAGES = ("ingest", "sessions", "features", "score")


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


def stage_job(stage: str) -> SparkSubmitOperator:
    """The spark-submit task of one pipeline stage for the run's date."""
    return SparkSubmitOperator(
        task_id=stage,
        conn_id="spark_default",
        application=f"{PROJECT_DIR}/jobs/{stage}.py",
        name=f"demandlake-{stage}-{{{{ ds }}}}",
        jars=JARS,
        packages=PACKAGES,
        application_args=[
            "--run-date", "{{ ds }}",
            "--lake", LAKE,
            "--conf-file", CONF_FILE,
            "--set", f"lake.raw_uri={RAW_DIR}",
        ],
    )


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
) as dag:
    wait_for_raw = PythonSensor(
        task_id="wait_for_raw",
        python_callable=raw_partition_ready,
        op_kwargs={"path": f"{RAW_DIR}/events/dt={{{{ ds }}}}"},
        mode="reschedule",
        poke_interval=dt.timedelta(minutes=5),
        timeout=dt.timedelta(hours=12),
        retries=0,
    )

    jobs = [stage_job(stage) for stage in STAGES]
    wait_for_raw >> jobs[0]
    for upstream, downstream in zip(jobs, jobs[1:]):
        upstream >> downstream
