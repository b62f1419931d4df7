"""The StructType of every raw format and every table, in one place.

Raw formats are read with all-string schemas (so a wrong type becomes a quarantine reason, not a
read failure); ``ingest.validate`` casts them into the canonical typed schemas below.
"""
from __future__ import annotations

from pyspark.sql import types as T

S, L, D, I, TS, DT, B = (T.StringType(), T.LongType(), T.DoubleType(), T.IntegerType(),
                         T.TimestampType(), T.DateType(), T.BooleanType())


def _f(name: str, dtype: T.DataType, nullable: bool = True, comment: str = "") -> T.StructField:
    return T.StructField(name, dtype, nullable, {"comment": comment} if comment else {})


EVENT_TYPES = ("view", "cart", "remove_from_cart", "purchase", "search", "fav")

# ---- raw, canonical JSON lines (docs/DATA_FORMATS.md) ------------------------------------------
RAW_EVENT_FIELDS = ["event_id", "user_id", "session_id", "event_type", "item_id", "category",
                    "brand", "price", "quantity", "search_query", "timestamp"]
RAW_REVIEW_FIELDS = ["review_id", "user_id", "item_id", "category", "rating", "label", "title",
                     "text", "language", "timestamp"]

# Canonical string-typed columns every reader produces before validation.
CANON_EVENT_STR = T.StructType([_f(c, S) for c in RAW_EVENT_FIELDS] + [_f("extras", S)])
CANON_REVIEW_STR = T.StructType([_f(c, S) for c in RAW_REVIEW_FIELDS] + [_f("extras", S)])

# ---- real public formats (all read as strings) ------------------------------------------------
TAOBAO_RAW = T.StructType([_f(c, S) for c in
                           ["user_id", "item_id", "category_id", "behavior_type", "timestamp"]])
YOOCHOOSE_RAW = T.StructType([_f(c, S) for c in ["SessionId", "ItemId", "Time"]])
REES46_RAW = T.StructType([_f(c, S) for c in
                           ["event_time", "event_type", "product_id", "category_id",
                            "category_code", "brand", "price", "user_id", "user_session"]])
RETAILROCKET_RAW = T.StructType([_f(c, S) for c in
                                 ["timestamp", "visitorid", "event", "itemid", "transactionid"]])
REVIEWS_ZH_RAW = T.StructType([_f(c, S) for c in ["cat", "label", "review"]])
REVIEWS_EN_RAW = T.StructType([_f(c, S) for c in
                               ["_c0", "Clothing ID", "Age", "Title", "Review Text", "Rating",
                                "Recommended IND", "Positive Feedback Count", "Division Name",
                                "Department Name", "Class Name"]])

# ---- bronze ------------------------------------------------------------------------------------
BRONZE_EVENTS = T.StructType([
    _f("event_id", S, False, "source event id, or a content hash when the source has none"),
    _f("user_id", S, False, "user id (pseudonymized when ingest.pseudonymize_user_ids)"),
    _f("session_id", S, True, "session id as given by the source, if any"),
    _f("event_type", S, False, "one of view, cart, remove_from_cart, purchase, search, fav"),
    _f("item_id", S, True, "item id (null only for search events)"),
    _f("category", S, True, "category id or code"),
    _f("brand", S, True, "brand"),
    _f("price", D, True, "unit price"),
    _f("quantity", I, True, "quantity"),
    _f("search_query", S, True, "search text for search events"),
    _f("event_ts", TS, False, "event time (UTC instant)"),
    _f("extras", T.MapType(S, S), True, "source columns without a canonical home"),
    _f("source", S, False, "input format, e.g. taobao, rees46, canonical_events"),
    _f("source_file", S, False, "file the record was read from"),
    _f("record_hash", S, False, "sha2 of the canonical content, to tell duplicates from conflicts"),
    _f("event_date", DT, False, "local date of event_ts in lake.timezone (partition)"),
])

BRONZE_REVIEWS = T.StructType([
    _f("review_id", S, False, "source review id, or a content hash"),
    _f("user_id", S, True, "reviewer (null for anonymous public corpora)"),
    _f("item_id", S, True, "reviewed item"),
    _f("category", S, True, "product category"),
    _f("rating", I, True, "stars 1-5"),
    _f("label", I, True, "explicit sentiment label from the source (1 positive, 0 negative)"),
    _f("title", S, True, "review title"),
    _f("text", S, True, "review text"),
    _f("language", S, True, "ISO 639-1 language code, from the source or detected"),
    _f("review_ts", TS, True, "review time (UTC instant)"),
    _f("extras", T.MapType(S, S), True, "source columns without a canonical home"),
    _f("source", S, False, "input format"),
    _f("source_file", S, False, "file the record was read from"),
    _f("record_hash", S, False, "sha2 of the canonical content"),
    _f("review_date", DT, True, "local date of review_ts (partition; null when undated)"),
])

