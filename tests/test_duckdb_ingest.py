"""The DuckDB reference of the ingest stage (bench/duckdb_ingest.py) and the Spark ingest agree.

A few days of synthetic events (``synth.generate``, with ``synth.plant_faults``: late events,
repeats, conflicting ids and bad records across days) plus two files of hand-made hostile lines,
for the rules the generator never hits, are ingested by Spark into a fresh lake in ONE batch
(``ingest_inputs``: one input per day under its own run date, then the hostile files), in a
lake time zone that is not UTC and with the hostile input's naive times in another zone. The
reference computes bronze.events and bronze.quarantine from the same files; every row of both
tables must be equal (as multisets, every column), and so must the counts ``ingest_inputs``
reports. A reference with one rule changed must no longer match.

Lines kept out because Spark's JSON and cast semantics cannot be reproduced exactly in DuckDB
(bench/duckdb_ingest.py's docstring lists them), each with why:
  * single-quoted JSON, ``+Infinity``/``+INF`` tokens, lone ``\\ud83d`` escapes: Spark accepts
    them, DuckDB does not; trailing commas, ``nan``/``inf``/``INF``/``-NaN``: the reverse;
  * keys over 50,000 characters below the top level, numbers over 1,000 digits, deep nesting
    (Jackson's limits: malformed in Spark; the reference applies the key limit at the top level);
  * floats whose Java 17 spelling is not the shortest (``1e23`` -> ``9.999999999999999E22``) and
    non-shortest floats nested in objects (DuckDB spells them its own way);
  * time-only timestamps (``10:00:00``): Spark reads them as TODAY, so the result depends on the
    day the test runs;
  * 16 or more digits as a timestamp: Spark's ANSI cast to long overflows and the whole ingest
    FAILS (the reference fails the same way, but a failing batch is no row to compare);
  * a time outside the years 1-9999 (``999999999999999`` ms is the year 33658): the Spark
    ingest FAILS in its tally (bronze.py, ``collect`` of every record's event_date, quarantined
    ones included: Python's date stops at 9999);
  * zone names other than UTC/GMT/UT/Z, years of five or more digits or negative, hex floats.
"""
from __future__ import annotations

import collections
import datetime as dt
import json
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from demandlake import lake, synth
from demandlake.ingest.bronze import Input, ingest_inputs
from helpers import bench
from helpers.catalog import fresh_lake

START = dt.date(2026, 11, 1)
DAYS = 4
RUN = START + dt.timedelta(days=DAYS - 1)    # the hostile files' run date
LAKE_TZ = "Asia/Shanghai"                    # run-date bound and event dates in a non-UTC zone
HOSTILE_TZ = "America/New_York"              # the hostile input's naive times are local there
T0 = "2026-11-04T10:00:00Z"


ref = bench.load("duckdb_ingest")


def ev(**kw) -> str:
    """One event line; a value "<absent>" leaves the key out."""
    base = {"event_id": "e", "user_id": "u1", "session_id": "s1", "event_type": "view",
            "item_id": "i1", "category": "shoes", "brand": "acme", "price": 10.5,
            "quantity": None, "search_query": None, "timestamp": T0}
    base.update(kw)
    return json.dumps({k: v for k, v in base.items() if v != "<absent>"}, ensure_ascii=False)


def _epoch(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).timestamp())


