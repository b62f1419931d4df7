"""The one SparkSession factory: Delta Lake, catalog, Arrow, local defaults, overridable.

Precedence for Spark settings, highest first: ``spark-submit --conf`` (or a session already
running), then ``spark.conf`` from the resolved YAML config, then the built-in Delta/catalog
settings below. Under spark-submit the master is never set here.

``python -m demandlake.spark --fetch-jars`` resolves the Delta jars once (through Spark's own Ivy)
into ``$DEMANDLAKE_CACHE/jars/delta-<version>``; later sessions pass those files as ``spark.jars``
so that no network is needed.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import glob
import importlib.metadata
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from pyspark import SparkConf, SparkContext
from pyspark.sql import SparkSession

from demandlake.config import Config, load_config, local_path

log = logging.getLogger(__name__)

DELTA_VERSION = importlib.metadata.version("delta-spark")


def cache_dir() -> Path:
    return Path(os.environ.get("DEMANDLAKE_CACHE", Path.home() / ".cache" / "demandlake"))


def delta_jars_dir() -> Path:
    return cache_dir() / "jars" / f"delta-{DELTA_VERSION}"


def cached_delta_jars() -> list[str]:
    """Paths of the pre-fetched Delta jars, or [] when not fetched yet."""
    d = delta_jars_dir()
    if not (d / ".complete").exists():
        return []
    return sorted(glob.glob(str(d / "*.jar")))


def delta_packages() -> list[str]:
    """The Maven coordinates delta-spark's pip helper would add (kept in sync with the wheel)."""
    from delta import configure_spark_with_delta_pip

    # A fresh Builder starts nothing; we only read the coordinates the helper sets on it.
    builder = configure_spark_with_delta_pip(SparkSession.Builder())
    return builder._options["spark.jars.packages"].split(",")


def _submitted_conf() -> dict[str, str]:
    """Settings already fixed by spark-submit (empty when run as a plain Python process)."""
    if "PYSPARK_GATEWAY_PORT" not in os.environ and SparkSession.getActiveSession() is None:
        return {}
    # Connect to spark-submit's JVM first: a SparkConf made before the gateway exists is an
    # empty Python-side dict, which hid --master, --jars and every --conf (the jobs then ran on
    # the YAML's local[*] whatever --master said; scripts/cluster_check.sh caught it).
    SparkContext._ensure_initialized()
    return dict(SparkConf().getAll())


def session_conf(cfg: Config) -> dict[str, str]:
    """All Spark settings this project wants for ``cfg`` (before spark-submit precedence)."""
    conf: dict[str, str] = {
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.session.timeZone": "UTC",
    }
    lake_local = local_path(cfg.lake_uri)
    catalog = cfg.get("lake.catalog", "hive")
    if lake_local is not None:
        conf["spark.sql.warehouse.dir"] = str(lake_local / "_warehouse")
    if catalog == "hive":
        conf["spark.sql.catalogImplementation"] = "hive"
        metastore = metastore_dir(cfg)
        if metastore is not None:
            # Embedded Derby metastore beside the lake: table names persist across sessions.
            conf["spark.hadoop.javax.jdo.option.ConnectionURL"] = (
                f"jdbc:derby:;databaseName={metastore};create=true"
            )
            conf["spark.driver.extraJavaOptions"] = (
                f"-Dderby.system.home={lake_local / '_catalog'} -Dderby.stream.error.file=/dev/null"
            )
    else:
        conf["spark.sql.catalogImplementation"] = "in-memory"
    for key, value in (cfg.get("spark.conf") or {}).items():
        conf[str(key)] = str(value)
    jars = cached_delta_jars()
    if jars:
        conf["spark.jars"] = ",".join(jars)
    else:
        conf["spark.jars.packages"] = ",".join(delta_packages())
        conf["spark.jars.ivy"] = str(cache_dir() / "ivy")
    return conf


