"""Shared fixtures: the Segment emulator, real warehouses (DuckDB, SQLite, PostgreSQL) and sync runs."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from segment_sync.factory import build_definitions
from segment_sync.resources import SegmentResource, StateResource, WarehouseResource
from segment_sync.spec import AlertSettings, LogSettings, ProjectSpec
from segment_sync_tests.segment_emulator import SegmentEmulator

WRITE_KEY = "wk_TEST_0123456789abcdefghijklmnop"
# A track sync of model "m" (table src: id, uid, v) that many tests share.
TRACK = {
    "name": "t",
    "model": "m",
    "type": "track",
    "user_id": "uid",
    "fields": ["v"],
    "events": {"added": "Added", "changed": "Changed", "removed": "Removed"},
    "send_initial": True,
}
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


@dataclass
class SyncRun:
    """The result of one sync job run, with each asset's metadata as plain values."""

    result: dg.ExecuteInProcessResult

    @property
    def success(self) -> bool:
        return self.result.success

    def metadata(self, *key: str) -> dict[str, Any]:
        """Metadata of the latest materialization of an asset in this run."""
        events = [e for e in self.result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(list(key))]
        assert events, f"{'/'.join(key)} was not materialized; failures: {self.failure_messages()}"
        return {k: v.value for k, v in events[-1].materialization.metadata.items()}

    def materialized(self) -> set[str]:
        """Keys of the assets materialized by this run."""
        return {e.asset_key.to_user_string() for e in self.result.get_asset_materialization_events()}

    def error_text(self) -> str:
        """Every message and error (with causes) the run's events carry."""
        parts = []
        for event in self.result.all_events:
            parts.append(event.message or "")
            error = getattr(event.event_specific_data, "error", None)
            if error is not None:
                parts.append(error.to_string())
        return "\n".join(parts)

    def failure_messages(self) -> list[str]:
        """Error messages of failed steps."""
        out = []
        for event in self.result.all_events:
            if event.is_step_failure:
                error = event.step_failure_data.error
                out.append(f"{event.step_key}: {error.message if error else event.message}")
        return out


def make_definitions(
    project: dict[str, Any],
    *,
    segment: dict[str, Any] | None = None,
    logs: dict[str, Any] | None = None,
    alerts: dict[str, Any] | None = None,
) -> dg.Definitions:
    """Definitions for a project given as the YAML attributes would be, with fast retries for tests."""
    settings = {"max_attempts": 3, "max_retry_seconds": 5.0, "timeout_seconds": 5.0, **(segment or {})}
    return build_definitions(
        ProjectSpec.model_validate(project),
        warehouse=WarehouseResource(),
        segment=SegmentResource(**settings),
        state=StateResource(),
        logs=LogSettings(**(logs or {})),
        alerts=AlertSettings(**(alerts or {})),
    )


_QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def run_sync(definitions: dg.Definitions, sync: str, instance: dg.DagsterInstance, *, approve: bool = False) -> SyncRun:
    """Run one sync's job in process (approving a large change when asked)."""
    job = definitions.resolve_job_def(f"sync_{sync}")
    config = {**_QUIET, "ops": {f"diff__{sync}": {"config": {"approve_large_change": approve}}}}
    return SyncRun(job.execute_in_process(instance=instance, raise_on_error=False, run_config=config))
