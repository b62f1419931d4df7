"""A reference implementation, in DuckDB SQL, of gold.vocabularies and gold.sequence_examples.

It reproduces ``demandlake.pipeline.transform.run_sequence_examples`` (the cutoff plan,
``features.sequences.build_vocabularies`` and ``build_examples`` with labels) from the same input
the Spark stage reads: the Parquet files of the current snapshot of the bronze.events Delta table
(its partition column ``event_date`` comes from the ``event_date=YYYY-MM-DD`` folders, as in
Delta). Nothing of ``demandlake`` is imported: the rules are restated here, written as joins,
window functions and aggregates rather than the per-user arrays of the Spark code, so that the two
agree only if the rules do. It serves as an independent check of the Spark semantics
(tests/test_duckdb_examples.py) and as a single-process baseline for benchmarks.

    python bench/duckdb_examples.py --events-files ev.txt --out /tmp/ref_examples \\
        --json-out /tmp/ref_examples/timings.json

The semantics reproduced, rule by rule (the defaults are conf/defaults.yaml ``sequences``):

* history: ``last`` = the latest ``event_date``; ``first`` = the ``history_start_quantile`` of
  all event dates, taken as Spark's ``percentile_approx`` answers when it is exact: the date of
  rank ``ceil(q * n)`` in date order (the smallest date when ``q <= 1e-4``, the largest when
  ``q >= 1 - 1e-4``). Spark's answer is exact while each task's partial summary holds under
  5,000 events and the total is under 10,000, approximate (within about ``1e-4 * n`` ranks)
  beyond; ``--history-first`` pins the date if that ever matters (it did not at 1M events).
* cutoffs: ``first + step``, ``first + 2 step``, ... while ``cutoff + horizon <= last + 1``;
  ``ceil(horizon / step) - 1`` candidates are left out between two splits; splits with a
  fraction of 0 are skipped; while the remaining candidates cannot give every split one cutoff,
  the split with the smallest fraction is dropped (test before validation on a tie); cutoffs are
  allocated in time order train, validation, test by cumulative fraction rounded half up, and a
  split left with none takes one from the largest when there are enough.
* vocabulary window: events with ``event_date <= through``, ``through`` = the day before the
  first non-train cutoff (with train cutoffs only: the last cutoff + horizon - 1).
* vocabularies: ids 0 ``<pad>`` (count 0) and 1 ``<oov>``; items with at least
  ``min_item_count`` events in the window (categories: at least one) numbered 2.. by count desc,
  then token (byte order); ``<oov>`` counts the window's events of dropped items (0 for
  categories); null items/categories are not counted. Event types have fixed ids: view 2, cart 3,
  remove_from_cart 4, purchase 5, search 6, fav 7, counted over the window; their ``<oov>`` 0.
* coding: a null or unknown item / category / event type is 1; price bucket 1 for a null price,
  else ``2 + #{i >= 1 : price >= edges[i]}`` (``edges[0]`` is never compared).
* examples, one per (user, cutoff) with at least ``min_events`` events with
  ``event_date < cutoff`` (the local date, so before 00:00 of the cutoff in the lake time zone):
  the last ``max_length`` of them in ``(event_ts, event_id)`` order (ties by event id, string
  byte order), oldest first, left-padded with 0; ``seq_len`` = events kept;
  ``time_gaps`` = ``ln(1 + seconds since the previous kept event)`` (microsecond precision),
  0 for the first kept event (even when older events were cut off) and for padding, as float.
* static features (float), over all the events before the cutoff, not only the kept ones:
  ``ln(1 + events)``, ``ln(1 + purchases)``, ``cutoff - first event date``,
  ``cutoff - last event date``, ``ln(1 + revenue)``, revenue = sum of
  ``price * coalesce(quantity, 1)`` over priced purchases (0 without any).
* labels: purchases with ``cutoff <= event_date < cutoff + horizon`` (all of the user's events,
  not only the kept ones): ``label_purchase`` 1 if any else 0, ``label_categories`` their
  distinct category ids sorted ascending (1 for a null or out-of-vocabulary category; ``[]``
  without purchases). With ``with_labels=False`` (split ``score``) both are null.

DuckDB has no ``log1p``; ``ln(1 + x)`` differs from Java's ``log1p`` by at most an ulp of a double,
which the cast to float almost always absorbs: compare the float arrays with a tolerance of a few
float ulps (``compare``'s ``tol``).
"""
from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import duckdb_reference as base  # noqa: E402  (connect, register_inputs, _q: no semantics)

