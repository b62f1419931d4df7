"""Route every validated record to exactly one place: bronze, quarantine, or the duplicate count.

``classify`` is a pure transform; ``ingest_source`` reads one input, classifies it, writes the new
rows (MERGE on the record key, so a rerun inserts nothing) and the quarantined ones (MERGE on a
stable record id), and checks ``input = new + duplicates + quarantined`` plus the MERGE's own
inserted-row count.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import os
from dataclasses import dataclass

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from demandlake import lake
from demandlake.config import Config
from demandlake.ingest.readers import EVENT_KIND, reader_for
from demandlake.ingest.validate import Limits, validate_events, validate_reviews

log = logging.getLogger(__name__)

PSEUDONYM_KEY_ENV = "DEMANDLAKE_PSEUDONYM_KEY"
NEW, DUPLICATE, QUARANTINE = "new", "duplicate", "quarantine"
MAX_RAW_CHARS = 65_536


class ReconciliationError(RuntimeError):
    """Counts do not add up: records were lost or duplicated."""


@dataclass(frozen=True)
class KindSpec:
    table: str
    key: str
    date_col: str


KINDS = {
    EVENT_KIND: KindSpec("bronze.events", "event_id", "event_date"),
    "reviews": KindSpec("bronze.reviews", "review_id", "review_date"),
}


def hmac_sha256(key: bytes) -> "callable":
    """A Column function computing hex HMAC-SHA256(key, value) with Spark expressions only
    (RFC 2104 written out with sha2), so the key never reaches a Python UDF or the config."""
    block = 64
    if len(key) > block:
        key = hashlib.sha256(key).digest()
    key = key.ljust(block, b"\x00")
    ipad = bytes(b ^ 0x36 for b in key)
    opad = bytes(b ^ 0x5C for b in key)

    def apply(c: Column) -> Column:
        inner = F.unhex(F.sha2(F.concat(F.lit(ipad), F.encode(c, "UTF-8")), 256))
        return F.sha2(F.concat(F.lit(opad), inner), 256)

    return apply


def python_hmac(key: bytes, value: str) -> str:
    """Reference HMAC for tests and for `forget` lookups of a pseudonymized id."""
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def pseudonym_key() -> bytes:
    key = os.environ.get(PSEUDONYM_KEY_ENV, "")
    if len(key) < 16:
        raise ValueError(f"pseudonymization is on but ${PSEUDONYM_KEY_ENV} is unset or shorter "
                         "than 16 characters")
    return key.encode()


def pseudonymize(key: bytes):
    """Replace user ids with their keyed hash, in the raw text too (quarantine keeps no real id)."""
    h = hmac_sha256(key)

    def transform(df: DataFrame) -> DataFrame:
        pseudo = F.when(F.col("user_id").isNotNull(), F.concat(F.lit("p-"), F.substring(h(F.col("user_id")), 1, 32)))
        raw = F.when(F.col("user_id").isNotNull(),
                     F.replace(F.col("_raw"), F.col("user_id"), pseudo)).otherwise(F.col("_raw"))
        return df.withColumn("_raw", raw).withColumn("user_id", pseudo)

    return transform


def classify(validated: DataFrame, existing: DataFrame, key: str) -> DataFrame:
    """Add ``_dest`` (new / duplicate / quarantine) to every validated record.

    Args:
        validated: output of ``validate_events``/``validate_reviews``.
        existing: the bronze table's ``key`` and ``record_hash`` for keys already stored.
        key: record key column.

    Returns:
        ``validated`` plus ``_dest``; conflicting ids (same key, other content) become quarantine
        rows with reason ``conflicting_duplicate_id``; exact repeats count as duplicates.
    """
    good = F.col("_reason").isNull()
    # Partitioned by the key alone (valid records first) so the join below on the same key
    # reuses this shuffle instead of moving every record, raw text included, a second time.
    # For valid records the numbering and first hash are those of the valid records of the key.
    w = Window.partitionBy(F.col(key)).orderBy((~good).asc(), "record_hash", "_raw")
    ranked = validated.select(
        "*",
        F.row_number().over(w).alias("_rn"),
        F.first("record_hash").over(w).alias("_first_hash"),
    )
    stored = existing.select(F.col(key).alias("_ekey"), F.col("record_hash").alias("_stored_hash"))
    joined = ranked.join(stored, ranked[key] == stored["_ekey"], how="left")
    stored_same = F.col("_stored_hash") == F.col("record_hash")
    conflict_stored = F.col("_stored_hash").isNotNull() & ~stored_same
    repeat_in_batch = F.col("_rn") > 1
    dest = (F.when(~good, F.lit(QUARANTINE))
            .when(stored_same, F.lit(DUPLICATE))
            .when(conflict_stored, F.lit(QUARANTINE))
            .when(repeat_in_batch & (F.col("record_hash") == F.col("_first_hash")), F.lit(DUPLICATE))
            .when(repeat_in_batch, F.lit(QUARANTINE))
            .otherwise(F.lit(NEW)))
    conflict = good & (conflict_stored | (repeat_in_batch & (F.col("record_hash") != F.col("_first_hash"))))
    return joined.select(
        *[c for c in validated.columns if c not in ("_reason", "_detail")],
        F.when(conflict, F.lit("conflicting_duplicate_id")).otherwise(F.col("_reason")).alias("_reason"),
        F.when(conflict, F.concat(F.lit(f"{key} "), F.col(key),
                                  F.lit(" already seen with other content")))
        .otherwise(F.col("_detail")).alias("_detail"),
        dest.alias("_dest"),
    )


def quarantine_rows(classified: DataFrame, kind: str, source: str, run_date: dt.date) -> DataFrame:
    """The quarantined records in bronze.quarantine's shape, with a stable per-record id."""
    q = classified.where(F.col("_dest") == QUARANTINE)
    occurrence = F.row_number().over(Window.partitionBy("source_file", "_raw").orderBy("_reason"))
    return q.select(
        F.lit(kind).alias("kind"), F.lit(source).alias("source"), F.col("source_file"),
        F.sha2(F.concat_ws("\u001f", F.col("source_file"), F.col("_raw"),
                           occurrence.cast("string")), 256).alias("record_id"),
        # Invalid bytes become U+FFFD so every reader of the table can decode the text.
        F.substring(F.make_valid_utf8(F.col("_raw")), 1, MAX_RAW_CHARS).alias("raw"),
        F.col("_reason").alias("reason"), F.col("_detail").alias("detail"),
        F.lit(run_date).alias("ingest_date"),
    )


