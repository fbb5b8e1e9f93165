"""Real databases for tests and benchmarks: the PostgreSQL server's URL, a Warehouse, and skipping without one."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
import sqlalchemy as sa

POSTGRES_ADMIN_URL = os.environ.get("SEGMENT_SYNC_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@dataclass
class Warehouse:
    """A real database the tests create tables in, and its SQLAlchemy URL."""

    name: str
    url: str

    def execute(self, *statements: str) -> None:
        """Run statements in one transaction."""
        engine = sa.create_engine(self.url)
        try:
            with engine.begin() as conn:
                for statement in statements:
                    conn.execute(sa.text(statement))
        finally:
            engine.dispose()

    def query(self, statement: str) -> list[tuple]:
        """A query's rows."""
        engine = sa.create_engine(self.url)
        try:
            with engine.connect() as conn:
                return [tuple(row) for row in conn.execute(sa.text(statement))]
        finally:
            engine.dispose()


def postgres_or_skip() -> None:
    """Skip when PostgreSQL is not reachable (fail instead under CI=true)."""
    try:
        engine = sa.create_engine(POSTGRES_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect():
            pass
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure means the server is not usable here
        reason = f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL} ({type(exc).__name__})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; under CI=true the PostgreSQL tests must run (.ci/run starts the server)")
        pytest.skip(reason)
