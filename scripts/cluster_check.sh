#!/usr/bin/env bash
# Explicit check, not part of the pytest suite: the WHOLE nightly (every stage of
# pipeline.graph.NIGHTLY, for every date of a small faulty raw sample) runs as its spark-submit jobs,
# unchanged, on a standalone master with TWO workers, with the package shipped on --py-files and
# NOT installed in the Python that the driver and the executors run, and with both models trained
# by Horovod through Spark (training.launcher=spark: one rank per executor). The same input then
# goes through the plain local CLI (`demandlake nightly`), and every bronze/silver/gold table of the
# two lakes must be equal, row for row.
#
#   bash scripts/cluster_check.sh [VENV]      # VENV: project venv (default: scripts/bootstrap.sh)
#
# STATUS (2026-12-06, docs/OPERATIONS.md "Running on a cluster"): PASSED with the default zip on
# --py-files, in 40 min 43 s: 13 of 14 tables equal row for row, gold.user_features equal to
# 1e-9 relative (last bit of 4 floats), both models' weights identical.
#
# What it does, all under one temporary folder (kept on failure, or with DEMANDLAKE_CHECK_KEEP=1):
#   1. builds the wheel from a copy of this checkout (pip wheel; the checkout is left untouched)
#      and a copy of it under a .zip name (see below);
#   2. makes a "no-demandlake" venv: the project venv's base interpreter plus a plain .pth line
#      naming the project venv's site-packages. A path line in a .pth adds that folder without
#      running the .pth files inside it, so pyspark, delta, horovod, tensorflow... import but the
#      editable demandlake does not (checked). Every application is told to run it with
#      --conf spark.pyspark.python / spark.pyspark.driver.python (those settings beat any
#      PYSPARK_PYTHON, e.g. the project venv's that the venv's spark-submit defaults to, where
#      the editable demandlake imports);
#   3. starts a standalone master and two workers on 127.0.0.1 (1 core, 2 GiB each, own ports and
#      work folders) from the venv's pyspark, and stops them on exit (trap), whatever happens;
#      every application gets one 1-core executor on each worker and waits for both to register
#      before it schedules anything (spark.scheduler.minRegisteredResourcesRatio=1);
#   4. generates a small raw sample with `demandlake generate --faults` (late events, repeats,
#      conflicting ids, bad records, Chinese/English reviews) and, for each date in order, runs
#      every stage of pipeline.graph.NIGHTLY (read from the wheel's graph.py, with each stage's
#      Stage.job_flags(), e.g. --if-none-serving) as `spark-submit --master spark://...
#      --py-files demandlake-*.zip jobs/<stage>.py --run-date D ...` run by the no-demandlake
#      venv, with --set training.launcher=spark (training.num_proc: 2, one rank per executor);
#   5. submits a verification application that checks where demandlake was imported from on the
#      driver, on BOTH executors and in 2 Horovod ranks started the way training starts them
#      (horovod.spark.run), runs the project's own pandas UDF (review_terms) on the executors,
#      checks ops.runs (every stage of every date succeeded; each model trained at least once)
#      and MLflow (every training run says launcher spark and 2 ranks);
#   6. checks the master's JSON (every application FINISHED, both workers alive) and the workers'
#      work folders (each application had an executor on each worker; tasks ran on both workers,
#      and every training application that trained ran tasks on both: one rank each);
#   7. runs the same raw input through the local CLI into a second lake:
#      `demandlake --lake L2 --conf-file SAME --set lake.raw_uri=RAW
#       --set training.launcher=horovodrun nightly --run-date D` for each date (project venv,
#      local[2], PYTHONPATH = the copied checkout's lib/, so it runs the code in the wheel even
#      when the shared venv's editable install points elsewhere), takes both lakes' snapshots (`python -m demandlake.faults --snapshot-of`: every
#      bronze/silver/gold row as canonical JSON, run ids left out) and compares them table by
#      table; prints the tables that differ with sample rows, and the summary.
# Exits non-zero on any failure.
#
# Why the comparison is exact, models included: both runs read the same --conf-file, which makes
# training tiny and deterministic (training.deterministic, epochs 1, small dimensions, no
# baselines, one thread per rank) and gives BOTH runs the same number of ranks, 2. The cluster
# starts them with horovod.spark.run (one per executor), the local run with horovodrun --gloo on
# this host. The ranks' arithmetic is then the same: the same seed and initial weights, the same
# shards (rank r reads files[r::2], or half the rows, of the same Delta snapshot; the two lakes'
# files hold the same rows per part number, since both hash-partition into the same 2
# partitions), the rows of a shard in key order (training.data.read_shard's order_by: the order
# inside a Parquet file differs between the lakes, and before that sort the sequence model's
# weights differed by up to 2e-3 and every forecast by ~1e-6), the same epoch order (a function
# of seed, epoch and rank), the same allreduced gradients; only the transport differs. Rows
# are paired by everything but their floats, which must agree to DEMANDLAKE_CHECK_RTOL
# (1e-9 relative): a sum of doubles in another order (a mean over 2 executors' partial sums
# against local[2]'s) may differ in the last bit. With 1 local rank against 2 the weights, and so every score, would differ
# for a legitimate reason, and a comparison of only the model-free tables would leave
# review_sentiment and score unchecked. DEMANDLAKE_CHECK_LOCAL_LAUNCHER=spark starts the local
# ranks with horovod.spark.run on local[2] instead.
#
# How the package gets there (DEMANDLAKE_CHECK_SHIP):
#   zip (default)  --py-files demandlake-*.zip: the wheel under a .zip name. pyspark puts only
#                  .zip/.egg/.jar files from --py-files on the EXECUTORS' Python path
#                  (SparkContext.PACKAGE_EXTENSIONS), so a .whl reaches the driver in client mode
#                  but executor-side Python fails with "No module named 'demandlake'".
#                  Training from a zip failed until 2026-12-06 (fixed in the library):
#                  horovod.spark.run starts each rank as a new process whose Python path lacks the
#                  shipped archive ("[0]<stderr>:ModuleNotFoundError: No module named
#                  'demandlake'"; now training.launch.with_shipped_archives puts it there), and
#                  MLflow's log_model could not copy the package from inside the zip (now
#                  training.tracking.package_folder extracts it to a temporary folder).
#   whl            --py-files demandlake-*.whl, to reproduce the .whl problem above.
#   installed      the wheel pip-installed (--no-deps --target) into the Python that the driver,
#                  the executors and the ranks run (the README's "or install it on the nodes"),
#                  no --py-files.
#
# Environment (all optional):
#   DEMANDLAKE_CHECK_PORT          master port (7077); web UIs on DEMANDLAKE_CHECK_UI_PORT (8090)
#                                  and the next two (workers)
#   DEMANDLAKE_CHECK_USERS/_DAYS   size of the generated data (40 users, 3 days from 2026-11-01;
#                                  with a 1-day horizon the third day is the first with train and
#                                  validation cutoffs, so the sequence model trains on it)
#   DEMANDLAKE_CHECK_KEEP=1        keep the work folder after a successful run
#   DEMANDLAKE_CHECK_SHIP          zip (default), whl or installed: how the package gets there
#   DEMANDLAKE_CHECK_LOCAL_LAUNCHER  horovodrun (default) or spark: the local run's launcher
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-}"
if [ -z "$VENV" ]; then
  VENV="$("$ROOT/scripts/bootstrap.sh" | tail -n 1)"
