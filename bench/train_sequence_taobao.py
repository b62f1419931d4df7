"""Train and evaluate the sequence model on the real Taobao UserBehavior sample (not a test).

The project's own stages build the data: ingest (format ``taobao``, Asia/Shanghai days) ->
``gold.vocabularies`` + ``gold.sequence_examples`` (cutoffs split 60/20/20 by date) -> the
training run with MLflow, Spark ML / popularity baselines on the same test split. Everything
lives in a temporary lake.

    python bench/train_sequence_taobao.py --encoders lstm,gru,attention
    python bench/train_sequence_taobao.py --encoders lstm:64,gru:32,lstm:32 --seeds 7,8,9

An encoder may carry a recurrent width (``gru:32``); ``--seeds`` repeats every encoder per
training seed, so a difference between encoders can be read against the spread between seeds.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))
sys.path.insert(0, str(ROOT / "bench"))
log = logging.getLogger("bench.sequence")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "real" /
                                         "taobao_user_behavior_sample.csv"),
                   help="Taobao UserBehavior CSV (no header)")
    p.add_argument("--encoders", default="lstm,gru,attention",
                   help="encoders to train, each optionally with its width: lstm:64,gru:32")
    p.add_argument("--seeds", default=None,
                   help="training seeds (comma-separated); default: the configured one")
    p.add_argument("--epochs", type=int, default=5, help="training epochs")
    p.add_argument("--horizon-days", type=int, default=2, help="label window (days)")
    p.add_argument("--max-length", type=int, default=50, help="events per sequence")
    p.add_argument("--out", default=str(ROOT / "reports" / "sequence_taobao.json"),
                   help="where to write the JSON results")
    p.add_argument("--honest", action=argparse.BooleanOptionalAction, default=True,
                   help="every family and baseline on the test rows with bootstrap intervals "
                        "over users and calibration (bench/honest_eval.py)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--rolling", action=argparse.BooleanOptionalAction, default=True,
                   help="rolling-origin evaluation over every usable cutoff (with --honest)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s")
    for noisy in ("py4j", "alembic", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from demandlake.training.runner import train_sequence_model

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        spark, cfg, counts = taobao_examples(
            tmp, args.data, args.horizon_days, args.max_length,
            [f"training.epochs={args.epochs}", "training.learning_rate=0.003"])
        prep = time.perf_counter() - t0
        log.info("data ready in %.0fs: %s", prep, counts)
        seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else [None]
        variants = [(e.split(":")[0], int(e.split(":")[1]) if ":" in e else None, seed)
                    for e in args.encoders.split(",") for seed in seeds]
        for encoder, hidden, seed in variants:
            overrides = {"sequence_model.encoder": encoder}
            if hidden is not None:
                overrides["sequence_model.hidden"] = hidden
            if seed is not None:
                overrides["training.seed"] = seed
            run_cfg = cfg.with_overrides(overrides)
            t1 = time.perf_counter()
            r = train_sequence_model(spark, run_cfg)
            results.append({"encoder": encoder,
                            "hidden": int(run_cfg.get("sequence_model.hidden")),
                            "seed": int(run_cfg.get("training.seed")),
                            "seconds": round(time.perf_counter() - t1, 1),
                            "metrics": r.metrics.get("network_test") or r.metrics.get("test", {}),
                            "baselines": r.baselines,
                            "validation": r.metrics.get("validation", {}), "version": r.version,
                            "promoted": r.promoted, "family": r.family,
                            "families": {k: v for k, v in r.metrics.items()
                                         if k.startswith(("network_", "spark_"))}})
            # "test" is the registered family's; the network's own is "network_test" when a
            # Spark ML family won (training.families).
            m, b = r.metrics.get("network_test") or r.metrics.get("test", {}), r.baselines
            print(f"\n== encoder={encoder} hidden={results[-1]['hidden']} seed="
                  f"{results[-1]['seed']} ({results[-1]['seconds']}s, v{r.version}, "
                  f"family={r.family}, promoted={r.promoted})")
            from demandlake.training import families

            for fam_name in families.enabled(run_cfg):
                for split in ("validation", "test"):
                    g = r.metrics.get(f"{fam_name}_{split}")
                    if g:
                        print(f"  {fam_name} ({split}): ROC-AUC {g['purchase_roc_auc']:.4f}  "
                              f"PR-AUC {g['purchase_pr_auc']:.4f}  log loss "
                              f"{g['purchase_log_loss']:.4f}  ECE {g['purchase_ece']:.4f}")
            if args.honest:
                import honest_eval

                report = honest_eval.evaluate(
                    honest_eval.predictions(spark, run_cfg, r),
                    Path(args.out).parent / f"plots-{encoder}-{results[-1]['seed']}",
                    n_boot=args.bootstrap)
                results[-1]["honest"] = report
                print(f"  test n={report['n_test']} ({report['n_test_users']} users), "
                      f"intervals over users ({args.bootstrap} resamples):")
                print(honest_eval.table(report))
                if args.rolling and not results[:-1]:  # once: it does not depend on the network
                    rolling = honest_eval.rolling_origin(spark, run_cfg, r.table_version,
                                                         args.horizon_days, args.bootstrap)
                    results[-1]["rolling_origin"] = rolling
                    print("  rolling origin (Spark ML families and the static baseline):")
                    print(honest_eval.rolling_table(rolling))
            nv = r.metrics.get("network_validation") or r.metrics.get("validation", {})
            print(f"  network (validation): ROC-AUC {nv.get('purchase_roc_auc', float('nan')):.4f}"
                  f"  PR-AUC {nv.get('purchase_pr_auc', float('nan')):.4f}")
            print(f"purchase: ROC-AUC {m.get('purchase_roc_auc', float('nan')):.4f}  PR-AUC "
                  f"{m.get('purchase_pr_auc', float('nan')):.4f}  log loss "
                  f"{m.get('purchase_log_loss', float('nan')):.4f}  ECE "
                  f"{m.get('purchase_ece', float('nan')):.4f}  (n {m.get('purchase_n')}, "
                  f"positive rate {m.get('purchase_positive_rate', float('nan')):.3f})")
            lr = b.get("static_logistic", {})
            print(f"  baseline logistic(static): ROC-AUC {lr.get('roc_auc', float('nan')):.4f}"
                  f"  PR-AUC {lr.get('pr_auc', float('nan')):.4f}  log loss "
                  f"{lr.get('log_loss', float('nan')):.4f}")
            pop = b.get("popularity", {})
            print(f"categories: recall@5 {m.get('categories_recall@5', float('nan')):.4f}  "
                  f"recall@10 {m.get('categories_recall@10', float('nan')):.4f}  MRR "
                  f"{m.get('categories_mrr', float('nan')):.4f}  (n "
                  f"{m.get('categories_n_with_purchase')})")
            print(f"  baseline popularity: recall@5 {pop.get('recall@5', float('nan')):.4f}  "
                  f"recall@10 {pop.get('recall@10', float('nan')):.4f}  MRR "
                  f"{pop.get('mrr', float('nan')):.4f}")
        spark.stop()
    summary = summarize(results)
    if len(results) > 1:
        print("\nper encoder over seeds (mean, min..max):")
        for key, row in summary.items():
            print(f"  {key:10s} n={row['runs']} " + "  ".join(
                f"{m} {v['mean']:.4f} ({v['min']:.4f}..{v['max']:.4f})"
                for m, v in row["metrics"].items()))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "data": counts, "prep_seconds": prep,
                               "results": results, "summary": summary}, indent=1, default=str))
    print(f"\nresults written to {out}")
    return 0


def taobao_examples(tmp: str, data: str, horizon_days: int = 2, max_length: int = 50,
                    overrides: list[str] | None = None):
    """The Taobao sample through the project's own stages in a temporary lake under ``tmp``:
    ingest (``taobao``, Asia/Shanghai days) -> gold.vocabularies + gold.sequence_examples.

    Returns:
        (spark, cfg, the examples stage's counts).
    """
    from demandlake.config import load_config
    from demandlake.pipeline.ingest import Source, run_ingest
    from demandlake.pipeline.transform import run_sequence_examples
    from demandlake.spark import get_spark

    cfg = load_config(overrides=[
        f"lake.uri={tmp}/lake", "lake.catalog=in-memory", "spark.master=local[2]",
        "spark.conf.spark.sql.shuffle.partitions=4", "lake.timezone=Asia/Shanghai",
        f"sequences.horizon_days={horizon_days}", f"sequences.max_length={max_length}",
        *(overrides or [])])
    spark = get_spark(cfg, "demandlake-bench-sequence")
    run_ingest(spark, cfg, dt.date(2017, 12, 3),
               sources=[Source("taobao", "taobao", data, "Asia/Shanghai")])
    return spark, cfg, run_sequence_examples(spark, cfg)


SUMMARY_METRICS = ("purchase_roc_auc", "purchase_pr_auc", "purchase_log_loss",
                   "categories_recall@10", "categories_mrr")


def summarize(results: list[dict]) -> dict:
    """Mean, min and max of the test metrics per encoder and width, over the seeds run."""
    groups: dict[str, list[dict]] = {}
    for r in results:
        groups.setdefault(f"{r['encoder']}:{r['hidden']}", []).append(r["metrics"])
    out = {}
    for key, runs in groups.items():
        metrics = {}
        for m in SUMMARY_METRICS:
            values = [float(x[m]) for x in runs if x.get(m) is not None]
            if values:
                metrics[m] = {"mean": sum(values) / len(values), "min": min(values),
                              "max": max(values)}
        out[key] = {"runs": len(runs), "metrics": metrics}
    return out


if __name__ == "__main__":
    sys.exit(main())
