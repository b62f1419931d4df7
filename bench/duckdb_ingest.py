"""A reference implementation, in DuckDB SQL, of the ingest stage for canonical JSON-lines events.

It reproduces what ``demandlake.ingest.bronze.ingest_inputs`` stores for ``canonical_events``
inputs (the format ``demandlake.synth`` writes) into an EMPTY lake: the bronze.events rows and
the bronze.quarantine rows, with the same reasons and details, from the same raw files. It serves
two purposes: an independent check of the Spark semantics (tests/test_duckdb_ingest.py) and a
single-process baseline for benchmarks.

    python bench/duckdb_ingest.py --input 2026-11-01=raw/events/dt=2026-11-01/*.jsonl \\
        --input 2026-11-02=raw/events/dt=2026-11-02/*.jsonl --out /tmp/ref \\
        --json-out /tmp/ref/timings.json
    python bench/duckdb_ingest.py raw/a.jsonl raw/b.jsonl --run-date 2026-11-14 --out /tmp/ref

Nothing is imported from ``demandlake``: every constant, reason and detail text is restated here
(the reference must not share code with what it checks). The semantics reproduced, rule by rule:

Reading (``readers._read_jsonl``)
  * Inputs are replayed in the order given (``seq``), each under its own run date; a glob or a
    folder is expanded in name order, skipping names starting with ``_`` or ``.`` (as Spark's
    file index does). ``source_file`` is Spark's ``_metadata.file_path``: ``file:`` + the
    absolute path, percent-encoded (``%`` -> ``%25``, space -> ``%20``, ...).
  * A file is split into lines at ``\\n``, ``\\r\\n`` and a lone ``\\r`` (Hadoop's line reader); a
    UTF-8 byte order mark at the start of a file is dropped; a last line without a newline counts.
  * A line whose text is empty after trimming SPACES only (Spark's ``trim``) carries no record and
    is not counted anywhere; a line of tabs is a record (and malformed).
  * A line parses when it is one JSON object; anything else (broken JSON, text after the
    object, a top-level key named twice, an array, a scalar, ``null``, a raw control character
    in a string, a leading zero, a comment, a top-level key longer than 50,000 UTF-16 units:
    Jackson's name limit) is ``malformed_record``. Each field's
    text is what Spark's ``from_json`` to map<string,string> gives: a string's value;
    ``true``/``false``; an integer's digits (``-0`` -> ``0``); a float in Java's
    ``Double.toString`` spelling (``10.50`` -> ``10.5``, ``5e9`` -> ``5.0E9``,
    ``1e-4`` -> ``1.0E-4``); ``NaN``/``Infinity`` tokens and overflowing floats as the QUOTED text
    ``"NaN"``/``"Infinity"``/``"-Infinity"``; an object or array as its compact JSON; JSON ``null``
    as null. With a key repeated, the FIRST value is the field's.
  * Field names are the 11 canonical ones (case-sensitive); other keys go to ``extras`` (in the
    line's key order, duplicates kept for the hash), null when there are none.
  * A field whose text is empty after trimming spaces is null (``_blank_to_null``).
  * ``bad_encoding``: the line's bytes are not valid UTF-8, or it holds U+FFFD. Such a line is
    parsed with each maximal invalid subsequence replaced by U+FFFD (Java's decoder), and its
    quarantined ``raw`` is that repaired text (Spark's ``make_valid_utf8``).
  * ``non_scalar_field``: the first of event_id, user_id, session_id, item_id whose text starts
    (after leading spaces) with ``{`` or ``[`` and which is a JSON object or array, or whose line
    Spark's variant parser rejects (approximated: a repeated top-level key or a top-level
    ``NaN``/``Infinity`` token).

Validation (``validate.validate_events``): the first failing check, in this order, gives
``reason`` and ``detail``:

  =====================  ==========================================================================
  malformed_record       record could not be parsed
  bad_encoding           record is not valid UTF-8
  oversize_field         a field (after blank-to-null) over ``max_field_bytes`` UTF-8 bytes:
                         "field <first such field> has <its bytes> bytes > <limit>"; else
                         an extras entry (max of key and value bytes): "extra field <key, 80
                         chars> has <n> bytes > <limit>"
  non_scalar_field       field <f> holds an object or an array, not a string or a number
  missing_user_id        null, whitespace alone (space, tab, CR, LF, FF, VT), or lower(trim)
                         one of null none nan undefined nil \\n n/a:
                         "no user id" [+ " (placeholder <first 20 chars>)"]
  missing_event_type     no event type
  unknown_event_type     lower(trim(event_type)) not one of view cart remove_from_cart purchase
                         search fav: "event type not known: <first 80 chars>"
  missing_timestamp      no timestamp
  bad_timestamp          "unparseable timestamp: <first 80 chars>"
  timestamp_too_old      before min_timestamp: "before 2000-01-01T00:00:00: <ts>"
  timestamp_in_future    after the end of the run date in the lake's zone + max_future_hours:
                         "after <bound> UTC: <ts>" (strictly after)
  missing_item_id        a missing id (as for users) on a non-search event
  bad_price_type         "price is not a number: <first 80 chars>"
  negative_price         "price < 0: <text>"
  absurd_price           above max_price, or NaN: "price > 1e+06 or NaN: <text>"
  bad_quantity_type      "quantity is not an integer: <first 80 chars>"
  bad_quantity           outside 1..max_quantity: "quantity outside 1..10000: <text>"
  =====================  ==========================================================================

  * Timestamps: after trimming spaces, text of digits (``-?\\d+(\\.\\d+)?``) is Unix seconds, or
    milliseconds when its absolute value is >= 1e11, truncated to microseconds; a value past the
    range of a long fails the whole ingest in Spark (ANSI cast overflow) and fails here too.
    Other text is Spark's string-to-timestamp cast: ``yyyy-[m]m[-[d]d[( |T)[h]h[:[m]m[:[s]s
    [.fraction][zone]]]]]`` (fraction truncated to microseconds; a zone only after the seconds),
    with the zone ``Z``, ``UTC``/``GMT``/``UT``, or an offset ``+h``, ``+hh``, ``+hh:mm``,
    ``+hhmm``, ``+hh:mm:ss``, ``+hhmmss`` (also after UTC/GMT/UT, up to 18 hours). Naive text
    (``validate._NAIVE_TEXT``) is local time in the input's zone.
    Spark's string casts trim ASCII control characters and spaces first.
  * ``price``: Java's ``Double.parseDouble`` grammar (suffix ``d``/``f`` allowed, leading ``+``,
    ``.5``, ``5.``) after trimming characters <= U+0020, plus ``inf``, ``+inf``, ``infinity``,
    ``-inf``, ``-infinity``, ``nan`` in any case, ``NaN`` and ``Infinity`` with a sign.
    ``quantity``: ``[+-]digits`` within int after trimming control characters and spaces (no
    fraction, no exponent: ``2.0`` is not an integer).
  * Stored ``user_id`` is trimmed of spaces, ``event_type`` lower-cased and trimmed; other
    strings are kept as they are.

Keys, hashes and dedup (``validate._content_hash``, ``bronze.classify``)
  * ``record_hash`` = sha256 of user_id, session_id, event_type, item_id, category, brand, price
    (as Spark casts a double to text, i.e. Java's spelling), quantity, search_query, event_ts (as
    ``yyyy-MM-dd HH:mm:ss[.ffffff]``, trailing zeros dropped) with U+0000 for nulls, then
    ``to_json(extras)`` (empty when none), joined by U+001F.
  * ``event_id`` is the given id (not trimmed, placeholders allowed), else ``h-`` + the first 32
    hex digits of the hash. ``event_date`` is the local date of ``event_ts`` in the lake's zone.
  * Per event id: valid records first, then by input order, hash, raw bytes, file. The first is
    new; a later valid one with the first's hash is a duplicate (not stored, not quarantined);
    with another hash it is quarantined as ``conflicting_duplicate_id``: "event_id <id> already
    seen with other content". Invalid records keep their own reason.
  * Quarantine rows: kind ``events``, source, source_file, ``record_id`` = sha256(source_file,
    raw bytes, occurrence of that raw text in that file numbered by reason then detail, joined
    by U+001F), raw (repaired, first 65,536 characters), reason, detail, ``ingest_date`` = the
    input's run date.

Left out, or not reproduced exactly (the test keeps such lines out, saying why):
  * dedup against an existing bronze table (the reference ingests into an empty lake), reviews,
    the delimited formats, pseudonymization, compressed files;
  * JSON that Spark's Jackson and DuckDB's yyjson parse differently: Spark ACCEPTS single-quoted
    strings, ``+Infinity``/``+INF`` and lone surrogate escapes (stored as ``?``), and REJECTS
    trailing commas, ``INF``, ``nan``/``inf``/``infinity`` spellings and ``-NaN``; all these go
    the other way here (``NaN``, ``Infinity``, ``-Infinity``, ``-INF`` agree). Text after the
    line's JSON value (``{..}{..}``) is malformed in both;
  * Java 17's ``Double.toString`` is not always the shortest spelling (``1e23`` is
    ``9.999999999999999E22``, the smallest subnormal ``4.9E-324``); here it is. Floats inside a
    nested object or array keep DuckDB's spelling (``5e9`` -> ``5000000000.0``, not ``5.0E9``);
  * Jackson's other limits: keys over 50,000 characters below the top level, numbers over 1,000
    digits, nesting deeper than Jackson allows (malformed in Spark, parsed here);
  * Spark's variant parse (non_scalar_field) also rejects repeated keys and NaN/Infinity tokens
    nested deeper than the top level (a top-level key named twice is malformed in both);
  * timestamps: time-only text (``10:00:00``: Spark takes TODAY's date), years other than four
    digits or signed negative (a time outside the years 1-9999 makes the Spark ingest fail in its
    tally, which collects every record's event_date into Python dates), zone names other than
    UTC/GMT/UT/Z (``Asia/Shanghai``, ``PST``, ``CET``: Spark knows them, here they are
    unparseable), hex floats as prices;
  * Java's and DuckDB's ``lower`` on exotic letters (dotted capital I).

Columns: every column of both tables is reproduced; none is run-specific (bronze has no ingest
time or run id). ``source_file`` (and the quarantine ``record_id``, which hashes it) depends on
where the files are: ``compare(..., exclude=("source_file",))`` leaves both out when the
reference read the files from another path.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import glob
import importlib.util
import json
import logging
import os
import resource
import sys
import time
from pathlib import Path
from typing import Iterable, Sequence

log = logging.getLogger(__name__)

# ---- restated from demandlake (schemas.py, validate.py, bronze.py, conf/defaults.yaml) ----------
FIELDS = ["event_id", "user_id", "session_id", "event_type", "item_id", "category", "brand",
          "price", "quantity", "search_query", "timestamp"]
ID_FIELDS = [f for f in FIELDS if f.endswith("_id")]
EVENT_TYPES = ("view", "cart", "remove_from_cart", "purchase", "search", "fav")
ID_PLACEHOLDERS = ("null", "none", "nan", "undefined", "nil", "\\n", "n/a")
ID_WHITESPACE = " \t\n\r\f\v"  # an id of these alone is missing
KIND = "events"
SOURCE = "canonical_events"
MAX_RAW_CHARS = 65_536
# Jackson's StreamReadConstraints (2.16+): a longer field name fails the parse (UTF-16 units).
JACKSON_MAX_NAME_CHARS = 50_000
UNIT_SEP, NUL, BOM, REPLACEMENT = "\u001f", "\u0000", "\ufeff", "\ufffd"

EVENT_COLUMNS = ["event_id", "user_id", "session_id", "event_type", "item_id", "category",
                 "brand", "price", "quantity", "search_query", "event_ts", "extras", "source",
                 "source_file", "record_hash", "event_date"]
QUARANTINE_COLUMNS = ["kind", "source", "source_file", "record_id", "raw", "reason", "detail",
                      "ingest_date"]
# Columns that depend on where the input files are (the record id hashes the file's URI).
PATH_COLUMNS = ("source_file", "record_id")


@dataclasses.dataclass(frozen=True)
class Limits:
    """The ``ingest`` section's bounds (defaults as in conf/defaults.yaml) and ``lake.timezone``."""

    min_timestamp: str = "2000-01-01T00:00:00"
    max_future_hours: float = 24.0
    max_price: float = 1_000_000.0
    max_quantity: int = 10_000
    max_field_bytes: int = 65_536
    timezone: str = "UTC"


