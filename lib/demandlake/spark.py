"""The one SparkSession factory: Delta Lake, catalog, Arrow, local defaults, overridable.

Precedence for Spark settings, highest first: ``spark-submit --conf`` (or a session already
running), then ``spark.conf`` from the resolved YAML config, then the built-in Delta/catalog
settings below. Under spark-submit the master is never set here.

``python -m demandlake.spark --fetch-jars`` resolves the Delta jars once (through Spark's own Ivy)
into ``$DEMANDLAKE_CACHE/jars/delta-<version>``; later sessions pass those files as ``spark.jars``
so that no network is needed.

``python -m demandlake.spark --build-class-archive`` (run by ``scripts/bootstrap.sh``) dumps the
classes a session loads into a class-data archive (the JDK's dynamic CDS) that every later JVM of
this environment maps instead of loading and verifying those classes again: the JVMs that the
CLI starts (``get_spark``) and those of the venv's ``spark-submit`` (bootstrap adds the same
option to it). Measured (docs/STACK.md): a trivial spark-submit 11.6 -> 7.3 s, 18.7 -> 11.8 CPU s.
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
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

from pyspark import SparkConf, SparkContext
from pyspark.sql import SparkSession

from demandlake import metastore
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


def class_archive() -> Path:
    """This environment's archive of Spark's classes (``--build-class-archive``); per venv,
    because it is valid only for the exact JVM and class path that made it."""
    return Path(os.environ.get("DEMANDLAKE_CLASS_ARCHIVE",
                               Path(sys.prefix) / "share" / "demandlake" / "spark-classes.jsa"))


def class_archive_jvm_options(archive: Path) -> str:
    """The JVM options that map ``archive`` (also written into the venv's ``spark-submit`` by
    ``scripts/bootstrap.sh``, from ``--print-class-archive``).

    The JVM checks the archive against its own version and class path and, if they differ (a
    new JDK, a SPARK_CONF_DIR that is not empty, another Spark), starts as it would without it;
    its CDS logging is switched off so that such a start stays as quiet as any other."""
    return f"-XX:SharedArchiveFile={archive} -Xshare:auto -Xlog:cds=off -Xlog:cds+dynamic=off"


def class_archive_options(archive: Path | None = None) -> str:
    """``class_archive_jvm_options`` of this environment's archive when it exists, else ''."""
    archive = archive or class_archive()
    return class_archive_jvm_options(archive) if archive.is_file() else ""


@contextlib.contextmanager
def _launch_env(extra_opts: str) -> Iterator[None]:
    """While the JVM starts, add ``extra_opts`` to SPARK_SUBMIT_OPTS (the options spark-submit
    gives the driver's JVM); unless that already names a class archive (a dump, or the user's)."""
    before = os.environ.get("SPARK_SUBMIT_OPTS")
    if extra_opts and "Archive" not in (before or ""):
        os.environ["SPARK_SUBMIT_OPTS"] = " ".join(filter(None, [before, extra_opts]))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("SPARK_SUBMIT_OPTS", None)
        else:
            os.environ["SPARK_SUBMIT_OPTS"] = before


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
        metastore_db = metastore.metastore_dir(cfg)
        if metastore.uses_server(cfg):
            # The embedded default: the lake's Derby database behind the network server, which
            # every process of the lake opens at once (demandlake.metastore).
            conf.update(metastore.spark_settings(cfg))
        elif metastore_db is not None:
            # metastore.mode: embedded: Derby inside this process, one process at a time.
            conf["spark.hadoop.javax.jdo.option.ConnectionURL"] = (
                f"jdbc:derby:;databaseName={metastore_db};create=true"
            )
            conf["spark.driver.extraJavaOptions"] = (
                f"-Dderby.system.home={metastore_db.parent} -Dderby.stream.error.file=/dev/null"
            )
    else:
        conf["spark.sql.catalogImplementation"] = "in-memory"
    for key, value in (cfg.get("spark.conf") or {}).items():
        if str(key) in JAVA_OPTION_KEYS and conf.get(str(key)):
            # The user's JVM options go after the catalog's, not instead of them.
            conf[str(key)] = f"{conf[str(key)]} {value}"
        else:
            conf[str(key)] = str(value)
    jars = cached_delta_jars()
    if jars:
        conf["spark.jars"] = ",".join(jars)
    else:
        conf["spark.jars.packages"] = ",".join(delta_packages())
        conf["spark.jars.ivy"] = str(cache_dir() / "ivy")
    return conf


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