log = logging.getLogger(__name__)

# Restated from demandlake (not imported: the reference must not share code with what it checks).
EVENT_TYPES = ("view", "cart", "remove_from_cart", "purchase", "search", "fav")
EVENT_TYPE_IDS = {t: i + 2 for i, t in enumerate(EVENT_TYPES)}
PAD_ID, OOV_ID, UNKNOWN_PRICE = 0, 1, 1
SPLITS = ("train", "validation", "test")
SCORE_SPLIT = "score"
# percentile_approx's default accuracy is 10,000: its relative error.
QUANTILE_ERROR = 1.0 / 10_000
DEFAULTS = {"max_length": 30, "horizon_days": 7, "step_days": 1, "min_events": 2,
            "min_item_count": 2, "history_start_quantile": 0.001,
            "price_buckets": (0, 10, 20, 50, 100, 200, 500, 1000),
            "split": {"train": 0.6, "validation": 0.2, "test": 0.2}}
VOCAB_COLUMNS = ["vocab", "token", "id", "count", "built_through"]
EXAMPLE_COLUMNS = [
    "user_id", "cutoff_date", "split", "seq_len", "item_ids", "category_ids", "event_type_ids",
    "time_gaps", "price_buckets", "static_features", "label_purchase", "label_categories",
]
FLOAT_ARRAYS = ("time_gaps", "static_features")

_q = base._q


# ---- the cutoff plan (plain Python: a handful of dates) ---------------------------------------
def history_bounds(con, start_quantile: float) -> tuple[dt.date, dt.date]:
    """(first, last) event date of the ``events`` view; see the module doc for ``first``.

    Raises:
        ValueError: when there are no events or the quantile is outside [0, 1].
    """
    q = float(start_quantile)
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"history_start_quantile must be in [0, 1], got {start_quantile!r}")
    n, lo, hi = con.execute("SELECT count(*), min(event_date), max(event_date) FROM events"
                            ).fetchone()
    if not n:
        raise ValueError("no events: nothing to build sequences from")
    if q <= QUANTILE_ERROR:
        return lo, hi
    if q >= 1 - QUANTILE_ERROR:
        return hi, hi
    rank = max(int(math.ceil(q * n)), 1)
    first = con.execute(f"SELECT event_date FROM events ORDER BY event_date "
                        f"LIMIT 1 OFFSET {rank - 1}").fetchone()[0]
    return first, hi


def _half_up(x: float) -> int:
    return int(math.floor(x + 0.5 + 1e-9))


