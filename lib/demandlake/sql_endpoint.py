"""The lake's SQL endpoint: Spark's Thrift JDBC/ODBC server over the tables, read-only.

``demandlake serve-sql`` starts one Spark application that registers the lake's tables by name
and serves them through ``HiveThriftServer2`` (the jar ships in pip's pyspark), on
``sql_endpoint.host:port`` (127.0.0.1:10000 by default). Any HiveServer2 client connects:
``beeline -u jdbc:hive2://127.0.0.1:10000``, PyHive, or a BI tool's Hive/Spark driver.

Read-only: every analyst session gets the analyzer check rule of ``jvm/ReadOnlySql.java``,
compiled once with ``javac`` into the cache beside the Delta jars. It refuses any command other
than SHOW, DESCRIBE, EXPLAIN, SET, RESET and USE (INSERT, UPDATE, DELETE, MERGE, CREATE, DROP,
ALTER, TRUNCATE, ...) and any reflect/java_method call, before anything runs.

Catalog: the tables are Delta folders, so a catalog only maps names to locations. On the
embedded default the readers (``serve-sql``, ``demandlake sql``) use the lake's catalog on the
metastore server that the writers use too (``demandlake.metastore``): any number of them run
beside a nightly. With ``metastore.mode: embedded`` (one process at a time) they register the
tables by location in their own in-memory catalog instead (:func:`reader_config`).
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from demandlake.config import Config, local_path

log = logging.getLogger(__name__)

JAVA_SOURCE = Path(__file__).resolve().parent / "jvm" / "ReadOnlySql.java"
READ_ONLY_CLASS = "io.demandlake.sql.ReadOnlySql"
# Every session of the endpoint carries the lake it serves, so a client can tell whether the
# endpoint on host:port is this lake's (another lake's endpoint may hold the port).
LAKE_PROPERTY = "spark.demandlake.lake_uri"
THRIFT_SERVER = "org.apache.spark.sql.hive.thriftserver.HiveThriftServer2"


# ---- the read-only rule's jar ------------------------------------------------------------------
def _pyspark_jars() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent / "jars"


def read_only_jar_path() -> Path:
    """Where the compiled rule lives: keyed by its source and the Spark version."""
    import pyspark

    from demandlake.spark import cache_dir

    key = hashlib.sha256(JAVA_SOURCE.read_bytes() + pyspark.__version__.encode()).hexdigest()[:12]
    return cache_dir() / "jars" / f"demandlake-sql-{key}" / "demandlake-sql.jar"


def build_read_only_jar() -> Path:
    """Compile ``ReadOnlySql.java`` against pyspark's jars into the cache (once; ~5 s).

    Raises:
        RuntimeError: no ``javac`` (a JDK, not only a JRE, is needed once per machine).
    """
    target = read_only_jar_path()
    if target.exists():
        return target
    javac = shutil.which("javac") or (
        os.path.join(os.environ["JAVA_HOME"], "bin", "javac") if os.environ.get("JAVA_HOME") else None)
    if not javac or not os.path.exists(javac):
        raise RuntimeError("javac not found: the SQL endpoint's read-only rule is compiled once "
                           "with a JDK 17 (apt-get install openjdk-17-jdk-headless)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        classes = Path(tmp) / "classes"
        subprocess.run([javac, "-nowarn", "--release", "17", "-cp", str(_pyspark_jars() / "*"),
                        "-d", str(classes), str(JAVA_SOURCE)], check=True,
                       capture_output=True, text=True)
        jar = Path(tmp) / "demandlake-sql.jar"
        with zipfile.ZipFile(jar, "w") as zf:
            zf.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n")
            for f in sorted(classes.rglob("*.class")):
                zf.write(f, f.relative_to(classes).as_posix())
        os.replace(jar, target)  # atomic: a concurrent build just writes the same file
    log.info("compiled the SQL endpoint's read-only rule into %s", target)
    return target


# ---- catalog -----------------------------------------------------------------------------------
def reader_config(cfg: Config) -> Config:
    """The config for processes that only read (``serve-sql``, ``demandlake sql``, ``status``).

    A catalog that several processes open at once (the embedded default's metastore server, a
    cluster's metastore service) is used as it is. Embedded Derby (``metastore.mode:
    embedded``) can be open in one process at a time (Derby XSDB6 "Another instance of Derby
    may have already booted the database"): a reader then registers the tables it needs by
    location in an in-memory catalog instead (they are Delta folders: the catalog holds no
    state of its own).
    """
    from demandlake import metastore

    if cfg.get("lake.catalog", "hive") == "hive" and not metastore.shared(cfg):
        return cfg.with_overrides({"lake.catalog": "in-memory"}, source="sql reader")
    return cfg


def referenced_tables(text: str) -> list[str]:
    """The lake tables a SQL text names (``gold.user_profiles``...), in registry order; every
    table for statements that name none (SHOW TABLES, SHOW DATABASES)."""
    from demandlake import lake

    words = {w.lower() for w in _words_with_dots(text)}
    named = [n for n in lake.TABLES if n in words]
    return named or list(lake.TABLES)


def _words_with_dots(text: str) -> Iterable[str]:
    return re.findall(r"[A-Za-z_][A-Za-z0-9_]*\s*\.\s*[A-Za-z_][A-Za-z0-9_]*", text.replace("`", ""))


def register_tables(spark, cfg: Config, names: Iterable[str] | None = None) -> list[str]:
    """Register the lake's existing tables (of ``names``; default all) by name, by location.

    Only a name is added (``CREATE TABLE ... USING delta LOCATION``: Delta reads the schema from
    the table's log); nothing is written to the lake, and tables never written are left out.
    Tables the catalog already has (a shared metastore) are taken as they are.

    Returns:
        The names registered (or already there).
    """
    from demandlake import lake

    done = []
    for name in (list(lake.TABLES) if names is None else names):
        if spark.catalog.tableExists(name):
            done.append(name)
            continue
        if not lake.table_exists(spark, cfg, name):
            continue
        s = lake.spec(name)
        location = s.location(cfg).replace("\\", "\\\\").replace("'", "\\'")
        spark.sql(f"CREATE DATABASE IF NOT EXISTS `{s.layer}`")
        spark.sql(f"CREATE TABLE IF NOT EXISTS `{s.layer}`.`{s.short}` USING delta "
                  f"LOCATION '{location}'")
        done.append(name)
    return done


# ---- the server --------------------------------------------------------------------------------
def endpoint_address(cfg: Config) -> tuple[str, int]:
    return str(cfg.get("sql_endpoint.host", "127.0.0.1")), int(cfg.get("sql_endpoint.port", 10000))


def server_spark_conf(cfg: Config, jar: Path) -> dict[str, str]:
    """Spark settings of the endpoint's application (added to the YAML's ``spark.conf``)."""
    from demandlake.spark import cached_delta_jars

    host, port = endpoint_address(cfg)
    # The Thrift server opens a client's session (and runs its `USE default`) on a handler
    # thread that does not see spark.jars: beeline and JDBC drivers then failed with
    # ClassNotFoundException: ...DeltaCatalog. On the driver's own class path every thread does.
    class_path = [p for p in [(cfg.get("spark.conf") or {}).get("spark.driver.extraClassPath")]
                  + _not_in_spark(cached_delta_jars()) + [str(jar)] if p]
    return {
        "spark.driver.extraClassPath": os.pathsep.join(class_path),
        "spark.hadoop.hive.server2.thrift.bind.host": host,
        "spark.hadoop.hive.server2.thrift.port": str(port),
        "spark.hadoop.hive.server2.transport.mode": "binary",
        # The Thrift server turns on spark.sql.datetime.java8API.enabled in every session, and
        # Delta's metadata-only answers (min/max/count from the log's statistics) then fail on a
        # DATE: `SELECT max(run_date) FROM gold.user_profiles` raised ClassCastException
        # "java.time.LocalDate cannot be cast to java.sql.Date" (Delta 4.4.0, Spark 4.2.0).
        # Without the shortcut such a query scans the (small) partition columns instead.
        "spark.databricks.delta.optimizeMetadataQuery.enabled": "false",
        LAKE_PROPERTY: cfg.lake_uri,
    }


def _artifact(jar: str, ivy: bool = False) -> str:
    """A jar's artifact name: ``jackson-databind-2.21.jar`` -> ``jackson-databind``; with
    ``ivy``, Ivy's ``group_artifact-version.jar`` (``com.fasterxml.jackson.core_jackson-databind-
    2.13.5.jar``) gives the same."""
    name = os.path.basename(jar)
    if ivy:
        name = name.split("_", 1)[-1]
    return re.sub(r"-\d[^-]*(-[a-z0-9]+)?\.jar$", "", name)


def _not_in_spark(jars: Iterable[str]) -> list[str]:
    """The jars of ``jars`` (Ivy's names) whose artifact Spark does not ship itself.

    The driver's class path comes before Spark's own jars, while ``spark.jars`` come after
    them; Delta's resolved dependencies (jackson-databind 2.13, hadoop-client 3.4.2, ...) put
    there would replace Spark's versions (Scala's Jackson module then refused to start).
    """
    spark_own = {_artifact(j) for j in glob.glob(str(_pyspark_jars() / "*.jar"))}
    if "jcl-over-slf4j" in spark_own:
        spark_own.add("commons-logging")  # same classes, Spark's bridge to slf4j
    return [j for j in jars if _artifact(j, ivy=True) not in spark_own]


def state_file(cfg: Config) -> Path | None:
    lake_local = local_path(cfg.lake_uri)
    return None if lake_local is None else lake_local / "_sql_endpoint" / "endpoint.json"


def start(cfg: Config, java_log: Path | None = None):
    """Start the endpoint in this process and return ``(spark, server, reader config, tables)``.

    Builds the rule's jar if needed, starts Spark (reader catalog), registers the tables, makes
    the sessions opened from now on read-only and starts the Thrift server.
    """
    from demandlake.spark import get_spark

    jar = build_read_only_jar()
    rcfg = reader_config(cfg)
    settings = server_spark_conf(cfg, jar)
    rcfg = rcfg.with_overrides({f"spark.conf.{k}": v for k, v in settings.items()},
                               source="sql endpoint")
    t0 = time.monotonic()
    spark = get_spark(rcfg, app_name="demandlake-sql-endpoint", java_log=java_log,
                      extra_jars=[str(jar)])
    t1 = time.monotonic()
    tables = register_tables(spark, rcfg)
    t2 = time.monotonic()
    jvm = spark.sparkContext._jvm
    rule = getattr(jvm, READ_ONLY_CLASS)
    rule.install(spark._jsparkSession)
    rule.enable()
    thrift = jvm.org.apache.spark.sql.hive.thriftserver.HiveThriftServer2
    server = thrift.startWithSparkSession(spark._jsparkSession, False)
    log.info("SQL endpoint: Spark %.1fs, %d tables registered %.1fs, Thrift server %.1fs",
             t1 - t0, len(tables), t2 - t1, time.monotonic() - t2)
    return spark, server, rcfg, tables


def serve(cfg: Config, java_log: Path | None = None, ready=print) -> int:
    """Run the endpoint until SIGTERM/SIGINT (``demandlake serve-sql``)."""
    host, port = endpoint_address(cfg)
    if listening(host, port):
        raise RuntimeError(f"{host}:{port} is already in use (another endpoint? "
                           f"`demandlake sql 'SHOW TABLES'` uses it if it serves this lake)")
    t0 = time.monotonic()
    spark, server, rcfg, tables = start(cfg, java_log)
    if not _wait_listening(host, port, 60):
        raise RuntimeError(f"the Thrift server did not open {host}:{port} (see the Spark log)")
    state = state_file(cfg)
    if state is not None:
        state.parent.mkdir(parents=True, exist_ok=True)
        state.write_text(json.dumps({"host": host, "port": port, "pid": os.getpid(),
                                     "lake": cfg.lake_uri}) + "\n")
    ready(f"SQL endpoint ready in {time.monotonic() - t0:.0f}s: jdbc:hive2://{host}:{port} "
          f"({len(tables)} tables, read-only); stop with Ctrl-C or SIGTERM")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        # A table written for the first time after the start gets its name at the next check;
        # the tables already registered always read their latest Delta version.
        while not stop.wait(float(cfg.get("sql_endpoint.refresh_s", 60))):
            try:
                added = set(register_tables(spark, rcfg)) - set(tables)
            except Exception:  # noqa: BLE001 - a table mid-creation: serve on, try again later
                log.warning("looking for new tables failed; trying again at the next check",
                            exc_info=True)
                continue
            if added:
                log.info("registered new tables: %s", sorted(added))
                tables += sorted(added)
    finally:
        if state is not None:
            state.unlink(missing_ok=True)
        server.stop()
        spark.stop()
    return 0


def listening(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _wait_listening(host: str, port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if listening(host, port):
            return True
        time.sleep(0.2)
    return False


# ---- the client --------------------------------------------------------------------------------
@dataclass
class Result:
    columns: list[str]
    rows: list[tuple]
    more: bool  # rows beyond the limit were left unread


def connect(cfg: Config, timeout_s: float = 2.0, handshake_s: float = 60.0):
    """A DB-API connection to the endpoint serving this lake, or None (none running, another
    lake's, or PyHive not installed)."""
    host, port = endpoint_address(cfg)
    if not listening(host, port, timeout=timeout_s):
        return None
    try:
        from pyhive import hive
    except ImportError:
        log.info("an endpoint listens on %s:%d but PyHive is not installed", host, port)
        return None
    # PyHive's own connect() has no timeout: something else on the port must not hang the
    # command, so the handshake gets one, and the queries then run without it.
    import thrift_sasl
    from thrift.transport import TSocket

    user = os.environ.get("USER") or "demandlake"
    sock = TSocket.TSocket(host, port)
    sock.setTimeout(handshake_s * 1000)
    transport = thrift_sasl.TSaslClientTransport(
        lambda: hive.get_installed_sasl(host=host, sasl_auth="PLAIN", username=user,
                                        password="x"),  # any password: no authentication
        "PLAIN", sock)
    try:
        conn = hive.connect(thrift_transport=transport, username=user)
        cur = conn.cursor()
        cur.execute(f"SET {LAKE_PROPERTY}")
        served = dict(cur.fetchall()).get(LAKE_PROPERTY)
    except Exception as exc:  # anything not a HiveServer2 talking to us: not our endpoint
        log.info("no usable SQL endpoint on %s:%d: %s", host, port, exc)
        transport.close()
        return None
    sock.setTimeout(None)
    if served != cfg.lake_uri:
        log.info("the endpoint on %s:%d serves %s, not %s", host, port, served, cfg.lake_uri)
        conn.close()
        return None
    return conn


def query(conn, sql: str, limit: int) -> Result:
    cur = conn.cursor()
    cur.execute(sql)
    rows = cur.fetchmany(limit + 1)
    columns = [d[0] for d in cur.description or []]
    cur.close()
    return Result(columns, [tuple(r) for r in rows[:limit]], len(rows) > limit)


def error_text(exc: Exception) -> str:
    """The server's own message of a failed statement (PyHive wraps it in the Thrift response)."""
    arg = exc.args[0] if exc.args else None
    message = getattr(getattr(arg, "status", None), "errorMessage", None) or str(exc)
    return message.replace("Error running query: ", "", 1).strip().splitlines()[0]


def format_table(result: Result) -> str:
    """Rows as ``DataFrame.show(truncate=False)`` prints them."""
    def text(v) -> str:
        return "NULL" if v is None else str(v)

    cells = [[text(v) for v in row] for row in result.rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(result.columns)]
    line = "+" + "+".join("-" * w for w in widths) + "+"
    out = [line, "|" + "|".join(c.ljust(w) for c, w in zip(result.columns, widths)) + "|", line]
    out += ["|" + "|".join(v.ljust(w) for v, w in zip(r, widths)) + "|" for r in cells]
    out.append(line)
    if result.more:
        out.append(f"only showing top {len(result.rows)} rows")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="SQL endpoint utilities.")
    parser.add_argument("--build-jar", action="store_true",
                        help="compile the read-only rule into the cache (once)")
    args = parser.parse_args(argv)
    if args.build_jar:
        print(build_read_only_jar())
    return 0


if __name__ == "__main__":
    sys.exit(main())
