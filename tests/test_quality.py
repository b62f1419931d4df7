"""Data-quality gates: each check fails on the defect it names, results land in
ops.quality_checks, and a failed gate leaves the table's current version untouched."""
from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from demandlake import lake, quality, schemas
from demandlake.pipeline.transform import run_features
from helpers.feature_events import SNAPSHOT, load_bronze

D0 = dt.date(2026, 11, 1)
NULLABLE_FORECASTS = T.StructType([T.StructField(f.name, f.dataType, True)
                                   for f in schemas.GOLD_DEMAND_FORECASTS.fields])


def forecasts(spark, n, run_date, probability=0.3, user=lambda i: f"u{i}"):
    rows = [(user(i), run_date, probability, [("c1", 0.5)], "medium", False, "model", "seq", 1,
             "run-x") for i in range(n)]
    return spark.createDataFrame(rows, NULLABLE_FORECASTS)


def failed(checks):
    return sorted(c.name for c in checks if not c.passed)


def test_clean_rows_pass_every_check_and_are_recorded(spark, cfg):
    checks = quality.gate(spark, cfg, "gold.demand_forecasts", forecasts(spark, 5, D0), D0,
                          "run-1", "score")
    names = {c.name for c in checks}
    assert failed(checks) == []
    assert {"schema", "row_count", "unique_key", "not_null.user_id",
            "constraint.forecast_probability_in_0_1"} <= names
    recorded = lake.read(spark, cfg, "ops.quality_checks").where(F.col("run_id") == "run-1")
    assert recorded.count() == len(checks)
    assert recorded.where(~F.col("passed")).count() == 0


def test_out_of_range_null_key_and_duplicate_rows_block_with_counts(spark, cfg):
    bad = (forecasts(spark, 4, D0)
           .unionByName(forecasts(spark, 2, D0, probability=1.5, user=lambda i: f"x{i}"))
           .unionByName(forecasts(spark, 1, D0, user=lambda i: None))
           .unionByName(forecasts(spark, 1, D0)))  # u0 again
    with pytest.raises(quality.QualityGateError) as err:
        quality.gate(spark, cfg, "gold.demand_forecasts", bad, D0, "run-2", "score")
    by_name = {c.name: c for c in err.value.failed}
    assert sorted(by_name) == ["constraint.forecast_probability_in_0_1", "not_null.user_id",
                               "unique_key"]
    assert by_name["constraint.forecast_probability_in_0_1"].observed == 2
    assert by_name["not_null.user_id"].observed == 1
    assert by_name["unique_key"].observed == 1
    assert "gold.demand_forecasts" in str(err.value) and "previous version" in str(err.value)
    stored = {r["check_name"]: r["passed"] for r in
              lake.read(spark, cfg, "ops.quality_checks").where(F.col("run_id") == "run-2")
              .collect()}
    assert stored["unique_key"] is False and stored["schema"] is True


def test_a_missing_column_fails_the_schema_check_alone(spark, cfg):
    df = forecasts(spark, 3, D0).drop("score_band")
    checks = quality.gate(spark, cfg, "gold.demand_forecasts", df, D0, "run-3", "score",
                          raise_on_failure=False)
    assert failed(checks) == ["schema"] and "score_band" in checks[0].message


def test_row_count_trend_blocks_a_collapse_and_only_warns_on_growth(spark, cfg):
    for i in range(3):  # three published partitions of 20 rows
        quality.gate(spark, cfg, "gold.demand_forecasts", forecasts(spark, 20, D0 + dt.timedelta(i)),
                     D0 + dt.timedelta(i), f"hist-{i}", "score")
    # a blocked run does not count as history
    with pytest.raises(quality.QualityGateError):
        quality.gate(spark, cfg, "gold.demand_forecasts",
                     forecasts(spark, 2, D0 + dt.timedelta(3), probability=2.0),
                     D0 + dt.timedelta(3), "blocked", "score")
    day = D0 + dt.timedelta(5)
    with pytest.raises(quality.QualityGateError) as err:
        quality.gate(spark, cfg, "gold.demand_forecasts", forecasts(spark, 5, day), day,
                     "collapse", "score")
    trend = {c.name: c for c in err.value.failed}["row_count_trend"]
    assert trend.observed == pytest.approx(0.25)
    grown = quality.gate(spark, cfg, "gold.demand_forecasts", forecasts(spark, 100, day), day,
                         "growth", "score")
    warn = {c.name: c for c in grown}["row_count_trend"]
    assert not warn.passed and not warn.blocking and warn.observed == pytest.approx(5.0)


