"""Readers: one per raw format, each mapping its columns to the canonical string columns.

Every reader returns the same shape: the canonical fields as strings, an ``extras`` map, the raw
record text (``_raw``), the file it came from, ``_malformed`` (true when the record could not be
parsed at all), ``_bad_encoding`` (the raw bytes were not valid UTF-8) and ``_non_scalar`` (the
first id field that held a JSON object or array instead of a string or number; null for delimited
formats). Types are checked later, in ``validate``, so a wrong type becomes a quarantine reason
instead of a failed read. Readers never drop a record.

``raw_with_user_id`` knows where each format's raw text holds the user id, so that
pseudonymization can replace that value and nothing else.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from demandlake import schemas

EVENT_KIND, REVIEW_KIND = "events", "reviews"
REPLACEMENT_CHAR = "\ufffd"

_STR_MAP = T.MapType(T.StringType(), T.StringType())


def _blank_to_null(c: Column) -> Column:
    return F.when(F.trim(c) == "", F.lit(None)).otherwise(c)


def _finish(df: DataFrame, fields: list[str], mapping: dict[str, Column], extras: Column,
            raw: Column, malformed: Column, non_scalar: Column | None = None) -> DataFrame:
    cols = [_blank_to_null(mapping.get(f, F.lit(None).cast("string"))).cast("string").alias(f)
            for f in fields]
    return df.select(
        *cols,
        extras.alias("extras"),
        raw.alias("_raw"),
        F.col("_metadata.file_path").alias("source_file"),
        malformed.alias("_malformed"),
        # Spark's text reader keeps invalid bytes as they are; the CSV reader replaces them.
        (~F.is_valid_utf8(raw) | raw.contains(REPLACEMENT_CHAR)).alias("_bad_encoding"),
        (F.lit(None).cast("string") if non_scalar is None else non_scalar).alias("_non_scalar"),
    )


# ---- JSON lines (canonical formats) ------------------------------------------------------------
def _id_fields(fields: list[str]) -> list[str]:
    return [f for f in fields if f.endswith("_id")]


def _non_scalar(line: Column, m: Column, fields: list[str]) -> Column:
    """The first id field whose JSON value is an object or an array (null when none is).

    The map<string,string> parse gives a nested value as its JSON text, the same text as a string
    that happens to look like JSON. Only lines with an id starting with ``{`` or ``[`` are parsed
    again, as a variant (which keeps the JSON types), to tell the two apart. When that parse fails
    (duplicate keys, say) such a value counts as nested: quarantined rather than stored as an id.
    """
    ids = _id_fields(fields)
    looks_nested = {f: F.ltrim(m.getItem(f)).startswith("{") | F.ltrim(m.getItem(f)).startswith("[")
                    for f in ids}
    variant = F.try_parse_json(line)
    first = F.lit(None).cast("string")
    for f in reversed(ids):
        kind = F.schema_of_variant(F.variant_get(variant, f"$.{f}", "variant"))
        nested = variant.isNull() | kind.startswith("OBJECT") | kind.startswith("ARRAY")
        first = F.when(looks_nested[f] & nested, F.lit(f)).otherwise(first)
    any_nested = looks_nested[ids[0]]
    for f in ids[1:]:
        any_nested = any_nested | looks_nested[f]
    # The variant parse runs only under this condition (a CASE value is evaluated lazily).
    return F.when(any_nested, first)


# The object after each JSON line inside the brackets (see _read_jsonl): a key no record uses.
_END_KEY = "\u0001end"
_END_MARKER = ",{" + json.dumps(_END_KEY) + ': ""}'


def _read_jsonl(spark: SparkSession, path: str, fields: list[str]) -> DataFrame:
    lines = spark.read.text(path).select("value", "_metadata")
    # Blank lines carry no record (counted separately by the caller through the same filter).
    lines = lines.where(F.trim(F.col("value")) != "")
    # Parse each object as map<string,string>: any scalar becomes its text, nested values their JSON,
    # so a wrong type is caught by validation; a non-object or broken line parses to null.
    # from_json reads a text's FIRST value and ignores what follows it, so a line is parsed inside
    # brackets, as an array that must hold exactly the line's object and then an end marker:
    # `{..}{..}` (no comma) does not parse, `{..},{..}` gives three elements, and a line that
    # closes the brackets itself (`{..}],[{..}`, `{..}]`) leaves the marker out; each was one
    # record with the rest dropped in silence. (Only a line that spells the marker object itself
    # can still hide text after it.)
    objects = F.from_json(F.concat(F.lit("["), F.col("value"), F.lit(_END_MARKER + "]")),
                          T.ArrayType(_STR_MAP), {"mode": "PERMISSIVE"})
    ends = (F.size(objects) == 2) & objects.getItem(1).getItem(_END_KEY).isNotNull()
    parsed = lines.withColumn("_m", F.when(ends, objects.getItem(0)))
    m = F.col("_m")
    known = F.array(*[F.lit(f) for f in fields])
    extras = F.map_filter(m, lambda k, v: ~F.array_contains(known, k))
    extras = F.when(F.size(extras) > 0, extras)
    mapping = {f: m.getItem(f) for f in fields}
    # A key named twice is malformed too: which value is meant is unknown (from_json keeps both
    # in the map: the fields took the first, and the stored extras map held the key twice,
    # which other readers of the Parquet refuse: DuckDB's "Map keys must be unique").
    repeated_key = F.size(F.array_distinct(F.map_keys(m))) < F.size(m)
    return _finish(parsed, fields, mapping, extras, F.col("value"),
                   m.isNull() | repeated_key,
                   _non_scalar(F.col("value"), m, fields))


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


# ---- where the raw text holds the user id (pseudonymization) ------------------------------------
@dataclass(frozen=True)
class UserField:
    """Where a format's raw record text holds the user id: the key of a JSON object, or the
    column ``index`` of a line of ``columns`` fields separated by ``sep``. ``session_is_user``:
    the format's session id is its user id (pseudonymized with it)."""

    json_key: str | None = None
    sep: str | None = None
    index: int = 0
    columns: int = 0
    session_is_user: bool = False


def _column(schema: T.StructType, sep: str, name: str, session_is_user: bool = False
            ) -> UserField:
    return UserField(sep=sep, index=schema.fieldNames().index(name), columns=len(schema.fields),
                     session_is_user=session_is_user)


USER_FIELDS: dict[str, UserField | None] = {
    "canonical_events": UserField(json_key="user_id"),
    "canonical_reviews": UserField(json_key="user_id"),
    "taobao": _column(schemas.TAOBAO_RAW, ",", "user_id"),
    # YooChoose's user is its session (``yc-<SessionId>``): the session column is the id.
    "yoochoose": _column(schemas.YOOCHOOSE_RAW, "\t", "SessionId", session_is_user=True),
    "rees46": _column(schemas.REES46_RAW, ",", "user_id"),
    "retailrocket": _column(schemas.RETAILROCKET_RAW, ",", "visitorid"),
    "reviews_zh": None,
    "reviews_en": None,
}

# JSON tokens for a regular expression that walks an object's top level (possessive, so a long
# line costs linear time): a string, and an object or array nested up to _JSON_DEPTH levels.
_JSON_STRING = r'"(?:[^"\\]++|\\.)*+"'
_JSON_DEPTH = 3


def _json_container(depth: int) -> str:
    nested = "|" + _json_container(depth - 1) if depth > 1 else ""
    inner = r'[^"{}\[\]]++|' + _JSON_STRING + nested
    return r"(?:\{(?:" + inner + r")*+\}|\[(?:" + inner + r")*+\])"


def _json_value_pattern(key: str) -> str:
    """A regex whose group 1 is everything up to the value of the top-level ``key`` of a JSON
    object, and whose match ends where that value ends. Keys of nested objects and text inside
    strings never match: the walk steps over whole strings and containers."""
    quoted = json.dumps(key)
    other = (r'[^"{}\[\]]++|(?!' + quoted + r"\s*+:)" + _JSON_STRING + "|"
             + _json_container(_JSON_DEPTH))
    value = _JSON_STRING + "|" + _json_container(_JSON_DEPTH) + r'|[^\s,{}\[\]"]++'
    return (r"(?s)^(\s*+\{(?:" + other + r")*+" + quoted + r"\s*+:\s*+)(?:" + value + ")")


def raw_with_user_id(fmt: str, pseudonym: Column) -> Column:
    """The reader's ``_raw`` text with the user id's value replaced by ``pseudonym`` and nothing
    else changed; null when the value cannot be located with certainty.

    JSON lines: the value of the top-level user id key becomes the JSON string ``pseudonym``; the
    result must parse back to exactly one such key holding ``pseudonym`` (an escaped key, a
    duplicate key or a value nested too deep fails this). Delimited lines: the user id column
    becomes ``pseudonym`` when the line splits into exactly its columns. A malformed record gives
    null. A format without a user id gives ``_raw`` unchanged.

    Args:
        fmt: the input format (``READERS``).
        pseudonym: the replacement value (a column).
    """
    where = USER_FIELDS.get(fmt)
    raw = F.col("_raw")
    if where is None:
        return raw
    if where.json_key is not None:
        replaced = F.regexp_replace(raw, F.lit(_json_value_pattern(where.json_key)),
                                    F.concat(F.lit('$1"'), pseudonym, F.lit('"')))
        back = F.from_json(replaced, _STR_MAP, {"mode": "PERMISSIVE"})
        once = F.size(F.filter(F.map_keys(back), lambda k: k == where.json_key)) == 1
        located = once & (back.getItem(where.json_key) == pseudonym)
    else:
        parts = F.split(raw, "\\Q" + where.sep + "\\E", -1)
        replaced = F.array_join(
            F.transform(parts, lambda x, i: F.when(i == where.index, pseudonym).otherwise(x)),
            where.sep)
        located = F.size(parts) == where.columns
    return F.when(~F.col("_malformed") & located, replaced)
