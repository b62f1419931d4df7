"""Every analyst query of docs/queries.sql runs against a freshly scored lake and makes sense.

The lake is the session's ``scored_lake`` fixture (tests/helpers/scored_lake.py, built once);
expectations come from its inline input rows or from the scoring tables read directly, not from
the SQL under test. Its bronze.events also holds the week after the run date, so the backtest
columns (who bought in the 7 days after the run) count real purchases.
"""
from __future__ import annotations

import datetime as dt

import pytest

from demandlake.queries import MARKER, bind, parse_queries
from helpers import scored_lake as tl

QUERIES, TABLES, PARAMS = tl.QUERIES, tl.QUERY_TABLES, tl.QUERY_PARAMS


@pytest.fixture(scope="module")
def lake(spark, scored_lake):
    """The shared scored lake, its tables registered by name (other tests' ``cfg`` dropped them)."""
    tl.reset_catalog(spark, scored_lake.cfg, TABLES)
    return scored_lake


def _bought_in_the_week_after_the_run() -> set[str]:
    """Users with a purchase dated in (RUN, RUN + 7 days], from the inline rows."""
    week = (tl.RUN, tl.RUN + dt.timedelta(days=7))
    return {r[1] for r in tl.event_rows() + tl.after_run_rows()
            if r[3] == "purchase" and week[0] < r[15] <= week[1]}


def _rounded(value: float):
    """What the queries' ``round(x, 4)`` may give for ``value`` (a decimal or a double)."""
    return pytest.approx(value, abs=1e-4)


@pytest.fixture(scope="module")
def run(spark, lake):
    queries = parse_queries(QUERIES.read_text(encoding="utf-8"))

    def run_query(name: str):
        sql, params = queries[name]
        used = set(MARKER.findall(sql))
        assert used == set(params), f"{name}: declared {params}, used {sorted(used)}"
        return [r.asDict(recursive=True) for r in spark.sql(bind(sql, PARAMS)).collect()]

    return run_query


def test_parameters_become_escaped_literals():
    assert bind("a = :user_id AND d <= :run_date AND n >= :n", {
        "user_id": "o'hara", "run_date": dt.date(2026, 1, 2), "n": 3}) == (
        "a = 'o\\'hara' AND d <= DATE'2026-01-02' AND n >= 3")
    with pytest.raises(KeyError):
        bind("x = :missing", {})


def test_queries_file_has_the_expected_named_blocks():
    names = set(parse_queries(QUERIES.read_text(encoding="utf-8")))
    assert names == {"top_users_likely_to_buy_category", "segment_sizes_and_conversion",
                     "categories_with_rising_negative_sentiment", "user_full_profile",
                     "forecast_calibration_by_band", "valuable_users_at_risk",
                     "most_recommended_items", "scoring_runs"}


def test_top_users_for_a_category_are_ranked_by_category_probability(run, lake):
    rows = run("top_users_likely_to_buy_category")
    assert rows
    probs = [r["category_probability"] for r in rows]
    assert probs == sorted(probs, reverse=True)
    assert all(0 <= p <= r["purchase_probability"] + 1e-9 for p, r in zip(probs, rows))
    forecasts = lake.first["gold.demand_forecasts"]
    want = {u for u, cats in zip(forecasts["user_id"], forecasts["top_categories"])
            if any(c["category"] == "electronics" for c in cats)}
    assert {r["user_id"] for r in rows} == want


def test_segment_sizes_add_up_to_the_profiles(run, lake):
    rows = run("segment_sizes_and_conversion")
    profiles = lake.first["gold.user_profiles"]
    assert {r["segment"]: r["users"] for r in rows} == profiles["segment"].value_counts().to_dict()
    assert sum(r["share_of_users"] for r in rows) == pytest.approx(1.0, abs=1e-3)
    for r in rows:
        for key in ("predicted_purchase_probability", "bought_last_7_days"):
            assert 0 <= r[key] <= 1
    assert any(r["bought_last_7_days"] > 0 for r in rows)
    bought = profiles["user_id"].isin(_bought_in_the_week_after_the_run())
    want = bought.groupby(profiles["segment"]).mean().to_dict()
    assert {r["segment"]: float(r["bought_next_7_days"]) for r in rows} == _rounded(want)
    assert any(v > 0 for v in want.values())


def test_electronics_shows_rising_negative_sentiment_with_complaint_terms(run):
    rows = run("categories_with_rising_negative_sentiment")
    by_cat = {r["category"]: r for r in rows}
    assert "electronics" in by_cat
    elec = by_cat["electronics"]
    assert elec["negative_trend"] > 0 and elec["volume"] >= 2
    assert set(elec["complaint_terms"]) & (set(tl._NEG["en"]) | set(tl._NEG["zh"]))
    assert all(r["negative_trend"] > 0 for r in rows)


def test_a_users_full_profile_joins_every_table(run, lake):
    rows = run("user_full_profile")
    assert len(rows) == 1
    row = rows[0]
    profile = lake.first["gold.user_profiles"].set_index("user_id").loc["u03"]
    assert row["segment"] == profile["segment"] and row["run_date"] == tl.RUN
    recs = lake.first["gold.recommendations"]
    want = list(recs[recs["user_id"] == "u03"].sort_values("rank")["item_id"])
    assert [r["item_id"] for r in row["recommendations"] or []] == want
    reviews = [r for r in tl.review_rows() if r[1] == "u03"]
    assert row["reviews"] == len(reviews) > 0


def test_calibration_bands_cover_every_forecast(run, lake):
    rows = run("forecast_calibration_by_band")
    forecasts = lake.first["gold.demand_forecasts"]
    assert sum(r["users"] for r in rows) == len(forecasts)
    bought = forecasts["user_id"].isin(_bought_in_the_week_after_the_run())
    groups = forecasts.assign(bought=bought).groupby(["score_band", "is_fallback"])
    want = {(band, bool(fallback)): (len(g), _rounded(g["purchase_probability"].mean()),
                                      _rounded(g["bought"].mean()))
            for (band, fallback), g in groups}
    assert {(r["score_band"], r["is_fallback"]): (r["users"], float(r["predicted"]),
                                                  float(r["observed"])) for r in rows} == want
    assert any(r["observed"] > 0 for r in rows)


def test_valuable_users_at_risk_are_buyers_sorted_by_risk(run):
    rows = run("valuable_users_at_risk")
    assert rows and all(r["value_tier"] in ("high", "medium") for r in rows)
    risks = [r["churn_risk"] for r in rows]
    assert risks == sorted(risks, reverse=True)
    # value tiers high/medium need lookback revenue: priced purchases up to the run date
    buyers = {r[1] for r in tl.event_rows()
              if r[3] == "purchase" and r[7] is not None and r[15] <= tl.RUN}
    assert {r["user_id"] for r in rows} <= buyers


def test_most_recommended_items_count_users_per_source(run, lake):
    rows = run("most_recommended_items")
    recs = lake.first["gold.recommendations"]
    counts = recs["item_id"].value_counts().to_dict()
    assert rows and {r["item_id"]: r["users"] for r in rows} == counts
    assert all(r["via_als"] + r["via_category_popularity"] == r["users"] for r in rows)


def test_scoring_runs_list_the_runs_with_their_counts(run, lake):
    rows = run("scoring_runs")
    assert [r["status"] for r in rows] == ["succeeded", "succeeded", "dry_run"]
    assert {r["users"] for r in rows} == {lake.first_counts["users"]}
    assert {r["sequence_model_version"] for r in rows} == {str(lake.sequence_version)}