def metastore_dir(cfg: Config) -> Path | None:
    """The embedded Derby metastore of a local lake with the Hive catalog (else None)."""
    lake_local = local_path(cfg.lake_uri)
    if lake_local is None or cfg.get("lake.catalog", "hive") != "hive":
        return None
    return lake_local / "_catalog" / "metastore_db"


def clear_interrupted_metastore(path: Path | None, min_age_s: float = 2.0) -> bool:
    """Remove an embedded metastore whose creation was killed, so the next run can create it.

    Derby writes a database's ``service.properties`` when it creates the database. A process
    killed before that (the first seconds of the first run on a fresh lake) leaves the folder
    without it, and Derby then refuses it in every later run (ERROR XBM0A: "Perhaps Derby was
    brought down in the middle of creating this database. You may want to delete this
    directory"), so the lake could not be opened again. Only that folder is removed, and only
    when no live process has the database open (Derby holds a lock on ``dbex.lck`` while it has
    it open: the lock is tried, not waited for) and no file in it changed in the last
    ``min_age_s`` seconds. Nothing is lost: a metastore that was never created registers no
    table, and every run registers the tables again from their locations (``lake.ensure_table``).

    Returns:
        Whether the folder was removed.
    """
    if path is None or not path.is_dir() or (path / "service.properties").exists():
        return False
    now = time.time()
    if any(now - f.stat().st_mtime < min_age_s for f in path.rglob("*")):
        return False
    lock = path / "dbex.lck"
    if lock.exists():
        with open(lock, "r+b") as fh:
            try:
                fcntl.lockf(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return False  # a live Derby has it open
            fcntl.lockf(fh, fcntl.LOCK_UN)
    log.warning("%s: removing an embedded metastore whose creation was interrupted (no "
                "service.properties); the tables are registered again from their locations", path)
    shutil.rmtree(path)
    return True


@contextlib.contextmanager
def temporary_conf(spark: SparkSession, settings: Mapping[str, str]) -> Iterator[None]:
    """Set runtime SQL settings for the queries run inside the block, then restore (or unset)
    each one as it was."""
    previous = {k: spark.conf.get(k, None) for k in settings}
    for k, v in settings.items():
        spark.conf.set(k, str(v))
    try:
        yield
    finally:
        for k, v in previous.items():
            if v is None:
                spark.conf.unset(k)
            else:
                spark.conf.set(k, v)


def choose_python(submitted: Mapping[str, str], conf: Mapping[str, str]) -> str:
    """The interpreter Spark's Python workers run, made the one pyspark uses.

    pyspark starts its workers with ``$PYSPARK_PYTHON``, else ``python3`` from ``PATH``: for a
    user who runs the venv's ``demandlake`` from a plain shell that is another Python, without
    this package (``ModuleNotFoundError: No module named 'demandlake'`` in the first UDF). So:
    ``spark.pyspark.python`` when spark-submit or the configuration sets it, else
    ``$PYSPARK_PYTHON`` when the environment sets it, else the interpreter running this code.

    Returns:
        The interpreter, also put in ``os.environ["PYSPARK_PYTHON"]`` (read by SparkContext).
    """
    python = (submitted.get("spark.pyspark.python") or conf.get("spark.pyspark.python")
              or os.environ.get("PYSPARK_PYTHON") or sys.executable)
    os.environ["PYSPARK_PYTHON"] = python
    return python


def java_log_options(log_file: Path) -> str:
    """JVM options sending Spark's own (log4j2) log to ``log_file`` instead of the console, so a
    healthy run prints no Java warnings or stack traces; the file keeps them."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    props = log_file.with_suffix(".log4j2.properties")
    props.write_text("\n".join([
        "rootLogger.level = warn",
        "rootLogger.appenderRef.file.ref = file",
        "appender.file.type = File",
        "appender.file.name = file",
        f"appender.file.fileName = {log_file}",
        "appender.file.layout.type = PatternLayout",
        "appender.file.layout.pattern = %d{yyyy-MM-dd HH:mm:ss} %p %c: %m%n%ex",
        # Hive's metastore client warns about every table it cannot describe as Hive's own.
        "logger.hive.name = org.apache.hadoop.hive",
        "logger.hive.level = error",
    ]) + "\n")
    return f"-Dlog4j2.configurationFile={props.as_uri()}"


@contextlib.contextmanager
def _jvm_output_to(path: Path | None) -> Iterator[None]:
    """While the JVM starts, point this process's stdout and stderr at ``path``: the JVM (and
    the Python workers it forks later) inherit them, so what it prints outside log4j (the JDK's
    "Using incubator modules" line, a worker's TensorFlow banner) lands in the log file, not on
    the console. This process's own streams are restored afterwards."""
    if path is None:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "ab") as target:
        os.dup2(target.fileno(), 1)
        os.dup2(target.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def get_spark(cfg: Config, app_name: str | None = None,
              java_log: Path | None = None, extra_jars: Iterable[str] = ()) -> SparkSession:
    """Build (or return the running) SparkSession for ``cfg``.

    Args:
        cfg: resolved configuration.
        app_name: overrides ``spark.app_name``.
        java_log: send the JVM's log to this file (the CLI's runs; ignored under spark-submit,
            whose JVM is already running).
        extra_jars: more jars for the driver and executors (added to ``spark.jars``).

    Returns:
        A session with Delta, the catalog and the project's schemas (bronze, silver, gold, ops).
    """
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    submitted = _submitted_conf()
    clear_interrupted_metastore(metastore_dir(cfg))
    wanted = session_conf(cfg)
    choose_python(submitted, wanted)
    if extra_jars:
        wanted["spark.jars"] = ",".join(filter(None, [wanted.get("spark.jars"), *extra_jars]))
    if "PYSPARK_GATEWAY_PORT" in os.environ:
        java_log = None  # spark-submit started the JVM with its own log settings
    if java_log is not None:
        key = "spark.driver.extraJavaOptions"
        wanted[key] = " ".join(filter(None, [wanted.get(key), java_log_options(java_log)]))
    builder = SparkSession.builder.appName(app_name or cfg.get("spark.app_name", "demandlake"))
    if "spark.master" not in submitted:
        builder = builder.master(cfg.get("spark.master", "local[*]"))
    for key, value in wanted.items():
        if key in submitted:
            continue
        if key == "spark.sql.catalogImplementation" and value == "hive":
            builder = builder.enableHiveSupport()
        builder = builder.config(key, value)
    with _jvm_output_to(java_log):
        spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("DEMANDLAKE_SPARK_LOG_LEVEL", "WARN"))
    return spark