@dataclasses.dataclass(frozen=True)
class Input:
    """One input: files ingested under one run date, as ``bronze.Input`` (its place in the list
    given to ``build`` is its place in the replay order). ``timezone``: the zone of its naive
    timestamps."""

    files: tuple[str, ...]
    run_date: dt.date
    source: str = SOURCE
    timezone: str = "UTC"


# ---- small helpers -----------------------------------------------------------------------------
def _q(text: str) -> str:
    """A SQL string literal (any text: quotes doubled; no escapes are interpreted)."""
    return "'" + str(text).replace("'", "''") + "'"


def _chr(text: str) -> str:
    """A SQL expression for a string that may hold control characters."""
    return " || ".join(f"chr({ord(c)})" for c in text)


def _shared_reference():
    """bench/duckdb_reference.py (its ``connect`` and ``compare``), loaded from beside this file
    (once; sys.path is left alone)."""
    module = sys.modules.get("duckdb_reference")
    if module is None:
        spec = importlib.util.spec_from_file_location(
            "duckdb_reference", Path(__file__).resolve().parent / "duckdb_reference.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules["duckdb_reference"] = module
    return module


def connect(threads: int = 2, memory_limit: str = "6GB", temp_dir: str | None = None):
    """A DuckDB connection in UTC with bounded threads and memory (duckdb_reference.connect)."""
    return _shared_reference().connect(threads, memory_limit, temp_dir)


_URI_SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@/")


def file_uri(path: str) -> str:
    """Spark's ``_metadata.file_path`` for a local file: ``file:`` + the absolute path with the
    ASCII characters a URI path may not hold percent-encoded (non-ASCII kept)."""
    absolute = os.path.abspath(path)
    out = []
    for c in absolute:
        if c in _URI_SAFE or ord(c) > 127:
            out.append(c)
        else:
            out.append("".join(f"%{b:02X}" for b in c.encode()))
    return "file:" + "".join(out)


def expand(pattern: str) -> list[str]:
    """The files of a path, folder or glob, in name order, without hidden names (``_``, ``.``)."""
    paths = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
    out = []
    for p in paths:
        if os.path.isdir(p):
            out += [str(c) for c in sorted(Path(p).iterdir())
                    if c.is_file() and not c.name.startswith(("_", "."))]
        elif os.path.isfile(p) and not os.path.basename(p).startswith(("_", ".")):
            out.append(p)
    return out


# ---- SQL ---------------------------------------------------------------------------------------
# UTF-8 in hex: a whole valid sequence, the maximal invalid prefix of one (one U+FFFD), or a byte.
_C = "[89AB][0-9A-F]"
_VALID_UTF8 = ("[0-7][0-9A-F]|(?:C[2-9A-F]|D[0-9A-F])" + _C
               + "|E0[AB][0-9A-F]" + _C + "|E[1-9A-CEF]" + _C + _C + "|ED[89][0-9A-F]" + _C
               + "|F0[9AB][0-9A-F]" + _C + _C + "|F[1-3]" + _C + _C + _C
               + "|F48[0-9A-F]" + _C + _C)
_TRUNCATED_UTF8 = ("E0[AB][0-9A-F]|E[1-9A-CEF]" + _C + "|ED[89][0-9A-F]"
                   + "|F0[9AB][0-9A-F](?:" + _C + ")?|F[1-3](?:" + _C + "){1,2}"
                   + "|F48[0-9A-F](?:" + _C + ")?")
_UTF8_TOKEN = f"(?:{_VALID_UTF8}|{_TRUNCATED_UTF8}|[0-9A-F]{{2}})"
# A line's bytes in hex: pairs that are not CR or LF, then the line end (CRLF, LF or CR).
_HEX_LINE = "((?:[1-9A-F][0-9A-F]|0[0-9BCEF])*)(?:0D0A|0A|0D)"
# validate._NAIVE_TEXT: date-time text without an offset or zone.
_NAIVE_TEXT = r"^[+-]?\d{4,}-\d{1,2}-\d{1,2}([T ]\d{1,2}(:\d{1,2}(:\d{1,2}(\.\d*)?)?)?)?$"
# What Spark's string-to-timestamp cast reads (four-digit years; the zone only after seconds).
_TS_TEXT = (r"^\+?([0-9]{4})-([0-9]{1,2})(?:-([0-9]{1,2})(?:[ T]([0-9]{1,2})(?::([0-9]{1,2})"
            r"(?::([0-9]{1,2})(?:\.([0-9]*))?(.*))?)?)?)?$")
# Offsets java.time.ZoneOffset.of reads (and "+h:mm", which Spark pads to "+0h:mm" first).
_OFFSET = (r"^(?:[+-][0-9]{1,2}|[+-][0-9]{2}:?[0-9]{2}|[+-][0-9]{2}:[0-9]{2}:[0-9]{2}"
           r"|[+-][0-9]{6}|[+-][0-9]:[0-9]{2})$")
_JAVA_DOUBLE = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?[fFdD]?$"


def _macros(con) -> None:
    """Scalar macros: Java's double spelling, Spark's timestamp text, a JSON value as Spark's
    map<string,string> gives it, and the UTF-8 repair of a hex line."""
    # Java's Double.toString from the shortest spelling DuckDB gives (``s``, finite): the digits
    # without leading or trailing zeros, and ``pos``, the value being 0.<digits> x 10^pos.
    for name, body in (
            ("_jf_ip", r"regexp_extract(ltrim(s, '-'), '^([0-9]+)', 1)"),
            ("_jf_fp", r"regexp_extract(ltrim(s, '-'), '^[0-9]+\.([0-9]+)', 1)"),
            ("_jf_ex", r"coalesce(TRY_CAST(regexp_extract(s, '[eE]([+-]?[0-9]+)$', 1) "
                       r"AS INTEGER), 0)"),
            ("_jf_digits", "rtrim(ltrim(_jf_ip(s) || _jf_fp(s), '0'), '0')"),
            ("_jf_pos", "length(_jf_ip(s)) + _jf_ex(s) - (length(_jf_ip(s) || _jf_fp(s))"
                        " - length(ltrim(_jf_ip(s) || _jf_fp(s), '0')))")):
        con.execute(f"CREATE OR REPLACE TEMP MACRO {name}(s) AS {body}")
    # Decimal notation for 1e-3 <= |x| < 1e7, else d.dddE<n>; always a digit after the point.
    con.execute("""
        CREATE OR REPLACE TEMP MACRO _java_layout(sign, digits, pos) AS CASE
            WHEN digits = '' THEN sign || '0.0'
            WHEN pos BETWEEN -2 AND 7 THEN sign || CASE
                WHEN pos <= 0 THEN '0.' || repeat('0', -pos) || digits
                WHEN length(digits) <= pos THEN digits || repeat('0', pos - length(digits)) || '.0'
                ELSE left(digits, pos) || '.' || substr(digits, pos + 1) END
            ELSE sign || left(digits, 1) || '.'
                 || CASE WHEN length(digits) > 1 THEN substr(digits, 2) ELSE '0' END
                 || 'E' || CAST(pos - 1 AS VARCHAR) END""")
    con.execute("""
        CREATE OR REPLACE TEMP MACRO _java_finite(s) AS
            _java_layout(CASE WHEN starts_with(s, '-') THEN '-' ELSE '' END, _jf_digits(s),
                         _jf_pos(s))""")
    # DuckDB already spells 1e-3 <= |x| < 1e7 as Java does (digits, a point, a digit at least).
    con.execute("""
        CREATE OR REPLACE TEMP MACRO _java_double(x) AS CASE
            WHEN x IS NULL THEN NULL
            WHEN abs(x) >= 1e-3 AND abs(x) < 1e7 THEN CAST(x AS VARCHAR)
            WHEN isnan(x) THEN 'NaN'
            WHEN isinf(x) THEN CASE WHEN x > 0 THEN 'Infinity' ELSE '-Infinity' END
            ELSE _java_finite(CAST(x AS VARCHAR)) END""")
    con.execute("""
        CREATE OR REPLACE TEMP MACRO _ts_text(ts) AS
            CASE WHEN year(ts) > 9999 THEN '+' ELSE '' END || strftime(ts, '%Y-%m-%d %H:%M:%S')
            || CASE WHEN (epoch_us(ts) % 1000000 + 1000000) % 1000000 = 0 THEN ''
                    ELSE '.' || rtrim(lpad(CAST((epoch_us(ts) % 1000000 + 1000000) % 1000000
                                                AS VARCHAR), 6, '0'), '0') END""")
    # A JSON number (DuckDB's JSON text of it) as Spark's from_json to map<string,string> gives it:
    # an integer's digits, a float in Java's spelling, NaN and infinities as quoted text.
    con.execute("""
        CREATE OR REPLACE TEMP MACRO _number_text(t) AS CASE
            WHEN regexp_full_match(t, '-?[0-9]+') THEN t
            WHEN isnan(TRY_CAST(t AS DOUBLE)) OR isinf(TRY_CAST(t AS DOUBLE))
                THEN '"' || _java_double(TRY_CAST(t AS DOUBLE)) || '"'
            ELSE _java_double(TRY_CAST(t AS DOUBLE)) END""")
    # Any JSON value: a string's value, true/false, compact JSON for objects and arrays, null.
    con.execute("""
        CREATE OR REPLACE TEMP MACRO _spark_text(v) AS CASE
            WHEN regexp_matches(CAST(v AS VARCHAR), '^[-0-9NI]')
                THEN _number_text(CAST(v AS VARCHAR))
            ELSE json_extract_string(v, '$') END""")
    con.execute(f"""
        CREATE OR REPLACE TEMP MACRO _repair_utf8(h) AS decode(unhex(array_to_string(
            list_transform(regexp_extract_all(h, {_q(_UTF8_TOKEN)}),
                           lambda t: CASE WHEN regexp_full_match(t, {_q(_VALID_UTF8)}) THEN t
                                          ELSE 'EFBFBD' END), '')))""")


def load_lines(con, inputs: Sequence[Input]) -> None:
    """Table ``_lines``: every non-blank line of the inputs with its context.

    Columns: source_file (Spark's URI), seq, run_date, source, source_tz, value (the text;
    repaired when the bytes are not UTF-8), raw (the bytes, only for lines that are not UTF-8).
    """
    rows = [(f, file_uri(f), seq, inp.run_date, inp.source, inp.timezone)
            for seq, inp in enumerate(inputs) for f in inp.files]
    con.execute("CREATE OR REPLACE TEMP TABLE _inputs (file VARCHAR, uri VARCHAR, seq INTEGER, "
                "run_date DATE, source VARCHAR, source_tz VARCHAR)")
    if rows:
        con.executemany("INSERT INTO _inputs VALUES (?, ?, ?, ?, ?, ?)", rows)
    files = sorted({r[0] for r in rows})
    blobs = ("SELECT * FROM read_blob([" + ", ".join(_q(f) for f in files) + "])" if files else
             "SELECT NULL::VARCHAR AS filename, NULL::BLOB AS content WHERE false")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _blobs AS
        SELECT i.uri, i.seq, i.run_date, i.source, i.source_tz, b.content,
               try(decode(b.content)) AS text
        FROM ({blobs}) b JOIN _inputs i ON b.filename = i.file""")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _lines AS
        WITH text_lines AS (
            SELECT uri, seq, run_date, source, source_tz,
                   unnest(regexp_split_to_array(
                       CASE WHEN starts_with(text, {_chr(BOM)}) THEN substr(text, 2)
                            ELSE text END, '\\r\\n|\\r|\\n')) AS value
            FROM _blobs WHERE text IS NOT NULL),
        hex_files AS (
            SELECT *, CASE WHEN starts_with(hex(content), 'EFBBBF') THEN substr(hex(content), 7)
                           ELSE hex(content) END AS h
            FROM _blobs WHERE text IS NULL),
        hex_lines AS (
            SELECT uri, seq, run_date, source, source_tz,
                   unnest(regexp_extract_all(
                       h || CASE WHEN right(h, 2) IN ('0A', '0D') THEN '' ELSE '0A' END,
                       {_q(_HEX_LINE)}, 1)) AS line_hex
            FROM hex_files)
        SELECT uri AS source_file, seq, run_date, source, source_tz, value, NULL::BLOB AS raw
        FROM text_lines WHERE trim(value, ' ') <> ''
        UNION ALL
        SELECT uri, seq, run_date, source, source_tz,
               coalesce(try(decode(unhex(line_hex))), _repair_utf8(line_hex)) AS value,
               CASE WHEN try(decode(unhex(line_hex))) IS NULL THEN unhex(line_hex) END AS raw
        FROM hex_lines
        WHERE trim(coalesce(try(decode(unhex(line_hex))), _repair_utf8(line_hex)), ' ') <> ''""")


