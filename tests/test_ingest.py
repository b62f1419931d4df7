"""Raw logs -> bronze: readers on real rows, every quarantine reason, dedup, reruns, reconciliation."""
from __future__ import annotations

import datetime as dt
import json
from zoneinfo import ZoneInfo

import pytest
from pyspark.sql import functions as F

from demandlake import lake
from demandlake.ingest.bronze import hmac_sha256, ingest_source, python_hmac
from helpers.catalog import fresh_lake

RUN = dt.date(2026, 11, 14)
UTC = dt.timezone.utc


def _ev(**kw):
    base = {"event_id": "e1", "user_id": "u1", "event_type": "view", "item_id": "i1",
            "category": "shoes", "brand": "acme", "price": 10.5, "quantity": None,
            "timestamp": "2026-11-14T10:00:00+00:00"}
    base.update(kw)
    return json.dumps(base, ensure_ascii=False)


def _write(path, lines, mode="w", encoding="utf-8"):
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(lines, bytes):
        path.write_bytes(lines)
    else:
        path.write_text("".join(ln + "\n" for ln in lines), encoding=encoding)
    return str(path)


def _counts(spark, cfg):
    return (lake.read(spark, cfg, "bronze.events").count(),
            lake.read(spark, cfg, "bronze.quarantine").count())


def test_good_canonical_events_land_in_bronze_typed(spark, cfg, tmp_path):
    path = _write(tmp_path / "ev.jsonl", [
        _ev(event_id="a", price=12, quantity=2, event_type="purchase"),
        _ev(event_id="b", event_type="search", item_id=None, search_query="红色 鞋子 👟"),
        _ev(event_id="c", timestamp="2026-11-14T23:30:00-05:00", extra_field="x"),
    ])
    counts = ingest_source(spark, cfg, "canonical_events", path, RUN)
    assert (counts["read"], counts["new"], counts["quarantined"]) == (3, 3, 0)
    rows = {r.event_id: r for r in lake.read(spark, cfg, "bronze.events").collect()}
    assert rows["a"].price == 12.0 and rows["a"].quantity == 2 and rows["a"].event_type == "purchase"
    assert rows["b"].search_query == "红色 鞋子 👟" and rows["b"].item_id is None
    # 23:30 at UTC-5 is 04:30 UTC the next day: the UTC instant and its (UTC) date are kept.
    assert rows["c"].event_ts == dt.datetime(2026, 11, 15, 4, 30)
    assert rows["c"].event_date == dt.date(2026, 11, 15)
    assert rows["c"].extras == {"extra_field": "x"}


BAD_CASES = [
    ("malformed_record", '{"event_id": "x1", "user_id": '),
    ("malformed_record", "not json at all"),
    ("missing_user_id", _ev(event_id="x2", user_id=None)),
    ("missing_user_id", _ev(event_id="x3", user_id="  ")),
    ("missing_event_type", _ev(event_id="x4", event_type=None)),
    ("unknown_event_type", _ev(event_id="x5", event_type="teleport")),
    ("missing_timestamp", _ev(event_id="x6", timestamp=None)),
    ("bad_timestamp", _ev(event_id="x7", timestamp="yesterday-ish")),
    ("timestamp_too_old", _ev(event_id="x8", timestamp="1999-12-31T23:00:00Z")),
    ("timestamp_in_future", _ev(event_id="x9", timestamp="2027-01-01T00:00:00Z")),
    ("missing_item_id", _ev(event_id="x10", item_id=None)),
    ("bad_price_type", _ev(event_id="x11", price="cheap")),
    ("negative_price", _ev(event_id="x12", price=-1)),
    ("absurd_price", _ev(event_id="x13", price=5e9)),
    ("bad_quantity_type", _ev(event_id="x14", quantity="two")),
    ("bad_quantity", _ev(event_id="x15", quantity=0)),
    ("oversize_field", _ev(event_id="x16", search_query="z" * 70_000)),
    # Each of these three failed the whole batch or stored a date that changed every day
    # (hostile inputs of the DuckDB ingest reference, 2026-12-07):
    ("bad_timestamp", _ev(event_id="x17", timestamp="10:00:00")),        # a time, no date
    ("bad_timestamp", _ev(event_id="x18", timestamp="99999999999999999")),  # long overflow
    ("bad_timestamp", _ev(event_id="x19", timestamp="999999999999999")),    # year 33658
    ("malformed_record", _ev(event_id="x20") + _ev(event_id="x21")),     # two objects, one line
    ("malformed_record", _ev(event_id="x22") + " and more"),              # text after the object
    ("malformed_record", _ev(event_id="x25") + "," + _ev(event_id="x26")),  # two, a comma between
    ("malformed_record", _ev(event_id="x27") + "],[" + _ev(event_id="x28")),  # brackets closed
    ("malformed_record", _ev(event_id="x29") + "]"),                         # a bracket after it
    ("missing_user_id", _ev(event_id="x30", user_id="\t")),        # whitespace alone is no id
    ("missing_item_id", _ev(event_id="x31", item_id=" \t ")),
    ("malformed_record", _ev(event_id="x23")[:-1] + ', "user_id": "u2"}'),  # a field twice
    ("malformed_record", _ev(event_id="x24")[:-1] + ', "tag": 1, "tag": 2}'),  # an extra twice
]


