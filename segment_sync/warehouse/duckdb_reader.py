"""DuckDB's fast read path: the native client streams Arrow record batches straight into Polars."""

from __future__ import annotations

from collections.abc import Generator, Sequence

import duckdb
import polars as pl
import sqlalchemy as sa
from duckdb.sqltypes import DuckDBPyType

from segment_sync.spec import ModelSpec
from segment_sync.warehouse.column_types import ReadAs, duckdb_read_as, render
from segment_sync.warehouse.warehouse_error import WarehouseError, read_failed

MEMORY = ":memory:"


def native_database(url: str) -> str | None:
    """The database the native client opens for this URL, or None when the URL sets options only SQLAlchemy applies."""
    parsed = sa.make_url(url)
    return None if parsed.query else parsed.database or MEMORY


def duckdb_batches(
    url: str, database: str, model: ModelSpec, batch_size: int
) -> Generator[tuple[pl.DataFrame, dict[str, ReadAs]], None, None]:
    """The model's rows as Polars frames of one schema, with the plan they were read by; opens the file read-only."""
    try:
        conn = _connect(database)
    except duckdb.Error as exc:
        raise read_failed(model, url, exc) from None
    try:
        yield from batches_on(conn, url, model, batch_size)
    finally:
        conn.close()


def batches_on(
    conn: duckdb.DuckDBPyConnection, url: str, model: ModelSpec, batch_size: int
) -> Generator[tuple[pl.DataFrame, dict[str, ReadAs]], None, None]:
    """The model's rows read on an open connection (one the caller also writes with, say), as `duckdb_batches`."""
    try:
        relation = conn.sql(model.query)
        if relation is None:
            raise WarehouseError(f"model {model.name!r}: the query returns no rows; it must be a SELECT")
        plan = duckdb_plan(relation.columns, relation.types)
        if any(read_as.sql != "{}" for read_as in plan.values()):  # some columns are rendered by DuckDB
            conn.execute("set TimeZone = 'UTC'")  # how to_json writes instants inside lists and structs
            relation = conn.sql(f"select {', '.join(render(plan))} from ({model.query}) as q")
        reader = relation.to_arrow_reader(batch_size)
        empty = True
        for batch in reader:
            empty = False
            yield pl.from_arrow(batch), plan
        if empty:
            yield pl.from_arrow(reader.schema.empty_table()), plan
    except duckdb.Error as exc:
        raise read_failed(model, url, exc) from None


def duckdb_plan(names: Sequence[str], types: Sequence[DuckDBPyType]) -> dict[str, ReadAs]:
    """How each result column of a DuckDB query is read."""
    return {name: duckdb_read_as(str(t.id), str(t)) for name, t in zip(names, types, strict=True)}


def _connect(database: str) -> duckdb.DuckDBPyConnection:
    if database == MEMORY:
        return duckdb.connect()
    try:
        return duckdb.connect(database, read_only=True)
    except duckdb.ConnectionException:  # this process already has the file open for writing, so share that
        return duckdb.connect(database)
