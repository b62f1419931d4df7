"""Review corpus: text normalization, language, labels, deterministic split, excluded counts."""
from __future__ import annotations

import hashlib

import pytest
from chispa import assert_df_equality

from demandlake import lake, schemas
from demandlake.features.review_corpus import review_corpus
from demandlake.pipeline.transform import run_review_corpus

SPLIT = {"train": 0.8, "validation": 0.1, "test": 0.1}


def rv(rid, text, title=None, rating=None, label=None, language=None):
    return (rid, None, None, None, rating, label, title, text, language, None, None, "test",
            "inline", f"h-{rid}", None)


def reference_split(review_id: str) -> str:
    """The split computed outside Spark: first 32 bits of sha256 as a fraction."""
    u = int(hashlib.sha256(review_id.encode()).hexdigest()[:8], 16) / 2 ** 32
    return "train" if u < 0.8 else "validation" if u < 0.9 else "test"


def test_text_is_cleaned_and_the_title_goes_first(spark):
    reviews = spark.createDataFrame([
        rv("r1", "\ufeffLove it &amp; the colour&#39;s\n\n nice&nbsp;&lt;3 ", title="Great  fit"),
        rv("r2", "so \t good", title="Wow!"),
        rv("r3", "&amp;lt;b&amp;gt;"),
        rv("r4", "   ", title="Title but no text"),
        rv("r5", None),
    ], schemas.BRONZE_REVIEWS)
    got = reviews.transform(review_corpus(SPLIT)).select("review_id", "text", "n_chars")
    texts = {"r1": "Great fit. Love it & the colour's nice <3", "r2": "Wow! so good",
             "r3": "&lt;b&gt;"}
    expected = spark.createDataFrame([(k, v, len(v)) for k, v in texts.items()],
                                     "review_id string, text string, n_chars int")
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True,
                       ignore_metadata=True)


def test_language_comes_from_the_source_else_from_the_share_of_cjk_characters(spark):
    reviews = spark.createDataFrame([
        rv("z1", "这个手机很好用，推荐购买！"),
        rv("z2", "Phone 很好 but the battery is weak"),
        rv("z3", "质量不错", language=" ZH "),
        rv("z4", "Bonne qualité", language="fr"),
    ], schemas.BRONZE_REVIEWS)
    got = reviews.transform(review_corpus(SPLIT)).select("review_id", "language")
    expected = spark.createDataFrame([("z1", "zh"), ("z2", "en"), ("z3", "zh"), ("z4", "fr")],
                                     "review_id string, language string")
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True,
                       ignore_metadata=True)


def test_the_source_label_wins_and_ratings_map_to_negative_neutral_positive(spark):
    cases = [("l1", 1, 1, 1), ("l2", None, 1, 0), ("l3", None, 2, 0), ("l4", None, 3, None),
             ("l5", None, 4, 1), ("l6", None, 5, 1), ("l7", 0, 5, 0), ("l8", None, None, None)]
    rows = [rv(rid, "text", rating=r, label=lab) for rid, lab, r, _ in cases]
    reviews = spark.createDataFrame(rows, schemas.BRONZE_REVIEWS)
    got = reviews.transform(review_corpus(SPLIT)).select("review_id", "rating", "label")
    expected = spark.createDataFrame([(rid, r, want) for rid, _, r, want in cases],
                                     "review_id string, rating int, label int")
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True,
                       ignore_metadata=True)


def test_the_split_is_a_fixed_function_of_the_review_id(spark):
    ids = [f"review-{i}" for i in range(300)]
    reviews = spark.createDataFrame([rv(i, "some text") for i in ids], schemas.BRONZE_REVIEWS)
    corpus = review_corpus(SPLIT)
    got = dict(reviews.transform(corpus).select("review_id", "split").collect())
    again = dict(reviews.orderBy("text", "record_hash").repartition(3).transform(corpus)
                 .select("review_id", "split").collect())
    assert got == again == {i: reference_split(i) for i in ids}
    assert set(got.values()) == {"train", "validation", "test"}


def test_review_corpus_rejects_bad_split_fractions():
    with pytest.raises(ValueError):
        review_corpus({"train": 0.8, "dev": 0.2})
    with pytest.raises(ValueError):
        review_corpus({"train": 0.0, "validation": 0.0, "test": 0.0})


def test_the_stage_replaces_the_corpus_and_counts_reviews_without_text(spark, cfg):
    reviews = [rv("a", "good", rating=5), rv("b", "bad", rating=1), rv("c", " ", rating=3)]
    lake.merge_insert(spark, cfg, "bronze.reviews",
                      spark.createDataFrame(reviews, schemas.BRONZE_REVIEWS), ["review_id"])
    run_review_corpus(spark, cfg)
    counts = run_review_corpus(spark, cfg)
    splits = [reference_split("a"), reference_split("b")]
    assert counts == {"reviews_read": 3, "rows": 2, "excluded_no_text": 1,
                      **{f"rows_{s}": splits.count(s) for s in ("train", "validation", "test")}}
    assert lake.read(spark, cfg, "gold.review_corpus").count() == 2