@pytest.fixture(scope="module")
def bad_events(spark, tmp_path_factory):
    """Each BAD_CASES line in a file of its own beside one good event, all the files ingested
    as one batch (``ingest_inputs``: one input per case under its own source name, as a history
    load reads many files), so that what each case became is read per source and per file. One
    batch instead of a new lake per case: a one-record ingest costs 9-11 Spark jobs, whatever
    the record (17 cases: 111 CPU-s one by one)."""
    from demandlake.ingest.bronze import Input, ingest_inputs

    work = tmp_path_factory.mktemp("bad-events")
    cfg = fresh_lake(spark, work / "lake")
    inputs = [Input("canonical_events", str(_write(work / f"bad-{i}.jsonl",
                                                   [_ev(event_id=f"ok-{i}"), line])),
                    RUN, f"case-{i}")
              for i, (_, line) in enumerate(BAD_CASES)]
    by_source = ingest_inputs(spark, cfg, inputs)["by_source"]
    quarantine = lake.read(spark, cfg, "bronze.quarantine").collect()
    stored = {r["source"]: sorted(r["ids"]) for r in lake.read(spark, cfg, "bronze.events")
              .groupBy("source").agg(F.collect_list("event_id").alias("ids")).collect()}
    return by_source, quarantine, stored


@pytest.mark.parametrize("i", range(len(BAD_CASES)),
                         ids=[f"{r}-{i}" for i, (r, _) in enumerate(BAD_CASES)])
def test_each_bad_event_is_quarantined_with_its_reason(bad_events, i):
    reason, line = BAD_CASES[i]
    by_source, quarantine, stored = bad_events
    counts = by_source[f"case-{i}"]
    assert (counts["read"], counts["new"], counts["quarantined"]) == (2, 1, 1), counts
    q = [r for r in quarantine if r.source_file.endswith(f"/bad-{i}.jsonl")]
    assert [r.reason for r in q] == [reason]
    assert q[0].raw.startswith(line[:100])
    assert q[0].detail
    assert stored[f"case-{i}"] == [f"ok-{i}"]  # the good event beside it is stored


def test_non_utf8_bytes_are_quarantined_as_bad_encoding(spark, cfg, tmp_path):
    good = _ev(event_id="ok").encode()
    bad = _ev(event_id="latin1", brand="caf\u00e9").encode("latin-1")
    path = _write(tmp_path / "enc.jsonl", good + b"\n" + bad + b"\n")
    counts = ingest_source(spark, cfg, "canonical_events", path, RUN)
    assert (counts["new"], counts["quarantined"]) == (1, 1)
    assert lake.read(spark, cfg, "bronze.quarantine").first().reason == "bad_encoding"