QUARANTINE = T.StructType([
    _f("kind", S, False, "events or reviews"),
    _f("source", S, False, "input format"),
    _f("source_file", S, False, "file the record was read from"),
    _f("record_id", S, False, "sha2 of file, position and raw text: the row's stable key"),
    _f("raw", S, True, "the record as read (truncated to 64 KiB)"),
    _f("reason", S, False, "first failed check, e.g. malformed_record, negative_price"),
    _f("detail", S, True, "what was wrong, in words"),
    _f("ingest_date", DT, False, "run date of the ingest that quarantined it (partition)"),
])

RUNS = T.StructType([
    _f("run_id", S, False, "unique id of this execution"),
    _f("stage", S, False, "ingest, sessions, features, train_sequence, score, ..."),
    _f("run_date", DT, True, "logical date the run was for"),
    _f("status", S, False, "succeeded, failed or dry_run"),
    _f("started_at", TS, False, "wall-clock start"),
    _f("finished_at", TS, True, "wall-clock end"),
    _f("duration_s", D, True, "seconds"),
    _f("metrics", T.MapType(S, S), True, "counts and facts, e.g. rows_read, quarantined"),
    _f("error", S, True, "error message when failed"),
])

QUALITY_CHECKS = T.StructType([
    _f("run_id", S, False, "ops.runs run id of the stage that ran the check"),
    _f("stage", S, False, "stage publishing the table, e.g. features, score"),
    _f("table_name", S, False, "table the checked rows were about to be written to"),
    _f("run_date", DT, True, "logical date (the partition being published)"),
    _f("check_name", S, False, "schema, row_count, row_count_trend, not_null.<col>, "
                               "null_rate.<col>, unique_key, constraint.<name>, freshness"),
    _f("blocking", B, False, "a failed blocking check stops publication of the table"),
    _f("passed", B, False, "whether the check passed"),
    _f("observed", D, True, "the measured value (rows, nulls, violations, ratio, days)"),
    _f("threshold", S, True, "what the value was compared with, in words"),
    _f("message", S, True, "what was found, in words"),
    _f("checked_at", TS, False, "wall-clock time of the check"),
])

# ---- silver / gold: sessions and features (sessions.py, features/) ------------------------------
SILVER_SESSIONS = T.StructType([
    _f("session_id", S, False, "sha2-256 of user_id and the session start (Unix microseconds)"),
    _f("user_id", S, False, "user id"),
    _f("source_session_id", S, True, "first non-null session id the source gave these events"),
    _f("session_start", TS, False, "first event time (UTC instant)"),
    _f("session_end", TS, False, "last event time (UTC instant)"),
    _f("duration_s", D, False, "seconds from first to last event"),
    _f("n_events", L, False, "events in the session"),
    _f("n_views", L, False, "view events"),
    _f("n_carts", L, False, "cart (add-to-cart) events"),
    _f("n_remove_from_cart", L, False, "remove_from_cart events"),
    _f("n_purchases", L, False, "purchase events"),
    _f("n_searches", L, False, "search events"),
    _f("n_favs", L, False, "fav events"),
    _f("distinct_items", L, False, "distinct non-null item ids"),
    _f("distinct_categories", L, False, "distinct non-null categories"),
    _f("item_sequence", T.ArrayType(S), False,
       "non-null item ids in time order, the last sessions.max_sequence_length kept"),
    _f("category_sequence", T.ArrayType(S), False,
       "non-null categories in time order, the last sessions.max_sequence_length kept"),
    _f("cart_adds", L, False, "units added to cart: sum of coalesce(quantity, 1) over cart events"),
    _f("purchases", L, False, "units bought: sum of coalesce(quantity, 1) over purchase events"),
    _f("revenue", D, True, "sum of price * coalesce(quantity, 1) over priced purchases; 0 without "
                           "purchases, null when no purchase has a price"),
    _f("converted", B, False, "whether the session has a purchase"),
    _f("landing_item", S, True, "first non-null item id"),
    _f("exit_item", S, True, "last non-null item id"),
    _f("session_date", DT, False, "local date of session_start in lake.timezone (partition)"),
])

