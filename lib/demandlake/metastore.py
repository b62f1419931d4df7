"""The embedded default's catalog, shared: Derby as a network server that every process uses at once.

Spark's Hive catalog keeps the tables' names in a metastore database. Embedded Derby (the JDBC
URL ``jdbc:derby:;databaseName=...``) opens that database inside ONE process: a second process
fails with XSDB6 ("Another instance of Derby may have already booted the database"), so nobody
could query while a nightly ran. The embedded default therefore runs Derby as a network server:
one small JVM per user and port (``metastore.host``/``port``, 127.0.0.1:1527 by default), started
by the first process that needs it and serving each local lake's metastore by its path
(``<lake>/_catalog/metastore_db``). The nightly writer, ``serve-sql``, ``demandlake sql``,
``status`` and a bare ``spark-sql`` (``--properties-file <lake>/_catalog/spark-sql.conf``) use
the same catalog at the same time; Derby's transactions keep it consistent, and a killed client's
open transaction is rolled back by the server. The server stops itself after
``metastore.idle_s`` seconds without a connection; ``demandlake metastore stop`` stops it now.

Jars: Derby's engine (derby, derbyshared, derbytools) ships in pip's pyspark. The network server
(derbynet) and the client driver (derbyclient) of the same version come from Maven Central once
(``python -m demandlake.metastore --install``, run by ``scripts/bootstrap.sh``) into the cache,
and the client is copied into pyspark's jars: every JVM of the venv (spark-submit jobs, the CLI,
spark-sql, the Thrift server) then has the driver on its class path, where the Hive client's
DataNucleus looks for it (``spark.jars`` is not enough: the driver class in derbytools, on the
class path, loads the client's classes). The JVM class archive is made after it.

``metastore.mode: embedded`` keeps the one-process Derby; a ``hive.metastore.uris`` in
``spark.conf`` (a cluster's metastore service) replaces both.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import glob
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

from demandlake.config import Config, local_path
from demandlake.sql_endpoint import listening

log = logging.getLogger(__name__)

CLIENT_DRIVER = "org.apache.derby.jdbc.ClientDriver"
SERVER_MAIN = "org.apache.derby.drda.NetworkServerControl"
MAVEN = "https://repo1.maven.org/maven2"
# What the supervisor's command line carries, so that a pid found in the state file is known to
# be this project's server (a pid can be reused by any process after a reboot).
SUPERVISOR_MODULE = "demandlake.metastore"
SERVER_JVM_OPTIONS = ("-Xmx512m", "-XX:+UseSerialGC", "-Xss1m")


# ---- which catalog ------------------------------------------------------------------------------
def configured_service(cfg: Config) -> bool:
    """Whether ``spark.conf`` points Spark at a metastore service (a cluster's Hive metastore)."""
    conf = cfg.get("spark.conf") or {}
    return bool(conf.get("spark.hadoop.hive.metastore.uris")
                or conf.get("spark.sql.hive.metastore.uris"))


def metastore_dir(cfg: Config) -> Path | None:
    """The Derby metastore database of a local lake with the Hive catalog and no configured
    metastore service (else None): the embedded default's catalog."""
    lake_local = local_path(cfg.lake_uri)
    if (lake_local is None or cfg.get("lake.catalog", "hive") != "hive"
            or configured_service(cfg)):
        return None
    return lake_local.resolve() / "_catalog" / "metastore_db"


def mode(cfg: Config) -> str:
    value = str(cfg.get("metastore.mode", "server")).lower()
    if value not in ("server", "embedded"):
        raise ValueError(f"metastore.mode must be server or embedded, got {value!r}")
    return value


def uses_server(cfg: Config) -> bool:
    """Whether this config's catalog is a lake's Derby database behind the network server."""
    return metastore_dir(cfg) is not None and mode(cfg) == "server"


def shared(cfg: Config) -> bool:
    """Whether several processes can open this config's catalog at once (the network server, or
    a configured metastore service); False for embedded Derby and for in-memory catalogs."""
    if cfg.get("lake.catalog", "hive") != "hive":
        return False
    return configured_service(cfg) or uses_server(cfg)


def address(cfg: Config) -> tuple[str, int]:
    return str(cfg.get("metastore.host", "127.0.0.1")), int(cfg.get("metastore.port", 1527))


def jdbc_url(cfg: Config) -> str:
    """The metastore's JDBC URL through the network server (the database by absolute path)."""
    path = metastore_dir(cfg)
    if path is None:
        raise ValueError(f"{cfg.lake_uri}: no embedded-default catalog (a remote lake, an "
                         "in-memory catalog or a configured metastore service)")
    if ";" in str(path):
        raise ValueError(f"the lake's path may not contain ';' (Derby's URL separator): {path}")
    host, port = address(cfg)
    return f"jdbc:derby://{host}:{port}/{path};create=true"


def spark_settings(cfg: Config) -> dict[str, str]:
    """The Spark settings that point the Hive catalog at the lake's database on the server."""
    return {"spark.hadoop.javax.jdo.option.ConnectionURL": jdbc_url(cfg),
            "spark.hadoop.javax.jdo.option.ConnectionDriverName": CLIENT_DRIVER}


# ---- jars ---------------------------------------------------------------------------------------
def _pyspark_jars() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent / "jars"


def derby_version() -> str:
    """The Derby version pip's pyspark ships (its engine jar); client and server must match it."""
    found = sorted(glob.glob(str(_pyspark_jars() / "derby-[0-9]*.jar")))
    if not found:
        raise RuntimeError(f"no derby-<version>.jar in {_pyspark_jars()}")
    return Path(found[-1]).stem[len("derby-"):]


def jars_dir() -> Path:
    from demandlake.spark import cache_dir

    return cache_dir() / "jars" / f"derby-{derby_version()}"


def client_jar_in_spark() -> Path:
    return _pyspark_jars() / f"derbyclient-{derby_version()}.jar"


def _download(artifact: str, version: str, target: Path) -> None:
    base = f"{os.environ.get('DEMANDLAKE_MAVEN_REPO', MAVEN)}/org/apache/derby/{artifact}/{version}"
    name = f"{artifact}-{version}.jar"
    with urllib.request.urlopen(f"{base}/{name}", timeout=60) as r:
        data = r.read()
    with urllib.request.urlopen(f"{base}/{name}.sha1", timeout=60) as r:
        expected = r.read().decode().split()[0].strip().lower()
    actual = hashlib.sha1(data).hexdigest()
    if actual != expected:
        raise RuntimeError(f"{name}: SHA-1 {actual} is not Maven Central's {expected}")
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)


