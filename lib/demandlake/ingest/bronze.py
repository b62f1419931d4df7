"""Route every validated record to exactly one place: bronze, quarantine, or the duplicate count.

``classify`` is a pure transform. ``ingest_inputs`` reads inputs of one kind (each a file, folder
or glob under its own run date), classifies them in one batch, writes the new rows (MERGE on the
record key, so a rerun inserts nothing) and the quarantined ones (MERGE on a stable record id),
and checks ``input = new + duplicates + quarantined`` plus the MERGE's own inserted-row count.
A batch of several inputs stores exactly what ingesting them one by one, in their order, would:
records are ranked by input first, so the first input to bring an id wins it. ``ingest_source``
ingests a single input.
"""
from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import logging
import os
import re
from dataclasses import dataclass

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from demandlake import lake
from demandlake.config import Config
from demandlake.ingest.readers import EVENT_KIND, USER_FIELDS, raw_with_user_id, reader_for
from demandlake.ingest.validate import Limits, missing_id, validate_events, validate_reviews

log = logging.getLogger(__name__)

PSEUDONYM_KEY_ENV = "DEMANDLAKE_PSEUDONYM_KEY"
NEW, DUPLICATE, QUARANTINE = "new", "duplicate", "quarantine"
MAX_RAW_CHARS = 65_536
WITHHELD = "raw text withheld: its user id could not be located to pseudonymize it"


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


@dataclass(frozen=True)
class Input:
    """One input as a day-by-day ingest reads it in one go.

    Attributes:
        fmt: input format (``readers.READERS``).
        path: file, folder or glob.
        run_date: the run date it is ingested under (future bound, quarantine ``ingest_date``).
        source: source name, stored in ``source``.
        timezone: zone in which the source writes timestamps without an offset or zone (None: UTC).
    """

    fmt: str
    path: str
    run_date: dt.date
    source: str
    timezone: str | None = None


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


def pseudonymize(key: bytes, fmt: str):
    """Replace user ids with their keyed hash, in the raw text too (quarantine keeps no real id).

    Only the user id's own value in the raw text changes (``readers.raw_with_user_id``). Where
    that value cannot be located with certainty (a record that cannot be parsed, say), the raw
    text is withheld (null) rather than kept with the real id; quarantine says so in its detail.
    Placeholder ids (``null``, ``n/a``, ...) stay as they are, so validation still sees them.

    Args:
        key: the HMAC key.
        fmt: the input format, which says where its raw text holds the user id.
    """
    h = hmac_sha256(key)

    def transform(df: DataFrame) -> DataFrame:
        user = F.trim(F.col("user_id"))
        real = ~missing_id(F.col("user_id"))
        pseudo = F.when(real, F.concat(F.lit("p-"), F.substring(h(user), 1, 32)))
        raw = (F.when(F.col("_malformed"), F.lit(None).cast("string"))
               .when(real, raw_with_user_id(fmt, pseudo))
               .otherwise(F.col("_raw")))
        # New names first: Spark 4.2 resolves a name inside a lambda function (the CSV rewrite)
        # against an alias of the same select list, so "user_id" there would be the pseudonym.
        renamed = {"_raw": "_pseudo_raw", "user_id": "_pseudo_user"}
        extra = []
        field = USER_FIELDS.get(fmt)
        if field is not None and field.session_is_user:
            # YooChoose: the session id IS the user (user_id yc-<SessionId>); kept as it came, it
            # would give the real id back beside its pseudonym. It takes the same pseudonym, so
            # the sessions still group as before.
            renamed["session_id"] = "_pseudo_session"
            extra.append(F.when(real, pseudo).otherwise(F.col("session_id"))
                         .alias("_pseudo_session"))
        staged = df.select("*", raw.alias("_pseudo_raw"),
                           F.when(real, pseudo).otherwise(F.col("user_id")).alias("_pseudo_user"),
                           *extra)
        return staged.select(*[F.col(renamed.get(c, c)).alias(c) for c in df.columns])

    return transform


