"""The run report: one self-contained HTML page per date (inline CSS, plots as base64 PNG).

``demandlake --lake L report --run-date D [--out FILE]`` writes ``<lake>/_reports/report-D.html``
with, for that date: stage timings and counts from ``ops.runs``, quarantine reasons, data-quality
results (when an ``ops.quality_checks`` table exists), the latest versions of the registered
models with their metrics (MLflow), segment sizes and the forecast distribution. Every section
reads only aggregates (a few rows per table) and says "not available" instead of failing when its
source is missing, so a report can be written for any date of any lake.
"""
from __future__ import annotations

import base64
import datetime as dt
import html
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Collection, Iterable, Sequence

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from demandlake import lake
from demandlake.config import Config, local_path

log = logging.getLogger(__name__)

HISTOGRAM_BINS = 20
MAX_QUALITY_ROWS = 200
MODEL_VERSIONS_SHOWN = 3

_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;color:#1f2933;
background:#f5f7fa}
header{background:#1f3a5f;color:#fff;padding:18px 32px}
header h1{margin:0 0 4px;font-size:24px}header p{margin:0;opacity:.85;font-size:13px}
nav{padding:8px 32px;background:#e4e9f0;font-size:13px}nav a{margin-right:14px;color:#1f3a5f}
main{padding:8px 32px 32px;max-width:1100px}
section{background:#fff;border:1px solid #d9e2ec;border-radius:6px;padding:12px 20px;margin:16px 0}
h2{font-size:18px;margin:4px 0 10px;color:#1f3a5f}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border-bottom:1px solid #e4e9f0;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f0f4f8}td.num{text-align:right;font-variant-numeric:tabular-nums}
.na{color:#7b8794;font-style:italic}.bad{color:#b42318;font-weight:600}.ok{color:#067647}
.cards{display:flex;gap:12px;flex-wrap:wrap}
.card{background:#f0f4f8;border-radius:6px;padding:8px 14px;min-width:120px}
.card b{display:block;font-size:20px}.card span{font-size:12px;color:#52606d}
img{max-width:100%;height:auto}
"""


@dataclass
class Section:
    """One part of the page: an anchor, a title and its HTML body."""

    key: str
    title: str
    body: str


def write_report(spark: SparkSession, cfg: Config, run_date: dt.date | str,
                 out: str | None = None) -> str:
    """Write the HTML report of ``run_date``.

    Args:
        spark: a session on the lake (tables are looked up through ``demandlake.lake``).
        cfg: resolved configuration (lake URI, MLflow tracking URI, model names).
        run_date: the date reported on (a date or ``YYYY-MM-DD``).
        out: output file; default ``<lake>/_reports/report-<date>.html``.

    Returns:
        Where the report was written.
    """
    day = dt.date.fromisoformat(run_date) if isinstance(run_date, str) else run_date
    target = out or f"{cfg.lake_uri.rstrip('/')}/_reports/report-{day.isoformat()}.html"
    page = render_report(spark, cfg, day)
    _write_text(spark, target, page)
    log.info("report for %s written to %s (%d bytes)", day, target, len(page))
    return target


def render_report(spark: SparkSession, cfg: Config, day: dt.date) -> str:
    """The report page of ``day`` as one HTML string (no external resources)."""
    builders: list[tuple[str, str, Callable[[], str]]] = [
        ("stages", "Stage timings and row counts", lambda: _stages(spark, cfg, day)),
        ("quarantine", "Quarantine reasons", lambda: _quarantine(spark, cfg, day)),
        ("quality", "Data quality checks", lambda: _quality(spark, cfg, day)),
        ("models", "Models", lambda: _models(cfg)),
        ("segments", "Segments", lambda: _segments(spark, cfg, day)),
        ("forecasts", "Forecast distribution", lambda: _forecasts(spark, cfg, day)),
    ]
    sections = []
    for key, title, build in builders:
        try:
            body = build()
        except Exception as exc:  # one broken source must not cost the whole report
            log.warning("report section %s failed", key, exc_info=True)
            body = _na(f"could not be read: {type(exc).__name__}: {exc}")
        sections.append(Section(key, title, body))
    return _page(cfg, day, sections)


# ---- sections ------------------------------------------------------------------------------------
def _stages(spark: SparkSession, cfg: Config, day: dt.date) -> str:
    if not lake.table_exists(spark, cfg, "ops.runs"):
        return _na("table ops.runs does not exist in this lake (no stage has run).")
    rows = (lake.read(spark, cfg, "ops.runs")
            .where(F.col("run_date") == F.lit(day))
            .orderBy("started_at")
            .select("stage", "status", "started_at", "duration_s", "metrics", "error")
            .collect())
    if not rows:
        return _na(f"no stage ran for {day} (ops.runs has no row for this date).")
    failed = sum(r["status"] == "failed" for r in rows)
    cards = _cards([(len(rows), "stage runs"), (failed, "failed"),
                    (f"{sum(r['duration_s'] or 0 for r in rows):.1f} s", "total time")])
    table = _table(
        ["stage", "status", "started (UTC)", "duration (s)", "row counts", "error"],
        [[r["stage"], _status(r["status"]), _fmt(r["started_at"]), _num(r["duration_s"], 1),
          _counts(r["metrics"]), html.escape((r["error"] or "")[:300])] for r in rows],
        numeric={3}, escaped={1, 4, 5})
    chart = _barh([f"{r['stage']} ({r['status']})" for r in rows],
                  [float(r["duration_s"] or 0) for r in rows], "seconds",
                  colors=["#b42318" if r["status"] == "failed" else "#2f6fab" for r in rows],
                  integer=False)
    return cards + table + chart


def _quarantine(spark: SparkSession, cfg: Config, day: dt.date) -> str:
    if not lake.table_exists(spark, cfg, "bronze.quarantine"):
        return _na("table bronze.quarantine does not exist in this lake "
                   "(no record quarantined yet).")
    rows = (lake.read(spark, cfg, "bronze.quarantine")
            .where(F.col("ingest_date") == F.lit(day))
            .groupBy("kind", "reason").count()
            .orderBy(F.col("count").desc(), "kind", "reason")
            .collect())
    if not rows:
        return "<p>No record was quarantined by the ingest of this date.</p>"
    table = _table(["kind", "reason", "records"],
                   [[r["kind"], r["reason"], r["count"]] for r in rows], numeric={2})
    chart = _barh([f"{r['kind']}: {r['reason']}" for r in rows], [r["count"] for r in rows],
                  "records", colors=["#c4661f"] * len(rows))
    return _cards([(sum(r["count"] for r in rows), "records quarantined")]) + table + chart


def _quality(spark: SparkSession, cfg: Config, day: dt.date) -> str:
    df = _optional_table(spark, cfg, "ops.quality_checks")
    if df is None:
        return _na("no ops.quality_checks table in this lake (no data-quality checks recorded).")
    date_col = next((c for c in ("run_date", "check_date", "date") if c in df.columns), None)
    if date_col:
        df = df.where(F.col(date_col) == F.lit(day))
    if {"passed", "blocking", "table_name", "check_name"} <= set(df.columns):
        # failures first (blocking before warnings), then by table and check
        df = df.orderBy(F.col("passed"), F.col("blocking").desc(), "table_name", "check_name")
    rows = df.limit(MAX_QUALITY_ROWS + 1).collect()
    if not rows:
        return _na(f"ops.quality_checks has no result for {day}.")
    cols = [c for c in df.columns if c != date_col]
    status_cols = {i for i, c in enumerate(cols) if c in ("status", "passed", "outcome", "result")}
    body = [[_status(r[c]) if i in status_cols else _fmt(r[c]) for i, c in enumerate(cols)]
            for r in rows[:MAX_QUALITY_ROWS]]
    more = (f"<p class='na'>first {MAX_QUALITY_ROWS} results shown.</p>"
            if len(rows) > MAX_QUALITY_ROWS else "")
    return _table(cols, body, escaped=status_cols) + more


def _models(cfg: Config) -> str:
    names = [cfg.get("sequence_model.registered_name", "demandlake-sequence"),
             cfg.get("sentiment_model.registered_name", "demandlake-sentiment")]
    uri = cfg.mlflow_tracking_uri
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        # Opening a missing SQLite store would create (and migrate) an empty one.
        return _na(f"no MLflow store at {uri} (no model trained on this lake yet).")
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    parts = []
    for name in names:
        try:
            versions = client.search_model_versions(f"name = '{name}'")
        except MlflowException as exc:
            parts.append(f"<h3>{html.escape(name)}</h3>" + _na(f"registry not readable: {exc}"))
            continue
        if not versions:
            parts.append(f"<h3>{html.escape(name)}</h3>" + _na("not registered yet."))
            continue
        latest = sorted(versions, key=lambda v: int(v.version), reverse=True)[:MODEL_VERSIONS_SHOWN]
        rows = []
        for v in latest:
            metrics = client.get_run(v.run_id).data.metrics if v.run_id else {}
            registered = dt.datetime.fromtimestamp(v.creation_timestamp / 1000, dt.timezone.utc)
            rows.append([v.version, ", ".join(getattr(v, "aliases", None) or []) or "-",
                         _fmt(registered.replace(tzinfo=None)), v.run_id or "-", _metrics(metrics)])
        parts.append(f"<h3>{html.escape(name)}</h3>"
                     + _table(["version", "aliases", "registered (UTC)", "run", "metrics"], rows,
                              escaped={4}))
    return "".join(parts)


def _segments(spark: SparkSession, cfg: Config, day: dt.date) -> str:
    if not lake.table_exists(spark, cfg, "gold.user_profiles"):
        return _na("table gold.user_profiles does not exist in this lake (nothing scored yet).")
    rows = (lake.read(spark, cfg, "gold.user_profiles")
            .where(F.col("run_date") == F.lit(day))
            .groupBy("segment")
            .agg(F.count(F.lit(1)).alias("users"),
                 F.avg("purchase_probability").alias("purchase_probability"),
                 F.avg("churn_risk").alias("churn_risk"))
            .orderBy(F.col("users").desc(), "segment")
            .collect())
    if not rows:
        return _na(f"gold.user_profiles has no profile for {day}.")
    table = _table(["segment", "users", "mean purchase probability", "mean churn risk"],
                   [[r["segment"], r["users"], _num(r["purchase_probability"], 3),
                     _num(r["churn_risk"], 3)] for r in rows], numeric={1, 2, 3})
    chart = _barh([r["segment"] for r in rows], [r["users"] for r in rows], "users",
                  colors=["#3f8f5f"] * len(rows))
    return _cards([(sum(r["users"] for r in rows), "users profiled")]) + table + chart


def _forecasts(spark: SparkSession, cfg: Config, day: dt.date) -> str:
    if not lake.table_exists(spark, cfg, "gold.demand_forecasts"):
        return _na("table gold.demand_forecasts does not exist in this lake (nothing scored yet).")
    df = lake.read(spark, cfg, "gold.demand_forecasts").where(F.col("run_date") == F.lit(day))
    # The histogram is counted by Spark (one row per bin), never by collecting the forecasts.
    bins = (df.select(F.least(F.floor(F.col("purchase_probability") * HISTOGRAM_BINS),
                              F.lit(HISTOGRAM_BINS - 1)).cast("int").alias("bin"))
            .groupBy("bin").count().collect())
    bands = df.groupBy("score_band", "is_fallback").count().collect()
    total = sum(r["count"] for r in bins)
    if not total:
        return _na(f"gold.demand_forecasts has no forecast for {day}.")
    counts = [0] * HISTOGRAM_BINS
    for r in bins:
        counts[r["bin"]] = r["count"]
    fallbacks = sum(r["count"] for r in bands if r["is_fallback"])
    per_band: dict[str, int] = {}
    for r in bands:
        per_band[r["score_band"]] = per_band.get(r["score_band"], 0) + r["count"]
    cards = _cards([(total, "users forecast"), (fallbacks, "fallback forecasts")]
                   + [(per_band.get(b, 0), f"band {b}") for b in ("high", "medium", "low")])
    return cards + _histogram(counts)


# ---- sources ------------------------------------------------------------------------------------
def _optional_table(spark: SparkSession, cfg: Config, name: str) -> DataFrame | None:
    """A table that may not be in the registry (written by a newer stage) nor in the lake."""
    if name in lake.TABLES:
        return lake.read(spark, cfg, name) if lake.table_exists(spark, cfg, name) else None
    from delta.tables import DeltaTable

    # Not registered in this version: look where lake.TableSpec.location would put it.
    layer, short = name.split(".")
    location = f"{cfg.lake_uri.rstrip('/')}/{layer}/{short}"
    if not DeltaTable.isDeltaTable(spark, location):
        return None
    return spark.read.format("delta").load(location)


def _write_text(spark: SparkSession, target: str, text: str) -> None:
    local = local_path(target)
    if local is not None:
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(local.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(local)  # readers never see a half-written page
        return
    # Object stores and HDFS: through Spark's own Hadoop file system (same credentials).
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(target)
    fs = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    stream = fs.create(path, True)
    try:
        stream.write(bytearray(text.encode("utf-8")))
    finally:
        stream.close()


# ---- HTML ---------------------------------------------------------------------------------------
def _page(cfg: Config, day: dt.date, sections: Sequence[Section]) -> str:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    nav = "".join(f"<a href='#{s.key}'>{html.escape(s.title)}</a>" for s in sections)
    body = "".join(f"<section id='{s.key}'><h2>{html.escape(s.title)}</h2>{s.body}</section>"
                   for s in sections)
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>demandlake report {day}</title><style>{_CSS}</style></head><body>"
            f"<header><h1>demandlake run report: {day}</h1>"
            f"<p>lake {html.escape(cfg.lake_uri)} &middot; generated {now}</p></header>"
            f"<nav>{nav}</nav><main>{body}</main></body></html>")


def _na(why: str) -> str:
    return f"<p class='na'>Not available: {html.escape(why)}</p>"


def _table(header: Sequence[str], rows: Iterable[Sequence], numeric: Collection[int] = (),
           escaped: Collection[int] = ()) -> str:
    """An HTML table; cells are escaped unless their column index is in ``escaped``."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    lines = []
    for row in rows:
        cells = []
        for i, v in enumerate(row):
            text = str(v) if i in escaped else html.escape(_fmt(v))
            cls = " class='num'" if i in numeric else ""
            cells.append(f"<td{cls}>{text}</td>")
        lines.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"


def _cards(items: Sequence[tuple[object, str]]) -> str:
    return ("<div class='cards'>" + "".join(
        f"<div class='card'><b>{html.escape(_fmt(v))}</b><span>{html.escape(label)}</span></div>"
        for v, label in items) + "</div>")


def _status(value) -> str:
    text = _fmt(value)
    bad = text.lower() in ("failed", "false", "fail", "error")
    good = text.lower() in ("succeeded", "true", "pass", "passed", "ok", "success")
    cls = "bad" if bad else "ok" if good else ""
    return f"<span class='{cls}'>{html.escape(text)}</span>"


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _num(value, digits: int) -> str:
    return "" if value is None else f"{float(value):.{digits}f}"


def _counts(metrics: dict | None) -> str:
    """The numeric entries of an ops.runs metrics map, as ``name=value`` lines (escaped HTML)."""
    items = []
    for k, v in sorted((metrics or {}).items()):
        try:
            float(v)
        except (TypeError, ValueError):
            continue
        items.append(f"{html.escape(k)}={html.escape(v)}")
    return "<br>".join(items)


def _metrics(metrics: dict) -> str:
    return "<br>".join(f"{html.escape(k)}={v:.4g}" for k, v in sorted(metrics.items())[:12])


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return ("<img alt='chart' src='data:image/png;base64,"
            + base64.b64encode(buf.getvalue()).decode("ascii") + "'>")


def _barh(labels: Sequence[str], values: Sequence[float], xlabel: str,
          colors: Sequence[str], integer: bool = True) -> str:
    """A horizontal bar chart as an inline PNG (matplotlib's Agg canvas, no display needed)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(8, 0.35 * len(labels) + 1.0))
    ax = fig.subplots()
    ax.barh(range(len(labels)), values, color=list(colors))
    ax.set_yticks(range(len(labels)), labels=list(labels))
    ax.invert_yaxis()
    ax.set_xlim(0, (max(values, default=0) or 1) * 1.05)
    ax.xaxis.set_major_locator(MaxNLocator(integer=integer))
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def _histogram(counts: Sequence[int]) -> str:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    width = 1.0 / len(counts)
    fig = Figure(figsize=(8, 3.2))
    ax = fig.subplots()
    ax.bar([i * width for i in range(len(counts))], counts, width=width, align="edge",
           color="#2f6fab", edgecolor="white")
    ax.set_xlim(0, 1)
    ax.set_xlabel("purchase probability")
    ax.set_ylabel("users")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)