def hostile_text_lines(generated: str) -> list[str]:
    """Hand-made lines (valid UTF-8) for every rule; ``generated`` is a line of the first day."""
    g = json.loads(generated)
    return [
        # blank lines carry no record; a line of tabs (Spark trims spaces only) is malformed
        "", "   ", "\t",
        # malformed_record
        '{"event_id": "m1", "user_id": ', "not json at all", "[1, 2, 3]", '"a string"', "42",
        "null", ev(event_id="m2", brand="raw\ttab"), ev(event_id="m3")[:-1] + ', "n": 01}',
        ev(event_id="m4")[:-1] + ', "n": "\\x"}', "/* comment */ " + ev(event_id="m5"),
        "\ufeff" + ev(event_id="m6"),           # a byte order mark inside a file
        ev(event_id="m7") + ev(event_id="m8"),  # two objects on one line
        ev(event_id="m9") + " and more",        # text after the object
        ev(event_id="m10") + "," + ev(event_id="m11"),  # two objects, a comma between
        ev(event_id="m12") + "],[" + ev(event_id="m13"),  # brackets closed by the line
        ev(event_id="m14") + "]",                # a bracket after the object
        # missing_user_id / missing_item_id: an id of whitespace alone (not only spaces)
        ev(event_id="w1", user_id="\t"), ev(event_id="w2", user_id=" \t\r "),
        ev(event_id="w3", item_id="\n"),
        "{}",                                    # parses: no user id
        # bad_encoding: a literal replacement character
        ev(event_id="enc1", brand="caf\ufffd"),
        # oversize_field (65,536 bytes): a field, an extra, two fields (the detail names the
        # first, with its size), multi-byte text, an oversize key, a raw text cut at
        # 65,536 characters, and a field exactly at the limit (valid)
        ev(event_id="big1", search_query="z" * 70_000),
        ev(event_id="big2", notes="x" * 70_000),
        ev(event_id="big3", item_id="i" * 66_000, brand="b" * 70_000),
        ev(event_id="big4", brand="é" * 40_000),
        ev(event_id="big5", **{"k" * 70_000: "v"}),      # malformed: Jackson's name limit
        ev(event_id="key1", **{"k" * 50_000: "v"}),      # the longest name Jackson reads
        ev(event_id="key2", **{"k" * 50_001: "v"}),
        ev(event_id="key3", **{"😀" * 25_000: "v"}),     # 50,000 UTF-16 units: oversize
        ev(event_id="key4", **{"😀" * 25_001: "v"}),     # 50,002 units: malformed
        ev(event_id="big6", search_query="好" * 70_000),
        ev(event_id="fits", brand="b" * 65_536),
        # non_scalar_field; a string that looks like JSON and numbers are ids
        ev(event_id="ns1", item_id={"a": 1}), ev(event_id="ns2", user_id=[1, 2]),
        ev(event_id="ns3", item_id='{"a":1}'), ev(event_id={"x": 1}),
        ev(event_id="ns5", session_id={"s": [1]}), ev(event_id="ns6", user_id="  [not json"),
        ev(event_id="ns8", user_id=7, item_id=8),
        ev(event_id="ns9", brand={"name": "x", "tags": ["a", 1, True, None]}),
        # a key named twice (a field or an extra) is malformed: which value is meant is unknown
        ev(event_id="dk1")[:-1] + ', "user_id": "second"}',
        '{"event_id": "ns7", "user_id": "{u}", "user_id": "v", "event_type": "view", '
        f'"item_id": "i", "timestamp": "{T0}"}}',
        ev(event_id="dk2")[:-1] + ', "tag": "a", "tag": "b"}',
        # missing_user_id (null, absent, blank, placeholders); a tab is an id; padding trimmed
        ev(event_id="u1", user_id=None), ev(event_id="u2", user_id="<absent>"),
        ev(event_id="u3", user_id="  "), ev(event_id="u4", user_id="null"),
        ev(event_id="u5", user_id=" None "), ev(event_id="u6", user_id="N/A"),
        ev(event_id="u7", user_id="\\n"), ev(event_id="u8", user_id="undefined"),
        ev(event_id="u9", user_id="NIL"), ev(event_id="u10", user_id="nan"),
        ev(event_id="u11", user_id="\t"), ev(event_id="u12", user_id="  padded  "),
        # event types
        ev(event_id="t1", event_type=None), ev(event_id="t2", event_type="<absent>"),
        ev(event_id="t3", event_type="  "), ev(event_id="t4", event_type="teleport"),
        ev(event_id="t5", event_type=" Purchase ", quantity=2),
        ev(event_id="t6", event_type="VIEW"),
        ev(event_id="t7", event_type="remove_from_cart"), ev(event_id="t8", event_type="fav"),
        ev(event_id="t9", event_type=5),
        # timestamps: missing, unparseable, too old, in the future (the bound: the end of the
        # run date in Asia/Shanghai + 24 h = 2026-11-05 16:00 UTC, itself still valid)
        ev(event_id="ts1", timestamp=None), ev(event_id="ts2", timestamp="<absent>"),
        *[ev(event_id=f"tsbad{i}", timestamp=t) for i, t in enumerate([
            "yesterday-ish", "2026-02-30", "2026-11-04T10:00Z", "1e9", "2026/11/04",
            "2026-11-04T", True, {"a": 1}, "2026-11-04T24:00:00", "2026-13-01",
            "2026-11-04T10:00:00+19:00", "2026-11-04t10:00:00", "2026-11-04T10:00:00z",
            "2026-11-04T10:00:00+18:01", "2026-11-04T10:00:00.5x", "2026-11-04 10:00",
            "2026-11-04T10:00:00+800"])],
        *[ev(event_id=f"tsold{i}", timestamp=t) for i, t in enumerate([
            "1999-12-31T23:59:59Z", "-1", "0", "946684799", "946684799.999999", -5])],
        *[ev(event_id=f"tsnew{i}", timestamp=t) for i, t in enumerate([
            "2027-01-01T00:00:00Z", "2026-11-05T16:00:00.000001Z", "99999999999",
            1794000000000])],
        *[ev(event_id=f"tsok{i}", timestamp=t) for i, t in enumerate([
            "2026-11-05T16:00:00Z", "2026-11-06T00:00:00+08:00", "946684800",
            "2026-11-04T10:00:00+08:00",
            "2026-11-04T10:00:00+0800", "2026-11-04T10:00:00+08", "2026-11-04T10:00:00-05:00",
            "2026-11-04T10:00:00+8", "2026-11-04T10:00:00+8:30", "2026-11-04T10:00:00+08:00:30",
            "2026-11-04T10:00:00-00:00", "2026-11-04T10:00:00+18:00", "2026-11-04 10:00:00 UTC",
            "2026-11-04T10:00:00UTC", "2026-11-04 10:00:00 GMT", "2026-11-04T10:00:00UTC+8",
            "2026-11-04T10:00:00GMT+08:00", "2026-11-04T10:00:00 +08:00",
            "2026-11-04T10:00:00UT-03:30", "2026-11-04T10", "2026-11", "2026-1-4T1:2:3",
            "2026-11-04T10:00:00.123456789Z", "2026-11-04T10:00:00.", "2026-11-04T10:00:00.5",
            "\t2026-11-04T10:00:00Z", " 2026-11-04T10:00:00Z ", "2026-11-04 10:00:00",
            "2026-11-04T23:30:00", "+2026-11-04T10:00:00Z",
            str(_epoch("2026-11-04T10:00:00+00:00")), _epoch("2026-11-04T10:00:00+00:00"),
            _epoch("2026-11-04T10:00:00+00:00") * 1000, f"{_epoch('2026-11-04T10:00:00+00:00')}.25",
            str(_epoch("2026-11-04T10:00:00+00:00") * 1000 + 7)])],
        # items
        ev(event_id="it1", item_id=None), ev(event_id="it2", item_id="NaN"),
        ev(event_id="it3", event_type="search", item_id=None, search_query="tent"),
        ev(event_id="it4", event_type="search", item_id="null", search_query="tent"),
        # prices
        *[ev(event_id=f"p{i}", price=p) for i, p in enumerate([
            "cheap", "0x10", "1,5", {"a": 1}, "", "  ",
            -1, -3.5, "-0.01", -1e-7, "-Infinity", "-inf",
            5e9, "NaN", "Infinity", "inf", "+inf", 1000000.01, "1e7",
            "12.50", 12, " 3.5 ", "1d", "2.5f", "+5", ".5", "5.", -0.0, 1000000, "1e6", 1e2,
            "\t7.25\n", 0.1 + 0.2, 123456789.123, 1e-5, 0.001, 12345678.9])],
        # JSON tokens Spark reads as the quoted text "NaN", "Infinity", "-Infinity"
        *[ev(event_id=f"pj{i}").replace('"price": 10.5', f'"price": {token}')
          for i, token in enumerate(["NaN", "Infinity", "-Infinity", "1e400", "1.50E+2"])],
        # quantities
        *[ev(event_id=f"q{i}", event_type="purchase", quantity=q) for i, q in enumerate([
            "two", 2.0, 2.5, "99999999999", "2e0", "1.", True,
            0, -1, 10_001, "-0",
            "+2", " 3 ", "007", 10_000, "\t4", 1])],
        # duplicates and conflicts: an exact repeat, other content under one id, the same
        # content spelt otherwise (a duplicate), three versions of one id, a repeated bad line
        # (two quarantine rows), lines without ids (content keys), an id of an earlier input
        # (an exact copy: duplicate; other content: conflict), a valid and an invalid record
        # under one id, numbers and strings as the same id, a blank id
        ev(event_id="d1"), ev(event_id="d1"),
        ev(event_id="d2", price=1), ev(event_id="d2", price=2),
        ev(event_id="d3", price="10.5", timestamp="2026-11-04T10:00:00+00:00"),
        ev(event_id="d3", price=10.5, timestamp="2026-11-04T18:00:00+08:00"),
        ev(event_id="tri", price=1), ev(event_id="tri", price=2), ev(event_id="tri", price=3),
        ev(event_id="bad-twice", price=-1), ev(event_id="bad-twice", price=-1),
        ev(event_id="<absent>", item_id="anon"), ev(event_id="<absent>", item_id="anon"),
        ev(event_id="<absent>", item_id="anon", extra="x"),
        ev(event_id=None, item_id="anon2"), ev(event_id="  ", item_id="anon3"),
        generated, json.dumps({**g, "price": round(float(g.get("price") or 1.0) + 7, 2)}),
        ev(event_id="vi", price=-5), ev(event_id="vi", price=5),
        ev(event_id=12345), ev(event_id="12345"), ev(event_id="null"),
        # unicode
        ev(event_id="uni1", event_type="search", item_id=None, search_query="红色 鞋子 👟"),
        ev(event_id="uni2", brand="Ünïcödé", category="e\u0301", item_id="item/√"),
        ev(event_id="uni3", **{"ключ": "значение"}),
        ev(event_id="uni4", user_id="用户\u00a0"),
        # extras: every JSON type, escapes, an empty key, a key that differs only in case
        ev(event_id="x1", note="hello", score=1.50, big=5e9, n=7, flag=True, nothing=None,
           nested={"k": [1, "a"]}, User_ID="caps", tiny=1e-5, neg=-0.0, huge=10**24),
        ev(event_id="x2", note="line\nbreak\ttab \u0001 ctl \u007f \u2028 / \\ \""),
        ev(event_id="x3", **{"": "empty key"}),
    ]


