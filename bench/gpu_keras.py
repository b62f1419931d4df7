"""Single-GPU training throughput of the models on whatever Keras 3 backend the node has.

The GPU node this project can borrow (one H200, Python 3.12, JAX and PyTorch, no TensorFlow and
no network) cannot run the TensorFlow/Horovod trainer. The models are backend-neutral
(``demandlake.models`` uses ``keras`` and ``keras.ops`` only), so this script measures the same
builders, same shapes, with Keras' own ``fit`` on JAX or PyTorch (or TensorFlow here on CPU), in
float32 (``fp32``), mixed bfloat16 as the trainer runs it on GPUs (``bf16``: embedding lookups in
float32, the builders' default) and mixed bfloat16 with bfloat16 lookups (``bf16-emb``, 5-57x
slower on an H200):

    KERAS_BACKEND=jax python bench/gpu_keras.py --batch 1024 --steps 200 --out gpu.json
    KERAS_BACKEND=jax python bench/gpu_keras.py --encoders textcnn bilstm   # sentiment model

Only ``keras`` must be importable. On a node without network, ``bench/gpu_node.sh`` says which
wheels to carry (2.9 MiB) and runs the usual set on JAX and PyTorch.

Synthetic inputs with the shapes of ``gold.sequence_examples`` (vocabulary sizes of the Taobao
sample by default, length 30 as ``sequences.max_length``); the loss is the plain two-head one
(binary cross-entropy for purchase, sparse categorical cross-entropy against one category id per
example), close to but simpler than the trainer's masked loss. The sentiment architectures get
Zipf-distributed token ids (160 tokens, a 20,000-token vocabulary) and binary cross-entropy.
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
    # one category id per example (sparse target): a one-hot [n, categories] matrix would be
    # n * categories * 4 bytes of host memory (1.6 GB at 200k x 2,000) for the same softmax
    y_categories = rng.integers(2, vocab["category"], (n, 1), dtype="int32")
    return x, {"purchase": y_purchase, "categories": y_categories}


def synthetic_text(n: int, length: int, tokens: int, seed: int):
    """Token ids drawn Zipf-like (a few tokens are most of the text, as in real reviews)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = np.minimum(rng.zipf(1.2, (n, length)) + 1, tokens - 1).astype("int32")
    lengths = rng.integers(length // 8, length + 1, n)
    ids[np.arange(length)[None, :] >= lengths[:, None]] = 0  # right padding, as vectorized
    return {"token_ids": ids}, {"positive": (rng.random((n, 1)) < 0.7).astype("float32")}


def build(encoder: str, precision: str, args, vocab: dict, n: int):
    """(model, losses, loss weights, x, y) for a sequence encoder or a sentiment architecture."""
    from demandlake.models.sentiment import ARCHITECTURES, build_sentiment_model
    from demandlake.models.sequence import build_sequence_model

    # bf16-emb: the embedding lookups in bfloat16 too (the builders keep them in float32)
    embedding_dtype = None if precision == "bf16-emb" else "float32"
    if encoder in ARCHITECTURES:
        model = build_sentiment_model(args.tokens, args.text_length, architecture=encoder,
                                      embedding_dtype=embedding_dtype)
        x, y = synthetic_text(n, args.text_length, args.tokens, args.seed)
        return model, {"positive": "binary_crossentropy"}, None, x, y
    model = build_sequence_model(vocab, args.length, args.n_static, vocab["category"],
                                 encoder=encoder, hidden=args.hidden, item_dim=args.item_dim,
                                 category_dim=args.category_dim, embedding_dtype=embedding_dtype)
    x, y = synthetic(n, args.length, vocab, args.n_static, args.seed)
    return (model, {"purchase": "binary_crossentropy",
                    "categories": "sparse_categorical_crossentropy"},
            {"purchase": 1.0, "categories": 0.5}, x, y)


def run_one(encoder: str, precision: str, args, vocab: dict) -> dict:
    import keras

    keras.utils.set_random_seed(args.seed)
    keras.mixed_precision.set_global_policy("float32" if precision == "fp32"
                                            else "mixed_bfloat16")
    try:
        n = args.batch * args.steps
        model, losses, weights, x, y = build(encoder, precision, args, vocab, n)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=losses, loss_weights=weights,
                      jit_compile=args.jit)
        times: list[float] = []

        class Clock(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.t = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                times.append(time.perf_counter() - self.t)

        hist = model.fit(x, y, batch_size=args.batch, epochs=args.epochs, shuffle=False,
                         verbose=0, callbacks=[Clock()])
        steady = times[1:] or times
        predict = {}
        if args.predict_batch:
            model.predict(x, batch_size=args.predict_batch, verbose=0)  # compiles
            t = time.perf_counter()
            model.predict(x, batch_size=args.predict_batch, verbose=0)
            predict = {"predict_batch": args.predict_batch,
                       "predict_per_s": round(n / (time.perf_counter() - t))}
        return {"encoder": encoder, "precision": precision, "batch": args.batch,
                "steps_per_epoch": args.steps, "first_epoch_s": round(times[0], 3),
                "steady_epoch_s": round(sum(steady) / len(steady), 3),
                "examples_per_s": round(n / (sum(steady) / len(steady))),
                "params": int(model.count_params()),
                "final_loss": float(hist.history["loss"][-1]), **predict}
    finally:
        keras.mixed_precision.set_global_policy("float32")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--encoders", nargs="+", default=["lstm", "gru", "attention"],
                   help="sequence encoders (lstm, gru, attention) and/or sentiment "
                        "architectures (textcnn, bilstm)")
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"],
                   choices=["fp32", "bf16", "bf16-emb"],
                   help="fp32; bf16 (mixed_bfloat16, embedding lookups in float32, as the "
                        "trainer runs on GPU); bf16-emb (the lookups in bfloat16 too)")
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--steps", type=int, default=100, help="batches per epoch")
    p.add_argument("--epochs", type=int, default=3, help="the first one includes compilation")
    p.add_argument("--length", type=int, default=30)
    p.add_argument("--n-static", type=int, default=8)
    p.add_argument("--items", type=int, default=60000)
    p.add_argument("--categories", type=int, default=2000)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--tokens", type=int, default=20000, help="sentiment vocabulary (max_tokens)")
    p.add_argument("--text-length", type=int, default=160, help="sentiment max_length")
    p.add_argument("--item-dim", type=int, default=32)
    p.add_argument("--category-dim", type=int, default=16)
    p.add_argument("--predict-batch", type=int, default=0,
                   help="also time model.predict over the same examples at this batch size "
                        "(0: no); the second of two passes, so compilation is not counted")
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
          "examples/s | predict examples/s |\n|---|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {facts['backend']} | {r['encoder']} | {r['precision']} | {args.batch} | "
              f"{r.get('first_epoch_s', '-')} | {r.get('steady_epoch_s', '-')} | "
              f"{r.get('examples_per_s', r.get('error', '-'))} | {r.get('predict_per_s', '-')} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"facts": facts, "args": vars(args),
                                              "results": rows}, indent=1))
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
