"""The sentiment model's corpus (gold.review_corpus) from bronze.reviews.

* text: U+FEFF (byte-order marks, also mis-decoded as "ï»¿") and zero-width spaces removed,
  the common HTML entities unescaped once (``&amp;lt;`` becomes ``&lt;``, not ``<``), every run of
  white space (including no-break and ideographic spaces) collapsed to one space, trimmed. A
  non-empty title is put first, joined with ". " (or a space when it already ends a sentence).
* reviews whose body text is empty after normalization are excluded (the stage counts them).
* language: the source's, else "zh" when CJK ideographs are more than 30% of the characters,
  else "en".
* label: the source's explicit label, else from the rating (1-2 -> 0, 4-5 -> 1, 3 -> null:
  neutral reviews stay in the corpus but out of binary training).
* split: from the first 32 bits of sha2(review_id) as a number in [0, 1), against the cumulative
  ``reviews.split`` fractions: the same review always lands in the same split, in any tool.
"""
from __future__ import annotations

from typing import Callable, Mapping

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from demandlake.features.sequences import normalized_fractions

# Entities unescaped, in order; &amp; last so that escaped entities are unescaped only once.
HTML_ENTITIES = (
    ("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&#39;", "'"), ("&#039;", "'"),
    ("&apos;", "'"), ("&nbsp;", " "), ("&amp;", "&"),
)
CJK_SHARE_FOR_ZH = 0.3
_NOT_CJK = "[^\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]"
_SENTENCE_END = r"[.!?\u3002\uff01\uff1f]$"

CORPUS_COLUMNS = ["review_id", "user_id", "item_id", "category", "source", "rating", "label",
                  "language", "text", "n_chars", "split"]


def normalize_text(c: Column) -> Column:
    """Clean review text (see module doc); empty results become null."""
    text = F.regexp_replace(c, "\ufeff|\u00ef\u00bb\u00bf|\u200b", "")
    for entity, char in HTML_ENTITIES:
        text = F.replace(text, F.lit(entity), F.lit(char))
    text = F.trim(F.regexp_replace(text, "[\\s\u00a0\u3000]+", " "))
    return F.when(text != "", text)


def cjk_share(text: Column) -> Column:
    """Share of CJK ideographs among the characters of ``text``."""
    cjk = F.length(F.regexp_replace(text, _NOT_CJK, ""))
    return F.try_divide(cjk.cast("double"), F.length(text))


def detect_language(text: Column) -> Column:
    """"zh" when CJK ideographs are more than 30% of the characters, else "en"."""
    return F.when(cjk_share(text) > CJK_SHARE_FOR_ZH, F.lit("zh")).otherwise(F.lit("en"))


def sentiment_label(label: Column, rating: Column) -> Column:
    """The explicit label, else rating 1-2 -> 0, 4-5 -> 1 (3 and unknown -> null)."""
    from_rating = F.when(rating <= 2, F.lit(0)).when(rating >= 4, F.lit(1))
    return F.coalesce(label.cast("int"), from_rating)


def hash_split(key: Column, fractions: Mapping[str, float]) -> Column:
    """Deterministic split name from a key: first 32 bits of sha2-256 as a fraction of 2^32."""
    shares = normalized_fractions(fractions)
    u = F.conv(F.substring(F.sha2(key, 256), 1, 8), 16, 10).cast("double") / F.lit(2.0 ** 32)
    train_end = shares["train"]
    validation_end = train_end + shares["validation"]
    return (F.when(u < F.lit(train_end), F.lit("train"))
            .when(u < F.lit(validation_end), F.lit("validation"))
            .otherwise(F.lit("test")))


def has_text(reviews: DataFrame) -> DataFrame:
    """Reviews whose body text is not empty after normalization (the corpus's input rows)."""
    return reviews.where(normalize_text(F.col("text")).isNotNull())


def review_corpus(split_fractions: Mapping[str, float]) -> Callable[[DataFrame], DataFrame]:
    """bronze.reviews -> gold.review_corpus rows (reviews without text dropped).

    Args:
        split_fractions: ``{"train": .8, "validation": .1, "test": .1}``.

    Returns:
        A transform producing ``CORPUS_COLUMNS``.

    Raises:
        ValueError: for bad fractions.
    """
    normalized_fractions(split_fractions)

    def transform(reviews: DataFrame) -> DataFrame:
        body, title = normalize_text(F.col("text")), normalize_text(F.col("title"))
        separator = F.when(title.rlike(_SENTENCE_END), F.lit(" ")).otherwise(F.lit(". "))
        text = F.when(title.isNull(), body).otherwise(F.concat(title, separator, body))
        source_language = F.lower(F.trim(F.col("language")))
        prepared = reviews.where(body.isNotNull()).withColumn("_text", text)
        return prepared.select(
            "review_id", "user_id", "item_id", "category", "source", "rating",
            sentiment_label(F.col("label"), F.col("rating")).alias("label"),
            F.coalesce(F.when(source_language != "", source_language),
                       detect_language(F.col("_text"))).alias("language"),
            F.col("_text").alias("text"),
            F.char_length("_text").alias("n_chars"),
            hash_split(F.col("review_id"), split_fractions).alias("split"),
        )

    return transform
