#!/usr/bin/env bash
# Explicit check, not part of the pytest suite: the spark-submit jobs run UNCHANGED on a real
# (non-local) Spark master, with the package shipped on --py-files and NOT installed in the
# Python that the driver and the executors run.
#
#   bash scripts/cluster_check.sh [VENV]      # VENV: project venv (default: scripts/bootstrap.sh)
#
# What it does, all under one temporary folder (kept on failure, or with DEMANDLAKE_CHECK_KEEP=1):
#   1. builds the wheel from a copy of this checkout (pip wheel; the checkout is left untouched);
#   2. makes a "no-demandlake" venv: the project venv's base interpreter plus a plain .pth line
#      naming the project venv's site-packages. A path line in a .pth adds that folder without
#      running the .pth files inside it, so pyspark, delta, pandas... import but the editable
#      demandlake does not (checked);
#   3. starts a standalone master and one worker (2 cores, 3 GiB) from the venv's pyspark, and
#      stops them on exit (trap), whatever happens;
#   4. generates a tiny raw dataset (demandlake generate) and runs jobs/ingest.py (both generated
#      dates), jobs/sessions.py and jobs/features.py (last date) through
#      `spark-submit --master spark://... --py-files demandlake-*.whl`, with
#      PYSPARK_PYTHON/PYSPARK_DRIVER_PYTHON = the no-demandlake venv;
#   5. submits a verification application (--py-files: the same wheel under a .zip name, see
#      below) that checks the Delta tables' counts against the raw files, runs a probe and the
#      project's own pandas UDF (scoring.sentiment.review_terms) on the executors, and checks
#      where demandlake was imported from on the driver and on the executors;
#   6. checks the master's JSON (every application FINISHED) and the worker's work folder
#      (executor logs with tasks for every application), then prints a summary.
# Exits non-zero on any failure.
#
# Why the .zip name for step 5: pyspark puts only .zip/.egg/.jar files from --py-files on the
# EXECUTORS' Python path (pyspark.core.context.SparkContext.PACKAGE_EXTENSIONS; spark-submit
# --help: ".zip, .egg, or .py files"). A .whl reaches the driver in client mode, but executor-side
# Python (UDFs, mapInPandas: the score stage) fails with "No module named 'demandlake'" on a
# standalone master. A wheel is a zip, so the same file under a .zip name works.
# DEMANDLAKE_CHECK_VERIFY_SHIP=whl ships the .whl to the verification app as well, to reproduce that.
#
# Environment (all optional):
#   DEMANDLAKE_CHECK_PORT          master port (7077); web UIs on DEMANDLAKE_CHECK_UI_PORT (8090)
#                                  and that + 1 (worker)
#   DEMANDLAKE_CHECK_USERS/_DAYS   size of the generated data (200 users, 2 days from 2026-11-01)
#   DEMANDLAKE_CHECK_KEEP=1        keep the work folder after a successful run
#   DEMANDLAKE_CHECK_VERIFY_SHIP   zip (default) or whl: how the verification app gets the package
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-}"
if [ -z "$VENV" ]; then
  VENV="$("$ROOT/scripts/bootstrap.sh" | tail -n 1)"
fi
VENV="$(cd "$VENV" && pwd)"
PORT="${DEMANDLAKE_CHECK_PORT:-7077}"
UI_PORT="${DEMANDLAKE_CHECK_UI_PORT:-8090}"
WORKER_UI_PORT=$((UI_PORT + 1))
USERS="${DEMANDLAKE_CHECK_USERS:-200}"
DAYS="${DEMANDLAKE_CHECK_DAYS:-2}"
START_DATE="2026-11-01"
RUN_DATE="$("$VENV/bin/python" -c "import datetime as d; print(d.date.fromisoformat('$START_DATE') + d.timedelta(days=$DAYS - 1))")"
VERIFY_SHIP="${DEMANDLAKE_CHECK_VERIFY_SHIP:-zip}"
MASTER_URL="spark://127.0.0.1:$PORT"
NICE=(nice -n 10)