def plan_cutoffs(first: dt.date, last: dt.date, step: int, horizon: int,
                 fractions: Mapping[str, float]) -> list[tuple[dt.date, str]]:
    """The ``(cutoff_date, split)`` plan in date order (rules in the module doc).

    Raises:
        ValueError: for a step or horizon under 1, reversed dates or bad fractions.
    """
    if int(step) < 1 or int(horizon) < 1 or last < first:
        raise ValueError(f"bad plan arguments: {first}..{last}, step {step}, horizon {horizon}")
    unknown = set(fractions) - set(SPLITS)
    weights = {s: float(fractions.get(s, 0.0)) for s in SPLITS}
    if unknown or any(not w >= 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError(f"bad split fractions {dict(fractions)!r}")
    weights = {s: w / sum(weights.values()) for s, w in weights.items()}
    candidates, cutoff = [], first + dt.timedelta(days=step)
    while cutoff + dt.timedelta(days=horizon) <= last + dt.timedelta(days=1):
        candidates.append(cutoff)
        cutoff += dt.timedelta(days=step)
    gap = math.ceil(horizon / step) - 1
    splits = [s for s in SPLITS if weights[s] > 0]
    while len(splits) > 1 and len(candidates) - gap * (len(splits) - 1) < len(splits):
        # the smallest share goes; on a tie the later split (test before validation)
        smallest = min(weights[s] for s in splits)
        splits.remove([s for s in splits if weights[s] == smallest][-1])
    n = max(len(candidates) - gap * (len(splits) - 1), 0)
    total = sum(weights[s] for s in splits)
    counts, cum, done = {}, 0.0, 0
    for s in splits:
        cum += weights[s] / total
        upto = _half_up(n * cum)
        counts[s], done = upto - done, upto
    while n >= len(counts) and min(counts.values()) == 0:
        largest = max(counts, key=counts.get)
        counts[largest] -= 1
        counts[min(counts, key=counts.get)] += 1
    plan, i = [], 0
    for s in splits:
        plan += [(c, s) for c in candidates[i:i + counts[s]]]
        i += counts[s] + gap
    return plan


def vocabulary_through(plan: Sequence[tuple[dt.date, str]], horizon: int) -> dt.date:
    """Last day of the vocabulary window (module doc)."""
    if not plan:
        raise ValueError("no cutoffs planned")
    later = [c for c, s in plan if s != "train"]
    if later:
        return min(later) - dt.timedelta(days=1)
    return max(c for c, _ in plan) + dt.timedelta(days=horizon - 1)


# ---- SQL ---------------------------------------------------------------------------------------
def _date(d: dt.date) -> str:
    return f"DATE {_q(d.isoformat())}"


def vocabularies_sql(through: dt.date, min_item_count: int = 2) -> str:
    """SQL for gold.vocabularies rows from the ``events`` view (columns in table order)."""
    if int(min_item_count) < 1:
        raise ValueError(f"min_item_count must be >= 1, got {min_item_count!r}")
    window = f"(SELECT * FROM events WHERE event_date <= {_date(through)})"

    def counted(vocab: str, col: str, min_count: int) -> str:
        return f"""
        {vocab}_counts AS (SELECT {col} AS token, count(*) AS n FROM {window}
                           WHERE {col} IS NOT NULL GROUP BY {col}),
        {vocab}_rows AS (
            SELECT '{vocab}' AS vocab, token,
                   row_number() OVER (ORDER BY n DESC, token ASC) + 1 AS id, n
            FROM {vocab}_counts WHERE n >= {int(min_count)}
            UNION ALL SELECT '{vocab}', '<pad>', {PAD_ID}, 0
            UNION ALL SELECT '{vocab}', '<oov>', {OOV_ID},
                             coalesce((SELECT sum(n) FROM {vocab}_counts
                                       WHERE n < {int(min_count)}), 0))"""

    types = ", ".join(f"({_q(t)}, {i})" for t, i in EVENT_TYPE_IDS.items())
    return f"""
    WITH {counted('item', 'item_id', min_item_count)},
    {counted('category', 'category', 1)},
    type_rows AS (
        SELECT 'event_type' AS vocab, t.token, t.id,
               (SELECT count(*) FROM {window} w WHERE w.event_type = t.token) AS n
        FROM (VALUES {types}) t(token, id)
        UNION ALL SELECT 'event_type', '<pad>', {PAD_ID}, 0
        UNION ALL SELECT 'event_type', '<oov>', {OOV_ID}, 0)
    SELECT vocab, token, CAST(id AS INTEGER) AS id, CAST(n AS BIGINT) AS count,
           {_date(through)} AS built_through
    FROM (SELECT * FROM item_rows UNION ALL SELECT * FROM category_rows
          UNION ALL SELECT * FROM type_rows)"""


def _cutoffs_values(cutoffs: Sequence[tuple[dt.date, str]]) -> str:
    bad = {s for _, s in cutoffs} - {*SPLITS, SCORE_SPLIT}
    if not cutoffs or bad:
        raise ValueError(f"need cutoffs with known splits, got {list(cutoffs)!r}")
    rows = ", ".join(f"({_date(d)}, {_q(s)})" for d, s in cutoffs)
    return f"(SELECT * FROM (VALUES {rows}) c(cutoff_date, split))"


def examples_sql(cutoffs: Sequence[tuple[dt.date, str]], vocab: str = "ref_vocabularies", *,
                 max_length: int = 30, horizon_days: int = 7,
                 price_buckets: Sequence[float] = DEFAULTS["price_buckets"],
                 min_events: int = 2, with_labels: bool = True) -> str:
    """SQL for gold.sequence_examples rows from the ``events`` view and the relation ``vocab``
    (gold.vocabularies rows), one per user and cutoff of ``cutoffs`` (columns in table order).

    Raises:
        ValueError: for no cutoffs, unknown splits, lengths under 1 or unsorted price edges.
    """
    L, h = int(max_length), int(horizon_days)
    if L < 1 or int(min_events) < 1 or (with_labels and h < 1):
        raise ValueError("max_length, min_events and horizon_days must be >= 1")
    edges = [float(e) for e in price_buckets]
    if not edges or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"price_buckets must be strictly increasing, got {price_buckets!r}")
    bucket = " + ".join(["2"] + [f"CAST(e.price >= {e!r} AS INTEGER)" for e in edges[1:]])
    order = "event_ts, event_id"

    def padded(col: str, pad_value: str) -> str:
        return (f"list_concat(list_transform(range({L} - a.seq_len), lambda x: {pad_value}), "
                f"a.{col})")

    if with_labels:
        labels = f"""
    labels AS (
        SELECT e.user_id, k.cutoff_date, list_sort(list_distinct(list(e.cat))) AS cats
        FROM coded e JOIN cutoffs k
          ON e.purchase AND e.event_date >= k.cutoff_date
             AND e.event_date < k.cutoff_date + {h}
        GROUP BY e.user_id, k.cutoff_date),"""
        label_cols = """CAST(l.user_id IS NOT NULL AS INTEGER) AS label_purchase,
           CAST(coalesce(l.cats, []) AS INTEGER[]) AS label_categories"""
        label_join = "LEFT JOIN labels l ON l.user_id = s.user_id AND l.cutoff_date = s.cutoff_date"
    else:
        labels, label_join = "", ""
        label_cols = ("CAST(NULL AS INTEGER) AS label_purchase, "
                      "CAST(NULL AS INTEGER[]) AS label_categories")
    return f"""
    WITH cutoffs AS {_cutoffs_values(cutoffs)},
    ids AS (SELECT vocab, token, id FROM {vocab} WHERE id > {OOV_ID}),
    coded AS (
        SELECT e.user_id, e.event_id, e.event_ts, e.event_date,
               coalesce(i.id, {OOV_ID}) AS item, coalesce(c.id, {OOV_ID}) AS cat,
               coalesce(t.id, {OOV_ID}) AS etype,
               CASE WHEN e.price IS NULL THEN {UNKNOWN_PRICE} ELSE {bucket} END AS price,
               e.event_type = 'purchase' AS purchase,
               CASE WHEN e.event_type = 'purchase' THEN e.price * coalesce(e.quantity, 1) END
                   AS amount
        FROM events e
        LEFT JOIN ids i ON i.vocab = 'item' AND i.token = e.item_id
        LEFT JOIN ids c ON c.vocab = 'category' AND c.token = e.category
        LEFT JOIN ids t ON t.vocab = 'event_type' AND t.token = e.event_type),
    before AS (
        SELECT k.cutoff_date, k.split, e.*,
               row_number() OVER (PARTITION BY e.user_id, k.cutoff_date
                                  ORDER BY e.event_ts DESC, e.event_id DESC) AS back
        FROM coded e JOIN cutoffs k ON e.event_date < k.cutoff_date),
    static AS (
        SELECT user_id, cutoff_date, split, count(*) AS n, count_if(purchase) AS n_purchases,
               min(event_date) AS first_date, max(event_date) AS last_date,
               list_sum(list(coalesce(amount, 0.0::DOUBLE) ORDER BY {order})) AS revenue
        FROM before GROUP BY user_id, cutoff_date, split
        HAVING count(*) >= {int(min_events)}),
    kept AS (
        SELECT *, CASE WHEN lag(event_ts) OVER w IS NULL THEN 0.0::DOUBLE
                       ELSE ln(1 + (epoch_us(event_ts) - epoch_us(lag(event_ts) OVER w)) / 1e6)
                  END AS gap
        FROM before WHERE back <= {L}
        WINDOW w AS (PARTITION BY user_id, cutoff_date ORDER BY {order})),
    arrays AS (
        SELECT user_id, cutoff_date, count(*) AS seq_len,
               list(item ORDER BY {order}) AS items, list(cat ORDER BY {order}) AS cats,
               list(etype ORDER BY {order}) AS etypes, list(gap ORDER BY {order}) AS gaps,
               list(price ORDER BY {order}) AS prices
        FROM kept GROUP BY user_id, cutoff_date),{labels}
    result AS (
    SELECT s.user_id, s.cutoff_date, s.split,
           CAST(a.seq_len AS INTEGER) AS seq_len,
           CAST({padded('items', PAD_ID)} AS INTEGER[]) AS item_ids,
           CAST({padded('cats', PAD_ID)} AS INTEGER[]) AS category_ids,
           CAST({padded('etypes', PAD_ID)} AS INTEGER[]) AS event_type_ids,
           CAST({padded('gaps', '0.0::DOUBLE')} AS FLOAT[]) AS time_gaps,
           CAST({padded('prices', PAD_ID)} AS INTEGER[]) AS price_buckets,
           CAST([ln(1 + s.n), ln(1 + s.n_purchases), s.cutoff_date - s.first_date,
                 s.cutoff_date - s.last_date, ln(1 + s.revenue)] AS FLOAT[]) AS static_features,
           {label_cols}
    FROM static s
    JOIN arrays a ON a.user_id = s.user_id AND a.cutoff_date = s.cutoff_date
    {label_join})
    SELECT {", ".join(EXAMPLE_COLUMNS)} FROM result"""


