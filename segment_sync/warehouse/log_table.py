"""A sync's row log written back to a warehouse table, when the sync asks for it."""

from __future__ import annotations

import polars as pl
import sqlalchemy as sa

from segment_sync.error_text import first_line
from segment_sync.warehouse.warehouse_error import WarehouseError, safe_url


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
