"""DuckDB's fast read path: the native client streams Arrow record batches straight into Polars."""

from __future__ import annotations

from collections.abc import Generator

import duckdb
import polars as pl
import pyarrow as pa
import sqlalchemy as sa

from segment_sync.encoding import normalize_types
from segment_sync.spec import ModelSpec
from segment_sync.warehouse import WarehouseError, read_failed

MEMORY = ":memory:"


def native_database(url: str) -> str | None:
    """The database the native client opens for this URL, or None when the URL sets options only SQLAlchemy applies."""
    parsed = sa.make_url(url)
    return None if parsed.query else parsed.database or MEMORY


def duckdb_batches(url: str, database: str, model: ModelSpec, batch_size: int) -> Generator[pl.DataFrame, None, None]:
    """The model's rows as Polars frames of one schema, datetimes in UTC; opens the file read-only when it can."""
    try:
        conn = _connect(database)
    except duckdb.Error as exc:
        raise read_failed(model, url, exc) from None
    try:
        relation = conn.sql(model.query)
        if relation is None:
            raise WarehouseError(f"model {model.name!r}: the query returns no rows; it must be a SELECT")
        reader = relation.to_arrow_reader(batch_size)
        _check_readable(reader.schema, model)
        empty = True
        for batch in reader:
            empty = False
            yield normalize_types(pl.from_arrow(batch))
        if empty:
            yield normalize_types(pl.from_arrow(reader.schema.empty_table()))
    except duckdb.Error as exc:
        raise read_failed(model, url, exc) from None
    finally:
        conn.close()


def _connect(database: str) -> duckdb.DuckDBPyConnection:
    if database == MEMORY:
        return duckdb.connect()
    try:
        return duckdb.connect(database, read_only=True)
    except duckdb.ConnectionException:  # this process already has the file open for writing, so share that
        return duckdb.connect(database)


def _check_readable(schema: pa.Schema, model: ModelSpec) -> None:
    """Polars cannot load Arrow intervals (it aborts), so name the column instead."""
    for field in schema:
        if pa.types.is_interval(field.type):
            raise WarehouseError(
                f"model {model.name!r}: column {field.name!r} is an INTERVAL, which Polars cannot read; "
                "convert it in the query, e.g. epoch(x) for seconds or x::varchar for text"
            )
