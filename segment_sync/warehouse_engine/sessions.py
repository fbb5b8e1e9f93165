"""The warehouse engine's connections: sessions set so that every value renders the same way in every run."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

POSTGRES_SETTINGS = ("SET TimeZone = 'UTC'", "SET DateStyle = 'ISO, YMD'", "SET IntervalStyle = 'postgres'")


def open_engine(url: str) -> sa.Engine:
    """An engine for the warehouse engine's work; PostgreSQL sessions render instants and dates in one fixed way,
    so the row hashes (made from the values' text) do not move with a server's or a role's settings."""
    engine = sa.create_engine(url)
    if engine.dialect.name == "postgresql":

        @sa.event.listens_for(engine, "connect")
        def _settings(dbapi_connection: Any, _: object) -> None:
            with dbapi_connection.cursor() as cursor:
                for statement in POSTGRES_SETTINGS:
                    cursor.execute(statement)
            dbapi_connection.commit()

    return engine
