"""Nightly scoring: forecasts, profiles, recommendations and review sentiment.

The end-to-end tests share one tiny scored lake (the ``scored_lake`` fixture, built by
tests/helpers/scored_lake.py: a dry run, a sentiment run and two scoring runs of the same date);
expectations are computed from the inline input rows or the served models, not from the code
under test. The pure transforms are tested on a few typed rows.
"""
from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest
from chispa import assert_approx_df_equality
from pyspark.sql import functions as F
from pyspark.sql import types as T

from demandlake.scoring import forecasts as fc
from demandlake.scoring import profiles as pr
from demandlake.scoring import segments as sg
from demandlake.scoring import sentiment as st
from helpers import scored_lake as tl

KEYS = {"gold.demand_forecasts": ["user_id"], "gold.user_profiles": ["user_id"],
        "gold.recommendations": ["user_id", "rank"]}


def _expected_active_users() -> set[str]:
    return {r[1] for r in tl.event_rows() if r[15] <= tl.RUN}


def _comparable(frame: pd.DataFrame, keys: list[str]) -> list:
    rows = frame.drop(columns=["run_id"]).sort_values(keys).reset_index(drop=True)
    return [tuple(_plain(v) for v in r) for r in rows.itertuples(index=False)]


def _plain(v):
    if isinstance(v, np.ndarray):
        return tuple(_plain(x) for x in v)
    if isinstance(v, (list, tuple)):
        return tuple(_plain(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _plain(x)) for k, x in v.items()))
    if isinstance(v, float) and math.isnan(v):
        return "NaN"  # NaN != NaN, but two runs writing null must compare equal
    return v


# ---- end to end ---------------------------------------------------------------------------------
def test_dry_run_computes_everything_but_writes_no_output_table(scored_lake):
    assert scored_lake.dry_tables == {n: 0 for n in tl.OUTPUT_TABLES}
    for key in ("users", "forecasts", "profiles", "recommendations"):
        assert scored_lake.dry_counts[key] == scored_lake.first_counts[key] > 0


def test_rerunning_the_same_date_leaves_identical_tables(scored_lake):
    for name, keys in KEYS.items():
        first, second = scored_lake.first[name], scored_lake.second[name]
        assert _comparable(first, keys) == _comparable(second, keys), name
        first_ids, second_ids = set(first["run_id"]), set(second["run_id"])
        assert len(first_ids) == len(second_ids) == 1 and first_ids != second_ids


def test_every_active_user_gets_exactly_one_forecast_and_one_profile(scored_lake):
    expected = _expected_active_users()
    assert {"new01", "gone01"} <= expected
    for name in ("gold.demand_forecasts", "gold.user_profiles"):
        users = scored_lake.first[name]["user_id"]
        assert users.is_unique and set(users) == expected, name
    assert scored_lake.first_counts["users"] == len(expected)


def test_a_user_the_models_never_saw_is_scored_by_the_model(scored_lake):
    f = scored_lake.first["gold.demand_forecasts"].set_index("user_id")
    # new01's items are all out of the vocabulary: its sequence is OOV ids, still scored.
    assert f.loc["new01", "source"] == "model: sequence_network"
    assert not f.loc["new01", "is_fallback"]
    assert (f["model_version"] == scored_lake.sequence_version).all()
    assert (f["model_name"] == "demandlake-sequence").all()
    profiles = scored_lake.first["gold.user_profiles"].set_index("user_id")
    assert profiles.loc["new01", "first_seen"] == tl.RUN == profiles.loc["new01", "last_seen"]
    assert profiles.loc["gone01", "last_seen"] == tl.START


def test_forecasts_are_the_serving_models_predictions_on_each_users_history(spark, scored_lake):
    """Every forecast is the serving sequence model's own output for the user's history up to the
    run date: P(purchase), and for the top categories P(purchase) * P(category | purchase)
    (softmax head), named through the model's vocabulary. (The table clips both to [0, 1] and
    its CHECK constraint holds them there, so a range check could not fail.)"""
    from demandlake import lake, schemas
    from demandlake.features.sequences import build_examples
    from demandlake.scoring import udfs
    from demandlake.training import tracking

    cfg = scored_lake.cfg
    assert cfg["sequence_model.category_head"] == "softmax"
    model, _ = tracking.load_serving("demandlake-sequence", cfg=cfg)
    vocab = lake.read(spark, cfg, "gold.vocabularies")  # never rebuilt: the model's own
    events = spark.createDataFrame([r for r in tl.event_rows() if r[15] <= tl.RUN],
                                   schemas.BRONZE_EVENTS)
    history = build_examples(events, vocab, [(tl.RUN + dt.timedelta(days=1), "score")],
                             max_length=int(cfg["sequences.max_length"]),
                             horizon_days=int(cfg["sequences.horizon_days"]),
                             price_buckets=cfg["sequences.price_buckets"], with_labels=False,
                             min_events=1).toPandas().set_index("user_id")
    want = model.predict(history[list(udfs.SEQUENCE_INPUTS)].reset_index(drop=True))
    want.index = history.index
    names = {r["id"]: r["token"] for r in vocab.where("vocab = 'category' AND id > 1").collect()}

    f = scored_lake.first["gold.demand_forecasts"].set_index("user_id").sort_index()
    assert set(f.index) == set(history.index) and not f["is_fallback"].any()
    want = want.loc[f.index]
    np.testing.assert_allclose(f["purchase_probability"], want["purchase_probability"],
                               rtol=1e-5, atol=1e-7)
    for user, got in f["top_categories"].items():
        p, ids, scores = want.loc[user, ["purchase_probability", "top_category_ids",
                                         "top_category_scores"]]
        expected = [(names[i], p * s) for i, s in zip(ids[:3], scores[:3]) if i in names]
        assert [c["category"] for c in got] == [n for n, _ in expected], user
        np.testing.assert_allclose([c["probability"] for c in got], [q for _, q in expected],
                                   rtol=1e-5, atol=1e-7, err_msg=user)


