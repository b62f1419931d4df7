"""The HTML run report: sections, counts for the right date, "not available" notes, rendering.

The rendering check opens the page in headless Chromium (Debian's `chromium` package:
`apt-get install -y chromium`), reads back the DOM the browser built and takes a screenshot. It is
the one test allowed to skip under CI=true (``skip_allowed_in_ci``), and only where no Chromium is
installed. Set DEMANDLAKE_SCREENSHOT_DIR to keep the screenshot for a person to look at.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess

import pytest

from demandlake import lake, runlog, schemas
from demandlake.ingest.bronze import ingest_source
from demandlake.report import write_report

RUN = dt.date(2026, 11, 14)
OTHER = dt.date(2026, 11, 13)
SECTIONS = ["Stage timings and row counts", "Quarantine reasons", "Data quality checks",
            "Models", "Segments", "Forecast distribution"]


def _ev(**kw) -> str:
    base = {"event_id": "e1", "user_id": "u1", "event_type": "view", "item_id": "i1",
            "category": "shoes", "brand": "acme", "price": 10.5, "quantity": None,
            "timestamp": "2026-11-14T10:00:00+00:00"}
    base.update(kw)
    return json.dumps(base)


def _small_lake(spark, cfg, tmp_path) -> None:
    """Bronze from 5 raw lines (2 good, 2 negative prices, 1 malformed) and two ops.runs rows."""
    raw = tmp_path / "events.jsonl"
    raw.write_text("\n".join([
        _ev(event_id="a"), _ev(event_id="b", event_type="purchase", quantity=1),
        _ev(event_id="c", price=-1), _ev(event_id="d", price=-2), '{"event_id": "x", ',
    ]) + "\n")
    counts = ingest_source(spark, cfg, "canonical_events", str(raw), RUN)
    assert (counts["new"], counts["quarantined"]) == (2, 3)
    with runlog.tracked(spark, cfg, "ingest", RUN) as run:
        run.add(read=counts["read"], new=counts["new"], quarantined=counts["quarantined"])
    with pytest.raises(RuntimeError), runlog.tracked(spark, cfg, "sessions", RUN):
        raise RuntimeError("sessions blew up")
    with runlog.tracked(spark, cfg, "ingest", OTHER) as run:
        run.add(read=999)


def _forecasts(spark, cfg) -> None:
    def row(user, day, p, band, fallback):
        source = "fallback: popularity/no model" if fallback else "model: spark_gbt"
        return (user, day, p, [("shoes", p / 2)], band, fallback, source,
                None if fallback else "demandlake-sequence", None if fallback else 4, "score-x")

    df = spark.createDataFrame([
        row("u1", RUN, 0.05, "low", True), row("u2", RUN, 0.07, "low", True),
        row("u3", RUN, 0.55, "high", False), row("u4", OTHER, 0.9, "high", False),
    ], schemas.GOLD_DEMAND_FORECASTS)
    lake.overwrite_where(spark, cfg, "gold.demand_forecasts", df, "true")


def _profiles(spark, cfg) -> None:
    def row(user, day, segment, p, churn):
        return (user, day, 0, segment, "low", [("shoes", 1.0)], [("acme", 1.0)], [10], None, p,
                churn, dt.date(2026, 11, 1), day, None, None, "kmeans k=5 seed=7", "score-x")

    df = spark.createDataFrame([
        row("u1", RUN, "bargain hunters", 0.05, 0.5), row("u2", RUN, "bargain hunters", 0.07, 0.7),
        row("u3", RUN, "loyal high spenders", 0.55, 0.1),
        row("u4", OTHER, "loyal high spenders", 0.9, 0.1),
    ], schemas.GOLD_USER_PROFILES)
    lake.overwrite_where(spark, cfg, "gold.user_profiles", df, "true")


def test_report_has_every_section_with_the_dates_counts(spark, cfg, tmp_path):
    _small_lake(spark, cfg, tmp_path)

    path = write_report(spark, cfg, RUN)

    assert path == f"{cfg.lake_uri}/_reports/report-2026-11-14.html"
    page = open(path, encoding="utf-8").read()
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in page, title
    # ops.runs of RUN only: the ingest with its counts, the failed sessions run with its error.
    assert "<b>2</b><span>stage runs</span>" in page and "<b>1</b><span>failed</span>" in page
    assert "new=2<br>quarantined=3<br>read=5" in page
    assert "RuntimeError: sessions blew up" in page and "read=999" not in page
    # bronze.quarantine of RUN, grouped by reason, most frequent first.
    assert ("<td>events</td><td>negative_price</td><td class='num'>2</td></tr>"
            "<tr><td>events</td><td>malformed_record</td><td class='num'>1</td>") in page
    # Sources this lake does not have yet.
    assert "Not available: no ops.quality_checks table" in page
    assert "Not available: no MLflow store" in page
    assert "Not available: table gold.user_profiles does not exist" in page
    assert "Not available: table gold.demand_forecasts does not exist" in page
    # Self-contained: plots inline, nothing fetched from elsewhere.
    assert page.count("src='data:image/png;base64,") == 2
    assert not re.search(r"""(src|href)=['"]?(https?:|//)""", page)


def test_report_shows_segments_and_forecasts_of_the_date_only(spark, cfg, tmp_path):
    _forecasts(spark, cfg)
    _profiles(spark, cfg)

    page = open(write_report(spark, cfg, RUN, str(tmp_path / "r.html")), encoding="utf-8").read()

    assert "<b>3</b><span>users forecast</span>" in page
    assert "<b>2</b><span>fallback forecasts</span>" in page
    assert "<b>1</b><span>band high</span>" in page and "<b>2</b><span>band low</span>" in page
    # Which model produced the date's rows (OTHER's model row is not counted).
    assert ("<td>fallback: popularity/no model</td><td>-</td><td>-</td><td class='num'>2</td>"
            in page)
    assert ("<td>model: spark_gbt</td><td>demandlake-sequence</td><td>4</td>"
            "<td class='num'>1</td>") in page
    assert "<b>3</b><span>users profiled</span>" in page
    assert ("<td>bargain hunters</td><td class='num'>2</td><td class='num'>0.060</td>"
            "<td class='num'>0.600</td>") in page
    assert "<td>loyal high spenders</td><td class='num'>1</td>" in page
    assert "Not available: table ops.runs does not exist" in page


def test_report_lists_quality_checks_when_the_table_exists(spark, cfg):
    from demandlake import quality

    ok = quality.Check("row_count", True, True, 2.0, ">= 1 rows", "2 rows")
    bad = quality.Check("freshness", True, False, 3.0, "<= 2 days", "newest input is 3 days old")
    warn = quality.Check("row_count_trend", False, False, 4.0, "between 0.5 and 3", "4.0 x")
    quality.record(spark, cfg, [ok, warn, bad], "run-a", "features", "gold.user_features", RUN)
    quality.record(spark, cfg, [quality.Check("from_another_day", True, True, 1.0, "", "")],
                   "run-b", "features", "gold.user_features", OTHER)

    page = open(write_report(spark, cfg, RUN), encoding="utf-8").read()

    assert "newest input is 3 days old" in page and "from_another_day" not in page
    # failures first: the blocking one, then the warning, then what passed
    assert page.index(">freshness<") < page.index(">row_count_trend<") < page.index(">row_count<")


def test_report_of_an_empty_lake_says_what_is_missing(spark, cfg, tmp_path):
    out = tmp_path / "sub" / "empty.html"
    page = open(write_report(spark, cfg, "2026-11-14", str(out)), encoding="utf-8").read()
    assert page.count("Not available:") == len(SECTIONS)


def test_page_escapes_every_value_from_the_lake():
    """Templates render with autoescape: text from the lake (errors, names, metrics) is never
    markup, while the blocks keep their own."""
    from demandlake import report
    from demandlake.config import load_config

    cfg = load_config(overrides=["lake.uri=s3a://b/<lake>"])
    evil = "<script>x</script>"
    sections = [report.Section("stages", "A & B", [
        report.Heading(evil), report.Note(evil, "na"), report.Cards([("1", evil)]),
        report.Table(["h<"], [[evil], [report.Status("failed")], [report.Lines([evil, "k=1"])]],
                     frozenset({0})),
        report.Chart("QUJD")])]

    page = report._page(cfg, RUN, sections)

    assert "<script>" not in page
    esc = "&lt;script&gt;x&lt;/script&gt;"
    assert "<p>lake s3a://b/&lt;lake&gt; &middot; generated " in page
    assert "<a href='#stages'>A &amp; B</a>" in page
    assert f"<section id='stages'><h2>A &amp; B</h2><h3>{esc}</h3><p class='na'>{esc}</p>" in page
    assert f"<div class='cards'><div class='card'><b>1</b><span>{esc}</span></div></div>" in page
    assert (f"<table><thead><tr><th>h&lt;</th></tr></thead><tbody><tr><td class='num'>{esc}</td>"
            "</tr><tr><td class='num'><span class='bad'>failed</span></td></tr>"
            f"<tr><td class='num'>{esc}<br>k=1</td></tr></tbody></table>") in page
    assert "<img alt='chart' src='data:image/png;base64,QUJD'></section>" in page


def test_report_rejects_a_date_that_is_not_a_date(spark, cfg):
    with pytest.raises(ValueError):
        write_report(spark, cfg, "14/11/2026")


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _headless(tmp_path, profile: str, *args: str) -> subprocess.CompletedProcess:
    """Run headless Chromium once with a fresh profile, no network of its own, no first-run UI."""
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--no-first-run", f"--user-data-dir={tmp_path / profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


@pytest.mark.skip_allowed_in_ci
@pytest.mark.skipif(_chromium() is None, reason="headless Chromium not installed "
                                                "(apt-get install -y chromium)")
def test_report_renders_in_a_browser(spark, cfg, tmp_path):
    """The page in headless Chromium: the DOM it builds has every section and both plots, and the
    screenshot's header colour proves the CSS applied."""
    from matplotlib.image import imread

    _small_lake(spark, cfg, tmp_path)
    _forecasts(spark, cfg)
    _profiles(spark, cfg)
    page = write_report(spark, cfg, RUN)

    plots = open(page, encoding="utf-8").read().count("src='data:image/png;base64,")
    dom = _headless(tmp_path, "profile-dom", "--dump-dom", f"file://{page}")
    assert dom.returncode == 0 and "</html>" in dom.stdout, dom.stderr[-2000:]
    built = dom.stdout  # the page as the browser parsed it: a stray tag would swallow sections
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in built, title
    assert plots >= 2 and built.count('src="data:image/png;base64,') == plots

    shot = tmp_path / "report.png"
    proc = _headless(tmp_path, "profile-shot", f"--screenshot={shot}", "--window-size=1200,2000",
                     f"file://{page}")
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]

    pixels = imread(str(shot))
    assert pixels.shape[:2] == (2000, 1200)
    header = pixels[10, 600, :3]  # the #1f3a5f header bar
    assert abs(header - [0x1F / 255, 0x3A / 255, 0x5F / 255]).max() < 0.05, header
    assert pixels[:, :, :3].std() > 0.05  # not a blank page
    keep = os.environ.get("DEMANDLAKE_SCREENSHOT_DIR")
    if keep:
        os.makedirs(keep, exist_ok=True)
        shutil.copy(shot, os.path.join(keep, "report-2026-11-14.png"))
