"""Validation: canonical string columns -> typed rows, each with the first failed check.

``validate_events`` / ``validate_reviews`` are pure transforms. They add ``_reason`` and
``_detail`` (null when the record is good) and the typed canonical columns; nothing is filtered
here, so the caller can route every record to exactly one place.

Besides the reader's columns, every input record carries its ingest context: ``_run_date`` (the
run date it is ingested under: the future bound is the end of that date), ``_source_tz`` (the zone
in which its source writes timestamps without an offset), and ``_source`` and ``_seq`` (which
input it came from, in replay order), which are passed through. Instants are UTC; ``event_date``
and ``review_date`` are their local dates in the lake's time zone (``Limits.timezone``).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Callable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from demandlake import schemas

CONTEXT_COLUMNS = ("_run_date", "_source", "_seq")
"""Ingest context that validation passes through (``_source_tz`` is only read)."""

# Date and time without any offset or zone, as Spark's cast reads them ("2017-11-25 08:00:00",
# "2026-11-14T10", "2026-11-14"): local time in the source's zone.
_NAIVE_TEXT = r"^[+-]?\d{4,}-\d{1,2}-\d{1,2}([T ]\d{1,2}(:\d{1,2}(:\d{1,2}(\.\d*)?)?)?)?$"


@dataclass(frozen=True)
class Limits:
    """Validation bounds (from the ``ingest`` config section) and the lake's time zone."""

    min_ts: dt.datetime
    max_future_hours: float = 24.0
    max_price: float = 1_000_000.0
    max_quantity: int = 10_000
    max_field_bytes: int = 65_536
    timezone: str = "UTC"

    @classmethod
    def from_config(cls, ingest_cfg: dict, timezone: str = "UTC") -> "Limits":
        """Limits from the ``ingest`` section; ``timezone`` is ``lake.timezone``."""
        min_ts = dt.datetime.fromisoformat(
            str(ingest_cfg.get("min_timestamp", "2000-01-01T00:00:00")).replace("Z", ""))
        return cls(
            min_ts=min_ts,
            max_future_hours=float(ingest_cfg.get("max_future_hours", 24)),
            max_price=float(ingest_cfg.get("max_price", 1e6)),
            max_quantity=int(ingest_cfg.get("max_quantity", 10_000)),
            max_field_bytes=int(ingest_cfg.get("max_field_bytes", 65_536)),
            timezone=timezone,
        )

    def max_ts(self, run_date: Column) -> Column:
        """The latest valid instant (UTC) for a record ingested under ``run_date``: the end of
        that date in the lake's time zone plus ``max_future_hours``."""
        end_of_day = F.to_utc_timestamp(F.date_add(run_date, 1).cast("timestamp"), self.timezone)
        ahead = int(round(self.max_future_hours * 3_600_000_000))
        return F.timestamp_micros(F.unix_micros(end_of_day) + F.lit(ahead))


def parse_timestamp(c: Column, source_tz: Column | str | None = None) -> Column:
    """Timestamp (a UTC instant) from text: Unix seconds (fractional), Unix milliseconds (13+
    digits), or ISO 8601 / ``yyyy-MM-dd HH:mm:ss[ zone]`` with an optional offset or zone.

    Args:
        c: the text.
        source_tz: the zone of text without an offset or zone (naive text); None: UTC. Text with
            ``Z``, an offset or a zone name, and epoch numbers, do not depend on it.
    """
    text = F.trim(c)
    is_number = text.rlike(r"^-?\d+(\.\d+)?$")
    num = text.try_cast("double")
    seconds = F.when(F.abs(num) >= F.lit(1e11), num / 1000.0).otherwise(num)
    # try_cast: a number of 16+ digits overflowed a long, and under ANSI mode the cast's error
    # failed the whole batch (found by the DuckDB reference's hostile inputs, 2026-12-07).
    from_number = F.timestamp_micros((seconds * 1_000_000).try_cast("long"))
    from_text = F.coalesce(
        # Only text that starts with a date: Spark's cast reads a time alone ("10:00:00") as that
        # time TODAY, so the same line got another date on every run.
        F.when(text.rlike(r"^\s*[+-]?\d{4,}-\d"), text.try_cast("timestamp")),
        # "2019-10-01 00:00:00 UTC" (REES46): zone after a space
        F.try_to_timestamp(text, F.lit("yyyy-MM-dd HH:mm:ss VV")),
        F.try_to_timestamp(text, F.lit("yyyy-MM-dd HH:mm:ss z")),
    )
    if source_tz is not None:
        # Spark reads naive text as a UTC wall clock (the session zone); shift it to the source's.
        tz = F.lit(source_tz) if isinstance(source_tz, str) else source_tz
        from_text = F.when(text.rlike(_NAIVE_TEXT), F.to_utc_timestamp(from_text, tz)).otherwise(
            from_text)
    parsed = F.when(is_number, from_number).otherwise(from_text)
    # Years 1-9999 only: beyond them no date exists in Python (or most SQL engines), and a
    # quarantined record's date is still read back for the counts (999999999999999 ms, year
    # 33658, failed the batch with "year 33658 is out of range").
    return F.when(F.unix_micros(parsed).between(_MIN_MICROS, _MAX_MICROS), parsed)


