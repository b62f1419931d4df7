"""Distributed training, checkpoints, launchers and MLflow (small planted-signal data).

The Horovod tests are skipped (with the reason) only when ``horovod.tensorflow`` cannot be
imported; everything else runs in the test process as a single rank.
"""
from __future__ import annotations

import datetime as dt
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("tensorflow")

from pyspark.sql import types as T  # noqa: E402

from demandlake.config import load_config  # noqa: E402
from demandlake.training import synthetic as syn  # noqa: E402
from demandlake.training import tracking  # noqa: E402
from demandlake.training.horovod_trainer import train  # noqa: E402
from demandlake.training.launch import launch  # noqa: E402

VOCAB = {"item": 300, "category": 30, "event_type": 8}
L = 12


def _require_horovod():
    try:
        import horovod.tensorflow  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"horovod cannot be imported ({exc}); run scripts/bootstrap.sh")


def _cfg(**training) -> dict:
    cfg = load_config().data
    cfg["training"].update(dict(epochs=4, batch_size=32, learning_rate=0.01, threads=1,
                                deterministic=True, resume=True, save_all_ranks=True,
                                baselines=False), **training)
    cfg["sequence_model"].update(hidden=16, item_dim=8, category_dim=8)
    cfg["sentiment_model"].update(max_length=24, embedding_dim=16, filters=16, hidden=16,
                                  min_count=1)
    return cfg


def _weights(out_dir, rank=0):
    with np.load(f"{out_dir}/weights-rank{rank}.npz") as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]


@pytest.fixture(scope="module")
def seq_frame():
    return syn.sequence_examples(1000, max_length=L, seed=1)


@pytest.fixture(scope="module")
def seq_spec(seq_frame, tmp_path_factory):
    splits = syn.write_parquet(seq_frame, tmp_path_factory.mktemp("seq"), n_files=4)
    return {"splits": splits, "vocab_sizes": VOCAB, "max_length": L}


@pytest.fixture(scope="module")
def one_rank(seq_spec, tmp_path_factory):
    """One rank on all the data, 4 epochs, uninterrupted (the reference run)."""
    out = tmp_path_factory.mktemp("one_rank")
    return train("sequence", _cfg(), seq_spec, str(out)), out


def test_one_rank_learns_the_planted_purchase_signal(one_rank):
    result, _ = one_rank
    assert result["metrics"]["test"]["purchase_roc_auc"] > 0.8
    assert result["metrics"]["test"]["categories_recall@10"] > 0.4  # chance: 10/28
    assert [e["epoch"] for e in result["epochs"]] == [1, 2, 3, 4]


def test_training_keeps_the_weights_of_the_epoch_with_the_lowest_validation_loss(one_rank):
    result, _ = one_rank
    history = result["epochs"]
    best = min(history, key=lambda e: e["val_loss"])
    assert result["best_epoch"]["epoch"] == best["epoch"]
    # the final evaluation (other code path, same validation rows) sees that epoch's model
    assert result["metrics"]["validation"]["purchase_log_loss"] == pytest.approx(
        best["val_purchase_log_loss"], abs=1e-5)


