-- Analyst questions over the nightly scoring tables (docs/SCORING.md describes the tables).
--
-- Each block starts with `-- name: NAME`, then `-- params:` naming its parameters, then one
-- statement. Parameters are Spark SQL named markers (`:run_date`, ...). Replace them with literals
-- (DATE'2026-11-10', 'electronics') before running a block: `spark.sql(text, args={...})` would
-- bind them, but with the Delta 4.4.1 session extension on Spark 4.2 no marker is ever bound
-- (UNBOUND_SQL_PARAMETER even for `SELECT :x`); tests/test_queries.py has a `bind` helper that
-- renders escaped literals. Every query reads the latest scoring run on or before :run_date, so a
-- date without a run falls back to the one before it.
-- tests/test_queries.py runs every block against a freshly scored lake.


-- name: top_users_likely_to_buy_category
-- params: run_date, category
-- Users most likely to buy in :category in the next 7 days (P(purchase) * P(category | purchase)),
-- with their segment and churn risk, for a campaign list.
WITH latest AS (
  SELECT max(run_date) AS run_date FROM gold.demand_forecasts WHERE run_date <= :run_date
), categories AS (
  SELECT f.user_id, f.run_date, f.purchase_probability, f.score_band, f.source,
         inline(f.top_categories)
  FROM gold.demand_forecasts f JOIN latest l ON f.run_date = l.run_date
)
SELECT c.user_id, c.probability AS category_probability, c.purchase_probability, c.score_band,
       c.source, p.segment, p.value_tier, p.churn_risk
FROM categories c
JOIN gold.user_profiles p ON p.user_id = c.user_id AND p.run_date = c.run_date
WHERE c.category = :category
ORDER BY category_probability DESC, c.user_id
LIMIT 100;


-- name: segment_sizes_and_conversion
-- params: run_date
-- Segment sizes, predicted purchase probability against observed conversion: session conversion
-- and the share who bought in the last 7 days (gold.user_features), and the share who bought in
-- the 7 days after the run (bronze.events; 0 until those days have happened).
WITH latest AS (
  SELECT max(run_date) AS run_date FROM gold.user_profiles WHERE run_date <= :run_date
), bought_after AS (
  SELECT DISTINCT e.user_id
  FROM bronze.events e CROSS JOIN latest l
  WHERE e.event_type = 'purchase'
    AND e.event_date > l.run_date AND e.event_date <= date_add(l.run_date, 7)
)
SELECT p.segment,
       count(*) AS users,
       round(count(*) / sum(count(*)) OVER (), 4) AS share_of_users,
       round(avg(p.purchase_probability), 4) AS predicted_purchase_probability,
       round(avg(u.conversion_rate), 4) AS session_conversion_rate,
       round(avg(CASE WHEN try_element_at(u.purchases_by_window, 7) > 0 THEN 1.0 ELSE 0.0 END), 4)
         AS bought_last_7_days,
       round(avg(CASE WHEN b.user_id IS NOT NULL THEN 1.0 ELSE 0.0 END), 4) AS bought_next_7_days,
       round(avg(p.churn_risk), 4) AS mean_churn_risk
FROM gold.user_profiles p
JOIN latest l ON p.run_date = l.run_date
JOIN gold.user_features u ON u.user_id = p.user_id AND u.snapshot_date = p.run_date
LEFT JOIN bought_after b ON b.user_id = p.user_id
GROUP BY p.segment
ORDER BY users DESC, p.segment;


-- name: categories_with_rising_negative_sentiment
-- params: run_date, min_reviews
-- Categories whose share of negative reviews rose against the week before, in the latest week
-- up to :run_date with at least :min_reviews reviews, with their top complaint terms.
WITH latest_week AS (
  SELECT max(week) AS week FROM gold.item_sentiment
  WHERE level = 'category' AND week <= :run_date
), terms AS (
  SELECT category,
         transform(array_sort(collect_list(struct(rank, term))), x -> x.term) AS complaint_terms
  FROM gold.complaint_terms
  WHERE run_date = (SELECT max(run_date) FROM gold.complaint_terms WHERE run_date <= :run_date)
    AND rank <= 5
  GROUP BY category
)
SELECT s.category, s.week, s.volume, round(s.share_negative, 4) AS share_negative,
       round(s.negative_trend, 4) AS negative_trend, round(s.mean_probability, 4) AS mean_probability,
       coalesce(t.complaint_terms, array()) AS complaint_terms
FROM gold.item_sentiment s
JOIN latest_week w ON s.week = w.week
LEFT JOIN terms t ON t.category = s.category
WHERE s.level = 'category' AND s.negative_trend > 0 AND s.volume >= :min_reviews
ORDER BY s.negative_trend DESC, s.category;


