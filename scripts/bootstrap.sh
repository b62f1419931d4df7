#!/usr/bin/env bash
# Bootstrap used by both README commands (make nightly, make test).
#
# Creates (or reuses) the virtual environment OUTSIDE the clone, keyed by the pinned requirements,
# installs the package into it, builds Horovod once (cached wheel keyed by Horovod + TF + Python
# versions) and pre-fetches the Delta Lake jars so later runs work offline.
# Prints the venv path on its last line of stdout.
#
# Environment:
#   DEMANDLAKE_CACHE   cache root (default ~/.cache/demandlake): venvs, wheels, jars
#   DEMANDLAKE_VENV    use this venv instead of the keyed one
#   DEMANDLAKE_SKIP_HOROVOD=1  do not build/install Horovod (training tests then skip)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${DEMANDLAKE_CACHE:-$HOME/.cache/demandlake}"
PY="${PYTHON:-python3}"
HOROVOD_VERSION="0.28.1"
mkdir -p "$CACHE"

log() { echo "[bootstrap] $*" >&2; }

pyver=$("$PY" -c 'import sys; print(f"py{sys.version_info[0]}{sys.version_info[1]}")')
req_hash=$(cat "$ROOT/requirements.txt" | sha256sum | cut -c1-12)
VENV="${DEMANDLAKE_VENV:-$CACHE/venv-$pyver-$req_hash}"

# Serialize concurrent bootstraps (e.g. two shells, or CI beside a developer) on one cache.
exec 9>"$CACHE/.bootstrap.lock"
flock 9

if [ ! -f "$VENV/.demandlake-ok" ]; then
  log "creating virtual environment $VENV (first run: a few minutes)"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade "pip>=24" wheel setuptools >&2
  "$VENV/bin/pip" install -q -r "$ROOT/requirements.txt" >&2
  touch "$VENV/.demandlake-ok"
else
  log "reusing virtual environment $VENV"
fi

# The package itself, editable, for the `demandlake` command in the venv. The venv is shared by
# every clone on the machine (keyed by requirements.txt), so it is installed from the first clone
# and kept, unless the clone it points at is gone: re-pointing it at every bootstrap would switch
# the code under another clone's running commands. `make` runs each clone's own code whatever
# the venv points at (PYTHONPATH=<clone>/lib, inherited by Spark's Python workers).
# (Checked without PYTHONPATH: make exports <clone>/lib, which imports without any install, and a
# fresh machine's venv then never got its `demandlake` command: `make nightly` failed, exit 127.)
if [ ! -x "$VENV/bin/demandlake" ] \
    || ! (cd / && env -u PYTHONPATH "$VENV/bin/python" -c 'import demandlake' 2>/dev/null); then
  "$VENV/bin/pip" install -q --no-deps --no-build-isolation -e "$ROOT" >&2
fi

# Horovod: no wheels on PyPI, so build from source once and cache the wheel.
if [ "${DEMANDLAKE_SKIP_HOROVOD:-0}" != "1" ]; then
  # The built TensorFlow op library, looked up without importing it (that loads TensorFlow: 5 s).
  if ! "$VENV/bin/python" -c "import importlib.util as u, pathlib, sys; s = u.find_spec('horovod'); sys.exit(0 if s and any(pathlib.Path(s.origin).parent.glob('tensorflow/mpi_lib*.so')) else 1)" 2>/dev/null; then
    tfv=$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("tensorflow-cpu"))')
    WHEELS="$CACHE/wheels/horovod-$HOROVOD_VERSION-tf$tfv-$pyver"
    if ! ls "$WHEELS"/horovod-*.whl >/dev/null 2>&1; then
      log "building Horovod $HOROVOD_VERSION against TF $tfv (once, ~3 minutes) into $WHEELS"
      mkdir -p "$WHEELS.tmp"
      # Traps (docs/STACK.md): without --no-build-isolation TF is invisible to the build;
      # a pip cmake 4.x rejects the bundled gloo unless CMAKE_POLICY_VERSION_MINIMUM is set.
      HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
      HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 HOROVOD_CPU_OPERATIONS=GLOO \
      CMAKE_POLICY_VERSION_MINIMUM=3.5 MAKEFLAGS="-j$(nproc)" \
        "$VENV/bin/pip" wheel --no-deps --no-build-isolation --no-cache-dir \
          "horovod==$HOROVOD_VERSION" -w "$WHEELS.tmp" >&2
      rm -rf "$WHEELS" && mv "$WHEELS.tmp" "$WHEELS"
    fi
    "$VENV/bin/pip" install -q --no-deps "$WHEELS"/horovod-*.whl >&2
    # horovod's runtime deps (not its [spark] extra: that pins pyarrow<11)
    "$VENV/bin/pip" install -q cloudpickle psutil pyyaml packaging cffi >&2
  fi
fi