WORK="$(mktemp -d "${TMPDIR:-/tmp}/demandlake-cluster-check.XXXXXX")"
LOGS="$WORK/logs"
mkdir -p "$LOGS"
MASTER_PID="" WORKER_PID="" OK=0

log() { echo "[cluster_check] $*" >&2; }
die() { log "FAILED: $*"; exit 1; }
now() { date +%s.%N; }
secs() { "$VENV/bin/python" -c "print(f'{$2 - $1:.1f}')"; }

stop_pid() {  # stop one process we started: TERM, up to 20 s, then KILL
  local pid="$1"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || return 0; sleep 1; done
  kill -9 "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_pid "$WORKER_PID"   # the worker stops its executors
  stop_pid "$MASTER_PID"
  if [ "$OK" = 1 ] && [ "${DEMANDLAKE_CHECK_KEEP:-0}" != 1 ]; then
    rm -rf "$WORK"
  else
    log "work folder kept: $WORK (logs in $LOGS)"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

unset PYTHONPATH SPARK_CONF_DIR
export SPARK_HOME
SPARK_HOME="$("$VENV/bin/python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')"
export SPARK_LOCAL_IP=127.0.0.1 SPARK_LOCAL_DIRS="$WORK/local" SPARK_DAEMON_MEMORY=512m
export OMP_NUM_THREADS=2 TF_CPP_MIN_LOG_LEVEL=2 DEMANDLAKE_SPARK_LOG_LEVEL=WARN
mkdir -p "$SPARK_LOCAL_DIRS"
log "venv $VENV; SPARK_HOME $SPARK_HOME; work folder $WORK"

# --- 1. the wheel, built from a copy (pip wheel would leave build/ and egg-info in the clone) ---
t0=$(now)
SRC="$WORK/src"
mkdir -p "$SRC"
if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  # tracked and untracked-but-not-ignored files: the working tree as it is, without caches
  # (--ignore-failed-read: a tracked file deleted in the working tree is simply left out)
  (cd "$ROOT" && git ls-files -z -co --exclude-standard -- setup.py requirements.txt README.md conf lib \
     | tar --null -T - --ignore-failed-read -cf - 2>/dev/null) | tar -x -C "$SRC"
else
  (cd "$ROOT" && tar --exclude=__pycache__ --exclude='*.egg-info' --exclude=conf/local.yaml \
     -cf - setup.py requirements.txt README.md conf lib) | tar -x -C "$SRC"
fi
(cd "$SRC" && "${NICE[@]}" "$VENV/bin/pip" wheel -q --no-deps --no-build-isolation -w "$WORK/dist" . \
   >"$LOGS/wheel.log" 2>&1) || { cat "$LOGS/wheel.log" >&2; die "pip wheel"; }
WHEEL="$(ls "$WORK"/dist/demandlake-*.whl)"
"$VENV/bin/python" - "$WHEEL" <<'EOF' || die "wheel lacks demandlake/conf/defaults.yaml"
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
sys.exit(0 if "demandlake/conf/defaults.yaml" in names else 1)
EOF
mkdir -p "$WORK/dist-zip"
ZIP="$WORK/dist-zip/$(basename "$WHEEL" .whl).zip"
cp "$WHEEL" "$ZIP"
T_WHEEL=$(secs "$t0" "$(now)")
log "wheel $(basename "$WHEEL") ($(stat -c %s "$WHEEL") bytes) in ${T_WHEEL} s"

# --- 2. the no-demandlake venv -----------------------------------------------------------------
read -r BASE_PY SITE < <("$VENV/bin/python" -c '
import os, sys, sysconfig
v = sys.version_info
print(os.path.join(sys.base_prefix, "bin", f"python{v[0]}.{v[1]}"), sysconfig.get_paths()["purelib"])')
NODL="$WORK/nodl-venv"
"$BASE_PY" -m venv --without-pip "$NODL"
NODL_SITE="$("$NODL/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$SITE" > "$NODL_SITE/project-venv-deps.pth"
PY="$NODL/bin/python"
(cd "$WORK" && "$PY" -c 'import pyspark, delta, pandas, pyarrow, yaml') || die "dependencies do not import in $NODL"
if (cd "$WORK" && "$PY" -c 'import demandlake' 2>/dev/null); then
  die "demandlake imports in the no-demandlake venv: the check would prove nothing"
fi
log "no-demandlake venv $NODL: pyspark/delta import, demandlake does not"
export PYSPARK_PYTHON="$PY" PYSPARK_DRIVER_PYTHON="$PY"

# Delta jars: the bootstrap's offline cache, read through the WHEEL (else Maven coordinates).
JARS="$(cd "$WORK" && PYTHONPATH="$WHEEL" "$PY" -c \
  'from demandlake.spark import cached_delta_jars; print(",".join(cached_delta_jars()))')" \
  || die "demandlake.spark does not import from the wheel"
if [ -n "$JARS" ]; then
  DELTA_ARGS=(--jars "$JARS")
else
  PKGS="$(cd "$WORK" && PYTHONPATH="$WHEEL" "$PY" -c \
    'from demandlake.spark import delta_packages; print(",".join(delta_packages()))')"
  DELTA_ARGS=(--packages "$PKGS" --conf "spark.jars.ivy=${DEMANDLAKE_CACHE:-$HOME/.cache/demandlake}/ivy")
fi

# --- 3. the standalone cluster -------------------------------------------------------------------
for p in "$PORT" "$UI_PORT" "$WORKER_UI_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then die "port $p is in use"; fi
done
json() { curl -sf "http://127.0.0.1:$1/json/"; }
wait_for() {  # wait_for WHAT SECONDS PYTHON-EXPRESSION-ON-MASTER-JSON
  local what="$1" limit="$2" expr="$3" j
  for _ in $(seq "$limit"); do
    if j="$(json "$UI_PORT" 2>/dev/null)" && \
       "$VENV/bin/python" -c "import json, sys; d = json.loads(sys.argv[1]); sys.exit(0 if ($expr) else 1)" "$j"; then
      return 0
    fi
    sleep 1
  done
  die "$what not up after $limit s (see $LOGS)"
}
t0=$(now)
"${NICE[@]}" "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.master.Master \
  --host 127.0.0.1 --port "$PORT" --webui-port "$UI_PORT" >"$LOGS/master.log" 2>&1 &
MASTER_PID=$!
wait_for "master" 120 'd["status"] == "ALIVE"'
mkdir -p "$WORK/worker"
"${NICE[@]}" "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.worker.Worker "$MASTER_URL" \
  --host 127.0.0.1 --cores 2 --memory 3g --webui-port "$WORKER_UI_PORT" --work-dir "$WORK/worker" \
  >"$LOGS/worker.log" 2>&1 &
WORKER_PID=$!
wait_for "worker" 120 'd["aliveworkers"] == 1'
T_CLUSTER=$(secs "$t0" "$(now)")
log "master $MASTER_URL (pid $MASTER_PID) and one worker (pid $WORKER_PID, 2 cores, 3 GiB) up in ${T_CLUSTER} s"

# --- 4. data and the jobs ------------------------------------------------------------------------
LAKE="$WORK/lake"
t0=$(now)
(cd "$WORK" && "${NICE[@]}" "$VENV/bin/demandlake" --lake "$LAKE" generate --users "$USERS" \
   --days "$DAYS" --start-date "$START_DATE" --workers 1 >"$LOGS/generate.log" 2>&1) \
  || { tail -n 20 "$LOGS/generate.log" >&2; die "demandlake generate"; }
T_GENERATE=$(secs "$t0" "$(now)")
RAW_EVENTS=$(cat "$LAKE"/raw/events/dt=*/*.jsonl | wc -l)
RAW_REVIEWS=$( (cat "$LAKE"/raw/reviews/dt=*/*.jsonl 2>/dev/null || true) | wc -l)
log "generated $RAW_EVENTS events, $RAW_REVIEWS reviews ($USERS users, $DAYS days) in ${T_GENERATE} s"

# Small-machine settings, passed the documented way (--conf-file), as tests/airflow does.
CONF="$WORK/small.yaml"
cat >"$CONF" <<'EOF'
lake:
  catalog: in-memory
spark:
  conf:
    spark.sql.shuffle.partitions: "2"
    spark.default.parallelism: "2"
    spark.sql.adaptive.enabled: "false"
    spark.databricks.delta.snapshotPartitions: "1"
EOF

APPS=() WALLS=()
submit() {  # submit NAME PY_FILES APPLICATION ARGS...; ALLOW_FAIL=1: return 1 instead of dying
  local name="$1" pyfiles="$2" app="$3" t rc=0
  shift 3
  t=$(now)
  log "spark-submit $name ..."
  if ! (cd "$WORK" && "${NICE[@]}" "$VENV/bin/spark-submit" --master "$MASTER_URL" \
        --driver-memory 1g --executor-memory 2g --total-executor-cores 2 \
        "${DELTA_ARGS[@]}" --conf spark.ui.enabled=false --py-files "$pyfiles" \
        "$app" "$@" >"$LOGS/$name.log" 2>&1); then
    rc=1
    [ "${ALLOW_FAIL:-0}" = 1 ] || { tail -n 30 "$LOGS/$name.log" >&2; die "$name (log: $LOGS/$name.log)"; }
  fi
  APPS+=("$name") WALLS+=("$(secs "$t" "$(now)")")
  log "$name $([ "$rc" = 0 ] && echo done || echo FAILED) in ${WALLS[-1]} s"
  return "$rc"
}
COMMON=(--lake "$LAKE" --conf-file "$CONF")
submit ingest "$WHEEL" "$ROOT/jobs/ingest.py" --start-date "$START_DATE" --end-date "$RUN_DATE" "${COMMON[@]}"
submit sessions "$WHEEL" "$ROOT/jobs/sessions.py" --run-date "$RUN_DATE" "${COMMON[@]}"
submit features "$WHEEL" "$ROOT/jobs/features.py" --run-date "$RUN_DATE" "${COMMON[@]}"
for name in ingest sessions features; do  # the jobs' drivers read the defaults packaged in the wheel
  grep -qF "resolved config (from ['$WHEEL/demandlake/conf/defaults.yaml'" "$LOGS/$name.log" \
    || die "$name: config not resolved from the wheel's packaged defaults (see $LOGS/$name.log)"
done

# --- 5. verification application -----------------------------------------------------------------
cat >"$WORK/verify.py" <<'EOF'
"""Counts of the Delta tables against the raw files; demandlake on the driver and executors."""
import argparse, datetime as dt, json, os, socket, sys

p = argparse.ArgumentParser()
for flag in ("--lake", "--conf-file", "--run-date", "--ship-name", "--worker-dir", "--python"):
    p.add_argument(flag, required=True)
p.add_argument("--raw-events", type=int, required=True)
p.add_argument("--raw-reviews", type=int, required=True)
a = p.parse_args()

import demandlake
from demandlake import lake
from demandlake.config import load_config
from demandlake.spark import get_spark
from pyspark.sql import functions as F

cfg = load_config([a.conf_file], [], a.lake)
spark = get_spark(cfg, app_name="demandlake-cluster-verify")
sc = spark.sparkContext
run_date = dt.date.fromisoformat(a.run_date)
problems = []

def expect(what, ok):
    if not ok:
        problems.append(what)

events = lake.read(spark, cfg, "bronze.events")
n_events = events.count()
n_users = events.where(F.col("event_date") <= run_date).select("user_id").distinct().count()
n_reviews = lake.read(spark, cfg, "bronze.reviews").count()
n_quarantine = lake.read(spark, cfg, "bronze.quarantine").count()
s = lake.read(spark, cfg, "silver.sessions").agg(
    F.count(F.lit(1)).alias("n"), F.sum("n_events").alias("events"),
    F.countDistinct("user_id").alias("users")).first()
n_features = (lake.read(spark, cfg, "gold.user_features")
              .where(F.col("snapshot_date") == run_date).count())
runs = sorted((r["stage"], str(r["run_date"]), r["status"])
              for r in lake.read(spark, cfg, "ops.runs").collect())
expect(f"bronze.events {n_events} != raw events {a.raw_events}", n_events == a.raw_events)
expect(f"bronze.reviews {n_reviews} != raw reviews {a.raw_reviews}", n_reviews == a.raw_reviews)
expect(f"bronze.quarantine has {n_quarantine} rows", n_quarantine == 0)
expect("silver.sessions is empty", s["n"] > 0)
expect(f"silver.sessions hold {s['events']} events, bronze {n_events}", s["events"] == n_events)
expect(f"silver.sessions users {s['users']} != bronze users {n_users}", s["users"] == n_users)
expect(f"gold.user_features {n_features} rows != users {n_users}", n_features == n_users)
expect(f"ops.runs not all succeeded: {runs}", runs and all(r[2] == "succeeded" for r in runs))

def probe(_):
    import os, socket, sys
    try:
        import demandlake
        from demandlake.config import load_config
        found, defaults = demandlake.__file__, load_config().sources[0]
    except Exception as exc:  # reported, not raised: the summary says what went wrong
        found, defaults = f"{type(exc).__name__}: {exc}", None
    yield {"host": socket.gethostname(), "pid": os.getpid(), "cwd": os.getcwd(),
           "python": sys.executable, "demandlake": found, "defaults": defaults}

executors = sc.parallelize(range(2), 2).mapPartitions(probe).collect()
for e in executors:
    expect(f"executor python {e['python']} is not {a.python}", e["python"] == a.python)
    expect(f"executor cwd {e['cwd']} is not under the worker's {a.worker_dir}",
           e["cwd"].startswith(a.worker_dir + "/app-"))
    expect(f"executor imported demandlake from {e['demandlake']}, not {a.ship_name}",
           f"{a.ship_name}/demandlake/__init__.py" in e["demandlake"])
    expect(f"executor read defaults from {e['defaults']}",
           f"{a.ship_name}/demandlake/conf/defaults.yaml" in (e["defaults"] or ""))

udf_rows = udf_error = None
try:  # the project's own pandas UDF (jieba presegmentation), run by the executors' Python
    from demandlake.scoring.sentiment import review_terms
    terms = review_terms(lake.read(spark, cfg, "bronze.reviews").select("review_id", "text"))
    udf_rows = terms.where(F.size("terms") > 0).count()
except Exception as exc:
    udf_error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
expect(f"review_terms UDF: {udf_error or udf_rows}", udf_error is None and udf_rows == n_reviews)

result = {
    "app_id": sc.applicationId, "master": sc.master,
    "driver_demandlake": demandlake.__file__, "driver_defaults": cfg.sources[0],
    "bronze_events": n_events, "bronze_reviews": n_reviews, "bronze_quarantine": n_quarantine,
    "silver_sessions": s["n"], "silver_session_events": s["events"], "users": n_users,
    "gold_user_features": n_features, "ops_runs": runs, "executors": executors,
    "review_terms_udf_rows": udf_rows, "review_terms_udf_error": udf_error, "problems": problems,
}
print("VERIFY_RESULT " + json.dumps(result, default=str))
spark.stop()
sys.exit(1 if problems else 0)
EOF
case "$VERIFY_SHIP" in
  zip) VERIFY_PYFILES="$ZIP" ;;
  whl) VERIFY_PYFILES="$WHEEL" ;;
  *) die "DEMANDLAKE_CHECK_VERIFY_SHIP must be zip or whl, not $VERIFY_SHIP" ;;
