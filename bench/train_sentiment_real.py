"""Train and evaluate the review sentiment model on the real public corpora (not a test).

Chinese: online_shopping_10_cats.csv (cat, label, review). English: womens clothing reviews
(rating 1-2 negative, 4-5 positive, 3 neutral and excluded). Exact duplicate (text, label) rows
are dropped before a stratified random 80/10/10 train/validation/test split per language, so no
review is both trained on and tested on.

The data is written as Parquet files shaped like ``gold.review_corpus`` and trained with the
project's own trainer (``horovod_trainer.train``, one rank) -- the code path the pipeline uses.

    python bench/train_sentiment_real.py --tokenizer both      # the report in docs/MODELS.md
    python bench/train_sentiment_real.py --languages zh --tokenizer jieba
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))
log = logging.getLogger("bench.sentiment")


def load_zh(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df["review"] = df["review"].str.replace("\ufeff", "", regex=False).str.strip()
    df = df[df["review"] != ""]
    return pd.DataFrame({"text": df["review"], "label": df["label"].astype(int),
                         "category": df["cat"], "language": "zh"})


def load_en(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path)
    df = df[df["Review Text"].notna() & (df["Review Text"].str.strip() != "")]
    df = df[df["Rating"] != 3]
    return pd.DataFrame({"text": df["Review Text"].str.strip(),
                         "label": (df["Rating"] >= 4).astype(int),
                         "category": df["Department Name"].fillna("(none)"), "language": "en"})


def split(df: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Dedupe, then stratified 80/10/10 per (language, label)."""
    before = len(df)
    df = df.drop_duplicates(["text", "label"]).reset_index(drop=True)
    # a text with both labels is contradictory: drop it entirely
    df = df[~df.duplicated("text", keep=False)].reset_index(drop=True)
    log.info("dropped %d duplicate/contradictory rows of %d", before - len(df), before)
    rng = np.random.default_rng(seed)
    out = np.empty(len(df), dtype=object)
    for _, idx in df.groupby(["language", "label"]).indices.items():
        idx = rng.permutation(idx)
        n_test = n_val = int(round(0.1 * len(idx)))
        out[idx[:n_test]] = "test"
        out[idx[n_test:n_test + n_val]] = "validation"
        out[idx[n_test + n_val:]] = "train"
    df["split"] = out
    return df


def write_corpus(df: pd.DataFrame, directory: Path, n_files: int = 4) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory.mkdir(parents=True, exist_ok=True)
    df = df.sample(frac=1.0, random_state=0).reset_index(drop=True)  # mix splits across files
    files = []
    for i, part in enumerate(np.array_split(np.arange(len(df)), n_files)):
        path = directory / f"part-{i:05d}.parquet"
        pq.write_table(pa.Table.from_pandas(df.iloc[part], preserve_index=False), path)
        files.append(str(path))
    return {s: {"split": s, "files": files} for s in ("train", "validation", "test")}


