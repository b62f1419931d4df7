"""Models, tokenization, metrics and sharding: fast tests without Horovod or Spark."""
from __future__ import annotations

import collections

import keras
import numpy as np
import pytest

from demandlake.models import build_sentiment_model, build_sequence_model
from demandlake.training import evaluate as ev
from demandlake.training import text as tx
from demandlake.training.data import shard_plan
from demandlake.training.horovod_trainer import epoch_order

VOCAB = {"item": 50, "category": 10, "event_type": 6}
L = 8


def _sequence_batch(n=4, seed=0):
    rng = np.random.default_rng(seed)
    x = {k: rng.integers(2, v, (n, L)).astype("int32") for k, v in
         (("item_ids", 50), ("category_ids", 10), ("event_type_ids", 6), ("price_buckets", 8))}
    x["time_gaps"] = rng.exponential(60, (n, L)).astype("float32")
    x["static_features"] = rng.normal(size=(n, 5)).astype("float32")
    for k in ("item_ids", "category_ids", "event_type_ids", "price_buckets", "time_gaps"):
        x[k][:, :3] = 0  # left padding
    return x


@pytest.mark.parametrize("encoder", ["lstm", "gru", "attention"])
def test_sequence_model_returns_probability_and_category_distribution(encoder):
    model = build_sequence_model(VOCAB, L, 5, VOCAB["category"], encoder=encoder, hidden=16)
    out = model(_sequence_batch(), training=False)
    purchase, cats = np.asarray(out["purchase"]), np.asarray(out["categories"])
    assert purchase.shape == (4, 1) and cats.shape == (4, VOCAB["category"])
    assert ((purchase > 0) & (purchase < 1)).all()
    np.testing.assert_allclose(cats.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("encoder", ["lstm", "gru", "attention"])
def test_sequence_model_treats_out_of_range_ids_as_oov(encoder):
    model = build_sequence_model(VOCAB, L, 5, VOCAB["category"], encoder=encoder, hidden=16)
    x = _sequence_batch()
    bad = {k: v.copy() for k, v in x.items()}
    bad["item_ids"][:, -1] = [50, 10**6, -5, 2**31 - 1]
    bad["category_ids"][:, -2] = 999
    expected = {k: v.copy() for k, v in x.items()}
    expected["item_ids"][:, -1] = 1
    expected["category_ids"][:, -2] = 1
    got, want = model(bad, training=False), model(expected, training=False)
    for head in ("purchase", "categories"):
        np.testing.assert_allclose(np.asarray(got[head]), np.asarray(want[head]), atol=1e-6)


@pytest.mark.parametrize("encoder", ["lstm", "gru", "attention"])
def test_sequence_model_ignores_what_padded_steps_contain(encoder):
    model = build_sequence_model(VOCAB, L, 5, VOCAB["category"], encoder=encoder, hidden=16)
    x = _sequence_batch()
    noisy = {k: v.copy() for k, v in x.items()}
    noisy["category_ids"][:, :3] = 7
    noisy["time_gaps"][:, :3] = 1e5
    noisy["event_type_ids"][:, :3] = 4
    a, b = model(x, training=False), model(noisy, training=False)
    np.testing.assert_allclose(np.asarray(a["purchase"]), np.asarray(b["purchase"]), atol=1e-5)


def test_sequence_model_round_trips_through_a_keras_file(tmp_path):
    model = build_sequence_model(VOCAB, L, 5, VOCAB["category"], encoder="attention", hidden=16)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = _sequence_batch()
    np.testing.assert_allclose(np.asarray(loaded(x)["categories"]),
                               np.asarray(model(x)["categories"]), atol=1e-6)


def test_sequence_model_rejects_unknown_encoder_and_tiny_vocabularies():
    with pytest.raises(ValueError, match="encoder"):
        build_sequence_model(VOCAB, L, 5, 10, encoder="transformer-xl")
    with pytest.raises(ValueError, match="item"):
        build_sequence_model({**VOCAB, "item": 1}, L, 5, 10)
    with pytest.raises(ValueError, match="category_head"):
        build_sequence_model(VOCAB, L, 5, 10, category_head="tanh")


@pytest.mark.parametrize("architecture", ["textcnn", "bilstm"])
def test_sentiment_model_maps_ids_to_one_probability_and_clips_oov(architecture):
    model = build_sentiment_model(30, 12, architecture=architecture, embedding_dim=8,
                                  filters=4, lstm_units=4, hidden=8)
    ids = np.array([[5, 6, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0], [5, 6, 99, 0, 0, 0, 0, 0, 0, 0, 0, 0]])
    oov = ids.copy()
    oov[1, 2] = 1
    got = np.asarray(model({"token_ids": ids})["positive"])
    assert got.shape == (2, 1) and ((got > 0) & (got < 1)).all()
    np.testing.assert_allclose(got[1], np.asarray(model({"token_ids": oov})["positive"])[1],
                               atol=1e-6)


def test_sentiment_model_rejects_kernels_longer_than_the_text():
    with pytest.raises(ValueError, match="kernel_sizes"):
        build_sentiment_model(30, 3, kernel_sizes=(2, 5))
    with pytest.raises(ValueError, match="architecture"):
        build_sentiment_model(30, 12, architecture="gpt")


def test_embedding_lookups_stay_float32_under_mixed_bfloat16():
    # On an H200, bfloat16 lookups (their gradients scatter-added in bfloat16) trained these
    # models 5-52x slower than float32 ones (docs/BENCHMARKS.md); the trainer turns
    # mixed_bfloat16 on for every GPU run, so the builders must keep the lookups in float32.
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        models = {"sequence": build_sequence_model(VOCAB, L, 5, VOCAB["category"], hidden=16),
                  "sentiment": build_sentiment_model(30, 12, embedding_dim=8, filters=4),
                  "policy": build_sequence_model(VOCAB, L, 5, VOCAB["category"], hidden=16,
                                                 embedding_dtype=None)}
    finally:
        keras.mixed_precision.set_global_policy("float32")

    def lookups(model):
        found = [layer for layer in model.layers if isinstance(layer, keras.layers.Embedding)]
        assert found
        return {layer.dtype_policy.name for layer in found}

    assert lookups(models["sequence"]) == lookups(models["sentiment"]) == {"float32"}
    assert lookups(models["policy"]) == {"mixed_bfloat16"}
    # the rest of the model still computes in bfloat16, the heads in float32
    assert models["sequence"].get_layer("lstm").compute_dtype == "bfloat16"
    out = models["sequence"](_sequence_batch(), training=False)
    assert keras.backend.standardize_dtype(out["purchase"].dtype) == "float32"


# ---- tokenization ----------------------------------------------------------------------------
def test_char_tokenizer_splits_han_characters_and_keeps_lowercased_english_words():
    layer = tx.build_vectorizer("char", 16)
    counts = tx.count_tokens(["我爱这件Dress！", "Great dress, 好!"], layer)
    assert counts == collections.Counter({"dress": 2, "我": 1, "爱": 1, "这": 1, "件": 1,
                                          "great": 1, "好": 1})


def test_jieba_tokenizer_segments_chinese_into_words_and_passes_english_through():
    out = tx.presegment(["我非常喜欢这个手机", "Love it!", None], "jieba")
    assert "喜欢" in out[0].split() and "手机" in out[0].split()
    assert out[1].split() == ["Love", "it", "!"] and out[2] == ""


@pytest.mark.parametrize("tokenizer", ["char", "jieba"])
def test_counted_vocabulary_equals_what_keras_adapt_learns(tokenizer):
    texts = tx.presegment(["质量很好，很喜欢", "太差了 不推荐", "Love this dress", "awful, awful"],
                          tokenizer)
    counted = tx.select_vocabulary(tx.count_tokens(texts, tx.build_vectorizer(tokenizer, 8)),
                                   1000)
    adapted = tx.build_vectorizer(tokenizer, 8)
    adapted.adapt(np.asarray(texts, dtype=object))
    assert sorted(counted) == sorted(adapted.get_vocabulary()[2:])


def test_select_vocabulary_orders_by_count_then_token_and_drops_rare():
    counts = collections.Counter({"b": 3, "a": 3, "c": 5, "d": 1, "": 9, "[UNK]": 9})
    assert tx.select_vocabulary(counts, 5, min_count=2) == ["c", "a", "b"]
    with pytest.raises(ValueError):
        tx.select_vocabulary(counts, 2)


@pytest.mark.parametrize("tokenizer", ["char", "jieba"])
def test_inference_model_saved_with_its_vocabulary_tokenizes_like_training(tmp_path, tokenizer):
    train_texts = ["这个手机很好用", "衣服质量太差", "Love this dress", "Terrible fabric"]
    pre = tx.presegment(train_texts, tokenizer)
    vocab = tx.select_vocabulary(tx.count_tokens(pre, tx.build_vectorizer(tokenizer, 10)), 100)
    vec = tx.build_vectorizer(tokenizer, 10, vocab)
    model = tx.inference_model(vec, build_sentiment_model(len(vocab) + 2, 10, embedding_dim=8,
                                                          filters=4, hidden=4))
    model.save(tmp_path / "s.keras")
    loaded = keras.saving.load_model(tmp_path / "s.keras")
    new = tx.presegment(["手机很好 LOVE it", "质量差, terrible!"], tokenizer)
    loaded_vec = next(layer for layer in loaded.layers if layer.name == "vectorizer")
    assert loaded_vec.get_vocabulary() == vec.get_vocabulary()
    np.testing.assert_array_equal(np.asarray(loaded_vec(np.asarray(new, dtype=object))),
                                  tx.vectorize(new, vec))
    np.testing.assert_allclose(np.asarray(loaded(np.asarray(new, dtype=object))["positive"]),
                               np.asarray(model(np.asarray(new, dtype=object))["positive"]),
                               atol=1e-6)


def test_presegment_rejects_unknown_tokenizer():
    with pytest.raises(ValueError, match="tokenizer"):
        tx.presegment(["x"], "bpe")


# ---- metrics ------------------------------------------------------------------------------
def test_binned_binary_metrics_match_scikit_learn():
    from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

    rng = np.random.default_rng(3)
    y = (rng.random(4000) < 0.3).astype(float)
    p = np.clip(0.3 + 0.25 * (y - 0.3) + rng.normal(0, 0.15, y.size), 0.001, 0.999)
    acc = ev.merge([ev.binary_counts(y[:1500], p[:1500]), ev.binary_counts(y[1500:], p[1500:])])
    m = ev.binary_metrics(acc)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-3)
    assert m["pr_auc"] == pytest.approx(average_precision_score(y, p), abs=2e-3)
    assert m["log_loss"] == pytest.approx(log_loss(y, p), abs=1e-9)
    assert m["accuracy"] == pytest.approx(((p >= 0.5) == (y == 1)).mean(), abs=1e-3)
    edges = np.minimum((p * 10).astype(int), 9)
    ece = sum(abs(p[edges == b].mean() - y[edges == b].mean()) * (edges == b).sum()
              for b in range(10) if (edges == b).any()) / y.size
    assert m["ece"] == pytest.approx(ece, abs=1e-9)