def test_duplicates_are_counted_and_conflicting_ids_quarantined(spark, cfg, tmp_path):
    path = _write(tmp_path / "dup.jsonl", [
        _ev(event_id="d1"), _ev(event_id="d1"),            # exact repeat -> duplicate
        _ev(event_id="d2", price=1), _ev(event_id="d2", price=2),  # same id, other content
    ])
    counts = ingest_source(spark, cfg, "canonical_events", path, RUN)
    assert counts == {**counts, "read": 4, "new": 2, "duplicates": 1, "quarantined": 1}
    assert counts["reason.conflicting_duplicate_id"] == 1
    assert sorted(r.event_id for r in lake.read(spark, cfg, "bronze.events").collect()) == ["d1", "d2"]


def test_rerun_of_same_input_leaves_tables_identical(spark, cfg, tmp_path):
    path = _write(tmp_path / "ev.jsonl", [_ev(event_id=f"r{i}", price=i) for i in range(5)]
                  + [_ev(event_id="bad", price=-3), "{broken"])
    first = ingest_source(spark, cfg, "canonical_events", path, RUN)
    snap = lambda name: sorted(map(tuple, lake.read(spark, cfg, name).collect()), key=str)  # noqa: E731
    before = (snap("bronze.events"), snap("bronze.quarantine"))
    second = ingest_source(spark, cfg, "canonical_events", path, RUN)
    assert (snap("bronze.events"), snap("bronze.quarantine")) == before
    assert first["new"] == 5 and second["new"] == 0 and second["duplicates"] == 5
    assert second["read"] == second["new"] + second["duplicates"] + second["quarantined"]


def test_dates_are_lake_zone_dates_and_naive_times_are_source_zone_times(spark, cfg, tmp_path):
    lake_tz, source_tz = ZoneInfo("Asia/Shanghai"), ZoneInfo("America/New_York")
    cfg = cfg.with_overrides({"lake.timezone": "Asia/Shanghai", "ingest.max_future_hours": 24})
    epoch = int(dt.datetime(2026, 11, 14, 18, tzinfo=UTC).timestamp())
    spellings = {  # event id -> timestamp text and the UTC instant it names
        "zulu": ("2026-11-14T20:00:00Z", dt.datetime(2026, 11, 14, 20, tzinfo=UTC)),
        "offset": ("2026-11-14T09:30:00+08:00", dt.datetime(2026, 11, 14, 1, 30, tzinfo=UTC)),
        "zone_name": ("2026-11-14 10:00:00 UTC", dt.datetime(2026, 11, 14, 10, tzinfo=UTC)),
        "epoch": (str(epoch), dt.datetime(2026, 11, 14, 18, tzinfo=UTC)),
    }
    for eid, text in {"naive_noon": "2026-11-14 12:00:00", "naive_morning": "2026-11-14T09:30:00",
                      "naive_late": "2026-11-15 10:59:59", "naive_too_late": "2026-11-15 11:00:01"
                      }.items():
        spellings[eid] = (text, dt.datetime.fromisoformat(text).replace(tzinfo=source_tz))
    path = _write(tmp_path / "tz.jsonl",
                  [_ev(event_id=e, timestamp=t) for e, (t, _) in spellings.items()])
    counts = ingest_source(spark, cfg, "canonical_events", path, RUN, timezone="America/New_York")
    # The future bound: the end of the run date in the lake's zone, plus 24 hours.
    bound = (dt.datetime.combine(RUN + dt.timedelta(days=1), dt.time(), lake_tz)
             + dt.timedelta(hours=24))
    assert bound == dt.datetime(2026, 11, 15, 16, tzinfo=UTC)
    expected = {e: (ts.astimezone(UTC).replace(tzinfo=None), ts.astimezone(lake_tz).date())
                for e, (_, ts) in spellings.items() if ts <= bound}
    got = {r.event_id: (r.event_ts, r.event_date)
           for r in lake.read(spark, cfg, "bronze.events").collect()}
    assert got == expected
    assert (counts["new"], counts["quarantined"]) == (len(spellings) - 1, 1)
    reasons = [r.reason for r in lake.read(spark, cfg, "bronze.quarantine").collect()]
    assert reasons == ["timestamp_in_future"]