# ---- the stage ---------------------------------------------------------------------------------
def _settings(**overrides) -> dict:
    unknown = set(overrides) - set(DEFAULTS) - {"history_first"}
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}")
    return {**DEFAULTS, "history_first": None, **overrides}


def build_tables(con, **settings) -> dict:
    """Create the tables ``ref_vocabularies`` and ``ref_examples`` from the ``events`` view, as
    ``run_sequence_examples`` computes them (settings: the keys of ``DEFAULTS``, plus an optional
    ``history_first`` date that pins the plan's first date).

    Returns:
        The plan (``first``, ``last``, ``through``, ``plan``) and the wall seconds of each part.

    Raises:
        ValueError: when no cutoff fits the history (Spark's stage then writes nothing).
    """
    s = _settings(**settings)
    t = time.monotonic()
    first, last = history_bounds(con, s["history_start_quantile"])
    first = s["history_first"] or first
    plan = plan_cutoffs(first, last, int(s["step_days"]), int(s["horizon_days"]), s["split"])
    through = vocabulary_through(plan, int(s["horizon_days"]))
    out = {"first": first, "last": last, "through": through, "plan": plan,
           "plan_s": time.monotonic() - t}
    t = time.monotonic()
    con.execute("CREATE OR REPLACE TABLE ref_vocabularies AS "
                + vocabularies_sql(through, int(s["min_item_count"])))
    out["vocabularies_s"] = time.monotonic() - t
    t = time.monotonic()
    con.execute("CREATE OR REPLACE TABLE ref_examples AS " + examples_sql(
        plan, "ref_vocabularies", max_length=s["max_length"], horizon_days=s["horizon_days"],
        price_buckets=s["price_buckets"], min_events=s["min_events"]))
    out["examples_s"] = time.monotonic() - t
    return out