def _validated_sql(limits: Limits) -> str:
    """Every line of ``_lines`` typed and checked: its fields, reason, detail and record_hash."""
    known = "[" + ", ".join(_q(f) for f in FIELDS) + "]"
    paths = "[" + ", ".join(_q(f"$.{f}") for f in FIELDS) + "]"
    idx = {f: i + 1 for i, f in enumerate(FIELDS)}
    limit = int(limits.max_field_bytes)
    ahead_us = int(round(limits.max_future_hours * 3_600_000_000))
    min_ts = dt.datetime.fromisoformat(limits.min_timestamp.replace("Z", ""))
    tz = _q(limits.timezone)
    placeholders = "(" + ", ".join(_q(p) for p in ID_PLACEHOLDERS) + ")"
    types = "(" + ", ".join(_q(t) for t in EVENT_TYPES) + ")"

    def missing(c: str) -> str:
        return (f"({c} IS NULL OR lower(trim({c}, ' ')) IN {placeholders}"
                f" OR trim({c}, {_q(ID_WHITESPACE)}) = '')")

    # Each field's text: numbers (whose JSON text starts so) spelt as Spark does, the rest as
    # json_extract_string gives them.
    texts = ",\n".join(
        f"CASE WHEN regexp_matches(jv[{idx[f]}], '^[-0-9NI]') "
        f"THEN _number_text(CAST(jv[{idx[f]}] AS VARCHAR)) "
        f"ELSE js[{idx[f]}] END AS m_{f}" for f in FIELDS)
    blank_to_null = ",\n".join(
        f"CASE WHEN trim(m_{f}, ' ') = '' THEN NULL ELSE m_{f} END AS {f}" for f in FIELDS)
    looks_nested = " OR ".join(f"regexp_matches(m_{f}, '^ *[{{\\[]')" for f in ID_FIELDS)
    sizes = [f"coalesce(strlen({f}), 0)" for f in FIELDS]
    first_over = "CASE " + " ".join(f"WHEN {s} > {limit} THEN {_q(f)}"
                                    for f, s in zip(FIELDS, sizes)) + " END"
    first_over_bytes = "CASE " + " ".join(f"WHEN {s} > {limit} THEN {s}"
                                          for s in sizes) + " END"
    non_scalar = "CASE " + " ".join(
        f"WHEN regexp_matches(m_{f}, '^ *[{{\\[]') "
        f"AND (variant_fails OR regexp_matches(jv[{idx[f]}], '^[{{\\[]')) THEN {_q(f)}"
        for f in ID_FIELDS) + " END"
    hash_parts = ", ".join(f"coalesce({c}, chr({ord(NUL)}))" for c in [
        "user_id", "session_id", "event_type", "item_id", "category", "brand",
        "_java_double(price)", "CAST(quantity AS VARCHAR)", "search_query", "_ts_text(event_ts)"])
    ctrl = "[\\x00-\\x20\\x7f]"
    return f"""
    WITH parsed AS (
        SELECT *, CASE WHEN json_valid(value) AND json_type(value) = 'OBJECT'
                            AND len(json_keys(value)) = len(list_distinct(json_keys(value)))
                            AND NOT (strlen(value) > {JACKSON_MAX_NAME_CHARS}
                                     AND coalesce(list_bool_or(list_transform(json_keys(value),
                                lambda k: length(k) + length(regexp_replace(
                                    k, '[^\\x{{10000}}-\\x{{10FFFF}}]', '', 'g'))
                                    > {JACKSON_MAX_NAME_CHARS})), false))
                       THEN value END AS obj
        FROM _lines),
    extracted AS (
        SELECT *, CAST(json_extract(obj, {paths}) AS VARCHAR[]) AS jv,
               json_extract_string(obj, {paths}) AS js,
               json_keys(obj) AS keys
        FROM parsed),
    mapped AS (
        SELECT *, {texts},
               CASE WHEN list_bool_or(list_transform(keys, lambda k: NOT list_contains({known}, k)))
                    THEN list_filter(list_transform(json_extract(obj, '$.*'), lambda v, i:
                                                    {{'key': keys[i], 'value': _spark_text(v)}}),
                                     lambda e: NOT list_contains({known}, e.key)) END AS extras_list
        FROM extracted),
    nested AS (
        SELECT *,
               CASE WHEN {looks_nested} THEN len(keys) <> len(list_distinct(keys))
                    OR coalesce(list_bool_or(list_transform(json_extract(obj, '$.*'),
                        lambda v: regexp_matches(CAST(v AS VARCHAR), '^-?[NI]'))), false)
               END AS variant_fails
        FROM mapped),
    fields AS (
        SELECT source_file, seq, run_date, source, source_tz, value, raw, obj IS NULL AS malformed,
               raw IS NOT NULL OR contains(value, {_chr(REPLACEMENT)}) AS bad_encoding,
               {non_scalar} AS non_scalar, extras_list,
               {blank_to_null}
        FROM nested),
    typed AS (
        SELECT *,
               greatest({", ".join(sizes)}) AS biggest, {first_over} AS first_over,
               {first_over_bytes} AS first_over_bytes,
               list_filter(extras_list, lambda e: greatest(strlen(e.key),
                                                           coalesce(strlen(e.value), 0))
                                                  > {limit})[1] AS big_extra,
               lower(trim(event_type, ' ')) AS et,
               trim(timestamp, ' ') AS ts_text,
               regexp_replace(timestamp, '^{ctrl}+|{ctrl}+$', '', 'g') AS ts_cast_text,
               regexp_replace(price, '^[\\x00-\\x20]+|[\\x00-\\x20]+$', '', 'g') AS price_text,
               regexp_replace(quantity, '^{ctrl}+|{ctrl}+$', '', 'g') AS quantity_text
        FROM fields),
    ts_parts AS (
        SELECT *,
               regexp_full_match(ts_text, '-?[0-9]+(\\.[0-9]+)?') AS ts_is_number,
               regexp_extract(ts_cast_text, {_q(_TS_TEXT)},
                              ['y', 'mo', 'd', 'h', 'mi', 's', 'frac', 'zone']) AS tp
        FROM typed),
    ts_zone AS (
        SELECT *, trim(tp.zone, ' ') AS zone,
               regexp_extract(trim(tp.zone, ' '), '^(?:UTC|GMT|UT)?([+-].*)$', 1) AS offset_text
        FROM ts_parts),
    ts_local AS (
        SELECT *,
               CASE WHEN tp.y = '' THEN NULL
                    WHEN coalesce(TRY_CAST(nullif(tp.h, '') AS INTEGER), 0) > 23
                      OR coalesce(TRY_CAST(nullif(tp.mi, '') AS INTEGER), 0) > 59
                      OR coalesce(TRY_CAST(nullif(tp.s, '') AS INTEGER), 0) > 59 THEN NULL
                    ELSE CAST(try(make_date(CAST(tp.y AS INTEGER), CAST(tp.mo AS INTEGER),
                                            coalesce(TRY_CAST(nullif(tp.d, '') AS INTEGER), 1)))
                              AS TIMESTAMP)
                         + to_microseconds(
                             ((coalesce(TRY_CAST(nullif(tp.h, '') AS BIGINT), 0) * 60
                               + coalesce(TRY_CAST(nullif(tp.mi, '') AS BIGINT), 0)) * 60
                              + coalesce(TRY_CAST(nullif(tp.s, '') AS BIGINT), 0)) * 1000000
                             + CAST(rpad(left(tp.frac, 6), 6, '0') AS BIGINT)) END AS local_ts,
               CASE WHEN zone = '' OR zone IN ('Z', 'UTC', 'GMT', 'UT') THEN '000000'
                    WHEN regexp_full_match(offset_text, {_q(_OFFSET)})
                     AND zone = regexp_extract(zone, '^(UTC|GMT|UT)?', 0) || offset_text
                        THEN rpad(CASE WHEN regexp_full_match(offset_text, '[+-][0-9](:.*)?')
                                       THEN '0' ELSE '' END
                                  || regexp_replace(offset_text, '[^0-9]', '', 'g'), 6, '0')
                    END AS offset_digits
        FROM ts_zone),
    ts_offset AS (
        SELECT *,
               CASE WHEN TRY_CAST(left(offset_digits, 2) AS INTEGER) > 18
                      OR TRY_CAST(substr(offset_digits, 3, 2) AS INTEGER) > 59
                      OR TRY_CAST(substr(offset_digits, 5, 2) AS INTEGER) > 59
                      OR (left(offset_digits, 2) = '18' AND substr(offset_digits, 3) <> '0000')
                        THEN NULL
                    ELSE (CASE WHEN starts_with(offset_text, '-') THEN -1 ELSE 1 END)
                         * (TRY_CAST(left(offset_digits, 2) AS INTEGER) * 3600
                            + TRY_CAST(substr(offset_digits, 3, 2) AS INTEGER) * 60
                            + TRY_CAST(substr(offset_digits, 5, 2) AS INTEGER)) END AS offset_s
        FROM ts_local),
    checked AS (
        SELECT *,
               CASE WHEN ts_is_number THEN make_timestamp(CAST(trunc(
                        CASE WHEN abs(TRY_CAST(ts_text AS DOUBLE)) >= 1e11
                             THEN TRY_CAST(ts_text AS DOUBLE) / 1000.0
                             ELSE TRY_CAST(ts_text AS DOUBLE) END * 1000000) AS BIGINT))
                    WHEN local_ts IS NULL OR offset_s IS NULL THEN NULL
                    WHEN zone <> '' THEN local_ts - to_seconds(offset_s)
                    WHEN regexp_full_match(ts_text, {_q(_NAIVE_TEXT)})
                        THEN CAST(timezone(source_tz, local_ts) AS TIMESTAMP)
                    ELSE local_ts END AS event_ts,
               CASE WHEN lower(price_text) IN ('inf', '+inf', 'infinity', '+infinity')
                      OR regexp_full_match(price_text, '\\+?Infinity') THEN 'inf'::DOUBLE
                    WHEN lower(price_text) IN ('-inf', '-infinity') OR price_text = '-Infinity'
                        THEN '-inf'::DOUBLE
                    WHEN lower(price_text) = 'nan' OR regexp_full_match(price_text, '[+-]?NaN')
                        THEN 'nan'::DOUBLE
                    WHEN regexp_full_match(price_text, {_q(_JAVA_DOUBLE)})
                        THEN TRY_CAST(regexp_replace(price_text, '[fFdD]$', '') AS DOUBLE)
                    END AS price_value,
               CASE WHEN regexp_full_match(quantity_text, '[+-]?[0-9]+')
                    THEN TRY_CAST(quantity_text AS INTEGER) END AS quantity_value,
               CAST(timezone({tz}, CAST(run_date + 1 AS TIMESTAMP)) AS TIMESTAMP)
                   + to_microseconds({ahead_us}) AS max_ts
        FROM ts_offset),
    reasoned AS (
        SELECT *, CASE
            WHEN malformed THEN 'malformed_record'
            WHEN bad_encoding THEN 'bad_encoding'
            WHEN biggest > {limit} OR big_extra IS NOT NULL THEN 'oversize_field'
            WHEN non_scalar IS NOT NULL THEN 'non_scalar_field'
            WHEN {missing('user_id')} THEN 'missing_user_id'
            WHEN event_type IS NULL THEN 'missing_event_type'
            WHEN et NOT IN {types} THEN 'unknown_event_type'
            WHEN timestamp IS NULL THEN 'missing_timestamp'
            WHEN event_ts IS NULL THEN 'bad_timestamp'
            WHEN event_ts < TIMESTAMP '{min_ts.isoformat(sep=" ")}' THEN 'timestamp_too_old'
            WHEN event_ts > max_ts THEN 'timestamp_in_future'
            WHEN {missing('item_id')} AND et <> 'search' THEN 'missing_item_id'
            WHEN price IS NOT NULL AND price_value IS NULL THEN 'bad_price_type'
            WHEN price_value < 0 THEN 'negative_price'
            WHEN price_value > {float(limits.max_price)!r} OR isnan(price_value) THEN 'absurd_price'
            WHEN quantity IS NOT NULL AND quantity_value IS NULL THEN 'bad_quantity_type'
            WHEN quantity_value <= 0 OR quantity_value > {int(limits.max_quantity)}
                THEN 'bad_quantity'
            END AS reason
        FROM checked),
    detailed AS (
        SELECT *, CASE reason
            WHEN 'malformed_record' THEN 'record could not be parsed'
            WHEN 'bad_encoding' THEN 'record is not valid UTF-8'
            WHEN 'oversize_field' THEN CASE WHEN biggest > {limit}
                THEN 'field ' || first_over || ' has ' || CAST(first_over_bytes AS VARCHAR)
                     || ' bytes > {limit}'
                ELSE 'extra field ' || substring(big_extra.key, 1, 80) || ' has '
                     || CAST(greatest(strlen(big_extra.key), coalesce(strlen(big_extra.value), 0))
                             AS VARCHAR) || ' bytes > {limit}' END
            WHEN 'non_scalar_field' THEN 'field ' || non_scalar
                || ' holds an object or an array, not a string or a number'
            WHEN 'missing_user_id' THEN 'no user id' || coalesce(
                ' (placeholder ' || substring(user_id, 1, 20) || ')', '')
            WHEN 'missing_event_type' THEN 'no event type'
            WHEN 'unknown_event_type' THEN 'event type not known: ' || substring(event_type, 1, 80)
            WHEN 'missing_timestamp' THEN 'no timestamp'
            WHEN 'bad_timestamp' THEN 'unparseable timestamp: ' || substring(timestamp, 1, 80)
            WHEN 'timestamp_too_old' THEN {_q(f"before {min_ts.isoformat()}: ")}
                                          || _ts_text(event_ts)
            WHEN 'timestamp_in_future' THEN 'after ' || _ts_text(max_ts) || ' UTC: '
                                            || _ts_text(event_ts)
            WHEN 'missing_item_id' THEN 'no item id on a non-search event'
            WHEN 'bad_price_type' THEN 'price is not a number: ' || substring(price, 1, 80)
            WHEN 'negative_price' THEN 'price < 0: ' || price
            WHEN 'absurd_price' THEN {_q(f"price > {float(limits.max_price):g} or NaN: ")} || price
            WHEN 'bad_quantity_type' THEN 'quantity is not an integer: '
                                          || substring(quantity, 1, 80)
            WHEN 'bad_quantity' THEN {_q(f"quantity outside 1..{int(limits.max_quantity)}: ")}
                                     || quantity
            END AS detail
        FROM reasoned),
    shaped AS (
        SELECT source_file, seq, run_date, source, value, raw, reason, detail, event_id AS given_id,
               trim(user_id, ' ') AS user_id, session_id, et AS event_type, item_id, category,
               brand, price_value AS price, quantity_value AS quantity, search_query, event_ts,
               extras_list,
               CASE WHEN extras_list IS NULL THEN ''
                    ELSE '{{' || array_to_string(list_transform(extras_list,
                             lambda e: to_json(e.key) || ':' || coalesce(to_json(e.value), 'null')),
                         ',') || '}}' END AS extras_json
        FROM detailed)
    SELECT *, sha256(concat_ws(chr({ord(UNIT_SEP)}), {hash_parts}, extras_json)) AS record_hash
    FROM shaped"""