def test_resumed_training_ends_where_the_uninterrupted_run_ends(seq_spec, one_rank, tmp_path):
    _, reference = one_rank
    # "Crash" after epoch 2: the first job only runs 2 epochs, then the same job resumes to 4.
    train("sequence", _cfg(epochs=2), seq_spec, str(tmp_path))
    assert (tmp_path / "checkpoints" / "ckpt-0002" / "state.json").exists()
    resumed = train("sequence", _cfg(epochs=4), seq_spec, str(tmp_path))
    assert [e["epoch"] for e in resumed["epochs"]] == [1, 2, 3, 4]
    for got, want in zip(_weights(tmp_path), _weights(reference)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_resuming_with_a_different_model_shape_fails_clearly(seq_spec, one_rank, tmp_path):
    import shutil

    _, reference = one_rank
    shutil.copytree(reference / "checkpoints", tmp_path / "checkpoints")
    cfg = _cfg(epochs=5)
    cfg["sequence_model"]["hidden"] = 8
    with pytest.raises(ValueError, match="checkpoint"):
        train("sequence", cfg, seq_spec, str(tmp_path))


@pytest.fixture(scope="module")
def two_ranks(seq_spec, tmp_path_factory):
    """Two horovodrun ranks, 4 epochs, uninterrupted."""
    _require_horovod()
    out = tmp_path_factory.mktemp("two_ranks")
    return launch("sequence", _cfg(launcher="horovodrun", num_proc=2), seq_spec, str(out)), out


def test_two_horovodrun_ranks_end_identical_and_match_one_rank_quality(seq_frame, one_rank,
                                                                       two_ranks):
    result, tmp_path = two_ranks
    r0, r1 = _weights(tmp_path, 0), _weights(tmp_path, 1)
    assert len(r0) == len(r1) > 10
    assert all(np.array_equal(a, b) for a, b in zip(r0, r1))
    # each rank read its own half of the training rows
    n_train = int((seq_frame["split"] == "train").sum())
    assert sum(result["train_rows_per_rank"]) == n_train
    assert all(0 < n < n_train for n in result["train_rows_per_rank"])
    one = one_rank[0]["metrics"]["test"]["purchase_roc_auc"]
    two = result["metrics"]["test"]["purchase_roc_auc"]
    assert two > 0.8 and abs(one - two) < 0.05


def _rank_pids(job_file: Path) -> dict[int, int]:
    """``{horovod rank: pid}`` of the worker processes running ``job_file``."""
    pids = {}
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            if b"demandlake.training.worker" not in cmd or str(job_file).encode() not in cmd:
                continue
            env = dict(kv.split(b"=", 1) for kv in (proc / "environ").read_bytes().split(b"\0")
                       if b"=" in kv)
        except (OSError, ValueError):
            continue
        if b"HOROVOD_RANK" in env:
            pids[int(env[b"HOROVOD_RANK"])] = int(proc.name)
    return pids


def _kill_rank_in_epoch_two(out: Path, rank: int, report: dict, timeout_s: float = 600) -> None:
    """SIGKILL ``rank`` as soon as epoch 1's checkpoint is complete (so during epoch 2)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (out / "checkpoints" / "ckpt-0001" / "state.json").exists():
            pid = _rank_pids(out / "job.json").get(rank)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                report.update(pid=pid, checkpoints=sorted(
                    p.name for p in (out / "checkpoints").glob("ckpt-*")))
                return
        time.sleep(0.02)
    report["error"] = "no checkpoint or no rank process before the timeout"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_rank_killed_mid_training_restarts_from_the_checkpoint_and_ends_as_if_uninterrupted(
        seq_spec, two_ranks, tmp_path):
    _, reference = two_ranks
    report: dict = {}
    killer = threading.Thread(target=_kill_rank_in_epoch_two, args=(tmp_path, 1, report))
    killer.start()
    try:
        result = launch("sequence", _cfg(launcher="horovodrun", num_proc=2, restarts=1),
                        seq_spec, str(tmp_path))
    finally:
        killer.join()
    assert "pid" in report, report
    assert "ckpt-0004" not in report["checkpoints"]  # killed before the run could finish
    first_attempt = (tmp_path / "horovodrun.log").read_text(errors="replace")
    assert result["attempts"] == 2, first_attempt[-2000:]
    assert 1 <= result["resumed_from_epoch"] <= 3
    assert [e["epoch"] for e in result["epochs"]] == [1, 2, 3, 4]
    for rank in (0, 1):
        for got, want in zip(_weights(tmp_path, rank), _weights(reference, rank)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_without_restarts_a_killed_rank_fails_the_launch_clearly(seq_spec, tmp_path):
    _require_horovod()
    report: dict = {}
    killer = threading.Thread(target=_kill_rank_in_epoch_two, args=(tmp_path, 0, report))
    killer.start()
    try:
        with pytest.raises(RuntimeError, match="horovodrun exited with"):
            launch("sequence", _cfg(launcher="horovodrun", num_proc=2, restarts=0), seq_spec,
                   str(tmp_path))
    finally:
        killer.join()
    assert "pid" in report, report


# ---- driver runs on Delta tables, MLflow ---------------------------------------------------
REVIEW_SCHEMA = T.StructType([T.StructField(n, t) for n, t in [
    ("review_id", T.StringType()), ("user_id", T.StringType()), ("item_id", T.StringType()),
    ("category", T.StringType()), ("rating", T.IntegerType()), ("label", T.IntegerType()),
    ("text", T.StringType()), ("language", T.StringType()), ("split", T.StringType()),
    ("source", T.StringType()), ("n_chars", T.IntegerType())]])
ARR_I, ARR_F = T.ArrayType(T.IntegerType()), T.ArrayType(T.FloatType())
SEQ_SCHEMA = T.StructType([T.StructField(n, t) for n, t in [
    ("user_id", T.StringType()), ("cutoff_date", T.DateType()), ("split", T.StringType()),
    ("seq_len", T.IntegerType()), ("item_ids", ARR_I), ("category_ids", ARR_I),
    ("event_type_ids", ARR_I), ("time_gaps", ARR_F), ("price_buckets", ARR_I),
    ("static_features", ARR_F), ("label_purchase", T.IntegerType()), ("label_categories", ARR_I)]])
VOCAB_SCHEMA = T.StructType([T.StructField(n, t) for n, t in [
    ("vocab", T.StringType()), ("token", T.StringType()), ("id", T.IntegerType()),
    ("count", T.LongType()), ("built_through", T.DateType())]])


def _write_delta(spark, frame: pd.DataFrame, schema, path: str, partition: str | None = None):
    rows = [tuple(r) for r in frame[[f.name for f in schema.fields]].itertuples(index=False)]
    writer = spark.createDataFrame(rows, schema).write.format("delta").mode("overwrite")
    if partition:
        writer = writer.partitionBy(partition)
    writer.save(path)


def test_sentiment_run_on_spark_ranks_registers_a_serving_model(spark, cfg):
    _require_horovod()
    from demandlake.training.runner import table_location, train_sentiment_model

    _write_delta(spark, syn.review_corpus(600, seed=2), REVIEW_SCHEMA,
                 table_location(cfg, "gold.review_corpus"))
    run_cfg = cfg.with_overrides({"training": _cfg(launcher="spark", num_proc=2,
                                                   epochs=3)["training"],
                                  "sentiment_model": _cfg()["sentiment_model"]})
    result = train_sentiment_model(spark, run_cfg)

    assert all(np.array_equal(a, b) for a, b in zip(_weights(result.out_dir, 0),
                                                    _weights(result.out_dir, 1)))
    assert result.metrics["test"]["accuracy"] > 0.85
    assert result.promoted and result.version == 1
    model, version = tracking.load_serving("demandlake-sentiment", cfg=run_cfg)
    pred = model.predict(pd.DataFrame({"text": ["这个手机很好，喜欢", "terrible, awful. returned it"]}))
    assert version == 1 and pred["probability"][0] > 0.5 > pred["probability"][1]


def _sequence_lake(spark, cfg, seq_frame) -> None:
    """gold.sequence_examples from the planted frame and a gold.vocabularies that covers it."""
    from demandlake.training.runner import table_location

    _write_delta(spark, seq_frame, SEQ_SCHEMA, table_location(cfg, "gold.sequence_examples"),
                 "cutoff_date")
    vocab = pd.DataFrame(
        [("item", f"i{i}", i, 1, dt.date(2026, 11, 3)) for i in range(VOCAB["item"])]
        + [("category", f"c{i}", i, 1, dt.date(2026, 11, 3)) for i in range(VOCAB["category"])]
        + [("event_type", f"e{i}", i, 1, dt.date(2026, 11, 3))
           for i in range(VOCAB["event_type"])],
        columns=["vocab", "token", "id", "count", "built_through"])
    _write_delta(spark, vocab, VOCAB_SCHEMA, table_location(cfg, "gold.vocabularies"))


def test_sequence_version_is_promoted_only_when_it_beats_serving(spark, cfg, seq_frame):
    import mlflow
    from mlflow.tracking import MlflowClient
    from pyspark.sql import functions as F

    from demandlake.training.runner import table_location, train_sequence_model

    _sequence_lake(spark, cfg, seq_frame)
    base = _cfg(baselines=True, save_all_ranks=False)
    # The network alone here (the families are the next test's): its pyfunc is scored below.
    first_cfg = cfg.with_overrides({"training": base["training"],
                                    "sequence_model": base["sequence_model"],
                                    "sequences.max_length": L,
                                    "propensity.families": ["sequence_network"]})
    first = train_sequence_model(spark, first_cfg)
    assert first.promoted and first.version == 1
    assert first.baselines["static_logistic"]["roc_auc"] > 0.7
    assert 0 < first.baselines["popularity"]["recall@10"] < 1

    client = MlflowClient()
    assert len(client.get_metric_history(first.run_id, "train_loss")) == 4
    assert {a.path for a in client.list_artifacts(first.run_id, "plots")} >= {
        "plots/purchase_roc_pr.png", "plots/purchase_calibration.png",
        "plots/categories_recall_at_k.png", "plots/recall_at_k_vs_popularity.png"}
    run = client.get_run(first.run_id)
    assert run.data.params["data.version"] == str(first.table_version)
    assert run.data.params["vocab_size.category"] == str(VOCAB["category"])

    # An untrained model (learning rate 0) is registered but must not take the alias.
    worse = first_cfg.with_overrides({"training.learning_rate": 0.0, "training.baselines": False,
                                      "training.epochs": 1})
    second = train_sequence_model(spark, worse)
    assert second.version == 2 and not second.promoted
    # Same vocabulary table and version: the champion was judged on the snapshot's own rows.
    assert second.metrics["champion_validation"]["purchase_n"] == (
        second.metrics["validation"]["purchase_n"])
    assert client.get_run(second.run_id).data.tags["champion_validation_rows"].endswith(
        "(same vocabulary)")
    assert tracking.serving_version("demandlake-sequence") == 1

    # The serving model scores a Spark DataFrame through mlflow.pyfunc.spark_udf.
    uri = tracking.serving_model_uri("demandlake-sequence", cfg=first_cfg)
    udf = mlflow.pyfunc.spark_udf(spark, uri, env_manager="local")
    cols = ["item_ids", "category_ids", "event_type_ids", "price_buckets", "time_gaps",
            "static_features"]
    examples = spark.read.format("delta").load(table_location(cfg, "gold.sequence_examples"))
    scored = (examples.where(F.col("split") == "test").limit(20)
              .select(udf(F.struct(*cols)).alias("p")).select("p.*").toPandas())
    assert len(scored) == 20
    assert scored["purchase_probability"].between(0, 1).all()
    assert all(len(ids) == 20 and min(ids) >= 2 for ids in scored["top_category_ids"])


def test_the_family_best_on_the_validation_rows_is_registered_and_must_beat_the_champion(
        spark, cfg, seq_frame):
    """Every retrain judges each family on the same validation rows and registers the best,
    tagged with its family; the next retrain judges a Spark ML champion on the same rows, in
    Spark. The planted purchase signal is a cart in the sequence, which the Spark ML families'
    features count, and an untrained network (learning rate 0) cannot beat them."""
    from mlflow.tracking import MlflowClient
    from pyspark.sql import functions as F

    from demandlake.scoring import serving
    from demandlake.training import evaluate as ev
    from demandlake.training import families
    from demandlake.training.runner import table_location, train_sequence_model

    _sequence_lake(spark, cfg, seq_frame)
    base = _cfg(save_all_ranks=False, baselines=False)
    untrained = cfg.with_overrides({"training": {**base["training"], "learning_rate": 0.0,
                                                 "epochs": 1},
                                    "sequence_model": base["sequence_model"],
                                    "sequences.max_length": L,
                                    "propensity.spark_gbt.max_iter": 10})
    first = train_sequence_model(spark, untrained)
    network = first.metrics["network_validation"]
    judged = {f: first.metrics[f"{f}_validation"] for f in ("spark_gbt", "spark_logistic")}
    best = max(judged, key=lambda f: judged[f]["purchase_pr_auc"])
    assert (first.family, first.version, first.promoted) == (best, 1, True)
    assert first.metrics["validation"] == judged[best]
    for m in judged.values():  # the same rows, and both families read the planted signal
        assert m["purchase_n"] == network["purchase_n"] > 0
        assert m["purchase_roc_auc"] > 0.8 and m["purchase_pr_auc"] > network["purchase_pr_auc"]
    client = MlflowClient()
    assert client.get_model_version("demandlake-sequence", "1").tags["family"] == best
    run_metrics = client.get_run(first.run_id).data.metrics
    assert (run_metrics[f"family_is_{best}"], run_metrics["family_is_sequence_network"]) == (1, 0)
    gbt = judged[best]
    assert set(run_metrics) >= {"spark_gbt_platt_calibrated", "spark_logistic_platt_calibrated"}

    # Served as what it is: loaded back from the registry, it scores in Spark.
    model, why = serving.resolve(untrained, "sequence")
    assert model is not None and model.family == best, why
    examples = spark.read.format("delta").load(table_location(cfg, "gold.sequence_examples"))
    scored = families.score(untrained, families.load_spark_model(model.uri),
                            examples.where(F.col("split") == "test"), keep=("label_purchase",))
    test_auc = ev.binary_metrics(ev.spark_binary_counts(scored, "label_purchase",
                                                        "purchase_probability"))["roc_auc"]
    assert test_auc == pytest.approx(first.metrics["test"]["purchase_roc_auc"])

    # The network alone next time: it must beat the champion's own figures on the same rows.
    trained = untrained.with_overrides({"training": base["training"],
                                        "propensity.families": ["sequence_network"]})
    second = train_sequence_model(spark, trained)
    assert (second.family, second.version) == ("sequence_network", 2)
    champion = second.metrics["champion_validation"]
    assert champion["purchase_n"] == second.metrics["validation"]["purchase_n"]
    assert champion["purchase_pr_auc"] == pytest.approx(gbt["purchase_pr_auc"])
    assert second.promoted == (second.metrics["validation"]["purchase_pr_auc"]
                               > gbt["purchase_pr_auc"])
    assert client.get_model_version("demandlake-sequence", "2").tags["family"] == \
        "sequence_network"


def test_a_spark_family_fitted_on_the_same_rows_read_another_way_is_the_same_model(
        spark, cfg, seq_frame):
    """The trees subsample per partition: the fit input gets a fixed layout, so the rows of a
    rerun, read from differently written files, give the same model."""
    from pyspark.sql import functions as F

    from demandlake.training import families

    rows = spark.createDataFrame(
        [tuple(r) for r in seq_frame[[f.name for f in SEQ_SCHEMA.fields]].itertuples(index=False)],
        SEQ_SCHEMA)
    run_cfg = cfg.with_overrides({"propensity.spark_gbt.max_iter": 5})
    train, test = rows.where(F.col("split") == "train"), rows.where(F.col("split") == "test")
    probabilities = []
    for layout in (train.coalesce(1), train.repartition(5, "label_purchase"),
                   train.orderBy(F.rand(3))):
        model = families.fit(run_cfg, families.GBT, layout)
        scored = families.score(run_cfg, model, test, keep=("user_id", "cutoff_date"))
        probabilities.append(sorted(tuple(r) for r in scored.collect()))
    assert probabilities[0] == probabilities[1] == probabilities[2]


def _event(user: str, etype: str, item: str, category: str, when: dt.datetime) -> tuple:
    """One bronze.events row (BRONZE_EVENTS order)."""
    eid = f"{user}-{when:%Y%m%d%H%M%S}"
    return (eid, user, None, etype, item, category, None, 9.0, None, None, when, None, "test",
            "inline", f"h-{eid}", when.date())


def test_the_champion_is_judged_on_the_validation_rows_coded_with_its_own_vocabulary(spark, cfg):
    """gold.vocabularies is rebuilt before every training run, so item and category ids move:
    the serving champion must be evaluated on the same validation users and cutoff dates coded
    with the vocabulary IT was trained on (inputs and category labels), as scoring feeds it."""
    import mlflow
    import pyarrow as pa
    from mlflow.tracking import MlflowClient
    from pyspark.sql import functions as F

    from helpers import scored_lake as tl
    from demandlake import lake, schemas
    from demandlake.features.sequences import build_examples
    from demandlake.pipeline.transform import run_sequence_examples
    from demandlake.training.runner import train_sequence_model
    from demandlake.training.tasks import make_task

    # 10 days of events: 1-day horizon -> validation cutoffs 11-07 and 11-08, vocabulary
    # through 11-06; every item counts (min_item_count 1), so new counts only reorder ids.
    base = _cfg(epochs=1, save_all_ranks=False)
    run_cfg = cfg.with_overrides({"training": base["training"],
                                  "sequence_model": base["sequence_model"],
                                  "sequences.max_length": L, "sequences.horizon_days": 1,
                                  "sequences.min_item_count": 1, "sequences.min_events": 2,
                                  "propensity.families": ["sequence_network"]})
    events = tl.event_rows()

    def rebuild_examples(rows):
        lake.overwrite_all(spark, cfg, "bronze.events",
                           spark.createDataFrame(rows, schemas.BRONZE_EVENTS))
        run_sequence_examples(spark, run_cfg)
        return lake.read(spark, cfg, "gold.vocabularies").toPandas()

    first_vocab = rebuild_examples(events)
    first = train_sequence_model(spark, run_cfg)
    assert first.promoted and first.version == 1

    def ids(vocab: pd.DataFrame, name: str) -> dict[str, int]:
        return {t: i for v, t, i in vocab[["vocab", "token", "id"]].itertuples(index=False)
                if v == name and i > 1}

    # A fan of the rarest category's rarest item, inside the vocabulary window, makes both the
    # most frequent: ids are reassigned before the second run.
    rare_category = max(ids(first_vocab, "category").items(), key=lambda kv: kv[1])[0]
    rare_item = max(((t, i) for t, i in ids(first_vocab, "item").items()
                     if any(x[0] == t and x[1] == rare_category for x in tl.ITEMS)),
                    key=lambda kv: kv[1])[0]
    fan = [_event("fan01", "view", rare_item, rare_category,
                  dt.datetime(2026, 11, 2 + n % 4, 9, n)) for n in range(40)]
    second_vocab = rebuild_examples(events + fan)
    for name, token in (("item", rare_item), ("category", rare_category)):
        assert ids(second_vocab, name)[token] == 2 != ids(first_vocab, name)[token]
    assert set(ids(second_vocab, "category")) == set(ids(first_vocab, "category"))

    second = train_sequence_model(spark, run_cfg)
    assert second.version == 2

    # Expected: the validation rows of the second snapshot, built here with the FIRST
    # vocabulary, scored by version 1 and summarised with the task's metric functions.
    stored = (lake.read(spark, cfg, "gold.sequence_examples")
              .where(F.col("split") == "validation").select("user_id", "cutoff_date"))
    cutoffs = sorted(r[0] for r in stored.select("cutoff_date").distinct().collect())
    assert cutoffs == [dt.date(2026, 11, 7), dt.date(2026, 11, 8)]
    rows = (build_examples(lake.read(spark, cfg, "bronze.events"),
                           spark.createDataFrame(first_vocab, schemas.GOLD_VOCABULARIES),
                           [(c, "validation") for c in cutoffs], max_length=L, horizon_days=1,
                           price_buckets=run_cfg["sequences.price_buckets"], with_labels=True,
                           min_events=2)
            .join(stored, on=["user_id", "cutoff_date"], how="left_semi").toPandas())
    assert len(rows) == stored.count() > 30
    mlflow.set_tracking_uri(tracking.tracking_uri(run_cfg))
    champion = mlflow.pyfunc.load_model("models:/demandlake-sequence/1")
    task = make_task("sequence", run_cfg.data, {"vocab_sizes": VOCAB})  # sizes unused here
    table = pa.Table.from_pandas(rows, preserve_index=False)
    expected = task.eval_metrics(task.eval_sums(table, champion.predict(task.frame(table))))

    assert 0 < expected["purchase_positive_rate"] < 1 and expected["categories_n_with_purchase"]
    assert second.metrics["champion_validation"] == pytest.approx(expected, rel=1e-6, abs=1e-9,
                                                                  nan_ok=True)
    logged = MlflowClient().get_run(second.run_id).data.metrics
    assert logged["champion_validation_purchase_pr_auc"] == pytest.approx(
        expected["purchase_pr_auc"], rel=1e-6)


def test_is_better_needs_a_strict_finite_improvement():
    assert tracking.is_better(0.8, None, True)
    assert tracking.is_better(0.8, 0.7, True) and not tracking.is_better(0.7, 0.7, True)
    assert tracking.is_better(0.3, 0.4, False) and not tracking.is_better(0.5, 0.4, False)
    assert not tracking.is_better(float("nan"), 0.4, True)
    assert not tracking.is_better(0.9, 0.8, True, min_delta=0.2)


def test_launch_rejects_unknown_launcher(tmp_path):
    with pytest.raises(ValueError, match="launcher"):
        launch("sequence", _cfg(launcher="slurm"), {}, str(tmp_path))
    with pytest.raises(ValueError, match="one rank"):
        launch("sequence", _cfg(launcher="local", num_proc=2), {}, str(tmp_path))


def test_sequence_rows_of_another_length_are_cut_or_padded_like_the_sequences_job_does():
    """A lake keeps rows written before ``sequences.max_length`` changed: training takes them,
    keeping a longer row's last values and left-padding a shorter one; nulls still fail."""
    import pyarrow as pa

    from demandlake.training.data import fixed_width

    rows = pa.chunked_array([pa.array([[1, 2, 3, 4, 5], [7]]), pa.array([[8, 9, 10], []])])
    got = fixed_width(rows, 3, np.int32, fit=True)
    assert got.tolist() == [[3, 4, 5], [0, 0, 7], [8, 9, 10], [0, 0, 0]]
    assert got.dtype == np.int32
    sliced = pa.array([[0, 0, 0], [1, 2, 3, 4], [6, 7]]).slice(1)  # offsets not starting at 0
    assert fixed_width(sliced, 3, np.float32, fit=True).tolist() == [[2, 3, 4], [0, 6, 7]]
    assert fixed_width(pa.array([[4, 5, 6]]), 3, np.int32).tolist() == [[4, 5, 6]]
    with pytest.raises(ValueError, match="row 1 has 1"):
        fixed_width(pa.array([[1, 2, 3], [7]]), 3, np.int32)
    with pytest.raises(ValueError, match="must all have 3"):
        fixed_width(pa.array([[1, 2, 3], None]), 3, np.int32, fit=True)
