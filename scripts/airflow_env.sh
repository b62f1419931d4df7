#!/usr/bin/env bash
# Creates (or reuses) Airflow's OWN virtual environment, outside the clone, and prints its path
# on the last line of stdout.
#
# Airflow pins hundreds of packages (pandas 3 among them) and its Spark provider installs
# `pyspark-client`, which shares the `pyspark/` folder with the full pyspark of the project venv:
# the two must never meet in one environment (docs/STACK.md, docs/OPERATIONS.md). The DAGs only
# shell out to the project venv's `spark-submit`, so this venv needs Airflow, the provider and
# pytest (for tests/airflow), nothing of the project.
#
# Environment:
#   DEMANDLAKE_CACHE      cache root (default ~/.cache/demandlake)
#   DEMANDLAKE_AIRFLOW_VENV  use this venv instead of the keyed one
#   PYTHON                interpreter to build the venv from (default python3)
set -euo pipefail

CACHE="${DEMANDLAKE_CACHE:-$HOME/.cache/demandlake}"
PY="${PYTHON:-python3}"
# The pins: changing any of them makes a new venv (the path is keyed by their hash).
PINS=(apache-airflow==3.3.2 apache-airflow-providers-apache-spark==6.3.4 pytest==9.2.0)
mkdir -p "$CACHE"

log() { echo "[airflow_env] $*" >&2; }

pyver=$("$PY" -c 'import sys; print(f"py{sys.version_info[0]}{sys.version_info[1]}")')
pin_hash=$(printf '%s\n' "$pyver" "${PINS[@]}" | sha256sum | cut -c1-12)
VENV="${DEMANDLAKE_AIRFLOW_VENV:-$CACHE/airflow-venv-$pin_hash}"

# Serialize concurrent runs on one cache (two shells, CI beside a developer).
exec 9>"$CACHE/.airflow_env.lock"
flock 9

if [ ! -f "$VENV/.airflow-ok" ]; then
  log "creating Airflow virtual environment $VENV (first run: about a minute)"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade "pip>=24" >&2
  "$VENV/bin/pip" install -q "${PINS[@]}" >&2
  "$VENV/bin/pip" check >&2
  # The trap this venv exists to avoid: a full pyspark here would fight pyspark-client.
  if "$VENV/bin/pip" show pyspark >/dev/null 2>&1; then
    log "full pyspark was installed into the Airflow venv: refusing (see docs/OPERATIONS.md)"
    exit 1
  fi
  touch "$VENV/.airflow-ok"
else
  log "reusing Airflow virtual environment $VENV"
fi

echo "$VENV"