def test_churn_risk_weighs_the_forecast_against_the_days_since_the_last_event(scored_lake):
    """churn_risk = w * (1 - P(purchase)) + (1 - w) * min(days since last event / R, 1), with
    the last event taken from the inline rows up to the run date."""
    w = float(scored_lake.cfg["scoring.churn.weight"])
    horizon = float(scored_lake.cfg["scoring.churn.recency_days"])
    last: dict[str, dt.date] = {}
    for r in tl.event_rows():
        if r[15] <= tl.RUN:
            last[r[1]] = max(last.get(r[1], r[15]), r[15])
    p = scored_lake.first["gold.user_profiles"].set_index("user_id")
    forecast = scored_lake.first["gold.demand_forecasts"].set_index("user_id")
    assert set(p.index) == set(last)
    want = {u: w * (1 - forecast.loc[u, "purchase_probability"])
            + (1 - w) * min((tl.RUN - last[u]).days / horizon, 1.0) for u in p.index}
    assert p["churn_risk"].to_dict() == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert (p["purchase_probability"] == forecast.loc[p.index, "purchase_probability"]).all()
    assert {u: d for u, d in p["last_seen"].items()} == last


def test_review_probabilities_are_the_sentiment_models_on_the_review_texts(scored_lake):
    """Each review's probability is the serving sentiment model's on the review's own text (the
    inline texts are already normalized: no titles, entities or extra spaces)."""
    from demandlake.training import tracking

    model, version = tracking.load_serving("demandlake-sentiment", cfg=scored_lake.cfg)
    assert version == scored_lake.sentiment_version
    texts = {r[0]: r[7] for r in tl.review_rows()}
    rs = scored_lake.first["gold.review_sentiment"].set_index("review_id").sort_index()
    assert set(rs.index) == set(texts)
    want = model.predict(pd.DataFrame({"text": [texts[i] for i in rs.index]}))["probability"]
    np.testing.assert_allclose(rs["probability"], want, rtol=1e-5, atol=1e-7)


def test_score_bands_follow_the_configured_thresholds(scored_lake):
    f = scored_lake.first["gold.demand_forecasts"]
    want = np.where(f["purchase_probability"] >= 0.5, "high",
                    np.where(f["purchase_probability"] >= 0.2, "medium", "low"))
    assert list(f["score_band"]) == list(want)


def test_recommendations_never_include_items_the_user_bought(scored_lake):
    bought = {(r[1], r[4]) for r in tl.event_rows() if r[3] == "purchase" and r[15] <= tl.RUN}
    recs = scored_lake.first["gold.recommendations"]
    assert len(recs) > 0 and set(recs["source"]) <= {"als", "category_popularity"}
    assert not {(u, i) for u, i in zip(recs["user_id"], recs["item_id"])} & bought
    for _, ranks in recs.groupby("user_id")["rank"]:
        assert sorted(ranks) == list(range(1, len(ranks) + 1)) and len(ranks) <= 4
    assert not recs.duplicated(["user_id", "item_id"]).any()


def test_als_blocks_follow_the_number_of_interactions_unless_fixed(spark, scored_lake):
    from demandlake.scoring import recommendations as rc

    ten = spark.range(10).repartition(3)
    cores = spark.sparkContext.defaultParallelism  # 2 in the tests' session
    assert rc.als_blocks(ten, "auto", 0, 100) == 1
    assert rc.als_blocks(ten, "auto", 100, 100) == 1
    assert rc.als_blocks(ten, "auto", 101, 100) == min(2, cores)
    assert rc.als_blocks(ten, "auto", 10**9, 100) == cores
    assert rc.als_blocks(ten, "auto", per_block=5) == min(2, cores)  # counts the 10 rows itself
    assert rc.als_blocks(ten, 5) == 5
    with pytest.raises(ValueError, match="blocks"):
        rc.als_blocks(ten, 0)
    with pytest.raises(ValueError, match="interactions_per_block"):
        rc.als_blocks(ten, "auto", 10, 0)
    # The scored lake runs with "auto" (1 block for its few interactions): ALS served items.
    assert (scored_lake.first["gold.recommendations"]["source"] == "als").any()


def test_segments_are_named_and_profiles_carry_model_versions(scored_lake):
    p = scored_lake.first["gold.user_profiles"]
    assert set(p["segment"]) <= set(sg.SEGMENT_NAMES)
    assert (p["sequence_model_version"] == scored_lake.sequence_version).all()
    assert (p["sentiment_model_version"] == scored_lake.sentiment_version).all()
    assert set(p["segment_model"]) == {"kmeans k=4 seed=7"}
    assert set(p["value_tier"]) <= {"high", "medium", "low"}
    # u-users wrote reviews: their mean sentiment is the mean of their review probabilities.
    rs = scored_lake.first["gold.review_sentiment"]
    want = rs.groupby("user_id")["probability"].mean()
    got = p.set_index("user_id")["review_sentiment"].dropna()
    assert set(got.index) == set(want.index)
    np.testing.assert_allclose(got.sort_index(), want.sort_index(), rtol=1e-9)