esac
ALLOW_FAIL=1 submit verify "$VERIFY_PYFILES" "$WORK/verify.py" --lake "$LAKE" --conf-file "$CONF" \
  --run-date "$RUN_DATE" --ship-name "$(basename "$VERIFY_PYFILES")" --worker-dir "$WORK/worker" \
  --python "$PY" --raw-events "$RAW_EVENTS" --raw-reviews "$RAW_REVIEWS" || true
RESULT="$(grep '^VERIFY_RESULT ' "$LOGS/verify.log" | tail -n 1 | cut -d' ' -f2- || true)"
[ -n "$RESULT" ] || die "verify printed no result (log: $LOGS/verify.log)"

# --- 6. the master's and the worker's view, and the summary ---------------------------------------
MASTER_JSON="$(json "$UI_PORT")" || die "master JSON"
WALL_LIST="$(IFS=,; echo "${WALLS[*]}")"
NAME_LIST="$(IFS=,; echo "${APPS[*]}")"
"$VENV/bin/python" - "$MASTER_JSON" "$RESULT" "$WORK/worker" "$NAME_LIST" "$WALL_LIST" <<EOF
import glob, json, os, sys
master, result = json.loads(sys.argv[1]), json.loads(sys.argv[2])
worker_dir, names, walls = sys.argv[3], sys.argv[4].split(","), sys.argv[5].split(",")
problems = list(result["problems"])
apps = sorted(master["completedapps"] + master["activeapps"], key=lambda a: a["starttime"])
if len(apps) != len(names):
    problems.append(f"master knows {len(apps)} applications, {len(names)} were submitted")