fi
VENV="$(cd "$VENV" && pwd)"
PORT="${DEMANDLAKE_CHECK_PORT:-7077}"
UI_PORT="${DEMANDLAKE_CHECK_UI_PORT:-8090}"
WORKER_UI_PORTS=($((UI_PORT + 1)) $((UI_PORT + 2)))
USERS="${DEMANDLAKE_CHECK_USERS:-40}"
DAYS="${DEMANDLAKE_CHECK_DAYS:-3}"
START_DATE="2026-11-01"
SHIP_KIND="${DEMANDLAKE_CHECK_SHIP:-zip}"
LOCAL_LAUNCHER="${DEMANDLAKE_CHECK_LOCAL_LAUNCHER:-horovodrun}"
RTOL="${DEMANDLAKE_CHECK_RTOL:-1e-9}"
RANKS=2
MASTER_URL="spark://127.0.0.1:$PORT"
NICE=(nice -n 10)
case "$SHIP_KIND" in zip|whl|installed) ;;
  *) echo "DEMANDLAKE_CHECK_SHIP must be zip, whl or installed" >&2; exit 2 ;; esac
case "$LOCAL_LAUNCHER" in horovodrun|spark) ;;
  *) echo "DEMANDLAKE_CHECK_LOCAL_LAUNCHER must be horovodrun or spark" >&2; exit 2 ;; esac
mapfile -t DATES < <("$VENV/bin/python" -c "
import datetime as d
for i in range($DAYS): print(d.date.fromisoformat('$START_DATE') + d.timedelta(days=i))")

WORK="$(mktemp -d "${TMPDIR:-/tmp}/demandlake-cluster-check.XXXXXX")"
LOGS="$WORK/logs"
mkdir -p "$LOGS"
MASTER_PID="" WORKER_PIDS=() OK=0
T_START=$(date +%s.%N)

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
  local rc=$? pid
  trap - EXIT INT TERM
  for pid in "${WORKER_PIDS[@]}"; do stop_pid "$pid"; done  # a worker stops its executors
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
export OMP_NUM_THREADS=1 TF_CPP_MIN_LOG_LEVEL=2 DEMANDLAKE_SPARK_LOG_LEVEL=WARN
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
(cd "$WORK" && "$PY" -c 'import pyspark, delta, pandas, pyarrow, yaml, horovod.spark, mlflow') \
  || die "dependencies do not import in $NODL"
if (cd "$WORK" && "$PY" -c 'import demandlake' 2>/dev/null); then
  die "demandlake imports in the no-demandlake venv: the check would prove nothing"
fi
log "no-demandlake venv $NODL: pyspark/delta/horovod import, demandlake does not"
case "$SHIP_KIND" in
  zip) SHIP="$ZIP"; PKG="$(basename "$ZIP")"; SHIP_ARGS=(--py-files "$ZIP") ;;
  whl) SHIP="$WHEEL"; PKG="$(basename "$WHEEL")"; SHIP_ARGS=(--py-files "$WHEEL") ;;
  installed)  # the same wheel, installed into the venv's own site-packages
    "$VENV/bin/python" -m pip install -q --no-deps --no-index --no-compile --target "$NODL_SITE" \
      "$WHEEL" >"$LOGS/install.log" 2>&1 || { cat "$LOGS/install.log" >&2; die "pip install the wheel"; }
    SHIP="$NODL_SITE"; PKG="$NODL_SITE"; SHIP_ARGS=()
    (cd "$WORK" && "$PY" -c "import demandlake, sys; sys.exit(not demandlake.__file__.startswith('$NODL_SITE/'))") \
      || die "the installed wheel does not import in $NODL"
    log "installed $(basename "$WHEEL") into $NODL_SITE (no --py-files)" ;;