def build(con, inputs: Sequence[Input], limits: Limits = Limits()) -> None:
    """Tables ``ref_events`` (bronze.events rows) and ``ref_quarantine`` (bronze.quarantine rows)
    for one ingest of ``inputs`` into an empty lake, plus ``_classified`` (every record with
    ``dest``: new, duplicate or quarantine)."""
    _macros(con)
    load_lines(con, inputs)
    con.execute("CREATE OR REPLACE TEMP TABLE _validated AS " + _validated_sql(limits))
    tz = _q(limits.timezone)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _classified AS
        WITH keyed AS (
            SELECT *, coalesce(given_id, 'h-' || left(record_hash, 32)) AS event_id,
                   coalesce(raw, encode(value)) AS raw_bytes
            FROM _validated),
        ranked AS (
            SELECT *,
                   row_number() OVER w AS rn,
                   first_value(record_hash) OVER w AS first_hash
            FROM keyed
            WINDOW w AS (PARTITION BY event_id
                         ORDER BY reason IS NOT NULL, seq, record_hash, raw_bytes, source_file
                         ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW))
        SELECT * EXCLUDE (reason, detail),
               CASE WHEN reason IS NULL AND rn > 1 AND record_hash <> first_hash
                    THEN 'conflicting_duplicate_id' ELSE reason END AS reason,
               CASE WHEN reason IS NULL AND rn > 1 AND record_hash <> first_hash
                    THEN 'event_id ' || event_id || ' already seen with other content'
                    ELSE detail END AS detail,
               CASE WHEN reason IS NOT NULL THEN 'quarantine'
                    WHEN rn > 1 AND record_hash = first_hash THEN 'duplicate'
                    WHEN rn > 1 THEN 'quarantine'
                    ELSE 'new' END AS dest
        FROM ranked""")
    # Extras repeated in a line: a DuckDB map holds a key once (the first kept; see the doc).
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE ref_events AS
        SELECT event_id, user_id, session_id, event_type, item_id, category, brand, price,
               quantity, search_query, event_ts,
               map_from_entries(list_filter(extras_list, lambda e, i:
                   list_position(list_transform(extras_list, lambda x: x.key), e.key) = i))
                   AS extras,
               source, source_file, record_hash,
               CAST(timezone({tz}, event_ts AT TIME ZONE 'UTC') AS DATE) AS event_date
        FROM _classified WHERE dest = 'new'""")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE ref_quarantine AS
        SELECT {_q(KIND)} AS kind, source, source_file,
               sha256(encode(source_file) || encode({_chr(UNIT_SEP)}) || raw_bytes
                      || encode({_chr(UNIT_SEP)})
                      || encode(CAST(row_number() OVER (PARTITION BY source_file, raw_bytes
                                                        ORDER BY reason, detail) AS VARCHAR)))
                   AS record_id,
               substring(value, 1, {MAX_RAW_CHARS}) AS raw, reason, detail,
               run_date AS ingest_date
        FROM _classified WHERE dest = 'quarantine'""")


def counts(con) -> dict:
    """What ``ingest_inputs`` reports: read, new, duplicates, quarantined, ``reason.<r>`` and the
    event dates that received new rows, over all inputs and per source (``by_source``)."""
    def tally(where: str) -> dict:
        row = con.execute(f"""
            SELECT count(*), count_if(dest = 'new'), count_if(dest = 'duplicate'),
                   count_if(dest = 'quarantine') FROM _classified WHERE {where}""").fetchone()
        out = {"read": row[0], "new": row[1], "duplicates": row[2], "quarantined": row[3]}
        for reason, n in con.execute(f"""
                SELECT reason, count(*) FROM _classified WHERE dest = 'quarantine' AND {where}
                GROUP BY reason ORDER BY reason""").fetchall():
            out[f"reason.{reason}"] = n
        out["dates"] = [d for (d,) in con.execute(f"""
            SELECT DISTINCT event_date FROM ref_events
            WHERE event_id IN (SELECT event_id FROM _classified WHERE dest = 'new' AND {where})
            ORDER BY 1""").fetchall()]
        return out

    result = tally("true")
    names = [s for (s,) in con.execute(
        "SELECT source FROM _inputs GROUP BY source ORDER BY min(seq)").fetchall()]
    result["by_source"] = {s: tally(f"source = {_q(s)}") for s in names}
    return result


def write_outputs(con, out_dir: str | Path) -> dict:
    """Write ``events.parquet`` and ``quarantine.parquet`` under ``out_dir``; rows written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    con.execute(f"COPY (SELECT {', '.join(EVENT_COLUMNS)} FROM ref_events) "
                f"TO {_q(out / 'events.parquet')} (FORMAT parquet)")
    con.execute(f"COPY (SELECT {', '.join(QUARANTINE_COLUMNS)} FROM ref_quarantine) "
                f"TO {_q(out / 'quarantine.parquet')} (FORMAT parquet)")
    return {"events": con.execute("SELECT count(*) FROM ref_events").fetchone()[0],
            "quarantine": con.execute("SELECT count(*) FROM ref_quarantine").fetchone()[0]}


