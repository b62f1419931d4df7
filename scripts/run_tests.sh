#!/usr/bin/env bash
# Runs the whole suite in the project venv (given as $1); any failure fails the run.
# Then the Airflow DAG tests (tests/airflow) with the pytest of Airflow's OWN venv
# (scripts/airflow_env.sh), which call the project venv's spark-submit; the project suite never
# collects that folder. DEMANDLAKE_SKIP_AIRFLOW=1 skips that second part (local use only).
set -euo pipefail
VENV="$1"; shift
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# Nothing else of the environment is set here: no PYSPARK_PYTHON, no venv on PATH. The product
# must choose its interpreter itself, as it does for a user in a plain shell (the fresh-machine
# test checks exactly that); tests that need the venv's scripts call them by path.
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