NAME_WEIGHT = T.ArrayType(T.StructType([_f("name", S), _f("weight", D)]))

GOLD_USER_FEATURES = T.StructType([
    _f("user_id", S, False, "user id"),
    _f("snapshot_date", DT, False, "features use events with event_date <= this date only (partition)"),
    _f("first_seen_date", DT, False, "local date of the user's first event"),
    _f("days_since_first_seen", I, False, "snapshot_date - first_seen_date"),
    _f("days_since_last_event", I, False, "snapshot_date - date of the last event"),
    _f("days_since_last_purchase", I, True, "snapshot_date - date of the last purchase; null if none"),
    _f("events_by_window", T.MapType(I, L), False,
       "window days -> events with event_date in (snapshot - days, snapshot]"),
    _f("purchases_by_window", T.MapType(I, L), False,
       "window days -> purchase events in the window (frequency)"),
    _f("revenue_by_window", T.MapType(I, D), False,
       "window days -> revenue of priced purchases in the window (monetary); null value when the "
       "window has purchases but none priced"),
    _f("sessions_count", L, False, "sessions in the lookback window (the longest feature window)"),
    _f("conversion_rate", D, True, "share of lookback sessions with a purchase"),
    _f("cart_abandonment_rate", D, True,
       "share of lookback sessions with a cart add that have no purchase; null without cart adds"),
    _f("avg_order_value", D, True, "revenue per converted lookback session with a known revenue"),
    _f("mean_purchase_price", D, True, "mean unit price of purchases in the lookback window"),
    _f("mean_view_price", D, True, "mean unit price of viewed items in the lookback window"),
    _f("price_sensitivity", D, True,
       "share of priced lookback purchases below their category's median price (all users' priced "
       "events in the lookback window)"),
    _f("top_categories", NAME_WEIGHT, False,
       "top features.top_k categories by weighted interactions, weight = share of the user's total"),
    _f("top_brands", NAME_WEIGHT, False, "top features.top_k brands, weighted as top_categories"),
    _f("active_hours", T.ArrayType(L), False,
       "24 counts of lookback events per local hour of day (index 0 = 00:00-00:59)"),
    _f("active_weekdays", T.ArrayType(L), False,
       "7 counts of lookback events per local weekday (index 0 = Monday)"),
    _f("recent_search_terms", T.ArrayType(S), False,
       "up to features.top_k distinct lower-cased search terms, most recent first"),
    _f("review_count", L, True, "reviews the user wrote with review_date <= snapshot_date"),
    _f("mean_review_sentiment", D, True, "mean sentiment score from the sentiment model; null until one"),
])

GOLD_VOCABULARIES = T.StructType([
    _f("vocab", S, False, "item, category or event_type"),
    _f("token", S, False, "the source value; <pad> (id 0) and <oov> (id 1) are reserved"),
    _f("id", I, False, "0 padding, 1 out-of-vocabulary, 2.. by count desc then token"),
    _f("count", L, False, "events in the training window (for <oov>: events of dropped tokens)"),
    _f("built_through", DT, False, "last event_date of the training window"),
])

GOLD_SEQUENCE_EXAMPLES = T.StructType([
    _f("user_id", S, False, "user id"),
    _f("cutoff_date", DT, False, "inputs use event_date < cutoff_date, labels [cutoff, cutoff+horizon) (partition)"),
    _f("split", S, False, "train, validation, test or score"),
    _f("seq_len", I, False, "real events in the sequences before left padding"),
    _f("item_ids", T.ArrayType(I), False, "item vocab ids, left-padded with 0, most recent last"),
    _f("category_ids", T.ArrayType(I), False, "category vocab ids, aligned with item_ids"),
    _f("event_type_ids", T.ArrayType(I), False, "event_type vocab ids, aligned with item_ids"),
    _f("time_gaps", T.ArrayType(T.FloatType()), False,
       "log1p(seconds since the previous event in the sequence); 0 for the first and for padding"),
    _f("price_buckets", T.ArrayType(I), False,
       "0 pad, 1 unknown price, 2.. index into sequences.price_buckets edges"),
    _f("static_features", T.ArrayType(T.FloatType()), False,
       "raw user features before the cutoff, order in features.sequences.STATIC_FEATURES"),
    _f("label_purchase", I, True, "1 if any purchase in [cutoff, cutoff + horizon); null for score"),
    _f("label_categories", T.ArrayType(I), True,
       "distinct sorted category vocab ids purchased in the label window; null for score"),
])

