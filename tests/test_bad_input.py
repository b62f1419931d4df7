"""Bad-input matrix, part two (part one, one quarantine reason per case, is in test_ingest.py).

Each case is a whole file in some format; the test asserts where every record went
(bronze, quarantine with which reason, duplicate) and that ``read = new + duplicates +
quarantined`` holds exactly. Together with test_ingest.py this covers the kinds listed in
docs/RELIABILITY.md.
"""
from __future__ import annotations

import datetime as dt
import json

import pytest
from pyspark.sql import functions as F

from demandlake import lake
from demandlake.ingest.bronze import ingest_source

RUN = dt.date(2026, 11, 14)


def ev(**kw) -> str:
    base = {"event_id": "e1", "user_id": "u1", "event_type": "view", "item_id": "i1",
            "category": "shoes", "brand": "acme", "price": 10.5, "quantity": None,
            "timestamp": "2026-11-14T10:00:00+00:00"}
    base.update(kw)
    return json.dumps({k: v for k, v in base.items() if v != "<absent>"}, ensure_ascii=False)


def rev(**kw) -> str:
    base = {"review_id": "r1", "user_id": "u1", "item_id": "i1", "rating": 4, "text": "fine",
            "timestamp": "2026-11-14T10:00:00Z"}
    base.update(kw)
    return json.dumps(base, ensure_ascii=False)


def lines(*rows: str, end: str = "\n") -> bytes:
    return "".join(r + end for r in rows).encode("utf-8")


REES_HEADER = ("event_time,event_type,product_id,category_id,category_code,brand,price,user_id,"
               "user_session")

# id, format, file bytes, expected new, duplicates, quarantine reasons (sorted)
CASES = [
    ("truncated_last_line", "canonical_events",
     lines(ev(event_id="a")) + ev(event_id="b")[:40].encode(), 1, 0, ["malformed_record"]),
    ("no_newline_at_end", "canonical_events", lines(ev(event_id="a")) + ev(event_id="b").encode(),
     2, 0, []),
    ("crlf_line_endings", "canonical_events", lines(ev(event_id="a"), ev(event_id="b"), end="\r\n"),
     2, 0, []),
    ("utf8_bom", "canonical_events", b"\xef\xbb\xbf" + lines(ev(event_id="a"), ev(event_id="b")),
     2, 0, []),
    ("blank_lines_only", "canonical_events", b"\n\n  \n", 0, 0, []),
    ("empty_file", "canonical_events", b"", 0, 0, []),
    ("wrong_delimiter", "taobao", lines("1;2;3;pv;1511544070", "1,2,3,pv,1511544070"), 1, 0,
     ["malformed_record"]),
    ("header_only_csv", "rees46", lines(REES_HEADER), 0, 0, []),
    ("epoch_seconds_as_string", "canonical_events", lines(ev(event_id="a", timestamp="1763114400")),
     1, 0, []),
    ("epoch_millis_as_number", "canonical_events", lines(ev(event_id="a", timestamp=1763114400000)),
     1, 0, []),
    ("space_separated_utc_time", "canonical_events",
     lines(ev(event_id="a", timestamp="2026-11-14 10:00:00 UTC")), 1, 0, []),
    ("type_drift_number_as_string", "canonical_events",
     lines(ev(event_id="a", price="12.50", quantity="2", event_type="purchase")), 1, 0, []),
    ("missing_optional_columns", "canonical_events",
     lines(ev(event_id="a", brand="<absent>", price="<absent>", category="<absent>")), 1, 0, []),
    ("nested_json_value", "canonical_events", lines(ev(event_id="a", brand={"name": "x"})), 1, 0,
     []),
    ("json_array_not_object", "canonical_events", lines("[1, 2, 3]", ev(event_id="a")), 1, 0,
     ["malformed_record"]),
    ("event_type_case_and_spaces", "canonical_events",
     lines(ev(event_id="a", event_type=" Purchase ")), 1, 0, []),
    ("null_user_id_literal", "canonical_events",
     lines(ev(event_id="a", user_id="null"), ev(event_id="b", user_id=" None "),
           ev(event_id="c", item_id="NaN")), 0, 0,
     ["missing_item_id", "missing_user_id", "missing_user_id"]),
    ("placeholder_reviewer_is_anonymous", "canonical_reviews", lines(rev(user_id="null")), 1, 0,
     []),
    ("emoji_cjk_review", "canonical_reviews",
     lines(rev(text="质量很好，物流也快 👍🏽 ありがとう")), 1, 0, []),
    ("one_megabyte_review", "canonical_reviews", lines(rev(text="好" * 350_000)), 0, 0,
     ["oversize_field"]),
    ("review_without_text_but_rating", "canonical_reviews", lines(rev(text="")), 1, 0, []),
    ("rating_0_and_7", "canonical_reviews",
     lines(rev(review_id="a", rating=0), rev(review_id="b", rating=7)), 0, 0,
     ["rating_out_of_range", "rating_out_of_range"]),
    ("same_file_twice_in_one_read", "canonical_events",
     lines(ev(event_id="a"), ev(event_id="a"), ev(event_id="a")), 1, 2, []),
    # An object or array where an id belongs is not an id; a string that looks like JSON and a
    # number are.
    ("object_or_array_as_id", "canonical_events",
     lines(ev(event_id="a", item_id={"a": 1}), ev(event_id="b", user_id=[1, 2]),
           ev(event_id="c", item_id='{"a":1}'), ev(event_id="d", user_id=7, item_id=8)), 2, 0,
     ["non_scalar_field", "non_scalar_field"]),
    ("two_megabyte_extra_field", "canonical_events",
     lines(ev(event_id="a", notes="x" * 2_000_000), ev(event_id="b")), 1, 0, ["oversize_field"]),
]