def test_ranking_counts_give_recall_at_k_and_reciprocal_rank():
    acc = ev.ranking_counts([[5, 7], None, [9], [], [1]], [[7, 3, 5], [2], [3, 4, 6], [5], [2]],
                            ks=(1, 3))
    m = ev.ranking_metrics(acc)
    # examples counted: [5,7] (recall@1 1/2, @3 2/2, rr 1) and [9] (0, 0, rr 0)
    assert m == {"recall@1": 0.25, "recall@3": 0.5, "mrr": 0.5, "n_with_purchase": 2.0}


def test_neutral_band_excludes_uncertain_predictions():
    acc = ev.binary_counts([1, 0, 1, 0], [0.9, 0.45, 0.55, 0.1])
    m = ev.neutral_band_metrics(acc, 0.4, 0.6)
    assert m == {"coverage": 0.5, "confident_accuracy": 1.0, "neutral_rate": 0.5}
    with pytest.raises(ValueError):
        ev.neutral_band_metrics(acc, 0.7, 0.6)


def test_binary_counts_rejects_non_binary_labels():
    with pytest.raises(ValueError, match="0 and 1"):
        ev.binary_counts([0, 2], [0.1, 0.2])


# ---- sharding and data order -----------------------------------------------------------------
def test_shard_plan_gives_each_rank_every_size_th_file():
    files = [f"f{i}" for i in range(5)]
    assert [p.file for p in shard_plan(files, 1, 2)] == ["f1", "f3"]
    assert [p.file for p in shard_plan(files, 0, 2)] == ["f0", "f2", "f4"]