def hostile_bytes_lines() -> list[bytes]:
    """Lines whose bytes are not all UTF-8 (the file is read in the reference's byte path)."""
    def good(eid: str, brand: bytes) -> bytes:
        return (b'{"event_id": "' + eid.encode() + b'", "user_id": "u1", "event_type": "view", '
                b'"item_id": "i1", "brand": "' + brand + b'", "timestamp": "' + T0.encode()
                + b'"}')

    return [
        good("b1", b"caf\xe9"),                      # Latin-1
        good("b2", b"\xff\xfe x \xe2\x82 y"),        # bad bytes, a truncated sequence
        good("b3", b"\xc0\x80 overlong"),
        good("b4", b"\xed\xa0\x80 surrogate"),
        good("b5", b"\xf4\x90\x80\x80 beyond U+10FFFF"),
        good("b6", b"\xf0\x9f\x98 cut emoji \xf0\x9f\x98\x80 whole"),
        good("b6", b"\xf0\x9f\x98 cut emoji \xf0\x9f\x98\x80 whole"),   # twice: two rows
        b'{"event_id": \xff}',                        # broken JSON too: malformed first
        good("b7", "fine ünïcode".encode()),          # valid lines of the same file
        good("b8", b"plain"),
        b"   ",
    ]


def write_hostile(folder: Path, generated: str) -> list[Path]:
    """The two hostile files: UTF-8 text (a byte order mark first, CRLF and lone CR line ends,
    no newline at the end) and one with bytes that are not UTF-8 (also a byte order mark, CRLF
    and CR)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = hostile_text_lines(generated)
    text = "\ufeff" + "\n".join(lines[:10]) + "\r\n" + "\r\n".join(lines[10:14]) + "\r" \
        + "\n".join(lines[14:])
    first = folder / "part-text.jsonl"
    first.write_bytes(text.encode("utf-8"))
    raw = hostile_bytes_lines()
    second = folder / "part-bytes.jsonl"
    second.write_bytes(b"\xef\xbb\xbf" + b"\n".join(raw[:4]) + b"\r\n" + raw[4] + b"\r"
                       + b"\n".join(raw[5:]) + b"\n")
    # Spark's file index skips names starting with "_" or "." (so does the reference)
    for hidden in ("_hidden.jsonl", ".hidden.jsonl"):
        (folder / hidden).write_text(ev(event_id=hidden) + "\n", encoding="utf-8")
    return [first, second]


@pytest.fixture(scope="module")
def both(spark, tmp_path_factory):
    """Generate, ingest with Spark in one batch, and build the reference from the same files."""
    base = tmp_path_factory.mktemp("duckdb_ingest")
    raw = base / "raw"
    synth.generate(raw, users=20, days=DAYS, start_date=START, seed=5, reviews=False)
    planted = synth.plant_faults(raw)
    first_day = raw / "events" / f"dt={START.isoformat()}"
    generated = next(ln for ln in (first_day / "part-00000.jsonl").read_text().splitlines() if ln)
    write_hostile(base / "hostile", generated)
    days = [START + dt.timedelta(days=k) for k in range(DAYS)]
    inputs = [Input("canonical_events", f"{raw}/events/dt={d.isoformat()}/*.jsonl", d, "events")
              for d in days]
    inputs.append(Input("canonical_events", f"{base}/hostile/*.jsonl", RUN, "hostile",
                        HOSTILE_TZ))
    cfg = fresh_lake(spark, base / "lake", f"lake.timezone={LAKE_TZ}")
    spark_counts = ingest_inputs(spark, cfg, inputs)
    events = lake.read(spark, cfg, "bronze.events")
    quarantine = lake.read(spark, cfg, "bronze.quarantine")
    ref_inputs = [ref.Input(tuple(ref.expand(i.path)), i.run_date, i.source, i.timezone or "UTC")
                  for i in inputs]
    return {
        "base": base, "inputs": ref_inputs, "planted": planted, "counts": spark_counts,
        "events": [tuple(r) for r in events.select(
            *[F.unix_micros(c).alias(c) if c == "event_ts" else F.col(c)
              for c in ref.EVENT_COLUMNS]).collect()],
        "quarantine": [tuple(r) for r in quarantine.select(ref.QUARANTINE_COLUMNS).collect()],
        "files": {"events": events.inputFiles(), "quarantine": quarantine.inputFiles()},
    }


def reference(both, out: Path, limits=None):
    """The reference's rows (read back from its Parquet files) and counts."""
    limits = limits or ref.Limits(timezone=LAKE_TZ)
    result = ref.ingest(both["inputs"], out, limits, threads=2, memory_limit="1GB")
    con = ref.connect(1, "1GB")
    cols = ", ".join("epoch_us(event_ts) AS event_ts" if c == "event_ts" else c
                     for c in ref.EVENT_COLUMNS)
    events = con.execute(f"SELECT {cols} FROM read_parquet('{out}/events.parquet')").fetchall()
    quarantine = con.execute(f"SELECT {', '.join(ref.QUARANTINE_COLUMNS)} "
                             f"FROM read_parquet('{out}/quarantine.parquet')").fetchall()
    return events, quarantine, result["counts"]


