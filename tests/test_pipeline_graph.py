"""One stage graph behind every entry point: what a stage run alone reads, what it records, how a
failure reads."""
from __future__ import annotations

import datetime as dt
import json
import logging
import re
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from demandlake import cli, jobs, lake
from demandlake.pipeline import graph
from demandlake.pipeline.stages import run_stage, touched_dates
from helpers.catalog import forget_catalog

ROOT = Path(__file__).resolve().parents[1]
D1, D3 = dt.date(2026, 11, 1), dt.date(2026, 11, 3)


def test_every_stage_has_a_job_file_and_a_command_that_run_it():
    for name in graph.stage_names():
        job = ROOT / "jobs" / f"{name}.py"
        assert job.is_file(), f"no spark-submit shell for stage {name}"
        if name != "maintain":  # maintain is whole-table housekeeping: its job wraps the CLI's
            assert f'run_job("{name}")' in job.read_text(), job
        assert name in cli.COMMANDS


def test_the_nightly_graph_feeds_review_sentiment_to_features_and_trains_first():
    names = [s.name for s in graph.NIGHTLY]
    assert names.index("review_sentiment") < names.index("features") < names.index("score")
    assert names.index("train_sentiment") < names.index("review_sentiment")
    assert names.index("train_sequence") < names.index("score")
    assert all(s.options == {"if_none_serving": True} for s in graph.NIGHTLY
               if s.name.startswith("train_"))


def _events_file(path: Path, rows: list[tuple[str, str, str]]) -> None:
    """One JSON-lines file of view events: (event id, user, ISO timestamp)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({
        "event_id": eid, "user_id": user, "event_type": "view", "item_id": "i1",
        "category": "books", "price": 3.0, "timestamp": ts}) + "\n" for eid, user, ts in rows))


def test_a_sessions_job_run_alone_resessionizes_the_late_dates_its_ingest_wrote(spark, cfg,
                                                                               tmp_path):
    raw = tmp_path / "raw"
    cfg = cfg.with_overrides({"lake.raw_uri": str(raw)})
    _events_file(raw / "events" / "dt=2026-11-01" / "a.jsonl",
                 [("e1", "late", "2026-11-01T10:00:00Z"), ("e2", "other", "2026-11-01T11:00:00Z")])
    # Two days later, one more event of `late`'s first session arrives; `late` has nothing on
    # 2026-11-03, so only the dates that ingest wrote to tell that its session changed.
    _events_file(raw / "events" / "dt=2026-11-03" / "b.jsonl",
                 [("e3", "late", "2026-11-01T10:05:00Z"), ("e4", "other", "2026-11-03T09:00:00Z")])
    for d in (D1, D3):
        run_stage(spark, cfg, "ingest", d)
        if d == D1:
            run_stage(spark, cfg, "sessions", d)
    assert touched_dates(spark, cfg, D3) == [D1, D3]

    # The spark-submit job, as Airflow starts it: the run date and the lake, nothing else.
    assert jobs.run_job("sessions", ["--run-date", D3.isoformat(), "--lake", cfg.lake_uri,
                                     "--set", "lake.catalog=in-memory"]) == 0

    sessions = lake.read(spark, cfg, "silver.sessions")
    late = sessions.where(F.col("user_id") == "late").select("n_events").collect()
    assert [r["n_events"] for r in late] == [2]
    assert sessions.agg(F.sum("n_events")).first()[0] == lake.read(spark, cfg, "bronze.events").count()


def test_a_failed_job_logs_its_whole_traceback_at_error_for_the_task_log(spark, cfg, caplog):
    caplog.set_level(logging.INFO)
    rc = jobs.run_job("score", ["--run-date", "2026-11-01", "--lake", cfg.lake_uri,
                                "--set", "lake.catalog=in-memory"])
    assert rc == 1
    failures = [r for r in caplog.records if r.levelno == logging.ERROR and r.exc_info]
    assert failures, [r.getMessage() for r in caplog.records]
    trace = logging.Formatter().formatException(failures[-1].exc_info)
    assert "Traceback" in trace and "no active user" in trace


def test_a_failed_command_prints_one_line_and_keeps_the_traceback_in_the_log_file(spark, cfg,
                                                                                 capsys):
    rc = cli.main(["--lake", cfg.lake_uri, "--set", "lake.catalog=in-memory", "score",
                   "--run-date", "2026-11-01"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "Traceback" not in err
    assert re.search(r"^demandlake score: failed: RuntimeError: .*no active user", err, re.M), err
    log_file = Path(re.search(r"\(traceback in (\S+)\)", err)[1])
    text = log_file.read_text()
    assert "Traceback (most recent call last)" in text and "no active user" in text
    assert log_file.parent == Path(cfg.lake_uri) / "_logs"


def _copy_tables(spark, source_cfg, target_cfg, names) -> None:
    """Copy tables by path (the catalog names then point at the target lake)."""
    frames = {n: spark.read.format("delta").load(lake.spec(n).location(source_cfg)) for n in names}
    forget_catalog(spark)
    for n, df in frames.items():
        lake.overwrite_all(spark, target_cfg, n, df)


def test_features_carry_the_review_sentiment_that_the_sentiment_stage_scored(spark, cfg,
                                                                             scored_lake):
    from helpers.scored_lake import RUN

    _copy_tables(spark, scored_lake.cfg, cfg,
                 ["bronze.events", "bronze.reviews", "gold.review_sentiment"])
    run_stage(spark, cfg, "features", RUN)

    scored = lake.read(spark, cfg, "gold.review_sentiment").toPandas()
    visible = scored[scored["user_id"].notna()
                     & (scored["review_date"].isna() | (scored["review_date"] <= RUN))]
    expected = visible.groupby("user_id")["probability"].mean()
    got = (lake.read(spark, cfg, "gold.user_features").where(F.col("snapshot_date") == RUN)
           .select("user_id", "mean_review_sentiment").toPandas().set_index("user_id")
           ["mean_review_sentiment"])
    assert len(expected) >= 5
    assert got.reindex(expected.index).tolist() == pytest.approx(expected.tolist(), abs=1e-9)
    assert got.drop(expected.index).isna().all()  # users without a scored review


def test_a_training_job_records_its_run_date_and_why_it_did_not_train(spark, cfg, scored_lake):
    from helpers.scored_lake import RUN

    store = scored_lake.cfg.mlflow_tracking_uri  # a sentiment model serves there
    rc = jobs.run_job("train_sentiment", ["--run-date", RUN.isoformat(), "--lake", cfg.lake_uri,
                                          "--set", "lake.catalog=in-memory",
                                          "--set", f"mlflow.tracking_uri={store}",
                                          "--if-none-serving"])
    assert rc == 0
    runs = (lake.read(spark, cfg, "ops.runs").where(F.col("stage") == "train_sentiment")
            .collect())
    assert [(r["run_date"], r["status"], r["metrics"]["skipped"]) for r in runs] == \
        [(RUN, "succeeded", "1")]
    assert runs[0]["metrics"]["reason"] == "a version is serving"