esac
log "package: $SHIP_KIND ($SHIP)"
export PYSPARK_PYTHON="$PY" PYSPARK_DRIVER_PYTHON="$PY"
# What each application runs: passed explicitly, since spark.pyspark.* beat PYSPARK_PYTHON whatever
# sets it (older bootstraps also wrote them, for the project venv, into pyspark/conf).
PY_ARGS=(--conf "spark.pyspark.python=$PY" --conf "spark.pyspark.driver.python=$PY")

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

# The stage graph, from the wheel's own graph.py (standard library only): name, per_date, flags.
mapfile -t STAGES < <(cd "$WORK" && PYTHONPATH="$WHEEL" "$PY" -c '
from demandlake.pipeline import graph
for s in graph.NIGHTLY:
    print(s.name, int(s.per_date), *s.job_flags())')
[ "${#STAGES[@]}" -gt 0 ] || die "no stages read from demandlake.pipeline.graph.NIGHTLY"
for line in "${STAGES[@]}"; do
  read -r name _ <<<"$line"
  [ -f "$ROOT/jobs/$name.py" ] || die "graph stage $name has no jobs/$name.py"
done
log "nightly graph: $(printf '%s; ' "${STAGES[@]}")"

# --- 3. the standalone cluster: a master and two 1-core workers --------------------------------------
for p in "$PORT" "$UI_PORT" "${WORKER_UI_PORTS[@]}"; do
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
WORKER_DIRS=()
for i in 1 2; do
  WORKER_DIRS+=("$WORK/worker-$i")
  mkdir -p "$WORK/worker-$i"
  "${NICE[@]}" "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.worker.Worker "$MASTER_URL" \
    --host 127.0.0.1 --cores 1 --memory 2g --webui-port "${WORKER_UI_PORTS[$((i - 1))]}" \
    --work-dir "$WORK/worker-$i" >"$LOGS/worker-$i.log" 2>&1 &
  WORKER_PIDS+=($!)
done
wait_for "two workers" 180 'd["aliveworkers"] == 2 and d["cores"] == 2'
T_CLUSTER=$(secs "$t0" "$(now)")
log "master $MASTER_URL (pid $MASTER_PID), workers pids ${WORKER_PIDS[*]} (1 core, 2 GiB each) up in ${T_CLUSTER} s"

# --- 4. data and the nightly on the cluster ----------------------------------------------------------
RAW="$WORK/raw"
t0=$(now)
(cd "$WORK" && PYTHONPATH="$SRC/lib" "${NICE[@]}" "$VENV/bin/demandlake" --lake "$WORK/generate-lake" generate --out "$RAW" \
   --users "$USERS" --days "$DAYS" --start-date "$START_DATE" --workers 1 --faults \
   >"$LOGS/generate.log" 2>&1) || { tail -n 20 "$LOGS/generate.log" >&2; die "demandlake generate"; }
T_GENERATE=$(secs "$t0" "$(now)")
RAW_EVENTS=$(cat "$RAW"/events/dt=*/*.jsonl | wc -l)
RAW_REVIEWS=$( (cat "$RAW"/reviews/dt=*/*.jsonl 2>/dev/null || true) | wc -l)
log "generated $RAW_EVENTS event lines, $RAW_REVIEWS review lines ($USERS users, $DAYS days, with faults) in ${T_GENERATE} s"

# Settings BOTH runs get (the documented way, --conf-file): small Spark, tiny deterministic
# training with 2 ranks, a 1-day horizon so that 3 days hold train and validation cutoffs.
CONF="$WORK/small.yaml"
cat >"$CONF" <<EOF
lake:
  catalog: in-memory
spark:
  conf:
    spark.sql.shuffle.partitions: "2"
    spark.default.parallelism: "2"
    spark.sql.adaptive.enabled: "false"
    spark.databricks.delta.snapshotPartitions: "1"
    spark.driver.memory: 2g
sequences:
  horizon_days: 1