-- name: user_full_profile
-- params: run_date, user_id
-- Everything the nightly run knows about one user: profile, forecast, recommendations, reviews.
WITH latest AS (
  SELECT max(run_date) AS run_date FROM gold.user_profiles
  WHERE run_date <= :run_date AND user_id = :user_id
), recs AS (
  SELECT user_id, run_date,
         transform(array_sort(collect_list(struct(rank, item_id, category, source))),
                   x -> named_struct('item_id', x.item_id, 'category', x.category,
                                     'source', x.source)) AS recommendations
  FROM gold.recommendations WHERE user_id = :user_id GROUP BY user_id, run_date
), reviews AS (
  SELECT user_id, count(*) AS reviews,
         count_if(label = 'negative') AS negative_reviews, max(review_date) AS last_review
  FROM gold.review_sentiment WHERE user_id = :user_id GROUP BY user_id
)
SELECT p.user_id, p.run_date, p.segment, p.value_tier, p.first_seen, p.last_seen,
       p.top_categories AS preferred_categories, p.top_brands, p.active_hours,
       p.review_sentiment, p.churn_risk,
       f.purchase_probability, f.score_band, f.top_categories AS likely_categories, f.source,
       r.recommendations, v.reviews, v.negative_reviews, v.last_review,
       p.sequence_model_version, p.sentiment_model_version, p.run_id
FROM gold.user_profiles p
JOIN latest l ON p.run_date = l.run_date
JOIN gold.demand_forecasts f ON f.user_id = p.user_id AND f.run_date = p.run_date
LEFT JOIN recs r ON r.user_id = p.user_id AND r.run_date = p.run_date
LEFT JOIN reviews v ON v.user_id = p.user_id
WHERE p.user_id = :user_id;


-- name: forecast_calibration_by_band
-- params: run_date
-- Backtest of a past run: per score band, the mean predicted probability against the share of
-- users who really bought in the 7 days after it (meaningful once those 7 days are in bronze).
WITH latest AS (
  SELECT max(run_date) AS run_date FROM gold.demand_forecasts WHERE run_date <= :run_date
), bought AS (
  SELECT DISTINCT e.user_id
  FROM bronze.events e CROSS JOIN latest l
  WHERE e.event_type = 'purchase'
    AND e.event_date > l.run_date AND e.event_date <= date_add(l.run_date, 7)
)
SELECT f.score_band, f.is_fallback, count(*) AS users,
       round(avg(f.purchase_probability), 4) AS predicted,
       round(avg(CASE WHEN b.user_id IS NOT NULL THEN 1.0 ELSE 0.0 END), 4) AS observed
FROM gold.demand_forecasts f
JOIN latest l ON f.run_date = l.run_date
LEFT JOIN bought b ON b.user_id = f.user_id
GROUP BY f.score_band, f.is_fallback
ORDER BY CASE f.score_band WHEN 'high' THEN 0 WHEN 'medium' THEN 1 ELSE 2 END, f.is_fallback;


-- name: valuable_users_at_risk
-- params: run_date
-- High- and medium-value users most at risk of churning: who to win back first.
SELECT p.user_id, p.value_tier, p.segment, round(p.churn_risk, 4) AS churn_risk,
       round(p.purchase_probability, 4) AS purchase_probability, p.last_seen,
       datediff(p.run_date, p.last_seen) AS days_since_last_seen
FROM gold.user_profiles p
WHERE p.run_date = (SELECT max(run_date) FROM gold.user_profiles WHERE run_date <= :run_date)
  AND p.value_tier IN ('high', 'medium')
ORDER BY p.churn_risk DESC, p.user_id
LIMIT 100;


-- name: most_recommended_items
-- params: run_date
-- Items recommended to the most users, split by source, with their sentiment where reviewed.
WITH latest AS (
  SELECT max(run_date) AS run_date FROM gold.recommendations WHERE run_date <= :run_date
), sentiment AS (
  SELECT item_id, sum(volume) AS reviews,
         sum(mean_probability * volume) / sum(volume) AS mean_sentiment
  FROM gold.item_sentiment WHERE level = 'item' GROUP BY item_id
)
SELECT r.item_id, first(r.category) AS category, count(*) AS users,
       count_if(r.source = 'als') AS via_als,
       count_if(r.source = 'category_popularity') AS via_category_popularity,
       round(avg(r.rank), 2) AS mean_rank,
       s.reviews, round(s.mean_sentiment, 4) AS mean_sentiment
FROM gold.recommendations r
JOIN latest l ON r.run_date = l.run_date
LEFT JOIN sentiment s ON s.item_id = r.item_id
GROUP BY r.item_id, s.reviews, s.mean_sentiment
ORDER BY users DESC, r.item_id
LIMIT 50;


-- name: scoring_runs
-- params: run_date
-- The scoring runs up to :run_date: status, duration, users scored, fallbacks, model versions.
SELECT run_id, run_date, status, started_at, duration_s,
       CAST(try_element_at(metrics, 'users') AS BIGINT) AS users,
       CAST(try_element_at(metrics, 'fallbacks') AS BIGINT) AS fallbacks,
       CAST(try_element_at(metrics, 'recommendations') AS BIGINT) AS recommendations,
       try_element_at(metrics, 'sequence_model_version') AS sequence_model_version,
       try_element_at(metrics, 'sentiment_model_version') AS sentiment_model_version
FROM ops.runs
WHERE stage = 'score' AND run_date <= :run_date
ORDER BY started_at DESC;
