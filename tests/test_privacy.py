"""Right to erasure (privacy.forget), its CLI, and the CLI's input validation.

One small lake is built once for this module with the real stages (ingest of JSON and CSV inputs
with rejects, sessions, features, review corpus) plus a few typed rows in every other table with
a user column, then user ``12`` is forgotten; the tests below read that outcome. Users ``123``
(same prefix) and ``u7`` must come through untouched.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
from pathlib import Path

import pytest
from delta.tables import DeltaTable
from pyspark.sql import functions as F
from pyspark.sql import types as T

from demandlake import cli, lake, privacy
from demandlake.ingest.bronze import ingest_source
from demandlake.pipeline.transform import run_features, run_review_corpus, run_sessions
from helpers.catalog import fresh_lake

RUN = dt.date(2026, 11, 14)
KEY = "test-pseudonym-key-0123456789"
GONE, KEPT = "12", ("123", "u7")


def _ev(**kw) -> str:
    base = {"event_id": "e", "user_id": "u", "event_type": "view", "item_id": "i1",
            "category": "shoes", "brand": "acme", "price": 10.0, "quantity": None,
            "timestamp": "2026-11-14T10:00:00+00:00"}
    return json.dumps({**base, **kw}, ensure_ascii=False)


def _rev(**kw) -> str:
    base = {"review_id": "r", "user_id": "u", "item_id": "i1", "category": "shoes", "rating": 5,
            "text": "great shoes", "timestamp": "2026-11-14T12:00:00Z"}
    return json.dumps({**base, **kw}, ensure_ascii=False)


def _write(path: Path, lines: list[str]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(ln + "\n" for ln in lines), encoding="utf-8")
    return str(path)


def _user_events(u: str) -> list[str]:
    return [_ev(event_id=f"{u}-1", user_id=u, timestamp="2026-11-13T09:00:00Z"),
            _ev(event_id=f"{u}-2", user_id=u, event_type="cart", timestamp="2026-11-14T10:00:00Z"),
            _ev(event_id=f"{u}-3", user_id=u, event_type="purchase", price=25.0,
                timestamp="2026-11-14T10:05:00Z"),
            _ev(event_id=f"{u}-4", user_id=u, event_type="search", item_id=None,
                search_query="red shoes", timestamp="2026-11-14T10:07:00Z")]


# Rejected records of user 12 in every shape ingest keeps them: JSON (string id, numeric id,
# truncated line) and a CSV line; the expectation below is this list, not the matching code.
GONE_REJECTS = [
    _ev(event_id="q12a", user_id=GONE, price=-1),
    json.dumps({"event_id": "q12b", "user_id": 12, "event_type": "teleport", "item_id": "i1",
                "timestamp": "2026-11-14T10:00:00Z"}),
    '{"event_id": "q12c", "user_id": "12", "event_ty',
    "12,900,7,pv,notatime",
]
KEPT_REJECTS = [
    _ev(event_id="q123", user_id="123", price=-1),
    json.dumps({"event_id": "q123b", "user_id": 123, "event_type": "teleport", "item_id": "12",
                "timestamp": "2026-11-14T10:00:00Z"}),
    _ev(event_id="q7", user_id="u7", event_type="teleport"),
    "not json at all",
    "123,901,7,pv,notatime",
]

BUILT_BY_STAGES = {"bronze.events", "bronze.quarantine", "bronze.reviews", "silver.sessions",
                   "gold.user_features", "gold.review_corpus"}
# Typed rows for every other table with user data (a new one included): column defaults by type, then the
# values each table's CHECK constraints need.
OVERRIDES = {
    "gold.sequence_examples": {"split": "train"},
    "gold.demand_forecasts": {"score_band": "high", "source": "model"},
    "gold.user_profiles": {"value_tier": "high"},
    "gold.recommendations": {"source": "als"},
    "gold.review_sentiment": {"label": "positive"},
}


def _default(t: T.DataType):
    if isinstance(t, T.StringType):
        return "x"
    if isinstance(t, (T.IntegerType, T.LongType)):
        return 1
    if isinstance(t, (T.DoubleType, T.FloatType)):
        return 0.5
    if isinstance(t, T.BooleanType):
        return False
    if isinstance(t, T.DateType):
        return RUN
    if isinstance(t, T.TimestampType):
        return dt.datetime(2026, 11, 14, 10)
    if isinstance(t, T.ArrayType):
        return [_default(t.elementType)]
    if isinstance(t, T.MapType):
        return {_default(t.keyType): _default(t.valueType)}
    if isinstance(t, T.StructType):
        return tuple(_default(f.dataType) for f in t.fields)
    raise TypeError(f"no test default for {t}")


def _fill(spark, cfg, name: str, users: list[str]) -> None:
    schema = lake.spec(name).schema
    values = {f.name: _default(f.dataType) for f in schema.fields} | OVERRIDES.get(name, {})
    rows = [tuple(u if f.name == "user_id" else values[f.name] for f in schema.fields)
            for u in users]
    lake.overwrite_all(spark, cfg, name, spark.createDataFrame(rows, schema))


def _canon(v):
    if isinstance(v, dict):
        return tuple(sorted((_canon(k), _canon(x)) for k, x in v.items()))
    if isinstance(v, (list, tuple)):
        return tuple(_canon(x) for x in v)
    if hasattr(v, "asDict"):
        return _canon(tuple(v))
    return v


def _rows(spark, cfg, name: str, version: int | None = None) -> list:
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    df = reader.load(lake.spec(name).location(cfg))
    return sorted((r.asDict() for r in df.collect()), key=lambda d: repr(_canon(d)))


def _of_user(name: str, row: dict, user: str, rejects: list[str]) -> bool:
    """Whether a row belongs to ``user``, from what the test wrote (not from privacy's matching)."""
    return row.get("user_id") == user or row.get("raw") in rejects


def _existing(spark, cfg) -> list[str]:
    return [n for n in lake.TABLES if n != privacy.REQUESTS_TABLE and lake.table_exists(spark, cfg, n)]


@pytest.fixture(scope="module")
def forgotten(spark, tmp_path_factory):
    """The module's lake before and after forgetting user 12."""
    base = tmp_path_factory.mktemp("privacy")
    cfg = fresh_lake(spark, base / "lake")
    users = [GONE, *KEPT]
    events = [ln for u in users for ln in _user_events(u)] + GONE_REJECTS[:3] + KEPT_REJECTS[:4]
    ingest_source(spark, cfg, "canonical_events", _write(base / "ev.jsonl", events), RUN)
    ingest_source(spark, cfg, "taobao",
                  _write(base / "tb.csv", [GONE_REJECTS[3], KEPT_REJECTS[4]]), RUN)
    reviews = [_rev(review_id=f"r{u}", user_id=u, text=f"good {u}") for u in users]
    ingest_source(spark, cfg, "canonical_reviews", _write(base / "rev.jsonl", reviews), RUN)
    run_sessions(spark, cfg, RUN, full=True)
    run_features(spark, cfg, RUN)
    run_review_corpus(spark, cfg)
    for name in set(privacy.user_data_columns()) - BUILT_BY_STAGES:
        _fill(spark, cfg, name, users)
    before = {n: _rows(spark, cfg, n) for n in _existing(spark, cfg)}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DEMANDLAKE_PSEUDONYM_KEY", KEY)
        result = privacy.forget(spark, cfg, [GONE], request_id="ticket-1")
    after = {n: _rows(spark, cfg, n) for n in _existing(spark, cfg)}
    return {"cfg": cfg, "before": before, "after": after, "result": result}


def test_every_table_with_user_data_held_the_user_before(forgotten):
    # Guards the tests below: a table with a user column that this lake leaves empty would
    # pass them trivially.
    for name in privacy.user_data_columns():
        assert any(_of_user(name, r, GONE, GONE_REJECTS) for r in forgotten["before"][name]), name
    assert sum(r["raw"] in GONE_REJECTS for r in forgotten["before"]["bronze.quarantine"]) == 4


def test_no_current_table_version_holds_the_forgotten_user(spark, forgotten):
    cfg = forgotten["cfg"]
    for name in privacy.user_data_columns():
        left = [r for r in _rows(spark, cfg, name) if _of_user(name, r, GONE, GONE_REJECTS)]
        assert left == [], name


def test_every_other_row_is_still_there(forgotten):
    for name, rows in forgotten["before"].items():
        expected = [r for r in rows if not _of_user(name, r, GONE, GONE_REJECTS)]
        assert forgotten["after"][name] == expected, name


def test_rows_deleted_per_table_are_exactly_the_users_rows(forgotten):
    expected = {n: sum(_of_user(n, r, GONE, GONE_REJECTS) for r in rows)
                for n, rows in forgotten["before"].items()}
    expected = {n: c for n, c in expected.items() if c}
    assert forgotten["result"]["rows_deleted"] == expected
    assert forgotten["result"]["status"] == "succeeded"


def test_the_request_is_logged_with_a_keyed_hash_and_never_the_id(spark, forgotten):
    cfg = forgotten["cfg"]
    rows = lake.read(spark, cfg, privacy.REQUESTS_TABLE).collect()
    assert len(rows) == 1
    row = rows[0].asDict()
    digest = hmac.new(KEY.encode(), b"demandlake.forget\x1f12", hashlib.sha256).hexdigest()
    assert (row["request_id"], row["status"], row["user_hashes"]) == ("ticket-1", "succeeded", [digest])
    assert row["rows_deleted"] == forgotten["result"]["rows_deleted"]
    assert row["table_versions"] == forgotten["result"]["table_versions"]
    flat = [row["request_id"], row["error"], *row["user_hashes"], *row["rows_deleted"],
            *row["table_versions"]]
    pseudonym = "p-" + hmac.new(KEY.encode(), b"12", hashlib.sha256).hexdigest()[:32]
    assert GONE not in flat and pseudonym not in repr(flat)


def test_the_delta_log_of_the_deletes_does_not_name_the_user(spark, forgotten):
    # A DELETE ... isin() would log its predicate with the literal (user_id = 12).
    cfg = forgotten["cfg"]
    literal = re.compile(r"(?<![#\w.])12(?![\w.])")
    for name, version in forgotten["result"]["table_versions"].items():
        commit = (DeltaTable.forPath(spark, lake.spec(name).location(cfg)).history()
                  .where(F.col("version") == version).first())
        assert commit["operation"] == "MERGE", name
        assert not literal.search(json.dumps(commit["operationParameters"])), name


def test_time_travel_to_the_version_before_still_shows_the_user(spark, forgotten):
    cfg = forgotten["cfg"]
    version = forgotten["result"]["table_versions"]["bronze.events"]
    old = _rows(spark, cfg, "bronze.events", version=version - 1)
    assert sum(r["user_id"] == GONE for r in old) == 4


def test_forget_again_deletes_nothing_and_adds_to_the_same_request(spark, forgotten, monkeypatch):
    cfg = forgotten["cfg"]
    monkeypatch.setenv("DEMANDLAKE_PSEUDONYM_KEY", KEY)
    again = privacy.forget(spark, cfg, [GONE], request_id="ticket-1")
    assert again["rows_deleted"] == forgotten["result"]["rows_deleted"]
    assert lake.read(spark, cfg, privacy.REQUESTS_TABLE).count() == 1


# ---- matching raw records -------------------------------------------------------------------------
RAW_CASES = [
    ('{"event_id": "a", "user_id": "12", "price": 1}', True),
    ('{"user_id":12}', True),
    ('{"event_id": "a", "user_id": 12', True),              # truncated after the value
    ("{'user_id': '12'}", True),
    ('{"event_id": "a", "user_id": "123"}', False),         # same prefix
    ('{"event_id": "12", "user_id": "u7"}', False),         # another field of a JSON record
    ('{"user_id": "u7", "tags": [12]}', False),
    ('{"user_id": "1', False),                              # cut inside the value
    ("12,900,7,pv,bad", True),
    ('"12","900"', True),
    ("12\t900\t2026", True),
    ("123,900,7,pv,bad", False),
    ("9,12,7,pv,bad", True),                                # any field of a delimited line
    ("x12,y", False),
    (None, False),
]


def test_raw_records_match_the_id_only_as_a_whole_field_value(spark):
    forms = [GONE]
    source = spark.createDataFrame([(forms, privacy.json_user_pattern(forms))],
                                   "ids array<string>, pattern string")
    raws = spark.createDataFrame([(r,) for r, _ in RAW_CASES], "raw string")
    got = (raws.crossJoin(source)
           .select("raw", privacy.raw_mentions(F.col("raw"), F.col("ids"), F.col("pattern")).alias("hit"))
           .collect())
    assert {r.raw: r.hit for r in got} == dict(RAW_CASES)


@pytest.mark.parametrize("form,raw,hit", [
    ('a.b"\\E(c', json.dumps({"user_id": 'a.b"\\E(c'}), True),     # regex and JSON escapes
    ('a.b"\\E(c', json.dumps({"user_id": 'aXb"\\E(c'}), False),
    ("p-abc", '{"event_id": "n1", "user_id": p-abc, "price": -1}', True),  # numeric id pseudonymized
    ("p-abc", '{"user_id": p-abcd}', False),
    ("é中", '{"user_id": "\\u00e9\\u4e2d"}', True),                  # ASCII-escaped JSON
])
def test_json_user_pattern_matches_ids_literally(spark, form, raw, hit):
    pattern = privacy.json_user_pattern([form])
    got = (spark.createDataFrame([(raw,)], "raw string")
           .select(F.regexp_like(F.col("raw"), F.lit(pattern)).alias("hit")).first().hit)
    assert got is hit


def test_user_data_tables_come_from_the_schemas():
    tables = privacy.user_data_columns()
    with_user = {n for n, s in lake.TABLES.items() if "user_id" in s.schema.fieldNames()}
    assert set(tables) == with_user | {"bronze.quarantine"}
    assert tables["bronze.quarantine"] == ((), ("raw",))
    assert list(tables)[:3] == ["bronze.events", "bronze.quarantine", "bronze.reviews"]


# ---- pseudonymized ingest, vacuum, failures -------------------------------------------------------
def test_forget_matches_pseudonymized_ids_and_broken_records_keep_no_raw_id(
        spark, cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("DEMANDLAKE_PSEUDONYM_KEY", KEY)
    cfg = cfg.with_overrides({"ingest.pseudonymize_user_ids": True})
    path = _write(tmp_path / "ev.jsonl", [
        _ev(event_id="a1", user_id="alice"), _ev(event_id="b1", user_id="bob"),
        _ev(event_id="a2", user_id="alice", price=-1),     # rejected; raw gets the pseudonym
        '{"event_id": "a3", "user_id": "alice", "event_',  # broken; raw withheld
        _ev(event_id="b2", user_id="bob", price=-1),
    ])
    ingest_source(spark, cfg, "canonical_events", path, RUN)
    alice = "p-" + hmac.new(KEY.encode(), b"alice", hashlib.sha256).hexdigest()[:32]
    bob = "p-" + hmac.new(KEY.encode(), b"bob", hashlib.sha256).hexdigest()[:32]
    assert {r.user_id for r in lake.read(spark, cfg, "bronze.events").collect()} == {alice, bob}
    raws = [r.raw for r in lake.read(spark, cfg, "bronze.quarantine").collect()]
    assert None in raws and not [r for r in raws if r and "alice" in r]

    result = privacy.forget(spark, cfg, ["alice"])

    assert [r.user_id for r in lake.read(spark, cfg, "bronze.events").collect()] == [bob]
    raws = sorted(r.raw or "" for r in lake.read(spark, cfg, "bronze.quarantine").collect())
    assert len(raws) == 2 and raws[0] == "" and bob in raws[1]
    assert result["rows_deleted"] == {"bronze.events": 1, "bronze.quarantine": 1}


def test_vacuum_ends_time_travel_and_purges_deletion_vectors(spark, cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("DEMANDLAKE_PSEUDONYM_KEY", KEY)
    ingest_source(spark, cfg, "canonical_events", _write(
        tmp_path / "ev.jsonl", [ln for u in ("u1", "u2") for ln in _user_events(u)]), RUN)
    path = lake.spec("bronze.events").location(cfg)
    # Our tables are created without deletion vectors (Delta 4.4.0 default); turn them on here
    # so the REORG ... APPLY (PURGE) path runs.
    spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ('delta.enableDeletionVectors' = 'true')")
    before = lake.table_version(spark, cfg, "bronze.events")
    old = spark.conf.get(privacy.RETENTION_CHECK_CONF, "true")
    spark.conf.set(privacy.RETENTION_CHECK_CONF, "false")
    try:
        result = privacy.forget(spark, cfg, ["u1"], vacuum_hours=0)
    finally:
        spark.conf.set(privacy.RETENTION_CHECK_CONF, old)
    assert result["vacuumed"] == ["bronze.events"]
    merge = DeltaTable.forPath(spark, path).history().where(F.col("operation") == "MERGE").first()
    assert int(merge["operationMetrics"]["numTargetDeletionVectorsAdded"]) > 0
    # Every data file left on disk, read without the Delta log: no row of u1 anywhere.
    files = [str(p) for p in Path(path).rglob("*.parquet") if "_delta_log" not in p.parts]
    on_disk = spark.read.parquet(*files)
    assert on_disk.where(F.col("user_id") == "u1").count() == 0
    assert on_disk.where(F.col("user_id") == "u2").count() == 4
    try:
        old_rows = _rows(spark, cfg, "bronze.events", version=before)
    except Exception as exc:  # the files of that version are gone
        assert "does not exist" in str(exc) or "FileNotFound" in str(exc) or "FILE" in str(exc)
    else:
        assert not [r for r in old_rows if r["user_id"] == "u1"]


def test_vacuum_below_a_week_needs_the_retention_check_off(spark, cfg, monkeypatch):
    monkeypatch.setenv("DEMANDLAKE_PSEUDONYM_KEY", KEY)
    spark.conf.set(privacy.RETENTION_CHECK_CONF, "true")
    with pytest.raises(ValueError, match="retentionDurationCheck"):
        privacy.forget(spark, cfg, ["u1"], vacuum_hours=1)
    assert not lake.table_exists(spark, cfg, privacy.REQUESTS_TABLE)


@pytest.mark.parametrize("ids", [[], [""], ["  "], "u1", [None]])
def test_forget_refuses_missing_or_blank_ids(spark, cfg, ids, monkeypatch):
    monkeypatch.setenv("DEMANDLAKE_PSEUDONYM_KEY", KEY)
    with pytest.raises((ValueError, TypeError)):
        privacy.forget(spark, cfg, ids)


def test_a_failed_forget_is_recorded_and_raised_without_the_id(spark, cfg, monkeypatch):
    monkeypatch.setenv("DEMANDLAKE_PSEUDONYM_KEY", KEY)
    monkeypatch.setattr(privacy, "_tables_with_rows", lambda *a: ["bronze.events"])

    def broken(*args):
        raise RuntimeError("cannot delete where user_id = secret-7")

    monkeypatch.setattr(privacy, "_delete", broken)
    with pytest.raises(privacy.ForgetError) as exc:
        privacy.forget(spark, cfg, ["secret-7"], request_id="T-1")
    assert "secret-7" not in str(exc.value) and "<user>" in str(exc.value)
    row = lake.read(spark, cfg, privacy.REQUESTS_TABLE).first()
    assert (row.request_id, row.status, row.rows_deleted) == ("T-1", "failed", {})
    assert row.error == "RuntimeError: cannot delete where user_id = <user>"


def test_forget_without_a_key_fails_before_deleting_anything(spark, cfg, monkeypatch):
    monkeypatch.delenv("DEMANDLAKE_PSEUDONYM_KEY", raising=False)
    with pytest.raises(ValueError, match="DEMANDLAKE_PSEUDONYM_KEY"):
        privacy.forget(spark, cfg, ["u1"])
    assert not lake.table_exists(spark, cfg, privacy.REQUESTS_TABLE)


# ---- CLI ----------------------------------------------------------------------------------------
def test_cli_forget_erases_the_user_and_prints_counts_only(spark, cfg, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DEMANDLAKE_PSEUDONYM_KEY", KEY)
    monkeypatch.setattr(cli, "_spark", lambda _cfg: spark)
    ingest_source(spark, cfg, "canonical_events", _write(
        tmp_path / "ev.jsonl", [_ev(event_id="s1", user_id="secret-7"), _ev(event_id="o1", user_id="o")]), RUN)
    ids = tmp_path / "ids.txt"
    ids.write_text("secret-7\n\n")
    rc = cli.main(["--lake", cfg.lake_uri, "--set", "lake.catalog=in-memory", "forget",
                   "--user-id-file", str(ids), "--request-id", "T-9"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "forget T-9: succeeded for 1 user id(s); rows deleted: bronze.events=1" in out.out
    assert "secret-7" not in out.out + out.err
    assert [r.user_id for r in lake.read(spark, cfg, "bronze.events").collect()] == ["o"]


@pytest.mark.parametrize("argv,message", [
    (["forget", "--user-id", " "], "non-blank"),
    (["forget", "--user-id", "a\nb"], "one line"),
    (["forget", "--user-id", "u", "--vacuum-hours", "-1"], "hours must be"),
    (["forget", "--user-id", "u", "--request-id", "x; DROP"], "request id must match"),
    (["features", "--run-date", "20261114"], "not a date"),
    (["features", "--run-date", "2026-W46-6"], "not a date"),
    (["ingest", "--timezone", "Mars/Olympus"], "not a time zone"),
    (["sql", "DROP TABLE bronze.events"], "only read-only queries"),
    (["sql", "SELECT 1; DROP TABLE bronze.events"], "only one statement"),
    (["sql", "WITH x AS (SELECT 1) INSERT INTO ops.runs SELECT * FROM x"], "INSERT is not allowed"),
    (["sql", "SELECT reflect('java.lang.System', 'exit', 0)"], "REFLECT is not allowed"),
    (["sql", "SELECT 1", "--limit", "0"], "must be >= 1"),
])
def test_cli_rejects_bad_input_before_anything_runs(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("query", [
    "SELECT segment, count(*) FROM gold.user_profiles GROUP BY segment",
    "select 'DROP TABLE x; DELETE' AS s;",
    "WITH t AS (SELECT 1 AS n) SELECT n FROM t -- ; DROP TABLE x",
    "DESCRIBE HISTORY bronze.events", "SHOW CREATE TABLE gold.user_profiles",
    "EXPLAIN SELECT * FROM `ops`.`runs`",
])
def test_cli_sql_accepts_one_read_only_statement(query):
    assert cli.build_parser().parse_args(["sql", query]).query == query


def test_cli_table_names_must_be_registered():
    assert cli.table_name("ops.forget_requests") == "ops.forget_requests"
    for bad in ["gold.no_such_table", "gold.user_profiles; DROP TABLE x", "users"]:
        with pytest.raises(Exception, match="unknown table|not a table name"):
            cli.table_name(bad)