def _own_ids(case: str, data: bytes) -> bytes:
    """The case's event and review ids prefixed with its name: all cases go into one batch, where
    the same id in two files would be a duplicate."""
    for key in (b'"event_id": "', b'"review_id": "'):
        data = data.replace(key, key + case.encode() + b"-")
    return data


@pytest.fixture(scope="module")
def matrix(spark, tmp_path_factory):
    """Every case's file ingested as one input of a batch per kind (``ingest_inputs``, as a
    history load reads many files), each under its own source name: what each case's records
    became is read from the batch's counts per source, its quarantine rows by file and its
    stored rows by source. One batch per kind instead of a new lake per case: a one-record
    ingest costs 9-11 Spark jobs, whatever the record (docs/OPERATIONS.md)."""
    from demandlake.ingest.bronze import Input, ingest_inputs
    from demandlake.ingest.readers import reader_for
    from helpers.catalog import fresh_lake

    work = tmp_path_factory.mktemp("bad-input")
    cfg = fresh_lake(spark, work / "lake")
    inputs: dict[str, list] = {}
    for case, fmt, data, *_ in CASES:
        path = work / f"{case}.{'csv' if fmt in ('taobao', 'rees46') else 'jsonl'}"
        path.write_bytes(_own_ids(case, data))
        inputs.setdefault(reader_for(fmt)[0], []).append(Input(fmt, str(path), RUN, case))
    counts = {}
    for batch in inputs.values():
        counts.update(ingest_inputs(spark, cfg, batch)["by_source"])
    quarantine = lake.read(spark, cfg, "bronze.quarantine").collect()
    stored = {table: {r["source"]: r["count"] for r in
                      lake.read(spark, cfg, table).groupBy("source").count().collect()}
              for table in ("bronze.events", "bronze.reviews")}
    return counts, quarantine, stored


