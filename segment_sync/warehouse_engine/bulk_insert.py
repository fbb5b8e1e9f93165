"""Rows of a Polars frame inserted into a warehouse table: COPY on PostgreSQL, Arrow on DuckDB, else executemany."""

from __future__ import annotations

import polars as pl
import sqlalchemy as sa


def bulk_insert(conn: sa.Connection, table: sa.Table, frame: pl.DataFrame) -> None:
    """Insert the frame's rows (its columns named as the table's) in the caller's transaction."""
    if frame.is_empty():
        return
    dialect = conn.dialect.name
    driver = conn.connection.driver_connection
    if dialect == "postgresql" and hasattr(driver, "cursor") and type(driver).__module__.startswith("psycopg"):
        _copy_postgresql(driver, table, frame)
    elif dialect == "duckdb":
        _insert_arrow_duckdb(driver, table, frame)
    else:
        conn.execute(table.insert(), frame.to_dicts())


def _copy_postgresql(driver: object, table: sa.Table, frame: pl.DataFrame) -> None:
    from psycopg import sql

    columns = sql.SQL(", ").join(sql.Identifier(c) for c in frame.columns)
    target = sql.Identifier(table.schema, table.name) if table.schema else sql.Identifier(table.name)
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv, NULL '\\N')").format(target, columns)
    # strings quoted, so an unquoted \N is the only null; numbers as they are
    data = frame.write_csv(include_header=False, null_value="\\N", quote_style="non_numeric")
    with driver.cursor() as cursor, cursor.copy(statement) as copy:  # type: ignore[attr-defined]
        copy.write(data)


def _insert_arrow_duckdb(driver: object, table: sa.Table, frame: pl.DataFrame) -> None:
    name = f"segment_sync_rows_{id(frame)}"
    target = f'"{table.schema}"."{table.name}"' if table.schema else f'"{table.name}"'
    columns = ", ".join(f'"{c}"' for c in frame.columns)
    driver.register(name, frame.to_arrow())  # type: ignore[attr-defined]
    try:
        driver.execute(f"INSERT INTO {target} ({columns}) SELECT {columns} FROM {name}")  # type: ignore[attr-defined]
    finally:
        driver.unregister(name)  # type: ignore[attr-defined]