def test_review_sentiment_labels_follow_the_planted_cue_words(scored_lake):
    rs = scored_lake.first["gold.review_sentiment"]
    assert len(rs) == len(tl.review_rows()) == scored_lake.sentiment_counts["scored"]
    planted = {r[0]: ("negative" if r[4] == 1 else "positive") for r in tl.review_rows()}
    polar = rs[rs["label"] != "neutral"]
    agree = (polar["label"] == polar["review_id"].map(planted)).mean()
    assert len(polar) >= 0.6 * len(rs) and agree >= 0.85
    assert (rs["model_version"] == scored_lake.sentiment_version).all()


def test_electronics_negative_share_rises_in_week_two(scored_lake):
    items = scored_lake.first["gold.item_sentiment"]
    cat = items[(items["level"] == "category") & (items["category"] == "electronics")]
    by_week = cat.set_index("week")
    later = by_week.loc[dt.date(2026, 11, 9)]
    before = by_week.loc[dt.date(2026, 11, 2)]
    assert later["share_negative"] == 1.0 > before["share_negative"]
    rise = later["share_negative"] - before["share_negative"]
    assert later["negative_trend"] == pytest.approx(rise)
    assert math.isnan(by_week.loc[dt.date(2026, 10, 26), "negative_trend"])  # no week before it


def test_complaint_terms_of_electronics_are_negative_cue_words(scored_lake):
    terms = scored_lake.first["gold.complaint_terms"]
    elec = terms[terms["category"] == "electronics"].sort_values("rank")
    assert len(elec) > 0 and (elec["score"] > 0).all()
    negative_words = set(tl._NEG["en"]) | set(tl._NEG["zh"])
    assert set(elec["term"].head(3)) & negative_words


def _sequence_schema() -> T.StructType:
    """``user_id`` and the scorer's inputs, typed as ``gold.sequence_examples`` has them."""
    from demandlake.scoring import udfs

    return T.StructType([T.StructField("user_id", T.StringType())] + [
        T.StructField(c, T.ArrayType(T.FloatType() if c in ("time_gaps", "static_features")
                                     else T.IntegerType())) for c in udfs.SEQUENCE_INPUTS])


@pytest.mark.parametrize("arrow", [False, True], ids=["mapInPandas", "mapInArrow"])
def test_udf_scores_equal_direct_predict_on_the_same_rows(spark, scored_lake, arrow):
    from demandlake.scoring import udfs
    from demandlake.training import tracking

    cfg = scored_lake.cfg
    model, version = tracking.load_serving("demandlake-sequence", cfg=cfg)
    L, rng = int(cfg["sequences.max_length"]), np.random.default_rng(4)
    rows = []
    for i in range(40):
        n = int(rng.integers(1, L + 1))
        ids = lambda hi: [0] * (L - n) + [int(v) for v in rng.integers(1, hi, n)]  # noqa: E731
        rows.append((f"x{i}", ids(40), ids(7), ids(8), ids(11),
                     [0.0] * (L - n) + [float(v) for v in rng.exponential(3, n)],
                     [float(v) for v in rng.normal(1, 1, 5)]))
    # An unpadded (ragged) row: its batch goes through the predictor's own row-by-row padding.
    rows.append(("ragged", [5, 6], [2, 3], [2, 2], [3, 4], [0.0, 1.5], [1.0, 2.0]))
    # Longer than the model's length: its last L steps count, as the sequences job keeps them.
    rows.append(("long", *[[3] * (L + 4)] * 4, [1.0] * (L + 4), [0.5] * 5))
    schema = _sequence_schema()
    df = spark.createDataFrame(rows, schema).repartition(2)
    uri = f"models:/demandlake-sequence/{version}"
    if arrow:
        got = df.mapInArrow(udfs.sequence_scorer_arrow(uri, cfg.mlflow_tracking_uri, 7, 3),
                            udfs.SEQUENCE_SCORES)
    else:
        got = df.mapInPandas(udfs.sequence_scorer(uri, cfg.mlflow_tracking_uri, 7, 3),
                             udfs.SEQUENCE_SCORES)
    got = got.toPandas().set_index("user_id").sort_index()
    assert len(got) == len(rows)
    frame = pd.DataFrame(rows, columns=["user_id", *udfs.SEQUENCE_INPUTS]).set_index("user_id")
    want = model.predict(frame.reset_index(drop=True)[list(udfs.SEQUENCE_INPUTS)])
    want.index = frame.index
    want = want.sort_index()
    np.testing.assert_allclose(got["purchase_probability"], want["purchase_probability"],
                               rtol=1e-5, atol=1e-7)
    for g, w, gs, ws in zip(got["top_category_ids"], want["top_category_ids"],
                            got["top_category_scores"], want["top_category_scores"]):
        assert list(g) == list(w)[:3]
        np.testing.assert_allclose(gs, ws[:3], rtol=1e-5, atol=1e-7)


