#!/usr/bin/env bash
# Runs the whole suite in the project venv (given as $1; further arguments go to its pytest), in
# three parts at once (below); any failure fails the run. DEMANDLAKE_SKIP_AIRFLOW=1 skips the
# Airflow part (local use only).
set -euo pipefail
VENV="$1"; shift
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# This clone's code, whatever clone the shared venv's editable install points at (bootstrap.sh).
export PYTHONPATH="$ROOT/lib${PYTHONPATH:+:$PYTHONPATH}"
# Nothing else of the environment is set here: no PYSPARK_PYTHON, no venv on PATH. The product
# must choose its interpreter itself, as it does for a user in a plain shell (the fresh-machine
# test checks exactly that); tests that need the venv's scripts call them by path.
if [ "${CI:-}" = "true" ]; then
  # CI runs everything: the Airflow part cannot be switched off, and the report's browser check
  # (the one test allowed to skip under CI, and only without a browser) gets Debian's Chromium.
  if [ "${DEMANDLAKE_SKIP_AIRFLOW:-0}" = "1" ]; then
    echo "[run_tests] DEMANDLAKE_SKIP_AIRFLOW is for local use only, not with CI=true" >&2
    exit 1
  fi
  if ! command -v chromium >/dev/null 2>&1; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo -n"
    { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium; } \
      >/dev/null 2>&1 \
      || echo "[run_tests] could not install chromium: the report's browser check will skip" >&2
  fi
fi
# Keep TF/BLAS from oversubscribing the 2 cores CI has.
export OMP_NUM_THREADS=2

# Four parts run at once, so that the two cores are busy until the end: most of the time of
# each is per-process latency (JVM and TensorFlow starts, py4j round trips, Delta commits, child
# processes waited on), and alone each leaves a core idle much of the time.
#   1. the project suite in one pytest process (its shared Spark session), in the foreground;
#   2. the kill-and-rerun harness and the backfill beside the SQL endpoint (PROCESS_TESTS), which
#      mostly wait on processes of their own, in a second pytest process. (The SQL endpoint's
#      own tests wait on processes too, but they serve the shared scored lake, which the suite
#      builds anyway: here they would cost a second build of it, about 3 CPU-minutes.) This
#      part has a Spark session of its own (test_reliability's in-process chains), so it also
#      takes a share of the Spark tests that do not need the scored lake (SPARK_SHARE);
#   3. the Airflow DAG tests (tests/airflow) with the pytest of Airflow's OWN venv, which call
#      the project venv's spark-submit; the project's pytest never collects that folder;
#   4. a fresh clone's `make nightly` (no Spark session in the pytest process), then the
#      Horovod launches of test_training, which wait on ranks of their own (OWN_SESSION).
# Measured with bench/suite_cpu.py (2026-12-07, fifth session): with three parts (this fourth
# one in the second) the parts ended at 1,211, 1,333 and 1,037 s with 1.78 cores busy on average:
# the parts wait more than they compute, so a fourth one fills the idle core time.
# Parts 2-4 write to files printed after part 1's output; any part failing fails the run.
PROCESS_TESTS=(tests/test_reliability.py)
SPARK_SHARE=(tests/test_pipeline_chain.py tests/test_privacy.py tests/test_user_features.py
             tests/test_quality.py tests/test_ingest.py)
OWN_SESSION=(tests/test_fresh_machine.py tests/test_training.py)
PYTEST=(-q -p no:cacheprovider --durations=15 --durations-min=1)
user_args=$#
names=()
pids=()
logs=()
background() {  # NAME COMMAND...: run a part in the background, its output into a file
  local name="$1"; shift
  local out
  out="$(mktemp "${TMPDIR:-/tmp}/demandlake-tests-$name.XXXXXX")"
  (
    started=$SECONDS
    rc=0
    "$@" || rc=$?
    # pytest's 5 (nothing collected) under a user's -k/-m that selects nothing from this part
    if [ "$rc" = 5 ] && [ "$user_args" -gt 0 ]; then rc=0; fi
    echo "[run_tests] $name took $((SECONDS - started)) s (exit $rc)"
    exit $rc
  ) >"$out" 2>&1 &
  names+=("$name"); pids+=($!); logs+=("$out")
}
airflow_part() {  # the Airflow tests
  local af
  af="$(scripts/airflow_env.sh | tail -n 1)"
  DEMANDLAKE_PROJECT_VENV="$VENV" "$af/bin/python" -m pytest tests/airflow "${PYTEST[@]}" \
    --confcutdir=tests/airflow
}
# Interrupted (Ctrl-C, CI timeout): stop the background parts too.
trap 'for p in "${pids[@]}"; do pkill -TERM -P "$p" 2>/dev/null; kill "$p" 2>/dev/null; done; exit 130' INT TERM

background "process-tests" "$VENV/bin/python" -m pytest "${PROCESS_TESTS[@]}" "${SPARK_SHARE[@]}" \
  "${PYTEST[@]}" "$@"
background "own-session-tests" "$VENV/bin/python" -m pytest "${OWN_SESSION[@]}" "${PYTEST[@]}" "$@"
if [ "${DEMANDLAKE_SKIP_AIRFLOW:-0}" = "1" ]; then
  echo "[run_tests] DEMANDLAKE_SKIP_AIRFLOW=1: Airflow DAG tests skipped" >&2
else
  background "airflow-tests" airflow_part
fi
echo "[run_tests] beside the suite: ${names[*]} (their output follows the suite's)" >&2

# --durations: the slowest tests at the end of every part, so that growth shows.
started=$SECONDS
failed=()
ignore=(--ignore=tests/airflow)
for f in "${PROCESS_TESTS[@]}" "${SPARK_SHARE[@]}" "${OWN_SESSION[@]}"; do ignore+=("--ignore=$f"); done
rc=0
"$VENV/bin/python" -m pytest tests "${ignore[@]}" "${PYTEST[@]}" "$@" || rc=$?
if [ "$rc" != 0 ] && ! { [ "$rc" = 5 ] && [ "$user_args" -gt 0 ]; }; then failed+=("suite"); fi
echo "[run_tests] suite took $((SECONDS - started)) s"

for i in "${!pids[@]}"; do
  rc=0
  wait "${pids[$i]}" || rc=$?
  echo "==================== ${names[$i]} ===================="
  cat "${logs[$i]}"
  rm -f "${logs[$i]}"
  [ "$rc" = 0 ] || failed+=("${names[$i]}")
done
echo "[run_tests] all parts took $SECONDS s"
if [ "${#failed[@]}" != 0 ]; then
  echo "[run_tests] FAILED: ${failed[*]}" >&2
  exit 1
fi