def ingest(inputs: Sequence[Input], out_dir: str | Path, limits: Limits = Limits(), *,
           threads: int = 2, memory_limit: str = "6GB") -> dict:
    """Build the reference for ``inputs`` and write it under ``out_dir``, timing each step.

    Returns:
        ``counts`` (as ``counts``), ``rows`` (written), ``build_s``, ``write_s``, ``total_s``
        (wall seconds) and ``cpu_s`` (this process, all threads).
    """
    t0, c0 = time.monotonic(), time.process_time()
    con = connect(threads, memory_limit, temp_dir=str(Path(out_dir) / "_tmp"))
    build(con, inputs, limits)
    t1 = time.monotonic()
    rows = write_outputs(con, out_dir)
    t2 = time.monotonic()
    result = {"counts": counts(con), "rows": rows, "build_s": t1 - t0, "write_s": t2 - t1,
              "total_s": time.monotonic() - t0, "cpu_s": time.process_time() - c0}
    con.close()
    return result


# ---- comparing with the Spark tables ------------------------------------------------------------
def _normalized(columns: Sequence[str]) -> str:
    """A select list with maps as JSON text and timestamps as epoch microseconds."""
    out = []
    for c in columns:
        if c == "extras":
            out.append("CAST(to_json(extras) AS VARCHAR) AS extras")
        elif c == "event_ts":
            out.append("epoch_us(CAST(event_ts AS TIMESTAMP)) AS event_ts")
        elif c in ("event_date", "ingest_date"):
            out.append(f"CAST({c} AS DATE) AS {c}")
        else:
            out.append(c)
    return ", ".join(out)