def test_both_udf_paths_score_a_null_history_as_all_padding(spark, scored_lake):
    """A null sequence (the pyfunc signature refuses it, so it is not in the test above) is
    scored by both batch paths, as all padding, with the same numbers."""
    from demandlake.scoring import udfs
    from demandlake.training import tracking

    cfg = scored_lake.cfg
    _, version = tracking.load_serving("demandlake-sequence", cfg=cfg)
    L = int(cfg["sequences.max_length"])
    schema = _sequence_schema()
    rows = [("null", None, None, None, None, None, [1.0] * 5),
            ("padding", *[[0] * L] * 4, [0.0] * L, [1.0] * 5),
            ("some", *[[0] * (L - 2) + [3, 4]] * 4, [0.0] * (L - 1) + [2.0], [1.0] * 5)]
    df = spark.createDataFrame(rows, schema).coalesce(1)
    uri = f"models:/demandlake-sequence/{version}"
    paths = {
        "pandas": df.mapInPandas(udfs.sequence_scorer(uri, cfg.mlflow_tracking_uri, 8, 3),
                                 udfs.SEQUENCE_SCORES),
        "arrow": df.mapInArrow(udfs.sequence_scorer_arrow(uri, cfg.mlflow_tracking_uri, 8, 3),
                               udfs.SEQUENCE_SCORES)}
    got = {k: v.toPandas().set_index("user_id").sort_index() for k, v in paths.items()}
    for frame in got.values():
        assert sorted(frame.index) == ["null", "padding", "some"]
        assert frame.loc["null", "purchase_probability"] == pytest.approx(
            frame.loc["padding", "purchase_probability"], abs=1e-7)
        assert list(frame.loc["null", "top_category_ids"]) == \
            list(frame.loc["padding", "top_category_ids"])
    np.testing.assert_allclose(got["arrow"]["purchase_probability"],
                               got["pandas"]["purchase_probability"], rtol=0, atol=1e-7)
    for a, b in zip(got["arrow"]["top_category_ids"], got["pandas"]["top_category_ids"]):
        assert list(a) == list(b)


# ---- pure transforms ----------------------------------------------------------------------------
def _z(**values) -> dict:
    return {**{f: 0.0 for f in sg.SEGMENT_FEATURES}, **values}


@pytest.mark.parametrize("centroid, name", [
    (_z(recency_days=1.2, monetary=2.0, frequency=2.0), "at risk"),
    (_z(tenure_days=-1.5, activity=-1.0), "new"),
    (_z(monetary=0.9, frequency=0.6, price_sensitivity=1.0), "loyal high spenders"),
    (_z(monetary=0.9, frequency=0.1, price_sensitivity=0.7), "bargain hunters"),
    (_z(activity=-0.8, conversion=-0.6), "casual browsers"),
    (_z(activity=0.4, conversion=-0.6), "regular shoppers"),
    (_z(recency_days=0.74, tenure_days=-0.74, monetary=0.5, frequency=0.5), "loyal high spenders"),
])
def test_segment_names_follow_the_rules_on_hand_made_centroids(centroid, name):
    assert sg.segment_name(centroid) == name


def test_segment_rules_take_thresholds_from_config():
    assert sg.segment_name(_z(recency_days=0.5), {"at_risk_recency": 0.4}) == "at risk"


def test_segment_name_rejects_a_centroid_without_every_feature():
    with pytest.raises(ValueError, match="lacks"):
        sg.segment_name({"recency_days": 1.0})


def test_kmeans_centroids_are_named_from_standardized_features(spark):
    rows = ([(f"a{i}", 30.0 + i, 60.0, 0.5, 0.0, 0.0, 0.0, 0.5) for i in range(6)]
            + [(f"b{i}", 1.0, 3.0 + i % 2, 3.0, 2.0, 5.0, 0.6, 0.5) for i in range(6)])
    inputs = spark.createDataFrame(rows, ["user_id", *sg.SEGMENT_FEATURES])
    model = sg.segment_pipeline(2, seed=1).fit(inputs)
    names = sg.centroid_names(model)
    out = inputs.transform(sg.assign_segments(model, names)).toPandas().set_index("user_id")
    assert set(out.loc[[f"a{i}" for i in range(6)], "segment"]) == {"at risk"}
    assert set(out.loc[[f"b{i}" for i in range(6)], "segment"]) == {"new"}


FEATURE_SCHEMA = T.StructType([
    T.StructField("user_id", T.StringType()), T.StructField("segment_id", T.IntegerType()),
    T.StructField("top_categories", T.ArrayType(T.StructType([
        T.StructField("name", T.StringType()), T.StructField("weight", T.DoubleType())]))),
    T.StructField("purchases_by_window", T.MapType(T.IntegerType(), T.LongType())),
])
CATS = T.ArrayType(T.StructType([T.StructField("category", T.StringType()),
                                 T.StructField("probability", T.DoubleType())]))