def test_the_same_file_under_another_run_date_stores_no_quarantine_row_twice(spark, cfg, tmp_path):
    bad = [_ev(event_id="neg", price=-3), "{broken", _ev(event_id="c", price=2), "{broken"]
    path = _write(tmp_path / "ev.jsonl", [_ev(event_id="ok"), _ev(event_id="c", price=1), *bad])
    first = ingest_source(spark, cfg, "canonical_events", path, RUN)
    rows = lambda name: sorted(map(tuple, lake.read(spark, cfg, name).collect()), key=str)  # noqa: E731
    before = (rows("bronze.events"), rows("bronze.quarantine"))
    second = ingest_source(spark, cfg, "canonical_events", path, RUN + dt.timedelta(days=1))
    assert (rows("bronze.events"), rows("bronze.quarantine")) == before
    assert len(before[1]) == len(bad) and {r[-1] for r in before[1]} == {RUN}
    # Quarantined again, stored once: the second run reports them as quarantined, not new.
    assert first == {**first, "read": 6, "new": 2, "duplicates": 0, "quarantined": 4}
    assert second == {**second, "read": 6, "new": 0, "duplicates": 2, "quarantined": 4}


def test_events_without_ids_get_content_hash_ids_so_repeats_dedupe(spark, cfg, tmp_path):
    line = "1,2,3,pv,1511544070"
    path = _write(tmp_path / "tb.csv", [line, line, "1,2,3,buy,1511544071"])
    counts = ingest_source(spark, cfg, "taobao", path, RUN, timezone="Asia/Shanghai")
    assert (counts["read"], counts["new"], counts["duplicates"]) == (3, 2, 1)
    ids = [r.event_id for r in lake.read(spark, cfg, "bronze.events").collect()]
    assert all(i.startswith("h-") for i in ids) and len(set(ids)) == 2


def test_taobao_real_sample_reconciles_and_maps_behaviours(spark, cfg, real_data):
    # Unix seconds need no source zone; the lake's zone makes the dates Chinese local dates.
    cfg = cfg.with_overrides({"lake.timezone": "Asia/Shanghai"})
    counts = ingest_source(spark, cfg, "taobao", str(real_data / "taobao_user_behavior_sample.csv"),
                           dt.date(2017, 12, 3))
    assert counts["read"] == 52_229
    assert counts["read"] == counts["new"] + counts["duplicates"] + counts["quarantined"]
    by_type = dict(lake.read(spark, cfg, "bronze.events").groupBy("event_type").count().collect())
    # SOURCES.md: pv 46,928 / cart 2,955 / fav 1,241 / buy 1,105 (minus any exact duplicates)
    assert by_type["purchase"] <= 1_105 and by_type["view"] <= 46_928 and by_type["fav"] <= 1_241
    assert sum(by_type.values()) == counts["new"]
    days = lake.read(spark, cfg, "bronze.events").where(
        F.col("event_date").between("2017-11-25", "2017-12-03")).count()
    assert days >= 0.99 * counts["new"]  # local (UTC+8) days of the 9-day window


def test_yoochoose_real_sample_uses_sessions_as_anonymous_users(spark, cfg, real_data):
    counts = ingest_source(spark, cfg, "yoochoose", str(real_data / "yoochoose_clicks_sample.tsv"),
                           dt.date(2014, 9, 30))
    assert counts["read"] == 70_278 and counts["quarantined"] == 0
    row = lake.read(spark, cfg, "bronze.events").first()
    assert row.user_id == f"yc-{row.session_id}" and row.event_type == "view"


def test_chinese_review_corpus_reads_every_row(spark, cfg, real_data):
    counts = ingest_source(spark, cfg, "reviews_zh", str(real_data / "online_shopping_10_cats.csv"), RUN)
    assert counts["read"] == 62_774
    assert counts["read"] == counts["new"] + counts["duplicates"] + counts["quarantined"]
    labels = dict(lake.read(spark, cfg, "bronze.reviews").groupBy("label").count().collect())
    assert set(labels) <= {0, 1} and labels[0] > 25_000 and labels[1] > 25_000


def test_english_reviews_keep_multiline_text_and_ratings(spark, cfg, real_data):
    counts = ingest_source(spark, cfg, "reviews_en",
                           str(real_data / "womens_clothing_ecommerce_reviews.csv"), RUN)
    assert counts["read"] == 23_486 and counts["new"] == 23_486
    ratings = dict(lake.read(spark, cfg, "bronze.reviews").groupBy("rating").count().collect())
    assert ratings == {5: 13_131, 4: 5_077, 3: 2_871, 2: 1_565, 1: 842}
    empty = lake.read(spark, cfg, "bronze.reviews").where(F.col("text").isNull()).count()
    assert empty == 845


