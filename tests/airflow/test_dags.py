"""The DAGs load, have the designed shape, and the nightly one really runs (and really fails).

The end-to-end run calls the project's spark-submit jobs on a tiny generated lake, as
`dag.test()`: the sensor, ingest, sessions and features run for real; `score` is marked
successful by `dag.test(mark_success_pattern=...)` unless DEMANDLAKE_AIRFLOW_FULL=1, because it
loads TensorFlow and fits ALS and KMeans (minutes on two shared cores) and, with no trained model,
would only exercise its fallback path. `scripts/run_tests.sh` keeps this part to a few minutes.
"""
from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path

import pytest

DAGS_FOLDER = Path(__file__).resolve().parents[2] / "airflow_dags"
NIGHTLY = "demandlake_nightly"
RETRAIN = "demandlake_retrain"
RUN_DATE = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
HEAVY_MODULES = ("pyspark", "tensorflow", "mlflow", "demandlake", "pandas")


def _edges(dag) -> set[tuple[str, str]]:
    return {(t.task_id, d) for t in dag.tasks for d in t.downstream_task_ids}


def test_every_dag_file_loads_without_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == {NIGHTLY, RETRAIN}
    files = {Path(dagbag.dags[d].fileloc).name for d in dagbag.dag_ids}
    assert files == {p.name for p in DAGS_FOLDER.glob("*.py")}


def test_dag_files_import_nothing_heavy_at_module_level(dagbag):
    # The DAG processor parses these files every few seconds: no Spark/TF/pandas there.
    loaded = {m.split(".")[0] for m in sys.modules}
    assert not loaded & set(HEAVY_MODULES), loaded & set(HEAVY_MODULES)


def test_dags_document_themselves_with_their_module_docstring(dagbag):
    for dag_id in (NIGHTLY, RETRAIN):
        dag = dagbag.dags[dag_id]
        assert dag.doc_md and "Which date a run processes" in dag.doc_md, dag_id


def test_nightly_chains_sensor_then_one_spark_job_per_stage(dagbag):
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
    from airflow.providers.standard.sensors.python import PythonSensor

    dag = dagbag.dags[NIGHTLY]
    assert set(dag.task_ids) == {"wait_for_raw", "ingest", "sessions", "features", "score"}
    assert _edges(dag) == {("wait_for_raw", "ingest"), ("ingest", "sessions"),
                           ("sessions", "features"), ("features", "score")}
    sensor = dag.get_task("wait_for_raw")
    assert isinstance(sensor, PythonSensor)
    assert sensor.mode == "reschedule" and 0 < sensor.timeout <= 24 * 3600
    assert sensor.op_kwargs["path"].endswith("/events/dt={{ ds }}")
    for stage in ("ingest", "sessions", "features", "score"):
        task = dag.get_task(stage)
        assert isinstance(task, SparkSubmitOperator)
        assert task.application == "{{ var.value.demandlake_project_dir }}" + f"/jobs/{stage}.py"
        args = task.application_args
        assert args[args.index("--run-date") + 1] == "{{ ds }}"
        assert args[args.index("--lake") + 1] == "{{ var.value.demandlake_lake }}"
        assert task.retries >= 1 and task.retry_delay > dt.timedelta(0)
        assert task.depends_on_past


def test_nightly_schedule_is_daily_data_intervals_with_in_order_catchup(dagbag):
    from airflow.sdk import CronDataIntervalTimetable

    dag = dagbag.dags[NIGHTLY]
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert dag.timetable.expression == "0 0 * * *"
    assert dag.catchup is True and dag.max_active_runs == 1


def test_retrain_trains_both_models_then_rescores(dagbag):
    from airflow.providers.standard.sensors.external_task import ExternalTaskSensor
    from airflow.sdk import CronTriggerTimetable

    dag = dagbag.dags[RETRAIN]
    assert set(dag.task_ids) == {"wait_for_nightly", "train_sentiment", "train_sequence", "score",
                                 "maintain"}
    assert _edges(dag) == {("wait_for_nightly", "train_sentiment"),
                           ("train_sentiment", "train_sequence"), ("train_sequence", "score"),
                           ("score", "maintain")}
    maintain = dag.get_task("maintain")
    assert maintain.application.endswith("/jobs/maintain.py")
    assert "--run-date" not in maintain.application_args  # the job maintains whole tables
    assert isinstance(dag.timetable, CronTriggerTimetable)
    assert dag.timetable.expression == "0 6 * * 0"
    assert dag.catchup is False and dag.max_active_runs == 1
    wait = dag.get_task("wait_for_nightly")
    assert isinstance(wait, ExternalTaskSensor)
    assert (wait.external_dag_id, wait.external_task_id) == (NIGHTLY, "score")
    # Sunday 06:00 (this run) - 30 h = Saturday 00:00: the nightly run that processed Saturday.
    sunday = dt.datetime(2026, 11, 8, 6, tzinfo=dt.timezone.utc)
    assert sunday - wait.execution_delta == dt.datetime(2026, 11, 7, tzinfo=dt.timezone.utc)
    for stage in ("train_sentiment", "train_sequence", "score"):
        task = dag.get_task(stage)
        assert task.application.endswith(f"/jobs/{stage}.py")
        assert task.retries >= 1


def test_both_dags_pass_the_same_lake_flags(dagbag):
    nightly = dagbag.dags[NIGHTLY].get_task("score")
    retrain = dagbag.dags[RETRAIN].get_task("score")
    for flag in ("--lake", "--conf-file", "--set"):
        assert (nightly.application_args[nightly.application_args.index(flag) + 1]
                == retrain.application_args[retrain.application_args.index(flag) + 1]), flag
    assert (nightly.jars, nightly.packages) == (retrain.jars, retrain.packages)