def _plain(row) -> tuple:
    """A row with its map as a sorted tuple of items (hashable, for a multiset)."""
    return tuple(tuple(sorted(v.items())) if isinstance(v, dict) else v for v in row)


def assert_same_rows(spark_rows, ref_rows, columns, what: str) -> None:
    """Equal as multisets; on a difference, says which rows each side has more of."""
    got = collections.Counter(_plain(r) for r in spark_rows)
    want = collections.Counter(_plain(r) for r in ref_rows)
    only_spark, only_ref = got - want, want - got

    def show(rows):
        return "; ".join(str(dict(zip(columns, (str(v)[:160] for v in r))))
                         for r in list(rows.elements())[:3])
    assert not only_spark and not only_ref, (
        f"{what}: {sum(only_spark.values())} rows only in Spark, e.g. {show(only_spark)}; "
        f"{sum(only_ref.values())} only in the reference, e.g. {show(only_ref)}")


@pytest.fixture(scope="module")
def ref_out(both, tmp_path_factory):
    """The reference built once from the same files: its folder, rows and counts."""
    out = tmp_path_factory.mktemp("duckdb_ingest_ref")
    return (out, *reference(both, out))


def test_the_input_hits_every_rule_and_both_line_readers(both, ref_out):
    _, events, quarantine, _ = ref_out
    reasons = collections.Counter(r[5] for r in both["quarantine"])
    assert set(reasons) == {
        "malformed_record", "bad_encoding", "oversize_field", "non_scalar_field",
        "missing_user_id", "missing_event_type", "unknown_event_type", "missing_timestamp",
        "bad_timestamp", "timestamp_too_old", "timestamp_in_future", "missing_item_id",
        "bad_price_type", "negative_price", "absurd_price", "bad_quantity_type", "bad_quantity",
        "conflicting_duplicate_id"}, reasons
    counts = both["counts"]
    assert counts["duplicates"] >= both["planted"]["repeat"] + 4
    assert 200 < counts["new"] < 5000 and len(events) == counts["new"]
    assert len(quarantine) == counts["quarantined"]
    # Both of the reference's line readers ran: text files and a file that is not UTF-8.
    assert any(r[4] and "\ufffd" in r[4] and r[5] == "bad_encoding" for r in quarantine)