print()
print("cluster_check: $MASTER_URL, one worker (2 cores, 3 GiB), executors 2 cores / 2 GiB,"
      " driver 1 GiB (client mode)")
print("data: $USERS users x $DAYS days from $START_DATE; run date $RUN_DATE;"
      " wheel shipped as $(basename "$WHEEL") to the jobs, as ${VERIFY_SHIP} to verify")
print(f"{'step':10} {'app id':26} {'state':9} {'wall s':>7} {'master s':>8} {'tasks on worker':>15}")
for name, wall, app in zip(names, walls, apps):
    logs = glob.glob(os.path.join(worker_dir, app["id"], "*", "stderr"))
    tasks = sum(open(f, errors="replace").read().count("Running task") for f in logs)
    print(f"{name:10} {app['id']:26} {app['state']:9} {wall:>7} {app['duration'] / 1000:8.1f} "
          f"{tasks:15d}")
    if app["state"] != "FINISHED":
        problems.append(f"{name}: application {app['id']} is {app['state']}")
    if not logs or tasks == 0:
        problems.append(f"{name}: no executor tasks logged under {worker_dir}/{app['id']}")
r = result
print(f"bronze.events {r['bronze_events']} (raw $RAW_EVENTS), bronze.reviews {r['bronze_reviews']}"
      f" (raw $RAW_REVIEWS), quarantine {r['bronze_quarantine']}")
print(f"silver.sessions {r['silver_sessions']} ({r['silver_session_events']} events),"
      f" gold.user_features {r['gold_user_features']} for $RUN_DATE ({r['users']} users)")
print(f"ops.runs: {', '.join(f'{s} {d} {st}' for s, d, st in r['ops_runs'])}")
print(f"driver: demandlake from {r['driver_demandlake']}")
for e in r["executors"]:
    print(f"executor pid {e['pid']} on {e['host']}: cwd {e['cwd']}, python {e['python']},"
          f" demandlake from {e['demandlake']}")
print(f"review_terms pandas UDF on the executors: {r['review_terms_udf_rows']} reviews with terms"
      + (f" (error: {r['review_terms_udf_error']})" if r['review_terms_udf_error'] else ""))
print("wheel build $T_WHEEL s, cluster start $T_CLUSTER s, generate $T_GENERATE s")
if problems:
    print("PROBLEMS:\n  " + "\n  ".join(problems))
    sys.exit(1)
print("OK")
EOF
OK=1
