"""Data-quality gates: checks run on a gold table's new rows before they are published.

``gate`` evaluates, in one aggregation over the rows about to be written:

* ``schema``: every column of the table's schema is present with its type (blocking);
* ``row_count``: at least ``min_rows`` rows (blocking; default 1);
* ``row_count_trend``: rows against the trailing average of the table's last ``history_runs``
  published partitions (read from ``ops.quality_checks``, so no table scan): below
  ``row_count_min_ratio`` of it is blocking, above ``row_count_max_ratio`` is a warning;
* ``not_null.<col>``: no null in a column the schema declares non-nullable (blocking);
* ``null_rate.<col>``: share of nulls under a configured maximum (per table, blocking);
* ``unique_key``: no two rows share the table's key (blocking);
* ``constraint.<name>``: no row violates one of the table's CHECK constraints (``lake.TABLES``;
  Delta enforces them too, but only by failing the write without saying how many rows);
* ``freshness``: the newest input behind the rows is at most ``max_age_days`` old on the run date
  (per table, from an aggregate such as ``min(days_since_last_event)``; blocking).

Every result lands in ``ops.quality_checks`` (one row per check, passed or not). A failed
blocking check raises :class:`QualityGateError` before the caller writes, so the table's current
version stays what it was. Settings: ``quality`` in conf/defaults.yaml.
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Iterable, Mapping

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from demandlake import lake, schemas
from demandlake.config import Config

log = logging.getLogger(__name__)


class QualityGateError(RuntimeError):
    """A blocking data-quality check failed; the table was not published."""

    def __init__(self, table: str, run_date: dt.date | None, failed: list["Check"]):
        self.table, self.run_date, self.failed = table, run_date, failed
        what = "; ".join(f"{c.name}: {c.message}" for c in failed)
        super().__init__(f"{table} for {run_date} not published, quality gate failed: {what} "
                         "(the table's previous version stays current; see ops.quality_checks)")


@dataclass(frozen=True)
class Check:
    name: str
    blocking: bool
    passed: bool
    observed: float | None
    threshold: str
    message: str


def _settings(cfg: Config, table: str) -> dict:
    q = cfg.get("quality") or {}
    per_table = (q.get("tables") or {}).get(table) or {}
    return {**{k: v for k, v in q.items() if k != "tables"}, **per_table}


def _histories(spark: SparkSession, cfg: Config, tables: Mapping[str, int],
               run_date: dt.date | None) -> dict[str, list[float]]:
    """Per table, the row counts of its last ``tables[table]`` published partitions before
    ``run_date``, newest first (one read of ops.quality_checks for all the tables)."""
    if run_date is None or not lake.table_exists(spark, cfg, "ops.quality_checks"):
        return {t: [] for t in tables}
    published = (lake.read(spark, cfg, "ops.quality_checks")
                 .where(F.col("table_name").isin(list(tables))
                        & (F.col("run_date") < F.lit(run_date))))
    # A partition counts as published when none of the run's blocking checks on it failed.
    blocked = (published.where(F.col("blocking") & ~F.col("passed"))
               .select("run_id", "table_name").distinct())
    rows = (published.where(F.col("check_name") == "row_count")
            .join(blocked, on=["run_id", "table_name"], how="left_anti")
            .groupBy("table_name", "run_date")
            .agg(F.max_by("observed", "checked_at").alias("rows")).collect())
    out: dict[str, list[float]] = {t: [] for t in tables}
    for r in sorted(rows, key=lambda r: r["run_date"], reverse=True):
        if len(out[r["table_name"]]) < int(tables[r["table_name"]]):
            out[r["table_name"]].append(float(r["rows"]))
    return out


def _shape(t: T.DataType) -> T.DataType:
    """The type without nullability flags (the write enforces those; the not_null checks count)."""
    if isinstance(t, T.StructType):
        return T.StructType([T.StructField(f.name, _shape(f.dataType)) for f in t.fields])
    if isinstance(t, T.ArrayType):
        return T.ArrayType(_shape(t.elementType))
    if isinstance(t, T.MapType):
        return T.MapType(_shape(t.keyType), _shape(t.valueType))
    return t


def _schema_check(df: DataFrame, s: lake.TableSpec) -> Check:
    have = {f.name: f.dataType for f in df.schema.fields}
    missing = [f.name for f in s.schema.fields if f.name not in have]
    wrong = [f"{f.name} is {have[f.name].simpleString()}, not {f.dataType.simpleString()}"
             for f in s.schema.fields
             if f.name in have and _shape(have[f.name]) != _shape(f.dataType)]
    extra = sorted(set(have) - {f.name for f in s.schema.fields})
    problems = ([f"missing {missing}"] if missing else []) + wrong
    message = "; ".join(problems) if problems else "columns and types match"
    if extra:
        message += f" (extra columns dropped at write: {extra})"
    return Check("schema", True, not problems, float(len(problems)),
                 "every table column present with its type", message)


def evaluate(spark: SparkSession, cfg: Config, table: str, df: DataFrame,
             run_date: dt.date | None, history: list[float] | None = None) -> list[Check]:
    """All checks of ``table`` on the rows ``df`` (one Spark aggregation plus a small history
    read, unless ``history``, the row counts of its last published partitions, is given)."""
    s = lake.spec(table)
    opts = _settings(cfg, table)
    checks = [_schema_check(df, s)]
    if not checks[0].passed:
        return checks  # the other checks would name columns that are not there
    not_null = [f.name for f in s.schema.fields if not f.nullable]
    rates = {str(c): float(v) for c, v in (opts.get("max_null_rate") or {}).items()}
    keys = list(opts.get("key") or [])
    fresh = opts.get("freshness")
    aggs = [F.count(F.lit(1)).alias("rows")]
    aggs += [F.count_if(F.col(c).isNull()).alias(f"null__{c}") for c in not_null + list(rates)]
    aggs += [F.count_if(~F.coalesce(F.expr(expr), F.lit(False))).alias(f"violates__{name}")
             for name, expr in s.constraints.items()]
    if keys:
        aggs.append(F.count_distinct(F.struct(*keys)).alias("distinct_keys"))
    if fresh:
        aggs.append(F.expr(str(fresh["expression"])).cast("double").alias("age_days"))
    row = df.agg(*aggs).first().asDict()
    n = int(row["rows"])

    min_rows = int(opts.get("min_rows", 1))
    checks.append(Check("row_count", True, n >= min_rows, float(n), f">= {min_rows} rows",
                        f"{n} rows"))
    if history is None:
        history = _histories(spark, cfg, {table: int(opts.get("history_runs", 7))},
                             run_date)[table]
    if len(history) >= int(opts.get("min_history", 3)):
        avg = sum(history) / len(history)
        ratio = n / avg if avg else float("inf")
        lo, hi = float(opts.get("row_count_min_ratio", 0.5)), float(opts.get("row_count_max_ratio", 3))
        blocking = ratio < lo
        checks.append(Check(
            "row_count_trend", blocking, lo <= ratio <= hi, round(ratio, 4),
            f"between {lo} and {hi} x the trailing average (below {lo} blocks)",
            f"{n} rows = {ratio:.2f} x the average {avg:.0f} of the last {len(history)} "
            "published partitions"))
    for c in not_null:
        nulls = int(row[f"null__{c}"])
        checks.append(Check(f"not_null.{c}", True, nulls == 0, float(nulls), "0 nulls",
                            f"{nulls} null {c}"))
    for c, limit in rates.items():
        rate = int(row[f"null__{c}"]) / n if n else 0.0
        checks.append(Check(f"null_rate.{c}", True, rate <= limit, round(rate, 6),
                            f"<= {limit}", f"{rate:.2%} of {c} null"))
    if keys:
        dupes = n - int(row["distinct_keys"])
        checks.append(Check("unique_key", True, dupes == 0, float(dupes),
                            f"one row per {keys}", f"{dupes} rows repeat a key"))
    for name, expr in s.constraints.items():
        bad = int(row[f"violates__{name}"])
        checks.append(Check(f"constraint.{name}", True, bad == 0, float(bad), expr,
                            f"{bad} rows violate {name}"))
    if fresh:
        age = row["age_days"]
        limit = float(fresh["max_age_days"])
        ok = age is not None and float(age) <= limit
        checks.append(Check("freshness", True, ok, None if age is None else float(age),
                            f"<= {limit:g} days ({fresh['expression']})",
                            f"newest input is {age} days old" if age is not None
                            else "no input rows to date"))
    return checks


def record(spark: SparkSession, cfg: Config, checks: Iterable[Check], run_id: str, stage: str,
           table: str, run_date: dt.date | None) -> None:
    """Append the results to ops.quality_checks (once per run and table: retry-safe)."""
    record_all(spark, cfg, {table: list(checks)}, run_id, stage, run_date)


def record_all(spark: SparkSession, cfg: Config, checks: Mapping[str, list[Check]], run_id: str,
               stage: str, run_date: dt.date | None) -> None:
    """Append the results of several tables to ops.quality_checks in one commit (once per run
    and set of tables: retry-safe)."""
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    rows = [(run_id, stage, table, run_date, c.name, c.blocking, c.passed, c.observed,
             c.threshold, c.message[:2000], now) for table, cs in checks.items() for c in cs]
    if rows:
        lake.append_once(spark, cfg, "ops.quality_checks",
                         spark.createDataFrame(rows, schemas.QUALITY_CHECKS),
                         f"ops.quality_checks/{run_id}/{'+'.join(checks)}")


def gate_all(spark: SparkSession, cfg: Config, frames: Mapping[str, DataFrame],
             run_date: dt.date | None, run_id: str,
             stage: str) -> tuple[list[Check], list[QualityGateError]]:
    """Check each table's rows (``frames``: table name -> the rows about to be written) before
    they are written; record every result in one commit.

    Returns:
        Every check, and one :class:`QualityGateError` per table with a failed blocking check
        (that table must not be written; the others may be).
    """
    if not bool(cfg.get("quality.enabled", True)):
        return [], []
    runs = {t: int(_settings(cfg, t).get("history_runs", 7)) for t in frames}
    histories = _histories(spark, cfg, runs, run_date)
    results = {t: evaluate(spark, cfg, t, df, run_date, histories[t]) for t, df in frames.items()}
    record_all(spark, cfg, results, run_id, stage, run_date)
    failures = []
    for table, checks in results.items():
        for c in checks:
            if not c.passed:
                log.log(logging.ERROR if c.blocking else logging.WARNING, "quality %s %s %s: %s",
                        table, run_date, c.name, c.message)
        failed = [c for c in checks if c.blocking and not c.passed]
        if failed:
            failures.append(QualityGateError(table, run_date, failed))
    return [c for checks in results.values() for c in checks], failures


def gate(spark: SparkSession, cfg: Config, table: str, df: DataFrame, run_date: dt.date | None,
         run_id: str, stage: str, raise_on_failure: bool = True) -> list[Check]:
    """Check ``df`` before it is written to ``table``; record the results.

    Raises:
        QualityGateError: a blocking check failed (and ``raise_on_failure``); nothing was written.
    """
    checks, failures = gate_all(spark, cfg, {table: df}, run_date, run_id, stage)
    if failures and raise_on_failure:
        raise failures[0]
    return checks


def summary(checks: Iterable[Check]) -> dict[str, int]:
    """Counts for the run log: checks, failed blocking, warnings."""
    checks = list(checks)
    return {"quality_checks": len(checks),
            "quality_failed": sum(1 for c in checks if c.blocking and not c.passed),
            "quality_warnings": sum(1 for c in checks if not c.blocking and not c.passed)}


__all__ = ["Check", "QualityGateError", "evaluate", "gate", "gate_all", "record", "record_all",
           "summary"]
