"""The DAGs load, are the project's stage graph, and the nightly one really runs (and fails).

The end-to-end test runs the same raw sample (late events, repeats, bad records, Chinese and
English reviews) three ways: the nightly DAG for real (``dag.test``, every task, training and
scoring included, nothing marked successful), the spark-submit jobs in the DAG's order, and
``demandlake nightly``, on one date; every bronze, silver and gold table must then hold the same rows
(run ids left out).
"""
from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAGS_FOLDER = ROOT / "airflow_dags"
NIGHTLY = "demandlake_nightly"
RETRAIN = "demandlake_retrain"
# One date: the raw sample (conftest.raw_sample) is a lake's first day with the tail of the day
# before arriving late, and with enough reviews for the sentiment model to get training AND
# validation rows, so that the DAG trains it, scores review sentiment and features see it, all in
# one run. (A second date only added a run in which both trainings skipped: 7 more spark-submits,
# about half this test's CPU; dates run one after another on one lake are the CLI chain's tests,
# which call the same stage functions as the jobs.)
DATES = [dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)]
HEAVY_MODULES = ("pyspark", "tensorflow", "mlflow", "demandlake", "pandas")


def _spark_jobs_in_order(dag) -> list[str]:
    """The DAG's spark-submit tasks, following the edges from its first task."""
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    task = next(t for t in dag.tasks if not t.upstream_task_ids)
    order = []
    while True:
        if isinstance(task, SparkSubmitOperator):
            order.append(task.task_id)
        nxt = sorted(task.downstream_task_ids)
        if not nxt:
            return order
        assert len(nxt) == 1, f"{task.task_id} fans out to {nxt}: the chain must be linear"
        task = dag.get_task(nxt[0])


def test_every_dag_file_loads_without_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == {NIGHTLY, RETRAIN}


def test_dag_files_import_nothing_heavy_at_module_level(dagbag):
    # The DAG processor parses these files every few seconds: no Spark/TF/pandas there.
    loaded = {m.split(".")[0] for m in sys.modules}
    assert not loaded & set(HEAVY_MODULES), loaded & set(HEAVY_MODULES)


@pytest.mark.parametrize("dag_id, graph_name", [(NIGHTLY, "NIGHTLY"), (RETRAIN, "RETRAIN")])
def test_each_dag_runs_its_graphs_stages_in_order_as_existing_jobs(dagbag, stage_graph, dag_id,
                                                                    graph_name):
    stages = getattr(stage_graph, graph_name)
    dag = dagbag.dags[dag_id]
    assert _spark_jobs_in_order(dag) == [s.name for s in stages]
    for s in stages:
        task = dag.get_task(s.name)
        job = task.application.replace("{{ var.value.demandlake_project_dir }}", str(ROOT))
        assert Path(job).is_file(), f"{dag_id}.{s.name} calls a job that does not exist: {job}"
        args = task.application_args
        assert ("--run-date" in args) == s.per_date
        assert all(flag in args for flag in s.job_flags()), (s.name, args)
        assert task.retries >= 1


def test_nightly_trains_only_when_no_model_serves_and_retrain_always_trains(dagbag):
    nightly, retrain = dagbag.dags[NIGHTLY], dagbag.dags[RETRAIN]
    for model in ("sentiment", "sequence"):
        assert "--if-none-serving" in nightly.get_task(f"train_{model}").application_args
        assert "--if-none-serving" not in retrain.get_task(f"train_{model}").application_args


def test_nightly_schedule_is_daily_data_intervals_with_in_order_catchup(dagbag):
    from airflow.sdk import CronDataIntervalTimetable

    dag = dagbag.dags[NIGHTLY]
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert dag.timetable.expression == "0 0 * * *"
    assert dag.catchup is True and dag.max_active_runs == 1
    assert all(t.depends_on_past for t in dag.tasks if t.task_id != "wait_for_raw")


def test_retrain_waits_for_saturdays_nightly_and_rescores_saturday(dagbag):
    from airflow.providers.standard.sensors.external_task import ExternalTaskSensor

    dag = dagbag.dags[RETRAIN]
    wait = dag.get_task("wait_for_nightly")
    assert isinstance(wait, ExternalTaskSensor)
    assert (wait.external_dag_id, wait.external_task_id) == (NIGHTLY, "score")
    # Sunday 06:00 (this run) - 30 h = Saturday 00:00: the nightly run that processed Saturday.
    sunday = dt.datetime(2026, 11, 8, 6, tzinfo=dt.timezone.utc)
    assert sunday - wait.execution_delta == dt.datetime(2026, 11, 7, tzinfo=dt.timezone.utc)
    required = {"demandlake_project_dir": "/srv/demandlake", "demandlake_lake": "/data/lake"}
    got = _render(dag, "score", "2026-11-08", required)
    assert got["application"] == "/srv/demandlake/jobs/score.py"
    assert got["args"][:4] == ["--run-date", "2026-11-07", "--lake", "/data/lake"]


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


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{proc.stderr[-6000:]}"


