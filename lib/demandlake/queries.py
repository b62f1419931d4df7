"""The analysts' query file (docs/queries.sql): its named blocks and their parameters.

Each block starts with ``-- name: NAME`` and may list ``-- params: a, b``; the SQL uses ``:a``
markers. ``parse_queries`` reads the blocks and ``bind`` renders the markers as Spark SQL
literals. The tests run every block in-process and over JDBC; ``bench/sql_clients.py`` runs
them from many clients at once.
"""
from __future__ import annotations

import datetime as dt
import re

MARKER = re.compile(r"(?<![:\w]):([a-z_]+)\b")


def sql_literal(value) -> str:
    """A Spark SQL literal for a parameter value (dates, numbers, strings)."""
    if isinstance(value, dt.date):
        return f"DATE'{value.isoformat()}'"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    raise TypeError(f"no SQL literal for {value!r}")


def bind(sql: str, params: dict) -> str:
    """Replace the named markers with literals.

    ``spark.sql(text, args=...)`` would bind them, but with the Delta 4.4.1 session extension on
    Spark 4.2 every marker stays unbound (UNBOUND_SQL_PARAMETER, even for ``SELECT :x``), so the
    markers are rendered as literals here, as docs/queries.sql tells spark-sql users to do.

    Raises:
        KeyError: a marker without a value in ``params``.
    """
    return MARKER.sub(lambda m: sql_literal(params[m.group(1)]), sql)


def parse_queries(text: str) -> dict[str, tuple[str, list[str]]]:
    """``{name: (sql, params)}`` from the ``-- name:`` blocks of a queries file."""
    blocks = re.split(r"^-- name: *", text, flags=re.M)[1:]
    out = {}
    for block in blocks:
        name, _, body = block.partition("\n")
        params = re.search(r"^-- params: *(.*)$", body, flags=re.M)
        sql = "\n".join(line for line in body.splitlines()
                        if not line.lstrip().startswith("--")).strip().rstrip(";")
        out[name.strip()] = (sql, [p.strip() for p in params.group(1).split(",")] if params else [])
    return out
