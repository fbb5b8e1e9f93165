"""Shared fixtures: the Segment emulator, real warehouses (DuckDB, SQLite, PostgreSQL) and sync runs."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from segment_sync_tests.support.segment_emulator import SegmentEmulator
from segment_sync_tests.support.sync_runs import WRITE_KEY
from segment_sync_tests.support.warehouses import POSTGRES_ADMIN_URL, Warehouse, postgres_or_skip


@pytest.fixture
def postgres_warehouse() -> Iterator[Warehouse]:
    """A fresh schema in the machine's PostgreSQL, dropped afterwards."""
    postgres_or_skip()
    schema = f"segment_sync_test_{uuid.uuid4().hex[:12]}"
    admin = Warehouse("postgres", POSTGRES_ADMIN_URL)
    admin.execute(f"create schema {schema}")
    try:
        yield Warehouse("postgres", f"{POSTGRES_ADMIN_URL}?options=-csearch_path%3D{schema}")
    finally:
        admin.execute(f"drop schema {schema} cascade")


@pytest.fixture
def duckdb_warehouse(tmp_path: Path) -> Warehouse:
    """A DuckDB file."""
    return Warehouse("duckdb", f"duckdb:///{tmp_path / 'warehouse.duckdb'}")


@pytest.fixture
def sqlite_warehouse(tmp_path: Path) -> Warehouse:
    """A SQLite file."""
    return Warehouse("sqlite", f"sqlite:///{tmp_path / 'warehouse.sqlite'}")


@pytest.fixture(params=["duckdb", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def warehouse(request: pytest.FixtureRequest) -> Warehouse:
    """Each real warehouse in turn."""
    return request.getfixturevalue(f"{request.param}_warehouse")


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A URL on 127.0.0.1 that refuses connections: its port bound, never listening, held for the whole test."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{held.getsockname()[1]}"


@pytest.fixture
def emulator() -> Iterator[SegmentEmulator]:
    """Segment's Tracking API, emulated over real HTTP on 127.0.0.1."""
    with SegmentEmulator(write_key=WRITE_KEY) as emu:
        yield emu


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, emulator: SegmentEmulator) -> Path:
    """Environment for HTTP delivery to the emulator, with state in a temporary folder."""
    path = tmp_path / "state"
    monkeypatch.setenv("SEGMENT_SYNC_STATE_DIR", str(path))
    monkeypatch.setenv("SEGMENT_ENDPOINT", emulator.url)
    monkeypatch.setenv("SEGMENT_WRITE_KEY", WRITE_KEY)
    monkeypatch.delenv("SEGMENT_DESTINATION", raising=False)
    monkeypatch.delenv("WAREHOUSE_URL", raising=False)
    return path


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    """A temporary Dagster instance."""
    with dg.instance_for_test() as inst:
        yield inst