@pytest.mark.parametrize("case,fmt,data,new,dups,reasons", CASES, ids=[c[0] for c in CASES])
def test_every_record_of_a_bad_file_is_accounted_for(matrix, case, fmt, data, new, dups, reasons):
    by_source, quarantine, stored = matrix
    counts = by_source[case]
    assert counts["read"] == counts["new"] + counts["duplicates"] + counts["quarantined"], counts
    table = "bronze.reviews" if fmt.endswith("reviews") else "bronze.events"
    mine = [r for r in quarantine if r.source_file.rsplit("/", 1)[-1].startswith(f"{case}.")]
    assert (counts["new"], counts["duplicates"]) == (new, dups), counts
    assert sorted(r.reason for r in mine) == reasons, [(r.reason, r.detail) for r in mine]
    assert stored[table].get(case, 0) == new
    assert all(r.detail for r in mine)


def test_one_bad_file_ingested_alone_is_accounted_for_the_same(spark, cfg, tmp_path):
    """The matrix's batch against a file ingested alone into a new lake (ingest_source), for
    one case with a quarantined record, a good one and no trailing newline."""
    case, fmt, data, new, dups, reasons = next(c for c in CASES if c[0] == "truncated_last_line")
    path = tmp_path / f"{case}.jsonl"
    path.write_bytes(data)
    counts = ingest_source(spark, cfg, fmt, str(path), RUN)
    assert counts["read"] == counts["new"] + counts["duplicates"] + counts["quarantined"], counts
    assert (counts["new"], counts["duplicates"]) == (new, dups), counts
    quarantine = lake.read(spark, cfg, "bronze.quarantine").collect()
    assert sorted(r.reason for r in quarantine) == reasons
    assert all(r.detail and r.source_file.endswith(path.name) for r in quarantine)
    assert lake.read(spark, cfg, "bronze.events").count() == new


def test_timestamp_spellings_name_the_same_instant(spark, cfg, tmp_path):
    want = dt.datetime(2025, 11, 14, 10, 0, 0)  # 1763114400 s after the epoch
    spellings = ["2025-11-14T10:00:00Z", "2025-11-14T18:00:00+08:00", "1763114400",
                 "1763114400000", "2025-11-14 10:00:00 UTC"]
    path = tmp_path / "ts.jsonl"
    path.write_bytes(lines(*[ev(event_id=f"t{i}", timestamp=s) for i, s in enumerate(spellings)]))
    counts = ingest_source(spark, cfg, "canonical_events", str(path), dt.date(2025, 11, 14))
    assert counts["new"] == len(spellings), counts
    got = {r.event_id: r.event_ts for r in lake.read(spark, cfg, "bronze.events").collect()}
    assert got == {f"t{i}": want for i in range(len(spellings))}


def test_cjk_and_emoji_text_survive_byte_for_byte(spark, cfg, tmp_path):
    text = "质量很好，物流也快 👍🏽 ありがとう"
    path = tmp_path / "r.jsonl"
    path.write_bytes(lines(rev(text=text)))
    ingest_source(spark, cfg, "canonical_reviews", str(path), RUN)
    assert lake.read(spark, cfg, "bronze.reviews").select(F.col("text")).first()[0] == text


def test_quarantine_details_name_the_offending_field(spark, cfg, tmp_path):
    path = tmp_path / "fields.jsonl"
    path.write_bytes(lines(ev(event_id="o", item_id={"a": 1}), ev(event_id="a", user_id=[1, 2]),
                           ev(event_id="x", notes="\u00e9" * 1_000_000),  # 2 bytes a character
                           # two fields over: the first is named, with its own size
                           ev(event_id="y", brand="b" * 70_000, search_query="q" * 90_000)))
    ingest_source(spark, cfg, "canonical_events", str(path), RUN)
    got = sorted((r.reason, r.detail) for r in lake.read(spark, cfg, "bronze.quarantine").collect())
    assert got == [
        ("non_scalar_field", "field item_id holds an object or an array, not a string or a number"),
        ("non_scalar_field", "field user_id holds an object or an array, not a string or a number"),
        ("oversize_field", "extra field notes has 2000000 bytes > 65536"),
        ("oversize_field", "field brand has 70000 bytes > 65536"),
    ]