def run(df: pd.DataFrame, tokenizer: str, args, work: Path) -> dict:
    from demandlake.config import load_config
    from demandlake.training.horovod_trainer import train

    cfg = load_config().data
    cfg["training"].update(epochs=args.epochs, batch_size=args.batch_size,
                           learning_rate=args.learning_rate, seed=args.seed, resume=False,
                           threads=args.threads, decay=args.decay)
    cfg["sentiment_model"].update(tokenizer=tokenizer, architecture=args.architecture,
                                  max_length=args.max_length, max_tokens=args.max_tokens,
                                  dropout=args.dropout)
    for item in args.overrides:
        key, value = item.split("=", 1)
        section, name = key.split(".", 1)
        cfg[section][name] = yaml.safe_load(value)
    spec = {"splits": write_corpus(df, work / f"data-{tokenizer}")}
    t0 = time.perf_counter()
    result = train("sentiment", cfg, spec, str(work / f"out-{tokenizer}"))
    wall = time.perf_counter() - t0
    test = result["metrics"]["test"]
    hist = result["epochs"]
    return {
        "tokenizer": tokenizer, "architecture": args.architecture, "epochs": args.epochs,
        "sentiment_model": cfg["sentiment_model"],
        "train_rows": int((df["split"] == "train").sum()),
        "test_rows": int((df["split"] == "test").sum()),
        "wall_seconds": round(wall, 1),
        "train_seconds": round(sum(h["epoch_seconds"] for h in hist), 1),
        "examples_per_second": round(float(np.mean([h["examples_per_second"] for h in hist[1:]]
                                                   or [hist[0]["examples_per_second"]])), 1),
        "epochs_history": hist,
        "test": {k: v for k, v in test.items()},
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "real"),
                   help="folder with the two CSV files")
    p.add_argument("--languages", default="zh,en", help="zh, en or zh,en (one joint model)")
    p.add_argument("--tokenizer", default="char", choices=["char", "jieba", "both"],
                   help="tokenizer(s) to train with")
    p.add_argument("--architecture", default="textcnn", choices=["textcnn", "bilstm"],
                   help="classifier")
    p.add_argument("--epochs", type=int, default=2, help="training epochs")
    p.add_argument("--batch-size", type=int, default=64, help="batch size")
    p.add_argument("--learning-rate", type=float, default=2e-3, help="Adam learning rate")
    p.add_argument("--max-length", type=int, default=128, help="tokens per review")
    p.add_argument("--dropout", type=float, default=0.4, help="classifier dropout")
    p.add_argument("--decay", default="cosine", choices=["none", "cosine"],
                   help="learning-rate decay over the run")
    p.add_argument("--max-tokens", type=int, default=20000, help="vocabulary size")
    p.add_argument("--threads", type=int, default=0, help="TF threads (0 = default)")
    p.add_argument("--max-rows", type=int, default=0, help="subsample per language (0 = all)")
    p.add_argument("--seed", type=int, default=7, help="split and training seed")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="extra setting, e.g. sentiment_model.filters=128 or training.decay=cosine"
                        " (value parsed as YAML; repeatable)")
    p.add_argument("--out", default=str(ROOT / "reports" / "sentiment_real.json"),
                   help="where to write the JSON results")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    data = Path(args.data_dir)
    frames = []
    langs = args.languages.split(",")
    if "zh" in langs:
        frames.append(load_zh(data / "online_shopping_10_cats.csv"))
    if "en" in langs:
        frames.append(load_en(data / "womens_clothing_ecommerce_reviews.csv"))
    if args.max_rows:
        frames = [f.sample(min(len(f), args.max_rows), random_state=args.seed) for f in frames]
    df = split(pd.concat(frames, ignore_index=True), args.seed)
    log.info("corpus: %s", df.groupby(["language", "split"]).size().to_dict())
    tokenizers = ["char", "jieba"] if args.tokenizer == "both" else [args.tokenizer]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for tok in tokenizers:
            results.append(run(df, tok, args, Path(tmp)))
            r = results[-1]
            t = r["test"]
            print(f"\n== tokenizer={tok} architecture={args.architecture} epochs={args.epochs}"
                  f" train_rows={r['train_rows']} test_rows={r['test_rows']}")
            print(f"test accuracy {t['accuracy']:.4f}  F1 {t['f1']:.4f}  ROC-AUC "
                  f"{t['roc_auc']:.4f}  train {r['train_seconds']}s  "
                  f"{r['examples_per_second']} examples/s  wall {r['wall_seconds']}s")
            for k in sorted(t):
                if k.startswith(("language.", "category.")) and k.endswith(".accuracy"):
                    print(f"  {k[:-9]:<28} accuracy {t[k]:.4f}  n {int(t[k[:-9] + '.n'])}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "results": results}, indent=1,
                              ensure_ascii=False, default=float))
    print(f"\nresults written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