# 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999Z as Unix microseconds.
_MIN_MICROS, _MAX_MICROS = -62_135_596_800_000_000, 253_402_300_799_999_999


def _first_failure(checks: list[tuple[str, Column, Column]]) -> tuple[Column, Column]:
    """Reason and detail of the first failing check (order = priority)."""
    reason = F.lit(None).cast("string")
    detail = F.lit(None).cast("string")
    for name, failed, what in reversed(checks):
        reason = F.when(failed, F.lit(name)).otherwise(reason)
        detail = F.when(failed, what).otherwise(detail)
    return reason, detail


def _entry_bytes(k: Column, v: Column) -> Column:
    """Size of an ``extras`` entry: its value's bytes (or, absurdly, its name's, when bigger)."""
    return F.greatest(F.octet_length(k), F.coalesce(F.octet_length(v), F.lit(0)))


def _oversize(fields: list[str], limit: int) -> tuple[Column, Column]:
    """Whether a canonical field or an ``extras`` entry is over ``limit`` bytes, and which."""
    sizes = [F.coalesce(F.octet_length(F.col(f)), F.lit(0)) for f in fields]
    biggest = F.greatest(*sizes) if len(sizes) > 1 else sizes[0]
    # The first field over the limit, and ITS size (the biggest field's size was reported
    # beside the first one's name until 2026-12-07).
    which, which_size = F.lit(None).cast("string"), F.lit(None).cast("int")
    for f, s in zip(reversed(fields), reversed(sizes)):
        which = F.when(s > limit, F.lit(f)).otherwise(which)
        which_size = F.when(s > limit, s).otherwise(which_size)
    canonical = F.concat(F.lit("field "), which, F.lit(" has "), which_size.cast("string"),
                         F.lit(f" bytes > {limit}"))
    big_extras = F.map_filter(F.col("extras"), lambda k, v: _entry_bytes(k, v) > limit)
    first_big = F.try_element_at(F.map_entries(big_extras), F.lit(1))
    extra = F.concat(F.lit("extra field "), F.substring(first_big["key"], 1, 80), F.lit(" has "),
                     _entry_bytes(first_big["key"], first_big["value"]).cast("string"),
                     F.lit(f" bytes > {limit}"))
    extra_over = F.coalesce(F.size(big_extras) > 0, F.lit(False))
    return (biggest > limit) | extra_over, F.when(biggest > limit, canonical).otherwise(extra)


# Strings exports write for "no value" in id columns; an id spelled like this is missing.
ID_PLACEHOLDERS = ("null", "none", "nan", "undefined", "nil", "\\n", "n/a")


# An id of whitespace alone is no id either. (Spark's ``trim`` removes spaces only, so a user id
# of a tab was stored as a user.)
ID_WHITESPACE = " \t\n\r\f\v"


def missing_id(c: Column) -> Column:
    return (c.isNull() | F.lower(F.trim(c)).isin(*ID_PLACEHOLDERS)
            | (F.btrim(c, F.lit(ID_WHITESPACE)) == F.lit("")))


