"""Read-only SQL on a store, as `botaclip sql` runs it: only queries (SELECT, WITH, FROM, VALUES, DESCRIBE,
SHOW, SUMMARIZE, EXPLAIN) are run; any statement that could change the catalog, attach it read-write or write a
file (CREATE, DROP, INSERT, COPY, ATTACH, SET, PRAGMA, ...) is refused before anything runs.

The catalog is attached read-only anyway; this also keeps the views of the session intact and files out of the
store (results are written with `--out`, which refuses paths inside a store).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa

from botaclip.errors import InvalidInputError
from botaclip.store.damage import explain_query_error

if TYPE_CHECKING:
    from botaclip.store.store import Store

ALLOWED = ("SELECT", "EXPLAIN")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_read_only(con: duckdb.DuckDBPyConnection, query: str) -> None:
    """Raise unless `query` holds at least one statement and only read-only ones."""
    try:
        statements = con.extract_statements(query)
    except duckdb.Error as exc:
        raise InvalidInputError(f"SQL error: {_first_line(exc)}") from None
    if not statements:
        raise InvalidInputError("the SQL query is empty (or only comments); give a query such as "
                                "\"SELECT name, rows FROM feature_sets\"")
    for st in statements:
        kind = str(st.type).rsplit(".", 1)[-1]
        if kind not in ALLOWED:
            raise InvalidInputError(f"`botaclip sql` is read-only: {kind} statements are refused (only queries run); "
                                    "write results with --out, change the store with `botaclip store ...` or `index`")


def run_query(store: "Store", query: str) -> pa.Table:
    """Run a read-only `query` on `store` (every feature-set view and the H3 functions) and return its result
    (the last statement's). DuckDB errors come back as one-line BotaclipErrors; one that names a damaged
    partition file says which feature set it belongs to and how to repair it."""
    con = store.connect()
    try:
        check_read_only(con, query)
        try:
            rel = con.sql(query)
            table = rel.arrow() if rel is not None else pa.table({})
            if hasattr(table, "read_all"):  # newer duckdb returns a RecordBatchReader
                table = table.read_all()
        except duckdb.Error as exc:
            damaged = explain_query_error(store.path, str(exc))
            if damaged is not None:
                raise damaged from None
            raise InvalidInputError(f"SQL error: {_first_line(exc)}") from None
    finally:
        con.close()
    return table