def test_forecasts_fall_back_to_the_segment_base_rate(spark):
    users = spark.createDataFrame([
        ("a", 0, [("toys", 1.0)], {7: 2}), ("b", 0, [("books", 0.75), ("toys", 0.25)], {7: 0}),
        ("c", 1, [], {7: 1}), ("d", 1, [], {7: 0}),
    ], FEATURE_SCHEMA)
    score_schema = T.StructType([T.StructField("user_id", T.StringType()),
                                 T.StructField("purchase_probability", T.DoubleType()),
                                 T.StructField("top_categories", CATS)])
    scores = spark.createDataFrame([("a", 0.9, [("toys", 0.6)]), ("d", float("nan"), [])],
                                   score_schema)
    popular = spark.createDataFrame([([("toys", 0.8), ("books", 0.2)],)],
                                    T.StructType([T.StructField("_popular", T.ArrayType(
                                        T.StructType([T.StructField("category", T.StringType()),
                                                      T.StructField("share", T.DoubleType())])))]))
    run = dt.date(2026, 11, 10)
    out = fc.demand_forecasts(users, scores, popular, [7, 30], {"high": 0.8, "medium": 0.4}, 2,
                              run, "run-1", "demandlake-sequence", 3)
    expected = [
        ("a", 0.9, [("toys", 0.6)], "high", False, "model: sequence_network"),
        ("b", 0.5, [("books", 0.375), ("toys", 0.125)], "medium", True,
         "fallback: segment_base_rate/no_sequence"),
        ("c", 0.5, [("toys", 0.4), ("books", 0.1)], "medium", True,
         "fallback: segment_base_rate/no_sequence"),
        ("d", 0.5, [("toys", 0.4), ("books", 0.1)], "medium", True,
         "fallback: segment_base_rate/no_score"),
    ]
    got = sorted(out.collect(), key=lambda r: r["user_id"])
    assert [(r["user_id"], r["purchase_probability"],
             [(c["category"], pytest.approx(c["probability"])) for c in r["top_categories"]],
             r["score_band"], r["is_fallback"], r["source"]) for r in got] == expected
    assert {(r["run_date"], r["model_name"], r["model_version"], r["run_id"]) for r in got} == {
        (run, "demandlake-sequence", 3, "run-1")}
    no_model = fc.demand_forecasts(users, None, popular, [7], {"high": 0.8, "medium": 0.4}, 2,
                                   run, "run-1")
    assert {r["source"] for r in no_model.collect()} == {"fallback: segment_base_rate/no_model"}

    # A Spark ML family predicts no categories: its rows take the user's preferred ones (else the
    # popular ones) weighted by ITS probability, not by the base rate.
    gbt_scores = spark.createDataFrame([("a", 0.9, None), ("b", 0.2, None), ("c", 0.6, None)],
                                       score_schema)
    gbt = fc.demand_forecasts(users, gbt_scores, popular, [7, 30], {"high": 0.8, "medium": 0.4},
                              2, run, "run-1", "demandlake-sequence", 4, "spark_gbt")
    got = sorted(gbt.collect(), key=lambda r: r["user_id"])
    assert [(r["user_id"], r["purchase_probability"],
             [(c["category"], pytest.approx(c["probability"])) for c in r["top_categories"]],
             r["source"]) for r in got] == [
        ("a", 0.9, [("toys", 0.9)], "model: spark_gbt"),
        ("b", 0.2, [("books", 0.15), ("toys", 0.05)], "model: spark_gbt"),
        ("c", 0.6, [("toys", 0.48), ("books", 0.12)], "model: spark_gbt"),
        ("d", 0.5, [("toys", 0.4), ("books", 0.1)], "fallback: segment_base_rate/no_sequence")]


def test_model_categories_name_ids_through_the_vocabulary(spark):
    scores = spark.createDataFrame(
        [("a", 0.5, [3, 9, 2], [0.6, 0.3, 0.1])],
        "user_id string, purchase_probability double, top_category_ids array<int>, "
        "top_category_scores array<double>")
    vocab = spark.createDataFrame(
        [("category", "<pad>", 0), ("category", "<oov>", 1), ("category", "toys", 2),
         ("category", "books", 3), ("item", "x", 9)], "vocab string, token string, id int")
    cats = fc.category_map(vocab)
    soft = fc.model_categories(scores, cats, "softmax", 3).first()
    assert [(c["category"], c["probability"]) for c in soft["top_categories"]] == [
        ("books", pytest.approx(0.3)), ("toys", pytest.approx(0.05))]
    sig = fc.model_categories(scores, cats, "sigmoid", 1).first()
    assert [(c["category"], c["probability"]) for c in sig["top_categories"]] == [("books", 0.6)]
    with pytest.raises(ValueError, match="head"):
        fc.model_categories(scores, cats, "argmax", 3)


def test_scoring_codes_sequences_with_the_serving_models_own_vocabulary(spark, tmp_path):
    """A later rebuild of gold.vocabularies (a retrain that was not promoted), even vacuumed,
    does not change the ids the serving model is fed; without its copy scoring stops clearly."""
    from demandlake import lake, maintenance
    from demandlake.config import local_path
    from demandlake.features.sequences import build_vocabularies
    from demandlake.pipeline.score import model_vocabulary
    from demandlake.pipeline.transform import build_scoring_sequences
    from demandlake.scoring import serving
    from demandlake.training.tracking import VOCABULARY_ARTIFACT

    cfg = tl.lake_config(tmp_path)
    tl.reset_catalog(spark, cfg)
    tl.write_inputs(spark, cfg)  # vocabulary through VOCAB_THROUGH: new01's items are unseen
    tl.log_sequence_model(spark, cfg)
    rows = lambda df: sorted(tuple(r) for r in df.select(  # noqa: E731
        "vocab", "token", "id", "count", "built_through").collect())
    trained = rows(lake.read(spark, cfg, "gold.vocabularies"))
    lake.overwrite_all(spark, cfg, "gold.vocabularies", build_vocabularies(
        lake.read(spark, cfg, "bronze.events"), tl.RUN, 1))
    key = "spark.databricks.delta.retentionDurationCheck.enabled"
    spark.conf.set(key, "false")
    try:  # no time travel back to the trained version any more
        maintenance.vacuum(spark, cfg, "gold.vocabularies", 0)
    finally:
        spark.conf.unset(key)
    assert rows(lake.read(spark, cfg, "gold.vocabularies")) != trained

    model, why = serving.resolve(cfg, "sequence")
    assert model is not None, why
    vocab = model_vocabulary(spark, cfg, model)
    assert rows(vocab) == trained
    ids = lambda seqs: {r["user_id"]: r["item_ids"] for r in seqs.collect()}  # noqa: E731
    served = ids(build_scoring_sequences(spark, cfg, tl.RUN, vocab))
    current = ids(build_scoring_sequences(spark, cfg, tl.RUN))
    assert set(served["new01"]) <= {0, 1}  # unseen in training: padding and out-of-vocabulary
    assert max(current["new01"]) >= 2  # the rebuilt table knows them
    item_ids = {t: i for v, t, i, *_ in trained if v == "item"}
    assert all(i in item_ids.values() or i in (0, 1) for i in served["u00"])

    store = local_path(cfg.lake_uri) / "_mlflow"  # the run's artifacts, beside the SQLite store
    logged = [p for p in store.rglob("*.parquet") if p.as_posix().endswith(VOCABULARY_ARTIFACT)]
    assert len(logged) == 1
    logged[0].unlink()
    with pytest.raises(RuntimeError, match="retrain the sequence model"):
        model_vocabulary(spark, cfg, model)