def test_shard_plan_splits_rows_when_files_are_fewer_than_ranks():
    plans = [shard_plan(["a", "b"], r, 3, [5, 4]) for r in range(3)]
    rows = [(p.file, i) for plan in plans for p in plan for i in range(p.start, p.stop)]
    assert sorted(rows) == sorted([("a", i) for i in range(5)] + [("b", i) for i in range(4)])
    assert [sum(p.stop - p.start for p in plan) for plan in plans] == [3, 3, 3]
    with pytest.raises(ValueError):
        shard_plan(["a"], 0, 2)
    with pytest.raises(ValueError):
        shard_plan(["a"], 2, 2, [3])


def test_epoch_order_is_reproducible_and_changes_with_epoch_and_rank():
    a = epoch_order(10, 24, seed=7, epoch=2, rank=1)
    assert np.array_equal(a, epoch_order(10, 24, seed=7, epoch=2, rank=1))
    assert not np.array_equal(a, epoch_order(10, 24, seed=7, epoch=3, rank=1))
    assert not np.array_equal(a, epoch_order(10, 24, seed=7, epoch=2, rank=0))
    assert len(a) == 24 and sorted(a[:10]) == list(range(10))


def test_sequence_pyfunc_left_pads_short_rows_and_keeps_the_latest_steps():
    from demandlake.training.predictors import _matrix

    got = _matrix([[3, 4], [1, 2, 3, 4, 5, 6], None], 4, np.int32)
    np.testing.assert_array_equal(got, [[0, 0, 3, 4], [3, 4, 5, 6], [0, 0, 0, 0]])


