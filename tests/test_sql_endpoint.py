"""The SQL endpoint (``demandlake serve-sql``): analysts' queries over JDBC/ODBC, read-only, and
readers that share the lake's catalog with another process that holds it open.

One endpoint for the module, started as the CLI starts it (a separate process) over the shared
scored lake (tests/helpers/scored_lake.py), while another JVM (Derby's ``ij``) holds a connection
to the lake's catalog database on the metastore server (``demandlake.metastore``), as a running
nightly does: with the embedded Derby of before, a second process failed with XSDB6. A local
``demandlake sql`` (no endpoint) starts at the same time, so the two JVMs start together instead
of one after the other.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from demandlake.config import load_config
from demandlake.queries import bind, parse_queries
from helpers import scored_lake as tl
from helpers.endpoint import Endpoint, cli as _cli, env as _env

QUERIES, TABLES, PARAMS = tl.QUERIES, tl.QUERY_TABLES, tl.QUERY_PARAMS

pytest.importorskip("pyhive.hive", reason="the SQL client (pyhive) is installed by bootstrap")

ROOT = Path(__file__).resolve().parents[1]
DERBY_NOISE = ("XSDB6", "Another instance of Derby", "derby")


def _pyspark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


@pytest.fixture(scope="module")
def derby_held(scored_lake):
    """Another JVM (``ij``) connected to the lake's catalog database through the metastore
    server, its connection open while the readers start, as a nightly's is."""
    from demandlake import metastore

    cfg = scored_lake.cfg.with_overrides({"lake.catalog": "hive"}, source="test")
    metastore.ensure_server(cfg)
    url = metastore.jdbc_url(cfg)
    catalog = metastore.metastore_dir(cfg).parent
    jars = _pyspark_home() / "jars"
    cp = os.pathsep.join(str(j) for j in sorted(jars.glob("derby*.jar")))
    ij = subprocess.Popen(["java", "-cp", cp, "org.apache.derby.tools.ij"], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ij.stdin.write(f"connect '{url}';\n")
    ij.stdin.flush()
    created = catalog / "metastore_db" / "service.properties"  # the server booted it for ij
    deadline = time.monotonic() + 60
    while not created.exists() and time.monotonic() < deadline and ij.poll() is None:
        time.sleep(0.2)
    host, port = metastore.address(cfg)
    assert metastore.established_connections(port) >= 1
    assert (catalog / "metastore_db" / "service.properties").exists(), "ij did not connect"
    yield catalog
    # The lake as it was: the server closes the database before its folder goes.
    ij.stdin.write(f"disconnect; connect '{url.replace(';create=true', ';shutdown=true')}';\n")
    ij.stdin.close()
    ij.wait(60)
    shutil.rmtree(catalog, ignore_errors=True)


@pytest.fixture(scope="module")
def endpoint(spark, scored_lake, derby_held):
    """``demandlake serve-sql`` on a free port, and a local ``demandlake sql`` started with it."""
    lake_uri = scored_lake.cfg.lake_uri
    server = Endpoint(lake_uri)
    local = subprocess.Popen(
        _cli(lake_uri, server.port, "--set", "sql_endpoint.use_from_cli=false",
             "sql", "SELECT count(*) AS n FROM gold.user_profiles"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        ready = server.ready()  # the "ready" line
    except RuntimeError as exc:
        local.kill()
        pytest.fail(str(exc))
    conn = server.connect()
    tl.reset_catalog(spark, scored_lake.cfg, TABLES)  # in-process reference answers
    yield {"port": server.port, "conn": conn, "server": server.process, "ready": ready,
           "started_s": server.started_s, "local": local, "lake_uri": lake_uri}
    conn.close()
    local.kill()
    server.stop()


def _rows(conn, sql: str) -> list[tuple]:
    cur = conn.cursor()
    cur.execute(sql)
    rows = cur.fetchall()
    cur.close()
    return rows


def test_every_analyst_query_runs_through_the_endpoint(endpoint):
    """Every block of docs/queries.sql answers over JDBC (tests/test_queries.py checks what the
    answers mean, in-process, on the same lake and engine)."""
    queries = parse_queries(QUERIES.read_text(encoding="utf-8"))
    assert len(queries) == 8
    cur = endpoint["conn"].cursor()
    counts = {}
    for name, (sql, _) in queries.items():
        t0 = time.monotonic()
        cur.execute(bind(sql, PARAMS))
        counts[name] = len(cur.fetchall())
        assert cur.description, name
        print(f"{name}: {time.monotonic() - t0:.1f}s over JDBC")
    cur.close()
    assert all(counts.values()), counts  # each has rows on the scored lake
    assert counts["user_full_profile"] == 1 and counts["scoring_runs"] == 3, counts


def test_min_and_max_of_a_date_answer_as_in_process(endpoint, spark):
    """Delta answers these from its log; with the Thrift server's Java 8 dates that shortcut
    raised ClassCastException (docs/STACK.md), so the endpoint turns it off."""
    sql = "SELECT min(run_date), max(run_date), count(*) FROM gold.user_profiles"
    want = tuple(str(v) for v in spark.sql(sql).first())
    assert tuple(str(v) for v in _rows(endpoint["conn"], sql)[0]) == want
    assert _rows(endpoint["conn"], "SELECT max(event_date) FROM bronze.events")[0][0] == str(
        spark.sql("SELECT max(event_date) FROM bronze.events").first()[0])


WRITES = {
    "INSERT": "INSERT INTO ops.runs SELECT * FROM ops.runs",
    "INSERT by path": "INSERT INTO delta.`{lake}/ops/runs` SELECT * FROM ops.runs",
    "UPDATE": "UPDATE gold.user_profiles SET segment = 'x'",
    "DELETE": "DELETE FROM gold.user_profiles",
    "MERGE": ("MERGE INTO gold.user_profiles t USING gold.user_profiles s ON t.user_id = s.user_id"
              " WHEN MATCHED THEN DELETE"),
    "TRUNCATE": "TRUNCATE TABLE gold.user_profiles",
    "ALTER": "ALTER TABLE gold.user_profiles SET TBLPROPERTIES ('reviewed_by' = 'analyst')",
    "ALTER ADD COLUMNS": "ALTER TABLE gold.user_profiles ADD COLUMNS (note STRING)",
    "DROP": "DROP TABLE gold.user_profiles",
    "CREATE": "CREATE TABLE gold.mine USING delta AS SELECT * FROM gold.user_profiles",
    "CREATE VIEW": "CREATE VIEW gold.v AS SELECT 1 AS x",
    "OPTIMIZE": "OPTIMIZE gold.user_profiles",
    "reflect": "SELECT reflect('java.lang.System', 'getProperty', 'user.home')",
}


def test_writes_are_refused_with_a_clear_message_and_change_nothing(endpoint, spark, scored_lake):
    from demandlake import lake

    names = ("ops.runs", "gold.user_profiles")
    before = {n: lake.table_version(spark, scored_lake.cfg, n) for n in names}
    rows_before = _rows(endpoint["conn"], "SELECT count(*) FROM gold.user_profiles")
    for what, sql in WRITES.items():
        with pytest.raises(Exception) as exc:
            _rows(endpoint["conn"], sql.format(lake=endpoint["lake_uri"]))
        assert "demandlake SQL endpoint is read-only" in str(exc.value), what
    assert {n: lake.table_version(spark, scored_lake.cfg, n) for n in names} == before
    assert _rows(endpoint["conn"], "SELECT count(*) FROM gold.user_profiles") == rows_before
    assert ("gold", "mine", False) not in _rows(endpoint["conn"], "SHOW TABLES IN gold")
    # Reading commands still work.
    assert _rows(endpoint["conn"], "DESCRIBE gold.user_profiles")
    assert _rows(endpoint["conn"], "SHOW TABLES IN ops")


def test_demandlake_sql_answers_through_the_running_endpoint(endpoint, spark):
    want = spark.table("gold.user_profiles").count()
    t0 = time.monotonic()
    out = subprocess.run(_cli(endpoint["lake_uri"], endpoint["port"], "--log-level", "INFO",
                              "sql", "SELECT count(*) AS n FROM gold.user_profiles"),
                         capture_output=True, text=True, env=_env(), timeout=120)
    took = time.monotonic() - t0
    assert out.returncode == 0, out.stderr[-2000:]
    assert "query sent to the SQL endpoint" in out.stderr
    assert f"|{want}|" in out.stdout.replace(" ", "")
    print(f"demandlake sql through the endpoint: {took:.1f}s")


def test_a_beeline_client_connects_over_jdbc(endpoint):
    home = _pyspark_home()
    out = subprocess.run(
        [str(home / "bin" / "beeline"), "-u", f"jdbc:hive2://127.0.0.1:{endpoint['port']}",
         "-n", "analyst", "--silent=true", "--outputformat=csv2",
         "-e", "SELECT count(*) AS n FROM gold.user_profiles"],
        capture_output=True, text=True, timeout=180, env={**_env(), "SPARK_HOME": str(home)})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert re.search(r"(?:^|> )n\s*^\d+$", out.stdout, re.MULTILINE), out.stdout  # csv2: n, count


def test_readers_run_beside_a_process_holding_the_derby_catalog(endpoint, derby_held):
    """Both readers started while ij held a connection to the lake's catalog: they shared it
    (named tables in it) without a Derby error."""
    assert "read-only" in endpoint["ready"]
    out, err = endpoint["local"].communicate(timeout=600)
    assert endpoint["local"].returncode == 0, err[-3000:]
    assert "|n" in out.replace(" ", "")
    for text in (out, err):
        assert not any(word in text for word in DERBY_NOISE), text[-2000:]
    logs = sorted(Path(endpoint["lake_uri"], "_logs").glob("*.spark.log"))
    for log_file in [p for p in logs if "-sql" in p.name or "serve-sql" in p.name]:
        assert "XSDB6" not in log_file.read_text(errors="replace"), log_file
    # The endpoint named the lake's tables in the shared catalog: a third process sees them.
    from demandlake import metastore

    cfg = load_config(overrides=[f"lake.uri={endpoint['lake_uri']}"])
    cp = os.pathsep.join(str(j) for j in sorted((_pyspark_home() / "jars").glob("derby*.jar")))
    listed = subprocess.run(
        ["java", "-cp", cp, "org.apache.derby.tools.ij"], capture_output=True, text=True,
        timeout=120, input=f"connect '{metastore.jdbc_url(cfg)}';\n"
        "SELECT d.NAME || '.' || t.TBL_NAME FROM APP.TBLS t JOIN APP.DBS d "
        "ON t.DB_ID = d.DB_ID;\n")
    assert "gold.user_profiles" in listed.stdout and "bronze.events" in listed.stdout, listed.stdout
    print(f"serve-sql ready after {endpoint['started_s']:.0f}s (with a local sql starting beside it)")


# ---- no Spark needed --------------------------------------------------------------------------
def test_a_local_query_registers_only_the_tables_it_names():
    from demandlake.sql_endpoint import referenced_tables

    assert referenced_tables("SELECT * FROM gold.user_profiles p JOIN `gold`.`user_features` u "
                             "ON p.user_id = u.user_id") == ["gold.user_features",
                                                             "gold.user_profiles"]
    from demandlake import lake

    assert referenced_tables("SHOW TABLES") == list(lake.TABLES)


def test_readers_use_a_shared_catalog_and_leave_embedded_derby_alone():
    from demandlake.config import load_config
    from demandlake.sql_endpoint import reader_config

    assert reader_config(load_config())["lake.catalog"] == "hive"  # the metastore server
    embedded = load_config(overrides=["metastore.mode=embedded"])
    assert reader_config(embedded)["lake.catalog"] == "in-memory"
    service = load_config(overrides=[
        "metastore.mode=embedded", "spark.conf.spark.hadoop.hive.metastore.uris=thrift://m:9083"])
    assert reader_config(service)["lake.catalog"] == "hive"
    remote = load_config(overrides=["lake.uri=s3a://bucket/lake"])
    assert reader_config(remote)["lake.catalog"] == "in-memory"  # no metastore to share


def test_only_delta_jars_spark_lacks_go_on_the_driver_class_path():
    from demandlake.sql_endpoint import _artifact, _not_in_spark

    ivy = "/c/com.fasterxml.jackson.core_jackson-databind-2.13.5.jar"
    assert _artifact(ivy, ivy=True) == _artifact("/s/jackson-databind-2.21.jar") == "jackson-databind"
    assert _artifact("/c/io.delta_delta-spark_4.2_2.13-4.4.0.jar", ivy=True) == "delta-spark_4.2_2.13"
    assert _artifact("/s/spark-hive_2.13-4.2.0.jar") == "spark-hive_2.13"
    assert _artifact("/s/jline-3.29.0-jdk8.jar") == "jline"
    kept = _not_in_spark(["/c/com.fasterxml.jackson.core_jackson-databind-2.13.5.jar",
                          "/c/commons-logging_commons-logging-1.3.0.jar",
                          "/c/org.apache.hadoop_hadoop-client-api-3.4.2.jar",
                          "/c/io.delta_delta-spark_4.2_2.13-4.4.0.jar",
                          "/c/io.delta_delta-storage-4.4.0.jar"])
    assert [Path(j).name for j in kept] == ["io.delta_delta-spark_4.2_2.13-4.4.0.jar",
                                            "io.delta_delta-storage-4.4.0.jar"]


def test_results_print_as_spark_shows_them():
    from demandlake.sql_endpoint import Result, format_table

    assert format_table(Result(["segment", "n"], [("new", 3), (None, 12)], more=True)) == "\n".join([
        "+-------+--+", "|segment|n |", "+-------+--+", "|new    |3 |", "|NULL   |12|",
        "+-------+--+", "only showing top 2 rows"])