def test_a_vocabulary_table_created_again_is_not_taken_for_the_models_own(spark, tmp_path):
    """Dropped and created again, gold.vocabularies numbers its versions from the start: a new
    table at the version the serving model recorded is not the model's vocabulary."""
    import shutil

    from demandlake import lake
    from demandlake.config import local_path
    from demandlake.features.sequences import build_vocabularies
    from demandlake.pipeline.score import model_vocabulary
    from demandlake.scoring import serving
    from demandlake.training.tracking import VOCABULARY_ARTIFACT

    cfg = tl.lake_config(tmp_path)
    tl.reset_catalog(spark, cfg)
    tl.write_inputs(spark, cfg)
    tl.log_sequence_model(spark, cfg)
    rows = lambda df: sorted(tuple(r) for r in df.select(  # noqa: E731
        "vocab", "token", "id", "count", "built_through").collect())
    trained = rows(lake.read(spark, cfg, "gold.vocabularies"))
    version = lake.table_version(spark, cfg, "gold.vocabularies")
    old_id = lake.table_id(spark, cfg, "gold.vocabularies")

    location = lake.spec("gold.vocabularies").location(cfg)
    spark.sql("DROP TABLE gold.vocabularies")
    shutil.rmtree(local_path(location))
    lake.overwrite_all(spark, cfg, "gold.vocabularies", build_vocabularies(
        lake.read(spark, cfg, "bronze.events"), tl.RUN, 1))
    assert lake.table_version(spark, cfg, "gold.vocabularies") == version
    assert lake.table_id(spark, cfg, "gold.vocabularies") != old_id
    assert rows(lake.read(spark, cfg, "gold.vocabularies")) != trained

    model, why = serving.resolve(cfg, "sequence")
    assert model is not None, why
    assert rows(model_vocabulary(spark, cfg, model)) == trained  # the model's logged copy

    store = local_path(cfg.lake_uri) / "_mlflow"
    for p in store.rglob("*.parquet"):
        if p.as_posix().endswith(VOCABULARY_ARTIFACT):
            p.unlink()
    with pytest.raises(RuntimeError, match="dropped and created again"):
        model_vocabulary(spark, cfg, model)


def test_score_band_rejects_unordered_thresholds():
    with pytest.raises(ValueError, match="bands"):
        fc.score_band(None, {"high": 0.2, "medium": 0.5})


def test_profile_columns_follow_their_rules(spark):
    from pyspark.sql import functions as F

    df = spark.createDataFrame(
        [("a", 120.0, 100.0, [0] * 20 + [5, 1, 5, 0], 0.2, 40),
         ("b", 0.0, 100.0, [0] * 24, 0.9, 0), ("c", 50.0, 100.0, [2] + [0] * 23, 1.0, 3)],
        "user_id string, revenue double, threshold double, hours array<long>, p double, "
        "recency int")
    out = df.select(
        "user_id", pr.value_tier(F.col("revenue"), F.col("threshold")).alias("tier"),
        pr.top_hours(F.col("hours")).alias("hours"),
        pr.churn_risk(F.col("p"), F.col("recency"), 0.5, 30).alias("risk"))
    expected = spark.createDataFrame(
        [("a", "high", [20, 22, 21], 0.5 * 0.8 + 0.5 * 1.0), ("b", "low", [], 0.05),
         ("c", "medium", [0], 0.5 * 0.0 + 0.5 * 0.1)],
        "user_id string, tier string, hours array<int>, risk double")
    assert_approx_df_equality(out, expected, 1e-12, ignore_nullable=True, ignore_row_order=True)


def test_churn_risk_rejects_a_weight_outside_0_1():
    with pytest.raises(ValueError, match="weight"):
        pr.churn_risk(None, None, 1.5, 30)


def test_sentiment_labels_and_bad_thresholds(spark):
    from pyspark.sql import functions as F

    df = spark.createDataFrame([(0.1,), (0.4,), (0.59,), (0.6,)], "p double")
    labels = [r[0] for r in df.select(st.sentiment_label(F.col("p"), {
        "negative_below": 0.4, "positive_from": 0.6})).collect()]
    assert labels == ["negative", "neutral", "neutral", "positive"]
    with pytest.raises(ValueError, match="negative_below"):
        st.sentiment_label(F.col("p"), {"negative_below": 0.7, "positive_from": 0.6})


