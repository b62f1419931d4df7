"""Readers: one per raw format, each mapping its columns to the canonical string columns.

Every reader returns the same shape (``READER_COLUMNS``): the canonical fields as strings, an
``extras`` map, the raw record text, the file it came from, and ``_malformed`` (true when the record
could not be parsed at all). Types are checked later, in ``validate``, so a wrong type becomes a
quarantine reason instead of a failed read. Readers never drop a record.
"""
from __future__ import annotations

from typing import Callable

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from demandlake import schemas

EVENT_KIND, REVIEW_KIND = "events", "reviews"

_STR_MAP = T.MapType(T.StringType(), T.StringType())


def _blank_to_null(c: Column) -> Column:
    return F.when(F.trim(c) == "", F.lit(None)).otherwise(c)


def _finish(df: DataFrame, fields: list[str], mapping: dict[str, Column], extras: Column,
            raw: Column, malformed: Column) -> DataFrame:
    cols = [_blank_to_null(mapping.get(f, F.lit(None).cast("string"))).cast("string").alias(f)
            for f in fields]
    return df.select(
        *cols,
        extras.alias("extras"),
        raw.alias("_raw"),
        F.col("_metadata.file_path").alias("source_file"),
        malformed.alias("_malformed"),
    )


# ---- JSON lines (canonical formats) ------------------------------------------------------------
def _read_jsonl(spark: SparkSession, path: str, fields: list[str]) -> DataFrame:
    lines = spark.read.text(path).select("value", "_metadata")
    # Blank lines carry no record (counted separately by the caller through the same filter).
    lines = lines.where(F.trim(F.col("value")) != "")
    # Parse each object as map<string,string>: any scalar becomes its text, nested values their JSON,
    # so a wrong type is caught by validation; a non-object or broken line parses to null.
    parsed = lines.withColumn(
        "_m", F.from_json(F.col("value"), _STR_MAP, {"mode": "PERMISSIVE"}))
    m = F.col("_m")
    known = F.array(*[F.lit(f) for f in fields])
    extras = F.map_filter(m, lambda k, v: ~F.array_contains(known, k))
    extras = F.when(F.size(extras) > 0, extras)
    mapping = {f: m.getItem(f) for f in fields}
    return _finish(parsed, fields, mapping, extras, F.col("value"), m.isNull())


def read_canonical_events(spark: SparkSession, path: str) -> DataFrame:
    return _read_jsonl(spark, path, schemas.RAW_EVENT_FIELDS)


def read_canonical_reviews(spark: SparkSession, path: str) -> DataFrame:
    return _read_jsonl(spark, path, schemas.RAW_REVIEW_FIELDS)


# ---- delimited formats -------------------------------------------------------------------------
def _read_csv(spark: SparkSession, path: str, schema: T.StructType, *, header: bool,
              sep: str = ",", multiline: bool = False) -> DataFrame:
    with_corrupt = T.StructType(schema.fields + [T.StructField("_corrupt", T.StringType())])
    return (
        spark.read.schema(with_corrupt)
        .option("header", header).option("sep", sep).option("multiLine", multiline)
        .option("mode", "PERMISSIVE").option("columnNameOfCorruptRecord", "_corrupt")
        .option("escape", '"').option("encoding", "UTF-8")
        .csv(path)
        .select("*", "_metadata")
    )


def _raw_csv(schema: T.StructType, sep: str) -> Column:
    """The record as text: the corrupt text when malformed, else the fields re-joined."""
    joined = F.concat_ws(sep, *[F.coalesce(F.col(f"`{f.name}`"), F.lit("")) for f in schema.fields])
    return F.coalesce(F.col("_corrupt"), joined)


def _extras(**cols: Column) -> Column:
    pairs = []
    for k, c in cols.items():
        pairs += [F.lit(k), c.cast("string")]
    m = F.map_filter(F.create_map(*pairs), lambda k, v: v.isNotNull() & (F.trim(v) != ""))
    return F.when(F.size(m) > 0, m)


def read_taobao(spark: SparkSession, path: str) -> DataFrame:
    """Taobao UserBehavior: ``user_id,item_id,category_id,behavior_type,timestamp`` (no header)."""
    df = _read_csv(spark, path, schemas.TAOBAO_RAW, header=False)
    behaviour = F.lower(F.trim(F.col("behavior_type")))
    event_type = (F.when(behaviour == "pv", "view").when(behaviour == "buy", "purchase")
                  .otherwise(behaviour))
    mapping = {"user_id": F.col("user_id"), "item_id": F.col("item_id"),
               "category": F.col("category_id"), "event_type": event_type,
               "timestamp": F.col("timestamp")}
    return _finish(df, schemas.RAW_EVENT_FIELDS, mapping, F.lit(None).cast(_STR_MAP),
                   _raw_csv(schemas.TAOBAO_RAW, ","), F.col("_corrupt").isNotNull())


