"""The warehouse's hash of a row's key and compared columns, as SQL: one construct, rendered per dialect."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

HASHED_DIALECTS = ("postgresql", "duckdb", "snowflake", "bigquery")


class RowHash(FunctionElement):
    """A 64-bit signed hash of the given columns' values, nulls included, as the warehouse computes it.

    Deterministic for one warehouse version; the hash basis names the dialect and its version, so an upgrade
    that changes the hash only makes the next diff compare every row by content once.
    """

    type = sa.BigInteger()
    inherit_cache = True
    name = "segment_sync_row_hash"


@compiles(RowHash, "postgresql")
def _postgresql(element: RowHash, compiler: Any, **kw: Any) -> str:
    values = compiler.process(element.clauses, **kw)
    if (compiler.dialect.server_version_info or (0,)) >= (14,):
        # each value by its type's own 64-bit hash, 2.4x cheaper than rendering the row as text; columns of a type
        # with no hash function come cast to text (see sql_diff.text_hashed_columns)
        return f"hash_record_extended(ROW({values}), 0)"
    # the row's text (every type has one); engine sessions set TimeZone and DateStyle, so instants render alike
    return f"hashtextextended(ROW({values})::text, 0)"


@compiles(RowHash, "duckdb")
def _duckdb(element: RowHash, compiler: Any, **kw: Any) -> str:
    return f"CAST(hash({compiler.process(element.clauses, **kw)}) >> 1 AS BIGINT)"  # UBIGINT, halved to fit


@compiles(RowHash, "snowflake")
def _snowflake(element: RowHash, compiler: Any, **kw: Any) -> str:
    # HASH gives a signed 64-bit number; shifted so that emulators returning it unsigned (fakesnow) fit a BIGINT too
    return f"BITSHIFTRIGHT(HASH({compiler.process(element.clauses, **kw)}), 1)"


@compiles(RowHash, "bigquery")
def _bigquery(element: RowHash, compiler: Any, **kw: Any) -> str:
    values = ", ".join(f"TO_JSON_STRING({compiler.process(c, **kw)})" for c in element.clauses)
    return f"FARM_FINGERPRINT(ARRAY_TO_STRING([{values}], ','))"


@compiles(RowHash)
def _other(element: RowHash, compiler: Any, **kw: Any) -> str:
    raise sa.exc.CompileError(
        f"the warehouse engine has no row hash for {compiler.dialect.name}; it runs on {', '.join(HASHED_DIALECTS)}"
    )