GOLD_REVIEW_CORPUS = T.StructType([
    _f("review_id", S, False, "review id"),
    _f("user_id", S, True, "reviewer"),
    _f("item_id", S, True, "reviewed item"),
    _f("category", S, True, "product category"),
    _f("source", S, False, "input format"),
    _f("rating", I, True, "stars 1-5"),
    _f("label", I, True, "1 positive, 0 negative: the source label, else rating 1-2 -> 0, 4-5 -> 1; "
                         "null = neutral or unknown (excluded from binary training)"),
    _f("language", S, False, "source language, else zh when CJK characters are > 30% of the text, else en"),
    _f("text", S, False, "normalized text, title first"),
    _f("n_chars", I, False, "characters in text"),
    _f("split", S, False, "train, validation or test, from a hash of review_id"),
])

# ---- gold: nightly scoring (scoring/, pipeline/score.py; docs/SCORING.md) -------------------------
CATEGORY_PROBABILITY = T.ArrayType(T.StructType([_f("category", S), _f("probability", D)]))

GOLD_DEMAND_FORECASTS = T.StructType([
    _f("user_id", S, False, "user id"),
    _f("run_date", DT, False, "scoring date: inputs use events with event_date <= run_date (partition)"),
    _f("purchase_probability", D, False,
       "probability of a purchase in the next sequences.horizon_days days (model or fallback)"),
    _f("top_categories", CATEGORY_PROBABILITY, False,
       "up to scoring.top_categories categories the user is most likely to buy in, best first; "
       "probability = P(purchase) * P(category | purchase) for the softmax head, the head's own "
       "per-category probability for the sigmoid head, P(purchase) * preference share for a fallback"),
    _f("score_band", S, False, "high / medium / low from scoring.bands thresholds on purchase_probability"),
    _f("is_fallback", B, False, "true when the numbers come from the fallback, not the model"),
    _f("source", S, False, "model, or fallback: <rule>/<why> (see docs/SCORING.md)"),
    _f("model_name", S, True, "registered name of the serving sequence model (null when none serves)"),
    _f("model_version", I, True, "registry version of the serving sequence model"),
    _f("run_id", S, False, "ops.runs run id of the scoring run that wrote the row"),
])

GOLD_USER_PROFILES = T.StructType([
    _f("user_id", S, False, "user id"),
    _f("run_date", DT, False, "profile as of the end of this date (partition)"),
    _f("segment_id", I, False,
       "KMeans segment (numbered by centroid: same data and seed, same id)"),
    _f("segment", S, False, "readable segment name from the cluster centroid (docs/SCORING.md rules)"),
    _f("value_tier", S, False, "high (top scoring.value_tier_top_share of buyers by lookback revenue), "
                               "medium (other buyers), low (no purchase revenue in the lookback window)"),
    _f("top_categories", NAME_WEIGHT, False, "preferred categories (gold.user_features.top_categories)"),
    _f("top_brands", NAME_WEIGHT, False, "preferred brands (gold.user_features.top_brands)"),
    _f("active_hours", T.ArrayType(I), False,
       "up to 3 local hours of day (0-23) with the most lookback events, most active first"),
    _f("review_sentiment", D, True,
       "mean positive probability of the user's scored reviews up to run_date; null without any"),
    _f("purchase_probability", D, False, "the user's demand_forecasts purchase probability"),
    _f("churn_risk", D, False,
       "scoring.churn.weight * (1 - purchase_probability) + (1 - weight) * "
       "min(days since last event / scoring.churn.recency_days, 1), in [0, 1]"),
    _f("first_seen", DT, False, "local date of the user's first event"),
    _f("last_seen", DT, False, "local date of the user's last event up to run_date"),
    _f("sequence_model_version", I, True, "serving sequence model version used for the forecast"),
    _f("sentiment_model_version", I, True, "serving sentiment model version (null when none serves)"),
    _f("segment_model", S, False, "how segments were fitted, e.g. kmeans k=5 seed=7"),
    _f("run_id", S, False, "ops.runs run id of the scoring run that wrote the row"),
])