def fetch_jars() -> list[str]:
    """Resolve the Delta jars through Spark's Ivy once and copy them into the cache."""
    existing = cached_delta_jars()
    if existing:
        log.info("Delta jars already cached in %s", delta_jars_dir())
        return existing
    ivy = cache_dir() / "ivy"
    spark = (
        SparkSession.builder.master("local[1]")
        .appName("demandlake-fetch-jars")
        .config("spark.jars.packages", ",".join(delta_packages()))
        .config("spark.jars.ivy", str(ivy))
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    spark.stop()
    target = delta_jars_dir()
    tmp = target.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # Everything Ivy resolved, exactly what spark.jars.packages would have put on the classpath.
    jars = glob.glob(str(ivy / "jars" / "*.jar"))
    if not any("delta-spark" in os.path.basename(j) for j in jars):
        raise RuntimeError(f"Delta jars not resolved into {ivy / 'jars'}: {jars}")
    for jar in jars:
        shutil.copy2(jar, tmp)
    (tmp / ".complete").write_text("\n".join(delta_packages()) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    log.info("cached Delta jars in %s", target)
    return cached_delta_jars()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Spark/Delta session utilities.")
    parser.add_argument("--fetch-jars", action="store_true", help="cache the Delta jars (once)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.fetch_jars:
        for jar in fetch_jars():
            print(jar)
    return 0


if __name__ == "__main__":
    sys.exit(main())