training:
  num_proc: $RANKS
  epochs: 1
  deterministic: true
  baselines: false
  threads: 1
  batch_size: 16
  restarts: 0
sequence_model:
  item_dim: 8
  category_dim: 4
  hidden: 8
sentiment_model:
  max_tokens: 2000
  embedding_dim: 8
  filters: 8
  kernel_sizes: [2, 3]
  hidden: 8
EOF

explain_failure() {  # known failure signatures, named where they show in a log
  if grep -q "<stderr>:ModuleNotFoundError: No module named 'demandlake'" "$1"; then
    log "A Horovod rank could not import demandlake: horovod.spark.run starts each rank as a new"
    log "process, and training.launch.with_shipped_archives must put the --py-files archive on its"
    log "sys.path (fixed 2026-12-06; a regression if seen again). docs/OPERATIONS.md."
  fi
  if grep -q "Failed to copy the specified code path" "$1"; then
    log "MLflow could not copy the package for code_paths: training.tracking.package_folder must"
    log "extract it when demandlake was imported from a zip (fixed 2026-12-06)."
  fi
  return 0
}
APPS=() WALLS=()
submit() {  # submit NAME APPLICATION ARGS...; ALLOW_FAIL=1: return 1 instead of dying
  local name="$1" app="$2" t rc=0
  shift 2
  t=$(now)
  log "spark-submit $name ..."
  if ! (cd "$WORK" && "${NICE[@]}" "$VENV/bin/spark-submit" --master "$MASTER_URL" \
        --driver-memory 1g --executor-memory 1g --executor-cores 1 --total-executor-cores 2 \
        --conf spark.scheduler.minRegisteredResourcesRatio=1.0 \
        --conf spark.scheduler.maxRegisteredResourcesWaitingTime=300s \
        "${DELTA_ARGS[@]}" "${PY_ARGS[@]}" --conf spark.ui.enabled=false "${SHIP_ARGS[@]}" \
        "$app" "$@" >"$LOGS/${name//\//_}.log" 2>&1); then
    rc=1
    if [ "${ALLOW_FAIL:-0}" != 1 ]; then
      tail -n 40 "$LOGS/${name//\//_}.log" >&2
      explain_failure "$LOGS/${name//\//_}.log"
      die "$name (log: $LOGS/${name//\//_}.log)"
    fi
  fi
  APPS+=("$name") WALLS+=("$(secs "$t" "$(now)")")
  log "$name $([ "$rc" = 0 ] && echo done || echo FAILED) in ${WALLS[-1]} s"
  return "$rc"
}
LAKE="$WORK/lake-cluster"
COMMON=(--lake "$LAKE" --conf-file "$CONF" --set "lake.raw_uri=$RAW")
t0=$(now)
for d in "${DATES[@]}"; do
  for line in "${STAGES[@]}"; do
    read -r name per_date flags <<<"$line"
    date_args=()
    [ "$per_date" = 1 ] && date_args=(--run-date "$d")
    # shellcheck disable=SC2086  # flags: zero or more words from Stage.job_flags()
    submit "$d/$name" "$ROOT/jobs/$name.py" "${date_args[@]}" "${COMMON[@]}" \
      --set training.launcher=spark $flags
    grep -qF "resolved config (from ['$SHIP/demandlake/conf/defaults.yaml'" "$LOGS/${d}_$name.log" \
      || die "$d/$name: config not resolved from the shipped package's defaults (see $LOGS/${d}_$name.log)"
  done
done
T_CLUSTER_NIGHTLY=$(secs "$t0" "$(now)")

# --- 5. verification application -----------------------------------------------------------------
cat >"$WORK/verify.py" <<'EOF'
"""Where demandlake came from on the driver, both executors and 2 Horovod ranks; ops.runs; MLflow."""
import argparse, json, os, sys, time

p = argparse.ArgumentParser()
for flag in ("--lake", "--conf-file", "--raw", "--dates", "--stages", "--package",
             "--worker-dirs", "--python"):
    p.add_argument(flag, required=True)
p.add_argument("--ranks", type=int, required=True)
a = p.parse_args()

import demandlake
from demandlake import lake
from demandlake.config import load_config
from demandlake.spark import get_spark
from pyspark.sql import functions as F

cfg = load_config([a.conf_file], [f"lake.raw_uri={a.raw}"], a.lake)
spark = get_spark(cfg, app_name="demandlake-cluster-verify")
sc = spark.sparkContext
problems = []
PKG_INIT, PKG_DEFAULTS = f"{a.package}/demandlake/__init__.py", f"{a.package}/demandlake/conf/defaults.yaml"

def expect(what, ok):
    if not ok:
        problems.append(what)

expect(f"driver python {sys.executable} is not {a.python}", sys.executable == a.python)
expect(f"driver imported demandlake from {demandlake.__file__}, not {a.package}",
       PKG_INIT in demandlake.__file__)