def test_complaint_terms_score_is_the_log_odds_z_score(spark):
    scored = spark.createDataFrame(
        [("r1", "phones", "negative", 1), ("r2", "phones", "negative", 1),
         ("r3", "phones", "positive", 1), ("r4", "phones", "positive", 1)],
        "review_id string, category string, label string, model_version int")
    terms = spark.createDataFrame(
        [("r1", ["broken", "screen"]), ("r2", ["broken"]), ("r3", ["screen"]), ("r4", ["great"])],
        "review_id string, terms array<string>")
    out = st.complaint_terms(scored, terms, 5, 1, 0.5, dt.date(2026, 11, 10), "run").collect()
    a = 0.5
    delta = math.log((2 + a) / (0 + a)) - math.log((0 + a) / (2 + a))
    want = delta / math.sqrt(1 / (2 + a) + 1 / (0 + a))
    assert [(r["term"], r["rank"], r["negative_reviews"], r["positive_reviews"]) for r in out] == [
        ("broken", 1, 2, 0)]  # "screen" is as frequent in positive reviews: score 0, dropped
    assert out[0]["score"] == pytest.approx(want)


def test_review_terms_segment_chinese_and_drop_stop_words(spark):
    reviews = spark.createDataFrame(
        [("r1", "The screen is BROKEN!"), ("r2", "质量很差，非常失望")], "review_id string, text string")
    got = {r["review_id"]: set(r["terms"]) for r in st.review_terms(reviews).collect()}
    assert got["r1"] == {"screen", "broken"}
    assert "失望" in got["r2"] and all(len(t) >= 2 for t in got["r2"])


def test_scorers_reject_non_positive_batch_sizes():
    from demandlake.scoring import udfs

    with pytest.raises(ValueError, match="batch_size"):
        udfs.sequence_scorer("models:/x/1", None, 0, 3)
    with pytest.raises(ValueError, match="batch_size"):
        udfs.sequence_scorer_arrow("models:/x/1", None, 0, 3)
    with pytest.raises(ValueError, match="batch_size"):
        udfs.sentiment_scorer("models:/x/1", None, 0)


def test_run_score_fails_clearly_without_features_for_the_date(spark, cfg):
    from demandlake.pipeline.score import run_score

    with pytest.raises(RuntimeError, match="features"):
        run_score(spark, cfg, dt.date(2026, 11, 10))


def test_review_sentiment_is_skipped_without_a_serving_model(spark, cfg):
    from demandlake import lake
    from demandlake.pipeline.score import run_review_sentiment

    counts = run_review_sentiment(spark, cfg, dt.date(2026, 11, 10))
    assert counts == {"skipped": 1, "scored": 0}
    assert lake.read(spark, cfg, "gold.review_sentiment").count() == 0
    runs = lake.read(spark, cfg, "ops.runs").where("stage = 'review_sentiment'").collect()
    assert len(runs) == 1 and runs[0]["status"] == "succeeded"
    metrics = runs[0]["metrics"]
    assert metrics["skipped"] == "1" and "no MLflow store" in metrics["reason"]


@pytest.mark.parametrize("encoder, cuts", [("gru", True), ("attention", False)])
def test_scorer_skips_padding_steps_only_when_the_outputs_stay_the_same(encoder, cuts):
    from demandlake.models.sequence import build_sequence_model
    from demandlake.scoring import udfs
    from demandlake.training.predictors import SequencePredictor

    L, rng = 10, np.random.default_rng(2)
    model = build_sequence_model({"item": 30, "category": 8, "event_type": 8}, L, 5, 8,
                                 encoder=encoder, hidden=8, item_dim=4, category_dim=4)
    predictor = SequencePredictor({"max_length": L, "n_static": 5, "top_k": 3}, model)
    rows = []
    for _ in range(30):
        n = int(rng.integers(1, L + 1))
        ids = lambda hi: [0] * (L - n) + [int(v) for v in rng.integers(2, hi, n)]  # noqa: E731
        rows.append({"item_ids": ids(30), "category_ids": ids(8), "event_type_ids": ids(8),
                     "price_buckets": ids(8), "time_gaps": [0.0] * (L - n) + [1.0] * n,
                     "static_features": [float(v) for v in rng.normal(0, 1, 5)]})
    frame = pd.DataFrame(rows)
    scorer = udfs.SequenceScorer(predictor, 3, bucket_rows=8)
    got, want = scorer.predict(frame), predictor.predict(frame)
    assert scorer.trim is cuts
    np.testing.assert_allclose(got["purchase_probability"], want["purchase_probability"],
                               rtol=1e-5, atol=1e-7)
    assert [list(g) for g in got["top_category_ids"]] == [list(w) for w in want["top_category_ids"]]


