"""Sequence-model inputs: vocabularies (gold.vocabularies) and padded examples
(gold.sequence_examples). This module's output is a contract other components read.

Vocabularies: ``vocab`` in item / category / event_type, ``id`` 0 = ``<pad>``, 1 = ``<oov>``,
2.. = tokens by count desc then token, counted over the training window only (items need
``min_item_count`` events, categories one). Event types are fixed: 2 + their position in
``schemas.EVENT_TYPES`` (view 2, cart 3, remove_from_cart 4, purchase 5, search 6, fav 7). The
``<pad>`` and ``<oov>`` rows are stored too, so ``max(id) + 1`` is the embedding size; the ``<oov>``
row counts the window's events whose token was dropped.

Examples, one per (user, cutoff date):

* inputs: the user's last ``max_length`` events with ``event_date < cutoff_date`` (i.e. before
  00:00 of the cutoff in the lake time zone), oldest first, LEFT-padded with 0 to ``max_length``
  (most recent event last). A missing item or category (search events) and tokens not in the
  vocabulary map to 1 (OOV). ``time_gaps`` are log1p(seconds since the previous event of the
  same sequence), 0 for its first event and for padding. ``price_buckets``: 0 pad, 1 unknown price,
  2.. the bucket among ``price_buckets`` edges (below edge 1 -> 2, at/above edge i -> 2 + i).
* ``static_features``: see ``STATIC_FEATURES``, computed from all events before the cutoff.
* labels (never for split ``score``): purchases with ``cutoff_date <= event_date <
  cutoff_date + horizon_days``: ``label_purchase`` 0/1 and ``label_categories`` (distinct sorted
  category ids; 1 for a category outside the vocabulary).

Cutoffs and splits (``plan_cutoffs``): every ``step`` days from the first date of data, while the
whole label window is observed (``cutoff + horizon <= last_date + 1``), in time order: train, then
validation, then test. Against leakage, no label window ``[cutoff, cutoff + horizon)`` of a split
may reach the first cutoff of a later one, so a train label never falls in the validation or test
period, nor a validation label in the test period: between two splits, ``ceil(horizon / step) - 1``
candidate cutoffs are left out. The fractions (``sequences.split``: 60/20/20, rounded half up)
apply to the cutoffs that remain, so a short history (28 days, horizon 7) still gets every split
(at least one cutoff each when there is room; when there is not, test and then validation are
left out). The
vocabulary is built from events before the first validation cutoff (the training window).
"""
from __future__ import annotations

import datetime as dt
import math
from typing import Mapping, Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from demandlake import schemas
from demandlake.sessions import last_n

PAD_ID, OOV_ID = 0, 1
PAD_TOKEN, OOV_TOKEN = "<pad>", "<oov>"
UNKNOWN_PRICE = 1
EVENT_TYPE_IDS = {t: i + 2 for i, t in enumerate(schemas.EVENT_TYPES)}
SPLITS = ("train", "validation", "test")
SCORE_SPLIT = "score"

# Order of the values in ``static_features`` (raw, not standardized; days relative to the cutoff).
STATIC_FEATURES = (
    "log1p_n_events",         # log1p(events before the cutoff)
    "log1p_n_purchases",      # log1p(purchase events before the cutoff)
    "days_since_first_seen",  # cutoff_date - date of the first event
    "days_since_last_event",  # cutoff_date - date of the last event before the cutoff (>= 1)
    "log1p_revenue",          # log1p(sum of price * coalesce(quantity, 1) over priced purchases)
)

VOCAB_COLUMNS = ["vocab", "token", "id", "count", "built_through"]
EXAMPLE_COLUMNS = [
    "user_id", "cutoff_date", "split", "seq_len", "item_ids", "category_ids", "event_type_ids",
    "time_gaps", "price_buckets", "static_features", "label_purchase", "label_categories",
]


# ---- cutoffs ------------------------------------------------------------------------------------
def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5 + 1e-9))


def normalized_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    """Validated train/validation/test fractions, scaled to sum to 1 (missing ones are 0)."""
    unknown = set(fractions) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split names {sorted(unknown)}; expected {SPLITS}")
    values = {s: float(fractions.get(s, 0.0)) for s in SPLITS}
    if any(v < 0 or math.isnan(v) for v in values.values()) or sum(values.values()) <= 0:
        raise ValueError(f"split fractions must be >= 0 and not all 0, got {dict(fractions)!r}")
    total = sum(values.values())
    return {s: v / total for s, v in values.items()}