n_events = lake.read(spark, cfg, "bronze.events").count()
n_reviews = lake.read(spark, cfg, "bronze.reviews").count()
n_quarantine = lake.read(spark, cfg, "bronze.quarantine").count()
runs = [r.asDict() for r in lake.read(spark, cfg, "ops.runs").collect()]
expect("bronze.events is empty", n_events > 0)
expect("bronze.quarantine is empty, though the sample has planted bad records", n_quarantine > 0)
failed = sorted({(r["stage"], str(r["run_date"]), r["status"]) for r in runs
                 if r["status"] != "succeeded"})
expect(f"ops.runs has runs that did not succeed: {failed}", not failed)
done = {(r["stage"], str(r["run_date"])) for r in runs if r["status"] == "succeeded"}
missing = [(s, d) for d in a.dates.split(",") for s in a.stages.split(",") if (s, d) not in done]
expect(f"no succeeded ops.runs row for {missing}", not missing)
trained = {}
for r in runs:
    m = r["metrics"] or {}
    if r["stage"].startswith("train_") and r["status"] == "succeeded" and m.get("skipped") == "0":
        trained.setdefault(r["stage"], []).append(
            f"{r['run_date']}: version {m.get('version')}, promoted {m.get('promoted')}")
for s in ("train_sentiment", "train_sequence"):
    expect(f"{s} never trained (every run skipped): the check would not cover training",
           s in trained)

import mlflow
from mlflow.tracking import MlflowClient
mlflow.set_tracking_uri(cfg.mlflow_tracking_uri)
client = MlflowClient()
mlruns = []
for exp in client.search_experiments():
    for run in client.search_runs([exp.experiment_id]):
        mlruns.append({"task": run.data.tags.get("task"), "launcher": run.data.tags.get("launcher"),
                       "ranks": run.data.params.get("ranks"), "status": run.info.status})
for r in mlruns:
    expect(f"MLflow run {r}: not launcher spark with {a.ranks} ranks",
           r["launcher"] == "spark" and r["ranks"] == str(a.ranks) and r["status"] == "FINISHED")
expect(f"MLflow has {len(mlruns)} training runs, ops.runs {sum(map(len, trained.values()))}",
       len(mlruns) == sum(map(len, trained.values())))

def probe(_):
    import os, socket, sys, time
    time.sleep(2)  # hold the slot, so the other task cannot run on this executor too
    try:
        import demandlake
        from demandlake.config import load_config
        found, defaults = demandlake.__file__, load_config().sources[0]
    except Exception as exc:  # reported, not raised: the summary says what went wrong
        found, defaults = f"{type(exc).__name__}: {exc}", None
    yield {"host": socket.gethostname(), "pid": os.getpid(), "cwd": os.getcwd(),
           "python": sys.executable, "demandlake": found, "defaults": defaults}

executors = sc.parallelize(range(2), 2).mapPartitions(probe).collect()
worker_dirs = a.worker_dirs.split(",")
for e in executors:
    expect(f"executor python {e['python']} is not {a.python}", e["python"] == a.python)
    expect(f"executor cwd {e['cwd']} is not under a worker's work dir",
           any(e["cwd"].startswith(w + "/app-") for w in worker_dirs))
    expect(f"executor imported demandlake from {e['demandlake']}, not {a.package}",
           PKG_INIT in e["demandlake"])
    expect(f"executor read defaults from {e['defaults']}", PKG_DEFAULTS in (e["defaults"] or ""))
used = sorted({w for e in executors for w in worker_dirs if e["cwd"].startswith(w + "/")})
expect(f"the probe ran on {used}, not on both workers", len(used) == 2)

def rank_probe():  # run by each Horovod rank, a process of its own, as training's ranks are
    import os, sys
    out = {"pid": os.getpid(), "python": sys.executable, "task_dir": os.environ.get("HOROVOD_SPARK_WORK_DIR"),
           "rank": os.environ.get("HOROVOD_RANK")}
    try:
        import demandlake
        out["demandlake"] = demandlake.__file__
    except Exception as exc:
        out["demandlake"] = f"{type(exc).__name__}: {exc}"
    return out

ranks, ranks_error = [], None
try:
    import horovod.spark
    from demandlake.training.launch import shipped_archives, with_shipped_archives
    # wrapped as training wraps its rank function: the shipped archives go on the rank's path
    ranks = horovod.spark.run(with_shipped_archives(rank_probe, *shipped_archives()),
                              num_proc=a.ranks, use_gloo=True, verbose=0, start_timeout=300)
except Exception as exc:
    ranks_error = f"{type(exc).__name__}: {str(exc)[:500]}"
expect(f"horovod.spark.run of a probe failed: {ranks_error}", ranks_error is None)
for r in ranks:
    expect(f"rank {r['rank']} python {r['python']} is not {a.python}", r["python"] == a.python)
    expect(f"rank {r['rank']} imported demandlake from {r['demandlake']}, not {a.package}",
           PKG_INIT in r["demandlake"])
rank_workers = sorted({w for r in ranks for w in worker_dirs if (r["task_dir"] or "").startswith(w + "/")})
expect(f"the {len(ranks)} ranks ran on {rank_workers}, not one on each worker",
       len(ranks) == a.ranks and len(rank_workers) == 2)

