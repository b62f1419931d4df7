"""Right to erasure: remove every row of given users from every table that holds user data.

Which tables: every registered table (``lake.TABLES``) whose schema has a user column
(``USER_COLUMNS``) or a raw-record text column (``RAW_TEXT_COLUMNS``, i.e. ``bronze.quarantine``),
read from the schemas at call time, so a newly registered table is covered without edits here.

How rows are matched:
- a user column equals the id, or its ingest pseudonym (``p-`` + HMAC, see ``ingest.bronze``) when
  ``$DEMANDLAKE_PSEUDONYM_KEY`` is set (required when ``ingest.pseudonymize_user_ids`` is on);
- a raw record mentions the id as a field value: the ``user_id`` value of a JSON line (string or
  number, also when the line is truncated or broken), or any field of a delimited (CSV/TSV) line.
  Values must match whole, so forgetting user ``12`` never touches user ``123``.

How rows are deleted: one Delta MERGE per table with ``whenMatchedDelete`` against a one-row
source DataFrame that carries the ids. A ``DeltaTable.delete(F.col("user_id").isin(ids))`` would
be simpler, but Delta writes a DELETE's condition with its literals into the transaction log
(``DESCRIBE HISTORY`` shows ``user_id = alice``); a MERGE logs only ``array_contains(ids, user_id)``.
No SQL text is ever built from the ids.

Every request leaves one row in ``ops.forget_requests`` with keyed hashes of the ids (never the
ids), the rows deleted and the Delta version written per table. Older table versions keep the rows
for time travel until ``VACUUM`` (``vacuum_hours``) removes their files; see docs/OPERATIONS.md.
"""
from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import json
import logging
import operator
import os
import re
import uuid
from typing import Iterable

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from demandlake import lake, maintenance, schemas
from demandlake.config import Config
from demandlake.ingest.bronze import PSEUDONYM_KEY_ENV, python_hmac

log = logging.getLogger(__name__)

USER_COLUMNS = ("user_id",)
RAW_TEXT_COLUMNS = ("raw",)
REQUESTS_TABLE = "ops.forget_requests"
# Delta refuses VACUUM below the table's delta.deletedFileRetentionDuration (default 7 days)
# unless this check is off.
RETENTION_CHECK_CONF = "spark.databricks.delta.retentionDurationCheck.enabled"
DEFAULT_RETENTION_HOURS = 168.0
MAX_PASSES = 3
_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
# Keeps the request-log hash of an id distinct from its ingest pseudonym under the same key.
_HASH_DOMAIN = "demandlake.forget\u001f"
_SOURCE_SCHEMA = T.StructType([T.StructField("ids", T.ArrayType(T.StringType()), False),
                               T.StructField("pattern", T.StringType(), False)])


class ForgetError(RuntimeError):
    """Rows of the users could not all be removed (message never holds the ids)."""


# ---- which tables -------------------------------------------------------------------------------
def user_data_columns() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Every registered table holding user data, upstream layers first.

    Returns:
        table name -> (user-id columns, raw-record text columns), from the table schemas.
    """
    out = {}
    for name in sorted(lake.TABLES, key=lambda n: (lake.LAYERS.index(lake.TABLES[n].layer), n)):
        fields = {f.name: f.dataType for f in lake.TABLES[name].schema.fields}
        users = tuple(c for c in USER_COLUMNS if isinstance(fields.get(c), T.StringType))
        raws = tuple(c for c in RAW_TEXT_COLUMNS if isinstance(fields.get(c), T.StringType))
        if users or raws:
            out[name] = (users, raws)
    return out


# ---- ids, pseudonyms and hashes -----------------------------------------------------------------
def _env_key() -> bytes | None:
    key = os.environ.get(PSEUDONYM_KEY_ENV, "")
    return key.encode() if len(key) >= 16 else None


def user_hash(key: bytes, user_id: str) -> str:
    """The keyed hash a request log stores for ``user_id`` (hex HMAC-SHA256, domain-separated)."""
    return hmac.new(key, (_HASH_DOMAIN + user_id).encode(), hashlib.sha256).hexdigest()


def pseudonym(key: bytes, user_id: str) -> str:
    """The id ingest stores for ``user_id`` when ``ingest.pseudonymize_user_ids`` is on."""
    return "p-" + python_hmac(key, user_id)[:32]


def id_forms(user_ids: Iterable[str], key: bytes | None) -> list[str]:
    """Every form in which the users' ids can be stored: as given, and pseudonymized with ``key``."""
    ids = list(dict.fromkeys(user_ids))
    forms = ids + ([pseudonym(key, u) for u in ids] if key else [])
    return list(dict.fromkeys(forms))


def _java_quote(text: str) -> str:
    """``java.util.regex.Pattern.quote``: the text as a literal inside a Java regex."""
    return "\\Q" + text.replace("\\E", "\\E\\\\E\\Q") + "\\E"


