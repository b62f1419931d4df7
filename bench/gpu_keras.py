"""Single-GPU throughput of the sequence model on whatever Keras 3 backend the node has.

The GPU node this project can borrow (one H200, Python 3.12, JAX and PyTorch, no TensorFlow and
no network) cannot run the TensorFlow/Horovod trainer. The model itself is backend-neutral
(``demandlake.models`` uses ``keras`` and ``keras.ops`` only), so this script measures the same
architecture, same shapes, with Keras' own ``fit`` on JAX or PyTorch (or TensorFlow here on CPU),
in float32 and in mixed bfloat16:

    KERAS_BACKEND=jax python bench/gpu_keras.py --batch 1024 --steps 200 --out gpu.json

Only ``keras`` must be importable. On a node without network, carry its wheels (pure Python, ~2
MiB with its small dependencies) in an ignored folder of the repo and install them offline:

    pip download --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \\
        -d .carry/wheels keras==3.15.1
    # on the node:
    pip install --no-index --find-links .carry/wheels keras

Synthetic inputs with the shapes of ``gold.sequence_examples`` (vocabulary sizes of the Taobao
sample by default); the loss is the plain two-head one (binary cross-entropy for purchase,
categorical cross-entropy for categories), close to but simpler than the trainer's masked loss.
Timing: ``--epochs`` epochs of ``--steps`` batches; the first epoch includes compilation and is
reported apart; examples/s is over the later epochs. Results: a table on stdout and ``--out`` JSON.
Results from a real run, when there has been one, are in docs/BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))


def device_facts() -> dict:
    import keras

    backend = keras.backend.backend()
    facts = {"backend": backend, "keras": keras.__version__, "python": platform.python_version()}
    try:
        if backend == "jax":
            import jax

            facts.update(jax=jax.__version__, devices=[str(d) for d in jax.devices()])
        elif backend == "torch":
            import torch

            facts.update(torch=torch.__version__, cuda=torch.cuda.is_available(),
                         devices=[torch.cuda.get_device_name(i)
                                  for i in range(torch.cuda.device_count())])
        elif backend == "tensorflow":
            import tensorflow as tf

            facts.update(tensorflow=tf.__version__,
                         devices=[d.name for d in tf.config.list_physical_devices()])
    except Exception as exc:  # facts only: never fail the benchmark on them
        facts["device_error"] = repr(exc)
    return facts


def synthetic(n: int, length: int, vocab: dict, n_static: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    x = {
        "item_ids": rng.integers(2, vocab["item"], (n, length), dtype="int32"),
        "category_ids": rng.integers(2, vocab["category"], (n, length), dtype="int32"),
        "event_type_ids": rng.integers(2, vocab["event_type"], (n, length), dtype="int32"),
        "price_buckets": rng.integers(2, vocab["price_bucket"], (n, length), dtype="int32"),
        "time_gaps": rng.random((n, length), dtype="float32") * 10,
        "static_features": rng.random((n, n_static), dtype="float32"),
    }
    pad = rng.integers(0, length // 2, n)  # left padding, as the table stores it
    for key in ("item_ids", "category_ids", "event_type_ids", "price_buckets", "time_gaps"):
        for i in np.nonzero(pad)[0][: n // 4]:
            x[key][i, : pad[i]] = 0
    y_purchase = (rng.random((n, 1)) < 0.2).astype("float32")
    y_categories = np.zeros((n, vocab["category"]), dtype="float32")
    y_categories[np.arange(n), rng.integers(2, vocab["category"], n)] = 1.0
    return x, {"purchase": y_purchase, "categories": y_categories}


def run_one(encoder: str, precision: str, args, vocab: dict) -> dict:
    import keras

    from demandlake.models.sequence import build_sequence_model

    keras.utils.set_random_seed(args.seed)
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bf16"
                                            else "float32")
    try:
        model = build_sequence_model(vocab, args.length, args.n_static, vocab["category"],
                                     encoder=encoder, hidden=args.hidden,
                                     item_dim=args.item_dim, category_dim=args.category_dim)
        model.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss={"purchase": "binary_crossentropy",
                            "categories": "categorical_crossentropy"},
                      loss_weights={"purchase": 1.0, "categories": 0.5},
                      jit_compile=args.jit)
        n = args.batch * args.steps
        x, y = synthetic(n, args.length, vocab, args.n_static, args.seed)
        times: list[float] = []

        class Clock(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.t = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                times.append(time.perf_counter() - self.t)

        hist = model.fit(x, y, batch_size=args.batch, epochs=args.epochs, shuffle=False,
                         verbose=0, callbacks=[Clock()])
        steady = times[1:] or times
        return {"encoder": encoder, "precision": precision, "batch": args.batch,
                "steps_per_epoch": args.steps, "first_epoch_s": round(times[0], 3),
                "steady_epoch_s": round(sum(steady) / len(steady), 3),
                "examples_per_s": round(n / (sum(steady) / len(steady))),
                "params": int(model.count_params()),
                "final_loss": float(hist.history["loss"][-1])}
    finally:
        keras.mixed_precision.set_global_policy("float32")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--encoders", nargs="+", default=["lstm", "gru", "attention"])
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"],
                   choices=["fp32", "bf16"])
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--steps", type=int, default=100, help="batches per epoch")
    p.add_argument("--epochs", type=int, default=3, help="the first one includes compilation")
    p.add_argument("--length", type=int, default=50)
    p.add_argument("--n-static", type=int, default=8)
    p.add_argument("--items", type=int, default=60000)
    p.add_argument("--categories", type=int, default=2000)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--item-dim", type=int, default=32)
    p.add_argument("--category-dim", type=int, default=16)
    p.add_argument("--jit", default="auto", help="Keras jit_compile: auto | true | false")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    args.jit = {"true": True, "false": False}.get(str(args.jit).lower(), "auto")
    vocab = {"item": args.items, "category": args.categories, "event_type": 8,
             "price_bucket": 12}
    facts = device_facts()
    print(json.dumps(facts), flush=True)
    rows = []
    for encoder in args.encoders:
        for precision in args.precisions:
            try:
                row = run_one(encoder, precision, args, vocab)
            except Exception as exc:  # one failing combination must not hide the others
                row = {"encoder": encoder, "precision": precision, "error": repr(exc)[:500]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| backend | encoder | precision | batch | first epoch s | steady epoch s | "
          "examples/s |\n|---|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {facts['backend']} | {r['encoder']} | {r['precision']} | {args.batch} | "
              f"{r.get('first_epoch_s', '-')} | {r.get('steady_epoch_s', '-')} | "
              f"{r.get('examples_per_s', r.get('error', '-'))} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"facts": facts, "args": vars(args),
                                              "results": rows}, indent=1))
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