udf_rows = udf_error = None
try:  # the project's own pandas UDF (jieba presegmentation), run by the executors' Python
    from demandlake.scoring.sentiment import review_terms
    terms = review_terms(lake.read(spark, cfg, "bronze.reviews").select("review_id", "text"))
    udf_rows = terms.where(F.size("terms") > 0).count()
except Exception as exc:
    udf_error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
expect(f"review_terms UDF: {udf_error or udf_rows}", udf_error is None and udf_rows)

result = {
    "app_id": sc.applicationId, "master": sc.master,
    "driver_demandlake": demandlake.__file__, "driver_defaults": cfg.sources[0],
    "bronze_events": n_events, "bronze_reviews": n_reviews, "bronze_quarantine": n_quarantine,
    "trained": trained, "mlflow_runs": mlruns, "executors": executors, "ranks": ranks,
    "ranks_error": ranks_error,
    "review_terms_udf_rows": udf_rows, "review_terms_udf_error": udf_error, "problems": problems,
}
print("VERIFY_RESULT " + json.dumps(result, default=str))
spark.stop()
sys.exit(1 if problems else 0)
EOF
STAGE_NAMES="$(for line in "${STAGES[@]}"; do read -r n _ <<<"$line"; printf '%s,' "$n"; done)"
ALLOW_FAIL=1 submit verify "$WORK/verify.py" --lake "$LAKE" --conf-file "$CONF" --raw "$RAW" \
  --dates "$(IFS=,; echo "${DATES[*]}")" --stages "${STAGE_NAMES%,}" \
  --package "$PKG" --worker-dirs "$(IFS=,; echo "${WORKER_DIRS[*]}")" \
  --python "$PY" --ranks "$RANKS" || true
RESULT="$(grep '^VERIFY_RESULT ' "$LOGS/verify.log" | tail -n 1 | cut -d' ' -f2- || true)"
[ -n "$RESULT" ] || die "verify printed no result (log: $LOGS/verify.log)"
MASTER_JSON="$(json "$UI_PORT")" || die "master JSON"
echo "$MASTER_JSON" >"$LOGS/master.json"
echo "$RESULT" >"$LOGS/verify.json"

# --- 7. the same input through the local CLI, and the two lakes compared ------------------------------
LAKE2="$WORK/lake-local"
# The local run imports the checkout's code as copied for the wheel ($SRC/lib), not whatever the
# shared venv's editable install points at.
LOCAL_PKG="$(cd "$WORK" && PYTHONPATH="$SRC/lib" "$VENV/bin/python" -c 'import demandlake; print(demandlake.__file__)')"
[ "$LOCAL_PKG" = "$SRC/lib/demandlake/__init__.py" ] || die "local run would import demandlake from $LOCAL_PKG"
LOCAL_NAMES=() LOCAL_WALLS=()
for d in "${DATES[@]}"; do
  t=$(now)
  log "local: demandlake nightly --run-date $d ..."
  (cd "$WORK" && PYTHONPATH="$SRC/lib" PYSPARK_PYTHON="$VENV/bin/python" \
     PYSPARK_DRIVER_PYTHON="$VENV/bin/python" "${NICE[@]}" "$VENV/bin/demandlake" --lake "$LAKE2" --conf-file "$CONF" --set "lake.raw_uri=$RAW" \
     --set spark.master='local[2]' --set "training.launcher=$LOCAL_LAUNCHER" nightly --run-date "$d" \
     >"$LOGS/local_$d.log" 2>&1) || { tail -n 40 "$LOGS/local_$d.log" >&2; die "local nightly $d"; }
  LOCAL_NAMES+=("local/$d") LOCAL_WALLS+=("$(secs "$t" "$(now)")")
  log "local nightly $d done in ${LOCAL_WALLS[-1]} s"
done
t0=$(now)
for which in cluster local; do
  lake_dir="$LAKE"; [ "$which" = local ] && lake_dir="$LAKE2"
  (cd "$WORK" && PYTHONPATH="$SRC/lib" PYSPARK_PYTHON="$VENV/bin/python" \
     PYSPARK_DRIVER_PYTHON="$VENV/bin/python" "${NICE[@]}" "$VENV/bin/python" -m demandlake.faults --snapshot-of "$lake_dir" \
     --conf-file "$CONF" --snapshot-to "$WORK/snapshot-$which.json" >"$LOGS/snapshot-$which.log" 2>&1) \
    || { tail -n 30 "$LOGS/snapshot-$which.log" >&2; die "snapshot of the $which lake"; }
done
T_SNAPSHOTS=$(secs "$t0" "$(now)")

# --- 6 and 7: the master's and the workers' view, the comparison, the summary --------------------------
NAME_LIST="$(IFS=,; echo "${APPS[*]}")"
WALL_LIST="$(IFS=,; echo "${WALLS[*]}")"
LOCAL_LIST="$(IFS=,; echo "${LOCAL_NAMES[*]}")"
LOCAL_WALL_LIST="$(IFS=,; echo "${LOCAL_WALLS[*]}")"
T_TOTAL=$(secs "$T_START" "$(now)")
"$VENV/bin/python" - "$LOGS/master.json" "$LOGS/verify.json" "$(IFS=,; echo "${WORKER_DIRS[*]}")" \
  "$NAME_LIST" "$WALL_LIST" "$LOCAL_LIST" "$LOCAL_WALL_LIST" "$WORK/snapshot-cluster.json" \
  "$WORK/snapshot-local.json" "$LAKE" "$LAKE2" <<EOF