def json_user_pattern(forms: Iterable[str]) -> str:
    """Java regex finding a JSON(-like) record whose ``user_id`` value is one of ``forms``.

    The value must be the whole JSON string (escaped either way) or the whole bare token (a
    number, or a pseudonym ingest wrote over a numeric id), followed by ``,``, ``}`` or the end of
    a truncated line, so ``"12"`` never matches ``"123"``.
    """
    forms = list(dict.fromkeys(forms))
    strings = [s for f in forms for s in (json.dumps(f)[1:-1], json.dumps(f, ensure_ascii=False)[1:-1])]
    quoted = "|".join(_java_quote(s) for s in dict.fromkeys(strings))
    bare = "|".join(_java_quote(f) for f in forms)
    value = f"\"(?:{quoted})\"|'(?:{quoted})'|(?:{bare})"
    return f"[\"']user_id[\"']\\s*:\\s*(?:{value})\\s*(?:[,}}]|$)"


def raw_mentions(raw: Column, ids: Column, pattern: Column) -> Column:
    """Whether a raw record holds one of ``ids`` as a field value (never null).

    Args:
        raw: the record text.
        ids: array<string> of id forms, for delimited lines (any field, trimmed, quotes removed).
        pattern: ``json_user_pattern`` of the same ids, for JSON lines.
    """
    is_json = F.ltrim(raw).startswith("{")
    fields = F.transform(F.split(raw, "[,\t]"),
                         lambda v: F.regexp_replace(F.trim(v), '^"|"$', ""))
    delimited_hit = ~is_json & F.arrays_overlap(fields, ids)
    json_hit = is_json & F.regexp_like(raw, pattern)
    return F.coalesce(delimited_hit | json_hit, F.lit(False))


def _condition(users: tuple[str, ...], raws: tuple[str, ...]) -> Column:
    """Target rows (alias ``t``) of the users in the one-row source (alias ``s``)."""
    parts = [F.array_contains(F.col("s.ids"), F.col(f"t.`{c}`")) for c in users]
    parts += [raw_mentions(F.col(f"t.`{c}`"), F.col("s.ids"), F.col("s.pattern")) for c in raws]
    return F.coalesce(functools.reduce(operator.or_, parts), F.lit(False))


# ---- the request --------------------------------------------------------------------------------
def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def _mask(text: str, forms: list[str]) -> str:
    for f in sorted(forms, key=len, reverse=True):
        text = text.replace(f, "<user>")
    return text


def _validated(user_ids: Iterable[str], request_id: str | None,
               vacuum_hours: float | None, spark: SparkSession) -> list[str]:
    if isinstance(user_ids, str):
        raise TypeError("user_ids must be a list of ids, not one string")
    ids = list(dict.fromkeys(user_ids))
    if not ids:
        raise ValueError("no user ids given")
    for u in ids:
        if not isinstance(u, str) or not u.strip():
            raise ValueError("every user id must be a non-blank string")
    if request_id is not None and not _REQUEST_ID.match(request_id):
        raise ValueError(f"request_id must match {_REQUEST_ID.pattern}")
    if vacuum_hours is not None:
        if not vacuum_hours >= 0:
            raise ValueError(f"vacuum_hours must be >= 0, got {vacuum_hours!r}")
        check = spark.conf.get(RETENTION_CHECK_CONF, "true").strip().lower() != "false"
        if vacuum_hours < DEFAULT_RETENTION_HOURS and check:
            raise ValueError(
                f"vacuum_hours={vacuum_hours:g} is below Delta's default retention of "
                f"{DEFAULT_RETENTION_HOURS:g} h: set {RETENTION_CHECK_CONF}=false to allow it "
                "(it ends time travel to older versions and breaks readers of those versions)")
    return ids


def _tables_with_rows(spark: SparkSession, cfg: Config, source: DataFrame,
                      tables: dict[str, tuple[tuple[str, ...], tuple[str, ...]]]) -> list[str]:
    """The existing tables that hold any row of the users in ``source`` (one Spark job)."""
    probes = []
    for name, (users, raws) in tables.items():
        target = lake.read_existing(spark, cfg, name)
        if target is None:
            continue
        target = target.alias("t")
        # A join with the source, not a filter with literals: no plan or log shows the ids.
        probes.append(target.join(source.alias("s"), _condition(users, raws), how="left_semi")
                      .limit(1).select(F.lit(name).alias("table_name")))
    if not probes:
        return []
    found = {r["table_name"] for r in functools.reduce(DataFrame.unionByName, probes).collect()}
    return [n for n in tables if n in found]


def _delete(spark: SparkSession, cfg: Config, source: DataFrame, name: str,
            users: tuple[str, ...], raws: tuple[str, ...]) -> tuple[int, int]:
    """Delete the users' rows from one table; returns (rows deleted, version written)."""
    path = lake.spec(name).location(cfg)
    cond = _condition(users, raws)
    result = lake._with_retry(lambda: (
        DeltaTable.forPath(spark, path).alias("t").merge(source.alias("s"), cond)
        .whenMatchedDelete().execute()
    ), f"forget {name}")
    deleted = int(result.first()["num_deleted_rows"]) if result is not None else 0
    version = int(DeltaTable.forPath(spark, path).history(1).first()["version"])
    log.info("forget: %d row(s) deleted from %s (version %d)", deleted, name, version)
    return deleted, version