def classify(validated: DataFrame, existing: DataFrame, key: str) -> DataFrame:
    """Add ``_dest`` (new / duplicate / quarantine) to every validated record.

    Args:
        validated: output of ``validate_events``/``validate_reviews`` (with ``_seq``, the
            record's input in replay order).
        existing: the bronze table's ``key`` and ``record_hash`` for keys already stored.
        key: record key column.

    Returns:
        ``validated`` plus ``_dest``. Per key, the first valid record of the earliest input (then
        the smallest hash) is new unless the key is stored; conflicting ids (same key, other
        content than the stored or the first record) become quarantine rows with reason
        ``conflicting_duplicate_id``; exact repeats count as duplicates. So one batch of several
        inputs classifies as ingesting the inputs one by one, in ``_seq`` order, would.
    """
    good = F.col("_reason").isNull()
    # Partitioned by the key alone (valid records first) so the join below on the same key
    # reuses this shuffle instead of moving every record, raw text included, a second time.
    # For valid records the numbering and first hash are those of the valid records of the key.
    w = Window.partitionBy(F.col(key)).orderBy((~good).asc(), "_seq", "record_hash", "_raw",
                                               "source_file")
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


def quarantine_rows(classified: DataFrame, kind: str) -> DataFrame:
    """The quarantined records in bronze.quarantine's shape, with a stable per-record id.

    The id hashes the file, the raw text and the occurrence of that text in the file, so the same
    record gets the same id whatever run date ingests it; ``ingest_date`` is the record's
    ``_run_date``.
    """
    q = classified.where(F.col("_dest") == QUARANTINE)
    # Same text in the same file: numbered by reason and detail, the only columns that can differ.
    occurrence = F.row_number().over(
        Window.partitionBy("source_file", "_raw").orderBy("_reason", "_detail"))
    withheld = F.col("_raw").isNull()
    return q.select(
        F.lit(kind).alias("kind"), F.col("_source").alias("source"), F.col("source_file"),
        F.sha2(F.concat_ws("\u001f", F.col("source_file"), F.col("_raw"),
                           occurrence.cast("string")), 256).alias("record_id"),
        # Invalid bytes become U+FFFD so every reader of the table can decode the text.
        F.substring(F.make_valid_utf8(F.col("_raw")), 1, MAX_RAW_CHARS).alias("raw"),
        F.col("_reason").alias("reason"),
        F.when(withheld, F.concat_ws("; ", F.col("_detail"), F.lit(WITHHELD)))
        .otherwise(F.col("_detail")).alias("detail"),
        F.col("_run_date").alias("ingest_date"),
    )


def _date_filter(col: str, dates: list) -> str | None:
    """``t.col IN (...)`` from validated date values (never from user text)."""
    real = sorted({d for d in dates if d is not None})
    if not real or len(real) > 400:
        return None
    parts = ", ".join(f"DATE'{d.isoformat()}'" for d in real)
    has_null = any(d is None for d in dates)
    return f"t.`{col}` IN ({parts})" + (f" OR t.`{col}` IS NULL" if has_null else "")


