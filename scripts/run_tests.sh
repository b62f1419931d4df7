#!/usr/bin/env bash
# Runs the whole suite in the project venv (given as $1); any failure fails the run.
# Then the Airflow DAG tests (tests/airflow) with the pytest of Airflow's OWN venv
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
# --durations: the slowest tests at the end of every run, so that growth shows.
"$VENV/bin/python" -m pytest tests -q -p no:cacheprovider --ignore=tests/airflow \
  --durations=15 --durations-min=1 "$@"

if [ "${DEMANDLAKE_SKIP_AIRFLOW:-0}" = "1" ]; then
  echo "[run_tests] DEMANDLAKE_SKIP_AIRFLOW=1: Airflow DAG tests skipped" >&2
  exit 0
fi
AIRFLOW_VENV="$(scripts/airflow_env.sh | tail -n 1)"
started=$SECONDS
DEMANDLAKE_PROJECT_VENV="$VENV" "$AIRFLOW_VENV/bin/python" -m pytest tests/airflow -q \
  -p no:cacheprovider --confcutdir=tests/airflow --durations=15 --durations-min=1
echo "[run_tests] Airflow DAG tests took $((SECONDS - started)) s" >&2