def _has_deletion_vectors(spark: SparkSession, path: str) -> bool:
    detail = DeltaTable.forPath(spark, path).detail().select("properties", "tableFeatures").first()
    enabled = (detail["properties"] or {}).get("delta.enableDeletionVectors", "").lower() == "true"
    return enabled or "deletionVectors" in (detail["tableFeatures"] or [])


def _vacuum(spark: SparkSession, cfg: Config, names: Iterable[str], hours: float) -> None:
    """Physically remove the files of older versions (time travel to them ends here)."""
    for name in names:
        path = lake.spec(name).location(cfg)
        if _has_deletion_vectors(spark, path):
            # With deletion vectors a delete only marks rows; PURGE rewrites the files without
            # them, so the VACUUM below can drop the files that still hold them.
            # By path, not by name: the path is the lake's own (configuration, not user text).
            spark.sql(f"REORG TABLE delta.`{path.replace('`', '``')}` APPLY (PURGE)")
            log.info("forget: %s purged of deletion vectors", name)
        maintenance.vacuum_path(spark, cfg, path, hours)
        log.info("forget: %s vacuumed (retention %g h)", name, hours)


def forget(spark: SparkSession, cfg: Config, user_ids: Iterable[str], request_id: str | None = None,
           vacuum_hours: float | None = None) -> dict:
    """Remove every row of ``user_ids`` from every table holding user data, and log the request.

    Idempotent: repeating a request (same ``request_id``) deletes what is left, e.g. rows a
    concurrently running stage wrote back, and adds to the request's counts.

    Args:
        user_ids: the users' ids as the sources give them (pseudonymized forms are derived).
        request_id: the erasure request's id (e.g. a ticket number); generated when absent.
        vacuum_hours: when set, VACUUM the touched tables with this retention (after a
            ``REORG ... APPLY (PURGE)`` where deletion vectors are on).

    Returns:
        request_id, status, rows_deleted and table_versions per table, vacuumed tables.

    Raises:
        ValueError: bad arguments, or no usable ``$DEMANDLAKE_PSEUDONYM_KEY``.
        ForgetError: rows remain or a table could not be changed (recorded as failed).
    """
    ids = _validated(user_ids, request_id, vacuum_hours, spark)
    key = _env_key()
    if key is None:
        raise ValueError(
            f"forget needs ${PSEUDONYM_KEY_ENV} (>= 16 characters): the request log stores a keyed "
            "hash of each user id, and pseudonymized ids are derived with it")
    request_id = request_id or f"forget-{uuid.uuid4().hex[:12]}"
    forms = id_forms(ids, key)
    started = _now()
    tables = user_data_columns()
    source = spark.createDataFrame([(forms, json_user_pattern(forms))], _SOURCE_SCHEMA)
    prev = (lake.read(spark, cfg, REQUESTS_TABLE)
            .where(F.col("request_id") == request_id).select("rows_deleted", "table_versions")
            .first())
    deleted = dict(prev["rows_deleted"]) if prev else {}
    versions = dict(prev["table_versions"]) if prev else {}
    log.info("forget %s: %d user id(s), %d id form(s), %d table(s) with user data",
             request_id, len(ids), len(forms), len(tables))
    status, error, vacuumed = "succeeded", None, []
    try:
        # A check that finds nothing is the proof that no current version holds the users;
        # later passes delete rows a concurrently running stage wrote back.
        for attempt in range(1, MAX_PASSES + 2):
            found = _tables_with_rows(spark, cfg, source, tables)
            if not found:
                break
            if attempt > MAX_PASSES:
                raise ForgetError(f"rows of the users still appear in {found} after {MAX_PASSES} "
                                  "passes (a stage keeps writing them back: stop it and retry)")
            for name in found:
                n, versions[name] = _delete(spark, cfg, source, name, *tables[name])
                deleted[name] = deleted.get(name, 0) + n
        if vacuum_hours is not None:
            vacuumed = [n for n in tables if deleted.get(n, 0) > 0]
            _vacuum(spark, cfg, vacuumed, vacuum_hours)
    except Exception as exc:  # recorded, then raised again without the ids in the message
        status, error = "failed", _mask(f"{type(exc).__name__}: {exc}", forms)[:4000]
    row = (request_id, started, _now(), [user_hash(key, u) for u in ids], deleted, versions,
           float(vacuum_hours) if vacuum_hours is not None and status == "succeeded" else None,
           status, error)
    lake.merge_upsert(spark, cfg, REQUESTS_TABLE,
                      spark.createDataFrame([row], schemas.FORGET_REQUESTS), ["request_id"])
    log.info("forget %s %s: rows deleted %s", request_id, status, deleted)
    if error:
        raise ForgetError(f"forget {request_id} failed: {error}")
    return {"request_id": request_id, "status": status, "rows_deleted": deleted,
            "table_versions": versions, "vacuumed": vacuumed}