def install() -> list[Path]:
    """Fetch derbynet and derbyclient (pyspark's Derby version) into the cache once, and copy the
    client into pyspark's jars. Idempotent; no network when both are there.

    Returns:
        The jars the server runs with (engine from pyspark, derbynet from the cache).
    """
    version = derby_version()
    target = jars_dir()
    target.mkdir(parents=True, exist_ok=True)
    for artifact in ("derbynet", "derbyclient"):
        jar = target / f"{artifact}-{version}.jar"
        if not jar.exists():
            _download(artifact, version, jar)
            log.info("fetched %s", jar)
    spark_copy = client_jar_in_spark()
    if not spark_copy.exists():
        tmp = spark_copy.with_name(spark_copy.name + ".tmp")
        shutil.copy2(target / f"derbyclient-{version}.jar", tmp)
        os.replace(tmp, spark_copy)
        log.info("installed %s (Spark's JVMs load the metastore's client driver from there)",
                 spark_copy)
    return server_classpath()


def server_classpath() -> list[Path]:
    version = derby_version()
    jars = [_pyspark_jars() / f"{name}-{version}.jar"
            for name in ("derby", "derbyshared", "derbytools")]
    jars.append(jars_dir() / f"derbynet-{version}.jar")
    missing = [str(j) for j in jars if not j.exists()]
    if missing or not client_jar_in_spark().exists():
        raise RuntimeError(
            "the metastore server's jars are not installed (" + ", ".join(
                missing or [str(client_jar_in_spark())]) + "): run scripts/bootstrap.sh, or "
            "python -m demandlake.metastore --install; or set metastore.mode=embedded")
    return jars


