#!/usr/bin/env bash
# Runs the whole suite in the project venv (given as $1); any failure fails the run.
set -euo pipefail
VENV="$1"; shift
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$VENV/bin:$PATH"
export PYSPARK_PYTHON="$VENV/bin/python" PYSPARK_DRIVER_PYTHON="$VENV/bin/python"
# Keep TF/BLAS from oversubscribing the 2 cores CI has.
export TF_CPP_MIN_LOG_LEVEL=2 OMP_NUM_THREADS=2
"$VENV/bin/python" -m pytest tests -q -p no:cacheprovider "$@"
