"""The synthetic log generator: byte-level determinism, the raw format, and the planted signals.

Expectations are computed here from the written files and ``_truth`` (word lists, AUCs, shares
against chance), never by calling the generator's own internals.
"""
from __future__ import annotations

import json
import math
import re
import statistics
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from demandlake.synth import generate

START = date(2026, 11, 1)
DAYS = 14
EVENT_KEYS = ["event_id", "user_id", "session_id", "event_type", "item_id", "category", "brand",
              "price", "quantity", "search_query", "timestamp"]
REVIEW_KEYS = ["review_id", "user_id", "item_id", "category", "rating", "label", "title", "text",
               "language", "timestamp"]
VALID_TYPES = {"view", "cart", "remove_from_cart", "purchase", "search", "fav"}


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _rows(root: Path, kind: str) -> list[tuple[str, dict]]:
    """(dt folder, parsed object) for every line under ``root/kind``."""
    out = []
    for path in sorted((root / kind).glob("dt=*/part-*.jsonl")):
        folder = path.parent.name.removeprefix("dt=")
        with open(path, encoding="utf-8") as fh:
            out += [(folder, json.loads(line)) for line in fh]
    return out


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _auc(scores: list[float], labels: list[bool]) -> float:
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    """One mid-sized dataset (about 17k events, 300 reviews) shared by the read-only tests."""
    root = tmp_path_factory.mktemp("synth")
    summary = generate(root, users=500, days=DAYS, start_date=START.isoformat(), seed=11,
                       chunk_users=200)
    events = _rows(root, "events")
    reviews = _rows(root, "reviews")
    truth = {}
    with open(root / "_truth" / "users.jsonl", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            truth[row["user_id"]] = row
    by_user = defaultdict(list)
    for _, e in events:
        by_user[e["user_id"]].append(e)
    for es in by_user.values():
        es.sort(key=lambda e: _ts(e["timestamp"]))
    return {"root": root, "summary": summary, "events": events, "reviews": reviews,
            "truth": truth, "by_user": by_user}


# ---- determinism --------------------------------------------------------------------------------
def test_same_arguments_give_byte_identical_files(tmp_path):
    a = generate(tmp_path / "a", users=60, days=5, seed=3, chunk_users=25)
    b = generate(tmp_path / "b", users=60, days=5, seed=3, chunk_users=25)
    assert a == b
    tree_a = _tree(tmp_path / "a")
    assert any(k.startswith("events/") for k in tree_a)
    assert tree_a == _tree(tmp_path / "b")


def test_workers_do_not_change_the_output(tmp_path):
    one = generate(tmp_path / "w1", users=60, days=5, seed=3, chunk_users=20, workers=1)
    two = generate(tmp_path / "w2", users=60, days=5, seed=3, chunk_users=20, workers=2)
    assert one == two
    tree = _tree(tmp_path / "w1")
    assert {k.rsplit("/", 1)[-1] for k in tree if k.startswith("events/")} >= {
        "part-00000.jsonl", "part-00001.jsonl", "part-00002.jsonl"}
    assert tree == _tree(tmp_path / "w2")


def test_a_different_seed_gives_different_data(tmp_path):
    generate(tmp_path / "s1", users=40, days=4, seed=1)
    generate(tmp_path / "s2", users=40, days=4, seed=2)
    ev1 = [e for _, e in _rows(tmp_path / "s1", "events")]
    ev2 = [e for _, e in _rows(tmp_path / "s2", "events")]
    assert ([(e["timestamp"], e["item_id"]) for e in ev1]
            != [(e["timestamp"], e["item_id"]) for e in ev2])


def test_a_rerun_in_the_same_folder_leaves_no_stale_files(tmp_path):
    generate(tmp_path / "x", users=80, days=6, seed=5, chunk_users=20)
    generate(tmp_path / "x", users=30, days=3, seed=5, chunk_users=20)
    generate(tmp_path / "fresh", users=30, days=3, seed=5, chunk_users=20)
    assert _tree(tmp_path / "x") == _tree(tmp_path / "fresh")


# ---- format -------------------------------------------------------------------------------------
def test_every_event_line_has_the_canonical_schema(lake):
    start = datetime(START.year, START.month, START.day, tzinfo=timezone.utc)
    end = start + timedelta(days=DAYS)
    ids = set()
    for folder, e in lake["events"]:
        assert list(e) == EVENT_KEYS
        assert e["event_type"] in VALID_TYPES
        assert re.fullmatch(r"u\d{6}", e["user_id"])
        assert isinstance(e["session_id"], str) and e["session_id"]
        assert isinstance(e["category"], str) and e["category"]
        assert e["brand"] is None or isinstance(e["brand"], str)
        ts = _ts(e["timestamp"])
        assert ts.utcoffset() is not None
        assert start <= ts < end
        assert folder == ts.astimezone(timezone.utc).date().isoformat()
        if e["event_type"] == "search":
            assert e["item_id"] is None and e["price"] is None
            assert isinstance(e["search_query"], str) and e["search_query"].strip()
        else:
            assert isinstance(e["item_id"], str) and e["item_id"]
            assert isinstance(e["price"], (int, float)) and e["price"] > 0
            assert e["search_query"] is None
        if e["event_type"] in ("cart", "purchase"):
            assert isinstance(e["quantity"], int) and e["quantity"] >= 1
        else:
            assert e["quantity"] is None
        ids.add(e["event_id"])
    assert len(ids) == len(lake["events"]) > 5000


def test_every_review_line_has_the_canonical_schema(lake):
    start = datetime(START.year, START.month, START.day, tzinfo=timezone.utc)
    end = start + timedelta(days=DAYS)
    items = {e["item_id"]: e["category"] for _, e in lake["events"]
             if e["event_type"] == "purchase"}
    ids = set()
    for folder, r in lake["reviews"]:
        assert list(r) == REVIEW_KEYS
        assert isinstance(r["rating"], int) and 1 <= r["rating"] <= 5
        assert r["label"] == (1 if r["rating"] >= 4 else 0 if r["rating"] <= 2 else None)
        assert r["language"] in ("en", "zh")
        assert isinstance(r["title"], str) and r["title"]
        assert isinstance(r["text"], str) and len(r["text"]) >= 4
        assert items[r["item_id"]] == r["category"]  # a review is of an item the user bought
        ts = _ts(r["timestamp"])
        assert start <= ts < end
        assert folder == ts.astimezone(timezone.utc).date().isoformat()
        ids.add(r["review_id"])
    assert len(ids) == len(lake["reviews"]) > 100


def test_a_review_comes_after_the_reviewer_bought_the_item(lake):
    bought = {}
    for _, e in lake["events"]:
        if e["event_type"] == "purchase":
            key = (e["user_id"], e["item_id"])
            bought[key] = min(bought.get(key, e["timestamp"]), e["timestamp"])
    for _, r in lake["reviews"]:
        first = bought[(r["user_id"], r["item_id"])]
        assert _ts(r["timestamp"]) - _ts(first) >= timedelta(days=1)


def test_summary_matches_the_files(lake):
    s = lake["summary"]
    by_type = Counter(e["event_type"] for _, e in lake["events"])
    assert s["events_by_type"] == {t: by_type.get(t, 0) for t in s["events_by_type"]}
    assert s["events"] == len(lake["events"])
    assert s["events_by_day"] == dict(sorted(Counter(f for f, _ in lake["events"]).items()))
    assert s["reviews"] == len(lake["reviews"])
    assert s["reviews_by_language"] == dict(Counter(r["language"] for _, r in lake["reviews"]))
    assert s["users"] == len(lake["truth"]) == 500
    assert s["sessions"] == len({e["session_id"] for _, e in lake["events"]})
    assert (s["days"], s["start_date"], s["end_date"]) == (14, "2026-11-01", "2026-11-14")
    on_disk = json.loads((lake["root"] / "_truth" / "summary.json").read_text(encoding="utf-8"))
    assert on_disk == s


def test_field_names_match_the_ingest_schemas():
    from demandlake import schemas  # a broken import fails here, it does not skip

    assert schemas.RAW_EVENT_FIELDS == EVENT_KEYS
    assert schemas.RAW_REVIEW_FIELDS == REVIEW_KEYS
    assert set(schemas.EVENT_TYPES) == VALID_TYPES


# ---- planted signals ----------------------------------------------------------------------------
def test_purchases_concentrate_in_the_planted_top_categories(lake):
    shares = []
    for uid, es in lake["by_user"].items():
        bought = [e["category"] for e in es if e["event_type"] == "purchase"]
        if len(bought) >= 3:
            top3 = {c["category"] for c in lake["truth"][uid]["top_categories"][:3]}
            shares.append(sum(c in top3 for c in bought) / len(bought))
    assert len(shares) >= 50
    assert statistics.mean(shares) > 0.45  # chance is 3 of 20 categories = 0.15


def test_high_propensity_users_purchase_more(lake):
    users = sorted(lake["truth"].values(), key=lambda u: u["purchase_propensity"])
    q = len(users) // 4

    def mean_purchases(group):
        return statistics.mean(
            sum(e["event_type"] == "purchase" for e in lake["by_user"].get(u["user_id"], []))
            for u in group)

    assert mean_purchases(users[-q:]) > 3 * mean_purchases(users[:q]) + 0.5


def test_next_week_purchase_is_predictable_from_the_first_week(lake):
    start = datetime(START.year, START.month, START.day, tzinfo=timezone.utc)
    scores, labels = [], []
    for uid in lake["truth"]:
        es = lake["by_user"].get(uid, [])
        week = [(_ts(e["timestamp"]) - start).days // 7 for e in es]
        w1 = Counter(e["event_type"] for e, w in zip(es, week) if w == 0)
        scores.append(2 * w1["purchase"] + w1["cart"] + 0.01 * sum(w1.values()))
        labels.append(any(e["event_type"] == "purchase" for e, w in zip(es, week) if w == 1))
    assert 0.1 < sum(labels) / len(labels) < 0.9
    assert _auc(scores, labels) > 0.72


def test_churning_users_fade_and_new_users_start_late(lake):
    start = datetime(START.year, START.month, START.day, tzinfo=timezone.utc)
    halves = Counter()
    for uid, u in lake["truth"].items():
        es = lake["by_user"].get(uid, [])
        if u["segment"] == "churning":
            for e in es:
                early = _ts(e["timestamp"]) < start + timedelta(days=DAYS / 2)
                halves["first" if early else "second"] += 1
        if u["segment"] == "new_user" and es:
            first = (_ts(es[0]["timestamp"]) - start) / timedelta(days=1)
            assert first >= u["start_offset_days"] >= 0.25 * DAYS - 1e-6
    assert halves["first"] > 100
    assert halves["second"] < 0.25 * halves["first"]


def test_bargain_hunters_view_cheaper_items_than_loyal_spenders(lake):
    items = {}
    with open(lake["root"] / "_truth" / "items.jsonl", encoding="utf-8") as fh:
        for line in fh:
            it = json.loads(line)
            items[it["item_id"]] = it
    median = {c: statistics.median(it["price"] for it in items.values() if it["category"] == c)
              for c in {it["category"] for it in items.values()}}

    def rel_price(segment):
        return statistics.mean(
            math.log(e["price"] / median[e["category"]])
            for uid, es in lake["by_user"].items() if lake["truth"][uid]["segment"] == segment
            for e in es if e["event_type"] == "view")

    assert rel_price("bargain_hunter") < rel_price("loyal_high_spender") - 0.5


def test_sessions_are_split_by_a_30_minute_gap(lake):
    inner, between = [], []
    for es in lake["by_user"].values():
        for a, b in zip(es, es[1:]):
            gap = (_ts(b["timestamp"]) - _ts(a["timestamp"])).total_seconds()
            (inner if a["session_id"] == b["session_id"] else between).append(gap)
    assert inner and between
    assert max(inner) < 30 * 60
    assert statistics.median(inner) < 5 * 60
    assert sum(g > 30 * 60 for g in between) / len(between) > 0.99
    assert statistics.median(between) > 3 * 3600


def test_search_queries_name_the_searched_category_or_brand(lake):
    searches = [e for _, e in lake["events"] if e["event_type"] == "search"]
    assert len(searches) > 100
    with_brand = [e for e in searches if e["brand"]]
    assert with_brand and all(e["brand"] in e["search_query"] for e in with_brand)
    assert any(re.search(r"[\u4e00-\u9fff]", e["search_query"]) for e in searches)


EN_POS = {"love", "excellent", "great", "recommend", "recommended", "perfect", "fantastic",
          "outstanding", "flawless", "good", "happy", "satisfied", "reliable", "impressed",
          "delighted", "gorgeous", "superb", "nice"}
EN_NEG = {"terrible", "waste", "worst", "junk", "broke", "awful", "disappointed", "regret", "avoid",
          "not", "cheap", "poor", "never", "overpriced", "letdown", "damaged", "angry", "bad"}
ZH_POS = ("好用", "推荐", "满意", "喜欢", "不错", "值得", "靠谱", "精致", "超出预期", "五星")
ZH_NEG = ("差", "失望", "退货", "浪费", "坏", "垃圾", "别买", "不值", "后悔", "粗糙")


def _lexicon_score(r: dict) -> int:
    if r["language"] == "zh":
        text = r["title"] + r["text"]
        return sum(text.count(w) for w in ZH_POS) - sum(text.count(w) for w in ZH_NEG)
    tokens = re.findall(r"[a-z]+", (r["title"] + " " + r["text"]).lower())
    return sum(t in EN_POS for t in tokens) - sum(t in EN_NEG for t in tokens)


@pytest.mark.parametrize("language", ["en", "zh"])
def test_review_wording_follows_the_rating(lake, language):
    rows = [r for _, r in lake["reviews"] if r["language"] == language]
    assert len(rows) >= 40
    corr = statistics.correlation([_lexicon_score(r) for r in rows], [r["rating"] for r in rows])
    assert corr > 0.4


def test_no_single_english_word_gives_the_sentiment_away(lake):
    rows = [r for _, r in lake["reviews"] if r["language"] == "en" and r["rating"] != 3]
    labels = [r["rating"] >= 4 for r in rows]
    docs = [set(re.findall(r"[a-z]+", (r["title"] + " " + r["text"]).lower())) for r in rows]
    vocab = set().union(*docs)
    assert len(vocab) > 150

    def accuracy(word):
        hits = sum((word in d) == y for d, y in zip(docs, labels))
        return max(hits, len(rows) - hits) / len(rows)

    assert max(accuracy(w) for w in vocab) < 0.9


def test_both_languages_and_all_ratings_are_present(lake):
    langs = Counter(r["language"] for _, r in lake["reviews"])
    assert 0.15 < langs["zh"] / sum(langs.values()) < 0.45
    assert set(Counter(r["rating"] for _, r in lake["reviews"])) == {1, 2, 3, 4, 5}


def test_items_of_higher_latent_quality_get_better_ratings(lake):
    quality = {}
    with open(lake["root"] / "_truth" / "items.jsonl", encoding="utf-8") as fh:
        for line in fh:
            it = json.loads(line)
            quality[it["item_id"]] = it["quality"]
    rows = [r for _, r in lake["reviews"]]
    assert statistics.correlation([quality[r["item_id"]] for r in rows],
                                  [r["rating"] for r in rows]) > 0.3


# ---- sizing and arguments -----------------------------------------------------------------------
@pytest.mark.parametrize("target,days", [(4000, 14), (12000, 7)])
def test_events_target_chooses_the_number_of_users(tmp_path, target, days):
    summary = generate(tmp_path, events_target=target, days=days, reviews=False, seed=9)
    assert abs(summary["events"] - target) <= 0.1 * target
    assert summary["reviews"] == 0
    assert not (tmp_path / "reviews").exists()


def test_a_start_date_object_is_accepted(tmp_path):
    summary = generate(tmp_path, users=10, days=2, start_date=date(2025, 2, 28))
    assert (summary["start_date"], summary["end_date"]) == ("2025-02-28", "2025-03-01")
    assert {p.name for p in (tmp_path / "events").iterdir()} <= {"dt=2025-02-28", "dt=2025-03-01"}


@pytest.mark.parametrize("kwargs", [
    {"users": 0}, {"days": 0}, {"workers": 0}, {"events_target": 0}, {"start_date": "2026-13-01"},
    {"seed": "7"}, {"chunk_users": -1},
])
def test_bad_arguments_are_rejected(tmp_path, kwargs):
    with pytest.raises(ValueError):
        generate(tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())


def test_consumables_are_bought_again_and_durables_are_not(lake):
    consumable = {"beauty", "health", "baby", "grocery", "pet"}
    start = datetime(START.year, START.month, START.day, tzinfo=timezone.utc)
    again = {True: [], False: []}
    for es in lake["by_user"].values():
        buys = [(_ts(e["timestamp"]), e["item_id"], e["category"]) for e in es
                if e["event_type"] == "purchase"]
        early = {(item, cat) for ts, item, cat in buys if ts < start + timedelta(days=5)}
        for item, cat in early:
            later = sum(i == item for ts, i, _ in buys if ts >= start + timedelta(days=5))
            again[cat in consumable].append(later > 0)
    assert len(again[True]) > 30 and len(again[False]) > 30
    assert statistics.mean(again[True]) > 0.4
    assert statistics.mean(again[False]) < 0.15
