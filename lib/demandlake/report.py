"""The run report: one self-contained HTML page per date (inline CSS, plots as base64 PNG).

``demandlake --lake L report --run-date D [--out FILE]`` writes ``<lake>/_reports/report-D.html``
with, for that date: stage timings and counts from ``ops.runs``, quarantine reasons, data-quality
results (when an ``ops.quality_checks`` table exists), the latest versions of the registered
models with their metrics (MLflow), segment sizes and the forecast distribution. Every section
reads only aggregates (a few rows per table) and says "not available" instead of failing when its
source is missing, so a report can be written for any date of any lake.

The code here gathers each section's content as blocks (cards, tables, notes, charts); the markup
lives in Jinja2 templates (``demandlake/templates/report.html.j2`` and ``blocks.html.j2``,
package data), rendered with autoescape on so that no value from the lake is read as HTML.
"""
from __future__ import annotations

import base64
import datetime as dt
import functools
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Collection, Iterable, Sequence, Union

import jinja2
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from demandlake import lake
from demandlake.config import Config, local_path

log = logging.getLogger(__name__)

HISTOGRAM_BINS = 20
MAX_QUALITY_ROWS = 200
MODEL_VERSIONS_SHOWN = 3


# ---- blocks: what a section shows, rendered by templates/blocks.html.j2 (one macro per kind) -----
@dataclass(frozen=True)
class Note:
    """A paragraph; ``cls`` 'na' greys it (sources that are not there)."""

    text: str
    cls: str = ""
    kind: ClassVar[str] = "note"


@dataclass(frozen=True)
class Heading:
    """A sub-heading inside a section (one per registered model)."""

    text: str
    kind: ClassVar[str] = "heading"


@dataclass(frozen=True)
class Cards:
    """Headline numbers: ``(value, label)`` pairs."""

    items: Sequence[tuple[str, str]]
    kind: ClassVar[str] = "cards"


@dataclass(frozen=True)
class Chart:
    """A plot: base64 PNG bytes, inlined in the page."""

    png: str
    kind: ClassVar[str] = "chart"


@dataclass(frozen=True)
class Status:
    """A status cell, coloured by its value (failed in red, succeeded in green)."""

    text: str
    kind: ClassVar[str] = "status"

    @property
    def cls(self) -> str:
        low = self.text.lower()
        if low in ("failed", "false", "fail", "error"):
            return "bad"
        return "ok" if low in ("succeeded", "true", "pass", "passed", "ok", "success") else ""


@dataclass(frozen=True)
class Lines:
    """A cell of several lines (``name=value`` pairs)."""

    items: Sequence[str]
    kind: ClassVar[str] = "lines"


Cell = Union[str, Status, Lines]


@dataclass(frozen=True)
class Table:
    """Rows of cells under a header; columns in ``numeric`` are right-aligned."""

    header: Sequence[str]
    rows: Sequence[Sequence[Cell]]
    numeric: Collection[int] = frozenset()
    kind: ClassVar[str] = "table"


Block = Union[Note, Heading, Cards, Chart, Table]


@dataclass
class Section:
    """One part of the page: an anchor, a title and its blocks."""

    key: str
    title: str
    blocks: list[Block] = field(default_factory=list)


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
    builders: list[tuple[str, str, Callable[[], list[Block]]]] = [
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
            blocks = build()
        except Exception as exc:  # one broken source must not cost the whole report
            log.warning("report section %s failed", key, exc_info=True)
            blocks = _na(f"could not be read: {type(exc).__name__}: {exc}")
        sections.append(Section(key, title, blocks))
    return _page(cfg, day, sections)


# ---- sections ------------------------------------------------------------------------------------
def _stages(spark: SparkSession, cfg: Config, day: dt.date) -> list[Block]:
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
        [[r["stage"], Status(_fmt(r["status"])), r["started_at"], _num(r["duration_s"], 1),
          _counts(r["metrics"]), (r["error"] or "")[:300]] for r in rows],
        numeric={3})
    chart = _barh([f"{r['stage']} ({r['status']})" for r in rows],
                  [float(r["duration_s"] or 0) for r in rows], "seconds",
                  colors=["#b42318" if r["status"] == "failed" else "#2f6fab" for r in rows],
                  integer=False)
    return [cards, table, chart]


def _quarantine(spark: SparkSession, cfg: Config, day: dt.date) -> list[Block]:
    if not lake.table_exists(spark, cfg, "bronze.quarantine"):
        return _na("table bronze.quarantine does not exist in this lake "
                   "(no record quarantined yet).")
    rows = (lake.read(spark, cfg, "bronze.quarantine")
            .where(F.col("ingest_date") == F.lit(day))
            .groupBy("kind", "reason").count()
            .orderBy(F.col("count").desc(), "kind", "reason")
            .collect())
    if not rows:
        return [Note("No record was quarantined by the ingest of this date.")]
    table = _table(["kind", "reason", "records"],
                   [[r["kind"], r["reason"], r["count"]] for r in rows], numeric={2})
    chart = _barh([f"{r['kind']}: {r['reason']}" for r in rows], [r["count"] for r in rows],
                  "records", colors=["#c4661f"] * len(rows))
    return [_cards([(sum(r["count"] for r in rows), "records quarantined")]), table, chart]


def _quality(spark: SparkSession, cfg: Config, day: dt.date) -> list[Block]:
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
    body = [[Status(_fmt(r[c])) if i in status_cols else r[c] for i, c in enumerate(cols)]
            for r in rows[:MAX_QUALITY_ROWS]]
    more = ([Note(f"first {MAX_QUALITY_ROWS} results shown.", "na")]
            if len(rows) > MAX_QUALITY_ROWS else [])
    return [_table(cols, body), *more]