GOLD_RECOMMENDATIONS = T.StructType([
    _f("user_id", S, False, "user id"),
    _f("run_date", DT, False, "scoring date (partition)"),
    _f("rank", I, False, "1 = best; ALS items first, then category popularity fill-ins"),
    _f("item_id", S, False, "recommended item (never one the user bought up to run_date)"),
    _f("category", S, True, "the item's most frequent category in the lookback events"),
    _f("score", D, False, "ALS implicit preference, or category probability * item share "
                          "(not comparable across sources)"),
    _f("source", S, False, "als or category_popularity"),
    _f("reason", S, False, "why the item is recommended, in words"),
    _f("sequence_model_version", I, True, "sequence model version behind the predicted categories"),
    _f("run_id", S, False, "ops.runs run id of the scoring run that wrote the row"),
])

GOLD_REVIEW_SENTIMENT = T.StructType([
    _f("review_id", S, False, "review id (bronze.reviews)"),
    _f("user_id", S, True, "reviewer"),
    _f("item_id", S, True, "reviewed item"),
    _f("category", S, True, "product category"),
    _f("review_date", DT, True, "local date of the review"),
    _f("language", S, True, "language of the scored text (gold.review_corpus rules)"),
    _f("probability", D, False, "model probability that the review is positive"),
    _f("label", S, False, "negative (< scoring.sentiment.negative_below), positive "
                          "(>= scoring.sentiment.positive_from), else neutral"),
    _f("model_name", S, False, "registered sentiment model name"),
    _f("model_version", I, False, "registry version that scored the review"),
    _f("scored_date", DT, False, "run date of the scoring run"),
    _f("run_id", S, False, "ops.runs run id of the scoring run"),
])

GOLD_ITEM_SENTIMENT = T.StructType([
    _f("level", S, False, "item or category"),
    _f("item_id", S, True, "the item (null on category rows)"),
    _f("category", S, True, "the category (of the item on item rows)"),
    _f("week", DT, False, "Monday of the review week"),
    _f("volume", L, False, "scored reviews in the week"),
    _f("mean_probability", D, False, "mean positive probability"),
    _f("share_negative", D, False, "share of the week's reviews labelled negative"),
    _f("negative_trend", D, True,
       "share_negative minus the previous calendar week's (null when that week had no reviews)"),
    _f("model_version", I, True, "newest sentiment model version among the week's reviews"),
    _f("run_id", S, False, "ops.runs run id of the run that recomputed the table"),
])

GOLD_COMPLAINT_TERMS = T.StructType([
    _f("run_date", DT, False, "run date; reviews of the scoring.complaint_terms.window_days days "
                              "up to it (partition)"),
    _f("category", S, False, "product category"),
    _f("rank", I, False, "1 = most characteristic of negative reviews"),
    _f("term", S, False, "token (jieba word for Chinese, lower-cased word for other text)"),
    _f("score", D, False, "z-score of the log-odds ratio negative vs positive reviews "
                          "(document frequencies, symmetric prior; docs/SCORING.md)"),
    _f("negative_reviews", L, False, "negative reviews of the category containing the term"),
    _f("positive_reviews", L, False, "positive reviews of the category containing the term"),
    _f("model_version", I, True, "sentiment model version of the labels"),
    _f("run_id", S, False, "ops.runs run id"),
])

# ---- ops: right-to-erasure requests (privacy.py) -------------------------------------------------
FORGET_REQUESTS = T.StructType([
    _f("request_id", S, False, "id of the erasure request (given by the caller, or generated)"),
    _f("requested_at", TS, False, "wall-clock start of the (latest) attempt"),
    _f("finished_at", TS, True, "wall-clock end of the (latest) attempt"),
    _f("user_hashes", T.ArrayType(S), False,
       "HMAC-SHA256 of each requested user id under $DEMANDLAKE_PSEUDONYM_KEY (domain-separated "
       "from the ingest pseudonym); never the id itself"),
    _f("rows_deleted", T.MapType(S, L), False, "table name -> rows deleted, over all attempts"),
    _f("table_versions", T.MapType(S, L), False,
       "table name -> Delta version of the last delete commit (older versions still hold the rows "
       "until VACUUM)"),
    _f("vacuum_hours", D, True, "VACUUM retention used on the touched tables; null when not vacuumed"),
    _f("status", S, False, "succeeded or failed"),
    _f("error", S, True, "error message when failed (user ids masked)"),
])