def compare(con, spark_events_files: Sequence[str], spark_quarantine_files: Sequence[str],
            out_dir: str | Path, exclude: Iterable[str] = ()) -> dict:
    """Compare the Spark tables (their current Parquet files) with the reference's output.

    Both tables are compared as multisets of rows (``only_spark``/``only_reference`` count the
    rows one side has more of), and, keyed (events on event_id; quarantine on record_id unless
    the path columns are excluded), column by column with duckdb_reference.compare.

    Args:
        exclude: columns left out (either of ``PATH_COLUMNS`` leaves out both).

    Returns:
        ``{"events": {...}, "quarantine": {...}}``: spark_rows, reference_rows, only_spark,
        only_reference, and, when keyed, differing and differing.<column>.
    """
    shared = _shared_reference()
    skip = set(exclude)
    if skip & set(PATH_COLUMNS):
        skip.update(PATH_COLUMNS)
    out = Path(out_dir)
    result = {}
    for name, spark_files, ref_file, columns, key, partition in (
            ("events", spark_events_files, out / "events.parquet", EVENT_COLUMNS, "event_id",
             "event_date"),
            ("quarantine", spark_quarantine_files, out / "quarantine.parquet",
             QUARANTINE_COLUMNS, "record_id", "ingest_date")):
        cols = [c for c in columns if c not in skip]
        files = [f[len("file:"):] if f.startswith("file:") else f for f in spark_files]
        spark_src = (f"read_parquet([{', '.join(_q(f) for f in files)}], hive_partitioning = true, "
                     f"hive_types = {{'{partition}': DATE}})" if files else None)
        ref_src = f"read_parquet({_q(ref_file)})"
        select = _normalized(cols)
        spark_rel = (f"SELECT {select} FROM {spark_src}" if spark_src else
                     f"SELECT {select} FROM {ref_src} WHERE false")
        ref_rel = f"SELECT {select} FROM {ref_src}"
        row = con.execute(f"""
            SELECT (SELECT count(*) FROM ({spark_rel})), (SELECT count(*) FROM ({ref_rel})),
                   (SELECT count(*) FROM ({spark_rel} EXCEPT ALL {ref_rel})),
                   (SELECT count(*) FROM ({ref_rel} EXCEPT ALL {spark_rel}))""").fetchone()
        res = {"spark_rows": row[0], "reference_rows": row[1], "only_spark": row[2],
               "only_reference": row[3]}
        if key not in skip and files:
            keyed = shared.compare(con, files, str(ref_file), key,
                                   {c: "exact" for c in cols if c != key}, partition=partition)
            res.update({k: v for k, v in keyed.items() if k.startswith("differing")})
        result[name] = res
    return result