# JVM option lists that several settings add to.
JAVA_OPTION_KEYS = ("spark.driver.extraJavaOptions", "spark.executor.extraJavaOptions")


# Runtime SQL settings chosen per stage by the size of its input (``spark.<switch>: auto``):
# what each switch sets while a stage's input is small. Both cost more than they save on a few
# megabytes: code generation compiles each plan's Java with janino; adaptive execution re-plans
# after every shuffle and runs each query stage as a Spark job of its own.
SMALL_INPUT_OFF = {
    "codegen": {"spark.sql.codegen.wholeStage": "false",
                "spark.sql.codegen.factoryMode": "NO_CODEGEN"},
    "adaptive": {"spark.sql.adaptive.enabled": "false"},
}


def _switch_mode(cfg: Config, switch: str) -> str:
    mode = cfg.get(f"spark.{switch}", "auto")
    # YAML reads a bare on/off as true/false.
    if isinstance(mode, bool):
        mode = "on" if mode else "off"
    mode = str(mode).lower()
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"spark.{switch} must be auto, on or off, got {mode!r}")
    return mode


def stage_settings(spark: SparkSession, cfg: Config, input_bytes: Callable[[], int]) -> dict:
    """The runtime settings a stage runs with, by ``spark.codegen`` and ``spark.adaptive``:
    each ``on`` (Spark's own way), ``off``, or ``auto``: off when ``input_bytes()`` (what the
    stage reads) is under ``spark.<switch>_min_bytes``.

    On a small input, compiling each plan's generated Java costs more than running it: a day
    of the 200-user sample spent a quarter of its JVM CPU in janino, and ran in 0.5-0.7x the
    CPU without code generation; at 1M events (86 MB of bronze) the same stages took 1.86x the
    CPU without it. Adaptive execution splits every query of a small day into more Spark jobs
    (docs/BENCHMARKS.md, "Fixed cost of a day"). Settings the user gave (``spark.conf``,
    ``--conf``) win: ``auto`` leaves a switch alone when the session sets any of its keys.

    Returns:
        Settings for ``temporary_conf`` (empty: Spark's defaults).
    """
    settings: dict[str, str] = {}
    size: int | None = None
    chosen = []
    for switch, off in SMALL_INPUT_OFF.items():
        mode = _switch_mode(cfg, switch)
        if mode == "off":
            settings.update(off)
        if mode != "auto" or any(spark.conf.get(key, None) is not None for key in off):
            continue
        if size is None:
            size = int(input_bytes())
        limit = int(cfg.get(f"spark.{switch}_min_bytes", 8 * 1024 * 1024))
        small = size < limit
        chosen.append(f"{switch} {'off' if small else 'on'} ({'<' if small else '>='} "
                      f"{limit})")
        if small:
            settings.update(off)
    if chosen:
        log.info("input %d bytes: %s", size, ", ".join(chosen))
    return settings


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


def driver_java_options(cfg: Config, configured: str, short_lived: bool) -> str:
    """The driver JVM's options: ``configured`` (the catalog's and the user's
    ``spark.driver.extraJavaOptions``), after ``spark.short_lived_jvm_options`` for a
    ``short_lived`` session, so that the user's, coming later, win."""
    short = str(cfg.get("spark.short_lived_jvm_options") or "") if short_lived else ""
    return " ".join(filter(None, [short, configured]))