def _date_filter(col: str, dates: list) -> str | None:
    """``t.col IN (...)`` from validated date values (never from user text)."""
    real = sorted({d for d in dates if d is not None})
    if not real or len(real) > 400:
        return None
    parts = ", ".join(f"DATE'{d.isoformat()}'" for d in real)
    has_null = any(d is None for d in dates)
    return f"t.`{col}` IN ({parts})" + (f" OR t.`{col}` IS NULL" if has_null else "")


def ingest_source(spark: SparkSession, cfg: Config, fmt: str, path: str, run_date: dt.date,
                  source_name: str | None = None, timezone: str | None = None,
                  dry_run: bool = False) -> dict[str, int]:
    """Ingest one input (file, folder or glob) of format ``fmt`` into bronze.

    Returns:
        Counts: read, new, duplicates, quarantined, the quarantine count per reason, and
        ``dates``: the partition dates that received new rows.

    Raises:
        ReconciliationError: when the counts do not add up.
    """
    kind, reader = reader_for(fmt)
    ks = KINDS[kind]
    tz = timezone or cfg.get("lake.timezone", "UTC")
    limits = Limits.for_run(cfg.get("ingest") or {}, run_date, tz)
    raw = reader(spark, path)
    if cfg.get("ingest.pseudonymize_user_ids", False):
        raw = raw.transform(pseudonymize(pseudonym_key()))
    validate = validate_events if kind == EVENT_KIND else validate_reviews
    validated = raw.transform(validate(limits))
    stored = lake.read(spark, cfg, ks.table).select(ks.key, "record_hash")
    if lake.has_files(spark, cfg, ks.table):
        # Only the batch's keys are looked up (a broadcast when the batch is small). Finding
        # them parses the input a second time, so an empty table (a first load) skips it.
        existing = stored.join(validated.select(ks.key).distinct(), on=ks.key, how="left_semi")
    else:
        existing = stored
    classified = classify(validated, existing, ks.key).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        # One pass over the batch gives every count, the reasons and the dates written.
        tally = classified.groupBy("_dest", "_reason", ks.date_col).count().collect()
        by_dest: dict[str, int] = {}
        reasons: dict[str, int] = {}
        for r in tally:
            by_dest[r["_dest"]] = by_dest.get(r["_dest"], 0) + r["count"]
            if r["_dest"] == QUARANTINE:
                reasons[r["_reason"]] = reasons.get(r["_reason"], 0) + r["count"]
        dates = sorted({r[ks.date_col] for r in tally if r["_dest"] == NEW},
                       key=lambda d: (d is None, d))
        read = sum(by_dest.values())
        counts = {"read": read, "new": by_dest.get(NEW, 0),
                  "duplicates": by_dest.get(DUPLICATE, 0),
                  "quarantined": by_dest.get(QUARANTINE, 0)}
        if counts["new"] + counts["duplicates"] + counts["quarantined"] != read:
            raise ReconciliationError(f"{path}: {counts} do not add up")
        if dry_run:
            log.info("dry run: %s %s -> %s (nothing written)", fmt, path, counts)
            return {**counts, **{f"reason.{k}": v for k, v in reasons.items()}, "dates": []}
        new_rows = classified.where(F.col("_dest") == NEW).withColumn("source", F.lit(source_name or fmt))
        merged = (lake.merge_insert(spark, cfg, ks.table, new_rows, [ks.key],
                                    prune=_date_filter(ks.date_col, dates))
                  if counts["new"] else {})
        inserted = merged.get("num_inserted_rows")
        if inserted is not None and inserted != counts["new"]:
            # Another run stored some of these keys between our read and our commit: they are
            # duplicates now, not losses; the table holds each key once either way.
            log.warning("%s: expected %d new rows, MERGE inserted %d (concurrent ingest)",
                        ks.table, counts["new"], inserted)
            counts["duplicates"] += counts["new"] - inserted
            counts["new"] = inserted
        if counts["quarantined"]:
            q = quarantine_rows(classified, kind, source_name or fmt, run_date)
            lake.merge_insert(spark, cfg, "bronze.quarantine", q, ["record_id"],
                              prune=f"t.ingest_date = DATE'{run_date.isoformat()}'")
    finally:
        classified.unpersist()
    log.info("ingested %s %s: %s", fmt, path, counts)
    return {**counts, **{f"reason.{k}": v for k, v in reasons.items()},
            "dates": [d for d in dates if d is not None]}