def recommendations(spark, n, run_date):
    rows = [(f"u{i}", run_date, 1, f"item-{i}", "c", 1.0, "als", "test", None, "run-x")
            for i in range(n)]
    return spark.createDataFrame(rows, schemas.GOLD_RECOMMENDATIONS)


def test_gate_all_judges_each_table_on_its_own_history_and_records_in_one_commit(spark, cfg):
    for i in range(3):  # published partitions: 20 forecasts and 4 recommendations a day
        day = D0 + dt.timedelta(i)
        _, failures = quality.gate_all(spark, cfg, {
            "gold.demand_forecasts": forecasts(spark, 20, day),
            "gold.recommendations": recommendations(spark, 4, day)}, day, f"hist-{i}", "score")
        assert failures == []
    before = lake.table_version(spark, cfg, "ops.quality_checks")
    day = D0 + dt.timedelta(5)
    checks, failures = quality.gate_all(spark, cfg, {
        "gold.demand_forecasts": forecasts(spark, 5, day),
        "gold.recommendations": recommendations(spark, 4, day)}, day, "both", "score")
    # Forecasts collapsed to a quarter of their own history; recommendations held steady (a
    # history mixed over both tables, 12 rows a day, would block them at 0.33 instead).
    assert [(e.table, [c.name for c in e.failed]) for e in failures] == \
        [("gold.demand_forecasts", ["row_count_trend"])]
    assert failures[0].failed[0].observed == pytest.approx(0.25)
    recorded = lake.read(spark, cfg, "ops.quality_checks").where(F.col("run_id") == "both")
    trend = {r["table_name"]: r["observed"] for r in
             recorded.where(F.col("check_name") == "row_count_trend").collect()}
    assert trend == {"gold.demand_forecasts": pytest.approx(0.25),
                     "gold.recommendations": pytest.approx(1.0)}
    assert recorded.count() == len(checks)
    assert lake.table_version(spark, cfg, "ops.quality_checks") == before + 1


def test_min_rows_and_null_rate_settings_apply_per_table(spark, cfg):
    cfg = cfg.with_overrides({"quality.tables": {"gold.demand_forecasts": {
        "min_rows": 10, "max_null_rate": {"model_name": 0.25}}}})
    df = forecasts(spark, 3, D0).withColumn(
        "model_name", F.when(F.col("user_id") == "u0", F.lit("seq")))
    checks = quality.gate(spark, cfg, "gold.demand_forecasts", df, D0, "run-5", "score",
                          raise_on_failure=False)
    assert failed(checks) == ["null_rate.model_name", "row_count"]
    assert {c.name: c for c in checks}["null_rate.model_name"].observed == pytest.approx(2 / 3,
                                                                                         abs=1e-6)


def test_features_publish_when_checks_pass_and_stay_put_when_a_gate_fails(spark, cfg):
    cfg = cfg.with_overrides({"features.windows_days": [2, 10], "features.top_k": 2})
    load_bronze(spark, cfg)
    assert run_features(spark, cfg, SNAPSHOT) == {"users": 2}
    version = lake.table_version(spark, cfg, "gold.user_features")
    before = sorted(lake.read(spark, cfg, "gold.user_features").collect())

    # Three days later with no new input, the newest event is 3 days old: stale, not published.
    later = SNAPSHOT + dt.timedelta(days=3)
    with pytest.raises(quality.QualityGateError, match="freshness"):
        run_features(spark, cfg, later)
    assert lake.table_version(spark, cfg, "gold.user_features") == version
    assert sorted(lake.read(spark, cfg, "gold.user_features").collect()) == before
    runs = lake.read(spark, cfg, "ops.runs").where(F.col("stage") == "features").collect()
    assert sorted(r["status"] for r in runs) == ["failed", "succeeded"]
    stale = (lake.read(spark, cfg, "ops.quality_checks")
             .where((F.col("run_date") == later) & (F.col("check_name") == "freshness")).first())
    assert stale["passed"] is False and stale["observed"] == 3

    # Switched off, the same run publishes.
    assert run_features(spark, cfg.with_overrides({"quality.enabled": False}), later) == {"users": 2}