def _common_checks(df_fields: list[str], limits: Limits) -> list[tuple[str, Column, Column]]:
    over, over_detail = _oversize(df_fields, limits.max_field_bytes)
    return [
        ("malformed_record", F.col("_malformed"), F.lit("record could not be parsed")),
        ("bad_encoding", F.col("_bad_encoding"), F.lit("record is not valid UTF-8")),
        ("oversize_field", over, over_detail),
        ("non_scalar_field", F.col("_non_scalar").isNotNull(),
         F.concat(F.lit("field "), F.col("_non_scalar"),
                  F.lit(" holds an object or an array, not a string or a number"))),
    ]


def _ts_checks(limits: Limits, required: bool) -> list[tuple[str, Column, Column]]:
    ts_text, ts = F.col("timestamp"), F.col("_ts")
    max_ts = limits.max_ts(F.col("_run_date"))
    # Naive-UTC datetimes become Spark literals through the driver's local zone: say it is UTC.
    min_ts = limits.min_ts.replace(tzinfo=dt.timezone.utc)
    checks = []
    if required:
        checks.append(("missing_timestamp", ts_text.isNull(), F.lit("no timestamp")))
    checks += [
        ("bad_timestamp", ts_text.isNotNull() & ts.isNull(),
         F.concat(F.lit("unparseable timestamp: "), F.substring(ts_text, 1, 80))),
        ("timestamp_too_old", ts < F.lit(min_ts),
         F.concat(F.lit(f"before {limits.min_ts.isoformat()}: "), ts.cast("string"))),
        ("timestamp_in_future", ts > max_ts,
         F.concat(F.lit("after "), max_ts.cast("string"), F.lit(" UTC: "), ts.cast("string"))),
    ]
    return checks


def _local_date(ts: Column, tz: str) -> Column:
    return F.to_date(F.from_utc_timestamp(ts, tz))


def _content_hash(fields: list[str]) -> Column:
    parts = [F.coalesce(F.col(f).cast("string"), F.lit("\u0000")) for f in fields]
    extras = F.coalesce(F.to_json(F.col("extras")), F.lit(""))
    return F.sha2(F.concat_ws("\u001f", *parts, extras), 256)


def validate_events(limits: Limits) -> Callable[[DataFrame], DataFrame]:
    """Type and check canonical event strings; see module doc."""
    fields = schemas.RAW_EVENT_FIELDS

    def transform(df: DataFrame) -> DataFrame:
        et = F.lower(F.trim(F.col("event_type")))
        typed = df.select(
            "*",
            parse_timestamp(F.col("timestamp"), F.col("_source_tz")).alias("_ts"),
            F.col("price").try_cast("double").alias("_price"),
            F.col("quantity").try_cast("int").alias("_qty"),
            et.alias("_et"),
        )
        known = F.col("_et").isin(*schemas.EVENT_TYPES)
        checks = _common_checks(fields, limits) + [
            ("missing_user_id", missing_id(F.col("user_id")),
             F.concat(F.lit("no user id"), F.coalesce(F.concat(
                 F.lit(" (placeholder "), F.substring(F.col("user_id"), 1, 20), F.lit(")")),
                 F.lit("")))),
            ("missing_event_type", F.col("event_type").isNull(), F.lit("no event type")),
            ("unknown_event_type", ~known,
             F.concat(F.lit("event type not known: "), F.substring(F.col("event_type"), 1, 80))),
        ] + _ts_checks(limits, required=True) + [
            ("missing_item_id", missing_id(F.col("item_id")) & (F.col("_et") != "search"),
             F.lit("no item id on a non-search event")),
            ("bad_price_type", F.col("price").isNotNull() & F.col("_price").isNull(),
             F.concat(F.lit("price is not a number: "), F.substring(F.col("price"), 1, 80))),
            ("negative_price", F.col("_price") < 0,
             F.concat(F.lit("price < 0: "), F.col("price"))),
            ("absurd_price", (F.col("_price") > limits.max_price) | F.isnan(F.col("_price")),
             F.concat(F.lit(f"price > {limits.max_price:g} or NaN: "), F.col("price"))),
            ("bad_quantity_type", F.col("quantity").isNotNull() & F.col("_qty").isNull(),
             F.concat(F.lit("quantity is not an integer: "), F.substring(F.col("quantity"), 1, 80))),
            ("bad_quantity", (F.col("_qty") <= 0) | (F.col("_qty") > limits.max_quantity),
             F.concat(F.lit(f"quantity outside 1..{limits.max_quantity}: "), F.col("quantity"))),
        ]
        reason, detail = _first_failure(checks)
        out = typed.select(
            F.col("event_id"), F.trim(F.col("user_id")).alias("user_id"), F.col("session_id"),
            F.col("_et").alias("event_type"), F.col("item_id"), F.col("category"), F.col("brand"),
            F.col("_price").alias("price"), F.col("_qty").alias("quantity"),
            F.col("search_query"), F.col("_ts").alias("event_ts"), F.col("extras"),
            F.col("source_file"), F.col("_raw"), reason.alias("_reason"), detail.alias("_detail"),
            *CONTEXT_COLUMNS,
        )
        hashed = out.withColumn("record_hash", _content_hash(
            ["user_id", "session_id", "event_type", "item_id", "category", "brand", "price",
             "quantity", "search_query", "event_ts"]))
        return hashed.select(
            "*",
            F.coalesce(F.col("event_id"), F.concat(F.lit("h-"), F.substring("record_hash", 1, 32)))
            .alias("_key"),
            _local_date(F.col("event_ts"), limits.timezone).alias("event_date"),
        ).drop("event_id").withColumnRenamed("_key", "event_id")

    return transform


