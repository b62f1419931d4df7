"""Settings of the Spark ML propensity families on the Taobao sample, judged on VALIDATION (as
the pipeline chooses), with the fit time of each: what the shipped defaults rest on.

    python bench/family_sweep.py --set propensity.spark_gbt.max_iter=10,20,40

Builds the sample's examples as ``bench/train_sequence_taobao.py`` does (ingest -> vocabularies
-> examples, horizon 2 days) in a temporary lake, then fits each family once per value of each
``--set`` key (the others at their defaults) and prints validation and test ROC-AUC / PR-AUC /
log loss, the Platt calibration chosen, and the seconds of fit + calibration.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))
sys.path.insert(0, str(ROOT / "bench"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "real" /
                                         "taobao_user_behavior_sample.csv"))
    p.add_argument("--set", action="append", default=[],
                   help="KEY=V1,V2,...: one fit per value (repeatable)")
    p.add_argument("--out", default=None, help="JSON results")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from pyspark.sql import functions as F

    from demandlake.training import families
    from demandlake.training.runner import table_location
    from train_sequence_taobao import taobao_examples

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        spark, cfg, _ = taobao_examples(tmp, args.data)
        rows = (spark.read.format("delta").load(table_location(cfg, "gold.sequence_examples"))
                .where(F.col("label_purchase").isNotNull()).cache())
        split = {s: rows.where(F.col("split") == s) for s in ("train", "validation", "test")}
        variants = [({}, "defaults")]
        for item in args.set:
            key, values = item.split("=", 1)
            variants += [({key: v}, f"{key}={v}") for v in values.split(",")]
        for overrides, label in variants:
            run_cfg = cfg.with_overrides(overrides)
            for family in families.enabled(run_cfg):
                if overrides and not next(iter(overrides)).startswith(f"propensity.{family}."):
                    continue
                t0 = time.perf_counter()
                model = families.calibrate(run_cfg, families.fit(run_cfg, family,
                                                                 split["train"]),
                                           split["validation"])
                seconds = time.perf_counter() - t0
                m = {s: families.metrics(run_cfg, model, split[s]) for s in ("validation", "test")}
                results.append({"family": family, "variant": label, "seconds": round(seconds, 1),
                                "calibration": model.calibration.get("method"),
                                **{f"{s}_{k}": m[s][f"purchase_{k}"] for s in m
                                   for k in ("roc_auc", "pr_auc", "log_loss")}})
                r = results[-1]
                print(f"{family:15s} {label:40s} {r['seconds']:6.1f}s  val ROC {r['validation_roc_auc']:.3f} "
                      f"PR {r['validation_pr_auc']:.3f} LL {r['validation_log_loss']:.3f} | test ROC "
                      f"{r['test_roc_auc']:.3f} PR {r['test_pr_auc']:.3f} LL {r['test_log_loss']:.3f}"
                      f"  ({r['calibration']})", flush=True)
        spark.stop()
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