class _Variables:
    """Stands in for the `var.value` accessor of a task's template context."""

    def __init__(self, values: dict[str, str]):
        self._values = values

    def __getattr__(self, key: str) -> str:
        return self._values[key]

    def get(self, key: str, default=None):
        return self._values.get(key, default)


def _render(dag, task_id: str, ds: str, variables: dict[str, str]) -> dict[str, object]:
    """The spark-submit fields of a task rendered with the DAG's own Jinja environment."""
    from airflow.sdk.execution_time import macros

    env = dag.get_template_env()
    context = {"ds": ds, "macros": macros, "var": {"value": _Variables(variables)}}
    task = dag.get_task(task_id)
    render = lambda text: env.from_string(text).render(**context)  # noqa: E731
    return {"application": render(task.application), "jars": render(task.jars),
            "packages": render(task.packages),
            "args": [render(a) for a in task.application_args]}


def test_job_flags_render_from_the_variables_with_their_defaults(dagbag):
    required = {"demandlake_project_dir": "/srv/demandlake", "demandlake_lake": "/data/lake"}
    got = _render(dagbag.dags[NIGHTLY], "ingest", "2026-11-01", required)
    assert got["application"] == "/srv/demandlake/jobs/ingest.py"
    assert got["args"] == ["--run-date", "2026-11-01", "--lake", "/data/lake",
                           "--conf-file", "/dev/null", "--set", "lake.raw_uri=/data/lake/raw"]
    assert (got["jars"], got["packages"]) == ("", "io.delta:delta-spark_4.2_2.13:4.4.0")

    custom = {**required, "demandlake_raw_dir": "/landing", "demandlake_conf_file": "/etc/dl.yaml",
              "demandlake_spark_jars": "/j/delta.jar,/j/storage.jar"}
    got = _render(dagbag.dags[NIGHTLY], "ingest", "2026-11-01", custom)
    assert got["args"][4:] == ["--conf-file", "/etc/dl.yaml", "--set", "lake.raw_uri=/landing"]
    assert (got["jars"], got["packages"]) == ("/j/delta.jar,/j/storage.jar", "")


def test_retrain_rescores_the_day_before_its_sunday(dagbag):
    required = {"demandlake_project_dir": "/srv/demandlake", "demandlake_lake": "/data/lake"}
    got = _render(dagbag.dags[RETRAIN], "score", "2026-11-08", required)
    assert got["application"] == "/srv/demandlake/jobs/score.py"
    assert got["args"][:4] == ["--run-date", "2026-11-07", "--lake", "/data/lake"]


def test_raw_sensor_waits_for_a_partition_with_files(dagbag, tmp_path):
    check = dagbag.dags[NIGHTLY].get_task("wait_for_raw").python_callable
    part = tmp_path / "events" / "dt=2026-11-01"
    assert check(str(part)) is False
    part.mkdir(parents=True)
    assert check(str(part)) is False
    (part / "part-0.jsonl").write_text("{}\n")
    assert check(str(part)) is True
    assert check(f"file://{part}") is True
    with pytest.raises(ValueError):
        check("s3a://bucket/raw/events/dt=2026-11-01")


def _task_states(dr) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}


def _rendered_args(dr, task_id: str) -> list[str]:
    from airflow.models.renderedtifields import RenderedTaskInstanceFields

    ti = next(ti for ti in dr.get_task_instances() if ti.task_id == task_id)
    return RenderedTaskInstanceFields.get_templated_fields(ti)["application_args"]


def test_nightly_run_for_a_date_ingests_sessions_and_features_that_date(dagbag, lake_variables):
    lake = lake_variables
    dag = dagbag.dags[NIGHTLY]
    full = os.environ.get("DEMANDLAKE_AIRFLOW_FULL") == "1"
    dr = dag.test(logical_date=RUN_DATE, mark_success_pattern=None if full else "score")

    assert str(dr.state) == "success", _task_states(dr)
    assert set(_task_states(dr).values()) == {"success"}
    args = _rendered_args(dr, "ingest")
    assert args[:4] == ["--run-date", "2026-11-01", "--lake", str(lake)]
    assert f"lake.raw_uri={lake}/raw" in args
    # What the jobs wrote: Delta tables, and the run log says each stage ran for that date.
    for table in ("bronze/events", "silver/sessions", "gold/user_features", "ops/runs"):
        assert (lake / table / "_delta_log").is_dir(), table
    assert any((lake / "bronze" / "events").glob("event_date=2026-11-01"))
    assert any((lake / "gold" / "user_features").glob("snapshot_date=2026-11-01"))
    assert not any((lake / "bronze" / "events").glob("event_date=2026-11-02")), \
        "the run must process its own date only"


def test_a_broken_job_fails_the_nightly_run(dagbag, lake_variables, monkeypatch, tmp_path):
    broken = tmp_path / "broken-project"
    (broken / "jobs").mkdir(parents=True)
    (broken / "jobs" / "ingest.py").write_text(
        "import sys\nprint('ingest: broken on purpose', file=sys.stderr)\nsys.exit(3)\n")
    monkeypatch.setenv("AIRFLOW_VAR_DEMANDLAKE_PROJECT_DIR", str(broken))
    dag = dagbag.dags[NIGHTLY]
    # Fail at once instead of waiting for the production retry delay.
    for task in dag.tasks:
        monkeypatch.setattr(task, "retries", 0)

    dr = dag.test(logical_date=RUN_DATE)

    states = _task_states(dr)
    assert str(dr.state) == "failed", states
    assert states["wait_for_raw"] == "success"
    assert states["ingest"] == "failed"
    assert {states[t] for t in ("sessions", "features", "score")} == {"upstream_failed"}