def test_rees46_and_retailrocket_fixtures_map_to_canonical_events(spark, cfg, tmp_path):
    rees = _write(tmp_path / "rees.csv", [
        "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session",
        "2019-10-01 00:00:00 UTC,view,44600062,2103807459595387724,,shiseido,35.79,541312140,72d76fde",
        "2019-10-01 00:00:04 UTC,purchase,3900821,2053013552326770905,appliances.water_heater,aqua,33.20,554748717,9333dfbd",
    ])
    rr = _write(tmp_path / "rr.csv", ["timestamp,visitorid,event,itemid,transactionid",
                                      "1433221332117,257597,view,355908,",
                                      "1433224214164,992329,transaction,248676,4000"])
    run = dt.date(2019, 10, 1)
    assert ingest_source(spark, cfg, "rees46", rees, run)["new"] == 2
    assert ingest_source(spark, cfg, "retailrocket", rr, dt.date(2015, 6, 2))["new"] == 2
    ev = {r.item_id: r for r in lake.read(spark, cfg, "bronze.events").collect()}
    assert ev["3900821"].category == "appliances.water_heater" and ev["3900821"].price == 33.2
    assert ev["44600062"].event_ts == dt.datetime(2019, 10, 1, 0, 0, 0)
    assert ev["248676"].event_type == "purchase" and ev["248676"].extras == {"transaction_id": "4000"}
    assert ev["355908"].event_ts == dt.datetime(2015, 6, 2, 5, 2, 12, 117000)


def test_reviews_outside_rating_range_are_quarantined(spark, cfg, tmp_path):
    rev = lambda **kw: json.dumps({"review_id": "r", "user_id": "u", "item_id": "i", "rating": 5,  # noqa: E731
                                   "text": "great", "timestamp": "2026-11-14T10:00:00Z", **kw})
    path = _write(tmp_path / "rev.jsonl", [rev(review_id="ok"), rev(review_id="r0", rating=0),
                                           rev(review_id="r7", rating=7),
                                           rev(review_id="rx", rating="five"),
                                           rev(review_id="notext", text=None)])
    counts = ingest_source(spark, cfg, "canonical_reviews", path, RUN)
    assert (counts["new"], counts["quarantined"]) == (2, 3)
    reasons = sorted(r.reason for r in lake.read(spark, cfg, "bronze.quarantine").collect())
    assert reasons == ["bad_rating_type", "rating_out_of_range", "rating_out_of_range"]


def test_pseudonymization_hashes_user_ids_with_hmac(spark, cfg, tmp_path, monkeypatch):
    key = "k" * 24
    monkeypatch.setenv("DEMANDLAKE_PSEUDONYM_KEY", key)
    cfg = cfg.with_overrides({"ingest.pseudonymize_user_ids": True})
    path = _write(tmp_path / "ev.jsonl", [_ev(event_id="p1", user_id="alice"),
                                          _ev(event_id="p2", user_id="alice", price=-5)])
    ingest_source(spark, cfg, "canonical_events", path, RUN)
    row = lake.read(spark, cfg, "bronze.events").first()
    assert row.user_id == "p-" + python_hmac(key.encode(), "alice")[:32]
    raw = lake.read(spark, cfg, "bronze.quarantine").first().raw
    assert "alice" not in raw and row.user_id in raw


