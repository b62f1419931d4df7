"""The session demandlake builds: settings that keep Spark 4.2 traps away from its users."""
from __future__ import annotations

import datetime as dt
import threading

import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from demandlake import lake, schemas
from helpers import feature_events


def test_a_plain_python_udf_over_a_parquet_scan_finishes(spark, tmp_path):
    """Spark 4.2.0 runs ``F.udf`` Arrow-optimized by default, and its columnar Arrow UDF runner
    (used on a vectorized Parquet/Delta scan) sends the worker a message it cannot parse: the
    task then waits forever (SPARK-58241). The session turns Arrow-optimized UDFs off, so this
    query finishes; with them on it hangs, and the timeout below fails the test."""
    path = str(tmp_path / "ints.parquet")
    spark.range(0, 200, numPartitions=2).write.parquet(path)
    plus_one = F.udf(lambda v: v + 1, T.LongType())
    got: dict = {}

    def run() -> None:
        spark.sparkContext.setJobGroup("plain-udf-scan", "plain UDF over Parquet", True)
        got["sum"] = spark.read.parquet(path).select(plus_one("id").alias("v")) \
            .agg(F.sum("v")).first()[0]

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=180)
    if worker.is_alive():
        spark.sparkContext.cancelJobGroup("plain-udf-scan")
        worker.join(timeout=30)
        raise AssertionError("a plain Python UDF over a Parquet scan did not finish in 180 s "
                             "(spark.sql.execution.pythonUDF.arrow.enabled must be false)")
    assert spark.conf.get("spark.sql.execution.pythonUDF.arrow.enabled") == "false"
    assert got["sum"] == sum(range(1, 201))


def test_temporary_conf_applies_inside_the_block_and_restores_or_unsets_after(spark):
    import pytest

    from demandlake.spark import temporary_conf

    key, unset = "spark.sql.execution.useObjectHashAggregateExec", "spark.demandlake.test.unset"
    spark.conf.set(key, "true")
    with pytest.raises(RuntimeError):
        with temporary_conf(spark, {key: "false", unset: "1"}):
            assert spark.conf.get(key) == "false" and spark.conf.get(unset) == "1"
            rows = spark.range(300).groupBy((F.col("id") % 200).alias("k")).agg(
                F.collect_list("id").alias("ids"))
            assert "SortAggregate" in rows._jdf.queryExecution().executedPlan().toString()
            raise RuntimeError("the block fails: settings are restored all the same")
    assert spark.conf.get(key) == "true"
    assert spark.conf.get(unset, None) is None


def test_no_class_archive_is_made_while_sparks_conf_directory_holds_files(monkeypatch, tmp_path,
                                                                         caplog):
    # The JDK would refuse it ("non-empty directory" on the class path) and every JVM would
    # print that it cannot map it: so none is made, and the reason is said.
    from demandlake import spark as sp

    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    (conf_dir / "spark-defaults.conf").write_text("spark.ui.enabled false\n")
    monkeypatch.setenv("SPARK_CONF_DIR", str(conf_dir))
    monkeypatch.setenv("DEMANDLAKE_CLASS_ARCHIVE", str(tmp_path / "a.jsa"))
    with caplog.at_level("WARNING", logger="demandlake.spark"):
        assert sp.build_class_archive() is None
    assert not (tmp_path / "a.jsa").exists()
    assert f"{conf_dir} is not empty" in caplog.text
    assert sp.class_archive_options() == ""  # and the JVMs are given none


def test_small_stages_run_without_code_generation_and_adaptive_execution_big_ones_with_them(
        spark, cfg, monkeypatch):
    """``spark.codegen`` and ``spark.adaptive: auto`` (the defaults) turn code generation and
    adaptive execution off for a stage whose input is under ``spark.<switch>_min_bytes`` and
    leave Spark's defaults above it, each switch on its own; the settings hold while the stage
    runs and are gone after it; settings the session already has win, switch by switch."""
    from demandlake.pipeline import stages
    from demandlake.spark import SMALL_INPUT_OFF, stage_settings

    codegen_off, adaptive_off = SMALL_INPUT_OFF["codegen"], SMALL_INPUT_OFF["adaptive"]
    keys = [*codegen_off, *adaptive_off]
    both_off, unset = {**codegen_off, **adaptive_off}, {k: None for k in keys}
    seen: list[dict] = []

    def stage(spark_, cfg_, run_date, dry_run=False):
        seen.append({k: spark_.conf.get(k, None) for k in keys})
        return {}

    monkeypatch.setitem(stages.FUNCTIONS, "maintain", stage)
    monkeypatch.setattr(stages, "stage_input_bytes", lambda *a: 5_000)
    given = {k: spark.conf.get(k, None) for k in keys}  # the tests' session sets them
    for k in keys:
        spark.conf.unset(k)
    try:
        def limits(codegen: int, adaptive: int, mode: object = "auto"):
            return cfg.with_overrides({"spark.codegen": mode, "spark.codegen_min_bytes": codegen,
                                       "spark.adaptive": mode,
                                       "spark.adaptive_min_bytes": adaptive})

        for c in (limits(10_000, 10_000), limits(4_000, 4_000), limits(4_000, 4_000, "off"),
                  limits(10_000, 10_000, "on"), limits(10_000, 4_000), limits(4_000, 10_000)):
            stages.run_stage(spark, c, "maintain", None)
        assert seen == [{**unset, **both_off}, unset, {**unset, **both_off}, unset,
                        {**unset, **codegen_off}, {**unset, **adaptive_off}]
        assert {k: spark.conf.get(k, None) for k in keys} == unset
        # A user's --conf for one switch's key leaves that switch alone, not the other.
        spark.conf.set("spark.sql.adaptive.enabled", "true")
        assert stage_settings(spark, limits(10_000, 10_000), lambda: 5_000) == codegen_off
        spark.conf.unset("spark.sql.adaptive.enabled")
        spark.conf.set("spark.sql.codegen.wholeStage", "true")
        assert stage_settings(spark, limits(10_000, 10_000), lambda: 5_000) == adaptive_off
        spark.conf.unset("spark.sql.codegen.wholeStage")
        # A bare on/off in YAML arrives as a boolean.
        assert stage_settings(spark, limits(1, 1, False), lambda: 10**12) == both_off
        assert stage_settings(spark, limits(1, 1, True), lambda: 0) == {}
        for switch in ("codegen", "adaptive"):
            with pytest.raises(ValueError, match=f"spark.{switch} must be"):
                stage_settings(spark, cfg.with_overrides({f"spark.{switch}": "sometimes"}),
                               lambda: 0)
    finally:
        for k, v in given.items():
            if v is not None:
                spark.conf.set(k, v)


