"""keep_first / keep_last in the warehouse: the model's rows ranked within their key, and all but one dropped.

Rows are ordered as the Polars engine orders them (`key_checks.rows_to_drop`): by order_by with nulls last, then
by the order the query returns them; text by its bytes, as Polars compares strings.
"""

from __future__ import annotations

import polars as pl
import sqlalchemy as sa

from segment_sync.snapshot.key_checks import SAMPLE_SIZE
from segment_sync.spec import ModelSpec
from segment_sync.warehouse_engine.key_sql import ByteOrder, key_present, key_text

RANK = "__segment_sync_rank"
POSITION = "__segment_sync_position"


def ranked_query(engine: sa.Engine, model: ModelSpec, schema: pl.Schema) -> str:
    """The model's query with each row's rank within its key (1: the row kept) and its position, as SQL."""
    quote = engine.dialect.identifier_preparer.quote
    order: sa.ColumnElement = sa.column(model.order_by or POSITION)
    if model.order_by and schema[model.order_by] == pl.String:
        order = ByteOrder(order)
    first = model.on_duplicate_key == "keep_first"
    direction = "ASC NULLS LAST" if first else "DESC NULLS FIRST"
    positions = "ASC" if first else "DESC"
    keys = ", ".join(quote(c) for c in model.key_columns)
    within = f"PARTITION BY {keys} ORDER BY {order.compile(engine)} {direction}, {quote(POSITION)} {positions}"
    return (
        f"SELECT q.*, ROW_NUMBER() OVER ({within}) AS {quote(RANK)} FROM (SELECT q0.*, ROW_NUMBER() OVER () AS "
        f"{quote(POSITION)} FROM ({model.query}) AS q0) AS q"
    )


def drop_ranked_duplicates(conn: sa.Connection, table: sa.TableClause, model: ModelSpec) -> tuple[int, list[str]]:
    """Delete the rows of a ranked copy that are not their key's kept row, then its ranking columns; return how many
    rows were dropped and the first keys that had them."""
    ranked = sa.table(table.name, *(sa.column(c) for c in [*model.key_columns, RANK]), schema=table.schema)
    dropped = sa.and_(ranked.c[RANK] > 1, key_present(ranked, model))
    count = conn.execute(sa.select(sa.func.count()).select_from(ranked).where(dropped)).scalar_one()
    samples: list[str] = []
    if count:
        keys = sa.select(key_text(ranked, model).label("k")).where(dropped).distinct().subquery()
        first = sa.select(keys.c.k).order_by(ByteOrder(keys.c.k)).limit(SAMPLE_SIZE)
        samples = list(conn.execute(first).scalars())
        conn.execute(sa.delete(ranked).where(dropped))
    preparer = conn.dialect.identifier_preparer
    name = f"{preparer.quote_schema(table.schema)}.{preparer.quote(table.name)}"
    for column in (RANK, POSITION):
        conn.execute(sa.text(f"ALTER TABLE {name} DROP COLUMN {preparer.quote(column)}"))
    return count, samples
