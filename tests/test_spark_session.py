"""The session demandlake builds: settings that keep Spark 4.2 traps away from its users."""
from __future__ import annotations

import threading

from pyspark.sql import functions as F
from pyspark.sql import types as T


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