def test_duckdb_bronze_events_equal_the_spark_rows(both, ref_out):
    assert_same_rows(both["events"], ref_out[1], ref.EVENT_COLUMNS, "bronze.events")


def test_duckdb_quarantine_rows_equal_the_spark_rows(both, ref_out):
    assert_same_rows(both["quarantine"], ref_out[2], ref.QUARANTINE_COLUMNS, "bronze.quarantine")


def test_duckdb_counts_equal_what_spark_reports(both, ref_out):
    assert ref_out[3] == both["counts"]


def test_the_sql_comparison_finds_no_difference(both, ref_out):
    con = ref.connect(2, "1GB")
    result = ref.compare(con, both["files"]["events"], both["files"]["quarantine"], ref_out[0])
    for table in ("events", "quarantine"):
        c = result[table]
        assert c["spark_rows"] == c["reference_rows"] > 0, c
        assert c["only_spark"] == c["only_reference"] == c.get("differing", 0) == 0, c


@pytest.mark.parametrize("change", [
    {"max_quantity": 9_999}, {"max_future_hours": 23.0}, {"max_field_bytes": 65_535}])
def test_a_reference_with_one_rule_changed_no_longer_matches(both, tmp_path, change):
    limits = ref.Limits(**{"timezone": LAKE_TZ, **change})
    events, quarantine, _ = reference(both, tmp_path / "ref", limits)
    with pytest.raises(AssertionError):
        assert_same_rows(both["events"], events, ref.EVENT_COLUMNS, "bronze.events")
        assert_same_rows(both["quarantine"], quarantine, ref.QUARANTINE_COLUMNS,
                         "bronze.quarantine")