def _snapshots(project_venv: Path, conf: Path, lakes: dict[str, Path], folder: Path
               ) -> dict[str, dict[str, list[str]]]:
    """Each lake's ``faults`` snapshot (every bronze/silver/gold row), all in one new JVM."""
    cmd = [str(project_venv / "bin" / "python"), "-m", "demandlake.faults", "--conf-file",
           str(conf)]
    for name, lake in lakes.items():
        cmd += ["--snapshot-of", str(lake), "--snapshot-to", str(folder / f"{name}.json")]
    _run(cmd)
    return {name: json.loads((folder / f"{name}.json").read_text()) for name in lakes}


def test_the_nightly_dag_the_jobs_and_the_cli_leave_identical_tables(
        dagbag, stage_graph, lake_variables, raw_sample, small_conf, small_settings, project_venv,
        monkeypatch, tmp_path):
    """The three ways of issue 19 on one raw sample and date: the nightly DAG
    run for real (``dag.test``: every task runs, none is marked done), the spark-submit jobs in
    the DAG's order, and ``demandlake nightly``; every bronze/silver/gold table must be identical.

    The jobs way is what the DAG's tasks run: each task is a SparkSubmitOperator that runs
    ``spark-submit jobs/<stage>.py``. So the spark-submit commands that Airflow actually executed
    are recorded (the hook's own command builder, wrapped) and must be, date by date, exactly the
    graph's stages in order, each as a user would type it (``--run-date D --lake L --conf-file C
    --set lake.raw_uri=R`` and the stage's ``job_flags()``); their lake is the jobs' lake. Running
    the same commands a second time by hand only repeated them (it was a third of this test's
    time, on two cores); a job run by hand from a plain shell is test_spark_submit's."""
    from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

    executed: list[list[str]] = []
    build = SparkSubmitHook._build_spark_submit_command

    def recorded(self, application: str) -> list[str]:
        cmd = build(self, application)
        executed.append(list(cmd))
        return cmd

    monkeypatch.setattr(SparkSubmitHook, "_build_spark_submit_command", recorded)
    # Every JVM of this test (the DAG's spark-submit jobs, the CLI's nightly, the snapshots)
    # lives for one small stage or chain: tests/helpers/settings.py's options for such JVMs.
    monkeypatch.setenv("SPARK_SUBMIT_OPTS", small_settings.SHORT_JVM_OPTIONS)

    # The CLI's nightly on its own lake, in a separate process beside the DAG
    # (no shared port or file): the two chains mostly wait on Spark's per-job latency.
    cli_lake = tmp_path / "cli-lake"

    def cli_way() -> None:
        for when in DATES:
            _run([str(project_venv / "bin" / "demandlake"), "--lake", str(cli_lake),
                  "--conf-file", str(small_conf), "--set", f"lake.raw_uri={raw_sample}",
                  "nightly", "--run-date", f"{when:%Y-%m-%d}"])

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        cli = pool.submit(cli_way)
        # The nightly DAG, for real: every task runs, for each date in order.
        dag = dagbag.dags[NIGHTLY]
        for when in DATES:
            dr = dag.test(logical_date=when)
            assert str(dr.state) == "success", _task_states(dr)
            assert set(_task_states(dr).values()) == {"success"}, _task_states(dr)
        cli.result()

    # What Airflow ran is the jobs, in the DAG's order, with the flags a user gives them.
    common = ["--lake", str(lake_variables), "--conf-file", str(small_conf),
              "--set", f"lake.raw_uri={raw_sample}"]
    want = [(str(ROOT / "jobs" / f"{s.name}.py"),
             ["--run-date", f"{when:%Y-%m-%d}", *common, *s.job_flags()])
            for when in DATES for s in stage_graph.NIGHTLY]
    got = []
    for cmd in executed:
        assert Path(cmd[0]).name == "spark-submit", cmd
        assert cmd[cmd.index("--master") + 1] == "local[2]", cmd
        app = next(i for i, arg in enumerate(cmd) if arg.endswith(".py"))
        got.append((cmd[app], cmd[app + 1:]))
    assert got == want

    # The DAG's (= the jobs') lake against the CLI's.
    snaps = _snapshots(project_venv, small_conf, {"dag": lake_variables, "cli": cli_lake},
                       tmp_path)
    dag_snap, reference = snaps["dag"], snaps["cli"]
    filled = {name for name, rows in reference.items() if rows}
    # The sample exercises every stage: late and bad records, reviews, models, scores.
    assert {"bronze.events", "bronze.reviews", "bronze.quarantine", "silver.sessions",
            "gold.user_features", "gold.review_sentiment", "gold.item_sentiment",
            "gold.demand_forecasts", "gold.user_profiles", "gold.recommendations"} <= filled
    assert any('"mean_review_sentiment":' in row for row in reference["gold.user_features"])
    for name in sorted(set(reference) | set(dag_snap)):
        rows, cli_rows = dag_snap.get(name, []), reference.get(name, [])
        assert rows == cli_rows, (f"the DAG's jobs: {name} differs from the CLI's: "
                                  f"{len(set(rows) - set(cli_rows))} rows only there, "
                                  f"{len(set(cli_rows) - set(rows))} only in the CLI's; e.g. "
                                  f"{sorted(set(rows) ^ set(cli_rows))[:2]}")


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

    dr = dag.test(logical_date=DATES[0])

    states = _task_states(dr)
    assert str(dr.state) == "failed", states
    assert states["wait_for_raw"] == "success"
    assert states["ingest"] == "failed"
    assert {states[t] for t in states if t not in ("wait_for_raw", "ingest")} == {"upstream_failed"}