def get_spark(cfg: Config, app_name: str | None = None,
              java_log: Path | None = None, extra_jars: Iterable[str] = (),
              short_lived: bool = False) -> SparkSession:
    """Build (or return the running) SparkSession for ``cfg``.

    Args:
        cfg: resolved configuration.
        app_name: overrides ``spark.app_name``.
        java_log: send the JVM's log to this file (the CLI's runs; ignored under spark-submit,
            whose JVM is already running).
        extra_jars: more jars for the driver and executors (added to ``spark.jars``).
        short_lived: the session answers one query or so and ends (``demandlake sql``,
            ``status``): its driver JVM starts with ``spark.short_lived_jvm_options`` first, so
            that a user's own ``spark.driver.extraJavaOptions`` come after them and win.

    Returns:
        A session with Delta, the catalog and the project's schemas (bronze, silver, gold, ops).
    """
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    submitted = _submitted_conf()
    on_server = metastore.uses_server(cfg)  # else embedded Derby, or no catalog database here
    if on_server:
        metastore.ensure_server(cfg)
    else:
        clear_interrupted_metastore(metastore.metastore_dir(cfg))
    wanted = session_conf(cfg)
    choose_python(submitted, wanted)
    if extra_jars:
        wanted["spark.jars"] = ",".join(filter(None, [wanted.get("spark.jars"), *extra_jars]))
    if "PYSPARK_GATEWAY_PORT" in os.environ:
        java_log = None  # spark-submit started the JVM with its own log settings
    key = "spark.driver.extraJavaOptions"
    options = driver_java_options(cfg, wanted.get(key, ""), short_lived)
    if java_log is not None:
        options = " ".join(filter(None, [options, java_log_options(java_log)]))
    if options:
        wanted[key] = options
    builder = SparkSession.builder.appName(app_name or cfg.get("spark.app_name", "demandlake"))
    if "spark.master" not in submitted:
        builder = builder.master(cfg.get("spark.master", "local[*]"))
    for key, value in wanted.items():
        if key in submitted:
            continue
        if key == "spark.sql.catalogImplementation" and value == "hive":
            builder = builder.enableHiveSupport()
        builder = builder.config(key, value)
    with _jvm_output_to(java_log), _launch_env(class_archive_options()):
        spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("DEMANDLAKE_SPARK_LOG_LEVEL", "WARN"))
    if on_server:
        metastore.prepare(spark, cfg)
        metastore.write_spark_sql_conf(cfg, wanted)
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


def _java_identity() -> str:
    """What the archive depends on: the JVM that spark-class runs and Spark's class path."""
    home = _spark_home()
    java = (Path(os.environ["JAVA_HOME"]) / "bin" / "java" if os.environ.get("JAVA_HOME")
            else shutil.which("java") or "java")
    version = subprocess.run([str(java), "-version"], capture_output=True, text=True).stderr
    jars = sorted(os.listdir(home / "jars")) if (home / "jars").is_dir() else []
    return "\n".join([str(java), version.strip(), str(home.resolve()), *jars]) + "\n"


def _spark_home() -> Path:
    """The SPARK_HOME that spark-submit will use (pyspark's own lookup)."""
    from pyspark.find_spark_home import _find_spark_home

    return Path(_find_spark_home())


def _conf_dir() -> Path:
    return Path(os.environ.get("SPARK_CONF_DIR") or _spark_home() / "conf")