import collections, glob, json, os, sys
master, result = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
worker_dirs, names, walls = sys.argv[3].split(","), sys.argv[4].split(","), sys.argv[5].split(",")
local_names, local_walls = sys.argv[6].split(","), sys.argv[7].split(",")
snap_cluster, snap_local = json.load(open(sys.argv[8])), json.load(open(sys.argv[9]))
problems = list(result["problems"])
apps = sorted(master["completedapps"] + master["activeapps"], key=lambda a: a["starttime"])
workers = [w for w in master["workers"] if w["state"] == "ALIVE"]
if len(workers) != 2 or any(w["cores"] != 1 for w in workers):
    problems.append(f"master lists workers {[(w['id'], w['cores'], w['state']) for w in master['workers']]}")
if len(apps) != len(names):
    problems.append(f"master knows {len(apps)} applications, {len(names)} were submitted")
trained_dates = {(s, v.split(':')[0]) for s, vs in result["trained"].items() for v in vs}
print()
print("cluster_check: $MASTER_URL, two workers on 127.0.0.1 (1 core, 2 GiB each), one executor on"
      " each (1 core, 1 GiB), driver 1 GiB (client mode)")
print("data: $USERS users x $DAYS days from $START_DATE with faults ($RAW_EVENTS event lines,"
      " $RAW_REVIEWS review lines); package: $SHIP_KIND ($SHIP); training.launcher=spark,"
      " $RANKS ranks; local run: launcher $LOCAL_LAUNCHER, $RANKS ranks, local[2]")
print(f"{'application':30} {'app id':26} {'state':9} {'wall s':>7} {'master s':>8} "
      f"{'execs':>5} {'tasks w1':>8} {'tasks w2':>8}")
task_totals = [0, 0]
for name, wall, app in zip(names, walls, apps):
    tasks, execs = [], 0
    for w in worker_dirs:
        logs = glob.glob(os.path.join(w, app["id"], "*", "stderr"))
        execs += len(logs)
        tasks.append(sum(open(f, errors="replace").read().count("Running task") for f in logs))
    task_totals = [a + b for a, b in zip(task_totals, tasks)]
    print(f"{name:30} {app['id']:26} {app['state']:9} {wall:>7} {app['duration'] / 1000:8.1f} "
          f"{execs:5d} {tasks[0]:8d} {tasks[1]:8d}")
    if app["state"] != "FINISHED":
        problems.append(f"{name}: application {app['id']} is {app['state']}")
    if execs != 2:
        problems.append(f"{name}: {execs} executor logs under the workers' {app['id']}, not 2")
    if sum(tasks) == 0:
        problems.append(f"{name}: no executor tasks logged for {app['id']}")
    stage = name.split("/")[-1]
    if (stage, name.split("/")[0]) in trained_dates and min(tasks) == 0:
        problems.append(f"{name} trained, but tasks ran on one worker only: {tasks}")
for name, wall in zip(local_names, local_walls):
    print(f"{name:30} {'(demandlake nightly)':26} {'':9} {wall:>7}")
if min(task_totals) == 0:
    problems.append(f"tasks per worker over all applications: {task_totals}")
r = result
print(f"tasks per worker, all applications: {task_totals[0]} (worker 1), {task_totals[1]} (worker 2)")
print(f"bronze.events {r['bronze_events']}, bronze.reviews {r['bronze_reviews']},"
      f" bronze.quarantine {r['bronze_quarantine']}")
for s, vs in sorted(r["trained"].items()):
    print(f"{s} trained on the cluster: {'; '.join(vs)}")
for m in r["mlflow_runs"]:
    print(f"MLflow run: task {m['task']}, launcher {m['launcher']}, ranks {m['ranks']}, {m['status']}")
print(f"driver: demandlake from {r['driver_demandlake']}")
for e in r["executors"]:
    print(f"executor pid {e['pid']}: cwd {e['cwd']}, python {e['python']},"
          f" demandlake from {e['demandlake']}")
for k in r["ranks"]:
    print(f"horovod.spark.run rank {k['rank']} pid {k['pid']}: task dir {k['task_dir']},"
          f" python {k['python']}, demandlake from {k['demandlake']}")
if r["ranks_error"]:
    print(f"horovod.spark.run probe: {r['ranks_error']}")
print(f"review_terms pandas UDF on the executors: {r['review_terms_udf_rows']} reviews with terms"
      + (f" (error: {r['review_terms_udf_error']})" if r['review_terms_udf_error'] else ""))