def _models(cfg: Config) -> list[Block]:
    names = [cfg.get("sequence_model.registered_name", "demandlake-sequence"),
             cfg.get("sentiment_model.registered_name", "demandlake-sentiment")]
    uri = cfg.mlflow_tracking_uri
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        # Opening a missing SQLite store would create (and migrate) an empty one.
        return _na(f"no MLflow store at {uri} (no model trained on this lake yet).")
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from demandlake.training import families

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    parts: list[Block] = []
    for name in names:
        parts.append(Heading(name))
        try:
            versions = client.search_model_versions(f"name = '{name}'")
        except MlflowException as exc:
            parts += _na(f"registry not readable: {exc}")
            continue
        if not versions:
            parts += _na("not registered yet.")
            continue
        latest = sorted(versions, key=lambda v: int(v.version), reverse=True)[:MODEL_VERSIONS_SHOWN]
        rows = []
        for v in latest:
            metrics = client.get_run(v.run_id).data.metrics if v.run_id else {}
            registered = dt.datetime.fromtimestamp(v.creation_timestamp / 1000, dt.timezone.utc)
            family = families.family_of(v.tags) if name == names[0] else "-"
            rows.append([v.version, ", ".join(getattr(v, "aliases", None) or []) or "-", family,
                         _fmt(registered.replace(tzinfo=None)), v.run_id or "-", _metrics(metrics)])
        parts.append(_table(["version", "aliases", "family", "registered (UTC)", "run",
                             "metrics"], rows))
    return parts


def _segments(spark: SparkSession, cfg: Config, day: dt.date) -> list[Block]:
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
    return [_cards([(sum(r["users"] for r in rows), "users profiled")]), table, chart]


def _forecasts(spark: SparkSession, cfg: Config, day: dt.date) -> list[Block]:
    if not lake.table_exists(spark, cfg, "gold.demand_forecasts"):
        return _na("table gold.demand_forecasts does not exist in this lake (nothing scored yet).")
    df = lake.read(spark, cfg, "gold.demand_forecasts").where(F.col("run_date") == F.lit(day))
    # The histogram is counted by Spark (one row per bin), never by collecting the forecasts.
    bins = (df.select(F.least(F.floor(F.col("purchase_probability") * HISTOGRAM_BINS),
                              F.lit(HISTOGRAM_BINS - 1)).cast("int").alias("bin"))
            .groupBy("bin").count().collect())
    bands = df.groupBy("score_band", "is_fallback").count().collect()
    # Which model produced the rows: source is "model: <family>" or "fallback: <rule>/<why>".
    sources = (df.groupBy("source", "model_name", "model_version").count()
               .orderBy(F.col("count").desc(), "source").collect())
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
    produced = _table(["produced by", "model", "version", "forecasts"],
                      [[r["source"], r["model_name"] or "-",
                        "-" if r["model_version"] is None else r["model_version"], r["count"]]
                       for r in sources], numeric={3})
    return [cards, produced, _histogram(counts)]


# ---- sources ------------------------------------------------------------------------------------
def _optional_table(spark: SparkSession, cfg: Config, name: str) -> DataFrame | None:
    """A table that may not be in the registry (written by a newer stage) nor in the lake."""
    if name in lake.TABLES:
        return lake.read(spark, cfg, name) if lake.table_exists(spark, cfg, name) else None
    # Not registered in this version: look where lake.TableSpec.location would put it.
    layer, short = name.split(".")
    location = f"{cfg.lake_uri.rstrip('/')}/{layer}/{short}"
    if not lake.is_delta_table(spark, location):
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
@functools.cache
def _templates() -> jinja2.Environment:
    """The report's templates, read as package data (also from a zipped wheel on --py-files)."""
    return jinja2.Environment(loader=jinja2.PackageLoader("demandlake", "templates"),
                              autoescape=True, undefined=jinja2.StrictUndefined)


def _page(cfg: Config, day: dt.date, sections: Sequence[Section]) -> str:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return _templates().get_template("report.html.j2").render(
        day=day, lake_uri=cfg.lake_uri, generated=now, sections=sections)


def _na(why: str) -> list[Block]:
    return [Note(f"Not available: {why}", "na")]


def _table(header: Sequence[str], rows: Iterable[Sequence], numeric: Collection[int] = ()) -> Table:
    """A table; plain values are formatted with :func:`_fmt`, Status and Lines cells kept."""
    return Table(list(header),
                 [[v if isinstance(v, (Status, Lines)) else _fmt(v) for v in row] for row in rows],
                 frozenset(numeric))


def _cards(items: Sequence[tuple[object, str]]) -> Cards:
    return Cards([(_fmt(v), label) for v, label in items])


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


def _counts(metrics: dict | None) -> Lines:
    """The numeric entries of an ops.runs metrics map, as ``name=value`` lines."""
    items = []
    for k, v in sorted((metrics or {}).items()):
        try:
            float(v)
        except (TypeError, ValueError):
            continue
        items.append(f"{k}={v}")
    return Lines(items)


def _metrics(metrics: dict) -> Lines:
    return Lines([f"{k}={v:.4g}" for k, v in sorted(metrics.items())[:12]])


def _png(fig) -> Chart:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return Chart(base64.b64encode(buf.getvalue()).decode("ascii"))


def _barh(labels: Sequence[str], values: Sequence[float], xlabel: str,
          colors: Sequence[str], integer: bool = True) -> Chart:
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


def _histogram(counts: Sequence[int]) -> Chart:
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