# The venv's spark-submit starts the driver and the workers with the venv's interpreter, not
# whatever `python3` is first on PATH (which lacks pyspark and this package in a plain shell):
# PYSPARK_PYTHON defaults to it there, so spark-submit --conf spark.pyspark.python, the YAML's
# spark.pyspark.* and a PYSPARK_PYTHON of the caller's own still win. And its JVM maps the class
# archive below when there is one (SPARK_SUBMIT_OPTS: the options spark-submit gives the driver).
# (Earlier bootstraps wrote spark.pyspark.* into pyspark/conf/spark-defaults.conf instead: a file
# in Spark's conf directory, which is on the class path, stops the JDK from using any archive.)
SPARK_CONF="$("$VENV/bin/python" -c 'import os, pyspark; print(os.path.join(os.path.dirname(pyspark.__file__), "conf"))')"
if [ -f "$SPARK_CONF/spark-defaults.conf" ] && [ "$(cat "$SPARK_CONF/spark-defaults.conf")" = "$(printf 'spark.pyspark.python %s\nspark.pyspark.driver.python %s' "$VENV/bin/python" "$VENV/bin/python")" ]; then
  rm -f "$SPARK_CONF/spark-defaults.conf"
  rmdir "$SPARK_CONF" 2>/dev/null || true
fi
# The block is replaced on every run (it ends at its `fi`), so a changed option reaches old venvs.
{ read -r ARCHIVE; read -r ARCHIVE_OPTS; } < <("$VENV/bin/python" -m demandlake.spark --print-class-archive)
sed -i '/^# demandlake: venv defaults/,/^fi$/d' "$VENV/bin/spark-submit"
sed -i '/^exec .*SparkSubmit/i\
# demandlake: venv defaults (scripts/bootstrap.sh)\
export PYSPARK_PYTHON="${PYSPARK_PYTHON:-'"$VENV"'/bin/python}"\
if [ -f "'"$ARCHIVE"'" ] \&\& [[ "${SPARK_SUBMIT_OPTS:-}" != *Archive* ]]; then\
  export SPARK_SUBMIT_OPTS="${SPARK_SUBMIT_OPTS:+$SPARK_SUBMIT_OPTS }'"$ARCHIVE_OPTS"'"\
fi' "$VENV/bin/spark-submit"

# pip's pyspark finds SPARK_HOME by running find_spark_home.py with `python3` from PATH, which in
# a plain shell is not the venv's (no pyspark: "Could not find valid SPARK_HOME"); point its
# default at the venv's interpreter (PYSPARK_DRIVER_PYTHON/PYSPARK_PYTHON still win).
sed -i 's|PYSPARK_PYTHON:-"python3"|PYSPARK_PYTHON:-"'"$VENV"'/bin/python"|' \
  "$VENV/bin/find-spark-home"

# Delta jars: resolve once through Spark's Ivy into the cache; afterwards the session factory
# passes the cached files as spark.jars, so no network is needed.
# Ivy's resolution listing goes to a log file, shown only when the fetch fails.
mkdir -p "$CACHE/jars"
if ! "$VENV/bin/python" -m demandlake.spark --fetch-jars >"$CACHE/jars/fetch.log" 2>&1; then
  cat "$CACHE/jars/fetch.log" >&2
  log "fetching the Delta jars failed (log above, kept in $CACHE/jars/fetch.log)"
  exit 1
fi

# The embedded default's shared catalog (demandlake.metastore): Derby's network server and client
# driver of pyspark's Derby version, fetched once from Maven Central into the cache; the client
# goes into pyspark's jars (every Spark JVM of the venv loads it from there), before the class
# archive below, which is made again whenever that folder changes.
if ! "$VENV/bin/python" -m demandlake.metastore --install >"$CACHE/jars/metastore.log" 2>&1; then
  cat "$CACHE/jars/metastore.log" >&2
  log "fetching Derby's network server and client failed (log above, kept in $CACHE/jars/metastore.log)"
  exit 1
fi

# The JVM class archive (python -m demandlake.spark --build-class-archive): made once per venv and
# JDK, ~30-60 s; then every Spark JVM of this venv starts in about half the time.
if "$VENV/bin/python" -m demandlake.spark --build-class-archive >"$CACHE/jars/class-archive.log" 2>&1; then
  if grep -q ' made in ' "$CACHE/jars/class-archive.log"; then
    log "$(grep ' made in ' "$CACHE/jars/class-archive.log" | sed 's/^INFO [^:]*: //')"
  fi
else
  log "making the JVM class archive failed (Spark's JVMs start without it): $(tail -3 "$CACHE/jars/class-archive.log")"
fi

# SQL endpoint (demandlake serve-sql): the Python client `demandlake sql` and the tests use
# (pure Python; outside requirements.txt so that adding it did not re-key every venv), and the
# read-only rule compiled once with javac (a JRE alone: serve-sql says so and stops).
if ! "$VENV/bin/python" -c 'import pyhive.hive, thrift_sasl, puresasl' 2>/dev/null; then
  "$VENV/bin/pip" install -q "pyhive==0.7.0" "thrift>=0.16" "thrift_sasl>=0.4.3" "pure-sasl>=0.6.2" >&2
fi
if ! "$VENV/bin/python" -m demandlake.sql_endpoint --build-jar >"$CACHE/jars/sql-endpoint.log" 2>&1; then
  log "compiling the SQL endpoint's read-only rule failed (serve-sql will not start): $(tail -3 "$CACHE/jars/sql-endpoint.log")"
fi

echo "$VENV"