def validate_reviews(limits: Limits) -> Callable[[DataFrame], DataFrame]:
    """Type and check canonical review strings; see module doc."""
    fields = schemas.RAW_REVIEW_FIELDS

    def transform(df: DataFrame) -> DataFrame:
        typed = df.select(
            "*",
            parse_timestamp(F.col("timestamp"), F.col("_source_tz")).alias("_ts"),
            F.trim(F.col("rating")).try_cast("double").alias("_rating_d"),
            F.trim(F.col("label")).try_cast("int").alias("_label"),
        )
        rating_ok_type = F.col("_rating_d").isNotNull() & (F.col("_rating_d") == F.floor("_rating_d"))
        checks = _common_checks(fields, limits) + [
            ("bad_rating_type", F.col("rating").isNotNull() & ~rating_ok_type,
             F.concat(F.lit("rating is not an integer: "), F.substring(F.col("rating"), 1, 80))),
            ("rating_out_of_range", (F.col("_rating_d") < 1) | (F.col("_rating_d") > 5),
             F.concat(F.lit("rating outside 1-5: "), F.col("rating"))),
            ("bad_label", F.col("label").isNotNull() & ~F.coalesce(F.col("_label").isin(0, 1), F.lit(False)),
             F.concat(F.lit("label not 0/1: "), F.substring(F.col("label"), 1, 80))),
            ("missing_rating", F.col("rating").isNull() & F.col("label").isNull(),
             F.lit("neither rating nor label")),
        ] + _ts_checks(limits, required=False)
        reason, detail = _first_failure(checks)
        out = typed.select(
            # reviews may be anonymous: a placeholder id is no id
            F.col("review_id"),
            F.when(~missing_id(F.col("user_id")), F.trim(F.col("user_id"))).alias("user_id"),
            F.when(~missing_id(F.col("item_id")), F.col("item_id")).alias("item_id"),
            F.col("category"), F.col("_rating_d").cast("int").alias("rating"),
            F.col("_label").alias("label"), F.col("title"), F.col("text"),
            F.lower(F.trim(F.col("language"))).alias("language"), F.col("_ts").alias("review_ts"),
            F.col("extras"), F.col("source_file"), F.col("_raw"),
            reason.alias("_reason"), detail.alias("_detail"), *CONTEXT_COLUMNS,
        )
        hashed = out.withColumn("record_hash", _content_hash(
            ["user_id", "item_id", "category", "rating", "label", "title", "text", "language",
             "review_ts"]))
        return hashed.select(
            "*",
            F.coalesce(F.col("review_id"), F.concat(F.lit("h-"), F.substring("record_hash", 1, 32)))
            .alias("_key"),
            _local_date(F.col("review_ts"), limits.timezone).alias("review_date"),
        ).drop("review_id").withColumnRenamed("_key", "review_id")

    return transform