def _sql_string(text: str) -> str:
    """A Spark SQL string literal for any text (backslash escapes are on by default)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _file_filter(files: list[str]) -> str:
    """``t.source_file IN (...)``: the only rows a record id of these files can match."""
    return "t.`source_file` IN (" + ", ".join(_sql_string(f) for f in sorted(files)) + ")"


def _read(spark: SparkSession, cfg: Config, inp: Input, seq: int) -> DataFrame:
    """One input's records as its reader gives them, pseudonymized when configured, with its
    ingest context (``validate.CONTEXT_COLUMNS`` and ``_source_tz``)."""
    _, reader = reader_for(inp.fmt)
    raw = reader(spark, inp.path)
    if cfg.get("ingest.pseudonymize_user_ids", False):
        raw = raw.transform(pseudonymize(pseudonym_key(), inp.fmt))
    return raw.select(
        "*",
        F.lit(inp.run_date).alias("_run_date"),
        F.lit(inp.source).alias("_source"),
        F.lit(inp.timezone or "UTC").alias("_source_tz"),
        F.lit(seq).alias("_seq"),
    )


# Characters a path segment may hold around the run date for the date to be read back from the
# file's URI (``_metadata.file_path`` percent-encodes others, spaces say).
_PLAIN_SEGMENT = re.compile(r"^[A-Za-z0-9_.=-]*$")


def _date_in_path(inputs: list[Input]) -> str | None:
    """A Java regex whose group 1 is each input's run date in its files' URIs, when the inputs'
    paths are one template with the run date in one plain path segment (a history); else None.
    """
    first = inputs[0]
    day = first.run_date.isoformat()
    if first.path.count(day) != 1:
        return None
    head, tail = first.path.split(day)
    if any(i.path != f"{head}{i.run_date.isoformat()}{tail}" for i in inputs):
        return None
    before, after = head.rsplit("/", 1)[-1], tail.split("/", 1)[0]
    if not (_PLAIN_SEGMENT.match(before) and _PLAIN_SEGMENT.match(after)):
        return None
    return rf"/\Q{before}\E(\d{{4}}-\d{{2}}-\d{{2}})\Q{after}\E(/|$)"


def _read_dated(spark: SparkSession, cfg: Config, members: list[tuple[int, Input]],
                pattern: str) -> DataFrame:
    """The inputs of one source over many run dates in ONE read (one plan instead of a union of
    one per date, which cost seconds of planning per date), each record's run date and replay
    position taken from its file's path."""
    first = members[0][1]
    _, reader = reader_for(first.fmt)
    raw = reader(spark, [inp.path for _, inp in members])
    if cfg.get("ingest.pseudonymize_user_ids", False):
        raw = raw.transform(pseudonymize(pseudonym_key(), first.fmt))
    run_date = F.to_date(F.regexp_extract(F.col("source_file"), pattern, 1))
    position = F.create_map(*[x for seq, inp in members for x in (F.lit(inp.run_date), F.lit(seq))])
    return raw.select(
        "*",
        run_date.alias("_run_date"),
        F.lit(first.source).alias("_source"),
        F.lit(first.timezone or "UTC").alias("_source_tz"),
        F.element_at(position, run_date).alias("_seq"),
    )


def _read_all(spark: SparkSession, cfg: Config, inputs: list[Input]) -> DataFrame:
    """Every input's records with their ingest context; the inputs of one source over many run
    dates are read at once (``_read_dated``)."""
    groups: dict[tuple, list[tuple[int, Input]]] = {}
    for seq, inp in enumerate(inputs):
        groups.setdefault((inp.fmt, inp.source, inp.timezone), []).append((seq, inp))
    frames = []
    for members in groups.values():
        pattern = _date_in_path([inp for _, inp in members]) if len(members) > 1 else None
        if pattern is None:
            frames += [_read(spark, cfg, inp, seq) for seq, inp in members]
        else:
            frames.append(_read_dated(spark, cfg, members, pattern))
    return functools.reduce(DataFrame.unionByName, frames)


def ingest_source(spark: SparkSession, cfg: Config, fmt: str, path: str, run_date: dt.date,
                  source_name: str | None = None, timezone: str | None = None,
                  dry_run: bool = False) -> dict[str, int]:
    """Ingest one input (file, folder or glob) of format ``fmt`` into bronze.

    Args:
        timezone: zone in which this source writes timestamps without an offset or zone
            (default UTC). ``event_date``/``review_date`` are always local dates in
            ``lake.timezone``.

    Returns:
        Counts: read, new, duplicates, quarantined, the quarantine count per reason, and
        ``dates``: the partition dates that received new rows.

    Raises:
        ReconciliationError: when the counts do not add up.
    """
    inp = Input(fmt, path, run_date, source_name or fmt, timezone)
    counts = ingest_inputs(spark, cfg, [inp], dry_run=dry_run)
    counts.pop("by_source")
    return counts


def _tally(rows: list, date_col: str) -> dict:
    """Counts, reasons and dates of one group of tally rows."""
    by_dest: dict[str, int] = {}
    reasons: dict[str, int] = {}
    for r in rows:
        by_dest[r["_dest"]] = by_dest.get(r["_dest"], 0) + r["count"]
        if r["_dest"] == QUARANTINE:
            reasons[r["_reason"]] = reasons.get(r["_reason"], 0) + r["count"]
    counts = {"read": sum(by_dest.values()), "new": by_dest.get(NEW, 0),
              "duplicates": by_dest.get(DUPLICATE, 0), "quarantined": by_dest.get(QUARANTINE, 0)}
    dates = sorted({r[date_col] for r in rows if r["_dest"] == NEW}, key=lambda d: (d is None, d))
    return {**counts, **{f"reason.{k}": v for k, v in reasons.items()}, "dates": dates}