# ---- command line ------------------------------------------------------------------------------
def _parse_input(text: str, source: str, timezone: str) -> Input:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--input must look like RUN_DATE=PATH, got {text!r}")
    day, path = text.split("=", 1)
    return Input(tuple(expand(path)), dt.date.fromisoformat(day), source, timezone)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The ingest stage (canonical JSON-lines events) "
                                                 "in DuckDB SQL: bronze.events and "
                                                 "bronze.quarantine rows as Parquet.")
    parser.add_argument("files", nargs="*",
                        help="input files, folders or globs, all under --run-date")
    parser.add_argument("--run-date", default="", help="run date of FILES, YYYY-MM-DD")
    parser.add_argument("--input", action="append", default=[], metavar="RUN_DATE=PATH",
                        help="an input (file, folder or glob) under its own run date; repeat "
                             "in replay order (after FILES)")
    parser.add_argument("--source", default=SOURCE,
                        help="source name stored in `source` (default: %(default)s)")
    parser.add_argument("--source-timezone", default="UTC",
                        help="zone of timestamps without an offset (default: %(default)s)")
    parser.add_argument("--timezone", default="UTC",
                        help="lake time zone, for event dates and the future bound "
                             "(default: %(default)s)")
    parser.add_argument("--max-future-hours", type=float, default=Limits.max_future_hours,
                        help="future bound after the end of the run date (default: %(default)s)")
    parser.add_argument("--min-timestamp", default=Limits.min_timestamp,
                        help="oldest valid event time, UTC (default: %(default)s)")
    parser.add_argument("--max-price", type=float, default=Limits.max_price,
                        help="highest valid price (default: %(default)s)")
    parser.add_argument("--max-quantity", type=int, default=Limits.max_quantity,
                        help="highest valid quantity (default: %(default)s)")
    parser.add_argument("--max-field-bytes", type=int, default=Limits.max_field_bytes,
                        help="largest valid field, bytes (default: %(default)s)")
    parser.add_argument("--out", required=True, help="output folder for the Parquet outputs")
    parser.add_argument("--threads", type=int, default=2,
                        help="DuckDB threads (default: %(default)s)")
    parser.add_argument("--memory-limit", default="6GB",
                        help="DuckDB memory_limit (default: %(default)s)")
    parser.add_argument("--json-out", default="", help="write timings and counts here as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    inputs = []
    if args.files:
        if not args.run_date:
            parser.error("FILES need --run-date")
        files = tuple(f for pattern in args.files for f in expand(pattern))
        inputs.append(Input(files, dt.date.fromisoformat(args.run_date), args.source,
                            args.source_timezone))
    inputs += [_parse_input(t, args.source, args.source_timezone) for t in args.input]
    if not inputs:
        parser.error("no input: give FILES with --run-date, or --input")
    limits = Limits(args.min_timestamp, args.max_future_hours, args.max_price,
                    args.max_quantity, args.max_field_bytes, args.timezone)
    result = ingest(inputs, args.out, limits, threads=args.threads,
                    memory_limit=args.memory_limit)
    result["files"] = sum(len(i.files) for i in inputs)
    result["input_bytes"] = sum(os.path.getsize(f) for i in inputs for f in i.files)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    import duckdb

    result["duckdb_version"] = duckdb.__version__
    log.info("reference ingest: %s", {k: v for k, v in result.items() if k != "counts"})
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
