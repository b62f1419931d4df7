#!/usr/bin/env bash
# Runs the whole suite in the project venv (given as $1); any failure fails the run.
# Beside it (in the background) the Airflow DAG tests (tests/airflow) with the pytest of Airflow's OWN venv
# (scripts/airflow_env.sh), which call the project venv's spark-submit; the project suite never
# collects that folder. DEMANDLAKE_SKIP_AIRFLOW=1 skips that second part (local use only).
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

# The Airflow DAG tests run BESIDE the project suite, in the background: both are mostly waiting
# on Spark's per-job latency (JVM starts, py4j round trips, Delta commits), so together they take
# about the longer of the two instead of their sum on 2 cores. Their output is kept in a file and
# printed after the suite's; either failing fails the run.
airflow_log=""
airflow_pid=""
if [ "${DEMANDLAKE_SKIP_AIRFLOW:-0}" = "1" ]; then
  echo "[run_tests] DEMANDLAKE_SKIP_AIRFLOW=1: Airflow DAG tests skipped" >&2
else
  airflow_log="$(mktemp "${TMPDIR:-/tmp}/demandlake-airflow-tests.XXXXXX")"
  echo "[run_tests] Airflow DAG tests (tests/airflow) run beside the suite; their output follows it" >&2
  (
    started=$SECONDS
    AIRFLOW_VENV="$(scripts/airflow_env.sh | tail -n 1)"
    rc=0
    DEMANDLAKE_PROJECT_VENV="$VENV" "$AIRFLOW_VENV/bin/python" -m pytest tests/airflow -q \
      -p no:cacheprovider --confcutdir=tests/airflow --durations=15 --durations-min=1 || rc=$?
    echo "[run_tests] Airflow DAG tests took $((SECONDS - started)) s (exit $rc)"
    exit $rc
  ) >"$airflow_log" 2>&1 &
  airflow_pid=$!
  # Interrupted (Ctrl-C, CI timeout): stop the background part too.
  trap 'pkill -TERM -P "$airflow_pid" 2>/dev/null; kill "$airflow_pid" 2>/dev/null; exit 130' INT TERM
fi

# --durations: the slowest tests at the end of every run, so that growth shows.
suite_rc=0
"$VENV/bin/python" -m pytest tests -q -p no:cacheprovider --ignore=tests/airflow \
  --durations=15 --durations-min=1 "$@" || suite_rc=$?

airflow_rc=0
if [ -n "$airflow_pid" ]; then
  wait "$airflow_pid" || airflow_rc=$?
  echo "==================== Airflow DAG tests (tests/airflow) ===================="
  cat "$airflow_log"
  rm -f "$airflow_log"
fi
if [ "$suite_rc" != 0 ] || [ "$airflow_rc" != 0 ]; then
  echo "[run_tests] FAILED: project suite exit $suite_rc, Airflow DAG tests exit $airflow_rc" >&2
  exit 1
fi
