"""Reading a model from any SQLAlchemy warehouse into Polars."""

from __future__ import annotations

import warnings

import polars as pl
import sqlalchemy as sa

from segment_sync.encoding import normalize_types
from segment_sync.errors import first_line
from segment_sync.spec import ModelSpec


class WarehouseError(RuntimeError):
    """The warehouse could not be read; the message names the model and never the password."""


def safe_url(url: str) -> str:
    """The URL with any password masked, for messages."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparseable warehouse URL>"


def dialect_of(url: str) -> str:
    """The SQLAlchemy dialect name of a URL (duckdb, postgresql, sqlite, ...)."""
    return sa.make_url(url).get_backend_name()


def read_model(url: str, model: ModelSpec, *, batch_size: int = 50_000) -> pl.DataFrame:
    """Run the model's query and return its rows, datetimes in UTC; streams with a server-side cursor."""
    try:
        engine = sa.create_engine(url)
    except (sa.exc.ArgumentError, ImportError, ValueError) as exc:
        raise WarehouseError(f"model {model.name!r}: the warehouse URL is not usable: {first_line(exc)}") from None
    try:
        with engine.connect() as conn, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Arrow output on a DB-API result")
            streaming = conn.execution_options(stream_results=True)
            frames = list(pl.read_database(model.query, streaming, iter_batches=True, batch_size=batch_size))
            if not frames:  # an empty result yields no batch, so ask again for the column names
                frames = [pl.read_database(model.query, conn)]
    except sa.exc.SQLAlchemyError as exc:
        detail = first_line(getattr(exc, "orig", None) or exc)
        raise WarehouseError(
            f"model {model.name!r}: reading from {safe_url(url)} failed: {detail}. "
            "Check that the warehouse is up and the query runs there."
        ) from None
    finally:
        engine.dispose()
    frame = frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical_relaxed")
    return normalize_types(frame)


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