# ---- the server ---------------------------------------------------------------------------------
def state_dir() -> Path:
    """Where the user's servers keep their state (pid, lease, logs): per user, not per
    DEMANDLAKE_CACHE, because the ports are the machine's (a server that another cache started
    is still this user's server on that port)."""
    return Path(os.environ.get("DEMANDLAKE_METASTORE_STATE",
                               Path.home() / ".cache" / "demandlake" / "metastore"))


def _files(port: int) -> dict[str, Path]:
    d = state_dir()
    return {name: d / f"server-{port}.{name}" for name in ("json", "lock", "log", "lease")}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _ours(pid: int) -> bool:
    """Whether ``pid`` is alive and is this project's server supervisor."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return SUPERVISOR_MODULE.encode() in cmdline and b"--serve" in cmdline


def server_info(port: int) -> dict | None:
    """The running server's state (pid, host, port, started) on ``port``, or None."""
    files = _files(port)
    try:
        info = json.loads(files["json"].read_text())
    except (OSError, ValueError):
        return None
    if not _ours(int(info.get("pid", -1))) or not listening(info["host"], port, 1.0):
        return None
    return info


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def ensure_server(cfg: Config, timeout_s: float = 90.0) -> dict:
    """Start the metastore server for ``cfg``'s host and port unless it runs; renew its lease
    (it does not stop for ``metastore.idle_s`` from now, whether or not a client connects).

    Returns:
        The server's state (``pid``, ``host``, ``port``, ``started``).

    Raises:
        RuntimeError: the port is taken by another program, or the server did not start (with
            the end of its log).
    """
    host, port = address(cfg)
    files = _files(port)
    with _locked(files["lock"]):
        _touch(files["lease"])
        info = server_info(port)
        if info is not None:
            return info
        if listening(host, port, 1.0):
            raise RuntimeError(
                f"{host}:{port} is taken by a program that is not this project's metastore "
                "server: set metastore.port to a free port (every process of the lake must use "
                "the same one)")
        classpath = server_classpath()
        idle_s = int(cfg.get("metastore.idle_s", 900))
        with open(files["log"], "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", SUPERVISOR_MODULE, "--serve", "--host", host,
                 "--port", str(port), "--idle-s", str(idle_s),
                 "--classpath", os.pathsep.join(map(str, classpath))],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True, cwd=state_dir(),
                env={k: v for k, v in os.environ.items() if not k.startswith("PYSPARK_GATEWAY")})
        deadline = time.monotonic() + timeout_s
        while not listening(host, port):
            if proc.poll() is not None or time.monotonic() > deadline:
                if proc.poll() is None:
                    proc.terminate()
                tail = files["log"].read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the metastore server on {host}:{port} did not start "
                                   f"(log {files['log']}):\n{tail}")
            time.sleep(0.2)
        info = {"pid": proc.pid, "host": host, "port": port, "started": time.time(),
                "version": derby_version()}
        tmp = files["json"].with_suffix(".tmp")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, files["json"])
        log.info("metastore server started on %s:%d (pid %d, stops after %d s unused)",
                 host, port, proc.pid, idle_s)
        return info


