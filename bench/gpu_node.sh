#!/usr/bin/env bash
# bench/gpu_keras.py on a single-GPU node that has JAX and PyTorch but no TensorFlow and no network
# (the H200 node this project can borrow). Run from the repo root with the wheels already in .whl/:
#
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl \
#       keras==3.15.1 namex==0.1.0 optree==0.20.0     # 2.9 MiB; the node has keras' other needs
#   OUT=/some/dir bash bench/gpu_node.sh
#
# It installs them into /tmp/site, then measures the sequence model on JAX (three encoders) and on
# PyTorch (LSTM and attention), fp32 and mixed bf16, training and predict. Results: $OUT/*.json and
# the logs beside them; docs/BENCHMARKS.md ("Single-GPU training throughput") holds the last run.
set -u
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia-smi.csv"
nproc
run() {  # backend, seconds, then gpu_keras.py arguments
    local backend=$1 limit=$2
    shift 2
    KERAS_BACKEND=$backend timeout "$limit" python3 bench/gpu_keras.py "$@" \
        --out "$OUT/$backend.json" > "$OUT/$backend.log" 2>&1
    echo "$backend: rc $?"
    grep -E '^\{|^\|' "$OUT/$backend.log" || tail -n 20 "$OUT/$backend.log"
}
run jax "${JAX_S:-240}" --encoders lstm attention gru --batch 1024 --steps 200 --epochs 3 \
    --predict-batch 8192
run torch "${TORCH_S:-150}" --encoders lstm attention --batch 1024 --steps 100 --epochs 3 \
    --predict-batch 8192