def write_outputs(con, out_dir: str | Path, **settings) -> dict:
    """Compute both tables (``build_tables``) and write them as Parquet: ``vocabularies.parquet``
    and ``sequence_examples/cutoff_date=.../*.parquet`` (partitioned like the Delta table).

    Returns:
        ``plan_s``, ``vocabularies_s``, ``examples_s``, ``write_s`` (wall seconds), ``cpu_s``
        (this process, all threads), row counts, and the plan's dates and split sizes.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    c = time.process_time()
    result = build_tables(con, **settings)
    t = time.monotonic()
    con.execute(f"COPY ref_vocabularies TO {_q(out / 'vocabularies.parquet')} (FORMAT parquet)")
    con.execute(f"""COPY ref_examples TO {_q(out / 'sequence_examples')}
                    (FORMAT parquet, PARTITION_BY (cutoff_date), OVERWRITE_OR_IGNORE true)""")
    result["write_s"] = time.monotonic() - t
    result["cpu_s"] = time.process_time() - c
    plan = result.pop("plan")
    result.update({k: str(result[k]) for k in ("first", "last", "through")})
    result["cutoffs"] = {s: sum(1 for _, x in plan if x == s) for s in SPLITS}
    result["vocabularies"] = con.execute("SELECT count(*) FROM ref_vocabularies").fetchone()[0]
    result["examples"] = con.execute("SELECT count(*) FROM ref_examples").fetchone()[0]
    return result


# ---- comparing with the Spark tables -----------------------------------------------------------
def _differs(a: str, b: str, kind: str, tol: float) -> str:
    """SQL true when ``a`` and ``b`` differ (float arrays element-wise within ``tol`` relative)."""
    if kind == "float_array":
        far = (f"list_bool_or(list_transform(range(1, len({a}) + 1), lambda i: "
               f"abs(CAST({a}[i] AS DOUBLE) - {b}[i]) > {tol} * greatest(1.0, abs({b}[i]))))")
        return (f"CASE WHEN {a} IS NULL OR {b} IS NULL THEN ({a} IS NULL) <> ({b} IS NULL) "
                f"ELSE len({a}) <> len({b}) OR coalesce({far}, false) END")
    return f"{a} IS DISTINCT FROM {b}"


def compare(con, spark_files: Sequence[str], reference: str, keys: Sequence[str],
            columns: Mapping[str, str], tol: float = 1e-6, partition: str | None = None) -> dict:
    """Full comparison of a Spark table (its Parquet files) with a reference output.

    Args:
        reference: a Parquet file or a ``.../**/*.parquet`` glob (hive-partitioned).
        keys: the columns identifying a row on both sides.
        columns: column -> kind (``exact`` or ``float_array``).
        partition: the Delta partition column (a date), read from the folder names.

    Returns:
        spark_rows, reference_rows, only_spark, only_reference, differing, and the differing
        count per column (only the non-zero ones).
    """
    files = [p[len("file:"):] if p.startswith("file:") else p for p in spark_files]
    hive = (f", hive_partitioning = true, hive_types = {{'{partition}': DATE}}"
            if partition else "")
    con.execute(f"CREATE OR REPLACE TEMP VIEW _spark AS SELECT * FROM "
                f"read_parquet({base._file_list(files)}{hive})")
    ref_hive = (f", hive_partitioning = true, hive_types = {{'{partition}': DATE}}"
                if reference.endswith("**/*.parquet") and partition else "")
    con.execute(f"CREATE OR REPLACE TEMP VIEW _ref AS SELECT * FROM "
                f"read_parquet({_q(reference)}{ref_hive})")
    checks = {c: _differs(f"s.{c}", f"r.{c}", kind, tol) for c, kind in columns.items()}
    both = f"s.{keys[0]} IS NOT NULL AND r.{keys[0]} IS NOT NULL"
    sums = ", ".join(f"count_if({both} AND ({c})) AS {col}" for col, c in checks.items())
    any_diff = " OR ".join(f"({c})" for c in checks.values())
    on = " AND ".join(f"s.{k} = r.{k}" for k in keys)
    row = con.execute(f"""
        SELECT (SELECT count(*) FROM _spark), (SELECT count(*) FROM _ref),
               count_if(r.{keys[0]} IS NULL), count_if(s.{keys[0]} IS NULL),
               count_if({both} AND ({any_diff})), {sums}
        FROM _spark s FULL OUTER JOIN _ref r ON {on}""").fetchone()
    out = {"spark_rows": row[0], "reference_rows": row[1], "only_spark": row[2],
           "only_reference": row[3], "differing": row[4]}
    out.update({f"differing.{c}": v for c, v in zip(checks, row[5:]) if v})
    return out


def example_kinds() -> dict[str, str]:
    """Comparison kind of each gold.sequence_examples column (except the keys)."""
    return {c: ("float_array" if c in FLOAT_ARRAYS else "exact") for c in EXAMPLE_COLUMNS
            if c not in ("user_id", "cutoff_date")}


def vocabulary_kinds() -> dict[str, str]:
    """Comparison kind of each gold.vocabularies column (except the keys)."""
    return {c: "exact" for c in VOCAB_COLUMNS if c not in ("vocab", "token")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="gold.vocabularies and gold.sequence_examples in DuckDB SQL, from "
                    "bronze.events Parquet files.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--events-files", required=True,
                        help="text file listing the bronze.events Parquet files, one a line")
    parser.add_argument("--out", required=True, help="output folder for the Parquet outputs")
    parser.add_argument("--max-length", type=int, default=DEFAULTS["max_length"],
                        help="events per sequence")
    parser.add_argument("--horizon-days", type=int, default=DEFAULTS["horizon_days"],
                        help="label window in days")
    parser.add_argument("--step-days", type=int, default=DEFAULTS["step_days"],
                        help="days between cutoffs")
    parser.add_argument("--min-events", type=int, default=DEFAULTS["min_events"],
                        help="events a user needs before a cutoff")
    parser.add_argument("--min-item-count", type=int, default=DEFAULTS["min_item_count"],
                        help="events an item needs in the vocabulary window")
    parser.add_argument("--history-start-quantile", type=float,
                        default=DEFAULTS["history_start_quantile"],
                        help="quantile of event dates where the plan starts")
    parser.add_argument("--history-first", default="",
                        help="pin the plan's first date, YYYY-MM-DD (empty: the quantile)")
    parser.add_argument("--price-buckets", type=float, nargs="+",
                        default=list(DEFAULTS["price_buckets"]), help="price edges")
    parser.add_argument("--split", type=float, nargs=3, metavar=("TRAIN", "VALIDATION", "TEST"),
                        default=[DEFAULTS["split"][s] for s in SPLITS],
                        help="split fractions")
    parser.add_argument("--threads", type=int, default=2, help="DuckDB threads")
    parser.add_argument("--memory-limit", default="6GB", help="DuckDB memory_limit")
    parser.add_argument("--json-out", default="", help="write timings/counts here as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    files = [x for x in Path(args.events_files).read_text().splitlines() if x.strip()]
    t0 = time.monotonic()
    con = base.connect(args.threads, args.memory_limit, temp_dir=str(Path(args.out) / "_tmp"))
    base.register_inputs(con, files, [])
    result = write_outputs(
        con, args.out, max_length=args.max_length, horizon_days=args.horizon_days,
        step_days=args.step_days, min_events=args.min_events,
        min_item_count=args.min_item_count, history_start_quantile=args.history_start_quantile,
        history_first=(dt.date.fromisoformat(args.history_first) if args.history_first
                       else None),
        price_buckets=args.price_buckets, split=dict(zip(SPLITS, args.split)))
    return base.finish(result, t0, args.json_out)


if __name__ == "__main__":
    raise SystemExit(main())