def stop_server(cfg: Config, timeout_s: float = 60.0) -> bool:
    """Stop the server on ``cfg``'s port now (its clients' next catalog call fails until a new
    one starts). Returns whether one was running."""
    host, port = address(cfg)
    files = _files(port)
    with _locked(files["lock"]):
        info = server_info(port)
        if info is None:
            return False
        os.kill(int(info["pid"]), signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _ours(int(info["pid"])) and time.monotonic() < deadline:
            time.sleep(0.2)
        files["json"].unlink(missing_ok=True)
        return True


def established_connections(port: int) -> int:
    """Open TCP connections to local ``port`` (from /proc/net/tcp and tcp6: no JVM to ask)."""
    wanted = f":{port:04X}"
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[1].endswith(wanted) and fields[3] == "01":
                n += 1
    return n


def serve(host: str, port: int, idle_s: int, classpath: str) -> int:
    """The supervisor (``--serve``): run Derby's network server; stop it after ``idle_s``
    seconds with no connection and no lease renewed, or on SIGTERM/SIGINT, the clean way
    (Derby's shutdown command, which closes every database)."""
    files = _files(port)
    java = shutil.which("java", path=os.path.join(os.environ["JAVA_HOME"], "bin")
                        if os.environ.get("JAVA_HOME") else None) or "java"
    base = [java, *SERVER_JVM_OPTIONS, f"-Dderby.system.home={state_dir()}",
            f"-Dderby.stream.error.file={files['log'].with_suffix('.derby.log')}",
            "-cp", classpath, SERVER_MAIN]
    server = subprocess.Popen([*base, "start", "-h", host, "-p", str(port), "-noSecurityManager"])
    stop = {"now": False}

    def on_signal(signum, frame):
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    def shut_down() -> None:
        if server.poll() is None:
            try:
                subprocess.run([*base, "shutdown", "-h", host, "-p", str(port)], timeout=60,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.terminate()
                server.wait(30)

    last_busy = time.time()
    tick = max(0.5, min(5.0, idle_s / 4))
    while server.poll() is None and not stop["now"]:
        time.sleep(tick)
        now = time.time()
        if established_connections(port):
            last_busy = now
        try:
            lease = files["lease"].stat().st_mtime
        except OSError:
            lease = 0.0
        if now - max(last_busy, lease) >= idle_s:
            # Under the lock until the port is closed and the state file gone: a process that
            # starts meanwhile waits, then starts a new server (it must not find the port still
            # open with no state file, and take it for another program's).
            with _locked(files["lock"]):
                try:
                    lease = files["lease"].stat().st_mtime
                except OSError:
                    lease = 0.0
                if (not established_connections(port)
                        and time.time() - max(last_busy, lease) >= idle_s):
                    print(f"{time.strftime('%F %T')} metastore server idle for {idle_s} s: "
                          "stopping", flush=True)
                    shut_down()
                    files["json"].unlink(missing_ok=True)
                    return 0
    # SIGTERM/SIGINT (stop_server holds the lock meanwhile), or the server exited by itself.
    shut_down()
    return 0


# ---- sessions -----------------------------------------------------------------------------------
def prepare(spark, cfg: Config) -> None:
    """Create a new lake's metastore database and its Hive schema in one process at a time.

    Hive's client creates the schema's tables when it first opens an empty database; two
    processes doing that at once deadlock in Derby (ERROR 40001, and pages of stack traces
    before one of them retries). The first session of a lake does it under a lock beside the
    database, and leaves a marker; later sessions skip the lock.
    """
    path = metastore_dir(cfg)
    if path is None:
        return
    marker = path.parent / "metastore.ready"
    if marker.exists():
        return
    with _locked(path.parent / "metastore.init.lock"):
        if not marker.exists():
            spark.catalog.listDatabases()  # opens (creates) the database and the Hive schema
            marker.write_text(f"{jdbc_url(cfg)}\n")


def write_spark_sql_conf(cfg: Config, settings: dict[str, str]) -> Path | None:
    """``<lake>/_catalog/spark-sql.conf``: what a bare ``spark-sql`` (or ``pyspark``,
    ``spark-submit``) needs to see the lake's tables by name: ``--properties-file`` it."""
    path = metastore_dir(cfg)
    if path is None:
        return None
    keys = ("spark.sql.extensions", "spark.sql.catalog.spark_catalog", "spark.sql.session.timeZone",
            "spark.sql.catalogImplementation", "spark.sql.warehouse.dir", "spark.jars",
            "spark.hadoop.javax.jdo.option.ConnectionURL",
            "spark.hadoop.javax.jdo.option.ConnectionDriverName")
    text = ("# Written by demandlake for this lake's catalog (the metastore server must run:\n"
            "# demandlake --lake LAKE metastore start). Use:\n"
            f"#   spark-sql --properties-file {path.parent / 'spark-sql.conf'} -e 'SHOW TABLES IN gold'\n"
            + "".join(f"{k} {settings[k]}\n" for k in keys if settings.get(k)))
    target = path.parent / "spark-sql.conf"
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists() or target.read_text() != text:
        tmp = target.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--install", action="store_true",
                        help="fetch derbynet/derbyclient into the cache, the client into pyspark")
    parser.add_argument("--serve", action="store_true", help="(internal) run the server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1527)
    parser.add_argument("--idle-s", type=int, default=900)
    parser.add_argument("--classpath", default="")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.install:
        install()
        return 0
    if args.serve:
        return serve(args.host, args.port, args.idle_s, args.classpath)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