def read_yoochoose(spark: SparkSession, path: str) -> DataFrame:
    """YooChoose clicks (session-rec's prepared TSV: ``SessionId ItemId Time``).

    YooChoose has no user ids: each session stands for an anonymous user (``yc-<session>``).
    """
    df = _read_csv(spark, path, schemas.YOOCHOOSE_RAW, header=True, sep="\t")
    mapping = {"user_id": F.concat(F.lit("yc-"), F.col("SessionId")),
               "session_id": F.col("SessionId"), "item_id": F.col("ItemId"),
               "event_type": F.lit("view"), "timestamp": F.col("Time")}
    return _finish(df, schemas.RAW_EVENT_FIELDS, mapping, F.lit(None).cast(_STR_MAP),
                   _raw_csv(schemas.YOOCHOOSE_RAW, "\t"), F.col("_corrupt").isNotNull())


def read_rees46(spark: SparkSession, path: str) -> DataFrame:
    """REES46 multi-category store export (header ``event_time,event_type,product_id,...``)."""
    df = _read_csv(spark, path, schemas.REES46_RAW, header=True)
    category = F.coalesce(_blank_to_null(F.col("category_code")), F.col("category_id"))
    mapping = {"user_id": F.col("user_id"), "session_id": F.col("user_session"),
               "event_type": F.lower(F.trim(F.col("event_type"))), "item_id": F.col("product_id"),
               "category": category, "brand": F.col("brand"), "price": F.col("price"),
               "timestamp": F.col("event_time")}
    return _finish(df, schemas.RAW_EVENT_FIELDS, mapping, _extras(category_id=F.col("category_id")),
                   _raw_csv(schemas.REES46_RAW, ","), F.col("_corrupt").isNotNull())


def read_retailrocket(spark: SparkSession, path: str) -> DataFrame:
    """Retailrocket ``events.csv`` (``timestamp`` in Unix milliseconds)."""
    df = _read_csv(spark, path, schemas.RETAILROCKET_RAW, header=True)
    ev = F.lower(F.trim(F.col("event")))
    event_type = (F.when(ev == "addtocart", "cart").when(ev == "transaction", "purchase")
                  .otherwise(ev))
    mapping = {"user_id": F.col("visitorid"), "item_id": F.col("itemid"),
               "event_type": event_type, "timestamp": F.col("timestamp")}
    return _finish(df, schemas.RAW_EVENT_FIELDS, mapping,
                   _extras(transaction_id=F.col("transactionid")),
                   _raw_csv(schemas.RETAILROCKET_RAW, ","), F.col("_corrupt").isNotNull())


def read_reviews_zh(spark: SparkSession, path: str) -> DataFrame:
    """ChineseNlpCorpus online_shopping_10_cats: ``cat,label,review`` (label 1 pos, 0 neg)."""
    df = _read_csv(spark, path, schemas.REVIEWS_ZH_RAW, header=True, multiline=True)
    mapping = {"category": F.col("cat"), "label": F.col("label"), "text": F.col("review"),
               "language": F.lit("zh")}
    return _finish(df, schemas.RAW_REVIEW_FIELDS, mapping, F.lit(None).cast(_STR_MAP),
                   _raw_csv(schemas.REVIEWS_ZH_RAW, ","), F.col("_corrupt").isNotNull())


def read_reviews_en(spark: SparkSession, path: str) -> DataFrame:
    """Women's clothing e-commerce reviews (quoted multi-line CSV with an unnamed index column)."""
    df = _read_csv(spark, path, schemas.REVIEWS_EN_RAW, header=True, multiline=True)
    mapping = {"review_id": F.concat(F.lit("wc-"), F.col("_c0")),
               "item_id": F.col("`Clothing ID`"), "category": F.col("`Class Name`"),
               "rating": F.col("Rating"), "title": F.col("Title"), "text": F.col("`Review Text`"),
               "language": F.lit("en")}
    extras = _extras(age=F.col("Age"), recommended=F.col("`Recommended IND`"),
                     positive_feedback=F.col("`Positive Feedback Count`"),
                     division=F.col("`Division Name`"), department=F.col("`Department Name`"))
    return _finish(df, schemas.RAW_REVIEW_FIELDS, mapping, extras,
                   _raw_csv(schemas.REVIEWS_EN_RAW, ","), F.col("_corrupt").isNotNull())


READERS: dict[str, tuple[str, Callable[[SparkSession, str], DataFrame]]] = {
    "canonical_events": (EVENT_KIND, read_canonical_events),
    "canonical_reviews": (REVIEW_KIND, read_canonical_reviews),
    "taobao": (EVENT_KIND, read_taobao),
    "yoochoose": (EVENT_KIND, read_yoochoose),
    "rees46": (EVENT_KIND, read_rees46),
    "retailrocket": (EVENT_KIND, read_retailrocket),
    "reviews_zh": (REVIEW_KIND, read_reviews_zh),
    "reviews_en": (REVIEW_KIND, read_reviews_en),
}


def reader_for(fmt: str) -> tuple[str, Callable[[SparkSession, str], DataFrame]]:
    """(kind, reader) for a format name; a clear error for an unknown one."""
    try:
        return READERS[fmt]
    except KeyError:
        raise ValueError(f"unknown input format {fmt!r}; known: {sorted(READERS)}") from None
