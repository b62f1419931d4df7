"""Benchmark (not a test): sequence-model training throughput on 1 and 2 Horovod ranks (CPU, Gloo).

The same synthetic training set (``training.synthetic.sequence_examples``, Parquet shards) and
the configured model architecture (conf/defaults.yaml ``sequence_model``) are trained for
``--epochs`` epochs:

* 1 rank with the ``local`` launcher, ``training.threads`` = all cores;
* N ranks with ``horovodrun -np N --gloo``, ``training.threads`` = cores / N per rank.

Throughput is the trainer's own ``examples_per_second`` (all ranks' examples per second of the
training loop, validation excluded), taken from the last epoch (the first includes tracing).
Scaling efficiency = throughput(N) / (N x throughput(1)). On one machine the ranks share its cores,
so this measures what Horovod's data parallelism costs or gains against one rank using all the
threads, not multi-node scaling.

    python bench/train_scaling.py --examples 20000 --epochs 3 --ranks 2 --out reports/train_scaling.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--examples", type=int, default=20000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--out", default=None)
    args = p.parse_args()

    from demandlake.config import load_config
    from demandlake.training import synthetic as syn
    from demandlake.training.launch import launch

    cores = os.cpu_count() or 1
    base = load_config().data
    length = int(base["sequence_model"].get("max_length", 50))
    vocab = {"item": 2000, "category": 50, "event_type": 8}
    work = Path(tempfile.mkdtemp(prefix="demandlake-train-scaling-"))
    frame = syn.sequence_examples(args.examples, max_length=length, n_items=vocab["item"],
                                  n_categories=vocab["category"], seed=1)
    spec = {"splits": syn.write_parquet(frame, work / "data", n_files=8),
            "vocab_sizes": vocab, "max_length": length}

    def run(ranks: int) -> dict:
        cfg = load_config().data
        cfg["training"].update(epochs=args.epochs, batch_size=args.batch_size, baselines=False,
                               resume=False, threads=max(1, cores // ranks),
                               launcher="local" if ranks == 1 else "horovodrun", num_proc=ranks)
        t0 = time.perf_counter()
        result = launch("sequence", cfg, spec, str(work / f"ranks-{ranks}"))
        wall = time.perf_counter() - t0
        last = result["epochs"][-1]
        return {"ranks": ranks, "threads_per_rank": cfg["training"]["threads"],
                "examples_per_second": round(last["examples_per_second"], 1),
                "epoch_seconds": round(last["epoch_seconds"], 2),
                "per_epoch_examples_per_second": [round(e["examples_per_second"], 1)
                                                  for e in result["epochs"]],
                "wall_seconds": round(wall, 1),
                "test_purchase_roc_auc": round(result["metrics"]["test"]["purchase_roc_auc"], 4)}

    load_start = os.getloadavg()
    one = run(1)
    many = run(args.ranks)
    eff = many["examples_per_second"] / (args.ranks * one["examples_per_second"])
    out = {
        "command": "python bench/train_scaling.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None),
        "machine": {"logical_cores": cores, "python": platform.python_version(),
                    "load_average_start": load_start, "load_average_end": os.getloadavg()},
        "model": {**{k: base["sequence_model"].get(k) for k in
                     ("encoder", "hidden", "item_dim", "category_dim")}, "max_length": length,
                  "vocab": vocab},
        "examples": args.examples, "train_rows": int((frame["split"] == "train").sum()),
        "batch_size_per_rank": args.batch_size,
        "one_rank": one, "n_ranks": many,
        "speedup": round(many["examples_per_second"] / one["examples_per_second"], 3),
        "scaling_efficiency": round(eff, 3),
    }
    print(json.dumps(out, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
