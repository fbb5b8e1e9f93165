"""The warehouse through SQLAlchemy: the read path every dialect has, sync-log writes, and password-free errors."""

from __future__ import annotations

import warnings
from collections.abc import Generator
from typing import Literal

import polars as pl
import sqlalchemy as sa

from segment_sync.error_text import first_line
from segment_sync.spec import ModelSpec
from segment_sync.warehouse.column_types import ReadAs, description_plan, render

ReadPath = Literal["auto", "sqlalchemy"]


class WarehouseError(RuntimeError):
    """The warehouse could not be read; the message names the model and never the password."""


def safe_url(url: str) -> str:
    """The URL with any password masked, for messages."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except (sa.exc.ArgumentError, ValueError):
        return "<unparseable warehouse URL>"


def dialect_of(url: str) -> str:
    """The SQLAlchemy dialect name of a URL (duckdb, postgresql, sqlite, ...)."""
    return sa.make_url(url).get_backend_name()


def without_password(text: str, url: str) -> str:
    """The text with the URL's password, if it has one, masked."""
    try:
        password = sa.make_url(url).password
    except (sa.exc.ArgumentError, ValueError):
        return text
    return text.replace(password, "***") if password else text


def unusable_url(model: ModelSpec, url: str, exc: BaseException) -> WarehouseError:
    """The error for a warehouse URL that no driver can use."""
    detail = without_password(first_line(exc), url)
    return WarehouseError(f"model {model.name!r}: the warehouse URL is not usable: {detail}")


def read_failed(model: ModelSpec, url: str, exc: BaseException) -> WarehouseError:
    """The error for a read that the warehouse refused or could not serve."""
    detail = without_password(first_line(exc), url)
    return WarehouseError(
        f"model {model.name!r}: reading from {safe_url(url)} failed: {detail}. "
        "Check that the warehouse is up and the query runs there."
    )


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


def append_to_table(url: str, table: str, frame: pl.DataFrame, *, chunk_rows: int = 10_000) -> None:
    """Append a sync log to a warehouse table (`schema.table` or `table`), creating it if needed."""
    schema, _, name = table.rpartition(".")
    types = {pl.Datetime: sa.DateTime(timezone=True), pl.Int64: sa.BigInteger()}
    metadata = sa.MetaData()
    target = sa.Table(
        name,
        metadata,
        *(
            sa.Column(col, next((t for p, t in types.items() if dtype == p), sa.Text()))
            for col, dtype in frame.schema.items()
        ),
        schema=schema or None,
    )
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            metadata.create_all(conn, checkfirst=True)
            for chunk in frame.iter_slices(chunk_rows):
                conn.execute(target.insert(), chunk.to_dicts())
    except sa.exc.SQLAlchemyError as exc:
        detail = first_line(getattr(exc, "orig", None) or exc)
        raise WarehouseError(f"writing the sync log to {table!r} at {safe_url(url)} failed: {detail}") from None
    finally:
        engine.dispose()
