"""Benchmark (not a test): the sequence model scored through the pandas UDF against a
row-at-a-time Python UDF, then a memory-bounded run over many synthetic users.

Users are generated as padded sequence rows in Spark (``spark.range`` + SQL expressions; real
lengths uniform in 1..max_length; nothing is collected or held) and stored once as Parquet per
user count; every timed path reads them back, as scoring reads ``gold.sequence_examples``
(generating them on every pass would bound the figures by the generator: it runs at about 12,500
users/s here). Outputs go to Spark's ``noop`` sink so only reading and scoring are timed. The
model is the configured sequence architecture (``conf/defaults.yaml``: LSTM, hidden 32,
max_length 30), untrained but seeded: inference cost does not depend on the weights.

Paths, each on the same users as the pandas UDF it is compared with:

* batch UDF: ``scoring.udfs.sequence_scorer_arrow`` through ``mapInArrow`` (what ``run_score``
  runs), or with ``--udf pandas`` ``sequence_scorer`` through ``mapInPandas``;
* row-at-a-time, plain: a ``F.udf`` calling ``SequencePredictor.predict`` (eager Keras) per row;
* row-at-a-time, compiled: a ``F.udf`` calling the compiled ``SequenceScorer`` per row (the
  strongest row-at-a-time baseline: same graph, one row per call).

The model is loaded once per Python worker in every path and a warm-up run loads it before any
timing. Peak memory is the largest sampled sum of resident memory of this process and all its
children (the JVM and the Python workers), sampled every 0.2 s with psutil.

Run from the repository root::

    PYSPARK_PYTHON=$VENV/bin/python $VENV/bin/python bench/score_udf.py \\
        --compare-users 20000 --eager-users 600 --throughput-users 200000 --users 1000000 \\
        --out reports/score_udf.json

To compare model shapes instead (the pandas-UDF path only, the variants timed in turn, each
``--rounds`` times, on the same users)::

    ... bench/score_udf.py --encoders lstm:64,gru:64,lstm:32,gru:32 --throughput-users 200000

A variant may name its sequence length too (``encoder:hidden:max_length``, at most
``--max-length``): it then reads the same users with only their last ``max_length`` steps, as the
sequences job would have stored them at that setting. A trailing ``:arrow`` scores it through
``mapInArrow`` instead of ``mapInPandas``::

    ... bench/score_udf.py --max-length 50 --encoders lstm:32:50,lstm:32:30,lstm:32:30:arrow

Results (and the command, the machine and its load) are printed as JSON; docs/SCORING.md keeps them.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class PeakRss:
    """Samples the resident memory of this process tree in a thread."""

    def __init__(self, interval: float = 0.2):
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.peak_total = 0
        self.peak_by_kind: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _kind(self, p) -> str:
        try:
            cmd = " ".join(p.cmdline())
        except Exception:
            return "other"
        if "java" in cmd:
            return "jvm"
        if "pyspark.daemon" in cmd or "pyspark.worker" in cmd:
            return "python_workers"
        return "other"

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            by_kind = {"driver_python": self.proc.memory_info().rss}
            for child in self.proc.children(recursive=True):
                try:
                    kind = self._kind(child)
                    by_kind[kind] = by_kind.get(kind, 0) + child.memory_info().rss
                except psutil.Error:
                    continue
            self.peak_total = max(self.peak_total, sum(by_kind.values()))
            for k, v in by_kind.items():
                self.peak_by_kind[k] = max(self.peak_by_kind.get(k, 0), v)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def report(self) -> dict:
        mib = 1024 * 1024
        return {"peak_total_mib": round(self.peak_total / mib),
                **{f"peak_{k}_mib": round(v / mib) for k, v in sorted(self.peak_by_kind.items())}}


def save_model(cfg, out: Path, vocab: dict) -> str:
    """Build the configured sequence model (seeded, untrained) and save it as the pyfunc model
    training logs (same wrapper, same meta); returns its local path."""
    import keras
    import mlflow.pyfunc

    from demandlake.training.pyfunc import SequencePyfunc
    from demandlake.training.tasks import make_task

    keras.utils.set_random_seed(7)
    task = make_task("sequence", cfg.data, {"vocab_sizes": vocab,
                                            "max_length": int(cfg["sequences.max_length"])})
    model = task.build_model()
    keras_path = out / "model.keras"
    model.save(keras_path)
    path = out / "pyfunc"
    mlflow.pyfunc.save_model(str(path), python_model=SequencePyfunc(task.pyfunc_meta()),
                             artifacts={"keras_model": str(keras_path)})
    return str(path)


def sequences(spark, n: int, length: int, vocab: dict, partitions: int):
    """``n`` users' padded sequences, generated in Spark (deterministic per user id).

    One hash per user and column, then arithmetic per step: the JVM's share of the work stays
    small next to scoring (the run reports it as ``generation_only``)."""
    from pyspark.sql import functions as F

    def ids(name: str, size: int) -> str:
        return (f"transform(sequence(1, {length}), i -> CAST(IF(i <= {length} - seq_len, 0, "
                f"2 + pmod(h_{name} + i * 7919, {size - 2})) AS INT))")

    gaps = (f"transform(sequence(1, {length}), i -> CAST(IF(i <= {length} - seq_len + 1, 0.0, "
            f"log1p(pmod(h_gap + i * 104729, 86400))) AS FLOAT))")
    static = "transform(sequence(1, 5), j -> CAST(pmod(h_gap + j * 31, 100) / 10.0 AS FLOAT))"
    names = ("item", "category", "event", "price", "gap")
    return (spark.range(0, n, numPartitions=partitions)
            .select("id", (F.lit(1) + F.pmod(F.xxhash64("id"), F.lit(length))).alias("seq_len"),
                    *[F.xxhash64("id", F.lit(k)).alias(f"h_{k}") for k in names])
            .select(F.concat(F.lit("u"), F.col("id").cast("string")).alias("user_id"),
                    F.expr(ids("item", vocab["item"])).alias("item_ids"),
                    F.expr(ids("category", vocab["category"])).alias("category_ids"),
                    F.expr(ids("event", vocab["event_type"])).alias("event_type_ids"),
                    F.expr(ids("price", vocab["price_bucket"])).alias("price_buckets"),
                    F.expr(gaps).alias("time_gaps"), F.expr(static).alias("static_features")))


def row_udf(model_path: str, compiled: bool):
    """The row-at-a-time baseline: a plain Python UDF calling the model once per row (benchmark
    only; the model is loaded once per worker through the same cache as the pandas path)."""
    import pandas as pd
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from demandlake.scoring import udfs

    def score(*cols):
        frame = pd.DataFrame([cols], columns=list(udfs.SEQUENCE_INPUTS))
        if compiled:
            out = udfs.load_sequence_scorer(model_path, None, 3).predict(frame)
        else:
            predictor = udfs.load_predictor(model_path)
            predictor.meta.update(top_k=3)
            out = predictor.predict(frame)
        return (float(out["purchase_probability"][0]), [int(v) for v in out["top_category_ids"][0]],
                [float(v) for v in out["top_category_scores"][0]])

    fields = [udfs.SEQUENCE_SCORES[c] for c in ("purchase_probability", "top_category_ids",
                                                "top_category_scores")]
    # The classic pickled row path, stated explicitly: Spark 4.2 turns on Arrow-optimized Python
    # UDFs by default, and 4.2.0's columnar Arrow UDF runner hangs forever on a Parquet scan
    # (SPARK-58241; docs/STACK.md).
    return F.udf(score, T.StructType(fields), useArrow=False)


def timed(action) -> float:
    t0 = time.perf_counter()
    action()
    return time.perf_counter() - t0


def machine() -> dict:
    import psutil

    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "logical_cores": os.cpu_count(), "memory_gib":
            round(psutil.virtual_memory().total / 2**30, 1), "python": platform.python_version(),
            "load_average_start": [round(x, 2) for x in os.getloadavg()]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--compare-users", type=int, default=20_000,
                        help="users scored by the pandas UDF and the compiled row-at-a-time UDF")
    parser.add_argument("--eager-users", type=int, default=600,
                        help="first users of those also scored by the plain row-at-a-time UDF "
                             "(eager model call per row: slow)")
    parser.add_argument("--throughput-users", type=int, default=200_000,
                        help="users for the pandas-UDF throughput figures (with and without "
                             "skipping padding steps)")
    parser.add_argument("--users", type=int, default=1_000_000,
                        help="users of the memory-bounded run (0 skips it)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="rows per model call and Arrow batch (default: scoring.batch_size)")
    parser.add_argument("--partitions", type=int, default=None,
                        help="Spark partitions of the generated users (default: 2 x cores)")
    parser.add_argument("--categories", type=int, default=200,
                        help="category vocabulary of the model (the Taobao sample has 1,796; "
                             "the category head's width matters once top-k is cheap)")
    parser.add_argument("--max-length", type=int, default=None,
                        help="events per sequence (default: sequences.max_length)")
    parser.add_argument("--master", default="local[2]", help="Spark master")
    parser.add_argument("--driver-memory", default="2g", help="spark.driver.memory")
    parser.add_argument("--encoders", default=None,
                        help="compare these encoder:hidden variants (e.g. lstm:64,gru:32) on "
                             "--throughput-users users instead of the runs above")
    parser.add_argument("--rounds", type=int, default=2,
                        help="with --encoders: times each variant is timed, in turn")
    parser.add_argument("--udf", choices=("arrow", "pandas"), default="arrow",
                        help="the batch path: mapInArrow (sequence_scorer_arrow, what the "
                             "nightly job runs) or mapInPandas (sequence_scorer). With "
                             "--encoders, variants use mapInPandas unless they end in :arrow")
    parser.add_argument("--out", default=None, help="also write the JSON result here")
    args = parser.parse_args(argv)

    from pyspark.sql import functions as F

    from demandlake.config import load_config
    from demandlake.scoring import udfs
    from demandlake.spark import get_spark

    tmp = Path(tempfile.mkdtemp(prefix="score_udf_"))
    cfg = load_config(overrides=[f"lake.uri={tmp / 'lake'}", "lake.catalog=in-memory",
                                 f"spark.master={args.master}",
                                 f"spark.conf.spark.driver.memory={args.driver_memory}",
                                 *([f"sequences.max_length={args.max_length}"]
                                   if args.max_length else [])])
    batch = int(args.batch_size or cfg.get("scoring.batch_size", 2048))
    cores = int(args.master.split("[")[1].rstrip("]")) if "[" in args.master else os.cpu_count()
    partitions = args.partitions or 2 * int(cores)
    spark = get_spark(cfg.with_overrides({
        "spark.conf.spark.sql.execution.arrow.maxRecordsPerBatch": str(batch)}),
        app_name="bench-score-udf")
    length = int(cfg["sequences.max_length"])
    vocab = {"item": 20_000, "category": args.categories, "event_type": 8,
             "price_bucket": len(cfg["sequences.price_buckets"]) + 3}
    model_path = save_model(cfg, tmp, vocab)
    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": machine(),
              "spark_master": args.master, "udf": args.udf, "partitions": partitions,
              "batch_size": batch,
              "model": {k: cfg.get(f"sequence_model.{k}") for k in ("encoder", "hidden", "item_dim",
                                                                    "category_dim")}
              | {"max_length": length, "vocab": vocab}}
    stored_at: dict[int, str] = {}

    def users(n: int):
        """``n`` generated users, written to Parquet on first use and read back every time."""
        if n not in stored_at:
            stored_at[n] = str(tmp / f"users-{n}.parquet")
            sequences(spark, n, length, vocab, partitions).write.parquet(stored_at[n])
        return spark.read.parquet(stored_at[n])

    def pandas_path(n: int, skip_padding: bool = True, path: str | None = None,
                    source=None, arrow: bool | None = None) -> float:
        df = users(n) if source is None else source
        arrow = args.udf == "arrow" if arrow is None else arrow
        build = udfs.sequence_scorer_arrow if arrow else udfs.sequence_scorer
        scorer = build(path or model_path, None, batch, 3, skip_padding)
        scored = (df.mapInArrow(scorer, udfs.SEQUENCE_SCORES) if arrow
                  else df.mapInPandas(scorer, udfs.SEQUENCE_SCORES))
        return timed(lambda: scored.write.format("noop").mode("overwrite").save())

    def row_path(n: int, compiled: bool) -> float:
        df = users(n)
        f = row_udf(model_path, compiled)
        return timed(lambda: df.select("user_id", f(*udfs.SEQUENCE_INPUTS).alias("s"))
                     .write.format("noop").mode("overwrite").save())

    if args.encoders:
        result["encoders"] = compare_encoders(args, cfg, tmp, vocab, length, pandas_path,
                                              users(args.throughput_users), users(64))
        return finish(result, args, spark)

    # Warm-up: every worker process loads the model (and traces the graph) once.
    for skip in (True, False):
        pandas_path(4 * partitions, skip)
    row_path(4 * partitions, False)
    row_path(4 * partitions, True)

    def compare(n: int, compiled: bool) -> dict:
        t_pandas, t_row = pandas_path(n), row_path(n, compiled)
        out = {"users": n, "pandas_udf_s": round(t_pandas, 2),
               "pandas_udf_users_per_s": round(n / t_pandas),
               "row_udf_s": round(t_row, 2), "row_udf_users_per_s": round(n / t_row, 1),
               "speedup": round(t_row / t_pandas, 1)}
        print(json.dumps(out), flush=True)
        return out

    def generation_only(n: int) -> float:
        df = sequences(spark, n, length, vocab, partitions)
        return timed(lambda: df.write.format("noop").mode("overwrite").save())

    def read_only(n: int) -> float:
        df = users(n)
        return timed(lambda: df.write.format("noop").mode("overwrite").save())

    generation_only(4 * partitions)
    if args.throughput_users:
        n = args.throughput_users
        t = generation_only(n)
        result["generation_only"] = {"users": n, "seconds": round(t, 2),
                                     "users_per_s": round(n / t)}
        t = read_only(n)
        result["read_only"] = {"users": n, "seconds": round(t, 2), "users_per_s": round(n / t)}
        print(json.dumps({k: result[k] for k in ("generation_only", "read_only")}), flush=True)
    # Same users through both paths (the row path's rate is also used for the ratios below).
    result["compare_compiled_row_udf"] = compare(args.compare_users, True)
    result["compare_eager_row_udf"] = compare(args.eager_users, False)
    if args.throughput_users:
        n = args.throughput_users
        for skip in (True, False):
            t = pandas_path(n, skip)
            rate = n / t
            key = "throughput" if skip else "throughput_all_padding_steps"
            result[key] = {
                "users": n, "seconds": round(t, 2), "users_per_s": round(rate),
                "speedup_vs_compiled_row_udf": round(
                    rate / result["compare_compiled_row_udf"]["row_udf_users_per_s"], 1),
                "speedup_vs_eager_row_udf": round(
                    rate / result["compare_eager_row_udf"]["row_udf_users_per_s"], 1)}
            print(json.dumps(result[key]), flush=True)
    if args.users:
        users(args.users)  # stored before the memory is sampled
        with PeakRss() as rss:
            t = pandas_path(args.users)
        result["large"] = {"users": args.users, "seconds": round(t, 1),
                           "users_per_s": round(args.users / t), **rss.report()}
        print(json.dumps(result["large"]), flush=True)
    return finish(result, args, spark)


def compare_encoders(args, cfg, tmp: Path, vocab: dict, length: int, pandas_path,
                     stored, few) -> dict:
    """Throughput of each ``encoder:hidden[:max_length][:arrow]`` variant on the same users,
    timed in turn per round.

    ``stored`` is the users as Parquet (read as scoring reads ``gold.sequence_examples``: lists
    in Parquet), ``few`` a handful of others for the warm-up. A variant with a shorter length
    reads a copy holding each user's last ``max_length`` steps. Reading alone is timed too, per
    length. Variants score through ``mapInPandas`` unless they end in ``:arrow``.
    """
    from pyspark.sql import functions as F

    from demandlake.scoring.udfs import SEQUENCE_INPUTS

    def last_steps(df, steps: int):
        """``df`` with only each user's last ``steps`` steps (as the sequences job stores them)."""
        return df.select("user_id", *[F.slice(c, -steps, steps).alias(c)
                                      for c in SEQUENCE_INPUTS[:5]], "static_features")

    specs = {variant: _parse(variant, length) for variant in args.encoders.split(",")}
    inputs, models = {}, {}
    for variant, (encoder, hidden, steps, _) in specs.items():
        if not 1 <= steps <= length:
            raise SystemExit(f"{variant}: max_length must be in 1..{length} (--max-length)")
        if steps not in inputs:
            if steps == length:
                inputs[steps] = stored
            else:
                where = str(tmp / f"users-last-{steps}.parquet")
                last_steps(stored, steps).write.parquet(where)
                inputs[steps] = stored.sparkSession.read.parquet(where)
        if (encoder, hidden, steps) not in models:  # one model however many ways it is scored
            out = tmp / f"model-{encoder}-{hidden}-{steps}"
            out.mkdir()
            models[encoder, hidden, steps] = save_model(
                cfg.with_overrides({"sequence_model.encoder": encoder,
                                    "sequence_model.hidden": hidden,
                                    "sequences.max_length": steps}), out, vocab)
    paths = {variant: models[spec[:3]] for variant, spec in specs.items()}
    for variant, path in paths.items():  # warm-up: each worker loads and traces every model
        _, _, steps, arrow = specs[variant]
        pandas_path(64, path=path, arrow=arrow, source=last_steps(few, steps))
    n = args.throughput_users
    times = {variant: [] for variant in specs}
    read_only = {steps: [] for steps in inputs}
    for _ in range(args.rounds):
        for steps, df in inputs.items():
            read_only[steps].append(timed(lambda: df.write.format("noop").mode("overwrite")
                                          .save()))
        for variant, path in paths.items():
            _, _, steps, arrow = specs[variant]
            times[variant].append(pandas_path(n, path=path, source=inputs[steps], arrow=arrow))
            print(json.dumps({"variant": variant, "users": n,
                              "seconds": round(times[variant][-1], 2)}), flush=True)
    first = next(iter(times))
    best = {v: min(t) for v, t in times.items()}
    return {"users": n, "rounds": args.rounds, "baseline": first,
            "read_only": {str(steps): {"seconds": [round(x, 2) for x in t],
                                       "users_per_s": round(n / min(t))}
                          for steps, t in read_only.items()},
            "variants": {v: {"seconds": [round(x, 2) for x in t], "best_s": round(best[v], 2),
                             "users_per_s": round(n / best[v]),
                             "speedup_vs_baseline": round(best[first] / best[v], 2)}
                         for v, t in times.items()}}


def _parse(variant: str, length: int) -> tuple[str, int, int, bool]:
    """``encoder:hidden[:max_length][:arrow]`` -> (encoder, hidden, max_length, mapInArrow?)."""
    parts = variant.split(":")
    arrow = parts[-1] == "arrow"
    parts = parts[:-1] if arrow else parts
    return parts[0], int(parts[1]), int(parts[2]) if len(parts) > 2 else length, arrow


def finish(result: dict, args, spark) -> int:
    result["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