def test_snapshot_refuses_tables_whose_files_alone_do_not_tell_the_rows():
    from demandlake.training.data import check_plain_parquet

    check_plain_parquet({"delta.appendOnly": "false"}, "t")
    with pytest.raises(ValueError, match="deletion vectors"):
        check_plain_parquet({"delta.enableDeletionVectors": "true"}, "t")
    with pytest.raises(ValueError, match="column mapping"):
        check_plain_parquet({"delta.columnMapping.mode": "name"}, "t")


def test_the_gpu_benchmark_script_runs_the_same_model_through_plain_keras(tmp_path):
    # bench/gpu_keras.py is what runs on the JAX/PyTorch GPU node; here it runs on TensorFlow/CPU
    # so a change to the model builders cannot break it unnoticed.
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "gpu.json"
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, str(root / "bench" / "gpu_keras.py"), "--encoders", "lstm",
         "--precisions", "fp32", "--jit", "false", "--batch", "8", "--steps", "2",
         "--epochs", "2", "--items", "100", "--categories", "10", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (row,) = json.loads(out.read_text())["results"]
    # It measured the model the library builds from those flags (length 30, 8 static features,
    # hidden 64, item 32, category 16: the script's defaults), not some other one.
    want = build_sequence_model({"item": 100, "category": 10, "event_type": 8, "price_bucket": 12},
                                30, 8, 10, encoder="lstm", hidden=64, item_dim=32,
                                category_dim=16).count_params()
    assert row["params"] == want
    assert (row["encoder"], row["precision"], row["batch"], row["steps_per_epoch"]) == (
        "lstm", "fp32", 8, 2)
    # examples/s: the 16 examples of an epoch over the later epochs' mean time (3 decimals kept).
    steady = row["steady_epoch_s"]
    assert steady > 0 and 16 / (steady + 5e-4) - 1 <= row["examples_per_s"] <= 16 / max(
        steady - 5e-4, 1e-9) + 1
    assert np.isfinite(row["final_loss"]) and row["final_loss"] > 0


