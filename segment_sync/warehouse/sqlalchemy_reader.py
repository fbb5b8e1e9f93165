"""The read path every dialect has: a model read through SQLAlchemy in batches, typed by the declared columns."""

from __future__ import annotations

import warnings
from collections.abc import Generator
from typing import Literal

import polars as pl
import sqlalchemy as sa

from segment_sync.spec import ModelSpec
from segment_sync.warehouse.column_types import ReadAs, description_plan, render
from segment_sync.warehouse.warehouse_error import read_failed, unusable_url

ReadPath = Literal["auto", "sqlalchemy"]


def sqlalchemy_batches(
    url: str, model: ModelSpec, batch_size: int
) -> Generator[tuple[pl.DataFrame, dict[str, ReadAs] | None], None, None]:
    """The model's rows through SQLAlchemy and a server-side cursor, each batch with the plan it was read by.

    Dialects that declare result types (PostgreSQL, DuckDB, Snowflake, BigQuery) are read by `column_types`;
    others (SQLite, ...) have no plan, and each batch's dtypes are inferred from its values.
    """
    try:
        engine = sa.create_engine(url)
    except (sa.exc.ArgumentError, ImportError, ValueError) as exc:
        raise unusable_url(model, url, exc) from None
    query = model.query
    try:
        with engine.connect() as conn:
            plan, overrides = _plan(conn, query), None
            if plan is not None:
                overrides = {name: read_as.read for name, read_as in plan.items()}
                quote = "`" if conn.dialect.name == "bigquery" else '"'
                query = f"select {', '.join(render(plan, quote, 'q.'))} from (\n{query}\n) as q"
            streaming = conn.execution_options(stream_results=True)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Arrow output on a DB-API result")
                frames = pl.read_database(
                    query, streaming, iter_batches=True, batch_size=batch_size, schema_overrides=overrides
                )
                empty = True
                for frame in frames:
                    empty = False
                    yield frame, plan
                if empty:  # an empty result yields no batch, so ask again for the column names
                    yield pl.read_database(query, conn, schema_overrides=overrides), plan
    except sa.exc.SQLAlchemyError as exc:
        raise read_failed(model, url, getattr(exc, "orig", None) or exc) from None
    finally:
        engine.dispose()


def _plan(conn: sa.Connection, query: str) -> dict[str, ReadAs] | None:
    """How each result column is read, from the types the database declares; None for a dialect without them."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.exec_driver_sql("set time zone 'UTC'")
    elif dialect == "duckdb":
        conn.exec_driver_sql("set TimeZone = 'UTC'")
    elif dialect not in ("snowflake", "bigquery"):
        return None
    if dialect in ("postgresql", "duckdb"):  # a server-side cursor describes the query without running it all
        result = conn.execution_options(stream_results=True).exec_driver_sql(query)
    else:
        result = conn.exec_driver_sql(f"select * from (\n{query}\n) as q limit 0")
    description = result.cursor.description or []
    result.close()
    return description_plan(dialect, description)