def test_pseudonymization_replaces_the_user_id_value_and_nothing_else(spark, cfg, tmp_path,
                                                                     monkeypatch):
    key = "k" * 24
    monkeypatch.setenv("DEMANDLAKE_PSEUDONYM_KEY", key)
    cfg = cfg.with_overrides({"ingest.pseudonymize_user_ids": True})
    pseudo = "p-" + python_hmac(key.encode(), "1")[:32]
    as_string = ('{"event_id": "e1", "user_id": "1", "event_type": "view", "item_id": "11", '
                 '"price": -1.1, "timestamp": "2026-11-14T10:01:11+00:00"}')
    as_number = ('{"event_id": "e2", "user_id": 1, "event_type": "teleport1", "item_id": "1", '
                 '"note": "\\"user_id\\": 1", "timestamp": "2026-11-14T10:11:01Z"}')
    escaped_key = ('{"event_id": "e3", "user\\u005fid": "1", "event_type": "view", "item_id": "1", '
                   '"price": -1, "timestamp": "2026-11-14T10:00:01Z"}')
    broken = '{"event_id": "e4", "user_id": "1", "event_ty'
    path = _write(tmp_path / "ev.jsonl", [_ev(event_id="good1", user_id="1", price=1.1),
                                          as_string, as_number, escaped_key, broken])
    ingest_source(spark, cfg, "canonical_events", path, RUN)
    ingest_source(spark, cfg, "taobao", _write(tmp_path / "tb.csv", ["1,11,1,pv,notatime1"]),
                  RUN)
    assert [r.user_id for r in lake.read(spark, cfg, "bronze.events").collect()] == [pseudo]
    got = {(r.raw, r.reason, r.detail.endswith("could not be located to pseudonymize it"))
           for r in lake.read(spark, cfg, "bronze.quarantine").collect()}
    assert got == {
        (as_string.replace('"user_id": "1"', f'"user_id": "{pseudo}"'), "negative_price", False),
        (as_number.replace('"user_id": 1,', f'"user_id": "{pseudo}",'), "unknown_event_type",
         False),
        (None, "negative_price", True),    # the id is there but not where a parser finds it
        (None, "malformed_record", True),  # cannot be parsed: no telling where the id is
        (f"{pseudo},11,1,pv,notatime1", "bad_timestamp", False),
    }


def test_pseudonymization_also_replaces_a_session_id_that_is_the_user(spark, cfg, tmp_path,
                                                                      monkeypatch):
    # YooChoose has no user ids: its session is the user (yc-<SessionId>). Pseudonymizing the
    # user but keeping the session id gave the real id back in the same row.
    key = "k" * 24
    monkeypatch.setenv("DEMANDLAKE_PSEUDONYM_KEY", key)
    cfg = cfg.with_overrides({"ingest.pseudonymize_user_ids": True})
    pseudo = "p-" + python_hmac(key.encode(), "yc-4711")[:32]
    path = _write(tmp_path / "yc.tsv", ["SessionId\tItemId\tTime",
                                        "4711\t214716935\t1396437466.94",
                                        "4711\t214832672\t1396438212.318"])
    ingest_source(spark, cfg, "yoochoose", path, dt.date(2014, 4, 2))
    rows = lake.read(spark, cfg, "bronze.events").collect()
    assert {(r.user_id, r.session_id) for r in rows} == {(pseudo, pseudo)}
    assert not [r for r in rows if "4711" in repr(r.asDict())]


def test_spark_hmac_matches_python_hmac(spark):
    key = b"secret-key-0123456789"
    got = spark.createDataFrame([("bob",), ("\u00e9\u4e2d",)], "v string") \
        .select(hmac_sha256(key)(F.col("v")).alias("h")).collect()
    assert [r.h for r in got] == [python_hmac(key, "bob"), python_hmac(key, "\u00e9\u4e2d")]


def test_pseudonymization_without_a_key_fails_clearly(spark, cfg, tmp_path, monkeypatch):
    monkeypatch.delenv("DEMANDLAKE_PSEUDONYM_KEY", raising=False)
    cfg = cfg.with_overrides({"ingest.pseudonymize_user_ids": True})
    path = _write(tmp_path / "ev.jsonl", [_ev()])
    with pytest.raises(ValueError, match="DEMANDLAKE_PSEUDONYM_KEY"):
        ingest_source(spark, cfg, "canonical_events", path, RUN)


# The history in one batch against the day-by-day replay (late files, conflicting ids, a
# future event, folders that are not dates): tests/test_pipeline_chain.py, with sessions too.


def test_unknown_format_is_a_clear_error(spark, cfg, tmp_path):
    with pytest.raises(ValueError, match="unknown input format"):
        ingest_source(spark, cfg, "parquetish", str(tmp_path), RUN)
