"""A tiny scored lake: the ``scored_lake`` fixture of tests/conftest.py (built once a session).

tests/test_scoring.py and tests/test_queries.py read it; tests/test_training.py reuses its inline
event rows. What it holds, all for run date ``RUN`` (2026-11-10):

* bronze.events: 30 regular users (``u00``..``u29``) with seeded random behaviour on 12 items in
  4 categories from 2026-11-01; ``new01`` seen only on the run date, on items the vocabulary has
  never seen (all OOV); ``gone01`` last seen on 2026-11-01.
* bronze.reviews: 48 reviews (English and Chinese) with the cue words of
  ``training.synthetic.review_corpus``; electronics turns negative in the second week.
* gold.user_features (``pipeline.transform.run_features``) and gold.vocabularies built through
  2026-11-06 (so later items are OOV).
* MLflow registry: an untrained but seeded sequence model logged and promoted through
  ``training.tracking``; a sentiment model trained (local launcher, a few epochs) on the planted
  synthetic corpus, promoted by ``train_sentiment_model``.

``build(spark, base)`` runs, in order: a dry run of ``run_score`` (must write nothing), then
``run_review_sentiment``, ``run_score`` twice (idempotency), and keeps the tables of each run.
Then it MERGEs ``after_run_rows()`` into bronze.events, as the next nights' ingests would: the
week after ``RUN`` (and a day beyond it), which the backtest queries of docs/queries.sql count.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path

RUN = dt.date(2026, 11, 10)
START = dt.date(2026, 11, 1)
VOCAB_THROUGH = dt.date(2026, 11, 6)
CATEGORIES = {"electronics": ["Acme", "Volt"], "books": ["Paper"], "grocery": ["Fresh", "Farm"],
              "toys": ["Fun"]}
ITEMS = [(f"i{c[:2]}{n}", c, CATEGORIES[c][n % len(CATEGORIES[c])], 5.0 + 7.0 * n + len(c))
         for c in CATEGORIES for n in range(3)]
OUTPUT_TABLES = ("gold.demand_forecasts", "gold.user_profiles", "gold.recommendations")
# The analysts' queries (docs/queries.sql) on this lake: the tables they read and their parameters.
QUERIES = Path(__file__).resolve().parents[2] / "docs" / "queries.sql"
QUERY_TABLES = ("gold.demand_forecasts", "gold.user_profiles", "gold.recommendations",
                "gold.item_sentiment", "gold.complaint_terms", "gold.review_sentiment",
                "gold.user_features", "bronze.events", "ops.runs")
QUERY_PARAMS = {"run_date": RUN, "category": "electronics", "min_reviews": 2, "user_id": "u03"}
SENTIMENT_TABLES = ("gold.review_sentiment", "gold.item_sentiment", "gold.complaint_terms")

_POS = {"en": ["great", "love", "perfect", "recommend"], "zh": ["很好", "喜欢", "满意", "推荐"]}
_NEG = {"en": ["terrible", "awful", "returned", "broken"], "zh": ["很差", "失望", "退货", "后悔"]}
_FILL = {"en": ["the", "size", "color", "order", "this", "fabric"],
         "zh": ["这个", "手机", "包装", "价格", "东西", "快递"]}


def _ts(day: dt.date, seconds: int) -> dt.datetime:
    return dt.datetime.combine(day, dt.time()) + dt.timedelta(seconds=seconds)


def event_rows() -> list[tuple]:
    """bronze.events rows (BRONZE_EVENTS order), seeded."""
    r = random.Random(11)
    rows = []

    def add(user, etype, day, sec, item=None, query=None):
        it = next((x for x in ITEMS if x[0] == item), None)
        cat, brand, price = (it[1], it[2], it[3]) if it else (None, None, None)
        if item and not it:  # an item outside the catalog (new, hence OOV)
            cat, brand, price = "electronics", "Nova", 99.0
        eid = hashlib.sha1(f"{user}|{etype}|{day}|{sec}|{item}".encode()).hexdigest()[:16]
        rows.append((eid, user, None, etype, item, cat, brand, price if etype != "search" else None,
                     1 if etype in ("cart", "purchase") else None, query, _ts(day, sec), None,
                     "test", "inline", eid, day))

    for u in range(30):
        user = f"u{u:02d}"
        liked = ITEMS[(u * 3) % len(ITEMS):(u * 3) % len(ITEMS) + 4] or ITEMS[:4]
        first = START + dt.timedelta(days=r.randint(0, 3))
        last = max(first, RUN - dt.timedelta(days=r.choice([0, 0, 1, 2, 4, 7])))
        for n in range(r.randint(6, 14)):
            day = first + dt.timedelta(days=r.randint(0, (last - first).days))
            item = r.choice(liked)[0]
            etype = r.choices(["view", "cart", "purchase", "fav", "search"], [60, 15, 12, 6, 7])[0]
            add(user, etype, day, 3600 * r.randint(8, 22) + n, None if etype == "search" else item,
                "cheap phone" if etype == "search" else None)
        add(user, "view", last, 3600 * 23, liked[0][0])
    for n, item in enumerate(["inew1", "inew2", "inew2"]):
        add("new01", ["view", "cart", "purchase"][n], RUN, 36000 + 60 * n, item)
    add("gone01", "view", START, 40000, ITEMS[0][0])
    add("gone01", "purchase", START, 40100, ITEMS[0][0])
    return rows


def after_run_rows() -> list[tuple]:
    """bronze.events rows dated after ``RUN``, ingested once the scoring runs are done.

    Purchases inside the 7 days after ``RUN`` (its last day included) by users with a profile,
    a user who buys twice, views and carts that are not purchases, a purchase on the 8th day, and
    a user first seen after ``RUN`` (no profile).
    """
    rows = []
    for user, etype, days, item in [
        ("u01", "purchase", 1, ITEMS[0][0]), ("u02", "purchase", 3, ITEMS[4][0]),
        ("u02", "purchase", 4, ITEMS[5][0]), ("u05", "view", 2, ITEMS[1][0]),
        ("u07", "cart", 2, ITEMS[2][0]), ("u08", "purchase", 7, ITEMS[7][0]),
        ("u09", "purchase", 8, ITEMS[8][0]), ("new01", "purchase", 5, ITEMS[3][0]),
        ("late01", "purchase", 2, ITEMS[6][0]),
    ]:
        day = RUN + dt.timedelta(days=days)
        it = next(x for x in ITEMS if x[0] == item)
        eid = hashlib.sha1(f"{user}|{etype}|{day}|after".encode()).hexdigest()[:16]
        rows.append((eid, user, None, etype, item, it[1], it[2], it[3],
                     1 if etype in ("cart", "purchase") else None, None, _ts(day, 43200), None,
                     "test", "inline", eid, day))
    return rows


def review_rows() -> list[tuple]:
    """bronze.reviews rows (BRONZE_REVIEWS order): electronics turns negative in week two."""
    r = random.Random(5)
    rows = []
    for n in range(48):
        day = START + dt.timedelta(days=n % 10)
        cat = ["electronics", "books", "grocery"][n % 3]
        lang = "zh" if n % 4 == 0 else "en"
        second_week = day >= dt.date(2026, 11, 2) + dt.timedelta(days=7)
        negative = (cat == "electronics" and second_week) or n % 5 == 0
        words = r.sample(_FILL[lang], 3) + r.sample((_NEG if negative else _POS)[lang], 2)
        r.shuffle(words)
        text = ("" if lang == "zh" else " ").join(words)
        item = next(i[0] for i in ITEMS if i[1] == cat)
        rid = f"r{n:03d}"
        rows.append((rid, f"u{n % 30:02d}", item, cat, 1 if negative else 5, None, None, text, lang,
                     _ts(day, 50000 + n), None, "test", "inline", rid, day))
    return rows


def lake_config(base: Path):
    from demandlake.config import load_config

    return load_config(overrides=[
        f"lake.uri={base / 'lake'}", "lake.catalog=in-memory",
        "scoring.batch_size=16", "scoring.segments.k=4",
        "scoring.segments.max_iter=10", "scoring.recommendations.top_k=4",
        "scoring.recommendations.als.max_iter=3", "scoring.recommendations.als.rank=4",
        "scoring.recommendations.als.blocks=auto", "scoring.complaint_terms.min_reviews=1",
        "training.epochs=10", "training.batch_size=32", "training.learning_rate=0.02",
        "training.deterministic=true",
        "training.threads=1", "training.baselines=false", "training.compare_with_serving=false",
        "sequence_model.hidden=8", "sequence_model.item_dim=4", "sequence_model.category_dim=4",
        "sequences.max_length=12",
        "sentiment_model.max_length=16", "sentiment_model.embedding_dim=8",
        "sentiment_model.filters=8", "sentiment_model.hidden=8", "sentiment_model.min_count=1",
        "sentiment_model.kernel_sizes=[2, 3]",
    ])


def write_inputs(spark, cfg) -> None:
    """bronze tables, gold.user_features of RUN and gold.vocabularies through VOCAB_THROUGH."""
    from demandlake import lake, schemas
    from demandlake.features.sequences import build_vocabularies
    from demandlake.pipeline.transform import run_features

    events = spark.createDataFrame(event_rows(), schemas.BRONZE_EVENTS)
    lake.overwrite_all(spark, cfg, "bronze.events", events)
    lake.overwrite_all(spark, cfg, "bronze.reviews",
                       spark.createDataFrame(review_rows(), schemas.BRONZE_REVIEWS))
    run_features(spark, cfg, RUN)
    vocab = build_vocabularies(lake.read(spark, cfg, "bronze.events"), VOCAB_THROUGH, 1)
    lake.overwrite_all(spark, cfg, "gold.vocabularies", vocab)


def log_sequence_model(spark, cfg) -> int:
    """Log a seeded, untrained sequence model and give it the serving alias; returns its version."""
    import keras
    import pandas as pd

    from demandlake import lake
    from demandlake.training import tracking
    from demandlake.training.runner import SECTIONS, vocab_sizes, vocabulary_frame, work_dir
    from demandlake.training.tasks import make_task

    sizes, vocab_version = vocab_sizes(spark, cfg)
    keras.utils.set_random_seed(3)
    task = make_task("sequence", cfg.data, {"vocab_sizes": sizes,
                                            "max_length": cfg["sequences.max_length"]})
    model = task.build_model()
    experiment = tracking.configure(cfg)
    params = {**tracking.flatten("", {s: cfg.get(s) or {} for s in SECTIONS["sequence"]}),
              "data.vocabularies_version": str(vocab_version),
              "data.vocabularies_table_id": lake.table_id(spark, cfg, "gold.vocabularies")}
    run_id, _ = tracking.start_run(experiment, "test-sequence", "sequence-test", params,
                                   {"task": "sequence"}, resume=False)
    tracking.log_vocabulary(run_id, vocabulary_frame(spark, cfg, vocab_version),
                            work_dir(cfg) / "test-sequence")  # as train_model does
    length = int(cfg["sequences.max_length"])
    example = pd.DataFrame({c: [[2] * length] for c in
                            ("item_ids", "category_ids", "event_type_ids", "price_buckets")})
    example["time_gaps"] = [[0.5] * length]
    example["static_features"] = [[1.0] * int(task.n_static)]
    uri = tracking.log_model(run_id, task, model, task.pyfunc_meta(), example)
    promotion = tracking.register_and_promote(uri, "demandlake-sequence", run_id,
                                              {"purchase_pr_auc": 0.5}, None, "purchase_pr_auc",
                                              True)
    tracking.finish_run(run_id, True)
    return promotion.version


def train_sentiment_model(spark, cfg) -> int:
    """Train the sentiment model on the planted synthetic corpus; returns the serving version."""
    from demandlake import lake, schemas
    from demandlake.training import synthetic
    from demandlake.training.runner import train_sentiment_model as train

    frame = synthetic.review_corpus(400, seed=2)
    columns = [f.name for f in schemas.GOLD_REVIEW_CORPUS.fields]
    corpus = spark.createDataFrame([tuple(r) for r in frame[columns].itertuples(index=False)],
                                   schemas.GOLD_REVIEW_CORPUS)
    lake.overwrite_all(spark, cfg, "gold.review_corpus", corpus)
    result = train(spark, cfg)
    assert result.promoted, result
    return result.version


@dataclass
class ScoredLake:
    """Everything the tests look at (pandas copies of the tables after each run)."""

    cfg: object
    sequence_version: int
    sentiment_version: int
    dry_counts: dict
    dry_tables: dict
    sentiment_counts: dict
    first_counts: dict
    second_counts: dict
    first: dict = field(default_factory=dict)
    second: dict = field(default_factory=dict)


def _snapshot(spark, cfg, names) -> dict:
    from demandlake import lake

    return {n: lake.read(spark, cfg, n).toPandas() for n in names}


def build(spark, base: Path) -> ScoredLake:
    """Build the scored lake under ``base`` (the ``scored_lake`` fixture calls this once)."""
    from demandlake import lake, schemas
    from demandlake.pipeline.score import run_review_sentiment, run_score

    cfg = lake_config(base)
    reset_catalog(spark, cfg)
    write_inputs(spark, cfg)
    seq_version = log_sequence_model(spark, cfg)
    sent_version = train_sentiment_model(spark, cfg)
    dry_counts = run_score(spark, cfg, RUN, dry_run=True)
    dry_tables = {n: len(t) for n, t in _snapshot(spark, cfg, OUTPUT_TABLES).items()}
    sentiment_counts = run_review_sentiment(spark, cfg, RUN)
    first_counts = run_score(spark, cfg, RUN)
    first = _snapshot(spark, cfg, OUTPUT_TABLES + SENTIMENT_TABLES)
    second_counts = run_score(spark, cfg, RUN)
    second = _snapshot(spark, cfg, OUTPUT_TABLES)
    lake.merge_insert(spark, cfg, "bronze.events",
                      spark.createDataFrame(after_run_rows(), schemas.BRONZE_EVENTS), ["event_id"])
    return ScoredLake(cfg, seq_version, sent_version, dry_counts, dry_tables, sentiment_counts,
                      first_counts, second_counts, first, second)


def reset_catalog(spark, cfg, names=()) -> None:
    """Forget table names registered by other tests (their ``cfg`` fixtures point them at their
    own lakes) and register ``names`` at this lake."""
    from demandlake import lake
    from helpers.catalog import forget_catalog

    forget_catalog(spark)
    lake.ensure_all(spark, cfg, names) if names else None