def test_a_stages_input_is_bronze_and_for_ingest_also_its_raw_files(spark, cfg, tmp_path):
    from demandlake.pipeline.stages import stage_input_bytes

    raw = tmp_path / "raw" / "events"
    for day, size in (("2026-11-01", 300), ("2026-11-02", 700)):
        (raw / f"dt={day}").mkdir(parents=True)
        (raw / f"dt={day}" / "part-0.jsonl").write_bytes(b"x" * size)
    c = cfg.with_overrides({"lake.raw_uri": str(tmp_path / "raw")})
    day2 = dt.date(2026, 11, 2)
    assert stage_input_bytes(spark, c, "ingest", day2, {}) == 700  # no bronze yet
    assert stage_input_bytes(spark, c, "ingest", day2, {"history": True}) == 1000
    assert stage_input_bytes(spark, c, "features", day2, {}) == 0
    lake.ensure_table(spark, c, "bronze.events")
    spark.createDataFrame(feature_events.EVENTS, schemas.BRONZE_EVENTS).write.format(
        "delta").mode("append").save(lake.spec("bronze.events").location(c))
    stored = lake.table_bytes(spark, c, "bronze.events")
    assert stored > 0
    assert stage_input_bytes(spark, c, "features", day2, {}) == stored
    assert stage_input_bytes(spark, c, "ingest", day2, {}) == stored + 700


def test_a_users_jvm_options_are_added_to_the_embedded_catalogs_not_put_in_their_place(tmp_path):
    from demandlake.config import load_config
    from demandlake.spark import session_conf

    cfg = load_config(overrides=[f"lake.uri={tmp_path / 'lake'}", "lake.catalog=hive",
                                 "metastore.mode=embedded",
                                 "spark.conf.spark.driver.extraJavaOptions=-XX:+UseSerialGC"])
    options = session_conf(cfg)["spark.driver.extraJavaOptions"].split()
    assert options == [f"-Dderby.system.home={tmp_path / 'lake' / '_catalog'}",
                       "-Dderby.stream.error.file=/dev/null", "-XX:+UseSerialGC"]
    # Without the embedded catalog, the user's options are all there is.
    memory = cfg.with_overrides({"lake.catalog": "in-memory"})
    assert session_conf(memory)["spark.driver.extraJavaOptions"] == "-XX:+UseSerialGC"


def test_the_embedded_default_names_its_lakes_database_on_the_metastore_server(tmp_path):
    from demandlake.config import load_config
    from demandlake.spark import session_conf

    cfg = load_config(overrides=[f"lake.uri={tmp_path / 'lake'}", "metastore.port=1600"])
    conf = session_conf(cfg)
    assert conf["spark.hadoop.javax.jdo.option.ConnectionURL"] == (
        f"jdbc:derby://127.0.0.1:1600/{tmp_path / 'lake' / '_catalog' / 'metastore_db'}"
        ";create=true")
    assert conf["spark.hadoop.javax.jdo.option.ConnectionDriverName"] == (
        "org.apache.derby.jdbc.ClientDriver")
    assert "spark.driver.extraJavaOptions" not in conf  # no Derby engine in this process
    service = cfg.with_overrides({"spark.conf": {"spark.hadoop.hive.metastore.uris": "thrift://m:9083"}})
    assert "spark.hadoop.javax.jdo.option.ConnectionURL" not in session_conf(service)


def test_one_query_commands_start_their_jvm_with_the_short_lived_options_before_the_users():
    from demandlake.config import load_config
    from demandlake.spark import driver_java_options

    cfg = load_config()
    short = cfg["spark.short_lived_jvm_options"]
    assert "-XX:TieredStopAtLevel=1" in short.split()
    assert driver_java_options(cfg, "-XX:+UseG1GC", short_lived=True) == f"{short} -XX:+UseG1GC"
    assert driver_java_options(cfg, "-XX:+UseG1GC", short_lived=False) == "-XX:+UseG1GC"
    none = cfg.with_overrides({"spark.short_lived_jvm_options": ""})
    assert driver_java_options(none, "", short_lived=True) == ""


def test_status_and_sql_ask_for_a_short_lived_session(monkeypatch, tmp_path):
    from demandlake import cli

    asked = []

    def fake_spark(cfg, short_lived=False):
        asked.append(short_lived)
        raise SystemExit(0)  # the session is all this test looks at

    monkeypatch.setattr(cli, "_spark", fake_spark)
    for command in (["status"], ["sql", "SELECT 1"]):
        with pytest.raises(SystemExit):
            cli.main(["--lake", str(tmp_path / "lake"), *command])
    assert asked == [True, True]
