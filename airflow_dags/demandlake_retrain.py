"""
### demandlake weekly retrain

Every Sunday at 06:00 UTC: retrain the review-sentiment and the sequence model, then rescore the
latest date with whatever is serving afterwards, then compact the lake's Delta tables (OPTIMIZE).
Each step is the project's own spark-submit job: `jobs/train_sentiment.py`,
`jobs/train_sequence.py`, `jobs/score.py`, `jobs/maintain.py`. Whether a new version is
promoted to serving (only when better than the current one on the same validation split) is
decided in the library (`demandlake.training`), not here.

**Which date a run processes.** This DAG uses a trigger timetable
(`CronTriggerTimetable("0 6 * * 0", UTC)`): the run's logical date `{{ ds }}` is the Sunday it
starts on. The latest date the nightly DAG has finished by then is the day before, Saturday:
the run first waits (`wait_for_nightly`) for `demandlake_nightly`'s `score` task of that date
(logical date = Sunday 06:00 - 30 h = Saturday 00:00), then trains, then rescores
`--run-date {{ macros.ds_add(ds, -1) }}`. Training reads everything in the lake up to then;
its `--run-date` only labels the run in `ops.runs`.

The stages run one after the other (not the two trainings in parallel): on the embedded default
the Hive metastore is an embedded Derby database that only one Spark application can open.

**Settings**: the same Variables and Connection as `demandlake_nightly`
(`demandlake_project_dir`, `demandlake_lake`, `demandlake_raw_dir`, `demandlake_conf_file`,
`demandlake_spark_jars`, `demandlake_spark_packages`, `spark_default`; docs/OPERATIONS.md).
"""
from __future__ import annotations

import datetime as dt

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.providers.standard.sensors.external_task import ExternalTaskSensor
from airflow.sdk import DAG, CronTriggerTimetable

# Rendered at run time; the same templates as demandlake_nightly.py (tests/airflow compares the
# rendered flags of both DAGs).
PROJECT_DIR = "{{ var.value.demandlake_project_dir }}"
LAKE = "{{ var.value.demandlake_lake }}"
RAW_DIR = "{{ var.value.get('demandlake_raw_dir', '') or var.value.demandlake_lake ~ '/raw' }}"
CONF_FILE = "{{ var.value.get('demandlake_conf_file', '') or '/dev/null' }}"
DELTA_PACKAGES = "io.delta:delta-spark_4.2_2.13:4.4.0"
JARS = "{{ var.value.get('demandlake_spark_jars', '') }}"
PACKAGES = ("{{ '' if var.value.get('demandlake_spark_jars', '') else "
            f"var.value.get('demandlake_spark_packages', '{DELTA_PACKAGES}') }}}}")
# The latest date the nightly DAG has processed when this run starts (see the doc above).
LATEST_DATE = "{{ macros.ds_add(ds, -1) }}"
STAGES = ("train_sentiment", "train_sequence", "score")


def stage_job(stage: str) -> SparkSubmitOperator:
    """The spark-submit task of one stage, for the latest processed date."""
    return SparkSubmitOperator(
        task_id=stage,
        conn_id="spark_default",
        application=f"{PROJECT_DIR}/jobs/{stage}.py",
        name=f"demandlake-{stage}-{LATEST_DATE}",
        jars=JARS,
        packages=PACKAGES,
        application_args=[
            "--run-date", LATEST_DATE,
            "--lake", LAKE,
            "--conf-file", CONF_FILE,
            "--set", f"lake.raw_uri={RAW_DIR}",
        ],
    )


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
) as dag:
    wait_for_nightly = ExternalTaskSensor(
        task_id="wait_for_nightly",
        external_dag_id="demandlake_nightly",
        external_task_id="score",
        execution_delta=dt.timedelta(hours=30),
        failed_states=["failed", "upstream_failed"],
        mode="reschedule",
        poke_interval=dt.timedelta(minutes=10),
        timeout=dt.timedelta(hours=12),
        retries=0,
    )

    jobs = [stage_job(stage) for stage in STAGES]
    # Weekly Delta housekeeping once the week's writes are done: OPTIMIZE compacts the small
    # files the nightly MERGEs leave (docs/BENCHMARKS.md). No VACUUM here: time travel stays.
    maintain = SparkSubmitOperator(
        task_id="maintain",
        conn_id="spark_default",
        application=f"{PROJECT_DIR}/jobs/maintain.py",
        name=f"demandlake-maintain-{LATEST_DATE}",
        jars=JARS,
        packages=PACKAGES,
        application_args=["--lake", LAKE, "--conf-file", CONF_FILE,
                          "--set", f"lake.raw_uri={RAW_DIR}"],
    )
    chain = [wait_for_nightly, *jobs, maintain]
    for upstream, downstream in zip(chain, chain[1:]):
        upstream >> downstream