def plan_cutoffs(first_date: dt.date, last_date: dt.date, step: int, horizon: int,
                 split_fractions: Mapping[str, float]) -> list[tuple[dt.date, str]]:
    """Training cutoff dates and their split (see the module doc for the rules).

    Args:
        first_date: first local date with events.
        last_date: last local date with events (label windows must end by ``last_date + 1``).
        step: days between cutoffs.
        horizon: label window length in days.
        split_fractions: ``{"train": .6, "validation": .2, "test": .2}``.

    Returns:
        ``[(cutoff_date, split), ...]`` in date order, without the cutoffs dropped against leakage.

    Raises:
        ValueError: for a non-positive step or horizon, reversed dates or bad fractions.
    """
    if int(step) < 1 or int(horizon) < 1:
        raise ValueError(f"step and horizon must be >= 1 day, got {step!r}, {horizon!r}")
    if last_date < first_date:
        raise ValueError(f"last_date {last_date} is before first_date {first_date}")
    fractions = normalized_fractions(split_fractions)
    h = dt.timedelta(days=int(horizon))
    end = last_date + dt.timedelta(days=1)
    candidates = []
    cutoff = first_date + dt.timedelta(days=int(step))
    while cutoff + h <= end:
        candidates.append(cutoff)
        cutoff += dt.timedelta(days=int(step))
    gap = -(-int(horizon) // int(step)) - 1  # candidates left out between two splits
    active = [s for s in SPLITS if fractions[s] > 0]
    usable = len(candidates) - gap * (len(active) - 1)
    while len(active) > 1 and usable < len(active):
        # No room for a cutoff in every split: leave out the smallest share (test before
        # validation on a tie: promotion compares models on validation).
        active.remove(min(reversed(active), key=lambda s: fractions[s]))
        usable = len(candidates) - gap * (len(active) - 1)
    counts = _allocate(max(usable, 0), {s: fractions[s] for s in active})
    plan, i = [], 0
    for split in active:
        plan += [(c, split) for c in candidates[i:i + counts[split]]]
        i += counts[split] + gap
    return plan


def _allocate(n: int, fractions: Mapping[str, float]) -> dict[str, int]:
    """``n`` items over the splits in order, by cumulative fraction rounded half up; when ``n``
    allows, a split that rounds to none takes one from the largest."""
    total, out, cum, done = sum(fractions.values()), {}, 0.0, 0
    for split, f in fractions.items():
        cum += f / total
        upto = _round_half_up(n * cum)
        out[split], done = upto - done, upto
    while n >= len(out) and min(out.values()) == 0:
        out[max(out, key=out.get)] -= 1
        out[min(out, key=out.get)] += 1
    return out


def vocabulary_through(plan: Sequence[tuple[dt.date, str]], horizon: int) -> dt.date:
    """Last day of the training window: the day before the first non-train cutoff (or, with train
    cutoffs only, the last day of their label windows)."""
    if not plan:
        raise ValueError("no cutoffs planned: not enough days of data for the horizon")
    later = [c for c, s in plan if s != "train"]
    if later:
        return min(later) - dt.timedelta(days=1)
    return max(c for c, _ in plan) + dt.timedelta(days=int(horizon) - 1)


# ---- vocabularies -------------------------------------------------------------------------------
def _reserved(vocab: str, oov_count: Column) -> Column:
    return F.array(
        F.struct(F.lit(vocab).alias("vocab"), F.lit(PAD_TOKEN).alias("token"),
                 F.lit(PAD_ID).cast("int").alias("id"), F.lit(0).cast("long").alias("count")),
        F.struct(F.lit(vocab).alias("vocab"), F.lit(OOV_TOKEN).alias("token"),
                 F.lit(OOV_ID).cast("int").alias("id"), oov_count.cast("long").alias("count")),
    )


def _ranked(counts: DataFrame, vocab: str, min_count: int) -> DataFrame:
    """Tokens with ``count >= min_count`` numbered 2.. by count desc, token; plus pad/oov rows."""
    order = Window.partitionBy("vocab").orderBy(F.desc("count"), F.asc("token"))
    tokens = (
        counts.where(F.col("count") >= min_count)
        .select(F.lit(vocab).alias("vocab"), "token", "count")
        .select("vocab", "token", (F.row_number().over(order) + 1).cast("int").alias("id"),
                F.col("count").cast("long").alias("count"))
    )
    dropped = F.coalesce(F.sum(F.when(F.col("count") < min_count, F.col("count"))), F.lit(0))
    reserved = counts.agg(_reserved(vocab, dropped).alias("r")).select(F.explode("r").alias("r"))
    return tokens.unionByName(reserved.select("r.*"))


def build_vocabularies(events: DataFrame, through_date: dt.date,
                       min_item_count: int = 2) -> DataFrame:
    """Token -> id maps from events with ``event_date <= through_date``.

    Args:
        events: bronze.events rows.
        through_date: last day of the training window (stored as ``built_through``).
        min_item_count: items with fewer events in the window map to OOV.

    Returns:
        ``VOCAB_COLUMNS`` rows for the item, category and event_type vocabularies.
    """
    if min_item_count < 1:
        raise ValueError(f"min_item_count must be >= 1, got {min_item_count!r}")
    window = events.where(F.col("event_date") <= F.lit(through_date))

    def counts(col: str) -> DataFrame:
        return (window.where(F.col(col).isNotNull())
                .groupBy(F.col(col).alias("token")).agg(F.count(F.lit(1)).alias("count")))

    type_rows = [F.struct(F.lit("event_type").alias("vocab"), F.lit(t).alias("token"),
                          F.lit(i).cast("int").alias("id"), F.col(t).cast("long").alias("count"))
                 for t, i in EVENT_TYPE_IDS.items()]
    type_totals = window.agg(*[F.count_if(F.col("event_type") == t).alias(t)
                               for t in EVENT_TYPE_IDS])
    event_types = type_totals.select(
        F.explode(F.concat(_reserved("event_type", F.lit(0)), F.array(*type_rows))).alias("r"))
    return (
        _ranked(counts("item_id"), "item", min_item_count)
        .unionByName(_ranked(counts("category"), "category", 1))
        .unionByName(event_types.select("r.*"))
        .select(*VOCAB_COLUMNS[:-1], F.lit(through_date).alias("built_through"))
    )


# ---- examples -----------------------------------------------------------------------------------
def price_bucket(price: Column, edges: Sequence[float]) -> Column:
    """0 is padding, 1 unknown price; 2 below edges[1], then 2 + i at or above edges[i]."""
    at_or_above = sum((price >= F.lit(float(e))).cast("int") for e in edges[1:])
    return F.when(price.isNull(), F.lit(UNKNOWN_PRICE)).otherwise(F.lit(2) + at_or_above)


def _token_ids(vocab: DataFrame, name: str, token_col: str, id_col: str) -> DataFrame:
    return vocab.where((F.col("vocab") == name) & (F.col("id") > OOV_ID)).select(
        F.col("token").alias(token_col), F.col("id").cast("int").alias(id_col))


def build_examples(
    events: DataFrame,
    vocab: DataFrame,
    cutoffs: Sequence[tuple[dt.date, str]],
    max_length: int,
    horizon_days: int,
    price_buckets: Sequence[float],
    with_labels: bool = True,
    min_events: int = 1,
) -> DataFrame:
    """Padded sequences (and labels) per user and cutoff; see the module doc.

    Args:
        events: bronze.events rows (all dates; inputs and labels are cut by date here).
        vocab: gold.vocabularies rows.
        cutoffs: ``[(cutoff_date, split), ...]``.
        max_length: sequence length after padding/truncation.
        horizon_days: label window length.
        price_buckets: increasing price edges.
        with_labels: False for scoring (labels null).
        min_events: users need at least this many events before a cutoff.

    Returns:
        ``EXAMPLE_COLUMNS`` rows.

    Raises:
        ValueError: for no cutoffs, unknown split names, non-positive lengths or unsorted edges.
    """
    if not cutoffs:
        raise ValueError("no cutoffs given")
    bad_splits = {s for _, s in cutoffs} - {*SPLITS, SCORE_SPLIT}
    if bad_splits:
        raise ValueError(f"unknown splits {sorted(bad_splits)}")
    if max_length < 1 or min_events < 1 or (with_labels and horizon_days < 1):
        raise ValueError("max_length, min_events and horizon_days must be >= 1")
    edges = [float(e) for e in price_buckets]
    if not edges or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"price_buckets must be strictly increasing edges, got {price_buckets!r}")

    cuts = events.sparkSession.createDataFrame(
        [(d, s) for d, s in cutoffs], "cutoff_date date, split string")
    is_purchase = F.col("event_type") == "purchase"
    coded = (
        events.join(_token_ids(vocab, "item", "item_id", "_item"), on="item_id", how="left")
        .join(F.broadcast(_token_ids(vocab, "category", "category", "_cat")), on="category",
              how="left")
        .join(F.broadcast(_token_ids(vocab, "event_type", "event_type", "_type")), on="event_type",
              how="left")
    )
    # Sorting structs sorts by their first fields: time, then event id for ties.
    event = F.struct(
        F.col("event_ts").alias("ts"), F.col("event_id").alias("eid"),
        F.col("event_date").alias("date"),
        F.coalesce(F.col("_item"), F.lit(OOV_ID)).alias("item"),
        F.coalesce(F.col("_cat"), F.lit(OOV_ID)).alias("cat"),
        F.coalesce(F.col("_type"), F.lit(OOV_ID)).alias("etype"),
        price_bucket(F.col("price"), edges).alias("price"),
        is_purchase.alias("purchase"),
        F.when(is_purchase, F.col("price") * F.coalesce(F.col("quantity"), F.lit(1)))
        .alias("amount"),
    )
    histories = coded.groupBy("user_id").agg(F.sort_array(F.collect_list(event)).alias("_events"))
    cutoff = F.col("cutoff_date")
    before = F.filter("_events", lambda e: e["date"] < cutoff)
    candidates = (
        histories.crossJoin(F.broadcast(cuts))
        .select("user_id", "cutoff_date", "split", "_events", before.alias("_before"))
        .where(F.size("_before") >= min_events)
        .select("*", last_n(F.col("_before"), max_length).alias("_seq"))
    )

    pad = F.lit(max_length) - F.size("_seq")

    def padded(field: str) -> Column:
        return F.concat(F.array_repeat(F.lit(PAD_ID), pad), F.transform("_seq", lambda e: e[field]))

    def gap(e: Column, i: Column) -> Column:
        prev_ts = F.try_element_at(F.col("_seq"), F.greatest(i, F.lit(1)))["ts"]
        seconds = (F.unix_micros(e["ts"]) - F.unix_micros(prev_ts)) / F.lit(1e6)
        return F.when(i == 0, F.lit(0.0)).otherwise(F.log1p(seconds))

    gaps = F.concat(F.array_repeat(F.lit(0.0), pad), F.transform("_seq", gap))
    n_purchases = F.size(F.filter("_before", lambda e: e["purchase"]))
    revenue = F.aggregate("_before", F.lit(0.0),
                          lambda acc, e: acc + F.coalesce(e["amount"], F.lit(0.0)))
    static = F.array(
        F.log1p(F.size("_before").cast("double")),
        F.log1p(n_purchases.cast("double")),
        F.datediff(cutoff, F.try_element_at(F.col("_before"), F.lit(1))["date"]).cast("double"),
        F.datediff(cutoff, F.try_element_at(F.col("_before"), F.lit(-1))["date"]).cast("double"),
        F.log1p(revenue),
    )
    if with_labels:
        label_end = F.date_add(cutoff, int(horizon_days))
        bought = F.filter("_events", lambda e: e["purchase"] & (e["date"] >= cutoff)
                          & (e["date"] < label_end))
        label_purchase = (F.size(bought) > 0).cast("int")
        label_categories = F.array_sort(F.array_distinct(F.transform(bought, lambda e: e["cat"])))
    else:
        label_purchase = F.lit(None).cast("int")
        label_categories = F.lit(None).cast("array<int>")
    return candidates.select(
        "user_id",
        "cutoff_date",
        "split",
        F.size("_seq").alias("seq_len"),
        padded("item").alias("item_ids"),
        padded("cat").alias("category_ids"),
        padded("etype").alias("event_type_ids"),
        gaps.cast("array<float>").alias("time_gaps"),
        padded("price").alias("price_buckets"),
        static.cast("array<float>").alias("static_features"),
        label_purchase.alias("label_purchase"),
        label_categories.alias("label_categories"),
    )