def ingest_inputs(spark: SparkSession, cfg: Config, inputs: list[Input],
                  dry_run: bool = False) -> dict:
    """Ingest inputs of one kind in one batch, with the result of ingesting them one by one in
    the given order (each under its own run date).

    Args:
        inputs: in replay order (run date, then source); all of one kind (events or reviews).
        dry_run: classify and count, write nothing.

    Returns:
        Counts as ``ingest_source`` returns them, over all inputs, plus ``by_source``: the same
        counts per source name.

    Raises:
        ReconciliationError: when the counts do not add up.
        ValueError: no inputs, inputs of different kinds, or an unknown format (before anything
            is read).
    """
    kinds = {reader_for(i.fmt)[0] for i in inputs}
    if len(kinds) != 1:
        raise ValueError(f"one batch takes inputs of one kind, got {sorted(kinds) or 'none'}")
    kind = kinds.pop()
    ks = KINDS[kind]
    limits = Limits.from_config(cfg.get("ingest") or {}, cfg.get("lake.timezone") or "UTC")
    raw = _read_all(spark, cfg, inputs)
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
    what = inputs[0].path if len(inputs) == 1 else f"{len(inputs)} inputs"
    try:
        # One pass over the batch gives every count, the reasons, the dates written and the
        # files with quarantined records.
        q_file = F.when(F.col("_dest") == QUARANTINE, F.col("source_file")).alias("_q_file")
        tally = (classified.groupBy("_source", "_dest", "_reason", ks.date_col, q_file)
                 .count().collect())
        by_source = {name: _tally([r for r in tally if r["_source"] == name], ks.date_col)
                     for name in dict.fromkeys(i.source for i in inputs)}
        totals = _tally(tally, ks.date_col)
        if totals["new"] + totals["duplicates"] + totals["quarantined"] != totals["read"]:
            raise ReconciliationError(f"{what}: {totals} do not add up")
        if dry_run:
            log.info("dry run: %s -> %s (nothing written)", what, totals)
            return {**totals, "dates": [], "by_source": {
                name: {**c, "dates": []} for name, c in by_source.items()}}
        new_rows = classified.where(F.col("_dest") == NEW).withColumn("source", F.col("_source"))
        merged = (lake.merge_insert(spark, cfg, ks.table, new_rows, [ks.key],
                                    prune=_date_filter(ks.date_col, totals["dates"]))
                  if totals["new"] else {})
        inserted = merged.get("num_inserted_rows")
        if inserted is not None and inserted != totals["new"]:
            # Another run stored some of these keys between our read and our commit: they are
            # duplicates now, not losses; the table holds each key once either way.
            log.warning("%s: expected %d new rows, MERGE inserted %d (concurrent ingest)",
                        ks.table, totals["new"], inserted)
            late = totals["new"] - inserted
            totals["new"], totals["duplicates"] = inserted, totals["duplicates"] + late
            for c in by_source.values():  # the shortfall is charged to the sources in order
                moved = min(late, c["new"])
                c["new"], c["duplicates"] = c["new"] - moved, c["duplicates"] + moved
                late -= moved
        if totals["quarantined"]:
            # A record id hashes its file, so only rows of the batch's files can match: a
            # correct prune for any run date, unlike the ingest_date partition (a file
            # ingested again under another run date would be stored twice).
            files = sorted({r["_q_file"] for r in tally if r["_q_file"] is not None})
            lake.merge_insert(spark, cfg, "bronze.quarantine", quarantine_rows(classified, kind),
                              ["record_id"], prune=_file_filter(files))
    finally:
        classified.unpersist()
    log.info("ingested %s (%s): %s", what, kind, totals)

    def final(c: dict) -> dict:
        return {**c, "dates": [d for d in c["dates"] if d is not None]}

    return {**final(totals), "by_source": {name: final(c) for name, c in by_source.items()}}