def test_scorer_picks_the_same_top_categories_as_the_predictor_ties_included():
    """The scorer picks categories inside the graph (top_k); the predictor sorts in NumPy. Both
    must give the same ids in the same order, also when scores tie (lowest id first)."""
    from demandlake.models.sequence import build_sequence_model
    from demandlake.scoring import udfs
    from demandlake.training.predictors import SequencePredictor

    L, rng = 6, np.random.default_rng(4)
    # A head over 400 categories (the n_categories argument), not only a 400-token embedding.
    model = build_sequence_model({"item": 30, "category": 400, "event_type": 8}, L, 5, 400,
                                 encoder="gru", hidden=8, item_dim=4, category_dim=4)
    assert model.get_layer("categories").output.shape[-1] == 400
    rows = [{"item_ids": [int(v) for v in rng.integers(2, 30, L)],
             "category_ids": [int(v) for v in rng.integers(2, 400, L)],
             "event_type_ids": [2] * L, "price_buckets": [2] * L, "time_gaps": [1.0] * L,
             "static_features": [float(v) for v in rng.normal(0, 1, 5)]} for _ in range(40)]
    frame = pd.DataFrame(rows)
    predictor = SequencePredictor({"max_length": L, "n_static": 5, "top_k": 5}, model)
    got, want = udfs.SequenceScorer(predictor, 5).predict(frame), predictor.predict(frame)
    assert [list(g) for g in got["top_category_ids"]] == [list(w) for w in want["top_category_ids"]]
    np.testing.assert_allclose(np.stack(got["top_category_scores"]),
                               np.stack(want["top_category_scores"]), rtol=1e-6)
    # All categories equal (a zeroed head): every row gets the lowest ids, 2, 3, 4, 5, 6.
    head = model.get_layer("categories")
    head.set_weights([np.zeros_like(w) for w in head.get_weights()])
    tied = SequencePredictor({"max_length": L, "n_static": 5, "top_k": 5}, model)
    got, want = udfs.SequenceScorer(tied, 5).predict(frame), tied.predict(frame)
    assert {tuple(g) for g in got["top_category_ids"]} == {(2, 3, 4, 5, 6)}
    assert [list(g) for g in got["top_category_ids"]] == [list(w) for w in want["top_category_ids"]]


def test_segment_ids_do_not_depend_on_how_the_input_is_split(spark):
    # k-means|| samples per partition: the same users split differently must still get the same
    # segment ids (a rerun after a killed run reads differently laid-out files).
    rows = [(f"u{i:03d}", float(i % 7) * 10 + i % 3, float(i % 5) * 20, 0.1 * (i % 11), 0.0,
             float(i % 4), 0.1 * (i % 3), 0.5) for i in range(120)]
    base = spark.createDataFrame(rows, ["user_id", *sg.SEGMENT_FEATURES])
    layouts = [base.coalesce(1), base.repartition(5), base.orderBy(F.desc("user_id")).repartition(3)]
    results = []
    for inputs in layouts:
        stable = inputs.transform(sg.stable_layout(4))
        model = sg.segment_pipeline(4, seed=3, max_iter=5).fit(stable)
        out = stable.transform(sg.assign_segments(model, sg.centroid_names(model)))
        results.append(sorted(tuple(r) for r in out.collect()))
        ids = sg.segment_ids(model)
        centers = model.stages[-1].clusterCenters()
        by_id = [tuple(centers[k]) for k, _ in sorted(ids.items(), key=lambda kv: kv[1])]
        assert by_id == sorted(by_id)  # ids follow the centroids, not KMeans' internal order
    assert results[0] == results[1] == results[2]


def test_a_spark_ml_family_that_serves_scores_every_active_user_in_spark(spark, scored_lake):
    """A version registered with the family tag ``spark_gbt`` is resolved as such, loaded back
    from the registry (MLflow's spark flavour) and applied in Spark to every active user's
    scoring sequence; it predicts no categories. (Under its own registered name: the shared
    lake's network keeps serving the other tests.)"""
    from demandlake.features.sequences import EVENT_TYPE_IDS
    from demandlake.pipeline.score import active_users, score_spark_family
    from demandlake.pipeline.transform import build_scoring_sequences
    from demandlake.scoring import serving
    from demandlake.training import families, tracking

    cfg = scored_lake.cfg.with_overrides({"sequence_model.registered_name": "test-gbt",
                                          "propensity.spark_gbt.max_iter": 5,
                                          "propensity.spark_gbt.min_instances_per_node": 1})
    carted = F.exists("event_type_ids", lambda t: t == F.lit(EVENT_TYPE_IDS["cart"]))
    rows = build_scoring_sequences(spark, cfg, tl.RUN).withColumn("label_purchase",
                                                                   carted.cast("int"))
    labels = dict(rows.select("user_id", "label_purchase").collect())
    assert set(labels.values()) == {0, 1}
    run_id, _ = tracking.start_run(tracking.configure(cfg), "test-gbt", "gbt-test", {},
                                   {"task": "sequence"}, resume=False)
    uri = families.log_spark_model(run_id, families.fit(cfg, families.GBT, rows), families.GBT)
    version = tracking.register_and_promote(uri, "test-gbt", run_id, {"purchase_pr_auc": 0.9},
                                            None, "purchase_pr_auc", True,
                                            tags={"family": families.GBT}).version
    tracking.finish_run(run_id, True)

    served, why = serving.resolve(cfg, "sequence")
    assert served is not None and (served.family, served.version) == (families.GBT, version), why
    scores = (score_spark_family(spark, cfg, tl.RUN, active_users(spark, cfg, tl.RUN), served)
              .toPandas().set_index("user_id"))
    assert set(scores.index) == _expected_active_users() == set(labels)
    p = scores["purchase_probability"]
    assert min(p[u] for u, y in labels.items() if y) > max(p[u] for u, y in labels.items() if not y)
    assert scores["top_categories"].isna().all()