# The two lakes, table by table (multisets of canonical JSON rows). Rows are paired by everything
# but their floating-point values (keys, strings, integers, dates must match exactly); paired
# floats must agree to RTOL relative (module comment at the top).
RTOL = float("$RTOL")

def without_floats(x, found):
    if isinstance(x, float):
        found.append(x)
        return None
    if isinstance(x, list):
        return [without_floats(v, found) for v in x]
    if isinstance(x, dict):
        return {k: without_floats(v, found) for k, v in x.items()}
    return x

def by_shape(rows):
    groups = collections.defaultdict(list)
    for row in rows:
        found = []
        groups[json.dumps(without_floats(json.loads(row), found), sort_keys=True)].append(found)
    return groups

def rel(x, y):
    if x == y or (x != x and y != y):  # equal, or both NaN
        return 0.0
    return abs(x - y) / max(abs(x), abs(y))

print()
print(f"{'table':28} {'cluster rows':>12} {'local rows':>10}  result")
differ, tolerated = [], []
for t in sorted(set(snap_cluster) | set(snap_local)):
    a, b = snap_cluster.get(t), snap_local.get(t)
    if a is None or b is None:
        differ.append(t)
        print(f"{t:28} {len(a or []):12d} {len(b or []):10d}  MISSING in {'cluster' if a is None else 'local'}")
        continue
    ca, cb = collections.Counter(a), collections.Counter(b)
    only_c, only_l = list((ca - cb).elements()), list((cb - ca).elements())
    if not (only_c or only_l):
        print(f"{t:28} {len(a):12d} {len(b):10d}  equal")
        continue
    ga, gb = by_shape(only_c), by_shape(only_l)
    unpaired = sum(abs(len(ga.get(k, [])) - len(gb.get(k, []))) for k in set(ga) | set(gb))
    worst = max((rel(x, y) for k in set(ga) & set(gb)
                 for fa, fb in zip(sorted(ga[k]), sorted(gb[k])) for x, y in zip(fa, fb)),
                default=0.0)
    if not unpaired and worst <= RTOL:
        tolerated.append(t)
        print(f"{t:28} {len(a):12d} {len(b):10d}  equal to {RTOL:g} relative ({len(only_c)} rows"
              f" differ only in floats, at most {worst:.2g} relative)")
        continue
    differ.append(t)
    print(f"{t:28} {len(a):12d} {len(b):10d}  DIFFERENT ({len(only_c)} rows only on the cluster,"
          f" {len(only_l)} only local; {unpaired} unpaired by non-float values; floats up to"
          f" {worst:.2g} relative)")
    for label, rows in (("cluster", only_c), ("local", only_l)):
        for row in rows[:3]:
            print(f"    only {label}: {row[:400]}")
if differ:
    problems.append(f"tables differ between the cluster and the local run: {', '.join(differ)}")

# Informational: the trained models' weights, lake against lake (the newest run of each task).
try:
    import io, zipfile
    import h5py
    import numpy as np

    def weights(path):
        out = {}
        with zipfile.ZipFile(path) as z, h5py.File(io.BytesIO(z.read("model.weights.h5")), "r") as f:
            f.visititems(lambda n, o: out.__setitem__(n, np.array(o)) if isinstance(o, h5py.Dataset) else None)
        return out

    for task in ("sentiment", "sequence"):
        found = [sorted(glob.glob(os.path.join(lk, "_training", task, "*", "model.keras")),
                        key=os.path.getmtime) for lk in sys.argv[10:12]]
        if not all(found):
            print(f"{task} model: not trained in both lakes")
            continue
        wa, wb = weights(found[0][-1]), weights(found[1][-1])
        same = sum(k in wb and np.array_equal(wa[k], wb[k]) for k in wa)
        diff = max((float(np.max(np.abs(wa[k] - wb[k]))) for k in wa
                    if k in wb and wa[k].shape == wb[k].shape and wa[k].size), default=0.0)
        print(f"{task} model weights, cluster vs local: {same} of {len(wa)} arrays identical"
              + (f", largest difference {diff:.3g}" if same < len(wa) else ""))
except Exception as exc:  # informational only
    print(f"model weights not compared: {type(exc).__name__}: {exc}")
if not snap_cluster:
    problems.append("the snapshots hold no tables")
print()
print("wheel build $T_WHEEL s, cluster start $T_CLUSTER s, generate $T_GENERATE s, cluster nightly"
      " $T_CLUSTER_NIGHTLY s, snapshots $T_SNAPSHOTS s, whole check $T_TOTAL s")
tables = sorted(set(snap_cluster) | set(snap_local))
print(f"compared {len(tables)} tables, {sum(len(v) for v in snap_cluster.values())} rows on the"
      f" cluster and {sum(len(v) for v in snap_local.values())} local:"
      f" {len(tables) - len(differ) - len(tolerated)} equal, {len(tolerated)} equal to {RTOL:g}"
      f" relative in floats, {len(differ)} different; whole check $T_TOTAL s")
if problems:
    print("PROBLEMS:\n  " + "\n  ".join(problems))
    print("cluster_check: FAILED")
    sys.exit(1)
print("cluster_check: OK")
EOF
OK=1