def build_class_archive(timeout_s: float = 600) -> Path | None:
    """Make (once per JVM and Spark install) the archive of the classes a session loads.

    A child process runs a small session with ``-XX:ArchiveClassesAtExit``: Delta writes, a
    MERGE, the Hive catalog, a pandas UDF, SQL; the JVM writes the archive when it exits, and the
    archive replaces the old one only when complete. Reused while ``java -version``, SPARK_HOME
    and its jars are the same. The JDK refuses to archive (or later to map) classes when a
    directory on the class path is not empty, and Spark puts its conf directory there: so no
    archive is made while SPARK_CONF_DIR (default ``$SPARK_HOME/conf``) holds files.

    Returns:
        The archive, or None when none could be made (the JVMs then start as before).
    """
    archive = class_archive()
    stamp = archive.with_suffix(".key")
    identity = _java_identity()
    if archive.is_file() and stamp.is_file() and stamp.read_text() == identity:
        log.info("class archive up to date: %s", archive)
        return archive
    conf_dir = _conf_dir()
    if conf_dir.is_dir() and any(conf_dir.iterdir()):
        log.warning("no class archive: %s is not empty (the JDK maps no archive with a "
                    "non-empty directory on the class path); JVMs start without one", conf_dir)
        return None
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_name(f".{archive.name}.{os.getpid()}")
    env = dict(os.environ, SPARK_SUBMIT_OPTS=" ".join(filter(None, [
        os.environ.get("SPARK_SUBMIT_OPTS"), f"-XX:ArchiveClassesAtExit={partial}"])))
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "demandlake.spark", "--class-archive-workload"],
                          env=env, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0 or not partial.is_file() or partial.stat().st_size == 0:
        partial.unlink(missing_ok=True)
        log.warning("no class archive: the archiving run failed (exit %s): %s",
                    proc.returncode, proc.stderr[-2000:])
        return None
    os.replace(partial, archive)
    stamp.write_text(identity)
    log.info("class archive %s (%.0f MB) made in %.1f s", archive,
             archive.stat().st_size / 2**20, time.monotonic() - started)
    return archive


def _class_archive_workload() -> None:
    """What the archiving JVM runs (``build_class_archive``); it then waits for the JVM to exit,
    since the JVM writes the archive on its way out."""
    import tempfile

    from delta.tables import DeltaTable
    from pyspark.sql import Window, functions as F
    from pyspark.sql.functions import pandas_udf

    with tempfile.TemporaryDirectory(prefix="demandlake-class-archive-") as tmp:
        lake = Path(tmp) / "lake"
        spark = get_spark(load_config(lake=str(lake)), app_name="demandlake-class-archive")
        rows = spark.range(2000).selectExpr("id % 50 AS user_id", "id AS n",
                                            "cast(id AS string) AS item")
        path = str(lake / "t")
        rows.write.format("delta").mode("overwrite").save(path)
        (DeltaTable.forPath(spark, path).alias("t").merge(rows.alias("s"), "t.n = s.n")
         .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute())
        spark.sql("CREATE DATABASE IF NOT EXISTS gold")
        spark.sql(f"CREATE TABLE IF NOT EXISTS gold.t USING delta LOCATION '{path}'")

        @pandas_udf("double")
        def half(n):
            return n / 2.0

        by_user = Window.partitionBy("user_id").orderBy("n")
        (spark.table("gold.t").withColumn("k", F.row_number().over(by_user))
         .groupBy("user_id").agg(F.max(half("n")).alias("m"), F.count("*").alias("c"))
         .join(rows.select("user_id").distinct(), "user_id").collect())
        spark.sql("SELECT user_id, count(*) FROM gold.t GROUP BY user_id ORDER BY 2").collect()
        spark.sql(f"DESCRIBE HISTORY delta.`{path}`").collect()
        spark.stop()
        gateway = SparkContext._gateway
        proc = getattr(gateway, "proc", None)
        if proc is not None:
            gateway.shutdown()
            proc.stdin.close()
            proc.wait(timeout=300)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Spark/Delta session utilities.")
    parser.add_argument("--fetch-jars", action="store_true", help="cache the Delta jars (once)")
    parser.add_argument("--build-class-archive", action="store_true",
                        help="make this environment's archive of Spark's classes (once)")
    parser.add_argument("--print-class-archive", action="store_true",
                        help="print this environment's archive path and the JVM options that "
                             "map it (two lines; for scripts/bootstrap.sh)")
    parser.add_argument("--class-archive-workload", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.print_class_archive:
        print(class_archive())
        print(class_archive_jvm_options(class_archive()))
        return 0
    if args.class_archive_workload:
        _class_archive_workload()
        return 0
    if args.build_class_archive:
        built = build_class_archive()
        if built is not None:
            print(built)
        return 0
    if args.fetch_jars:
        for jar in fetch_jars():
            print(jar)
    return 0


if __name__ == "__main__":
    sys.exit(main())