def test_bootstrap_interval_draws_users_whole_and_widens_with_fewer_users():
    from sklearn.metrics import roc_auc_score

    from demandlake.training.evaluate import bootstrap_interval

    rng = np.random.default_rng(0)

    def sample(users: int):
        g = np.repeat(np.arange(users), 3)  # three rows (cutoffs) per user
        y = rng.integers(0, 2, len(g))
        return g, y, np.clip(0.3 * y + 0.7 * rng.random(len(g)), 0, 1)

    def auc(y, p):
        return roc_auc_score(y, p)

    small, big = (bootstrap_interval(g, {"y": y, "p": p}, auc, n_boot=300)
                  for g, y, p in (sample(40), sample(400)))
    for r in (small, big):
        assert r["low"] < r["value"] < r["high"] and r["n_boot"] == 300
    assert (small["high"] - small["low"]) > 2 * (big["high"] - big["low"])
    assert (small["n_groups"], big["n_groups"]) == (40, 400)
    # A user's rows travel together: with one user holding every positive, a resample holds
    # either all of them or none (so the share of positives is 0, or a multiple of its count).
    g = np.array([0, 0, 0, 1, 2, 3])
    share = bootstrap_interval(g, {"y": np.array([1, 1, 1, 0, 0, 0])},
                               lambda y: y.mean(), n_boot=200)
    assert share["value"] == 0.5 and share["low"] == 0.0


def test_calibration_is_chosen_out_of_fold_and_fixes_a_squeezed_model():
    from demandlake.training.evaluate import choose_calibration, fit_calibration

    rng = np.random.default_rng(1)
    truth = rng.random(4000)
    y = (rng.random(4000) < truth).astype(float)
    calibrated = choose_calibration(y, truth)
    assert calibrated["method"] == "none"  # already calibrated: nothing beats it out of fold
    squeezed = 0.4 + 0.2 * truth  # right order, wrong scale
    choice = choose_calibration(y, squeezed)
    assert choice["method"] in ("platt", "isotonic")
    assert choice["log_loss"][choice["method"]] < choice["log_loss"]["none"] - 0.02
    fixed = fit_calibration(y, squeezed, "platt")(squeezed)
    assert abs(fixed.mean() - y.mean()) < 0.02 and fixed.max() > 0.8
    with pytest.raises(ValueError, match="platt or isotonic"):
        fit_calibration(y, squeezed, "beta")


def test_a_spark_family_applies_its_platt_calibration_as_a_column(spark):
    from pyspark.sql import functions as F

    from demandlake.training.families import SparkFamilyModel

    df = spark.createDataFrame([(0.75,), (0.5,), (0.0,)], "p double")
    platt = SparkFamilyModel(None, {"method": "platt", "a": 2.0, "b": 0.0})
    got = [r[0] for r in df.select(platt.probability(F.col("p"))).collect()]
    assert got[:2] == [pytest.approx(0.9), pytest.approx(0.5)] and 0 < got[2] < 1e-12
    raw = SparkFamilyModel(None)
    assert [r[0] for r in df.select(raw.probability(F.col("p"))).collect()] == [0.75, 0.5, 0.0]
